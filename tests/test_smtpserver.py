"""
Tests for L{mta.smtp.server}: the ESMTP dialogue over StringTransport.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mta.config import LimitsConfig
from mta.directory.memory import MemoryDirectory
from mta.envelope import Envelope
from mta.errors import Reply
from mta.policy.base import PolicyChain, PolicyCheck, Session, Verdict
from mta.policy.relayaccess import RelayAccess
from mta.policy.sender import SenderOwnership
from mta.smtp.data import headerDate as _headerDate
from mta.smtp.server import Mode, SMTPFactory
from mta.testing.fakes import RecordingSink

REMOTE = IPv4Address("TCP", "192.0.2.7", 40000)


class TLSTransport(StringTransport):
    """
    A StringTransport that records C{startTLS} (the handshake itself is
    the TLS tests' business).

    @ivar tlsStarted: the context given to C{startTLS}, if it was called.
    """

    tlsStarted: object = None

    def startTLS(self, context: object) -> None:
        self.tlsStarted = context


LOOPBACK = IPv4Address("TCP", "127.0.0.1", 40000)


class SMTPTestMixin:
    """
    Builds a server on a StringTransport and talks to it.
    """

    mode = Mode.MX
    peer = REMOTE

    def setUp(self) -> None:
        self.clock = Clock()
        self.sink = RecordingSink()
        self.directory = MemoryDirectory(
            ["example.com", "example.org"],
            users={"alice@example.com": "x", "bob@example.com": "x"},
            aliases={
                "team@example.com": ["alice@example.com", "bob@example.com"],
                "ext@example.com": ["someone@remote.test"],
            },
        )
        self.limits = LimitsConfig(message_size=10000, recipients=3, errors=5, commands=50)
        self.factory = SMTPFactory(
            mode=self.mode,
            hostname="mx.example.com",
            directory=self.directory,
            sink=self.sink,
            policy=self.policy([]),
            limits=self.limits,
            clock=self.clock,
        )
        self.connect()

    def policy(self, trusted: list[str]) -> PolicyChain:
        """
        @return: the production checks, trusting C{trusted} networks.
        """
        networks = [ipaddress.ip_network(n) for n in trusted]
        return PolicyChain([RelayAccess(self.directory, networks), SenderOwnership(self.directory)])

    def connect(self) -> None:
        self.transport = TLSTransport(peerAddress=self.peer)
        self.proto = self.factory.buildProtocol(self.peer)
        self.proto.makeConnection(self.transport)

    def send(self, data: bytes) -> list[bytes]:
        """
        Send raw bytes; return the reply lines they produced.
        """
        self.transport.clear()
        self.proto.dataReceived(data)
        return self.transport.value().splitlines()

    def codes(self, data: bytes) -> list[bytes]:
        return [line[:3] for line in self.send(data) if line[3:4] == b" "]


class SMTPServerTests(SMTPTestMixin, SynchronousTestCase):
    """
    The MX-mode dialogue.
    """

    def test_noDelay(self) -> None:
        """Nagle's algorithm is turned off, so pipelined replies are not held for ACKs."""

        class Recording(TLSTransport):
            noDelay = False

            def setTcpNoDelay(self, enabled: bool) -> None:
                self.noDelay = enabled

        transport = Recording(peerAddress=self.peer)
        self.factory.buildProtocol(self.peer).makeConnection(transport)
        self.assertTrue(transport.noDelay)

    def test_greetingHasNoVersion(self) -> None:
        """The banner names the host and ESMTP, and no software version."""
        self.assertEqual(self.transport.value(), b"220 mx.example.com ESMTP\r\n")

    def test_ehloAdvertisesExtensions(self) -> None:
        """EHLO on the MX listener without TLS lists exactly the extensions it may use."""
        lines = self.send(b"EHLO client.test\r\n")
        self.assertEqual(
            lines,
            [
                b"250-mx.example.com",
                b"250-PIPELINING",
                b"250-SIZE 10000",
                b"250-ENHANCEDSTATUSCODES",
                b"250-8BITMIME",
                b"250-DSN",
                b"250-SMTPUTF8",
                b"250 CHUNKING",
            ],
        )

    def test_fullTransaction(self) -> None:
        """A pipelined transaction is queued with a Received header."""
        codes = self.codes(
            b"EHLO c.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.com>\r\n"
            b"DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"
        )
        self.assertEqual(codes, [b"250", b"250", b"250", b"354", b"250", b"221"])
        [(envelope, data)] = self.sink.messages
        self.assertEqual(str(envelope.sender), "x@remote.test")
        self.assertEqual([str(r.address) for r in envelope.recipients], ["alice@example.com"])
        self.assertTrue(
            data.startswith(b"Received: from c.test ([192.0.2.7])\r\n\tby mx.example.com")
        )
        self.assertTrue(data.endswith(b"\r\nSubject: hi\r\n\r\nbody\r\n"))
        self.assertIn(b"for <alice@example.com>", data)

    def test_checksNotesOnTheTransactionLine(self) -> None:
        """
        What the end-of-data checks found (their log note) is on the
        transaction's one log line, before the result, accepted or refused.
        """

        class Noting(PolicyCheck):
            reply: Reply | None = None

            def checkMessage(self, session: Session, envelope: Envelope, data: bytes) -> Verdict:
                return Verdict(self.reply, logNote="spf=pass dkim=none")

        noting = Noting()
        self.factory.policy = PolicyChain([noting])
        transaction = (
            b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.com>\r\n"
            b"DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n"
        )
        with capturedLogs() as events:
            self.send(b"EHLO c.test\r\n" + transaction)
            noting.reply = Reply(550, "5.7.1 no")
            self.send(transaction)
        lines = [formatEvent(e) for e in events if formatEvent(e).startswith("smtp: id=")]
        self.assertEqual(len(lines), 2)
        self.assertRegex(lines[0], r" size=\d+ spf=pass dkim=none result=250 2\.0\.0 ")
        self.assertRegex(lines[1], r" size=\d+ spf=pass dkim=none result=550 5\.7\.1 no$")

    def test_dotUnstuffing(self) -> None:
        """A leading dot is removed from every line; a lone '..' becomes '.'."""
        self.send(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
        self.send(b"..\r\n..dot\r\n...\r\nend\r\n.\r\n")
        data = self.sink.messages[0][1]
        self.assertTrue(data.endswith(b"\r\n.\r\n.dot\r\n..\r\nend\r\n"))

    def test_emptyMessage(self) -> None:
        """DATA immediately followed by the terminator queues an empty body."""
        self.send(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
        self.assertEqual(self.codes(b".\r\n"), [b"250"])
        self.assertTrue(self.sink.messages[0][1].endswith(b"\r\n"))

    def test_dataSplitAnywhere(self) -> None:
        """The terminator is found however the input is split into chunks."""
        self.send(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
        for byte in b"a\r\nb\r\n.\r\n":
            self.proto.dataReceived(bytes([byte]))
        self.assertEqual(len(self.sink.messages), 1)
        self.assertTrue(self.sink.messages[0][1].endswith(b"\r\na\r\nb\r\n"))

    def test_noReplyBeforeDurable(self) -> None:
        """The 250 after DATA waits until the sink says the message is on disk."""
        self.sink.hold = True
        self.send(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
        self.assertEqual(self.send(b"x\r\n.\r\nNOOP\r\n"), [])
        self.sink.held[0].callback("Q1")
        self.assertEqual(self.transport.value(), b"250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n")

    def test_queueFailureIs451(self) -> None:
        """A spool write error is a temporary failure, never a 250."""
        self.sink.failWith = OSError("disk full")
        self.send(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
        self.assertEqual(self.codes(b"x\r\n.\r\n"), [b"451"])
        self.flushLoggedErrors(OSError)

    def test_unknownUser(self) -> None:
        """An unknown local recipient gets 550 5.1.1."""
        self.send(b"HELO c\r\nMAIL FROM:<>\r\n")
        self.assertEqual(
            self.send(b"RCPT TO:<nobody@example.com>\r\n"),
            [b"550 5.1.1 Recipient address rejected: User unknown in local recipient table"],
        )

    def test_noOpenRelay(self) -> None:
        """A remote recipient from an untrusted, unauthenticated client gets 554 5.7.1."""
        self.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\n")
        self.assertEqual(
            self.send(b"RCPT TO:<x@remote.test>\r\n"),
            [b"554 5.7.1 Relay access denied"],
        )

    def test_trustedNetworkMayRelay(self) -> None:
        """A client in trusted_networks may send to remote domains."""
        self.factory.policy = self.policy(["192.0.2.0/24"])
        self.send(b"HELO c\r\nMAIL FROM:<a@b.test>\r\n")
        self.assertEqual(self.codes(b"RCPT TO:<x@remote.test>\r\n"), [b"250"])

    def test_postmasterAlwaysAccepted(self) -> None:
        """postmaster@ every local domain, and bare <postmaster>, are accepted."""
        self.send(b"HELO c\r\nMAIL FROM:<>\r\n")
        self.assertEqual(
            self.codes(b"RCPT TO:<postmaster@example.org>\r\nRCPT TO:<Postmaster>\r\n"),
            [b"250", b"250"],
        )

    def test_barePostmasterWithParameters(self) -> None:
        """<Postmaster> without a domain is accepted with parameters too (RFC 5321 4.5.1)."""
        self.send(b"EHLO c\r\nMAIL FROM:<>\r\n")
        self.assertEqual(
            self.codes(b"RCPT TO:<Postmaster> NOTIFY=NEVER\r\nRCPT TO: <POSTMASTER>\r\n"),
            [b"250", b"250"],
        )
        self.assertEqual(
            self.codes(b"RCPT TO:<alice@example.com> ORCPT=rfc822;x:<postmaster>\r\n"), [b"250"]
        )
        self.send(b"DATA\r\nx\r\n.\r\n")
        recipients = self.sink.messages[0][0].recipients
        self.assertEqual(recipients[0].notify, ("NEVER",))
        # Only the path is rewritten, never a parameter.
        self.assertEqual(recipients[-1].orcpt, "RFC822;x:<postmaster>")

    def test_plusAddressing(self) -> None:
        """user+tag@ is accepted and delivered to user@."""
        self.send(b"HELO c\r\nMAIL FROM:<>\r\n")
        self.assertEqual(self.codes(b"RCPT TO:<alice+news@example.com>\r\n"), [b"250"])
        self.send(b"DATA\r\nx\r\n.\r\n")
        r = self.sink.messages[0][0].recipients[0]
        self.assertEqual(
            (str(r.address), str(r.original)),
            ("alice@example.com", "alice+news@example.com"),
        )

    def test_aliasExpandsAndDedupes(self) -> None:
        """An alias expands to its targets; a target named twice is kept once."""
        self.send(
            b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<team@example.com>\r\nRCPT TO:<alice@example.com>\r\n"
        )
        self.send(b"DATA\r\nx\r\n.\r\n")
        addresses = [str(r.address) for r in self.sink.messages[0][0].recipients]
        self.assertEqual(addresses, ["alice@example.com", "bob@example.com"])

    def test_tooManyRecipients(self) -> None:
        """More RCPTs than the limit get 452 4.5.3."""
        self.send(b"HELO c\r\nMAIL FROM:<>\r\n")
        rcpts = b"RCPT TO:<alice@example.com>\r\n" * 4
        self.assertEqual(self.codes(rcpts), [b"250", b"250", b"250", b"452"])

    def test_sequenceErrors(self) -> None:
        """Commands out of order get 503 5.5.1."""
        self.assertEqual(self.codes(b"MAIL FROM:<>\r\n"), [b"503"])
        self.send(b"HELO c\r\n")
        self.assertEqual(self.codes(b"RCPT TO:<alice@example.com>\r\nDATA\r\n"), [b"503", b"503"])
        self.assertEqual(self.codes(b"MAIL FROM:<>\r\nMAIL FROM:<>\r\n"), [b"250", b"503"])

    def test_sizeParameter(self) -> None:
        """MAIL with SIZE over the limit gets 552 5.3.4; unknown parameters 555."""
        self.send(b"EHLO c\r\n")
        self.assertEqual(self.codes(b"MAIL FROM:<> SIZE=20000\r\n"), [b"552"])
        self.assertEqual(self.codes(b"MAIL FROM:<> FOO=1\r\n"), [b"555"])
        self.assertEqual(self.codes(b"MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n"), [b"250"])

    def test_messageTooBig(self) -> None:
        """A message over the size limit is read to its end and refused with 552."""
        self.send(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
        self.send((b"x" * 998 + b"\r\n") * 30)
        self.assertEqual(self.codes(b".\r\nNOOP\r\n"), [b"552", b"250"])
        self.assertEqual(self.sink.messages, [])

    def test_vrfyRevealsNothing(self) -> None:
        """VRFY answers 252 for anyone, existing or not."""
        self.assertEqual(self.codes(b"VRFY alice\r\nVRFY nobody\r\n"), [b"252", b"252"])

    def test_rset(self) -> None:
        """RSET drops the transaction."""
        self.send(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nRSET\r\n")
        self.assertEqual(self.codes(b"DATA\r\n"), [b"503"])

    def test_badAddressSyntax(self) -> None:
        """Malformed paths get 501 with the proper enhanced code."""
        self.send(b"HELO c\r\n")
        self.assertEqual(self.send(b"MAIL FROM:<a b@c>\r\n")[0][:9], b"501 5.1.7")
        self.send(b"MAIL FROM:<>\r\n")
        self.assertEqual(self.send(b"RCPT TO:<nodomain>\r\n")[0][:9], b"501 5.1.3")

    def test_idleTimeout(self) -> None:
        """An idle client is told 421 and disconnected."""
        self.clock.advance(self.limits.smtp_idle + 1)
        self.assertIn(b"421 4.4.2", self.transport.value())
        self.assertTrue(self.transport.disconnecting)

    def test_authNotOfferedOnMX(self) -> None:
        """The MX listener offers no AUTH."""
        self.assertNotIn(b"AUTH", self.transport.value() + b"".join(self.send(b"EHLO c\r\n")))

    def test_receivedCountLoop(self) -> None:
        """A message with 50 Received headers is refused as a loop."""
        self.send(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
        self.assertEqual(self.codes(b"Received: x\r\n" * 50 + b"\r\nbody\r\n.\r\n"), [b"554"])


class SubmissionTests(SMTPTestMixin, SynchronousTestCase):
    """
    The submission listener: TLS (or loopback) and AUTH before MAIL.
    """

    mode = Mode.SUBMISSION

    def test_mailRequiresTLS(self) -> None:
        """MAIL before STARTTLS from a remote address gets 530 5.7.0."""
        self.send(b"EHLO c\r\n")
        self.assertEqual(self.send(b"MAIL FROM:<alice@example.com>\r\n")[0][:9], b"530 5.7.0")

    def test_mailRequiresAuth(self) -> None:
        """MAIL before AUTH gets 530 5.7.0 even under TLS."""
        self.proto.tlsActive = True
        self.send(b"EHLO c\r\n")
        self.assertEqual(
            self.send(b"MAIL FROM:<alice@example.com>\r\n"),
            [b"530 5.7.0 Authentication required"],
        )

    def test_senderMustBeOwned(self) -> None:
        """An authenticated user may only send as its own addresses."""
        self.proto.tlsActive = True
        self.proto.authUser = "alice@example.com"
        self.send(b"EHLO c\r\n")
        self.assertEqual(self.codes(b"MAIL FROM:<bob@example.com>\r\n"), [b"553"])
        self.assertEqual(self.codes(b"MAIL FROM:<alice+x@example.com>\r\n"), [b"250"])

    def test_authUserMayRelay(self) -> None:
        """An authenticated user may send to remote domains."""
        self.proto.tlsActive = True
        self.proto.authUser = "alice@example.com"
        self.send(b"EHLO c\r\nMAIL FROM:<alice@example.com>\r\n")
        self.assertEqual(self.codes(b"RCPT TO:<x@remote.test>\r\n"), [b"250"])

    def test_addsMissingHeaders(self) -> None:
        """Submitted mail without Message-ID and Date gets both."""
        self.proto.tlsActive = True
        self.proto.authUser = "alice@example.com"
        self.send(
            b"EHLO c\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
        )
        self.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        data = self.sink.messages[0][1]
        self.assertIn(b"\r\nMessage-ID: <Q1@mx.example.com>\r\n", data)
        self.assertIn(b"\r\nDate: ", data)

    def test_authNotOfferedWithoutTLS(self) -> None:
        """EHLO on a plaintext remote connection offers no AUTH."""
        self.assertNotIn(b"AUTH", b"".join(self.send(b"EHLO c\r\n")))


class HeaderDateTests(SynchronousTestCase):
    """
    L{_headerDate} is C{email.utils.formatdate} in local time, made once a
    second.
    """

    def test_matchesFormatdate(self) -> None:
        """
        Every second gets its own date; within a second, the same one.
        """
        import email.utils

        for t in (1_700_000_000.0, 1_700_000_000.9, 1_700_000_001.2, 1_600_000_000.0):
            self.assertEqual(_headerDate(t), email.utils.formatdate(int(t), localtime=True))
