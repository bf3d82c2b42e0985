"""
Relay end to end: two complete mta trees on loopback and a real DNS
server (L{mta.testing.dnsserver}); mail submitted to A for B's domain is
found by MX lookup, relayed over SMTP (STARTTLS) and lands in B's Maildir.
"""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mta.config import DNSConfig, RelayConfig
from mta.tap import listeningPorts
from mta.testing.dnsserver import DNSServer
from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.e2e.test_mail import PASSWORD, submitMessage


class RelayTests(TestCase):
    """
    A (example.com) relays to B (b.test) by MX.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        self.dns = DNSServer(
            {
                "b.test": {"MX": [(10, "mx.b.test")]},
                "mx.b.test": {"A": ["127.0.0.1"]},
                "implicit.test": {"A": ["127.0.0.1"]},
                "nullmx.test": {"MX": [(0, ".")]},
                "down.test": {"MX": [(5, "dead.down.test"), (10, "mx.b.test")]},
                "dead.down.test": {"A": ["127.0.0.2"]},
            }
        )
        self.dns.listen(reactor)
        self.addCleanup(self.dns.stop)
        nameservers = DNSConfig(nameservers=(self.dns.nameserver,))
        bConfig = replace(
            testConfig(Path(self.mktemp()).absolute(), dns=nameservers),
            hostname="mx.b.test",
            domains=("b.test", "implicit.test", "down.test"),
        )
        self.b: RunningServer = yield startServer(self, bConfig)
        self.b.addUser("bob@b.test", PASSWORD)
        self.b.addUser("carol@implicit.test", PASSWORD)
        self.b.addUser("dave@down.test", PASSWORD)
        aConfig = testConfig(
            Path(self.mktemp()).absolute(),
            dns=nameservers,
            relay=replace(
                RelayConfig(),
                outbound_port=self.b.ports["smtp"],
                retry_schedule=(1.0,),
            ),
        )
        self.a: RunningServer = yield startServer(self, aConfig)
        self.a.addUser("alice@example.com", PASSWORD)

    def submit(self, rcpts: list[str], message: bytes, **options: Any) -> Any:
        """
        Send C{message} from alice through A's submission port.
        """

        return submitMessage(self.a.ports["submission"], rcpts, message, **options)

    @inlineCallbacks
    def test_relayedByMX(self) -> Any:
        """Mail for b.test goes to its MX, over STARTTLS, and arrives byte for byte."""
        body = b"From: alice@example.com\r\nSubject: over there\r\n\r\nhello b\r\n"
        yield self.submit(["bob@b.test"], body)
        yield waitFor(lambda: len(self.b.delivered("bob@b.test")) == 1)
        [stored] = self.b.delivered("bob@b.test")
        self.assertTrue(stored.endswith(b"\r\n" + body))
        self.assertIn(b"by mx.b.test with ESMTPS", stored)
        # The Received trail records each hop's TLS, as Postfix's
        # smtpd_tls_received_header does: B's line the relay hop A made
        # (opportunistic STARTTLS), A's line alice's submission.
        hops = re.findall(
            rb"Received: from [^\r]*\(using (TLSv1\.[23]) with cipher [A-Z0-9_-]+ \((\d+)/\2 bits\)\)"
            rb"\r\n\tby (mx\.[a-z.]+) ",
            stored,
        )
        self.assertEqual([h[2] for h in hops], [b"mx.b.test", b"mx.example.com"], stored)
        yield waitFor(lambda: not self.a.queue.items)

    @inlineCallbacks
    def test_implicitMX(self) -> Any:
        """A domain with only an A record is delivered to that address."""
        yield self.submit(["carol@implicit.test"], b"Subject: i\r\n\r\nx\r\n")
        yield waitFor(lambda: len(self.b.delivered("carol@implicit.test")) == 1)

    @inlineCallbacks
    def test_preferredHostDown(self) -> Any:
        """With the preferred MX down, the next one takes the mail."""
        yield self.submit(["dave@down.test"], b"Subject: d\r\n\r\nx\r\n")
        yield waitFor(lambda: len(self.b.delivered("dave@down.test")) == 1)

    @inlineCallbacks
    def test_nullMXBounces(self) -> Any:
        """A null MX domain bounces at once with 5.1.10 to the sender's Maildir."""
        yield self.submit(["x@nullmx.test"], b"Subject: n\r\n\r\nx\r\n")
        yield waitFor(lambda: len(self.a.delivered("alice@example.com")) == 1)
        [report] = self.a.delivered("alice@example.com")
        parsed = email.message_from_bytes(report, policy=email.policy.default)
        self.assertEqual(parsed.get_content_type(), "multipart/report")
        self.assertIn(b"5.1.10", report)

    @inlineCallbacks
    def test_unknownRecipientBounces(self) -> Any:
        """B's 550 for an unknown user comes back as a bounce naming B and its reply."""
        yield self.submit(["nobody@b.test"], b"Subject: u\r\n\r\nx\r\n")
        yield waitFor(lambda: len(self.a.delivered("alice@example.com")) == 1)
        [report] = self.a.delivered("alice@example.com")
        self.assertIn(b"5.1.1", report)
        self.assertIn(b"mx.b.test", report)

    @inlineCallbacks
    def test_severalDomainsOneMessage(self) -> Any:
        """One message to two domains and a local user reaches all three."""
        yield self.submit(
            ["bob@b.test", "carol@implicit.test", "alice@example.com"], b"Subject: m\r\n\r\nx\r\n"
        )
        yield waitFor(
            lambda: (
                len(self.b.delivered("bob@b.test")) == 1
                and len(self.b.delivered("carol@implicit.test")) == 1
                and len(self.a.delivered("alice@example.com")) == 1
            )
        )


class SmarthostTests(TestCase):
    """
    A sends everything to B's submission port (STARTTLS, AUTH) as its smarthost.
    """

    timeout = 60

    @inlineCallbacks
    def startPair(self, password: str) -> Any:
        """
        Start B with user bob@b.test, and A with B's submission port as its
        smarthost, logging in as bob with C{password}.
        """
        bConfig = replace(
            testConfig(Path(self.mktemp()).absolute()),
            hostname="mx.b.test",
            domains=("b.test", "implicit.test"),
        )
        self.b: RunningServer = yield startServer(self, bConfig)
        self.b.addUser("bob@b.test", PASSWORD)
        self.b.addUser("carol@implicit.test", PASSWORD)
        secret = Path(self.mktemp()).absolute()
        secret.write_text(password + "\n")
        aConfig = testConfig(
            Path(self.mktemp()).absolute(),
            relay=replace(
                RelayConfig(),
                smarthost=f"127.0.0.1:{self.b.ports['submission']}",
                smarthost_user="bob@b.test",
                smarthost_password_file=secret,
                retry_schedule=(1.0,),
            ),
        )
        self.a: RunningServer = yield startServer(self, aConfig)

    def send(self) -> Any:
        """
        An app on 127.0.0.1 (a trusted network of A) sends as bob to carol.
        """

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", self.a.ports["smtp"], timeout=30) as c:
                return c.sendmail(
                    "bob@b.test",
                    ["carol@implicit.test"],
                    b"From: bob@b.test\r\nSubject: via smarthost\r\n\r\nhello\r\n",
                )

        return deferToThread(send)

    @inlineCallbacks
    def test_smarthostWithAuth(self) -> Any:
        """Mail goes through the smarthost's submission port under STARTTLS with AUTH."""
        yield self.startPair(PASSWORD)
        yield self.send()
        yield waitFor(lambda: len(self.b.delivered("carol@implicit.test")) == 1)
        [stored] = self.b.delivered("carol@implicit.test")
        # B's Received line: submission under TLS with authentication.
        self.assertIn(b"by mx.b.test with ESMTPSA", stored)
        yield waitFor(lambda: not self.a.queue.items)

    @inlineCallbacks
    def test_smarthostWrongPassword(self) -> Any:
        """A refused AUTH keeps the message queued with 4.7.8, to be retried, not bounced."""
        yield self.startPair("not the password")
        yield self.send()
        [queueId] = list(self.a.queue.items)

        def rcpt() -> Any:
            return self.a.queue.items[queueId].recipients[0]

        yield waitFor(lambda: rcpt().attempts >= 2)
        self.assertEqual(rcpt().state, "pending")
        self.assertIn("4.7.8", rcpt().lastError)
        self.assertEqual(self.b.delivered("carol@implicit.test"), [])
        # No further attempt, and the last one's polite QUIT is over before
        # the trees stop (a connection still open would fail the test).
        yield self.a.queue.hold(queueId)
        [submission] = listeningPorts(self.b.top, "submission")
        yield waitFor(lambda: submission.factory.connectionsFrom("127.0.0.1") == 0)
