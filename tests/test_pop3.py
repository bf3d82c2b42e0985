"""
Tests for L{mta.pop3.server}: the POP3 dialogue over StringTransport, with
a L{MemoryStore}, a L{MemoryDirectory} and a L{Clock}.
"""

from __future__ import annotations

import base64
from typing import Any, cast

from argon2 import PasswordHasher
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLContextFactory, IPushProducer, ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides, implementer
from zope.interface.verify import verifyObject

from mta.auth import AccountRealm, Authenticator, DirectoryChecker, LoginThrottle
from mta.config import LimitsConfig
from mta.directory.memory import MemoryDirectory
from mta.message import MessageBody
from mta.pop3.server import (
    POP3Factory,
    POP3Reply,
    POP3Server,
    State,
    byteStuff,
    topOfMessage,
)
from mta.store.memory import MemoryStore
from mta.threads import SynchronousRunner

REMOTE = IPv4Address("TCP", "192.0.2.1", 1234)
LOOPBACK = IPv4Address("TCP", "127.0.0.1", 1234)
LOOPBACK6 = IPv6Address("TCP", "::1", 1234)

_cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ALICE_HASH = _cheap.hash("correct horse")
CHEAP_DUMMY = _cheap.hash("nobody's password")

#: Stands in for the server's TLS context; the fake transport only records it.


@implementer(IOpenSSLContextFactory)
class _FakeTLS:
    """
    Stands for the server's TLS context: the transport in these tests
    only records that STLS started TLS.
    """

    def getContext(self) -> None:
        raise AssertionError("no handshake happens over StringTransport")


TLS = _FakeTLS()

MESSAGE_1 = b"Subject: one\r\nFrom: a@example.org\r\n\r\nHello\r\nthere\r\n"
MESSAGE_2 = b"Subject: two\r\n\r\nSecond message\r\n"


def plain(user: bytes, password: bytes, authzid: bytes = b"") -> bytes:
    return base64.b64encode(authzid + b"\0" + user + b"\0" + password)


class FakeTLSTransport(StringTransport):
    """
    A StringTransport that records C{startTLS}.
    """

    tlsContext: object = None

    def startTLS(self, contextFactory: object) -> None:
        self.tlsContext = contextFactory


class SlowTransport(FakeTLSTransport):
    """
    A transport whose buffer is always "full": it pauses a registered
    streaming producer on every write, as a TCP transport does for a big
    write to a slow reader.
    """

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streaming:
            self.producer.pauseProducing()


class POP3TestMixin:
    """
    Builds a POP3 server over a StringTransport and talks to it.
    """

    peer: IPv4Address | IPv6Address = LOOPBACK
    tls: IOpenSSLContextFactory | None = TLS
    limits = LimitsConfig(errors=5, commands=50)

    # Provided by SynchronousTestCase.
    assertEqual: Any
    mktemp: Any

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.directory = MemoryDirectory(["example.com"], users={"alice@example.com": ALICE_HASH})
        checker = DirectoryChecker(self.directory, SynchronousRunner(), CHEAP_DUMMY)
        self.throttle = LoginThrottle(self.clock, 3, 10, 900)
        self.authenticator = Authenticator(
            Portal(AccountRealm(), [checker]), self.throttle, self.clock
        )
        self.factory = POP3Factory(
            self.authenticator,
            self.store,
            self.tls,
            "pop.example.com",
            self.limits,
            self.clock,
        )
        self.empty = self.mktemp()
        with open(self.empty, "wb"):
            pass
        self.connect()

    def deliver(self, data: bytes, user: str = "alice@example.com") -> str:
        result: list[str] = []
        self.store.deliver(user, MessageBody(self.empty, 0, 0), data).addCallback(result.append)
        return result[0]

    def connect(
        self,
        peer: IPv4Address | IPv6Address | None = None,
        transport: FakeTLSTransport | None = None,
        implicitTLS: bool = False,
    ) -> None:
        self.transport = transport or FakeTLSTransport(peerAddress=peer or self.peer)
        if implicitTLS:
            directlyProvides(self.transport, ISSLTransport)
        self.proto: POP3Server = self.factory.buildProtocol(self.peer)
        self.proto.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        """
        Send raw bytes; return what the server wrote in answer.
        """
        self.transport.clear()
        self.proto.dataReceived(data)
        return cast(bytes, self.transport.value())

    def login(self) -> bytes:
        return self.send(b"USER alice@example.com\r\nPASS correct horse\r\n")


class POP3ServerTests(POP3TestMixin, SynchronousTestCase):
    """
    The POP3 dialogue from loopback, where passwords need no TLS.
    """

    def test_greetingHasNoVersion(self) -> None:
        """The banner names the host and nothing else."""
        self.assertEqual(self.transport.value(), b"+OK pop.example.com POP3 ready\r\n")

    def test_producerInterface(self) -> None:
        """The session is a push producer, for flow control of big replies."""
        self.assertTrue(verifyObject(IPushProducer, self.proto))

    def test_capaBeforeLogin(self) -> None:
        """CAPA lists USER, SASL PLAIN and STLS before login; no IMPLEMENTATION."""
        self.assertEqual(
            self.send(b"CAPA\r\n"),
            b"+OK Capability list follows\r\n"
            b"CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
            b"USER\r\nSASL PLAIN\r\nSTLS\r\n.\r\n",
        )

    def test_capaAfterLogin(self) -> None:
        """After login CAPA no longer offers USER, SASL or STLS."""
        self.login()
        reply = self.send(b"CAPA\r\n")
        self.assertIn(b"\r\nTOP\r\n", reply)
        for absent in [b"USER", b"SASL", b"STLS"]:
            self.assertNotIn(absent, reply)

    def test_fullTransaction(self) -> None:
        """Login, STAT, LIST, UIDL, RETR and QUIT, each answered exactly."""
        uid1, uid2 = self.deliver(MESSAGE_1), self.deliver(MESSAGE_2)
        size1, size2 = len(MESSAGE_1), len(MESSAGE_2)
        self.assertEqual(
            self.login(),
            b"+OK Send your password\r\n"
            + f"+OK Logged in, 2 messages ({size1 + size2} octets)\r\n".encode(),
        )
        self.assertEqual(self.proto.state, State.TRANSACTION)
        self.assertEqual(self.send(b"STAT\r\n"), f"+OK 2 {size1 + size2}\r\n".encode())
        self.assertEqual(
            self.send(b"LIST\r\n"),
            f"+OK 2 messages\r\n1 {size1}\r\n2 {size2}\r\n.\r\n".encode(),
        )
        self.assertEqual(self.send(b"LIST 2\r\n"), f"+OK 2 {size2}\r\n".encode())
        self.assertEqual(
            self.send(b"UIDL\r\n"),
            f"+OK 2 messages\r\n1 {uid1}\r\n2 {uid2}\r\n.\r\n".encode(),
        )
        self.assertEqual(self.send(b"UIDL 1\r\n"), f"+OK 1 {uid1}\r\n".encode())
        self.assertEqual(
            self.send(b"RETR 1\r\n"),
            f"+OK {size1} octets\r\n".encode() + MESSAGE_1 + b".\r\n",
        )
        self.assertEqual(self.send(b"NOOP\r\n"), b"+OK\r\n")
        self.assertEqual(self.send(b"QUIT\r\n"), b"+OK Logging out, 2 messages left\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_lowerCaseCommands(self) -> None:
        """Commands are case-insensitive."""
        self.deliver(MESSAGE_1)
        self.send(b"user alice@example.com\r\npass correct horse\r\n")
        self.assertEqual(self.send(b"stat\r\n"), f"+OK 1 {len(MESSAGE_1)}\r\n".encode())

    def test_quitBeforeLogin(self) -> None:
        """QUIT before login just signs off."""
        self.assertEqual(self.send(b"QUIT\r\n"), b"+OK pop.example.com signing off\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_transactionCommandsNeedLogin(self) -> None:
        """STAT, LIST, RETR, DELE and NOOP are refused before login."""
        for command in [b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"NOOP"]:
            self.assertEqual(
                self.send(command + b"\r\n"),
                b"-ERR Command not valid in this state\r\n",
            )

    def test_loginCommandsRefusedAfterLogin(self) -> None:
        """USER, PASS, AUTH and STLS are refused after login."""
        self.login()
        for command in [b"USER x", b"PASS x", b"AUTH PLAIN", b"STLS"]:
            self.assertEqual(
                self.send(command + b"\r\n"),
                b"-ERR Command not valid in this state\r\n",
            )

    def test_unknownCommand(self) -> None:
        """An unknown verb (APOP too) gets -ERR."""
        self.assertEqual(self.send(b"APOP a b\r\n"), b"-ERR Unknown command\r\n")

    def test_passWithoutUser(self) -> None:
        """PASS needs a USER first."""
        self.assertEqual(self.send(b"PASS x\r\n"), b"-ERR No USER given\r\n")

    def test_passwordWithSpaces(self) -> None:
        """The whole rest of the PASS line is the password."""
        self.directory.setPassword("alice@example.com", _cheap.hash(" a b "))
        reply = self.send(b"USER alice@example.com\r\nPASS  a b \r\n")
        self.assertIn(b"+OK Logged in", reply)

    def test_snapshotAtLogin(self) -> None:
        """Messages delivered after login are not seen until the next session."""
        self.deliver(MESSAGE_1)
        self.login()
        self.deliver(MESSAGE_2)
        self.assertEqual(self.send(b"STAT\r\n"), f"+OK 1 {len(MESSAGE_1)}\r\n".encode())

    def test_uidlStableAcrossSessions(self) -> None:
        """A message keeps its UIDL across sessions though its number changes."""
        uid1, uid2 = self.deliver(MESSAGE_1), self.deliver(MESSAGE_2)
        self.login()
        self.send(b"DELE 1\r\nQUIT\r\n")
        uid3 = self.deliver(b"Subject: three\r\n\r\n3\r\n")
        self.connect()
        self.login()
        self.assertEqual(
            self.send(b"UIDL\r\n"),
            f"+OK 2 messages\r\n1 {uid2}\r\n2 {uid3}\r\n.\r\n".encode(),
        )
        self.assertNotIn(uid1, [uid2, uid3])

    def test_dotStuffing(self) -> None:
        """Lines starting with a dot, a lone dot included, are stuffed byte-exactly."""
        message = b"Subject: dots\r\n\r\n.\r\n..two\r\n.lead\r\nmid.dle\r\n.\r\n"
        self.deliver(message)
        self.login()
        self.assertEqual(
            self.send(b"RETR 1\r\n"),
            f"+OK {len(message)} octets\r\n".encode()
            + b"Subject: dots\r\n\r\n..\r\n...two\r\n..lead\r\nmid.dle\r\n..\r\n.\r\n",
        )

    def test_firstLineDotAndNoFinalNewline(self) -> None:
        """A dot on the first line is stuffed; a last line without CRLF gets one."""
        message = b".odd: header\r\n\r\nlast line"
        self.deliver(message)
        self.login()
        self.assertEqual(
            self.send(b"RETR 1\r\n"),
            f"+OK {len(message)} octets\r\n".encode() + b"..odd: header\r\n\r\nlast line\r\n.\r\n",
        )

    def test_eightBitPassesThrough(self) -> None:
        """Every byte value but the framing passes through unchanged."""
        body = bytes(b for b in range(256) if b not in (10, 13)) + b"\r\n"
        message = b"Subject: bytes\r\n\r\n" + body
        self.deliver(message)
        self.login()
        reply = self.send(b"RETR 1\r\n")
        self.assertEqual(reply.split(b"\r\n", 1)[1], message + b".\r\n")

    def test_largeMessage(self) -> None:
        """A 6 MB message with dotted lines arrives whole and exactly stuffed."""
        line = b"." + b"x" * 70 + b"\r\n"
        message = b"Subject: big\r\n\r\n" + line * (6 * 1024 * 1024 // len(line))
        self.deliver(message)
        self.login()
        reply = self.send(b"RETR 1\r\n")
        expected = b"Subject: big\r\n\r\n" + (b"." + line) * (6 * 1024 * 1024 // len(line))
        self.assertEqual(reply, f"+OK {len(message)} octets\r\n".encode() + expected + b".\r\n")

    def test_top(self) -> None:
        """TOP sends the headers, the blank line and the first n body lines."""
        self.deliver(MESSAGE_1)
        self.login()
        headers = b"Subject: one\r\nFrom: a@example.org\r\n\r\n"
        self.assertEqual(self.send(b"TOP 1 0\r\n"), b"+OK\r\n" + headers + b".\r\n")
        self.assertEqual(self.send(b"TOP 1 1\r\n"), b"+OK\r\n" + headers + b"Hello\r\n.\r\n")
        self.assertEqual(self.send(b"TOP 1 99\r\n"), b"+OK\r\n" + MESSAGE_1 + b".\r\n")

    def test_topErrors(self) -> None:
        """TOP without a valid line count or message number gets -ERR."""
        self.deliver(MESSAGE_1)
        self.login()
        self.assertEqual(self.send(b"TOP 1\r\n"), b"-ERR Syntax error\r\n")
        self.assertEqual(self.send(b"TOP 1 -1\r\n"), b"-ERR Syntax error\r\n")
        self.assertEqual(self.send(b"TOP 2 1\r\n"), b"-ERR no such message\r\n")

    def test_noSuchMessage(self) -> None:
        """Message numbers outside 1..n, or not numbers, get -ERR no such message."""
        self.deliver(MESSAGE_1)
        self.login()
        for arg in [b"0", b"2", b"x", b"99999999999999999999", b""]:
            self.assertEqual(self.send(b"RETR " + arg + b"\r\n"), b"-ERR no such message\r\n")

    def test_deleTakesEffectAtQuit(self) -> None:
        """DELE only marks; the message is removed from the store at QUIT."""
        self.deliver(MESSAGE_1)
        self.deliver(MESSAGE_2)
        self.login()
        self.assertEqual(self.send(b"DELE 1\r\n"), b"+OK message 1 deleted\r\n")
        self.assertEqual(self.send(b"STAT\r\n"), f"+OK 1 {len(MESSAGE_2)}\r\n".encode())
        self.assertEqual(len(self.store.messages("alice@example.com")), 2)
        self.assertEqual(self.send(b"QUIT\r\n"), b"+OK Logging out, 1 messages left\r\n")
        self.assertEqual(self.store.messages("alice@example.com"), [MESSAGE_2])

    def test_deleNotAppliedOnDrop(self) -> None:
        """A connection dropped without QUIT deletes nothing."""
        self.deliver(MESSAGE_1)
        self.login()
        self.send(b"DELE 1\r\n")
        self.proto.connectionLost()
        self.assertEqual(self.store.messages("alice@example.com"), [MESSAGE_1])

    def test_deletedMessageIsGone(self) -> None:
        """A message marked deleted cannot be listed, read or deleted again."""
        self.deliver(MESSAGE_1)
        self.login()
        self.send(b"DELE 1\r\n")
        self.assertEqual(self.send(b"RETR 1\r\n"), b"-ERR no such message\r\n")
        self.assertEqual(self.send(b"LIST 1\r\n"), b"-ERR no such message\r\n")
        self.assertEqual(self.send(b"DELE 1\r\n"), b"-ERR message already deleted\r\n")
        self.assertEqual(self.send(b"LIST\r\n"), b"+OK 0 messages\r\n.\r\n")

    def test_rset(self) -> None:
        """RSET unmarks every deleted message."""
        self.deliver(MESSAGE_1)
        self.login()
        self.send(b"DELE 1\r\n")
        self.assertEqual(self.send(b"RSET\r\n"), b"+OK 1 messages\r\n")
        self.send(b"QUIT\r\n")
        self.assertEqual(self.store.messages("alice@example.com"), [MESSAGE_1])

    def test_vanishedMessage(self) -> None:
        """A message another session removed answers -ERR no such message."""
        self.deliver(MESSAGE_1)
        self.login()
        other = self.proto, self.transport
        self.connect()
        self.login()
        self.send(b"DELE 1\r\nQUIT\r\n")
        self.proto, self.transport = other
        self.assertEqual(self.send(b"RETR 1\r\n"), b"-ERR no such message\r\n")
        self.assertEqual(self.send(b"QUIT\r\n"), b"+OK Logging out, 1 messages left\r\n")

    def test_pipelining(self) -> None:
        """Pipelined commands are answered in order."""
        self.deliver(MESSAGE_2)
        reply = self.send(
            b"USER alice@example.com\r\nPASS correct horse\r\nSTAT\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n"
        )
        size = len(MESSAGE_2)
        self.assertEqual(
            reply,
            b"+OK Send your password\r\n"
            + f"+OK Logged in, 1 messages ({size} octets)\r\n".encode()
            + f"+OK 1 {size}\r\n+OK {size} octets\r\n".encode()
            + MESSAGE_2
            + b".\r\n+OK message 1 deleted\r\n+OK Logging out, 0 messages left\r\n",
        )

    def test_longPipelineDoesNotRecurse(self) -> None:
        """Hundreds of pipelined RETRs on a synchronous store do not overflow."""
        self.factory.limits = LimitsConfig(commands=2000)
        self.deliver(MESSAGE_2)
        self.login()
        reply = self.send(b"RETR 1\r\n" * 1500)
        self.assertEqual(reply.count(b"\r\n.\r\n"), 1500)

    def test_slowReaderPausesInput(self) -> None:
        """After a big reply the next command waits until the transport drained."""
        self.deliver(MESSAGE_1)
        self.connect(transport=SlowTransport(peerAddress=LOOPBACK))
        self.login()
        reply = self.send(b"RETR 1\r\nSTAT\r\n")
        self.assertTrue(reply.endswith(b".\r\n"))
        self.assertEqual(self.transport.producerState, "paused")
        self.transport.clear()
        self.proto.resumeProducing()
        self.assertEqual(self.transport.value(), f"+OK 1 {len(MESSAGE_1)}\r\n".encode())
        self.assertIsNone(self.transport.producer)
        self.assertEqual(self.transport.producerState, "producing")

    def test_timeoutWhileDraining(self) -> None:
        """An idle timeout during a drain closes without running queued commands."""
        self.deliver(MESSAGE_1)
        self.connect(transport=SlowTransport(peerAddress=LOOPBACK))
        self.login()
        self.send(b"RETR 1\r\nDELE 1\r\nQUIT\r\n")
        self.transport.clear()
        self.clock.advance(600)
        self.assertEqual(self.transport.value(), b"-ERR Disconnected for inactivity\r\n")
        self.assertIsNone(self.transport.producer)
        self.proto.connectionLost()
        self.assertEqual(self.store.messages("alice@example.com"), [MESSAGE_1])

    def test_quitWhileDraining(self) -> None:
        """A connection closed while a reply drains lets go of the transport."""
        self.deliver(MESSAGE_1)
        self.connect(transport=SlowTransport(peerAddress=LOOPBACK))
        self.login()
        self.send(b"RETR 1\r\n")
        self.proto.stopProducing()
        self.assertIsNone(self.transport.producer)
        self.assertEqual(self.send(b"QUIT\r\n"), b"+OK Logging out, 1 messages left\r\n")

    def test_readingPausedWhileHandlerWaits(self) -> None:
        """The transport stops reading while QUIT waits, and reads again after."""
        self.deliver(MESSAGE_1)
        self.login()
        held: Deferred[None] = Deferred()
        mailbox = self.proto._mailbox
        assert mailbox is not None
        self.patch(mailbox, "deleteMessages", lambda uids: held)
        self.send(b"DELE 1\r\nQUIT\r\n")
        self.assertEqual(self.transport.producerState, "paused")
        self.transport.clear()
        held.callback(None)
        self.assertEqual(self.transport.value(), b"+OK Logging out, 0 messages left\r\n")
        # Resumed even though closing: TLS needs to read to finish its close.
        self.assertEqual(self.transport.producerState, "producing")
        self.assertTrue(self.transport.disconnecting)

    def test_sessionLog(self) -> None:
        """QUIT after a login logs one pop3 line with the counts."""
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.deliver(MESSAGE_1)
        self.deliver(MESSAGE_2)
        self.login()
        self.send(b"RETR 1\r\nDELE 1\r\nDELE 2\r\nQUIT\r\n")
        self.proto.connectionLost()
        lines = [formatEvent(e) for e in events]
        self.assertIn("login: proto=pop3 user=alice@example.com ip=127.0.0.1 result=ok", lines)
        self.assertIn(
            "pop3: user=alice@example.com ip=127.0.0.1 tls=none retr=1 dele=2 end=quit",
            lines,
        )
        self.assertFalse(any("correct horse" in line for line in lines))

    def test_ipv6Loopback(self) -> None:
        """::1 is loopback too: USER is allowed without TLS."""
        self.peer = LOOPBACK6
        self.connect()
        self.assertEqual(self.send(b"USER a@example.com\r\n"), b"+OK Send your password\r\n")


class POP3AuthTests(POP3TestMixin, SynchronousTestCase):
    """
    Logging in: failures, throttling, AUTH PLAIN.
    """

    def test_wrongPasswordAndUnknownUserLookAlike(self) -> None:
        """Unknown user and wrong password get the same -ERR [AUTH] reply."""
        wrong = self.send(b"USER alice@example.com\r\nPASS nope\r\n")
        unknown = self.send(b"USER bob@example.com\r\nPASS nope\r\n")
        self.assertEqual(wrong, b"+OK Send your password\r\n-ERR [AUTH] Authentication failed\r\n")
        self.assertEqual(wrong, unknown)
        self.assertEqual(self.proto.state, State.AUTHORIZATION)

    def test_closeAfterAuthFailures(self) -> None:
        """The third failure on one connection, delayed, then closes it."""
        self.send(b"USER a@example.com\r\nPASS x\r\nUSER a@example.com\r\nPASS x\r\n")
        self.assertFalse(self.transport.disconnecting)
        reply = self.send(b"USER a@example.com\r\nPASS x\r\nCAPA\r\n")
        self.assertEqual(reply, b"+OK Send your password\r\n")
        self.clock.advance(1)
        self.assertEqual(
            self.transport.value(),
            b"+OK Send your password\r\n-ERR [AUTH] Authentication failed\r\n",
        )
        self.assertTrue(self.transport.disconnecting)

    def test_blockedAddressRefused(self) -> None:
        """A blocked address gets -ERR [SYS/TEMP] at once and is disconnected."""
        for _ in range(10):
            self.throttle.recordFailure("127.0.0.1")
        reply = self.send(b"USER alice@example.com\r\nPASS correct horse\r\n")
        self.assertEqual(
            reply,
            b"+OK Send your password\r\n"
            b"-ERR [SYS/TEMP] Too many failed logins, try again later\r\n",
        )
        self.assertTrue(self.transport.disconnecting)

    def test_authPlainInitialResponse(self) -> None:
        """AUTH PLAIN with an initial response logs in."""
        reply = self.send(b"AUTH PLAIN " + plain(b"alice@example.com", b"correct horse") + b"\r\n")
        self.assertEqual(reply, b"+OK Logged in, 0 messages (0 octets)\r\n")

    def test_authPlainContinuation(self) -> None:
        """AUTH PLAIN without an initial response asks with a bare + and logs in."""
        self.assertEqual(self.send(b"AUTH PLAIN\r\n"), b"+ \r\n")
        reply = self.send(
            plain(b"alice@example.com", b"correct horse", b"alice@example.com") + b"\r\n"
        )
        self.assertEqual(reply, b"+OK Logged in, 0 messages (0 octets)\r\n")
        self.assertEqual(self.proto.user, "alice@example.com")

    def test_authPlainCancel(self) -> None:
        """A * answer cancels AUTH; the next line is a command again."""
        self.send(b"AUTH PLAIN\r\n")
        self.assertEqual(self.send(b"*\r\n"), b"-ERR Authentication cancelled\r\n")
        self.assertEqual(self.send(b"CAPA\r\n")[:3], b"+OK")

    def test_authPlainWrongPassword(self) -> None:
        """AUTH PLAIN with a wrong password fails like PASS."""
        reply = self.send(b"AUTH PLAIN " + plain(b"alice@example.com", b"x") + b"\r\n")
        self.assertEqual(reply, b"-ERR [AUTH] Authentication failed\r\n")

    def test_authPlainMalformed(self) -> None:
        """Bad base64 or a foreign authzid is refused without a login attempt."""
        self.assertEqual(self.send(b"AUTH PLAIN !!!\r\n"), b"-ERR Invalid SASL response\r\n")
        other = plain(b"alice@example.com", b"correct horse", b"bob@example.com")
        self.assertEqual(
            self.send(b"AUTH PLAIN " + other + b"\r\n"),
            b"-ERR Invalid SASL response\r\n",
        )
        self.assertEqual(self.throttle.failures("127.0.0.1"), 0)

    def test_authOtherMechanism(self) -> None:
        """Mechanisms other than PLAIN are refused."""
        self.assertEqual(
            self.send(b"AUTH CRAM-MD5\r\n"),
            b"-ERR Unsupported authentication mechanism\r\n",
        )

    def test_bareAuthListsMechanisms(self) -> None:
        """A bare AUTH lists PLAIN, for older clients."""
        self.assertEqual(self.send(b"AUTH\r\n"), b"+OK\r\nPLAIN\r\n.\r\n")


class POP3RemoteTests(POP3TestMixin, SynchronousTestCase):
    """
    A client on another host: passwords only under TLS.
    """

    peer = REMOTE

    def test_capaOmitsPasswordsWithoutTLS(self) -> None:
        """Without TLS CAPA offers STLS but neither USER nor SASL."""
        reply = self.send(b"CAPA\r\n")
        self.assertIn(b"\r\nSTLS\r\n", reply)
        self.assertNotIn(b"USER", reply)
        self.assertNotIn(b"SASL", reply)

    def test_plaintextRefused(self) -> None:
        """USER, PASS and AUTH PLAIN are refused without TLS."""
        refusal = b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections\r\n"
        self.assertEqual(self.send(b"USER alice@example.com\r\n"), refusal)
        self.assertEqual(self.send(b"PASS correct horse\r\n"), refusal)
        initial = plain(b"alice@example.com", b"correct horse")
        self.assertEqual(self.send(b"AUTH PLAIN " + initial + b"\r\n"), refusal)
        self.assertEqual(self.send(b"AUTH\r\n"), b"+OK\r\n.\r\n")
        self.assertEqual(self.proto.state, State.AUTHORIZATION)

    def test_stlsThenLogin(self) -> None:
        """STLS answers +OK, starts TLS, and then passwords are accepted."""
        self.assertEqual(self.send(b"STLS\r\n"), b"+OK Begin TLS negotiation\r\n")
        self.assertIs(self.transport.tlsContext, TLS)
        self.assertTrue(self.proto.tlsActive)
        self.assertNotIn(b"STLS", self.send(b"CAPA\r\n"))
        self.assertIn(b"+OK Logged in", self.login())

    def test_stlsDropsPipelinedInput(self) -> None:
        """Commands sent in plaintext behind STLS are discarded."""
        reply = self.send(b"STLS\r\nCAPA\r\nUSER alice@example.com\r\n")
        self.assertEqual(reply, b"+OK Begin TLS negotiation\r\n")
        self.assertEqual(self.send(b"PASS correct horse\r\n"), b"-ERR No USER given\r\n")

    def test_stlsResetsState(self) -> None:
        """A USER given before STLS is forgotten."""
        self.connect(peer=LOOPBACK)
        self.send(b"USER alice@example.com\r\n")
        self.send(b"STLS\r\n")
        self.assertEqual(self.send(b"PASS correct horse\r\n"), b"-ERR No USER given\r\n")

    def test_stlsOnlyOnce(self) -> None:
        """A second STLS is refused."""
        self.send(b"STLS\r\n")
        self.assertEqual(self.send(b"STLS\r\n"), b"-ERR TLS already active\r\n")

    def test_implicitTLS(self) -> None:
        """On an implicit-TLS listener passwords are allowed and STLS is not."""
        self.connect(implicitTLS=True)
        reply = self.send(b"CAPA\r\n")
        self.assertIn(b"\r\nUSER\r\n", reply)
        self.assertNotIn(b"STLS", reply)
        self.assertEqual(self.send(b"STLS\r\n"), b"-ERR TLS already active\r\n")
        self.assertIn(b"+OK Logged in", self.login())


class POP3NoTLSTests(POP3TestMixin, SynchronousTestCase):
    """
    A listener without a TLS context.
    """

    tls = None

    def test_noSTLS(self) -> None:
        """Without a TLS context STLS is neither offered nor accepted."""
        self.assertNotIn(b"STLS", self.send(b"CAPA\r\n"))
        self.assertEqual(self.send(b"STLS\r\n"), b"-ERR STLS not available\r\n")
        self.assertIsNone(self.transport.tlsContext)


class POP3LimitsTests(POP3TestMixin, SynchronousTestCase):
    """
    Idle time, line length, command and error limits, hostile bytes.
    """

    def test_idleTimeout(self) -> None:
        """An idle client is told and dropped after pop3_idle; nothing is deleted."""
        self.deliver(MESSAGE_1)
        self.login()
        self.send(b"DELE 1\r\n")
        self.transport.clear()
        self.clock.advance(599)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.transport.value(), b"-ERR Disconnected for inactivity\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost()
        self.assertEqual(self.store.messages("alice@example.com"), [MESSAGE_1])

    def test_activityResetsIdleTimer(self) -> None:
        """Each command restarts the idle timer."""
        for _ in range(3):
            self.clock.advance(500)
            self.send(b"CAPA\r\n")
        self.assertFalse(self.transport.disconnecting)

    def test_lineTooLong(self) -> None:
        """A line over the limit gets -ERR and the session goes on."""
        reply = self.send(b"USER " + b"x" * 3000 + b"\r\nCAPA\r\n")
        self.assertTrue(reply.startswith(b"-ERR Line too long\r\n+OK Capability"))
        self.assertFalse(self.transport.disconnecting)

    def test_lineLimitAtLeast512(self) -> None:
        """Lines up to 512 octets are accepted even with a lower line_length."""
        self.factory.limits = LimitsConfig(line_length=100)
        self.connect()
        reply = self.send(b"USER " + b"x" * 500 + b"\r\n")
        self.assertEqual(reply, b"+OK Send your password\r\n")

    def test_garbageBytes(self) -> None:
        """Binary garbage gets -ERR, and a flood of errors closes the connection."""
        reply = self.send(b"\xff\xfe\x00\x01 \x80\r\n")
        self.assertEqual(reply, b"-ERR Unknown command\r\n")
        reply = self.send(b"\x00garbage\r\n" * 10)
        self.assertTrue(reply.endswith(b"-ERR Too many errors\r\n"))
        self.assertTrue(self.transport.disconnecting)

    def test_tooManyCommands(self) -> None:
        """Past the command limit the server says so and closes."""
        reply = self.send(b"CAPA\r\n" * 51)
        self.assertTrue(reply.endswith(b".\r\n-ERR Too many commands\r\n"))
        self.assertEqual(reply.count(b"+OK Capability"), 50)
        self.assertTrue(self.transport.disconnecting)

    def test_commandLimitGrowsWithMailbox(self) -> None:
        """A client may RETR, UIDL and DELE every message of a big mailbox."""
        for i in range(40):
            self.deliver(b"Subject: %d\r\n\r\nx\r\n" % i)
        self.login()
        commands = b"".join(b"UIDL %d\r\nRETR %d\r\nDELE %d\r\n" % (n, n, n) for n in range(1, 41))
        self.send(commands)
        self.assertEqual(self.send(b"QUIT\r\n"), b"+OK Logging out, 0 messages left\r\n")
        self.assertEqual(self.store.messages("alice@example.com"), [])


class FramingTests(SynchronousTestCase):
    """
    L{byteStuff}, L{topOfMessage} and L{POP3Reply} rendering.
    """

    def test_byteStuff(self) -> None:
        """Dots at line starts are doubled and the terminator appended."""
        self.assertEqual(byteStuff(b""), b".\r\n")
        self.assertEqual(byteStuff(b".\r\n"), b"..\r\n.\r\n")
        self.assertEqual(byteStuff(b"a\r\n.b\r\nc."), b"a\r\n..b\r\nc.\r\n.\r\n")
        self.assertEqual(byteStuff(b"a\n.\r\n"), b"a\n..\r\n.\r\n")

    def test_topWithoutBody(self) -> None:
        """A message without a blank line is all headers."""
        self.assertEqual(topOfMessage(b"A: b\r\nC: d\r\n", 5), b"A: b\r\nC: d\r\n")
        self.assertEqual(topOfMessage(b"\r\nbody\r\nmore\r\n", 1), b"\r\nbody\r\n")

    def test_replyText(self) -> None:
        """Reply text never carries a line break onto the wire."""
        self.assertEqual(POP3Reply(False, "a\r\nb").toBytes(), b"-ERR a  b\r\n")
        self.assertEqual(POP3Reply(True).toBytes(), b"+OK\r\n")
