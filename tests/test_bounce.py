"""
Tests for L{mta.delivery.bounce}: every kind of DSN, round-tripped
through Python's C{email} parser.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from dataclasses import replace
from email.message import EmailMessage
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from mta.delivery.bounce import (
    DELAY,
    FAILURE,
    SUCCESS,
    Bouncer,
    RelayedReply,
    Report,
    buildReport,
    notifies,
    readHeaders,
    statusOf,
)
from mta.envelope import NULL_ADDRESS, Address, Envelope, Recipient
from mta.errors import Reply
from mta.interfaces import IDeliveryTarget, IMessageSink
from mta.message import MessageBody
from mta.queue.scheduler import QueueManager
from mta.queue.spool import Spool
from mta.threads import SynchronousRunner

HEADERS = b"From: Sender <s@remote.test>\r\nTo: bob@example.com\r\nSubject: hello\r\n"
MESSAGE = HEADERS + b"\r\nthe secret body\r\n"
REMOTE_FAIL = Reply(
    550, "5.1.1 <bob@example.com>: no such user", remote="mx.example.com[192.0.2.7]"
)
ARRIVAL = 1_700_000_000.0
ATTEMPT = ARRIVAL + 600
NOW = ARRIVAL + 601


def envelope(**changes: Any) -> Envelope:
    """
    @return: a message from s@remote.test to bob@example.com (given as
        an alias C{b@example.com}), with C{changes}.
    """
    bob = Recipient(Address.parse("bob@example.com"), Address.parse("b@example.com"))
    base = Envelope(
        queueId="Q1", sender=Address.parse("s@remote.test"), recipients=(bob,), arrival=ARRIVAL
    )
    return replace(base, **changes)


def report(
    event: str = FAILURE,
    reply: Reply = REMOTE_FAIL,
    env: Envelope | None = None,
    retryUntil: float | None = None,
) -> Report:
    """
    @return: a report of C{event} for every recipient of C{env}, each with
        C{reply}.
    """
    env = env if env is not None else envelope()
    return Report(env, event, tuple((r, reply) for r in env.recipients), ATTEMPT, retryUntil)


def parse(data: bytes) -> EmailMessage:
    """
    @return: C{data} parsed the way a mail client would.
    """
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def utf8(text: str) -> str:
    """
    @return: C{text} as it was written: the C{email} package's bytes parser
        keeps non-ASCII octets of header fields as surrogate escapes.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8")


def statusBlocks(part: EmailMessage) -> list[dict[str, str]]:
    """
    @return: the field blocks of a delivery-status part: the per-message
        block, then one per recipient.
    """
    if part.get_content_type() == "message/delivery-status":
        # The standard library splits this type into its blocks itself.
        return [dict(block.items()) for block in part.get_payload()]
    # message/global-delivery-status is not known to it: one message whose
    # headers are the first block and whose body holds the others.
    [inner] = part.get_payload()
    text = inner.as_bytes(policy=email.policy.default.clone(linesep="\n")).decode("utf-8")
    parser = HeaderParser(policy=email.policy.default)
    blocks = [b for b in text.split("\n\n") if b.strip()]
    return [dict(parser.parsestr(block + "\n").items()) for block in blocks]


def build(r: Report, original: bytes = HEADERS, full: bool = False, **kw: Any) -> EmailMessage:
    """
    @return: the parsed report L{buildReport} makes of C{r}.
    """
    return parse(buildReport(r, "mail.test", original, full, "b0und4ry", NOW, "R1", **kw))


class NotifiesTests(SynchronousTestCase):
    """
    L{notifies}.
    """

    def recipient(self, *notify: str) -> Recipient:
        return replace(envelope().recipients[0], notify=notify)

    def test_default(self) -> None:
        """Without NOTIFY, failures and delays are reported, successes not."""
        r = self.recipient()
        self.assertEqual([notifies(r, e) for e in (FAILURE, DELAY, SUCCESS)], [True, True, False])

    def test_never(self) -> None:
        """NOTIFY=NEVER asks for nothing."""
        r = self.recipient("NEVER")
        self.assertEqual([notifies(r, e) for e in (FAILURE, DELAY, SUCCESS)], [False] * 3)

    def test_keywords(self) -> None:
        """Each keyword asks for its event only."""
        r = self.recipient("SUCCESS", "DELAY")
        self.assertEqual([notifies(r, e) for e in (FAILURE, DELAY, SUCCESS)], [False, True, True])


class StatusTests(SynchronousTestCase):
    """
    L{statusOf}.
    """

    def test_enhanced(self) -> None:
        """The reply's enhanced code is the status, leading zeros dropped."""
        self.assertEqual(statusOf(FAILURE, Reply(550, "5.7.01 denied")), "5.7.1")

    def test_missing(self) -> None:
        """Without an enhanced code the status is X.0.0 of the reply's class."""
        self.assertEqual(statusOf(FAILURE, Reply(550, "no such user")), "5.0.0")
        self.assertEqual(statusOf(DELAY, Reply(451, "later")), "4.0.0")
        self.assertEqual(statusOf(SUCCESS, Reply(250, "ok")), "2.0.0")

    def test_wrongClass(self) -> None:
        """An enhanced code of another class than the reply's is not used."""
        self.assertEqual(statusOf(FAILURE, Reply(550, "4.2.2 full")), "5.0.0")

    def test_expiry(self) -> None:
        """A failure with a temporary reply is an expiry: 4.4.7."""
        self.assertEqual(statusOf(FAILURE, Reply(451, "4.3.0 later")), "4.4.7")


class ReadHeadersTests(SynchronousTestCase):
    """
    L{readHeaders}.
    """

    def test_stopsAtBlankLine(self) -> None:
        """The header section is returned without the blank line and body."""
        self.assertEqual(readHeaders(MessageBody("", 0, len(MESSAGE), MESSAGE)), HEADERS)

    def test_noBody(self) -> None:
        """A message without a blank line is all headers."""
        self.assertEqual(readHeaders(MessageBody("", 0, len(HEADERS), HEADERS)), HEADERS)

    def test_cutAtLineEnd(self) -> None:
        """Headers longer than the limit are cut after the last whole line."""
        body = MessageBody("", 0, len(MESSAGE), MESSAGE)
        self.assertEqual(readHeaders(body, 40), b"From: Sender <s@remote.test>\r\n")


class BuildReportTests(SynchronousTestCase):
    """
    L{buildReport}, parsed back.
    """

    def test_structure(self) -> None:
        """
        A failure report is multipart/report (delivery-status) from
        MAILER-DAEMON with a text part, a delivery-status part and the
        original headers.
        """
        m = build(report())
        self.assertEqual(m.get_content_type(), "multipart/report")
        self.assertEqual(m.get_param("report-type"), "delivery-status")
        self.assertEqual(m["From"].addresses[0].addr_spec, "MAILER-DAEMON@mail.test")
        self.assertEqual(m["To"].addresses[0].addr_spec, "s@remote.test")
        self.assertEqual(m["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(m["Auto-Submitted"], "auto-replied")
        self.assertEqual(m["Message-ID"], "<R1@mail.test>")
        self.assertEqual(email.utils.parsedate_to_datetime(m["Date"]).timestamp(), NOW)
        self.assertEqual(
            [p.get_content_type() for p in m.iter_parts()],
            ["text/plain", "message/delivery-status", "text/rfc822-headers"],
        )
        self.assertFalse(m.defects)

    def test_perMessageFields(self) -> None:
        """The per-message block names this MTA, the arrival and the ENVID."""
        m = build(report(env=envelope(dsnEnvid="env-42")))
        first = statusBlocks(list(m.iter_parts())[1])[0]
        self.assertEqual(first["Reporting-MTA"], "dns; mail.test")
        self.assertEqual(first["Original-Envelope-Id"], "env-42")
        self.assertEqual(
            email.utils.parsedate_to_datetime(first["Arrival-Date"]).timestamp(), ARRIVAL
        )

    def test_noEnvid(self) -> None:
        """Without ENVID there is no Original-Envelope-Id."""
        first = statusBlocks(list(build(report()).iter_parts())[1])[0]
        self.assertNotIn("Original-Envelope-Id", first)

    def test_perRecipientFields(self) -> None:
        """
        A remote failure gives Final-Recipient, Action, Status, Remote-MTA
        (the host name without its address), Diagnostic-Code and
        Last-Attempt-Date.
        """
        blocks = statusBlocks(list(build(report()).iter_parts())[1])
        self.assertEqual(len(blocks), 2)
        rcpt = blocks[1]
        self.assertEqual(rcpt["Final-Recipient"], "rfc822;bob@example.com")
        self.assertEqual(rcpt["Action"], "failed")
        self.assertEqual(rcpt["Status"], "5.1.1")
        self.assertEqual(rcpt["Remote-MTA"], "dns; mx.example.com")
        self.assertEqual(rcpt["Diagnostic-Code"], "smtp; 550 5.1.1 <bob@example.com>: no such user")
        self.assertEqual(
            email.utils.parsedate_to_datetime(rcpt["Last-Attempt-Date"]).timestamp(), ATTEMPT
        )
        self.assertNotIn("Original-Recipient", rcpt)
        self.assertNotIn("Will-Retry-Until", rcpt)

    def test_orcptEchoed(self) -> None:
        """ORCPT comes back as Original-Recipient, its type lower case."""
        env = envelope()
        bob = replace(env.recipients[0], orcpt="RFC822;Bob@Example.COM")
        m = build(report(env=replace(env, recipients=(bob,))))
        rcpt = statusBlocks(list(m.iter_parts())[1])[1]
        self.assertEqual(rcpt["Original-Recipient"], "rfc822;Bob@Example.COM")

    def test_utf8OrcptInASCIIReport(self) -> None:
        """
        A UTF-8 ORCPT in a message without SMTPUTF8 comes back as an
        RFC 6533 utf-8-addr-xtext, which is ASCII.
        """
        env = envelope()
        bob = replace(env.recipients[0], orcpt="UTF-8;bøb+x@example.com")
        m = build(report(env=replace(env, recipients=(bob,))))
        rcpt = statusBlocks(list(m.iter_parts())[1])[1]
        self.assertEqual(rcpt["Original-Recipient"], "utf-8;b\\x{F8}b\\x{2B}x@example.com")

    def test_localReply(self) -> None:
        """A reply of our own has no Remote-MTA and an X-mta diagnostic."""
        m = build(report(reply=Reply(550, "5.1.1 User unknown in local recipient table")))
        rcpt = statusBlocks(list(m.iter_parts())[1])[1]
        self.assertNotIn("Remote-MTA", rcpt)
        self.assertEqual(
            rcpt["Diagnostic-Code"], "X-mta; 550 5.1.1 User unknown in local recipient table"
        )

    def test_noEnhancedCode(self) -> None:
        """A reply without an enhanced code gives Status 5.0.0."""
        m = build(report(reply=Reply(554, "go away", remote="mx.example.com[192.0.2.7]")))
        self.assertEqual(statusBlocks(list(m.iter_parts())[1])[1]["Status"], "5.0.0")

    def test_expiry(self) -> None:
        """
        An expiry (a failure with a 4xx) gives Status 4.4.7 and the peer's
        last reply as diagnostic and in the text.
        """
        last = Reply(451, "4.7.1 greylisted", remote="mx.example.com[192.0.2.7]")
        m = build(report(reply=last))
        rcpt = statusBlocks(list(m.iter_parts())[1])[1]
        self.assertEqual((rcpt["Action"], rcpt["Status"]), ("failed", "4.4.7"))
        self.assertEqual(rcpt["Diagnostic-Code"], "smtp; 451 4.7.1 greylisted")
        text = next(m.iter_parts()).get_content()
        self.assertIn("delivery time expired; last error: host mx.example.com[192.0.2.7]", text)

    def test_humanText(self) -> None:
        """
        The text part names each recipient, the alias it was expanded
        from, the remote host with its address, and its reply.
        """
        text = next(build(report()).iter_parts()).get_content()
        self.assertIn("This is the mail system at mail.test.", text)
        self.assertIn(
            "<bob@example.com> (expanded from <b@example.com>): host "
            "mx.example.com[192.0.2.7] said: 550 5.1.1 <bob@example.com>: no such user",
            text,
        )

    def test_replyCannotInjectFields(self) -> None:
        """Line breaks in a peer's reply cannot add fields to the report."""
        evil = Reply(550, "5.1.1 no\r\nAction: delivered\r\n\r\nX: y", remote="mx[192.0.2.7]")
        blocks = statusBlocks(list(build(report(reply=evil)).iter_parts())[1])
        self.assertEqual(len(blocks), 2)
        self.assertEqual(blocks[1]["Action"], "failed")
        self.assertNotIn("X", blocks[1])

    def test_headersOnly(self) -> None:
        """The default return is the original headers, without the body."""
        m = build(report())
        original = list(m.iter_parts())[2]
        self.assertEqual(original.get_content_type(), "text/rfc822-headers")
        content = original.get_content()
        self.assertIn("Subject: hello", content)
        self.assertNotIn("secret", content)

    def test_full(self) -> None:
        """A full return is a message/rfc822 part holding the whole message."""
        m = build(report(env=envelope(dsnRet="FULL")), MESSAGE, full=True)
        original = list(m.iter_parts())[2]
        self.assertEqual(original.get_content_type(), "message/rfc822")
        [inner] = original.get_payload()
        self.assertEqual(inner["Subject"], "hello")
        self.assertEqual(inner.get_content(), "the secret body\r\n")

    def test_truncatedNote(self) -> None:
        """A RET=FULL message returned as headers says why."""
        text = next(build(report(), truncated=True).iter_parts()).get_content()
        self.assertIn("too big to return whole", text)

    def test_delay(self) -> None:
        """
        A delay report says delayed, with Will-Retry-Until, and when the
        server gives up in its text.
        """
        until = ARRIVAL + 5 * 86400
        m = build(report(DELAY, Reply(451, "4.7.1 greylisted"), retryUntil=until))
        self.assertEqual(m["Subject"], "Delayed Mail (still being retried)")
        rcpt = statusBlocks(list(m.iter_parts())[1])[1]
        self.assertEqual((rcpt["Action"], rcpt["Status"]), ("delayed", "4.7.1"))
        self.assertEqual(
            email.utils.parsedate_to_datetime(rcpt["Will-Retry-Until"]).timestamp(), until
        )
        self.assertIn(email.utils.formatdate(until), next(m.iter_parts()).get_content())

    def test_delivered(self) -> None:
        """A success report for a local delivery says delivered."""
        m = build(report(SUCCESS, Reply(250, "2.0.0 Delivered to mailbox")))
        self.assertEqual(m["Subject"], "Successful Mail Delivery Report")
        rcpt = statusBlocks(list(m.iter_parts())[1])[1]
        self.assertEqual((rcpt["Action"], rcpt["Status"]), ("delivered", "2.0.0"))
        self.assertNotIn("Remote-MTA", rcpt)

    def test_relayed(self) -> None:
        """A success report for a RelayedReply says relayed, with the peer."""
        relayed = RelayedReply(250, "2.6.0 queued as X", remote="mx.example.com[192.0.2.7]")
        m = build(report(SUCCESS, relayed))
        rcpt = statusBlocks(list(m.iter_parts())[1])[1]
        self.assertEqual((rcpt["Action"], rcpt["Status"]), ("relayed", "2.6.0"))
        self.assertEqual(rcpt["Remote-MTA"], "dns; mx.example.com")
        self.assertEqual(rcpt["Diagnostic-Code"], "smtp; 250 2.6.0 queued as X")

    def test_severalRecipients(self) -> None:
        """One report names every recipient, each in its own block."""
        env = envelope()
        carol = Recipient(Address.parse("carol@example.com"), Address.parse("carol@example.com"))
        env = replace(env, recipients=(*env.recipients, carol))
        blocks = statusBlocks(list(build(report(env=env)).iter_parts())[1])
        self.assertEqual(
            [b["Final-Recipient"] for b in blocks[1:]],
            ["rfc822;bob@example.com", "rfc822;carol@example.com"],
        )

    def utf8Report(self, full: bool) -> EmailMessage:
        """
        @return: a failure report for an SMTPUTF8 message from and to
            UTF-8 addresses, with a UTF-8 ORCPT.
        """
        jurgen = Address.parse("jürgen@bücher.example", utf8=True)
        rcpt = Recipient(jurgen, jurgen, orcpt="UTF-8;jürgen@bücher.example")
        env = envelope(
            sender=Address.parse("jörg@example.com", utf8=True),
            recipients=(rcpt,),
            smtputf8=True,
            dsnRet="FULL" if full else "",
        )
        original = (
            "Subject: grüße\r\n\r\nhallo\r\n".encode() if full else b"Subject: gr\xc3\xbc\r\n"
        )
        return build(report(env=env), original, full)

    def test_utf8Types(self) -> None:
        """
        An SMTPUTF8 message's report uses message/global-delivery-status
        and message/global-headers, with utf-8 addresses unescaped.
        """
        m = self.utf8Report(full=False)
        self.assertEqual(utf8(m["To"].addresses[0].addr_spec), "jörg@example.com")
        parts = list(m.iter_parts())
        self.assertEqual(
            [p.get_content_type() for p in parts],
            ["text/plain", "message/global-delivery-status", "message/global-headers"],
        )
        rcpt = statusBlocks(parts[1])[1]
        self.assertEqual(utf8(rcpt["Original-Recipient"]), "utf-8;jürgen@bücher.example")
        self.assertEqual(utf8(rcpt["Final-Recipient"]), "utf-8;jürgen@bücher.example")
        self.assertIn("<jürgen@bücher.example>", parts[0].get_content())

    def test_utf8Full(self) -> None:
        """An SMTPUTF8 message returned whole is a message/global part."""
        parts = list(self.utf8Report(full=True).iter_parts())
        self.assertEqual(parts[2].get_content_type(), "message/global")
        [inner] = parts[2].get_payload()
        self.assertEqual(utf8(inner["Subject"]), "grüße")


@implementer(IMessageSink)
class RecordingSink:
    """
    Keeps what is enqueued.
    """

    def __init__(self) -> None:
        self.queued: list[tuple[Envelope, bytes]] = []

    def newQueueId(self) -> str:
        return f"R{len(self.queued) + 1}"

    def enqueue(self, envelope: Envelope, data: bytes) -> Deferred[str]:
        self.queued.append((envelope, data))
        return succeed(envelope.queueId)


class BouncerTests(SynchronousTestCase):
    """
    L{Bouncer}: what it reads and what it enqueues.
    """

    def setUp(self) -> None:
        self.sink = RecordingSink()
        self.clock = Clock()
        self.clock.advance(NOW)
        self.bouncer = Bouncer(self.sink, SynchronousRunner(), "mail.test", self.clock)

    def bounce(self, r: Report, message: bytes = MESSAGE) -> tuple[Envelope, EmailMessage]:
        """
        @return: the envelope and the parsed message the bouncer enqueues.
        """
        self.successResultOf(self.bouncer(r, MessageBody("", 0, len(message), message)))
        [(env, data)] = self.sink.queued
        return env, parse(data)

    def test_envelope(self) -> None:
        """
        The report goes from <> to the sender, asking for no report about
        itself, dated now.
        """
        env, m = self.bounce(report())
        self.assertEqual(env.sender, NULL_ADDRESS)
        self.assertEqual(
            [(str(r.address), r.notify) for r in env.recipients], [("s@remote.test", ("NEVER",))]
        )
        self.assertEqual((env.queueId, env.arrival, env.smtputf8), ("R1", NOW, False))
        self.assertEqual(m["Message-ID"], "<R1@mail.test>")

    def test_retHeaders(self) -> None:
        """RET=HDRS returns the headers, not the body."""
        _, m = self.bounce(report(env=envelope(dsnRet="HDRS")))
        original = list(m.iter_parts())[2]
        self.assertEqual(original.get_content_type(), "text/rfc822-headers")
        self.assertNotIn("secret", original.get_content())

    def test_retFull(self) -> None:
        """RET=FULL returns the whole message."""
        _, m = self.bounce(report(env=envelope(dsnRet="FULL")))
        [inner] = list(m.iter_parts())[2].get_payload()
        self.assertEqual(inner.get_content(), "the secret body\r\n")

    def test_retFullTooBig(self) -> None:
        """A RET=FULL message too big to return comes back as its headers."""
        self.bouncer.returnLimit = 100 * 1024
        big = HEADERS + b"\r\n" + b"x" * 76 * 1024 + b"\r\n"
        _, m = self.bounce(report(env=envelope(dsnRet="FULL")), big)
        parts = list(m.iter_parts())
        self.assertEqual(parts[2].get_content_type(), "text/rfc822-headers")
        self.assertIn("too big to return whole", parts[0].get_content())

    def test_delayHeadersOnly(self) -> None:
        """A delay report carries the headers only, even for RET=FULL."""
        _, m = self.bounce(report(DELAY, Reply(451, "4.0.0 later"), envelope(dsnRet="FULL")))
        self.assertEqual(list(m.iter_parts())[2].get_content_type(), "text/rfc822-headers")

    def test_eightBit(self) -> None:
        """A report holding 8-bit text is enqueued as 8BITMIME."""
        message = b"Subject: caf\xc3\xa9\r\n\r\nx\r\n"
        env, _ = self.bounce(report(), message)
        self.assertEqual(env.bodyType, "8BITMIME")

    def test_sevenBit(self) -> None:
        """An ASCII report needs no BODY parameter."""
        env, _ = self.bounce(report())
        self.assertEqual(env.bodyType, "")

    def test_smtputf8(self) -> None:
        """The report of an SMTPUTF8 message is itself SMTPUTF8."""
        sender = Address.parse("jörg@example.com", utf8=True)
        env, m = self.bounce(report(env=envelope(sender=sender, smtputf8=True)))
        self.assertTrue(env.smtputf8)
        self.assertEqual(
            list(m.iter_parts())[1].get_content_type(), "message/global-delivery-status"
        )


@implementer(IDeliveryTarget)
class Mailbox:
    """
    Delivers everything, keeping what it was given.
    """

    def __init__(self) -> None:
        self.delivered: list[tuple[Envelope, bytes]] = []

    def deliver(self, envelope: Envelope, body: MessageBody) -> Deferred[dict[Recipient, Reply]]:
        self.delivered.append((envelope, body.readSync()))
        return succeed({r: Reply(250, "2.0.0 Delivered to mailbox") for r in envelope.pending})


class QueueIntegrationTests(SynchronousTestCase):
    """
    L{Bouncer} wired to a L{QueueManager}, as the server does.
    """

    def test_successReportDelivered(self) -> None:
        """
        A local delivery with NOTIFY=SUCCESS queues a 'delivered' report
        from <> to the sender, which is then delivered in turn.
        """
        clock = Clock()
        clock.advance(NOW)
        mailbox = Mailbox()
        spool = Spool(Path(self.mktemp()), SynchronousRunner())
        qm = QueueManager(spool, mailbox, clock, [60], 3600)
        qm.bouncer = Bouncer(qm, SynchronousRunner(), "mail.test", clock)
        qm.startService()
        self.addCleanup(qm.stopService)
        env = envelope(queueId="Q1", arrival=NOW)
        env = replace(env, recipients=(replace(env.recipients[0], notify=("SUCCESS",)),))
        self.successResultOf(qm.enqueue(env, MESSAGE))
        clock.advance(0)
        clock.advance(0)
        [(first, _), (dsn, data)] = mailbox.delivered
        self.assertEqual((first.queueId, dsn.sender), ("Q1", NULL_ADDRESS))
        m = parse(data)
        self.assertEqual(m["Subject"], "Successful Mail Delivery Report")
        rcpt = statusBlocks(list(m.iter_parts())[1])[1]
        self.assertEqual(rcpt["Action"], "delivered")
        self.assertEqual(qm.items, {})
