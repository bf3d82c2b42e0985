"""
Relay end to end against scripted peers: a complete mta (A) finds the
peer by MX through a real DNS server on loopback and relays to a
L{mta.testing.smtppeer.SMTPPeer} whose replies each test chooses; the
outcomes are read from the peer's record, A's queue and the DSNs in the
sender's Maildir.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import socket
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from mta.config import DNSConfig, RelayConfig
from mta.testing.dnsserver import DNSServer
from mta.testing.smtppeer import PeerSession, ScriptReply, SMTPPeer
from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.e2e.test_mail import insecureContext
from tests.test_bounce import statusBlocks

ALICE = "alice@example.com"
PEER = "mx.peer.test[127.0.0.1]"
NO_8BITMIME = ("PIPELINING", "SIZE 10485760", "ENHANCEDSTATUSCODES")


def parseReport(raw: bytes) -> tuple[EmailMessage, list[dict[str, str]]]:
    """
    @return: a DSN parsed by the standard library, and the field blocks
        of its delivery-status part (per message, then per recipient).
    """
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    parts = list(parsed.iter_parts())
    return parsed, statusBlocks(parts[1])


def hasIPv6Loopback() -> bool:
    """
    @return: whether this machine can listen on ::1.
    """
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class PeerTests(TestCase):
    """
    A (example.com) relays to scripted peers named by MX in a test DNS server.
    """

    timeout = 60

    def setUp(self) -> None:
        self.dns = DNSServer(
            {
                "peer.test": {"MX": [(10, "mx.peer.test")]},
                "mx.peer.test": {"A": ["127.0.0.1"]},
                "v6.test": {"MX": [(10, "mx6.v6.test")]},
                "mx6.v6.test": {"AAAA": ["::1"]},
            }
        )
        self.dns.listen(reactor)
        self.addCleanup(self.dns.stop)

    @inlineCallbacks
    def startPeer(self, description: str = "tcp:0:interface=127.0.0.1", **relay: Any) -> Any:
        """
        Start a scripted peer and an A that relays to its port.

        @param relay: changes to A's C{[relay]} (retries every second by
            default).
        @return: a Deferred firing with the peer; A is C{self.a}.
        """
        peer = SMTPPeer(hostname="mx.peer.test")
        port = yield Deferred.fromCoroutine(peer.listen(reactor, description))
        self.addCleanup(peer.stop)
        settings: dict[str, Any] = {"outbound_port": port, "retry_schedule": (1.0,)}
        settings.update(relay)
        config = testConfig(
            Path(self.mktemp()).absolute(),
            dns=DNSConfig(nameservers=(self.dns.nameserver,)),
            relay=replace(RelayConfig(), **settings),
        )
        self.a: RunningServer = yield startServer(self, config)
        self.a.addUser(ALICE, "pw-unused-here")
        return peer

    def submit(
        self, rcpts: list[str], message: bytes, tls: bool = False, **options: Any
    ) -> Deferred[Any]:
        """
        Send C{message} from alice to A's SMTP port (127.0.0.1 is a trusted
        network, so A relays for it), under STARTTLS when C{tls}.
        """

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", self.a.ports["smtp"], timeout=30) as c:
                if tls:
                    c.starttls(context=insecureContext())
                return c.sendmail(ALICE, rcpts, message, **options)

        return deferToThread(send)

    @inlineCallbacks
    def reports(self, count: int, timeout: float = 10.0) -> Any:
        """
        Wait for C{count} DSNs in alice's INBOX.

        @return: a Deferred firing with them, oldest first.
        """
        yield waitFor(lambda: len(self.a.delivered(ALICE)) >= count, timeout)
        return self.a.delivered(ALICE)

    def assertNothingSent(self, peer: SMTPPeer) -> None:
        """
        The peer was connected to but given no MAIL command.
        """
        self.assertGreaterEqual(peer.connections, 1)
        self.assertEqual([c for c in peer.commands if c.upper().startswith("MAIL")], [])
        self.assertEqual(peer.transactions, [])

    @inlineCallbacks
    def test_temporaryThenDelivered(self) -> Any:
        """A 451 at RCPT is retried on the schedule and delivered; the history has both."""
        peer = yield self.startPeer()
        tries = {"later": 0}

        def script(session: PeerSession, verb: str, arg: str) -> ScriptReply:
            if verb == "RCPT" and "stuck@" in arg:
                return "451 4.2.0 mailbox busy"
            if verb == "RCPT" and "later@" in arg:
                tries["later"] += 1
                return "451 4.3.0 try again later" if tries["later"] == 1 else None
            return None

        peer.script = script
        yield self.submit(["later@peer.test", "stuck@peer.test"], b"Subject: t\r\n\r\nx\r\n")
        [queueId] = list(self.a.queue.items)

        def later() -> Any:
            return self.a.queue.items[queueId].recipients[0]

        yield waitFor(lambda: later().state == "delivered")
        first, second = later().history
        self.assertIn("451 4.3.0 try again later", first.reply)
        self.assertEqual(first.remote, PEER)
        self.assertTrue(second.reply.startswith("250"), second.reply)
        self.assertEqual(second.remote, PEER)
        self.assertGreaterEqual(second.time - first.time, 0.9)
        [delivered] = peer.accepted
        self.assertEqual(delivered.rcpts, ["TO:<later@peer.test>"])

    @inlineCallbacks
    def test_permanentRefusalBounces(self) -> Any:
        """A 550 at RCPT comes back as an RFC 3464 report naming the peer and its reply."""
        peer = yield self.startPeer()
        peer.replies["RCPT"] = ["550 5.1.1 <nobody@peer.test>: no such user here"]
        yield self.submit(["nobody@peer.test"], b"Subject: lost\r\n\r\nx\r\n")
        [raw] = yield self.reports(1)
        parsed, [perMessage, perRecipient] = parseReport(raw)
        self.assertEqual(parsed.get_content_type(), "multipart/report")
        self.assertEqual(parsed.get_param("report-type"), "delivery-status")
        self.assertEqual(parsed["From"], "Mail Delivery System <MAILER-DAEMON@mx.example.com>")
        self.assertEqual(perMessage["Reporting-MTA"], "dns; mx.example.com")
        self.assertEqual(perRecipient["Final-Recipient"], "rfc822;nobody@peer.test")
        self.assertEqual(perRecipient["Action"], "failed")
        self.assertEqual(perRecipient["Status"], "5.1.1")
        self.assertEqual(perRecipient["Remote-MTA"], "dns; mx.peer.test")
        self.assertEqual(
            perRecipient["Diagnostic-Code"],
            "smtp; 550 5.1.1 <nobody@peer.test>: no such user here",
        )
        self.assertEqual(peer.transactions, [])
        yield waitFor(lambda: not self.a.queue.items)

    @inlineCallbacks
    def test_requireTLSWithoutTLSBounces(self) -> Any:
        """REQUIRETLS mail for a peer without STARTTLS bounces with 5.7.10; no MAIL is sent."""
        peer = yield self.startPeer()
        yield self.submit(
            ["bob@peer.test"],
            b"Subject: secret\r\n\r\nx\r\n",
            tls=True,
            mail_options=["REQUIRETLS"],
        )
        [raw] = yield self.reports(1)
        _, [_, perRecipient] = parseReport(raw)
        self.assertEqual(perRecipient["Status"], "5.7.10")
        self.assertEqual(perRecipient["Action"], "failed")
        self.assertNothingSent(peer)

    @inlineCallbacks
    def test_eightBitToSevenBitPeerBounces(self) -> Any:
        """An 8-bit message for a peer without 8BITMIME bounces with 5.6.3; no MAIL is sent."""
        peer = yield self.startPeer()
        peer.extensions = NO_8BITMIME
        body = "Subject: café\r\n\r\nçà et là\r\n".encode()
        yield self.submit(["bob@peer.test"], body, mail_options=["BODY=8BITMIME"])
        [raw] = yield self.reports(1)
        _, [_, perRecipient] = parseReport(raw)
        self.assertEqual(perRecipient["Status"], "5.6.3")
        self.assertIn("8BITMIME", perRecipient["Diagnostic-Code"])
        self.assertNothingSent(peer)

    @inlineCallbacks
    def test_utf8AddressToPeerWithoutSMTPUTF8Bounces(self) -> Any:
        """A UTF-8 address for a peer without SMTPUTF8 bounces with 5.6.7; no MAIL is sent."""
        peer = yield self.startPeer()
        yield self.submit(
            ["jürgen@peer.test"], b"Subject: u\r\n\r\nx\r\n", mail_options=["SMTPUTF8"]
        )
        [raw] = yield self.reports(1)
        parsed, [_, perRecipient] = parseReport(raw)
        self.assertEqual(
            list(parsed.iter_parts())[1].get_content_type(), "message/global-delivery-status"
        )
        self.assertEqual(perRecipient["Status"], "5.6.7")
        self.assertNothingSent(peer)

    @inlineCallbacks
    def test_ipv6Only(self) -> Any:
        """A host with only an AAAA record ::1 is reached over IPv6."""
        if not hasIPv6Loopback():
            raise SkipTest("no ::1 on this machine")
        peer = yield self.startPeer(r"tcp6:0:interface=\:\:1")
        yield self.submit(["bob@v6.test"], b"Subject: six\r\n\r\nx\r\n")
        yield waitFor(lambda: len(peer.accepted) == 1)
        [session] = peer.sessions
        self.assertEqual(session.transport.getPeer().host, "::1")
        self.assertEqual(peer.accepted[0].rcpts, ["TO:<bob@v6.test>"])
        yield waitFor(lambda: not self.a.queue.items)

    @inlineCallbacks
    def test_delayWarningThenExpiry(self) -> Any:
        """A peer always saying 451 gets one delay warning, then a 4.4.7 failure at expiry."""
        peer = yield self.startPeer(max_lifetime=4.0, delay_warning=2.0)
        peer.script = lambda s, verb, arg: "451 4.3.2 not now" if verb == "RCPT" else None
        yield self.submit(["bob@peer.test"], b"Subject: slow\r\n\r\nx\r\n")
        delay, failure = yield self.reports(2, timeout=15)
        _, [_, delayed] = parseReport(delay)
        self.assertEqual(delayed["Action"], "delayed")
        self.assertEqual(delayed["Status"], "4.3.2")
        self.assertIn("Will-Retry-Until", delayed)
        parsed, [_, failed] = parseReport(failure)
        self.assertEqual(parsed["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(failed["Action"], "failed")
        self.assertEqual(failed["Status"], "4.4.7")
        self.assertIn("451 4.3.2 not now", failed["Diagnostic-Code"])
        yield waitFor(lambda: not self.a.queue.items)
        self.assertEqual(len(self.a.delivered(ALICE)), 2)
        self.assertGreaterEqual(len([c for c in peer.commands if c.startswith("RCPT")]), 3)

    @inlineCallbacks
    def test_connectionReused(self) -> Any:
        """Two messages to one domain in quick succession travel over one connection."""
        peer = yield self.startPeer()
        yield self.submit(["one@peer.test"], b"Subject: 1\r\n\r\nx\r\n")
        yield waitFor(lambda: len(peer.accepted) == 1 and not self.a.queue.items)
        yield self.submit(["two@peer.test"], b"Subject: 2\r\n\r\nx\r\n")
        yield waitFor(lambda: len(peer.accepted) == 2)
        self.assertEqual(peer.connections, 1)
        self.assertEqual([t.session for t in peer.accepted], [1, 1])
        self.assertEqual(
            [c for c in peer.commands if c.startswith("EHLO")], ["EHLO mx.example.com"]
        )

    @inlineCallbacks
    def test_recipientsOfOneDomainInOneTransaction(self) -> Any:
        """Three recipients of one domain get one MAIL and three RCPTs."""
        peer = yield self.startPeer()
        rcpts = ["a@peer.test", "b@peer.test", "c@peer.test"]
        yield self.submit(rcpts, b"Subject: 3\r\n\r\nx\r\n")
        yield waitFor(lambda: len(peer.accepted) == 1)
        self.assertEqual(peer.accepted[0].rcpts, [f"TO:<{r}>" for r in rcpts])
        self.assertEqual(len([c for c in peer.commands if c.startswith("MAIL")]), 1)
        yield waitFor(lambda: not self.a.queue.items)

    @inlineCallbacks
    def test_tooManyRecipientsInNextTransaction(self) -> Any:
        """A 452 to the third RCPT sends that recipient in a second transaction at once."""
        # No retry within the test: the second transaction is the same attempt's.
        peer = yield self.startPeer(retry_schedule=(60.0,))
        peer.script = lambda s, verb, arg: (
            "452 4.5.3 too many recipients" if verb == "RCPT" and s.rcptCount == 3 else None
        )
        rcpts = ["a@peer.test", "b@peer.test", "c@peer.test"]
        yield self.submit(rcpts, b"Subject: 452\r\n\r\nx\r\n")
        yield waitFor(lambda: not self.a.queue.items)
        self.assertEqual(
            [t.rcpts for t in peer.accepted],
            [["TO:<a@peer.test>", "TO:<b@peer.test>"], ["TO:<c@peer.test>"]],
        )
        self.assertEqual(peer.connections, 1)
        self.assertEqual(self.a.delivered(ALICE), [])
