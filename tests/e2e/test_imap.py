"""
End to end: a real service tree serves IMAP to imaplib and imapclient over
STARTTLS and implicit TLS, with mail delivered by SMTP and removed by POP3.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import smtplib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import imapclient
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mta.config import LimitsConfig
from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.e2e.test_mail import PASSWORD, insecureContext

USER = "carol@example.com"
MESSAGE = (
    b"From: Dave <dave@remote.test>\r\nTo: carol@example.com\r\nSubject: lunch?\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nnoon?\r\n"
    b"--XX\r\nContent-Type: text/html\r\n\r\n<b>noon?</b>\r\n--XX--\r\n"
)


class IMAPEndToEndTests(TestCase):
    """
    SMTP in, IMAP out (and POP3 alongside), through the real service tree.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        self.server: RunningServer = yield startServer(self, self.config())
        yield deferToThread(self.server.addUser, USER, PASSWORD)

    def config(self) -> Any:
        return testConfig(Path(self.mktemp()).absolute())

    def send(self, body: bytes = MESSAGE) -> None:
        with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=30) as c:
            c.sendmail("dave@remote.test", [USER], body)

    def starttls(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.server.ports["imap"], timeout=30)
        client.starttls(insecureContext())
        client.login(USER, PASSWORD)
        return client

    def files(self, folder: str = "INBOX") -> list[Path]:
        base = self.server.maildir(USER, folder)
        return sorted(p for sub in ("new", "cur") for p in (base / sub).iterdir())

    @inlineCallbacks
    def test_mailboxSession(self) -> Any:
        """Over STARTTLS: LIST, SELECT, FETCH byte-exact, STORE, SEARCH, COPY, EXPUNGE, APPEND."""
        yield deferToThread(self.send)
        yield waitFor(lambda: len(self.server.delivered(USER)) == 1, 30)

        def run() -> dict[str, Any]:
            c = self.starttls()
            out: dict[str, Any] = {"list": c.list()[1]}
            out["select"] = c.select("INBOX")
            out["rfc822"] = c.fetch("1", "(BODY.PEEK[])")[1][0]
            out["structure"] = c.fetch("1", "(ENVELOPE BODYSTRUCTURE)")[1][0]
            out["store"] = c.store("1", "+FLAGS", "(\\Seen)")
            out["search"] = c.search(None, "SEEN", "SUBJECT", "lunch")
            out["copy"] = c.copy("1", "Trash")
            c.store("1", "+FLAGS", "(\\Deleted)")
            out["expunge"] = c.expunge()
            out["append"] = c.append("Drafts", "(\\Draft)", None, MESSAGE)
            c.logout()
            return out

        onDisk = self.files()[0].read_bytes()
        out = yield deferToThread(run)
        names = b"\n".join(out["list"])
        for line in (b'\\Sent) "." Sent', b'\\Drafts) "." Drafts', b'\\Trash) "." Trash'):
            self.assertIn(line, names)
        self.assertIn(b'\\Junk) "." Junk', names)
        self.assertIn(b'"." INBOX', names)
        self.assertEqual(out["select"], ("OK", [b"1"]))
        self.assertEqual(out["rfc822"][1], onDisk)
        self.assertIn(b'"lunch?"', out["structure"])
        self.assertIn(b'("text" "plain" ("charset" "utf-8")', out["structure"])
        self.assertIn(b'"alternative"', out["structure"])
        self.assertEqual(out["search"], ("OK", [b"1"]))
        self.assertIn(b"COPYUID", out["copy"][1][0])
        self.assertEqual(out["expunge"], ("OK", [b"1"]))
        self.assertIn(b"APPENDUID", out["append"][1][0])
        [trashed] = self.files("Trash")
        self.assertTrue(trashed.name.endswith(":2,S"))
        self.assertEqual(trashed.read_bytes(), onDisk)
        self.assertEqual(self.files(), [])
        [draft] = self.files("Drafts")
        self.assertTrue(draft.name.endswith(":2,D"))
        self.assertEqual(draft.read_bytes(), MESSAGE)

    @inlineCallbacks
    def test_storeSeenRenamesFile(self) -> Any:
        """Over implicit TLS, STORE \\Seen leaves the Maildir file name ending :2,S."""
        yield deferToThread(self.send)
        yield waitFor(lambda: len(self.server.delivered(USER)) == 1, 30)

        def run() -> tuple[Any, Any]:
            c = imaplib.IMAP4_SSL(
                "127.0.0.1", self.server.ports["imaps"], ssl_context=insecureContext(), timeout=30
            )
            c.login(USER, PASSWORD)
            c.select("INBOX")
            fetched = c.fetch("1", "(FLAGS RFC822)")[1]
            c.logout()
            return fetched, c

        fetched, _ = yield deferToThread(run)
        self.assertIn(b"\\Seen", fetched[0][0] + fetched[1])
        [path] = self.files()
        self.assertTrue(path.name.endswith(":2,S"), path.name)

    @inlineCallbacks
    def test_idleWakesOnDelivery(self) -> Any:
        """An IDLE client hears of mail delivered by SMTP within a second."""

        def run() -> tuple[bytes, float]:
            c = self.starttls()
            c.select("INBOX")
            c.send(b"i1 IDLE\r\n")
            assert c.readline().startswith(b"+")
            self.send()
            sent = time.monotonic()
            line = c.readline()
            elapsed = time.monotonic() - sent
            c.send(b"DONE\r\n")
            while not c.readline().startswith(b"i1 OK"):
                pass
            c.logout()
            return line, elapsed

        line, elapsed = yield deferToThread(run)
        self.assertEqual(line, b"* 1 EXISTS\r\n")
        self.assertLess(elapsed, 1.0)

    @inlineCallbacks
    def test_pop3DeleteIsExpunge(self) -> Any:
        """A POP3 DELE (at QUIT) reaches a session with INBOX selected as EXPUNGE."""
        for _ in range(2):
            yield deferToThread(self.send)
        yield waitFor(lambda: len(self.server.delivered(USER)) == 2, 30)

        def run() -> list[Any]:
            c = self.starttls()
            c.select("INBOX")
            pop = poplib.POP3("127.0.0.1", self.server.ports["pop3"], timeout=30)
            pop.user(USER)
            pop.pass_(PASSWORD)
            pop.dele(1)
            pop.quit()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                c.noop()
                expunged = c.untagged_responses.pop("EXPUNGE", None)
                if expunged:
                    c.logout()
                    return list(expunged)
                time.sleep(0.05)
            c.logout()
            return []

        self.assertEqual((yield deferToThread(run)), [b"1"])

    @inlineCallbacks
    def test_plaintextLoopbackLogin(self) -> Any:
        """Plaintext LOGIN without TLS is allowed from loopback, as Dovecot allows it."""

        def run() -> tuple[str, Any]:
            c = imaplib.IMAP4("127.0.0.1", self.server.ports["imap"], timeout=30)
            capabilities = c.capabilities
            typ, _ = c.login(USER, PASSWORD)
            c.logout()
            return typ, capabilities

        typ, capabilities = yield deferToThread(run)
        self.assertEqual(typ, "OK")
        self.assertIn("STARTTLS", capabilities)
        self.assertNotIn("LOGINDISABLED", capabilities)

    @inlineCallbacks
    def test_imapclientUidplusMove(self) -> Any:
        """imapclient: APPEND gives APPENDUID, MOVE moves, the UIDs are as promised."""

        def run() -> tuple[Any, Any, Any]:
            c = imapclient.IMAPClient(
                "127.0.0.1", self.server.ports["imaps"], ssl=True, ssl_context=insecureContext()
            )
            try:
                c.login(USER, PASSWORD)
                appended = c.append("INBOX", MESSAGE, flags=[b"\\Flagged"])
                c.select_folder("INBOX")
                moved = c.move([1], "Junk")
                c.select_folder("Junk")
                junk = c.fetch(c.search("ALL"), ["UID", "FLAGS"])
            finally:
                c.logout()
            return appended, moved, junk

        appended, moved, junk = yield deferToThread(run)
        self.assertIn(b"APPENDUID", appended)
        self.assertEqual(list(junk), [1])
        self.assertIn(b"\\Flagged", junk[1][b"FLAGS"])
        self.assertEqual(self.files(), [])
        self.assertIsNotNone(re.search(rb"\d", moved or b"0"))


class IMAPThrottleTests(TestCase):
    """
    The failed-login throttle shared with SMTP and POP3 guards IMAP too.
    """

    timeout = 120

    @inlineCallbacks
    def test_throttleBlocks(self) -> Any:
        """After repeated failures from one address, even the right password is refused."""
        limits = replace(LimitsConfig(), login_delay_after=10, login_block_after=4)
        config = testConfig(Path(self.mktemp()).absolute(), limits=limits)
        server: RunningServer = yield startServer(self, config)
        yield deferToThread(server.addUser, USER, PASSWORD)

        def attempt(password: str) -> str:
            c = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
            try:
                c.login(USER, password)
            except (imaplib.IMAP4.error, OSError) as e:
                return str(e)
            c.logout()
            return "OK"

        def run() -> list[str]:
            return [attempt("wrong") for _ in range(4)] + [attempt(PASSWORD)]

        answers = yield deferToThread(run)
        self.assertIn("AUTHENTICATIONFAILED", answers[0])
        self.assertIn("UNAVAILABLE", answers[-1])
        self.assertFalse(os.path.exists(Path(config.data_dir) / "nonexistent"))
