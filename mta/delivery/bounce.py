# -*- test-case-name: tests.test_bounce -*-
"""
Delivery status notifications: step "bounce" of the lifecycle.

When recipients fail for good (or their message expires), are still
being retried after C{[relay] delay_warning}, or were delivered and asked
to be told, L{Bouncer} builds an RFC 3464 report (C{multipart/report;
report-type=delivery-status}) with a human explanation, the
machine-readable status per recipient and the original headers (or the
whole message for C{RET=FULL}), and enqueues it from the null sender
C{<>} back to the original sender, so a report can never cause another.
A message that came with SMTPUTF8 gets the RFC 6533 types
(C{message/global-delivery-status}, C{message/global},
C{message/global-headers}) so its UTF-8 addresses travel unmangled.

Which recipients a report names is the scheduler's decision, through
L{notifies} (the DSN NOTIFY parameter of RFC 3461).
"""

from __future__ import annotations

import email.utils
import re
import secrets
from dataclasses import dataclass

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

#: For C{RET=FULL}, a message is returned whole only if it is at most this
#: big (the default C{[limits] message_size}); a bigger one is returned as
#: its headers.
DEFAULT_RETURN_LIMIT = 25 * 1024 * 1024

#: Room left under the return limit for the report's own parts, so that a
#: report returning a message of the largest size still fits the limit.
REPORT_ALLOWANCE = 64 * 1024

#: A field value in the report is cut at this many characters, so no line
#: comes near the 998-octet limit of RFC 5322.
MAX_FIELD_TEXT = 900

#: The report events, named as the NOTIFY keywords that ask for them.
FAILURE = "FAILURE"
DELAY = "DELAY"
SUCCESS = "SUCCESS"

_SUBJECTS = {
    FAILURE: "Undelivered Mail Returned to Sender",
    DELAY: "Delayed Mail (still being retried)",
    SUCCESS: "Successful Mail Delivery Report",
}

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class RelayedReply(Reply):
    """
    A 2xx reply from a peer that did not offer DSN (RFC 3461): the
    recipient left this server with its NOTIFY request unforwardable, so
    this server, not the next hop, owes the sender the success notice.

    The relay answers with one of these, instead of a plain L{Reply}, for
    each recipient such a peer took; for those whose NOTIFY has C{SUCCESS}
    the scheduler sends a report with C{Action: relayed}.  A plain 2xx
    L{Reply} with C{remote} set means the peer took DSN and the NOTIFY
    request with it: no report from here.  It compares unequal to a plain
    L{Reply} with the same code and text.
    """


def notifies(recipient: Recipient, event: str) -> bool:
    """
    Whether a recipient's NOTIFY parameter (RFC 3461 section 4.1) asks for
    a report of C{event}.

    Without NOTIFY the server decides: failures and delays are reported
    (as Postfix does with its delay warning on), successes are not.

    @param event: L{FAILURE}, L{DELAY} or L{SUCCESS}.
    """
    if not recipient.notify:
        return event != SUCCESS
    return event in recipient.notify


@dataclass(frozen=True)
class Report:
    """
    What one DSN is about: one event, for some recipients of one message.

    @ivar envelope: the message's envelope.
    @ivar event: L{FAILURE}, L{DELAY} or L{SUCCESS}.
    @ivar recipients: each recipient named, with the reply of its last
        attempt (for a failure with a 4xx reply: the message expired).
    @ivar attempted: POSIX time of that attempt (C{Last-Attempt-Date}).
    @ivar retryUntil: for a delay, when the server gives up
        (C{Will-Retry-Until}).
    """

    envelope: Envelope
    event: str
    recipients: tuple[tuple[Recipient, Reply], ...]
    attempted: float
    retryUntil: float | None = None


def readHeaders(body: MessageBody, limit: int = MAX_QUOTED_HEADERS) -> bytes:
    """
    Read the header section of a stored message (blocking).

    @return: the headers, up to and excluding the blank line; when there is
        no blank line within C{limit} bytes, up to the last whole line.
    """
    head = body.readSync(limit)
    end = head.find(b"\r\n\r\n")
    if end >= 0:
        return head[: end + 2]
    if len(head) < limit or body.size <= limit:
        # The whole message is headers.
        return head if head.endswith(b"\r\n") or not head else head + b"\r\n"
    last = head.rfind(b"\r\n")
    return head[: last + 2] if last >= 0 else b""


def statusOf(event: str, reply: Reply) -> str:
    """
    The C{Status} of a recipient (RFC 3464 section 2.3.4): the reply's
    enhanced status code (RFC 3463) when it has one of the right class,
    else C{X.0.0} of the reply's class.  A failure with a temporary reply
    is an expiry: C{4.4.7}.
    """
    if event == FAILURE and reply.isTemporary:
        return "4.4.7"
    klass = str(reply.code)[:1]
    m = _ENHANCED.match(reply.text)
    if m is not None and m.group(1) == klass:
        return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
    return f"{klass}.0.0" if klass in "245" else "5.0.0"


def actionOf(event: str, reply: Reply) -> str:
    """
    @return: the C{Action} of a recipient (RFC 3464 section 2.3.3).
    """
    if event == FAILURE:
        return "failed"
    if event == DELAY:
        return "delayed"
    return "relayed" if isinstance(reply, RelayedReply) else "delivered"


def remoteName(remote: str) -> str:
    """
    @return: the host name of a L{Reply.remote}
        (C{"mx.example.com[192.0.2.1]"} gives C{"mx.example.com"}), as
        Postfix writes C{Remote-MTA}; the bracketed address when there is
        no name.
    """
    name = remote.partition("[")[0]
    return name or remote


def _clean(text: str, utf8: bool) -> str:
    """
    @return: C{text} safe for one field value: control characters (which
        could start a field of their own) as C{?}, non-ASCII as C{?} unless
        C{utf8}, cut at L{MAX_FIELD_TEXT}.
    """
    text = _CONTROL.sub("?", text)
    if not utf8 and not text.isascii():
        text = text.encode("ascii", "replace").decode("ascii")
    return text[:MAX_FIELD_TEXT]


def _utf8Address(address: str, utf8: bool) -> str:
    """
    Write an address as the C{utf-8} address type of RFC 6533 section 3:
    C{\\x{HEX}} for control characters, space, C{+}, C{=} and C{\\}, and
    for every non-ASCII character unless C{utf8} (C{utf-8-addr-unitext}
    in a C{message/global-delivery-status}, C{utf-8-addr-xtext} in a
    C{message/delivery-status}).
    """
    out = []
    for c in address:
        if ("!" <= c <= "~" and c not in "+=\\") or (utf8 and not c.isascii() and c.isprintable()):
            out.append(c)
        else:
            out.append(f"\\x{{{ord(c):02X}}}")
    return "".join(out)


def _typedAddress(addrType: str, address: str, utf8: bool) -> str:
    """
    @return: C{type;address} for an Original- or Final-Recipient field:
        C{rfc822} for an ASCII address, C{utf-8} (RFC 6533) for an address
        given as that type or with non-ASCII characters.
    """
    addrType = addrType.lower()
    if addrType == "utf-8" or (addrType == "rfc822" and not address.isascii()):
        return "utf-8;" + _utf8Address(address, utf8)[:MAX_FIELD_TEXT]
    return f"{_clean(addrType, False)};{_clean(address, utf8)}"


def _diagnostic(reply: Reply, utf8: bool) -> str:
    """
    @return: the C{Diagnostic-Code} value: C{smtp;} with the reply a remote
        server gave, C{X-mta;} with a reply of our own.
    """
    kind = "smtp" if reply.remote else "X-mta"
    return f"{kind}; {_clean(str(reply), utf8)}"


def _humanLine(event: str, r: Recipient, reply: Reply) -> str:
    """
    @return: one recipient's line in the human-readable part.
    """
    who = f"<{r.address}>"
    if r.original != r.address:
        who += f" (expanded from <{r.original}>)"
    said = f"host {reply.remote} said: {reply}" if reply.remote else str(reply)
    if event == FAILURE and reply.isTemporary:
        said = f"delivery time expired; last error: {said}"
    return f"{who}: {_clean(said, True)}"


def _intro(report: Report, hostname: str, returned: str) -> list[str]:
    """
    @return: the opening paragraphs of the human-readable part.
    """
    lines = [f"This is the mail system at {hostname}.", ""]
    if report.event == FAILURE:
        lines += [
            "Your message could not be delivered to one or more recipients,",
            "and the mail system has stopped trying.  The reasons are below.",
        ]
    elif report.event == DELAY:
        until = email.utils.formatdate(report.retryUntil or report.attempted)
        lines += [
            "Your message has not yet been delivered to the recipients below.",
            f"The mail system will keep trying until {until};",
            "you do not need to send it again.",
        ]
    else:
        lines += [
            "Your message was delivered or passed on to the recipients below,",
            "as you asked to be told.  A recipient marked relayed went to a",
            "server that sends no delivery reports: this is the last you hear.",
        ]
    lines += ["", returned, ""]
    return lines


def buildReport(
    report: Report,
    hostname: str,
    original: bytes,
    full: bool,
    boundary: str,
    now: float,
    reportId: str = "",
    truncated: bool = False,
) -> bytes:
    """
    Build the DSN message (pure).

    @param original: the original message when C{full}, else its header
        section.
    @param full: whether C{original} is the whole message.
    @param boundary: the MIME boundary; it must not occur in C{original}.
    @param now: the report's date.
    @param reportId: the report's queue id, for its Message-ID.
    @param truncated: C{RET=FULL} was asked but the message was too big,
        so C{original} is its headers.
    @return: the whole message, CRLF line ends.
    """
    envelope = report.envelope
    utf8 = envelope.smtputf8
    date = email.utils.formatdate(now)
    if full:
        returned = "The message is attached below."
    elif truncated:
        returned = "The message was too big to return whole; its headers are attached."
    else:
        returned = "The headers of the message are attached below."
    if utf8:
        statusType = "message/global-delivery-status"
        originalType = "message/global" if full else "message/global-headers"
    else:
        statusType = "message/delivery-status"
        originalType = "message/rfc822" if full else "text/rfc822-headers"

    human = _intro(report, hostname, returned)
    human += [_humanLine(report.event, r, reply) for r, reply in report.recipients]
    humanText = "\r\n".join(human)

    status = [f"Reporting-MTA: dns; {hostname}", f"X-Queue-ID: {envelope.queueId}"]
    if envelope.dsnEnvid:
        status.append(f"Original-Envelope-Id: {_clean(envelope.dsnEnvid, utf8)}")
    status += [f"Arrival-Date: {email.utils.formatdate(envelope.arrival)}", ""]
    for r, reply in report.recipients:
        if r.orcpt:
            addrType, _, address = r.orcpt.partition(";")
            status.append(f"Original-Recipient: {_typedAddress(addrType, address, utf8)}")
        status += [
            f"Final-Recipient: {_typedAddress('rfc822', str(r.address), utf8)}",
            f"Action: {actionOf(report.event, reply)}",
            f"Status: {statusOf(report.event, reply)}",
        ]
        if reply.remote:
            status.append(f"Remote-MTA: dns; {_clean(remoteName(reply.remote), utf8)}")
        status += [
            f"Diagnostic-Code: {_diagnostic(reply, utf8)}",
            f"Last-Attempt-Date: {email.utils.formatdate(report.attempted)}",
        ]
        if report.event == DELAY and report.retryUntil is not None:
            status.append(f"Will-Retry-Until: {email.utils.formatdate(report.retryUntil)}")
        status.append("")
    statusText = "\r\n".join(status)

    to = _clean(str(envelope.sender), utf8)
    messageId = f"<{reportId or envelope.queueId + '.' + report.event.lower()}@{hostname}>"
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{to}>",
        f"Subject: {_SUBJECTS[report.event]}",
        f"Date: {date}",
        f"Message-ID: {messageId}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Transfer-Encoding: {'7bit' if humanText.isascii() else '8bit'}",
        "",
        humanText,
        f"--{boundary}",
        "Content-Description: Delivery report",
        f"Content-Type: {statusType}",
        f"Content-Transfer-Encoding: {'7bit' if statusText.isascii() else '8bit'}",
        "",
        statusText,
        f"--{boundary}",
        "Content-Description: " + ("Undelivered message" if full else "Message headers"),
        f"Content-Type: {originalType}",
        f"Content-Transfer-Encoding: {'7bit' if original.isascii() else '8bit'}",
        "",
        "",
    ]
    if original and not original.endswith(b"\r\n"):
        original += b"\r\n"
    text = "\r\n".join(head).encode("utf-8")
    return text + original + f"\r\n--{boundary}--\r\n".encode()


class Bouncer:
    """
    Builds DSNs and hands them to the queue.

    @ivar returnLimit: for C{RET=FULL}, the largest report allowed (the
        server's message size limit): a message that would not fit is
        returned as its headers.
    """

    def __init__(
        self,
        sink: IMessageSink,
        runner: IBlockingRunner,
        hostname: str,
        clock: IReactorTime,
        returnLimit: int = DEFAULT_RETURN_LIMIT,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._runner = runner
        self._hostname = hostname
        self.returnLimit = returnLimit

    def __call__(self, report: Report, body: MessageBody) -> Deferred[object]:
        """
        Enqueue a DSN for C{report} to its message's sender.

        Delay warnings always carry the headers only (as Postfix's do):
        the whole message comes back with the failure, if it comes to that.

        @return: a Deferred firing once the DSN is safely queued.
        """
        wantFull = report.envelope.dsnRet == "FULL" and report.event != DELAY
        full = wantFull and body.size <= self.returnLimit - REPORT_ALLOWANCE
        d = self._runner.run(body.readSync) if full else self._runner.run(readHeaders, body)
        queued: Deferred[object] = d.addCallback(self._enqueue, report, full, wantFull and not full)
        return queued

    def _enqueue(
        self, original: bytes, report: Report, full: bool, truncated: bool
    ) -> Deferred[str]:
        envelope = report.envelope
        queueId = self._sink.newQueueId()
        now = self._clock.seconds()
        boundary = f"{queueId}.{secrets.token_hex(8)}/{self._hostname}"
        data = buildReport(
            report, self._hostname, original, full, boundary, now, queueId, truncated
        )
        dsn = Envelope(
            queueId=queueId,
            sender=NULL_ADDRESS,
            # NEVER, so that the relay asks the next hop for no report
            # about a report.
            recipients=(Recipient(envelope.sender, envelope.sender, notify=("NEVER",)),),
            arrival=now,
            smtputf8=envelope.smtputf8,
            bodyType="" if data.isascii() else "8BITMIME",
        )
        _log.info(
            "queue: id={id} dsn={event} report id={rid} to=<{to}>",
            id=envelope.queueId,
            event=report.event.lower(),
            rid=queueId,
            to=envelope.sender,
        )
        return self._sink.enqueue(dsn, data)
