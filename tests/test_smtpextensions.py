"""
Tests for the ESMTP extensions of L{mta.smtp.server}: CHUNKING (BDAT),
SMTPUTF8, DSN, REQUIRETLS, and the policy seam as the server uses it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from mta.auth import DUMMY_HASH
from mta.envelope import Address, Envelope
from mta.errors import Reply
from mta.policy.base import PolicyChain, PolicyCheck, Session, Verdict
from mta.policy.limits import SenderRateLimit
from mta.smtp.server import Mode
from tests.test_smtpserver import SMTPTestMixin

START = b"EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.com>\r\n"


class ChunkingTests(SMTPTestMixin, SynchronousTestCase):
    """
    BDAT (RFC 3030).
    """

    def test_advertised(self) -> None:
        """EHLO lists CHUNKING, DSN, SMTPUTF8 and no REQUIRETLS without TLS."""
        lines = self.send(b"EHLO c\r\n")
        for word in (b"CHUNKING", b"DSN", b"SMTPUTF8", b"8BITMIME", b"ENHANCEDSTATUSCODES"):
            self.assertIn(word, b" ".join(lines))
        self.assertNotIn(b"REQUIRETLS", b" ".join(lines))

    def test_chunks(self) -> None:
        """Chunks are acknowledged with their size and the LAST one queues the message."""
        self.send(START)
        self.assertEqual(self.send(b"BDAT 12\r\nSubject: "), [])
        self.assertEqual(self.send(b"x\r\n"), [b"250 2.0.0 12 octets received"])
        self.assertEqual(self.codes(b"BDAT 8 LAST\r\n\r\nbody\r\n"), [b"250"])
        [(_, data)] = self.sink.messages
        self.assertTrue(data.endswith(b"\r\nSubject: x\r\n\r\nbody\r\n"))

    def test_pipelined(self) -> None:
        """A whole transaction with BDAT pipelined in one write gets every reply in order."""
        codes = self.codes(START + b"BDAT 4\r\nab\r\nBDAT 4 LAST\r\ncd\r\nNOOP\r\nQUIT\r\n")
        self.assertEqual(codes, [b"250", b"250", b"250", b"250", b"250", b"250", b"221"])
        self.assertTrue(self.sink.messages[0][1].endswith(b"\r\nab\r\ncd\r\n"))

    def test_emptyLastChunk(self) -> None:
        """BDAT 0 LAST ends a message sent in earlier chunks."""
        self.send(START + b"BDAT 3\r\nhi\n")
        self.assertEqual(self.sink.messages, [])
        # "hi\n" has a bare LF: the whole message is refused at LAST.
        self.assertEqual(self.codes(b"BDAT 0 LAST\r\n"), [b"554"])
        self.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.com>\r\n")
        self.send(b"BDAT 4\r\nhi\r\n")
        self.assertEqual(self.codes(b"BDAT 0 LAST\r\n"), [b"250"])
        self.assertTrue(self.sink.messages[0][1].endswith(b"\r\nhi\r\n"))

    def test_noFinalLineEnd(self) -> None:
        """A message whose last chunk lacks a final CRLF is stored with one."""
        self.send(START)
        self.assertEqual(self.codes(b"BDAT 2 LAST\r\nhi"), [b"250"])
        self.assertTrue(self.sink.messages[0][1].endswith(b"\r\nhi\r\n"))

    def test_commandsInsideChunkAreData(self) -> None:
        """SMTP commands and a lone dot inside a chunk are message text, not commands."""
        inside = b"a\r\n.\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.com>\r\n"
        self.send(START)
        self.assertEqual(self.codes(b"BDAT %d LAST\r\n" % len(inside) + inside), [b"250"])
        [(envelope, data)] = self.sink.messages
        self.assertEqual([str(r.address) for r in envelope.recipients], ["alice@example.com"])
        self.assertTrue(data.endswith(inside))

    def test_withoutTransactionChunkIsSkipped(self) -> None:
        """BDAT without MAIL gets 503, and its bytes are read, not run as commands."""
        self.send(b"EHLO c\r\n")
        self.assertEqual(self.codes(b"BDAT 6\r\nQUIT\r\nNOOP\r\n"), [b"503", b"250"])
        self.assertFalse(self.transport.disconnecting)

    def test_dataAfterBdat(self) -> None:
        """DATA after a BDAT chunk in the same transaction gets 503."""
        self.send(START + b"BDAT 2\r\nab")
        self.assertEqual(self.codes(b"DATA\r\n"), [b"503"])

    def test_tooBig(self) -> None:
        """Chunks past the size limit get 552 5.3.4; nothing is stored; the next chunk gets 503."""
        self.send(START)
        self.assertEqual(self.send(b"BDAT 9000\r\n" + b"x" * 9000)[0][:9], b"250 2.0.0")
        self.assertEqual(
            self.send(b"BDAT 2000\r\n" + b"y" * 2000), [b"552 5.3.4 Error: message file too big"]
        )
        self.assertEqual(self.codes(b"BDAT 5 LAST\r\nzzzzz"), [b"503"])
        self.assertEqual(self.sink.messages, [])

    def test_badSize(self) -> None:
        """BDAT without a usable size closes the session: its framing is lost."""
        self.send(START)
        self.assertEqual(self.codes(b"BDAT x\r\n"), [b"501"])
        self.assertTrue(self.transport.disconnecting)

    def test_bareNewlineRefused(self) -> None:
        """A BDAT message with a bare LF is refused like a DATA one."""
        self.send(START)
        self.assertEqual(self.codes(b"BDAT 5 LAST\r\na\nb\r\n"), [b"554"])


class UTF8Tests(SMTPTestMixin, SynchronousTestCase):
    """
    SMTPUTF8 (RFC 6531) and address hygiene.
    """

    def setUp(self) -> None:
        super().setUp()
        self.directory.addUser("jürgen@example.com", DUMMY_HASH)

    def test_utf8NeedsParameter(self) -> None:
        """A UTF-8 address without MAIL's SMTPUTF8 gets 553 5.6.7."""
        self.send(b"EHLO c\r\n")
        self.assertEqual(
            self.send("MAIL FROM:<jörg@remote.test>\r\n".encode())[0][:9], b"553 5.6.7"
        )
        self.send(b"MAIL FROM:<x@remote.test>\r\n")
        self.assertEqual(
            self.send("RCPT TO:<jürgen@example.com>\r\n".encode())[0][:9], b"553 5.6.7"
        )

    def test_utf8Transaction(self) -> None:
        """With SMTPUTF8, UTF-8 addresses are accepted, kept and named in the trace."""
        codes = self.codes(
            "EHLO c\r\nMAIL FROM:<jörg@bücher.test> SMTPUTF8\r\n"
            "RCPT TO:<jürgen@example.com>\r\nDATA\r\nSubject: ü\r\n\r\nhi\r\n.\r\n".encode()
        )
        self.assertEqual(codes, [b"250", b"250", b"250", b"354", b"250"])
        [(envelope, data)] = self.sink.messages
        self.assertTrue(envelope.smtputf8)
        self.assertEqual(str(envelope.sender), "jörg@bücher.test")
        self.assertEqual(str(envelope.recipients[0].address), "jürgen@example.com")
        self.assertIn(b" with UTF8SMTP id ", data)
        self.assertIn("for <jürgen@example.com>".encode(), data)

    def test_invalidUTF8(self) -> None:
        """Bytes that are not UTF-8 in MAIL get 501."""
        self.send(b"EHLO c\r\n")
        self.assertEqual(self.codes(b"MAIL FROM:<a\xff@remote.test> SMTPUTF8\r\n"), [b"501"])

    def test_controlCharactersRefused(self) -> None:
        """A control character anywhere in a path gets 501 5.1.7 / 5.1.3."""
        self.send(b"EHLO c\r\n")
        for path in (b'"a\rX-Injected: 1"@remote.test', b"a\x00b@remote.test", b"a\x1b@r.test"):
            self.assertEqual(self.send(b"MAIL FROM:<" + path + b">\r\n")[0][:9], b"501 5.1.7")
        self.send(b"MAIL FROM:<x@remote.test>\r\n")
        self.assertEqual(self.send(b'RCPT TO:<"b\rc"@example.com>\r\n')[0][:9], b"501 5.1.3")
        self.assertEqual(self.sink.messages, [])

    def test_controlCharacterInHelo(self) -> None:
        """A HELO name with a control character gets 501 and is not used."""
        self.assertEqual(self.codes(b"EHLO a\x01b\r\n"), [b"501"])
        self.assertEqual(self.codes(b"MAIL FROM:<>\r\n"), [b"503"])


class DSNTests(SMTPTestMixin, SynchronousTestCase):
    """
    DSN parameters (RFC 3461) are checked and kept in the envelope.
    """

    def test_parametersStored(self) -> None:
        """RET, ENVID, NOTIFY and ORCPT end up in the envelope."""
        codes = self.codes(
            b"EHLO c\r\nMAIL FROM:<x@remote.test> RET=HDRS ENVID=abc+2Bdef\r\n"
            b"RCPT TO:<alice@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;alice@example.com\r\n"
            b"RCPT TO:<bob@example.com> NOTIFY=NEVER\r\nDATA\r\nx\r\n.\r\n"
        )
        self.assertEqual(codes, [b"250", b"250", b"250", b"250", b"354", b"250"])
        envelope = self.sink.messages[0][0]
        self.assertEqual((envelope.dsnRet, envelope.dsnEnvid), ("HDRS", "abc+def"))
        alice, bob = envelope.recipients
        self.assertEqual(alice.notify, ("FAILURE", "DELAY"))
        self.assertEqual(alice.orcpt, "RFC822;alice@example.com")
        self.assertEqual(bob.notify, ("NEVER",))

    def test_badParameters(self) -> None:
        """Malformed DSN parameters get 501; unknown ones 555."""
        self.send(b"EHLO c\r\n")
        self.assertEqual(self.codes(b"MAIL FROM:<> RET=ALL\r\n"), [b"501"])
        self.assertEqual(self.codes(b"MAIL FROM:<> XYZ=1\r\n"), [b"555"])
        self.send(b"MAIL FROM:<>\r\n")
        self.assertEqual(
            self.codes(b"RCPT TO:<alice@example.com> NOTIFY=NEVER,DELAY\r\n"), [b"501"]
        )
        self.assertEqual(self.codes(b"RCPT TO:<alice@example.com> ORCPT=nosemicolon\r\n"), [b"501"])


class RequireTLSTests(SMTPTestMixin, SynchronousTestCase):
    """
    REQUIRETLS (RFC 8689) only on a TLS session.
    """

    def test_refusedWithoutTLS(self) -> None:
        """MAIL with REQUIRETLS on a plaintext session gets 530 5.7.10."""
        self.send(b"EHLO c\r\n")
        self.assertEqual(
            self.send(b"MAIL FROM:<x@remote.test> REQUIRETLS\r\n")[0][:10], b"530 5.7.10"
        )

    def test_recordedUnderTLS(self) -> None:
        """Under TLS REQUIRETLS is offered and recorded in the envelope."""
        self.proto.tlsActive = True
        self.assertIn(b"REQUIRETLS", b" ".join(self.send(b"EHLO c\r\n")))
        self.send(b"MAIL FROM:<x@remote.test> REQUIRETLS\r\nRCPT TO:<alice@example.com>\r\n")
        self.send(b"DATA\r\nx\r\n.\r\n")
        self.assertTrue(self.sink.messages[0][0].requireTLS)


class _Recording(PolicyCheck):
    """
    A check that records what it is asked and answers as told.
    """

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.answers: dict[str, Verdict | Deferred[Verdict]] = {}

    def _answer(self, step: str) -> Verdict | Deferred[Verdict]:
        self.asked.append(step)
        return self.answers.get(step, Verdict())

    def checkConnection(self, session: Session) -> Verdict | Deferred[Verdict]:
        return self._answer("connect")

    def checkHelo(self, session: Session, name: str) -> Verdict | Deferred[Verdict]:
        return self._answer("helo")

    def checkSender(self, session: Session, sender: Address) -> Verdict | Deferred[Verdict]:
        return self._answer("mail")

    def checkRecipient(
        self, session: Session, sender: Address, recipient: Address
    ) -> Verdict | Deferred[Verdict]:
        return self._answer("rcpt")

    def checkMessage(
        self, session: Session, envelope: Envelope, data: bytes
    ) -> Verdict | Deferred[Verdict]:
        return self._answer("data")


class PolicySeamTests(SMTPTestMixin, SynchronousTestCase):
    """
    The server asks its L{IPolicyCheck} at every step and obeys it.
    """

    def setUp(self) -> None:
        super().setUp()
        self.check = _Recording()
        self.factory.policy = PolicyChain([self.check, self.factory.policy])

    def test_everyStepAsked(self) -> None:
        """Connect, HELO, MAIL, RCPT and end of data are each put to the check."""
        self.connect()
        self.send(START + b"DATA\r\nx\r\n.\r\n")
        self.assertEqual(self.check.asked, ["connect", "helo", "mail", "rcpt", "data"])

    def test_connectionRefused(self) -> None:
        """A refusal at connect is sent instead of the banner, and the connection closes."""
        self.check.answers["connect"] = Verdict(Reply(554, "5.7.1 Go away"))
        self.connect()
        self.assertEqual(self.transport.value(), b"554 5.7.1 Go away\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_deferredAnswerHoldsInput(self) -> None:
        """While a check's answer is pending, nothing further is answered."""
        d: Deferred[Verdict] = Deferred()
        self.check.answers["rcpt"] = d
        self.assertEqual(self.codes(START + b"NOOP\r\n"), [b"250", b"250"])
        self.transport.clear()
        d.callback(Verdict(Reply(450, "4.7.1 Try later")))
        self.assertEqual(self.transport.value(), b"450 4.7.1 Try later\r\n250 2.0.0 Ok\r\n")

    def test_headersAdded(self) -> None:
        """Headers of an accepting end-of-data verdict go on top of the message."""
        self.check.answers["data"] = Verdict(None, ("X-Checked: yes",))
        self.send(START + b"DATA\r\nSubject: s\r\n\r\nb\r\n.\r\n")
        data = self.sink.messages[0][1]
        self.assertIn(b"\r\nX-Checked: yes\r\nSubject: s\r\n", data)

    def test_junkMarked(self) -> None:
        """A verdict asking for Junk marks the queued envelope."""
        self.check.answers["data"] = Verdict(None, (), junk=True)
        self.send(START + b"DATA\r\nSubject: s\r\n\r\nb\r\n.\r\n")
        self.assertTrue(self.sink.messages[0][0].extra["junk"])

    def test_messageRefused(self) -> None:
        """A refusal at end of data is the reply, and nothing is queued."""
        self.check.answers["data"] = Verdict(Reply(550, "5.7.1 No"))
        self.assertEqual(self.codes(START + b"DATA\r\nx\r\n.\r\n")[-1], b"550")
        self.assertEqual(self.sink.messages, [])


class SubmissionPolicyTests(SMTPTestMixin, SynchronousTestCase):
    """
    The production checks on submission: From ownership and the rate limit.
    """

    mode = Mode.SUBMISSION

    def setUp(self) -> None:
        super().setUp()
        self.setUpSession()

    def setUpSession(self) -> None:
        """
        Connect anew as alice, logged in under TLS.
        """
        self.connect()
        self.proto.tlsActive = True
        self.proto.authUser = "alice@example.com"
        self.send(b"EHLO c\r\n")

    def transaction(self, headers: bytes) -> list[bytes]:
        return self.codes(
            b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
            + headers
            + b"\r\nbody\r\n.\r\n"
        )

    def test_headerFromOwned(self) -> None:
        """A From the user owns (or none) is accepted."""
        self.assertEqual(self.transaction(b"From: Alice <alice@example.com>\r\n")[-1], b"250")
        self.assertEqual(self.transaction(b"Subject: no from\r\n")[-1], b"250")

    def test_headerFromNotOwned(self) -> None:
        """A From naming someone else is refused with 550 5.7.1 at end of data."""
        codes = self.transaction(b"From: Bob <bob@example.com>\r\n")
        self.assertEqual(codes[-1], b"550")
        codes = self.transaction(b"From: alice@example.com, bob@example.com\r\n")
        self.assertEqual(codes[-1], b"550")
        self.assertEqual(self.sink.messages, [])

    def test_rateLimit(self) -> None:
        """Past messages_per_hour, MAIL gets 451 4.7.1 until the hour has passed."""
        self.factory.policy = PolicyChain([SenderRateLimit(self.clock, 2)])
        self.assertEqual(self.transaction(b"")[-1], b"250")
        self.assertEqual(self.transaction(b"")[-1], b"250")
        self.assertEqual(self.send(b"MAIL FROM:<alice@example.com>\r\n")[0][:9], b"451 4.7.1")
        self.clock.advance(3601)
        self.setUpSession()
        self.assertEqual(self.transaction(b"")[-1], b"250")
