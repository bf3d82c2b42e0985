"""
Tests for L{mta.imap.server} and its command modules: IMAP dialogues over
StringTransport with a Clock, on a real L{IMAPStore} in a temporary
directory (blocking calls run synchronously).
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from mta.config import LimitsConfig
from mta.imap import wire
from mta.imap.message import Concat
from mta.imap.server import IMAPFactory, IMAPServer
from mta.store.imapstore import IMAPStore
from mta.store.maildir import createUserFolders, folderDirectory, mailRootOf, userDirectory
from mta.testing.fakes import FakeLogin
from mta.threads import SynchronousRunner

USER = "alice@example.com"
PASSWORD = "secret"
REMOTE = IPv4Address("TCP", "192.0.2.1", 1234)
LOOPBACK = IPv4Address("TCP", "127.0.0.1", 1234)
MESSAGE = (
    b"From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: hello\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <1@example.org>\r\n\r\n"
    b"Hi there\r\n"
)
MULTIPART = (
    b"From: c@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\none\r\n"
    b"--b\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--b--\r\n"
)


@implementer(IOpenSSLContextFactory)
class _FakeTLS:
    """
    Stands for the TLS context; the fake transport only records it.
    """

    def getContext(self) -> Any:
        raise AssertionError("no handshake over StringTransport")


class TLSTransport(StringTransport):
    """
    A StringTransport that records C{startTLS}.
    """

    tlsContext: object = None

    def startTLS(self, contextFactory: object) -> None:
        self.tlsContext = contextFactory


class IMAPTestCase(SynchronousTestCase):
    """
    A server over a StringTransport, on a real store.
    """

    peer = LOOPBACK
    serial = 0
    limits = LimitsConfig()

    def setUp(self) -> None:
        self.clock = Clock()
        self.dataDir = Path(self.mktemp()).absolute()
        self.dataDir.mkdir()
        createUserFolders(self.dataDir, USER)
        self.store = IMAPStore(mailRootOf(self.dataDir), SynchronousRunner())
        self.login = FakeLogin({USER: PASSWORD})
        self.factory = IMAPFactory(
            self.login, self.store, _FakeTLS(), "imap.example.com", self.limits, self.clock
        )
        self.transport, self.server = self.connect()

    def tearDown(self) -> None:
        for folder in self.store._folders.values():
            folder.index.close()

    def connect(self, peer: IPv4Address | None = None) -> tuple[TLSTransport, IMAPServer]:
        transport = TLSTransport(peerAddress=peer or self.peer)
        server = self.factory.buildProtocol(None)
        server.makeConnection(transport)
        return transport, server

    def send(
        self, line: bytes, server: IMAPServer | None = None, transport: TLSTransport | None = None
    ) -> bytes:
        """
        Send one line (CRLF added) and return everything answered.
        """
        server = server or self.server
        transport = transport or self.transport
        transport.clear()
        server.dataReceived(line + b"\r\n")
        return bytes(transport.value())

    def deliver(self, data: bytes, folder: str = "INBOX", flags: str = "") -> Path:
        """
        Put a message into a folder as local delivery does, and notify.
        """
        directory = folderDirectory(userDirectory(mailRootOf(self.dataDir), USER), folder)
        self.serial += 1
        name = f"{int(time.time())}.M{self.serial}P1.host"
        path = directory / ("cur" if flags else "new") / (name + (":2," + flags if flags else ""))
        path.write_bytes(data)
        self.store.notifyChanged(USER, folder)
        return path

    def loggedIn(self) -> None:
        self.assertIn(b"a OK", self.send(b"a LOGIN alice@example.com secret"))

    def selectInbox(self) -> bytes:
        self.loggedIn()
        return self.send(b"s SELECT INBOX")


class WireConcatTests(SynchronousTestCase):
    """
    L{wire.encode} writes L{Concat} runs back to back.
    """

    def test_concat(self) -> None:
        """A Concat is its items with no parentheses and no spaces between them."""
        value = (Concat(((b"a", None), (b"b", None))), b"mixed")
        self.assertEqual(wire.encode(cast(wire.Value, value)), b'(("a" NIL)("b" NIL) "mixed")')


class GreetingTests(IMAPTestCase):
    """
    The greeting, CAPABILITY and the rules about plaintext passwords.
    """

    def test_greetingCapabilities(self) -> None:
        """The greeting carries the capabilities; loopback may log in before TLS."""
        greeting = self.transport.value()
        self.assertTrue(greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 "))
        self.assertIn(b"STARTTLS", greeting)
        self.assertIn(b"AUTH=PLAIN", greeting)
        self.assertNotIn(b"LOGINDISABLED", greeting)

    def test_remoteLoginDisabled(self) -> None:
        """Off loopback and before TLS, LOGINDISABLED is said and LOGIN refused."""
        transport, server = self.connect(REMOTE)
        self.assertIn(b"LOGINDISABLED", transport.value())
        self.assertNotIn(b"AUTH=PLAIN", transport.value())
        answer = self.send(b"a LOGIN alice@example.com secret", server, transport)
        self.assertEqual(
            answer, b"a NO [PRIVACYREQUIRED] Plaintext login disallowed without TLS\r\n"
        )
        self.assertEqual(self.login.attempts, [])

    def test_starttls(self) -> None:
        """STARTTLS answers OK, starts TLS, and the capabilities then allow LOGIN."""
        transport, server = self.connect(REMOTE)
        answer = self.send(b"t STARTTLS\r\nx NOOP", server, transport)
        self.assertEqual(answer, b"t OK Begin TLS negotiation now\r\n")
        self.assertIsNotNone(transport.tlsContext)
        answer = self.send(b"c CAPABILITY", server, transport)
        self.assertIn(b"AUTH=PLAIN", answer)
        self.assertNotIn(b"STARTTLS", answer)

    def test_capabilityAfterLogin(self) -> None:
        """LOGIN's OK carries the logged-in capabilities."""
        answer = self.send(b"a LOGIN alice@example.com secret")
        self.assertTrue(answer.startswith(b"a OK [CAPABILITY IMAP4rev1 "))
        for word in (b"UIDPLUS", b"MOVE", b"IDLE", b"SPECIAL-USE", b"CONDSTORE", b"QRESYNC"):
            self.assertIn(word, answer)
        self.assertNotIn(b"AUTH=", answer)

    def test_authenticatePlainInitialResponse(self) -> None:
        """AUTHENTICATE PLAIN with SASL-IR logs in in one round trip."""
        response = base64.b64encode(b"\0alice@example.com\0secret")
        answer = self.send(b"a AUTHENTICATE PLAIN " + response)
        self.assertTrue(answer.startswith(b"a OK [CAPABILITY"))

    def test_authenticateLoginMechanism(self) -> None:
        """AUTHENTICATE LOGIN asks for the user name and the password."""
        self.assertEqual(self.send(b"a AUTHENTICATE LOGIN"), b"+ VXNlcm5hbWU6\r\n")
        self.assertEqual(self.send(base64.b64encode(b"alice@example.com")), b"+ UGFzc3dvcmQ6\r\n")
        self.assertTrue(self.send(base64.b64encode(b"secret")).startswith(b"a OK"))

    def test_authenticateCancel(self) -> None:
        """A lone * cancels AUTHENTICATE with BAD."""
        self.assertEqual(self.send(b"a AUTHENTICATE PLAIN"), b"+ \r\n")
        self.assertEqual(self.send(b"*"), b"a BAD Authentication cancelled\r\n")

    def test_failuresHangUp(self) -> None:
        """The third failed LOGIN on a connection closes it."""
        for _ in range(2):
            answer = self.send(b"a LOGIN alice@example.com wrong")
            self.assertEqual(answer, b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n")
        answer = self.send(b"a LOGIN alice@example.com wrong")
        self.assertIn(b"* BYE", answer)
        self.assertTrue(self.transport.disconnecting)

    def test_throttled(self) -> None:
        """A throttled address gets NO [UNAVAILABLE] and the connection closes."""
        self.login.blocked.add("127.0.0.1")
        answer = self.send(b"a LOGIN alice@example.com secret")
        self.assertIn(b"a NO [UNAVAILABLE]", answer)
        self.assertTrue(self.transport.disconnecting)

    def test_wrongState(self) -> None:
        """SELECT before login is BAD."""
        self.assertEqual(self.send(b"a SELECT INBOX"), b"a BAD SELECT not allowed now\r\n")

    def test_logout(self) -> None:
        """LOGOUT says BYE, OK, and closes."""
        answer = self.send(b"a LOGOUT")
        self.assertEqual(answer, b"* BYE Logging out\r\na OK LOGOUT completed\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_autologout(self) -> None:
        """A logged-in session idle for 30 minutes is logged out."""
        self.loggedIn()
        self.clock.advance(1799)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(2)
        self.assertIn(b"* BYE Autologout", self.transport.value())
        self.assertTrue(self.transport.disconnecting)

    def test_idAndNamespace(self) -> None:
        """ID gives a name and no version; NAMESPACE one personal namespace."""
        self.assertIn(b'* ID ("name" "mta")', self.send(b"a ID NIL"))
        self.loggedIn()
        self.assertIn(b'* NAMESPACE (("" ".")) NIL NIL', self.send(b"n NAMESPACE"))

    def test_lineTooLong(self) -> None:
        """A line past the limit is BAD [TOOBIG] and the session goes on."""
        answer = self.send(b"a NOOP " + b"x" * 70000)
        self.assertIn(b"a BAD [TOOBIG]", answer)
        self.assertEqual(self.send(b"b NOOP"), b"b OK NOOP completed\r\n")


class UserConnectionTests(IMAPTestCase):
    """
    C{[limits] imap_connections_per_user}: logged-in sessions per user,
    counted on the factory (so over imap and imaps together).
    """

    limits = replace(LimitsConfig(), imap_connections_per_user=2)

    def setUp(self) -> None:
        super().setUp()
        self.login.passwords["bob@example.com"] = "hunter2"
        self.others = [self.connect() for _ in range(2)]

    def loginAs(
        self, connection: tuple[TLSTransport, IMAPServer], user: bytes = b"alice@example.com"
    ) -> bytes:
        transport, server = connection
        password = b"hunter2" if user.startswith(b"bob") else PASSWORD.encode()
        return self.send(b"a LOGIN " + user + b" " + password, server, transport)

    def full(self) -> None:
        """Log alice in twice, on C{self.others}."""
        for connection in self.others:
            self.assertIn(b"a OK", self.loginAs(connection))
        self.assertEqual(self.factory.userConnections.count(USER), 2)

    def test_loginOverLimit(self) -> None:
        """A third LOGIN is NO [LIMIT]; the connection stays open and unauthenticated."""
        self.full()
        answer = self.send(b"a LOGIN alice@example.com secret")
        self.assertEqual(answer, b"a NO [LIMIT] Too many connections for this user\r\n")
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.send(b"s SELECT INBOX"), b"s BAD SELECT not allowed now\r\n")
        self.assertIn(b"AUTH=PLAIN", self.send(b"c CAPABILITY"))
        self.assertEqual(self.factory.userConnections.count(USER), 2)

    def test_authenticateOverLimit(self) -> None:
        """AUTHENTICATE PLAIN over the limit is NO [LIMIT] too."""
        self.full()
        response = base64.b64encode(b"\0alice@example.com\0secret")
        answer = self.send(b"a AUTHENTICATE PLAIN " + response)
        self.assertEqual(answer, b"a NO [LIMIT] Too many connections for this user\r\n")

    def test_notAFailedLogin(self) -> None:
        """Refusals for the limit never count as failed logins: the connection is not hung up."""
        self.full()
        for _ in range(self.limits.auth_failures + 1):
            self.assertIn(b"NO [LIMIT]", self.send(b"a LOGIN alice@example.com secret"))
        self.assertFalse(self.transport.disconnecting)

    def test_wrongPasswordAtLimit(self) -> None:
        """A wrong password at the limit is AUTHENTICATIONFAILED: the count shows to no one without it."""
        self.full()
        answer = self.send(b"a LOGIN alice@example.com wrong")
        self.assertEqual(answer, b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n")

    def test_perUser(self) -> None:
        """Another user is not held to alice's count."""
        self.full()
        self.assertIn(b"a OK", self.loginAs((self.transport, self.server), b"bob@example.com"))
        self.assertEqual(self.factory.userConnections.count("bob@example.com"), 1)

    def test_logoutFrees(self) -> None:
        """LOGOUT frees the slot at once, and the close that follows frees nothing more."""
        self.full()
        transport, server = self.others[0]
        self.send(b"z LOGOUT", server, transport)
        self.assertEqual(self.factory.userConnections.count(USER), 1)
        server.connectionLost()
        self.assertEqual(self.factory.userConnections.count(USER), 1)
        self.assertIn(b"a OK", self.send(b"a LOGIN alice@example.com secret"))
        self.assertEqual(self.factory.userConnections.count(USER), 2)

    def test_dropFrees(self) -> None:
        """A connection that drops frees its slot."""
        self.full()
        self.others[1][1].connectionLost()
        self.assertIn(b"a OK", self.send(b"a LOGIN alice@example.com secret"))

    def test_autologoutFrees(self) -> None:
        """The autologout frees the slots of the sessions it ends."""
        self.full()
        self.clock.advance(self.limits.imap_idle + 1)
        self.assertEqual(self.factory.userConnections.count(USER), 0)

    def test_retryAfterRefusal(self) -> None:
        """The refused connection logs in once a slot is free, and is counted then."""
        self.full()
        self.assertIn(b"NO [LIMIT]", self.send(b"a LOGIN alice@example.com secret"))
        transport, server = self.others[0]
        self.send(b"z LOGOUT", server, transport)
        self.assertIn(b"a OK", self.send(b"a LOGIN alice@example.com secret"))
        self.assertEqual(self.factory.userConnections.count(USER), 2)
        self.server.connectionLost()
        self.assertEqual(self.factory.userConnections.count(USER), 1)


class MailboxTests(IMAPTestCase):
    """
    SELECT, LIST, STATUS, CREATE, DELETE, RENAME, SUBSCRIBE, APPEND.
    """

    def test_select(self) -> None:
        """SELECT reports flags, counts, UIDVALIDITY, UIDNEXT and READ-WRITE."""
        self.deliver(MESSAGE)
        answer = self.selectInbox()
        self.assertIn(b"* 1 EXISTS\r\n", answer)
        self.assertIn(b"* 1 RECENT\r\n", answer)
        self.assertIn(b"* OK [UIDNEXT 2]", answer)
        self.assertIn(b"* OK [UNSEEN 1]", answer)
        self.assertIn(
            b"[PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]", answer
        )
        self.assertTrue(answer.endswith(b"s OK [READ-WRITE] SELECT completed\r\n"))

    def test_examineMissing(self) -> None:
        """EXAMINE is read-only; a missing mailbox is NO [NONEXISTENT]."""
        self.loggedIn()
        self.assertIn(b"[READ-ONLY]", self.send(b"e EXAMINE Trash"))
        self.assertEqual(
            self.send(b"e EXAMINE Nope"), b"e NO [NONEXISTENT] Mailbox does not exist\r\n"
        )

    def test_list(self) -> None:
        """LIST * gives INBOX and the special-use folders."""
        self.loggedIn()
        answer = self.send(b'l LIST "" "*"')
        self.assertIn(b'* LIST (\\HasNoChildren) "." INBOX\r\n', answer)
        self.assertIn(b'* LIST (\\HasNoChildren \\Sent) "." Sent\r\n', answer)
        self.assertIn(b'* LIST (\\HasNoChildren \\Trash) "." Trash\r\n', answer)
        self.assertEqual(
            self.send(b'l LIST "" ""'), b'* LIST (\\Noselect) "." ""\r\nl OK LIST completed\r\n'
        )

    def test_createRenameDelete(self) -> None:
        """CREATE, RENAME and DELETE change what LIST shows; LIST % stops at the separator."""
        self.loggedIn()
        self.assertEqual(self.send(b"c CREATE Work.Projects"), b"c OK CREATE completed\r\n")
        answer = self.send(b'l LIST "" "%"')
        self.assertIn(b'* LIST (\\HasChildren) "." Work\r\n', answer)
        self.assertNotIn(b"Work.Projects", answer)
        self.assertIn(b"ALREADYEXISTS", self.send(b"c CREATE Work"))
        self.assertEqual(self.send(b"r RENAME Work Job"), b"r OK RENAME completed\r\n")
        self.assertIn(b'"." Job.Projects', self.send(b'l LIST "" "Job*"'))
        self.assertEqual(self.send(b"d DELETE Job.Projects"), b"d OK DELETE completed\r\n")
        self.assertNotIn(b"Projects", self.send(b'l LIST "" "*"'))

    def test_listExtended(self) -> None:
        """LIST-EXTENDED selects special uses and returns STATUS and \\Subscribed."""
        self.loggedIn()
        answer = self.send(b'l LIST (SPECIAL-USE) "" "*" RETURN (SUBSCRIBED STATUS (MESSAGES))')
        self.assertNotIn(b"INBOX", answer)
        self.assertIn(b'* LIST (\\HasNoChildren \\Junk \\Subscribed) "." Junk\r\n', answer)
        self.assertIn(b"* STATUS Junk (MESSAGES 0)\r\n", answer)

    def test_listRecursiveMatch(self) -> None:
        """RECURSIVEMATCH lists an unsubscribed parent with CHILDINFO for its subscribed child."""
        self.loggedIn()
        self.send(b"c CREATE Work.Projects")
        self.send(b"s SUBSCRIBE Work.Projects")
        answer = self.send(b'l LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
        self.assertIn(b'* LIST () "." Work ("CHILDINFO" ("SUBSCRIBED"))\r\n', answer)
        self.assertNotIn(b"Work.Projects", answer)

    def test_subscribeLsub(self) -> None:
        """UNSUBSCRIBE removes a name from LSUB; SUBSCRIBE adds it back."""
        self.loggedIn()
        self.send(b"u UNSUBSCRIBE Junk")
        self.assertNotIn(b"Junk", self.send(b'l LSUB "" "*"'))
        self.send(b"u SUBSCRIBE Junk")
        self.assertIn(b'* LSUB () "." Junk', self.send(b'l LSUB "" "*"'))

    def test_status(self) -> None:
        """STATUS counts messages, unseen and the next UID."""
        self.loggedIn()
        self.deliver(MESSAGE)
        self.deliver(MESSAGE, flags="S")
        answer = self.send(b"s STATUS INBOX (MESSAGES UNSEEN UIDNEXT DELETED)")
        self.assertIn(b"* STATUS INBOX (MESSAGES 2 UNSEEN 1 UIDNEXT 3 DELETED 0)\r\n", answer)

    def test_append(self) -> None:
        """APPEND with flags and a date stores the message and answers APPENDUID."""
        self.loggedIn()
        self.assertEqual(
            self.send(
                b'a APPEND Drafts (\\Draft \\Seen) "05-Jan-2024 10:00:00 +0000" {%d}' % len(MESSAGE)
            ),
            b"+ Ready\r\n",
        )
        answer = self.send(MESSAGE)
        self.assertRegex(answer, rb"a OK \[APPENDUID \d+ 1\] APPEND completed\r\n")
        directory = folderDirectory(userDirectory(mailRootOf(self.dataDir), USER), "Drafts")
        [name] = os.listdir(directory / "cur")
        self.assertTrue(name.endswith(":2,DS"))
        self.assertEqual((directory / "cur" / name).read_bytes(), MESSAGE)

    def test_appendMissingFolder(self) -> None:
        """APPEND to a missing mailbox is NO [TRYCREATE]."""
        self.loggedIn()
        answer = self.send(b"a APPEND Nope {2+}\r\nhi")
        self.assertEqual(answer, b"a NO [TRYCREATE] Mailbox does not exist\r\n")

    def test_appendZeroBytes(self) -> None:
        """An empty APPEND ({0} or {0+}) is NO, as Dovecot answers it, and stores nothing."""
        self.loggedIn()
        self.assertEqual(self.send(b"a APPEND INBOX {0}"), b"+ Ready\r\n")
        self.assertEqual(self.send(b""), b"a NO Can't save a zero byte message\r\n")
        answer = self.send(b"b APPEND INBOX (\\Seen) {0+}\r\n")
        self.assertEqual(answer, b"b NO Can't save a zero byte message\r\n")
        directory = folderDirectory(userDirectory(mailRootOf(self.dataDir), USER), "INBOX")
        self.assertEqual(
            [os.listdir(directory / sub) for sub in ("cur", "new", "tmp")], [[], [], []]
        )
        self.assertIn(b"* STATUS INBOX (MESSAGES 0)", self.send(b"s STATUS INBOX (MESSAGES)"))


class _RecordingRunner(SynchronousRunner):
    """
    Runs jobs at once and says whether one is running.
    """

    inside = False

    def run(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        def job() -> Any:
            self.inside = True
            try:
                return f(*args, **kwargs)
            finally:
                self.inside = False

        return super().run(job)


class MessageTests(IMAPTestCase):
    """
    FETCH, STORE, SEARCH, SORT, COPY, MOVE, EXPUNGE and the untagged updates.
    """

    def test_fetchBody(self) -> None:
        """FETCH BODY[] returns the bytes and sets \\Seen, reported in the same FETCH."""
        self.deliver(MESSAGE)
        self.selectInbox()
        answer = self.send(b"f FETCH 1 (BODY[])")
        expected = b"* 1 FETCH (BODY[] {%d}\r\n%s FLAGS (\\Seen \\Recent))\r\n" % (
            len(MESSAGE),
            MESSAGE,
        )
        self.assertEqual(answer, expected + b"f OK FETCH completed\r\n")

    def test_fetchPeek(self) -> None:
        """BODY.PEEK does not set \\Seen; partials and header fields are sliced."""
        self.deliver(MESSAGE)
        self.selectInbox()
        answer = self.send(b"f FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<0.2>)")
        self.assertEqual(
            answer,
            b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: hello\r\n\r\n"
            b" BODY[TEXT]<0> {2}\r\nHi)\r\nf OK FETCH completed\r\n",
        )
        self.assertIn(b"FLAGS (\\Recent)", self.send(b"f FETCH 1 FLAGS"))

    def test_uidFetchEnvelope(self) -> None:
        """UID FETCH adds UID; ENVELOPE and BODYSTRUCTURE render multiparts back to back."""
        self.deliver(MULTIPART)
        self.selectInbox()
        answer = self.send(b"f UID FETCH 1:* (ENVELOPE BODYSTRUCTURE RFC822.SIZE)")
        self.assertIn(b'ENVELOPE (NIL "parts" ((NIL NIL "c" "example.org")) ((NIL', answer)
        self.assertIn(b'BODYSTRUCTURE (("text" "plain" NIL NIL NIL "7bit" 3 1', answer)
        self.assertIn(b')("text" "html"', answer)
        self.assertIn(b" UID 1)", answer)

    def test_storeAndMaildir(self) -> None:
        """STORE +FLAGS \\Seen renames the file to :2,S and reports FLAGS."""
        path = self.deliver(MESSAGE)
        self.selectInbox()
        answer = self.send(b"s STORE 1 +FLAGS (\\Seen)")
        self.assertEqual(answer, b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\ns OK STORE completed\r\n")
        directory = path.parent.parent / "cur"
        [name] = os.listdir(directory)
        self.assertTrue(name.endswith(":2,S"))
        self.assertEqual(
            self.send(b"s STORE 1 -FLAGS.SILENT (\\Seen)"), b"s OK STORE completed\r\n"
        )

    def test_search(self) -> None:
        """SEARCH matches flags and text; UID SEARCH answers UIDs; ESEARCH counts."""
        self.deliver(MESSAGE)
        self.deliver(MULTIPART, flags="S")
        self.selectInbox()
        self.assertIn(b"* SEARCH 1\r\n", self.send(b"s SEARCH UNSEEN"))
        self.assertIn(b"* SEARCH 2\r\n", self.send(b"s UID SEARCH BODY two"))
        self.assertIn(b"* SEARCH 1 2\r\n", self.send(b"s SEARCH ALL"))
        self.assertIn(
            b'* ESEARCH (TAG "s") COUNT 1\r\n', self.send(b"s SEARCH RETURN (COUNT) SUBJECT hello")
        )

    def test_searchMatchesOnTheRunner(self) -> None:
        """
        A search that reads messages matches them inside the runner's job
        (on its thread in the server), not in the reactor's code; a flag
        search reads nothing; SORT still has each match's header fields.
        """
        from mta.imap import messages

        runner = _RecordingRunner()
        self.store._runner = runner
        where: list[tuple[bool, bool]] = []
        original = messages.matches

        def recording(message: Any, key: Any, context: Any = None) -> bool:
            where.append((runner.inside, message._raw is not None))
            return original(message, key, context)

        self.patch(messages, "matches", recording)
        self.deliver(MESSAGE)
        self.deliver(MULTIPART)
        self.selectInbox()
        self.assertIn(b"* SEARCH 2\r\n", self.send(b"s UID SEARCH TEXT two"))
        self.assertEqual(where, [(True, True), (True, True)])
        del where[:]
        self.assertIn(b"* SEARCH 1 2\r\n", self.send(b"s SEARCH UNDELETED"))
        self.assertEqual(where, [(False, False), (False, False)])
        self.assertIn(b"* SORT 2 1\r\n", self.send(b"s SORT (REVERSE SUBJECT) UTF-8 ALL"))

    def test_sort(self) -> None:
        """SORT orders by subject."""
        self.deliver(MESSAGE)
        self.deliver(MULTIPART)
        self.selectInbox()
        self.assertIn(b"* SORT 1 2\r\n", self.send(b"s SORT (SUBJECT) UTF-8 ALL"))
        self.assertIn(b"* SORT 2 1\r\n", self.send(b"s SORT (REVERSE SUBJECT) UTF-8 ALL"))

    def test_copyMoveExpunge(self) -> None:
        """COPY answers COPYUID; MOVE expunges here; EXPUNGE removes \\Deleted."""
        self.deliver(MESSAGE)
        self.deliver(MULTIPART)
        self.deliver(MESSAGE)
        self.selectInbox()
        self.assertRegex(self.send(b"c COPY 1 Trash"), rb"c OK \[COPYUID \d+ 1 1\] COPY completed")
        answer = self.send(b"m UID MOVE 2 Junk")
        self.assertRegex(answer, rb"\* OK \[COPYUID \d+ 2 1\] Moved\r\n\* 2 EXPUNGE\r\nm OK")
        self.send(b"s STORE 2 +FLAGS.SILENT (\\Deleted)")
        self.assertEqual(self.send(b"e EXPUNGE"), b"* 2 EXPUNGE\r\ne OK EXPUNGE completed\r\n")
        self.assertIn(b"* SEARCH 1\r\n", self.send(b"s SEARCH ALL"))

    def test_badSequence(self) -> None:
        """A sequence number past the last message is BAD."""
        self.deliver(MESSAGE)
        self.selectInbox()
        self.assertIn(b"f BAD", self.send(b"f FETCH 5 FLAGS"))

    def test_newMailUpdate(self) -> None:
        """Mail delivered meanwhile is announced with EXISTS and RECENT at the next command."""
        self.selectInbox()
        self.deliver(MESSAGE)
        self.assertEqual(
            self.send(b"n NOOP"), b"* 1 EXISTS\r\n* 1 RECENT\r\nn OK NOOP completed\r\n"
        )

    def test_otherSessionChanges(self) -> None:
        """Another session's STORE and EXPUNGE reach this one as FETCH and EXPUNGE."""
        self.deliver(MESSAGE)
        self.deliver(MESSAGE)
        self.selectInbox()
        transport, other = self.connect()
        self.send(b"a LOGIN alice@example.com secret", other, transport)
        self.send(b"s SELECT INBOX", other, transport)
        self.send(b"s STORE 1 +FLAGS (\\Flagged)", other, transport)
        self.assertIn(b"* 1 FETCH (FLAGS (\\Flagged \\Recent) UID 1)\r\n", self.send(b"n NOOP"))
        self.send(b"s STORE 2 +FLAGS (\\Deleted)", other, transport)
        self.send(b"e EXPUNGE", other, transport)
        # Not during FETCH by sequence number; at the next NOOP.
        self.assertNotIn(b"EXPUNGE", self.send(b"f FETCH 1 UID"))
        self.assertIn(b"* 2 EXPUNGE\r\n", self.send(b"n NOOP"))

    def test_idle(self) -> None:
        """During IDLE, new mail is announced at once; DONE ends it."""
        self.selectInbox()
        self.assertEqual(self.send(b"i IDLE"), b"+ idling\r\n")
        self.transport.clear()
        self.deliver(MESSAGE)
        self.assertEqual(self.transport.value(), b"* 1 EXISTS\r\n* 1 RECENT\r\n")
        self.assertEqual(self.send(b"DONE"), b"i OK IDLE terminated\r\n")

    def test_closeExpungesSilently(self) -> None:
        """CLOSE removes \\Deleted messages without EXPUNGE responses."""
        self.deliver(MESSAGE, flags="T")
        self.selectInbox()
        self.assertEqual(self.send(b"c CLOSE"), b"c OK CLOSE completed\r\n")
        self.assertIn(b"MESSAGES 0", self.send(b"s STATUS INBOX (MESSAGES)"))

    def test_condstore(self) -> None:
        """CONDSTORE: MODSEQ in FETCH, CHANGEDSINCE, UNCHANGEDSINCE failing with MODIFIED."""
        self.deliver(MESSAGE)
        self.deliver(MESSAGE)
        self.loggedIn()
        answer = self.send(b"s SELECT INBOX (CONDSTORE)")
        self.assertIn(b"[HIGHESTMODSEQ", answer)
        answer = self.send(b"s STORE 1 +FLAGS (\\Seen)")
        self.assertRegex(answer, rb"\* 1 FETCH \(FLAGS \(\\Seen \\Recent\) MODSEQ \(\d+\)\)")
        modseq = int(answer.split(b"MODSEQ (")[1].split(b")")[0])
        answer = self.send(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % (modseq - 1))
        self.assertIn(b"* 1 FETCH", answer)
        self.assertNotIn(b"* 2 FETCH", answer)
        answer = self.send(b"s STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Flagged)")
        self.assertIn(b"[MODIFIED 1]", answer)

    def test_qresyncVanished(self) -> None:
        """With QRESYNC enabled, expunges are VANISHED and SELECT (QRESYNC) reports them."""
        self.deliver(MESSAGE)
        self.deliver(MESSAGE)
        self.loggedIn()
        self.assertIn(b"* ENABLED QRESYNC", self.send(b"e ENABLE QRESYNC"))
        answer = self.send(b"s SELECT INBOX")
        validity = int(answer.split(b"[UIDVALIDITY ")[1].split(b"]")[0])
        modseq = int(answer.split(b"[HIGHESTMODSEQ ")[1].split(b"]")[0])
        self.send(b"s STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.assertIn(b"* VANISHED 1\r\n", self.send(b"e EXPUNGE"))
        answer = self.send(b"s SELECT INBOX (QRESYNC (%d %d))" % (validity, modseq))
        self.assertIn(b"* VANISHED (EARLIER) 1\r\n", answer)
