"""
End to end: a Maildir written by a real Dovecot (Debian's dovecot-imapd,
started here on loopback, every message APPENDed through it) is then
served by mta in place, and an IMAP client sees the same mailbox: the same
UIDVALIDITY and UIDNEXT per folder, the same UID, flags, keywords and
INTERNALDATE per message; new mail continues Dovecot's UIDs; POP3 lists
the messages too.

Skipped when Dovecot is not installed (C{apt-get install dovecot-imapd}).
"""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import smtplib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from mta.store.maildir import mailRootOf, userDirectory
from mta.testing.dovecot import DovecotFailed, PrivateDovecot, dovecotBinary, dovecotVersion
from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.e2e.test_mail import PASSWORD

USER = "alice@example.com"
OLD_DATE = '"01-Jan-2020 10:00:00 +0000"'

#: Folder, Message-ID, APPEND flags, APPEND date (C{None}: now).
APPENDS: list[tuple[str, str, str, str | None]] = [
    ("INBOX", "in1", "(\\Seen $Forwarded)", None),
    ("INBOX", "in2", "()", None),
    ("INBOX", "in3", "(\\Flagged \\Answered \\Draft Work NonJunk)", OLD_DATE),
    ("INBOX", "in4", "(\\Seen \\Flagged $Junk)", '"15-Mar-2021 08:30:00 +0100"'),
    ("INBOX", "in5", "(\\Seen)", None),  # expunged: UIDNEXT is then past every UID
    ("Sent", "sent1", "(\\Seen)", OLD_DATE),
    ("Sent", "sent2", "(\\Seen \\Answered $MDNSent)", None),
    ("Archive", "arch1", "(\\Seen $label1 Work)", '"02-Feb-2019 12:00:00 -0500"'),
    ("Archive", "arch2", "(\\Deleted)", None),
]
FOLDERS = ("INBOX", "Sent", "Archive")


def message(messageID: str) -> bytes:
    return (
        f"From: Bob <bob@remote.test>\r\nTo: {USER}\r\nSubject: {messageID}\r\n"
        f"Message-ID: <{messageID}@dovecot.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        f"\r\nThe body of {messageID}.\r\nA second line.\r\n"
    ).encode()


@dataclass(frozen=True)
class Seen:
    """
    One message as an IMAP server showed it.
    """

    uid: int
    flags: frozenset[str]
    internalDate: float
    size: int


@dataclass(frozen=True)
class FolderView:
    uidValidity: int
    uidNext: int
    messages: dict[str, Seen]  # by Message-ID


def _parseFetch(data: list[Any]) -> dict[str, Seen]:
    """
    Read imaplib's answer to C{UID FETCH 1:* (UID FLAGS INTERNALDATE
    RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])}, whatever the
    order of the items.
    """
    records: list[list[bytes]] = []
    for item in data:
        if isinstance(item, tuple):
            records.append([item[0], item[1]])
        elif isinstance(item, bytes) and records:
            records[-1][0] += item
    out: dict[str, Seen] = {}
    for text, literal in records:
        uid = re.search(rb"UID (\d+)", text)
        flags = re.search(rb"FLAGS \(([^)]*)\)", text)
        date = re.search(rb'INTERNALDATE ("[^"]+")', text)
        size = re.search(rb"RFC822\.SIZE (\d+)", text)
        mid = re.search(rb"<([^@>]+)@dovecot\.test>", literal)
        assert uid and flags and date and size and mid, (text, literal)
        parsed = imaplib.Internaldate2tuple(b"INTERNALDATE " + date.group(1))
        assert parsed is not None, date.group(1)
        out[mid.group(1).decode()] = Seen(
            int(uid.group(1)),
            frozenset(flags.group(1).decode().split()) - {"\\Recent"},
            time.mktime(parsed),
            int(size.group(1)),
        )
    return out


def look(client: imaplib.IMAP4, folder: str) -> FolderView:
    """
    SELECT (read-only) C{folder} and fetch what adoption must keep.
    """
    typ, _ = client.select(folder, readonly=True)
    assert typ == "OK", (folder, typ)
    validity = int(client.response("UIDVALIDITY")[1][0])
    uidNext = int(client.response("UIDNEXT")[1][0])
    typ, data = client.uid(
        "FETCH",
        "1:*",
        "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
    )
    assert typ == "OK", data
    client.close()
    return FolderView(validity, uidNext, _parseFetch(data))


def writeWithDovecot(dovecot: PrivateDovecot) -> dict[str, FolderView]:
    """
    Fill the mailbox through Dovecot; expunge one message and change
    another's flags afterwards, as a client would.

    @return: each folder as Dovecot shows it.
    """
    client = imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=10)
    try:
        client.login(USER, "dovecot-password")
        for folder in FOLDERS[1:]:
            assert client.create(folder)[0] == "OK"
            assert client.subscribe(folder)[0] == "OK"
        for folder, messageID, flags, date in APPENDS:
            typ, data = client.append(folder, flags, date, message(messageID))  # type: ignore[arg-type]
            assert typ == "OK", data
        client.select("INBOX")
        typ, data = client.uid("SEARCH", "HEADER", "Message-ID", "in5@dovecot.test")
        [last] = data[0].split()
        client.uid("STORE", last, "+FLAGS", "(\\Deleted)")
        client.expunge()
        client.uid("STORE", "1:*", "+FLAGS", "($label2)")
        client.uid("STORE", "1:*", "-FLAGS", "($label2)")
        typ, data = client.uid("SEARCH", "HEADER", "Message-ID", "in2@dovecot.test")
        client.uid("STORE", data[0], "+FLAGS", "(\\Seen Later)")
        client.close()
        return {folder: look(client, folder) for folder in FOLDERS}
    finally:
        client.logout()


class DovecotAdoptionTests(TestCase):
    """
    Dovecot writes the Maildir; mta serves it.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        binary = dovecotBinary()
        if binary is None:
            raise SkipTest("dovecot is not installed (apt-get install dovecot-imapd)")
        self.version = dovecotVersion(binary)
        self.dataDir = Path(self.mktemp()).absolute()
        mailRoot = mailRootOf(self.dataDir)
        mailRoot.mkdir(parents=True)
        try:
            dovecot = PrivateDovecot(Path(self.mktemp()), f"maildir:{mailRoot}/%d/%n", binary)
        except KeyError as e:  # no nobody/dovenull user
            raise SkipTest(f"cannot run Dovecot here: {e}") from e
        self.inbox = userDirectory(mailRoot, USER)
        # Trial runs tests in its _trial_temp directory.
        dovecot.prepareMailDir(self.inbox, within=Path.cwd())
        dovecot.addUser(USER, "dovecot-password")
        self.addCleanup(deferToThread, dovecot.stop)
        try:
            yield deferToThread(dovecot.start)
        except DovecotFailed as e:
            if os.geteuid() == 0:
                raise
            # Run as root, Dovecot needs nothing more; as anyone else it
            # may want settings this helper does not know.
            raise SkipTest(f"cannot run Dovecot as a normal user here: {e}") from e
        try:
            self.before: dict[str, FolderView] = yield deferToThread(writeWithDovecot, dovecot)
        finally:
            yield deferToThread(dovecot.stop)
        self.server: RunningServer = yield startServer(self, testConfig(self.dataDir))
        yield deferToThread(self.server.addUser, USER, PASSWORD)

    def mta(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.server.ports["imap"], timeout=30)
        client.login(USER, PASSWORD)
        return client

    def test_dovecotWroteIt(self) -> None:
        """
        The Maildir is Dovecot's: its bookkeeping files, its keyword letters
        in the file names; and what the test set up is there.
        """
        self.assertTrue((self.inbox / "dovecot-uidlist").exists())
        self.assertIn("$Forwarded", (self.inbox / "dovecot-keywords").read_text())
        self.assertTrue((self.inbox / ".Sent" / "dovecot-uidlist").exists())
        self.assertEqual(len(self.before["INBOX"].messages), 4)
        self.assertGreater(
            self.before["INBOX"].uidNext,
            max(m.uid for m in self.before["INBOX"].messages.values()) + 1,
        )
        self.assertRegex(self.version, r"^2\.")

    @inlineCallbacks
    def test_sameMailbox(self) -> Any:
        """
        mta shows every folder as Dovecot did: UIDVALIDITY, UIDNEXT, and
        per message (by Message-ID) the UID, flags, keywords and
        INTERNALDATE.
        """

        def run() -> dict[str, FolderView]:
            client = self.mta()
            try:
                return {folder: look(client, folder) for folder in FOLDERS}
            finally:
                client.logout()

        after = yield deferToThread(run)
        for folder in FOLDERS:
            before, now = self.before[folder], after[folder]
            self.assertEqual(now.uidValidity, before.uidValidity, folder)
            self.assertEqual(now.uidNext, before.uidNext, folder)
            self.assertEqual(sorted(now.messages), sorted(before.messages), folder)
            for messageID, was in before.messages.items():
                seen = now.messages[messageID]
                self.assertEqual(seen.uid, was.uid, messageID)
                self.assertEqual(seen.flags, was.flags, messageID)
                self.assertEqual(seen.internalDate, was.internalDate, messageID)
        # The keywords the test relies on did survive.
        inbox = after["INBOX"].messages
        self.assertIn("$Forwarded", inbox["in1"].flags)
        self.assertEqual(inbox["in2"].flags, {"\\Seen", "Later"})
        self.assertIn("NonJunk", inbox["in3"].flags)
        self.assertEqual(after["Archive"].messages["arch1"].flags, {"\\Seen", "$label1", "Work"})

    @inlineCallbacks
    def test_newMailContinuesDovecotsUIDs(self) -> Any:
        """
        A message delivered by SMTP gets Dovecot's UIDNEXT (above the UID
        of the message Dovecot expunged), one APPENDed to Sent too, and a
        keyword set through mta goes into the file name as Dovecot's
        letter for it.
        """
        inbox = self.before["INBOX"]

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=30) as c:
                c.sendmail("bob@remote.test", [USER], message("smtp1"))

        yield deferToThread(send)
        yield waitFor(lambda: len(self.server.delivered(USER)) == 5, 30)

        def run() -> tuple[FolderView, Any, Any]:
            client = self.mta()
            try:
                view = look(client, "INBOX")
                appended = client.append("Sent", "(\\Seen)", None, message("sent3"))
                client.select("INBOX")
                uid = str(view.messages["in2"].uid)
                client.uid("STORE", uid, "+FLAGS", "($Forwarded)")
                return view, appended, client.uid("FETCH", uid, "(FLAGS)")
            finally:
                client.logout()

        view, appended, fetched = yield deferToThread(run)
        self.assertEqual(view.messages["smtp1"].uid, inbox.uidNext)
        self.assertEqual(view.uidNext, inbox.uidNext + 1)
        sent = self.before["Sent"]
        appendUID = re.search(rb"APPENDUID (\d+) (\d+)", appended[1][0])
        assert appendUID, appended
        self.assertEqual(
            (int(appendUID.group(1)), int(appendUID.group(2))), (sent.uidValidity, sent.uidNext)
        )
        self.assertIn(b"$Forwarded", fetched[1][0])
        letters = (self.inbox / "dovecot-keywords").read_text().split("\n")
        letter = "abcdefghijklmnopqrstuvwxyz"[
            [line.split(" ", 1)[1] for line in letters if line].index("$Forwarded")
        ]
        cur = self.inbox / "cur"
        [name] = [n for n in os.listdir(cur) if b"<in2@" in (cur / n).read_bytes()]
        self.assertIn(letter, name.rpartition(":2,")[2])

    @inlineCallbacks
    def test_pop3(self) -> Any:
        """
        POP3 lists the adopted INBOX: the four messages Dovecot kept, each
        UIDL its Maildir base name, and RETR gives a message's text.
        """

        def run() -> tuple[list[bytes], list[bytes], bytes]:
            client = poplib.POP3("127.0.0.1", self.server.ports["pop3"], timeout=30)
            try:
                client.user(USER)
                client.pass_(PASSWORD)
                listing = client.list()[1]
                uidls = client.uidl()[1]
                return listing, uidls, b"\r\n".join(client.retr(1)[1])
            finally:
                client.quit()

        listing, uidls, text = yield deferToThread(run)
        self.assertEqual(len(listing), 4)
        bases = {n.split(":2,")[0] for n in os.listdir(self.inbox / "cur")}
        self.assertEqual({line.split()[1].decode() for line in uidls}, bases)
        self.assertIn(b"@dovecot.test>", text)
        self.assertIn(b"A second line.", text)

    @inlineCallbacks
    def test_textAsDovecotServedIt(self) -> Any:
        """
        Dovecot stores messages with bare LF line ends (C{S=} in the name)
        and serves them with CRLF (C{W=}, its RFC822.SIZE); so should mta.
        """

        def run() -> tuple[FolderView, Any]:
            client = self.mta()
            try:
                view = look(client, "INBOX")
                uid = str(view.messages["in1"].uid)
                client.select("INBOX", readonly=True)
                return view, client.uid("FETCH", uid, "(BODY.PEEK[])")
            finally:
                client.logout()

        view, fetched = yield deferToThread(run)
        for messageID, was in self.before["INBOX"].messages.items():
            self.assertEqual(view.messages[messageID].size, was.size, messageID)
        self.assertEqual(fetched[1][0][1], message("in1"))

    @inlineCallbacks
    def test_subscriptions(self) -> Any:
        """
        LSUB lists what the user subscribed to under Dovecot (Dovecot 2.3
        writes C{subscriptions} as C{V<TAB>2}, an empty line, then one name
        per line with TAB as the hierarchy separator).
        """

        def run() -> Any:
            client = self.mta()
            try:
                return client.lsub()
            finally:
                client.logout()

        _, lines = yield deferToThread(run)
        names = sorted(line.rsplit(b" ", 1)[1].decode() for line in lines)
        self.assertEqual(names, ["Archive", "Sent"])
