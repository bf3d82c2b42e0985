# -*- test-case-name: tests.test_bounce -*-
"""
Delivery status notifications: step "bounce" of the lifecycle.

When recipients fail for good (or their message expires), L{Bouncer} builds
an RFC 3464 report (C{multipart/report; report-type=delivery-status}) with
a human explanation, the machine-readable status per recipient and the
original headers, and enqueues it from the null sender C{<>} back to the
original sender, so a bounce can never bounce again.
"""

from __future__ import annotations

import email.utils
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mta.envelope import NULL_ADDRESS, Envelope, Recipient
from mta.errors import Reply
from mta.interfaces import IBlockingRunner, IMessageSink
from mta.message import MessageBody

_log = Logger(namespace="mta.queue")

#: The original headers quoted in a report are cut at this size.
MAX_QUOTED_HEADERS = 64 * 1024


def readHeaders(body: MessageBody, limit: int = MAX_QUOTED_HEADERS) -> bytes:
    """
    Read the header section of a stored message (blocking).

    @return: the headers, up to and excluding the blank line.
    """
    head = body.readSync(limit)
    end = head.find(b"\r\n\r\n")
    return head[: end + 2] if end >= 0 else head


def buildReport(
    envelope: Envelope,
    failed: Sequence[tuple[Recipient, Reply]],
    hostname: str,
    headers: bytes,
    boundary: str,
    now: float,
) -> bytes:
    """
    Build the DSN message (pure).

    @param headers: the original message's header section.
    @return: the whole message, CRLF line ends.
    """
    date = email.utils.formatdate(now)
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{envelope.sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {date}",
        f"Message-ID: <{envelope.queueId}.bounce@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"This is the mail system at {hostname}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "It is attached below.",
        "",
    ]
    for r, reply in failed:
        lines.append(f"<{r.original}>: {reply}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {hostname}",
        f"X-Queue-ID: {envelope.queueId}",
        f"Arrival-Date: {email.utils.formatdate(envelope.arrival)}",
        "",
    ]
    for r, reply in failed:
        status = reply.text.split(" ", 1)[0] if reply.text[:1].isdigit() else "5.0.0"
        lines += [
            f"Original-Recipient: rfc822; {r.original}",
            f"Final-Recipient: rfc822; {r.address}",
            "Action: failed",
            f"Status: {status}",
            f"Diagnostic-Code: smtp; {reply}",
            f"Last-Attempt-Date: {date}",
            "",
        ]
    lines += [f"--{boundary}", "Content-Type: text/rfc822-headers", "", ""]
    text = "\r\n".join(lines).encode("utf-8")
    return text + headers + f"\r\n--{boundary}--\r\n".encode()


class Bouncer:
    """
    Builds DSNs and hands them to the queue.
    """

    def __init__(
        self,
        sink: IMessageSink,
        runner: IBlockingRunner,
        hostname: str,
        clock: IReactorTime,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._runner = runner
        self._hostname = hostname

    def __call__(
        self,
        envelope: Envelope,
        failed: Sequence[tuple[Recipient, Reply]],
        body: MessageBody,
    ) -> Deferred[object]:
        """
        Enqueue a DSN for C{failed} to C{envelope}'s sender.

        @return: a Deferred firing once the DSN is safely queued.
        """
        d = self._runner.run(readHeaders, body)
        queued: Deferred[object] = d.addCallback(self._enqueue, envelope, failed)
        return queued

    def _enqueue(
        self,
        headers: bytes,
        envelope: Envelope,
        failed: Sequence[tuple[Recipient, Reply]],
    ) -> Deferred[str]:
        queueId = self._sink.newQueueId()
        now = self._clock.seconds()
        boundary = f"{queueId}/{self._hostname}"
        data = buildReport(envelope, failed, self._hostname, headers, boundary, now)
        dsn = Envelope(
            queueId=queueId,
            sender=NULL_ADDRESS,
            recipients=(Recipient(envelope.sender, envelope.sender),),
            arrival=now,
        )
        _log.info(
            "queue: id={id} bounce id={bid} to=<{to}>",
            id=envelope.queueId,
            bid=queueId,
            to=envelope.sender,
        )
        return self._sink.enqueue(dsn, data)
