"""
Tests for L{mta.smtp.client}: the outbound ESMTP dialogue over
StringTransport with scripted peer replies, and the reply parser.

L{LoopbackTests} run the client against our own server on 127.0.0.1:
TLS outcomes, BDAT and DATA, DSN, AUTH, implicit TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IOpenSSLContextFactory
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from mta.config import LimitsConfig
from mta.directory.memory import MemoryDirectory
from mta.envelope import Address, Envelope, Recipient
from mta.errors import Reply
from mta.policy.base import PolicyChain
from mta.smtp.client import SMTPClient, connectSMTP
from mta.smtp.clientparts import (
    ClientPolicy,
    ConnectionFailed,
    OutboundMessage,
    ProtocolError,
    ReplyParser,
    Timeouts,
    canonicalLineEnds,
    dotStuff,
    encodeOrcpt,
    parseExtensions,
)
from mta.smtp.clienttls import TLSOutcome
from mta.smtp.server import Mode, SMTPFactory, SMTPServer
from mta.testing.fakes import FakeLogin, RecordingSink
from mta.tls import TLSContextHolder

BASIC = ("PIPELINING", "SIZE 100000", "8BITMIME", "ENHANCEDSTATUSCODES")
BODY = b"Subject: hi\r\n\r\nhello\r\n"


def recipient(text: str, notify: tuple[str, ...] = (), orcpt: str = "") -> Recipient:
    """
    @return: a pending recipient for C{text}.
    """
    address = Address.parse(text, utf8=True)
    return Recipient(address, address, notify=notify, orcpt=orcpt)


def message(
    *to: str, data: bytes = BODY, sender: str = "a@here.test", **kw: object
) -> OutboundMessage:
    """
    @return: a message from C{sender} to C{to}.
    """
    return OutboundMessage(
        Address.parse(sender, utf8=True),
        tuple(recipient(t) for t in to),
        data,
        **kw,  # type: ignore[arg-type]
    )


class DialogMixin:
    """
    A client on a StringTransport, and the peer's side of the dialogue.
    """

    def connect(self, policy: ClientPolicy | None = None) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.client = SMTPClient(
            "mx.remote.test", policy or ClientPolicy("out.here.test"), self.clock
        )
        self.client.makeConnection(self.transport)
        self.ready = self.client.whenReady()

    def peer(self, *lines: str | bytes) -> None:
        """
        The peer sends C{lines}, each with CRLF, in one segment.
        """
        raw = [line if isinstance(line, bytes) else line.encode("utf-8") for line in lines]
        self.client.dataReceived(b"".join(line + b"\r\n" for line in raw))

    def written(self) -> bytes:
        """
        @return: what the client wrote since the last call.
        """
        value: bytes = self.transport.value()
        self.transport.clear()
        return value

    def sent(self) -> list[bytes]:
        """
        @return: the command lines the client wrote since the last call.
        """
        return self.written().split(b"\r\n")[:-1]

    def handshake(self, *extensions: str) -> None:
        """
        Greeting and EHLO, the peer offering C{extensions}.
        """
        self.peer("220 mx.remote.test ESMTP")
        assert self.sent() == [b"EHLO out.here.test"]
        lines = ["mx.remote.test", *extensions]
        self.peer(*(f"250{'-' if i < len(lines) - 1 else ' '}{x}" for i, x in enumerate(lines)))

    def ehloed(self, *extensions: str, policy: ClientPolicy | None = None) -> None:
        """
        Connect and get ready, the peer offering C{extensions}.
        """
        self.connect(policy)
        self.handshake(*extensions)
        self.successResultOf(self.ready)  # type: ignore[attr-defined]


class SetUpTests(DialogMixin, SynchronousTestCase):
    """
    Greeting, EHLO, TLS policy and AUTH before any mail.
    """

    def test_ready(self) -> None:
        """After the greeting and EHLO the session is ready, with the peer's extensions."""
        self.ehloed("PIPELINING", "SIZE 5000", "AUTH PLAIN LOGIN", "X-FOO bar baz")
        self.assertEqual(
            self.client.extensions,
            {"PIPELINING": "", "SIZE": "5000", "AUTH": "PLAIN LOGIN", "X-FOO": "bar baz"},
        )
        self.assertTrue(self.client.idle)
        self.assertEqual(self.client.greeting, Reply(220, "mx.remote.test ESMTP"))

    def test_noStartTLSRecorded(self) -> None:
        """A peer without STARTTLS is used in plaintext under the opportunistic policy, and the outcome says why."""
        self.ehloed("PIPELINING")
        self.assertEqual(self.client.tlsOutcome, TLSOutcome(reason="peer offered no STARTTLS"))

    def test_plaintextPolicy(self) -> None:
        """With C{tls="none"} STARTTLS is never tried, even when offered."""
        self.ehloed("STARTTLS", policy=ClientPolicy("out.here.test", tls="none"))
        self.assertIn("not attempted", self.client.tlsOutcome.reason)
        self.assertTrue(self.client.idle)

    def test_tlsRequiredNotOffered(self) -> None:
        """TLS required and no STARTTLS offered: a temporary 4.7.4 failure, and QUIT."""
        self.connect(ClientPolicy("out.here.test", tls="required"))
        self.handshake("PIPELINING")
        failure = self.failureResultOf(self.ready, ConnectionFailed)
        self.assertEqual(failure.value.reply.code, 421)
        self.assertTrue(failure.value.reply.text.startswith("4.7.4 mx.remote.test: "))
        self.assertFalse(failure.value.permanent)
        self.assertFalse(failure.value.retryWithoutTLS)
        self.assertEqual(self.sent(), [b"QUIT"])

    def test_startTLSRefusedOpportunistic(self) -> None:
        """A refused STARTTLS under the opportunistic policy leaves the session in plaintext."""
        self.connect()
        self.handshake("STARTTLS")
        self.assertEqual(self.sent(), [b"STARTTLS"])
        self.peer("454 4.7.0 TLS not available")
        self.successResultOf(self.ready)
        self.assertIn("STARTTLS refused: 454", self.client.tlsOutcome.reason)

    def test_plaintextAfterStartTLSDropped(self) -> None:
        """Replies injected in plaintext after STARTTLS's 220 are dropped, not taken as said under TLS; a handshake that never ends times out with 4.7.5 and allows a plaintext retry."""

        class TLSStringTransport(StringTransport):
            started: object = None

            def startTLS(self, creator: object) -> None:
                self.started = creator

        self.clock = Clock()
        self.transport = TLSStringTransport()
        self.client = SMTPClient("mx.remote.test", ClientPolicy("out.here.test"), self.clock)
        self.client.makeConnection(self.transport)
        self.ready = self.client.whenReady()
        self.handshake("STARTTLS")
        self.assertEqual(self.sent(), [b"STARTTLS"])
        self.peer("220 go ahead", "250-injected", "250 AUTH PLAIN")
        self.assertIsNotNone(self.transport.started)
        self.assertNoResult(self.ready)
        self.clock.advance(300)
        failure = self.failureResultOf(self.ready, ConnectionFailed)
        self.assertEqual(failure.value.reply.text, "4.7.5 mx.remote.test: TLS handshake timed out")
        self.assertTrue(failure.value.retryWithoutTLS)

    def test_greetingRefused(self) -> None:
        """A 554 greeting fails the session permanently with the peer's reply, and the client says QUIT."""
        self.connect()
        self.peer("554 5.7.1 go away")
        failure = self.failureResultOf(self.ready, ConnectionFailed)
        self.assertEqual(failure.value.reply, Reply(554, "5.7.1 go away"))
        self.assertTrue(failure.value.permanent)
        self.assertEqual(self.sent(), [b"QUIT"])

    def test_greetingTemporary(self) -> None:
        """A 421 greeting is a temporary failure."""
        self.connect()
        self.peer("421 4.3.2 busy")
        failure = self.failureResultOf(self.ready, ConnectionFailed)
        self.assertFalse(failure.value.permanent)

    def test_heloFallback(self) -> None:
        """A peer refusing EHLO gets HELO, and has no extensions."""
        self.connect()
        self.peer("220 old.remote.test SMTP")
        self.assertEqual(self.sent(), [b"EHLO out.here.test"])
        self.peer("502 5.5.2 command not recognized")
        self.assertEqual(self.sent(), [b"HELO out.here.test"])
        self.peer("250 old.remote.test")
        self.successResultOf(self.ready)
        self.assertEqual(self.client.extensions, {})

    def test_heloRefused(self) -> None:
        """EHLO and HELO both refused: the session fails with HELO's reply."""
        self.connect()
        self.peer("220 x", "502 no", "550 5.7.1 not you")
        failure = self.failureResultOf(self.ready, ConnectionFailed)
        self.assertEqual(failure.value.reply, Reply(550, "5.7.1 not you"))

    def test_authNeedsTLS(self) -> None:
        """Credentials are never sent on a session without TLS: a temporary failure."""
        self.connect(ClientPolicy("out.here.test", auth=("u", "p")))
        self.handshake("AUTH PLAIN")
        failure = self.failureResultOf(self.ready, ConnectionFailed)
        self.assertTrue(failure.value.reply.text.startswith("4.7.0 "))
        self.assertNotIn(b"AUTH", self.written())

    def test_greetingTimeout(self) -> None:
        """No greeting within five minutes: a temporary 4.4.2 failure and the connection dropped."""
        self.connect()
        self.clock.advance(299)
        self.assertNoResult(self.ready)
        self.clock.advance(1)
        failure = self.failureResultOf(self.ready, ConnectionFailed)
        self.assertEqual(failure.value.reply.code, 421)
        self.assertIn(
            "4.4.2 mx.remote.test: timed out waiting for the reply to the greeting",
            str(failure.value.reply),
        )
        self.assertTrue(self.transport.disconnecting)

    def test_timeoutsOverridable(self) -> None:
        """The policy's timeouts replace RFC 5321's defaults."""
        self.connect(ClientPolicy("out.here.test", timeouts=Timeouts(greeting=10)))
        self.clock.advance(10)
        self.failureResultOf(self.ready, ConnectionFailed)

    def test_connectionLostBeforeGreeting(self) -> None:
        """A connection lost during setup fails it with 4.4.2."""
        self.connect()
        self.client.connectionLost(Failure(ConnectionError("reset")))
        failure = self.failureResultOf(self.ready, ConnectionFailed)
        self.assertIn("4.4.2", failure.value.reply.text)
        self.assertFalse(self.client.usable)

    def test_garbageGreeting(self) -> None:
        """A peer speaking something else than SMTP fails the session with 4.4.2 and is dropped."""
        self.connect()
        self.client.dataReceived(b"SSH-2.0-OpenSSH_9.2\r\n")
        failure = self.failureResultOf(self.ready, ConnectionFailed)
        self.assertIn("4.4.2 mx.remote.test: protocol error", failure.value.reply.text)
        self.assertTrue(self.transport.disconnecting)

    def test_overlongReply(self) -> None:
        """An endless reply line is a protocol error, not a growing buffer."""
        self.connect()
        self.client.dataReceived(b"220 " + b"x" * 10000)
        failure = self.failureResultOf(self.ready, ConnectionFailed)
        self.assertIn("too long", failure.value.reply.text)

    def test_endlessMultilineReply(self) -> None:
        """A multi-line reply beyond the reply size limit is a protocol error."""
        self.connect()
        self.client.dataReceived(b"220-hello\r\n" * 10000)
        self.failureResultOf(self.ready, ConnectionFailed)

    def test_whenReadyAfterwards(self) -> None:
        """whenReady called after the session is ready fires at once."""
        self.ehloed()
        self.successResultOf(self.client.whenReady())


class TransactionTests(DialogMixin, SynchronousTestCase):
    """
    One or more transactions on a ready session.
    """

    def test_oneAtATime(self) -> None:
        """Without PIPELINING each command waits for the previous reply."""
        self.ehloed("8BITMIME")
        d = self.client.send(message("b@there.test", "c@there.test"))
        self.assertEqual(self.sent(), [b"MAIL FROM:<a@here.test>"])
        self.peer("250 2.1.0 Ok")
        self.assertEqual(self.sent(), [b"RCPT TO:<b@there.test>"])
        self.peer("250 2.1.5 Ok")
        self.assertEqual(self.sent(), [b"RCPT TO:<c@there.test>"])
        self.peer("250 2.1.5 Ok")
        self.assertEqual(self.sent(), [b"DATA"])
        self.peer("354 go ahead")
        self.assertEqual(self.written(), BODY + b".\r\n")
        self.assertNoResult(d)
        self.peer("250 2.0.0 queued as X")
        results = self.successResultOf(d)
        self.assertEqual(set(results.values()), {Reply(250, "2.0.0 queued as X")})
        self.assertEqual(len(results), 2)
        self.assertTrue(self.client.idle)

    def test_pipelined(self) -> None:
        """With PIPELINING, MAIL, every RCPT and DATA go in one write and the replies are matched in order."""
        self.ehloed(*BASIC)
        d = self.client.send(message("b@there.test", "c@there.test"))
        self.assertEqual(
            self.sent(),
            [
                b"MAIL FROM:<a@here.test> SIZE=22",
                b"RCPT TO:<b@there.test>",
                b"RCPT TO:<c@there.test>",
                b"DATA",
            ],
        )
        self.peer("250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "354 go")
        self.assertEqual(self.written(), BODY + b".\r\n")
        self.peer("250 2.0.0 Ok")
        self.assertEqual(set(self.successResultOf(d).values()), {Reply(250, "2.0.0 Ok")})

    def test_rcptRefusals(self) -> None:
        """Recipients refused at RCPT (550, 452) keep their own replies; DATA's reply goes to the others."""
        self.ehloed(*BASIC)
        m = message("b@there.test", "c@there.test", "d@there.test")
        d = self.client.send(m)
        self.written()
        self.peer(
            "250 2.1.0 Ok", "550 5.1.1 no such user", "250 2.1.5 Ok", "452 4.5.3 too many", "354 go"
        )
        self.written()
        self.peer("250 2.0.0 Ok")
        b, c, dd = m.recipients
        self.assertEqual(
            self.successResultOf(d),
            {
                b: Reply(550, "5.1.1 no such user"),
                c: Reply(250, "2.0.0 Ok"),
                dd: Reply(452, "4.5.3 too many"),
            },
        )

    def test_noneAcceptedRset(self) -> None:
        """When every RCPT is refused the client sends RSET instead of DATA."""
        self.ehloed("8BITMIME")
        m = message("b@there.test")
        d = self.client.send(m)
        self.assertEqual(self.sent(), [b"MAIL FROM:<a@here.test>"])
        self.peer("250 Ok")
        self.assertEqual(self.sent(), [b"RCPT TO:<b@there.test>"])
        self.peer("550 5.1.1 unknown")
        self.assertEqual(self.sent(), [b"RSET"])
        self.peer("250 Ok")
        self.assertEqual(self.successResultOf(d), {m.recipients[0]: Reply(550, "5.1.1 unknown")})
        self.assertTrue(self.client.idle)

    def test_pipelinedNoneAccepted(self) -> None:
        """Pipelined, every RCPT refused: DATA's 554 is ignored, RSET follows and each recipient keeps its RCPT reply."""
        self.ehloed(*BASIC)
        m = message("b@there.test")
        d = self.client.send(m)
        self.written()
        self.peer("250 Ok", "550 5.1.1 unknown", "554 5.5.1 no valid recipients")
        self.assertEqual(self.sent(), [b"RSET"])
        self.peer("250 Ok")
        self.assertEqual(self.successResultOf(d), {m.recipients[0]: Reply(550, "5.1.1 unknown")})

    def test_mailRefused(self) -> None:
        """A refused MAIL is every recipient's reply, not the 503s the pipelined RCPTs got."""
        self.ehloed(*BASIC)
        m = message("b@there.test", "c@there.test")
        d = self.client.send(m)
        self.written()
        self.peer("451 4.3.0 try later", "503 5.5.1 MAIL first", "503 5.5.1 MAIL first", "503 x")
        self.assertEqual(set(self.successResultOf(d).values()), {Reply(451, "4.3.0 try later")})
        self.assertEqual(self.written(), b"")

    def test_dataRefused(self) -> None:
        """A 451 after the final dot is every accepted recipient's reply, then RSET."""
        self.ehloed(*BASIC)
        d = self.client.send(message("b@there.test"))
        self.written()
        self.peer("250 Ok", "250 Ok", "354 go")
        self.written()
        self.peer("451 4.3.0 queue trouble")
        self.assertEqual(self.sent(), [b"RSET"])
        self.peer("250 Ok")
        self.assertEqual(
            list(self.successResultOf(d).values()), [Reply(451, "4.3.0 queue trouble")]
        )
        self.assertTrue(self.client.idle)

    def test_dataCommandRefused(self) -> None:
        """A refused DATA command (not pipelined) is the accepted recipients' reply."""
        self.ehloed()
        d = self.client.send(message("b@there.test"))
        self.peer("250 Ok")
        self.peer("250 Ok")
        self.assertEqual(self.sent()[-1], b"DATA")
        self.peer("554 5.7.1 not today")
        self.peer("250 Ok")
        self.assertEqual(list(self.successResultOf(d).values()), [Reply(554, "5.7.1 not today")])

    def test_secondSend(self) -> None:
        """A second transaction follows on the same connection without RSET."""
        self.ehloed(*BASIC)
        for _ in range(2):
            d = self.client.send(message("b@there.test"))
            self.assertTrue(self.sent()[0].startswith(b"MAIL FROM:"))
            self.peer("250 Ok", "250 Ok", "354 go")
            self.written()
            self.peer("250 Ok")
            self.successResultOf(d)
        self.assertEqual(self.client.transactions, 2)

    def test_sendWhileBusy(self) -> None:
        """send() during another transaction is a programming error."""
        self.ehloed()
        self.client.send(message("b@there.test"))
        self.assertRaises(RuntimeError, self.client.send, message("b@there.test"))

    def test_multilineReplies(self) -> None:
        """A multi-line reply is one reply whose text keeps its lines and enhanced code."""
        self.ehloed(*BASIC)
        d = self.client.send(message("b@there.test"))
        self.written()
        self.peer(
            "250 Ok",
            "550-5.7.1 refused",
            "550-5.7.1 see https://x.test/",
            "550 5.7.1 bye",
            "554 no",
        )
        self.peer("250 Ok")
        self.assertEqual(
            list(self.successResultOf(d).values()),
            [Reply(550, "5.7.1 refused\n5.7.1 see https://x.test/\n5.7.1 bye")],
        )

    def test_garbageMidTransaction(self) -> None:
        """Garbage instead of a reply gives every recipient 421 4.4.2 and drops the connection."""
        self.ehloed(*BASIC)
        d = self.client.send(message("b@there.test"))
        self.client.dataReceived(b"250 Ok\r\nHELLO?\r\n")
        (reply,) = self.successResultOf(d).values()
        self.assertEqual(reply.code, 421)
        self.assertIn("4.4.2", reply.text)
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.client.usable)

    def test_rcptTimeout(self) -> None:
        """No RCPT reply within five minutes: 421 4.4.2 for the recipients."""
        self.ehloed()
        d = self.client.send(message("b@there.test"))
        self.peer("250 Ok")
        self.clock.advance(299)
        self.assertNoResult(d)
        self.clock.advance(1)
        (reply,) = self.successResultOf(d).values()
        self.assertEqual(
            reply, Reply(421, "4.4.2 mx.remote.test: timed out waiting for the reply to RCPT")
        )

    def test_finalReplyTimeout(self) -> None:
        """After the dot the client waits the data block and final dot timeouts (13 minutes), then gives up."""
        self.ehloed(*BASIC)
        d = self.client.send(message("b@there.test"))
        self.peer("250 Ok", "250 Ok", "354 go")
        self.clock.advance(779)
        self.assertNoResult(d)
        self.clock.advance(1)
        (reply,) = self.successResultOf(d).values()
        self.assertIn("timed out waiting for the reply to the end of data", reply.text)

    def test_connectionLostMidData(self) -> None:
        """A connection lost after the body gives accepted recipients 421 4.4.2; refused ones keep their reply."""
        self.ehloed(*BASIC)
        m = message("b@there.test", "c@there.test")
        d = self.client.send(m)
        self.peer("250 Ok", "550 5.1.1 no", "250 Ok", "354 go")
        self.client.connectionLost(Failure(ConnectionError("reset")))
        results = self.successResultOf(d)
        self.assertEqual(results[m.recipients[0]], Reply(550, "5.1.1 no"))
        self.assertEqual(
            results[m.recipients[1]],
            Reply(
                421,
                "4.4.2 mx.remote.test: connection lost waiting for the reply to the end of data",
            ),
        )
        self.assertFalse(self.client.usable)

    def test_sendAfterPeerClosed(self) -> None:
        """A connection the peer closed while idle is not usable, and send() answers 4.4.2 at once."""
        self.ehloed()
        self.client.connectionLost(Failure(ConnectionError("closed")))
        self.assertFalse(self.client.idle)
        (reply,) = self.successResultOf(self.client.send(message("b@there.test"))).values()
        self.assertEqual(reply.code, 421)

    def test_unsolicited421(self) -> None:
        """A 421 from the peer between transactions ends the session."""
        self.ehloed()
        self.peer("421 4.4.2 idle too long")
        self.assertFalse(self.client.usable)
        self.assertTrue(self.transport.disconnecting)

    def test_idleQuit(self) -> None:
        """A connection left idle for the idle timeout says QUIT."""
        self.ehloed()
        self.clock.advance(299)
        self.assertEqual(self.written(), b"")
        self.clock.advance(1)
        self.assertEqual(self.sent(), [b"QUIT"])
        self.assertFalse(self.client.usable)

    def test_quit(self) -> None:
        """quit() sends QUIT, closes after the reply and fires when the connection is gone."""
        self.ehloed()
        d = self.client.quit()
        self.assertEqual(self.sent(), [b"QUIT"])
        self.peer("221 2.0.0 Bye")
        self.assertTrue(self.transport.disconnecting)
        self.assertNoResult(d)
        self.client.connectionLost(Failure(ConnectionError("closed")))
        self.successResultOf(d)


class ExtensionTests(DialogMixin, SynchronousTestCase):
    """
    SIZE, 8BITMIME, SMTPUTF8, DSN, REQUIRETLS and CHUNKING.
    """

    def refused(self, m: OutboundMessage) -> Reply:
        """
        @return: the one reply all of C{m}'s recipients got, nothing sent.
        """
        results = self.successResultOf(self.client.send(m))
        self.assertEqual(self.written(), b"")
        (reply,) = set(results.values())
        return reply

    def test_sizeTooBig(self) -> None:
        """A message bigger than the peer's SIZE is not sent: 552 5.3.4 for all."""
        self.ehloed("PIPELINING", "SIZE 10")
        reply = self.refused(message("b@there.test", "c@there.test"))
        self.assertEqual(reply.code, 552)
        self.assertTrue(reply.text.startswith("5.3.4 "))

    def test_sizeZeroNoLimit(self) -> None:
        """SIZE 0 (or no number) means no limit; SIZE= is still given on MAIL."""
        self.ehloed("SIZE 0")
        self.client.send(message("b@there.test"))
        self.assertEqual(self.sent(), [b"MAIL FROM:<a@here.test> SIZE=22"])

    def test_eightBitTo7BitPeer(self) -> None:
        """8-bit data to a peer without 8BITMIME: 554 5.6.3, nothing sent."""
        self.ehloed("PIPELINING")
        reply = self.refused(message("b@there.test", data=b"Subject: x\r\n\r\ncaf\xc3\xa9\r\n"))
        self.assertEqual(reply.code, 554)
        self.assertTrue(reply.text.startswith("5.6.3 "))

    def test_eightBitDeclared(self) -> None:
        """8-bit data goes with BODY=8BITMIME; a declared 7BIT body with BODY=7BIT."""
        self.ehloed("8BITMIME")
        self.client.send(message("b@there.test", data=b"S: x\r\n\r\n\xff\r\n"))
        self.assertEqual(self.sent(), [b"MAIL FROM:<a@here.test> BODY=8BITMIME"])
        self.connect()
        self.handshake("8BITMIME")
        self.client.send(message("b@there.test", bodyType="7BIT"))
        self.assertEqual(self.sent(), [b"MAIL FROM:<a@here.test> BODY=7BIT"])

    def test_utf8AddressWithoutSMTPUTF8(self) -> None:
        """A UTF-8 address to a peer without SMTPUTF8: 553 5.6.7, nothing sent."""
        self.ehloed("8BITMIME")
        reply = self.refused(message("jürgen@there.test", smtputf8=True))
        self.assertEqual(reply.code, 553)
        self.assertTrue(reply.text.startswith("5.6.7 "))

    def test_utf8HeaderWithoutSMTPUTF8(self) -> None:
        """A message marked SMTPUTF8 with UTF-8 in its header section needs SMTPUTF8 too."""
        self.ehloed("8BITMIME")
        data = "Subject: grüße\r\n\r\nhallo\r\n".encode()
        self.assertEqual(self.refused(message("b@there.test", data=data, smtputf8=True)).code, 553)

    def test_asciiSMTPUTF8MessageGoes(self) -> None:
        """A message marked SMTPUTF8 that is all ASCII goes to a peer without SMTPUTF8."""
        self.ehloed()
        self.client.send(message("b@there.test", smtputf8=True))
        self.assertEqual(self.sent(), [b"MAIL FROM:<a@here.test>"])

    def test_smtputf8Passed(self) -> None:
        """UTF-8 addresses go with SMTPUTF8 (and BODY=8BITMIME) when offered."""
        self.ehloed("8BITMIME", "SMTPUTF8")
        data = "Subject: grüße\r\n\r\nhallo\r\n".encode()
        self.client.send(
            message("jürgen@bücher.test", sender="jörg@here.test", data=data, smtputf8=True)
        )
        self.assertEqual(
            self.sent(), ["MAIL FROM:<jörg@here.test> BODY=8BITMIME SMTPUTF8".encode()]
        )
        self.peer("250 Ok")
        self.assertEqual(self.sent(), ["RCPT TO:<jürgen@bücher.test>".encode()])

    def test_dsnPassed(self) -> None:
        """With DSN offered, RET, ENVID (xtext), NOTIFY and ORCPT (xtext) are passed on."""
        self.ehloed("PIPELINING", "DSN")
        m = OutboundMessage(
            Address.parse("a@here.test"),
            (
                recipient("b@there.test", ("SUCCESS", "FAILURE"), "rfc822;b+x=y@there.test"),
                recipient("c@there.test", ("NEVER",)),
            ),
            BODY,
            dsnRet="HDRS",
            dsnEnvid="id 1+2=3",
        )
        self.client.send(m)
        self.assertEqual(
            self.sent(),
            [
                b"MAIL FROM:<a@here.test> RET=HDRS ENVID=id+201+2B2+3D3",
                b"RCPT TO:<b@there.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx+3Dy@there.test",
                b"RCPT TO:<c@there.test> NOTIFY=NEVER",
                b"DATA",
            ],
        )
        self.assertTrue(self.client.dsnPassed)

    def test_dsnNotOffered(self) -> None:
        """Without DSN no DSN parameter is sent, and dsnPassed says so."""
        self.ehloed("PIPELINING")
        m = OutboundMessage(
            Address.parse("a@here.test"),
            (recipient("b@there.test", ("SUCCESS",), "rfc822;b@there.test"),),
            BODY,
            dsnRet="FULL",
            dsnEnvid="x",
        )
        self.client.send(m)
        self.assertEqual(
            self.sent(), [b"MAIL FROM:<a@here.test>", b"RCPT TO:<b@there.test>", b"DATA"]
        )
        self.assertFalse(self.client.dsnPassed)

    def test_orcptEncoding(self) -> None:
        """ORCPT is xtext for rfc822 and RFC 6533 utf-8-addr-xtext for UTF-8 addresses."""
        self.assertEqual(encodeOrcpt("rfc822;a+b@x.test"), "rfc822;a+2Bb@x.test")
        self.assertEqual(encodeOrcpt("utf-8;jürgen@x.test"), "utf-8;j\\x{FC}rgen@x.test")
        self.assertEqual(encodeOrcpt("rfc822;jürgen@x.test"), "utf-8;j\\x{FC}rgen@x.test")

    def test_requireTLSWithoutTLS(self) -> None:
        """REQUIRETLS on a session without TLS: 550 5.7.10 for all, nothing sent."""
        self.ehloed("PIPELINING", "REQUIRETLS")
        reply = self.refused(message("b@there.test", requireTLS=True))
        self.assertEqual(reply.code, 550)
        self.assertTrue(reply.text.startswith("5.7.10 "))

    def test_bdatPipelined(self) -> None:
        """With CHUNKING and PIPELINING a small message goes raw in BDAT LAST with the envelope."""
        self.ehloed("PIPELINING", "CHUNKING", "8BITMIME")
        data = b".starts with a dot\r\n\r\n.\r\n"
        d = self.client.send(message("b@there.test", data=data))
        self.assertEqual(
            self.written(),
            b"MAIL FROM:<a@here.test>\r\nRCPT TO:<b@there.test>\r\nBDAT 25 LAST\r\n" + data,
        )
        self.peer("250 Ok", "250 Ok", "250 2.0.0 queued")
        self.assertEqual(list(self.successResultOf(d).values()), [Reply(250, "2.0.0 queued")])

    def test_bdatOneAtATime(self) -> None:
        """With CHUNKING but no PIPELINING, BDAT follows the RCPT reply."""
        self.ehloed("CHUNKING")
        d = self.client.send(message("b@there.test"))
        self.assertEqual(self.sent(), [b"MAIL FROM:<a@here.test>"])
        self.peer("250 Ok")
        self.assertEqual(self.sent(), [b"RCPT TO:<b@there.test>"])
        self.peer("250 Ok")
        self.assertEqual(self.written(), b"BDAT 22 LAST\r\n" + BODY)
        self.peer("250 Ok")
        self.successResultOf(d)

    def test_bigBdatWaitsForRecipients(self) -> None:
        """A big message is not pipelined with the envelope: nothing large goes for nobody."""
        self.ehloed("PIPELINING", "CHUNKING")
        data = b"S: x\r\n\r\n" + b"y" * 100000 + b"\r\n"
        m = message("b@there.test", data=data)
        d = self.client.send(m)
        self.assertEqual(self.sent(), [b"MAIL FROM:<a@here.test>", b"RCPT TO:<b@there.test>"])
        self.peer("250 Ok", "550 5.1.1 no")
        self.assertEqual(self.sent(), [b"RSET"])
        self.peer("250 Ok")
        self.assertEqual(self.successResultOf(d), {m.recipients[0]: Reply(550, "5.1.1 no")})

    def test_bdatRefused(self) -> None:
        """A refused BDAT is the accepted recipients' reply, and RSET follows."""
        self.ehloed("CHUNKING")
        d = self.client.send(message("b@there.test"))
        self.peer("250 Ok", "250 Ok")
        self.written()
        self.peer("554 5.6.0 bad message")
        self.assertEqual(self.sent(), [b"RSET"])
        self.peer("250 Ok")
        self.assertEqual(list(self.successResultOf(d).values()), [Reply(554, "5.6.0 bad message")])

    def test_dotStuffing(self) -> None:
        """DATA doubles every leading dot, the first line's included, and ends with CRLF.CRLF."""
        self.ehloed()
        data = b".first\r\nmiddle\r\n.\r\n..two\r\nend"
        self.client.send(message("b@there.test", data=data))
        self.peer("250 Ok", "250 Ok")
        self.assertEqual(self.sent()[-1], b"DATA")
        self.peer("354 go")
        self.assertEqual(self.written(), b"..first\r\nmiddle\r\n..\r\n...two\r\nend\r\n.\r\n")


class PartsTests(SynchronousTestCase):
    """
    The client's pure parts: reply parsing, line ends, extensions.
    """

    def test_replyForms(self) -> None:
        """A bare code, LF line ends and an empty continuation are all replies."""
        parser = ReplyParser()
        parser.feed(b"250\r\n220-a\n220-\r\n220 b\r\n354")
        self.assertEqual(parser.next(), Reply(250, ""))
        self.assertEqual(parser.next(), Reply(220, "a\n\nb"))
        self.assertIsNone(parser.next())

    def test_controlCharactersCleaned(self) -> None:
        """Control characters and invalid UTF-8 in reply text cannot reach a log line."""
        parser = ReplyParser()
        parser.feed(b"550 a\x1b[31mb\xff\r\n")
        self.assertEqual(parser.next(), Reply(550, "a?[31mb\ufffd"))

    def test_codeChange(self) -> None:
        """A continuation with another code is a protocol error."""
        parser = ReplyParser()
        parser.feed(b"250-a\r\n251 b\r\n")
        self.assertRaises(ProtocolError, parser.next)

    def test_badCode(self) -> None:
        """Codes outside 2xx-5xx are not replies."""
        parser = ReplyParser()
        parser.feed(b"199 a\r\n")
        self.assertRaises(ProtocolError, parser.next)

    def test_extensions(self) -> None:
        """EHLO keywords are upper-cased; the old AUTH=LOGIN form joins AUTH."""
        reply = Reply(250, "mx\nsize 10\nAUTH PLAIN\nAUTH=LOGIN\nstarttls")
        self.assertEqual(
            parseExtensions(reply), {"SIZE": "10", "AUTH": "PLAIN LOGIN", "STARTTLS": ""}
        )

    def test_lineEnds(self) -> None:
        """Bare CR and LF become CRLF and the message ends with CRLF (no smuggled end of data)."""
        self.assertEqual(canonicalLineEnds(b"a\nb\r\n.\nc\rd"), b"a\r\nb\r\n.\r\nc\r\nd\r\n")
        self.assertEqual(canonicalLineEnds(b""), b"")
        self.assertEqual(dotStuff(canonicalLineEnds(b"a\n.\nb")), b"a\r\n..\r\nb\r\n.\r\n")

    def test_fromEnvelope(self) -> None:
        """fromEnvelope takes the sender and the MAIL parameters from the queued envelope."""
        envelope = Envelope(
            "Q1",
            Address.parse("a@here.test"),
            (recipient("b@there.test"),),
            0.0,
            smtputf8=True,
            bodyType="8BITMIME",
            requireTLS=True,
            dsnRet="FULL",
            dsnEnvid="e",
        )
        m = OutboundMessage.fromEnvelope(envelope, envelope.recipients, b"x")
        self.assertEqual(
            (m.sender, m.smtputf8, m.bodyType, m.requireTLS, m.dsnRet, m.dsnEnvid),
            (envelope.sender, True, "8BITMIME", True, "FULL", "e"),
        )

    def test_badTLSMode(self) -> None:
        """An unknown TLS mode is refused when the policy is made."""
        self.assertRaises(ValueError, ClientPolicy, "h", tls="sometimes")


# -- against our own server on loopback sockets -------------------------------------------


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def writeCertificate(
    folder: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
) -> tuple[Path, Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """
    Make a P-256 certificate for C{name} (and 127.0.0.1), self-signed or
    issued by C{issuer}, and write it and its key as PEM files.

    @return: the certificate's path, the key's path, the certificate, the key.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    isCA = name.startswith("ca.")
    issuerName, signer = (issuer[0].subject, issuer[1]) if issuer else (_name(name), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuerName)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=isCA, path_length=None), True)
    )
    if not isCA:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
    certificate = builder.sign(signer, hashes.SHA256())
    certPath, keyPath = folder / f"{name}.pem", folder / f"{name}.key"
    certPath.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certPath, keyPath, certificate, key


class TrackedServer(SMTPServer):
    """
    Our server, telling its factory when its connection is gone.
    """

    factory: TrackedFactory

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.lost(self)


class TrackedFactory(SMTPFactory):
    """
    An L{SMTPFactory} that knows its open connections, so that a test ends
    only when they are closed.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.open: set[SMTPServer] = set()
        self.waiters: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> SMTPServer:
        server = TrackedServer(self)
        self.open.add(server)
        return server

    def lost(self, server: SMTPServer) -> None:
        self.open.discard(server)
        if not self.open:
            waiters, self.waiters = self.waiters, []
            for d in waiters:
                d.callback(None)

    def whenClosed(self) -> Deferred[None]:
        """
        @return: fires when no connection is open.
        """
        if not self.open:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.waiters.append(d)
        return d


@implementer(IOpenSSLContextFactory)
class OldTLSOnly:
    """
    A server TLS context that offers nothing newer than TLS 1.1, which the
    client refuses: a handshake that fails.
    """

    def __init__(self, certPath: Path, keyPath: Path) -> None:
        self.context = SSL.Context(SSL.TLS_METHOD)
        self.context.set_max_proto_version(SSL.TLS1_1_VERSION)
        self.context.use_certificate_file(str(certPath))
        self.context.use_privatekey_file(str(keyPath))

    def getContext(self) -> SSL.Context:
        return self.context


class LoopbackTests(TestCase):
    """
    The client against our own server on 127.0.0.1: TLS outcomes, BDAT
    and DATA, pipelining, DSN, AUTH and implicit TLS, the message arriving
    byte for byte.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.caPath, _, ca, caKey = writeCertificate(self.folder, "ca.test.example", None)
        self.selfPath, self.selfKey, *_ = writeCertificate(self.folder, "mx.test.example", None)
        (self.folder / "issued").mkdir()
        issued = writeCertificate(self.folder / "issued", "mx.test.example", (ca, caKey))
        self.issuedPath, self.issuedKey = issued[0], issued[1]
        self.sink = RecordingSink()
        self.directory = MemoryDirectory(
            ["example.com"],
            users={"alice@example.com": "x", "bob@example.com": "x", "jürgen@example.com": "x"},
        )

    async def listen(
        self,
        tls: IOpenSSLContextFactory | None = None,
        mode: Mode = Mode.MX,
        implicit: bool = False,
        login: FakeLogin | None = None,
        recipients: int = 100,
    ) -> int:
        """
        Start our server on 127.0.0.1:0 (with the self-signed certificate
        unless C{tls} is given).

        @return: its port.
        """
        if tls is None:
            tls = TLSContextHolder(self.selfPath, self.selfKey)
        factory = TrackedFactory(
            mode=mode,
            hostname="mx.test.example",
            directory=self.directory,
            sink=self.sink,
            policy=PolicyChain([]),
            limits=LimitsConfig(recipients=recipients),
            clock=reactor,
            login=login,
            tls=tls,
        )
        listening: Any = TLSMemoryBIOFactory(tls, False, factory) if implicit else factory
        port = self.port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            listening
        )
        self.addCleanup(port.stopListening)
        self.addCleanup(factory.whenClosed)
        return int(port.getHost().port)

    async def connect(self, port: int, name: str = "mx.test.example", **kw: Any) -> SMTPClient:
        """
        @return: a ready client to our server; it says QUIT at the end of the test.
        """
        policy = ClientPolicy("out.here.test", **kw)
        client = await connectSMTP(reactor, ("127.0.0.1", port), name, policy)
        self.addCleanup(client.quit)
        return client

    def arrived(self, data: bytes) -> Envelope:
        """
        Check that the one message in the sink is C{data} after our
        server's trace header.

        @return: its envelope.
        """
        ((envelope, stored),) = self.sink.messages
        self.assertTrue(stored.endswith(data))
        self.assertTrue(stored.startswith(b"Received: from out.here.test"))
        return envelope

    async def test_opportunisticSelfSigned(self) -> None:
        """A self-signed certificate does not stop delivery; the outcome says TLS and why it is unverified."""
        port = await self.listen()
        client = await self.connect(port)
        outcome = client.tlsOutcome
        self.assertEqual(outcome.version, "TLSv1.3")
        self.assertTrue(outcome.cipher)
        self.assertFalse(outcome.verified)
        self.assertIn("self-signed certificate", outcome.reason)
        results = await client.send(message("alice@example.com", data=BODY))
        self.assertEqual([r.code for r in results.values()], [250])
        self.arrived(BODY)

    async def test_verifiedWithTrustRoot(self) -> None:
        """With the self-signed certificate as trust root and its name as server name, the outcome is verified."""
        port = await self.listen()
        client = await self.connect(port, trustRoots=self.selfPath, tls="verify")
        self.assertEqual((client.tlsOutcome.verified, client.tlsOutcome.reason), (True, ""))

    async def test_verifiedByCA(self) -> None:
        """A certificate issued by a trusted CA (given as a certificate object) is verified."""
        port = await self.listen(TLSContextHolder(self.issuedPath, self.issuedKey))
        ca = x509.load_pem_x509_certificate(self.caPath.read_bytes())
        client = await self.connect(port, trustRoots=[ca])
        self.assertTrue(client.tlsOutcome.verified)

    async def test_hostnameMismatch(self) -> None:
        """A trusted certificate for another name is unverified; under the verify policy the session fails with 4.7.5."""
        port = await self.listen()
        client = await self.connect(port, "other.test.example", trustRoots=self.selfPath)
        self.assertFalse(client.tlsOutcome.verified)
        self.assertIn("hostname mismatch", client.tlsOutcome.reason)
        policy = ClientPolicy("out.here.test", tls="verify", trustRoots=self.selfPath)
        with self.assertRaises(ConnectionFailed) as caught:
            await connectSMTP(reactor, ("127.0.0.1", port), "other.test.example", policy)
        self.assertTrue(caught.exception.reply.text.startswith("4.7.5 other.test.example: "))
        self.assertFalse(caught.exception.retryWithoutTLS)

    async def test_bdatPipelined(self) -> None:
        """Our server offers CHUNKING and PIPELINING: a message with dot lines and 8-bit bytes arrives intact, per-recipient replies kept."""
        port = await self.listen()
        client = await self.connect(port)
        self.assertIn("CHUNKING", client.extensions)
        data = b"Subject: x\r\n\r\n.dot\r\n.\r\ncaf\xc3\xa9\r\n" + b"z" * 200000 + b"\r\n"
        m = message("alice@example.com", "nobody@example.com", "bob@example.com", data=data)
        results = await client.send(m)
        self.assertEqual([r.code for r in results.values()], [250, 550, 250])
        envelope = self.arrived(data)
        self.assertEqual(envelope.bodyType, "8BITMIME")

    async def test_dataPath(self) -> None:
        """Without CHUNKING the message goes by DATA, dot-stuffed, and arrives byte for byte."""
        port = await self.listen()
        client = await self.connect(port)
        del client.extensions["CHUNKING"]
        data = b".Subject: x\r\n\r\n.\r\n..\r\n.end\r\n"
        results = await client.send(message("alice@example.com", data=data))
        self.assertEqual([r.code for r in results.values()], [250])
        self.arrived(data)

    async def test_reuseAndRecipientLimit(self) -> None:
        """Recipients past the peer's limit get 452, and a second transaction on the same connection carries them."""
        port = await self.listen(recipients=2)
        client = await self.connect(port)
        m = message("alice@example.com", "bob@example.com", "alice+x@example.com")
        results = await client.send(m)
        self.assertEqual([r.code for r in results.values()], [250, 250, 452])
        self.assertTrue(client.idle)
        again = await client.send(message("alice+x@example.com"))
        self.assertEqual([r.code for r in again.values()], [250])
        self.assertEqual(len(self.sink.messages), 2)

    async def test_dsnRoundTrip(self) -> None:
        """DSN parameters pass through our server's parser unchanged."""
        port = await self.listen()
        client = await self.connect(port)
        m = OutboundMessage(
            Address.parse("a@here.test"),
            (recipient("jürgen@example.com", ("SUCCESS", "DELAY"), "utf-8;jürgen@example.com"),),
            "Subject: grüße\r\n\r\nx\r\n".encode(),
            smtputf8=True,
            dsnRet="HDRS",
            dsnEnvid="env 1+2=3",
        )
        results = await client.send(m)
        self.assertEqual([r.code for r in results.values()], [250])
        self.assertTrue(client.dsnPassed)
        envelope = self.arrived(m.data)
        self.assertEqual(
            (envelope.dsnRet, envelope.dsnEnvid, envelope.smtputf8), ("HDRS", "env 1+2=3", True)
        )
        (rcpt,) = envelope.recipients
        self.assertEqual(
            (rcpt.notify, rcpt.orcpt), (("SUCCESS", "DELAY"), "UTF-8;jürgen@example.com")
        )

    async def test_requireTLS(self) -> None:
        """REQUIRETLS goes on a verified session and is recorded by our server; an unverified session refuses it with 5.7.10."""
        port = await self.listen()
        verified = await self.connect(port, trustRoots=self.selfPath)
        results = await verified.send(message("alice@example.com", requireTLS=True))
        self.assertEqual([r.code for r in results.values()], [250])
        self.assertTrue(self.arrived(BODY).requireTLS)
        unverified = await self.connect(port)
        (reply,) = (await unverified.send(message("alice@example.com", requireTLS=True))).values()
        self.assertEqual(reply.code, 550)
        self.assertIn("5.7.10", reply.text)

    async def test_authSubmission(self) -> None:
        """AUTH PLAIN goes after STARTTLS to our submission server; a wrong password is a temporary 4.7.8 failure."""
        login = FakeLogin({"alice@example.com": "secret"})
        port = await self.listen(mode=Mode.SUBMISSION, login=login)
        client = await self.connect(port, auth=("alice@example.com", "secret"))
        results = await client.send(message("bob@example.com", sender="alice@example.com"))
        self.assertEqual([r.code for r in results.values()], [250])
        policy = ClientPolicy("out.here.test", auth=("alice@example.com", "wrong"))
        with self.assertRaises(ConnectionFailed) as caught:
            await connectSMTP(reactor, ("127.0.0.1", port), "mx.test.example", policy)
        self.assertEqual(caught.exception.reply.code, 421)
        self.assertIn("4.7.8", caught.exception.reply.text)
        self.assertFalse(caught.exception.permanent)

    async def test_implicitTLS(self) -> None:
        """With implicit TLS the session is encrypted from the first byte."""
        holder = TLSContextHolder(self.selfPath, self.selfKey)
        port = await self.listen(
            holder,
            mode=Mode.SUBMISSIONS,
            implicit=True,
            login=FakeLogin({"alice@example.com": "pw"}),
        )
        client = await self.connect(
            port, implicitTLS=True, tls="required", auth=("alice@example.com", "pw")
        )
        self.assertEqual(client.tlsOutcome.version, "TLSv1.3")
        self.assertNotIn("STARTTLS", client.extensions)
        results = await client.send(message("bob@example.com", sender="alice@example.com"))
        self.assertEqual([r.code for r in results.values()], [250])

    async def test_handshakeFailureRetryPlaintext(self) -> None:
        """A failed STARTTLS handshake fails the session saying so; the retry with tls="none" delivers."""
        port = await self.listen(OldTLSOnly(self.selfPath, self.selfKey))
        policy = ClientPolicy("out.here.test")
        with self.assertRaises(ConnectionFailed) as caught:
            await connectSMTP(reactor, ("127.0.0.1", port), "mx.test.example", policy)
        self.assertTrue(caught.exception.retryWithoutTLS)
        self.assertIn("4.7.5 mx.test.example: TLS handshake failed", caught.exception.reply.text)
        client = await self.connect(port, tls="none")
        self.assertEqual(client.tlsOutcome.version, "")
        results = await client.send(message("alice@example.com"))
        self.assertEqual([r.code for r in results.values()], [250])

    async def test_connectionRefused(self) -> None:
        """Nothing listening: a temporary 4.4.1 failure."""
        port = await self.listen()
        await self.port.stopListening()
        with self.assertRaises(ConnectionFailed) as caught:
            await connectSMTP(reactor, ("127.0.0.1", port), "mx.test.example", ClientPolicy("o"))
        self.assertIn("4.4.1 mx.test.example: cannot connect", caught.exception.reply.text)
