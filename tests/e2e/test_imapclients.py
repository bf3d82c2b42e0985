# -*- test-case-name: tests.e2e.test_imapclients -*-
"""
Real IMAP clients against the real service tree: mbsync (isync) syncing a
local Maildir both ways over implicit TLS, imapclient for the extensions
(CONDSTORE, QRESYNC, UIDPLUS, MOVE, SORT, ESEARCH, SPECIAL-USE,
NAMESPACE, ID, ENABLE, UNSELECT, LIST-STATUS), and one message seen alike
through SMTP, IMAP and POP3.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import shutil
import smtplib
import subprocess
from pathlib import Path
from typing import Any

import imapclient
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.e2e.test_mail import PASSWORD, insecureContext

USER = "carol@example.com"
MBSYNC_TIMEOUT = 60


def message(subject: str, body: str = "hello") -> bytes:
    """
    @return: a small message with C{subject}.
    """
    return (
        f"From: Dave <dave@remote.test>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n\r\n{body}\r\n"
    ).encode()


def subjectOf(raw: bytes) -> bytes:
    """
    @return: the Subject of a message written by L{message}.
    """
    found = re.search(rb"^Subject: (.*?)\r?$", raw, re.MULTILINE)
    assert found is not None, raw
    return found.group(1)


MBSYNCRC = """\
IMAPAccount mta
Host 127.0.0.1
Port {port}
User {user}
Pass "{password}"
SSLType {tls}
CertificateFile {cert}
SystemCertificates no
Timeout 20

IMAPStore remote
Account mta

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel mta
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
Sync All
SyncState *
"""


class _ServerCase(TestCase):
    """
    A started tree with user carol, and blocking helpers for its clients.
    """

    timeout = 120
    server: RunningServer

    @inlineCallbacks
    def setUp(self) -> Any:
        self.server = yield startServer(self, testConfig(Path(self.mktemp()).absolute()))
        yield deferToThread(self.server.addUser, USER, PASSWORD)

    def send(self, *bodies: bytes) -> Any:
        """
        Deliver C{bodies} to carol by SMTP and wait until they are in her INBOX.
        """
        before = len(self.server.delivered(USER))

        def run() -> None:
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=30) as c:
                for body in bodies:
                    c.sendmail("dave@remote.test", [USER], body)

        d = deferToThread(run)
        d.addCallback(
            lambda _: waitFor(lambda: len(self.server.delivered(USER)) == before + len(bodies), 30)
        )
        return d

    def imaps(self) -> imaplib.IMAP4_SSL:
        """
        @return: an imaplib client logged in as carol over implicit TLS.
        """
        c = imaplib.IMAP4_SSL(
            "127.0.0.1", self.server.ports["imaps"], ssl_context=insecureContext(), timeout=30
        )
        c.login(USER, PASSWORD)
        return c

    def client(self) -> imapclient.IMAPClient:
        """
        @return: an imapclient client logged in as carol over implicit TLS.
        """
        c = imapclient.IMAPClient(
            "127.0.0.1",
            self.server.ports["imaps"],
            ssl=True,
            ssl_context=insecureContext(),
            timeout=30,
        )
        c.login(USER, PASSWORD)
        return c

    def serverFolder(self, folder: str = "INBOX") -> dict[bytes, set[bytes]]:
        """
        @return: the Message-ID of each message in C{folder} on the server,
            with its flags (a duplicate would show as a short dict).
        """
        c = self.client()
        try:
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            fetched = (
                c.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
            )
        finally:
            c.logout()
        out: dict[bytes, set[bytes]] = {}
        for data in fetched.values():
            header = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"]
            messageId = header.split(b":", 1)[1].strip()
            assert messageId not in out, f"duplicate {messageId!r}"
            out[messageId] = set(data[b"FLAGS"])
        return out


class MbsyncTests(_ServerCase):
    """
    mbsync keeps a local Maildir and the server's folders in step, both ways.
    """

    def setUp(self) -> Any:
        self.mbsync = shutil.which("mbsync")
        if self.mbsync is None:
            raise SkipTest("mbsync (Debian package isync) is not installed")
        return super().setUp()

    def configure(self, tls: str = "IMAPS") -> tuple[Path, Path]:
        """
        Write the mbsyncrc into the test's directory.

        @param tls: C{IMAPS} for implicit TLS on the imaps port, or
            C{STARTTLS} on the imap port.

        @return: the rc file and the local Maildir root.
        """
        top = Path(self.mktemp()).absolute()
        local = top / "mail"
        local.mkdir(parents=True)
        rc = top / "mbsyncrc"
        rc.write_text(
            MBSYNCRC.format(
                port=self.server.ports["imaps" if tls == "IMAPS" else "imap"],
                tls=tls,
                user=USER,
                password=PASSWORD,
                cert=Path(self.server.config.data_dir) / "tls" / "selfsigned.pem",
                local=local,
            )
        )
        return rc, local

    def sync(self, rc: Path) -> Any:
        """
        Run C{mbsync -a} in a thread.

        @return: a Deferred firing with the finished process.
        """
        assert self.mbsync is not None
        command = [self.mbsync, "-c", str(rc), "-a"]
        return deferToThread(
            subprocess.run, command, capture_output=True, timeout=MBSYNC_TIMEOUT, check=False
        )

    def assertSynced(self, process: subprocess.CompletedProcess[bytes]) -> None:
        self.assertEqual(process.returncode, 0, process.stdout.decode() + process.stderr.decode())

    @staticmethod
    def localFiles(local: Path, folder: str = "INBOX") -> list[Path]:
        """
        @return: the message files of a local folder.
        """
        base = local / folder
        return sorted(p for sub in ("new", "cur") for p in (base / sub).iterdir())

    def expungeOnServer(self, subject: str) -> None:
        """
        Delete the message with C{subject} from carol's INBOX with imaplib.
        """
        c = self.imaps()
        try:
            c.select("INBOX")
            [found] = c.search(None, "SUBJECT", subject)[1]
            c.store(found.decode(), "+FLAGS", "(\\Deleted)")
            c.expunge()
        finally:
            c.logout()

    @inlineCallbacks
    def test_starttls(self) -> Any:
        """Over STARTTLS on the imap port, a sync brings the INBOX down byte for byte."""
        yield self.send(message("plain"))
        rc, local = self.configure("STARTTLS")
        self.assertSynced((yield self.sync(rc)))
        [path] = self.localFiles(local)
        # mbsync writes LF line ends and its X-TUID header into local files.
        text = re.sub(rb"(?m)^X-TUID: .*\n", b"", path.read_bytes())
        self.assertEqual(text, self.server.delivered(USER)[0].replace(b"\r\n", b"\n"))

    @inlineCallbacks
    def test_syncBothWaysTwice(self) -> Any:
        """SMTP mail reaches the local Maildir, a local message, \\Seen and deletion reach the server, a server expunge reaches the Maildir, and the last run changes nothing."""
        yield self.send(message("first"), message("second"), message("doomed"))
        rc, local = self.configure()
        first = yield self.sync(rc)
        self.assertSynced(first)
        files = self.localFiles(local)
        self.assertEqual(
            sorted(subjectOf(p.read_bytes()) for p in files), [b"doomed", b"first", b"second"]
        )
        for folder in ("Sent", "Drafts", "Trash", "Junk"):
            self.assertTrue((local / folder / "cur").is_dir(), folder)

        # Locally: a new message, \Seen on "first", "second" trashed (so
        # expunged); on the server: "doomed" expunged.
        (local / "INBOX" / "new" / "1700000000.local1.client").write_bytes(message("local"))
        bySubject = {subjectOf(p.read_bytes()): p for p in files}
        for subject, flag in ((b"first", "S"), (b"second", "T")):
            path = bySubject[subject]
            self.assertRegex(path.name, r":2,$")
            path.rename(path.with_name(path.name + flag))
        yield deferToThread(self.expungeOnServer, "doomed")
        second = yield self.sync(rc)
        self.assertSynced(second)
        onServer = yield deferToThread(self.serverFolder)
        self.assertEqual(
            onServer, {b"<first@remote.test>": {b"\\Seen"}, b"<local@remote.test>": set()}
        )
        self.assertEqual(
            sorted(subjectOf(p.read_bytes()) for p in self.localFiles(local)), [b"first", b"local"]
        )
        base = self.server.maildir(USER)
        [onDisk] = [p for p in base.glob("cur/*") if b"Subject: first" in p.read_bytes()]
        self.assertTrue(onDisk.name.endswith(":2,S"), onDisk.name)

        third = yield self.sync(rc)
        self.assertSynced(third)
        self.assertEqual((yield deferToThread(self.serverFolder)), onServer)
        self.assertEqual(len(self.localFiles(local)), 2)
        self.assertEqual(len(self.server.delivered(USER)), 2)
        for folder in ("Sent", "Drafts", "Trash", "Junk"):
            self.assertEqual(self.localFiles(local, folder), [])
            self.assertEqual((yield deferToThread(self.serverFolder, folder)), {})


def untagged(c: imaplib.IMAP4, name: str) -> list[bytes]:
    """
    @return: (and forget) the untagged C{name} responses imaplib collected.
    """
    return [d for d in c.untagged_responses.pop(name, []) if isinstance(d, bytes)]


class ExtensionTests(_ServerCase):
    """
    imapclient (and imaplib for what imapclient cannot send) drive every
    extension the server announces.
    """

    @inlineCallbacks
    def test_condstoreChangedSince(self) -> Any:
        """CONDSTORE: SELECT reports HIGHESTMODSEQ, a STORE raises one message's MODSEQ, and FETCH CHANGEDSINCE returns only that message."""
        yield self.send(message("one"), message("two"), message("three"))

        def run() -> tuple[Any, ...]:
            c = self.client()
            try:
                enabled = c.enable("CONDSTORE")
                selected = c.select_folder("INBOX")
                before = selected[b"HIGHESTMODSEQ"]
                c.add_flags([2], [b"\\Flagged"])
                changed = c.fetch(
                    [1, 2, 3], ["MODSEQ", "FLAGS"], modifiers=[f"CHANGEDSINCE {before}"]
                )
                unchanged = c.fetch(
                    [1, 2, 3], ["MODSEQ"], modifiers=[f"CHANGEDSINCE {before + 100}"]
                )
                status = c.folder_status("INBOX", ["HIGHESTMODSEQ"])
            finally:
                c.logout()
            return enabled, before, changed, unchanged, status

        enabled, before, changed, unchanged, status = yield deferToThread(run)
        self.assertEqual(enabled, [b"CONDSTORE"])
        self.assertEqual(list(changed), [2])
        [modseq] = changed[2][b"MODSEQ"]
        self.assertGreater(modseq, before)
        self.assertEqual(set(changed[2][b"FLAGS"]) - {b"\\Recent"}, {b"\\Flagged"})
        self.assertEqual(unchanged, {})
        self.assertEqual(status[b"HIGHESTMODSEQ"], modseq)

    @inlineCallbacks
    def test_qresyncVanished(self) -> Any:
        """QRESYNC: another session's expunge is VANISHED live, and a later SELECT (QRESYNC ...) names it VANISHED (EARLIER) with the flag changes since."""
        yield self.send(message("one"), message("two"), message("three"))

        def run() -> dict[str, Any]:
            out: dict[str, Any] = {}
            watcher = self.imaps()
            other = self.imaps()
            try:
                out["enable"] = watcher._simple_command("ENABLE", "QRESYNC")
                out["enabled"] = untagged(watcher, "ENABLED")
                watcher.select("INBOX")
                [validity] = untagged(watcher, "UIDVALIDITY")
                [modseq] = untagged(watcher, "HIGHESTMODSEQ")
                other.select("INBOX")
                other.uid("STORE", "2", "+FLAGS", "(\\Deleted)")
                other.expunge()
                other.uid("STORE", "3", "+FLAGS", "(\\Seen)")
                watcher.noop()
                out["live"] = untagged(watcher, "VANISHED")
                out["liveExpunge"] = untagged(watcher, "EXPUNGE")
                watcher.logout()

                again = self.imaps()
                again._simple_command("ENABLE", "QRESYNC")
                out["select"] = again._simple_command(
                    "SELECT", "INBOX", f"(QRESYNC ({validity.decode()} {modseq.decode()} 1:3))"
                )
                out["earlier"] = untagged(again, "VANISHED")
                out["fetch"] = untagged(again, "FETCH")
                out["wrongValidity"] = again._simple_command(
                    "SELECT", "INBOX", f"(QRESYNC ({int(validity) + 1} 1))"
                )
                out["noVanished"] = untagged(again, "VANISHED")
                again.logout()
            finally:
                other.logout()
            return out

        out = yield deferToThread(run)
        self.assertEqual(out["enabled"], [b"QRESYNC"])
        self.assertEqual(out["live"], [b"2"])
        self.assertEqual(out["liveExpunge"], [])
        self.assertEqual(out["select"][0], "OK")
        self.assertEqual(out["earlier"], [b"(EARLIER) 2"])
        [fetched] = out["fetch"]
        self.assertRegex(fetched, rb"^2 \(.*UID 3")
        self.assertIn(b"\\Seen", fetched)
        self.assertIn(b"MODSEQ", fetched)
        self.assertEqual(out["wrongValidity"][0], "OK")
        self.assertEqual(out["noVanished"], [])

    @inlineCallbacks
    def test_uidplusMoveCopy(self) -> Any:
        """UIDPLUS and MOVE: COPYUID on COPY and MOVE, UID EXPUNGE removes only the UIDs named."""
        yield self.send(message("one"), message("two"), message("three"))

        def run() -> tuple[Any, ...]:
            c = self.client()
            try:
                c.select_folder("INBOX")
                # imaplib's uid() drops the tagged text that holds COPYUID.
                copied = c._imap._simple_command("UID", "COPY", "1", "Trash")
                moved = c._imap._simple_command("UID", "MOVE", "2", "Junk")
                movedCodes = untagged(c._imap, "OK")
                movedExpunge = untagged(c._imap, "EXPUNGE")
                c.add_flags([1, 3], [b"\\Deleted"])
                c.uid_expunge([3])
                left = c.search("ALL")
                junk = c.select_folder("Junk")
            finally:
                c.logout()
            return copied, moved, movedCodes, movedExpunge, left, junk

        copied, moved, movedCodes, movedExpunge, left, junk = yield deferToThread(run)
        self.assertEqual(copied[0], "OK")
        self.assertRegex(copied[1][0], rb"^\[COPYUID \d+ 1 1\]")
        self.assertEqual(moved[0], "OK")
        self.assertTrue(any(re.match(rb"\[COPYUID \d+ 2 1\]", line) for line in movedCodes))
        self.assertEqual(movedExpunge, [b"2"])
        self.assertEqual(left, [1])
        self.assertEqual(junk[b"EXISTS"], 1)
        self.assertEqual(
            (yield deferToThread(self.serverFolder, "Trash")).keys(), {b"<one@remote.test>"}
        )
        self.assertEqual(
            (yield deferToThread(self.serverFolder, "Junk")).keys(), {b"<two@remote.test>"}
        )

    @inlineCallbacks
    def test_sortAndEsearch(self) -> Any:
        """SORT orders by subject and reversed, ESEARCH answers MIN MAX COUNT ALL with the tag."""
        yield self.send(message("banana"), message("apple"), message("cherry"))

        def run() -> tuple[Any, ...]:
            c = self.client()
            try:
                c.select_folder("INBOX")
                bySubject = c.sort(["SUBJECT"])
                reversed_ = c.sort(["REVERSE", "SUBJECT"])
                filtered = c.sort(["SUBJECT"], ["NOT", "SUBJECT", "apple"])
                typ, _ = c._imap.uid("SEARCH", "RETURN (MIN MAX COUNT ALL)", "ALL")
                esearch = untagged(c._imap, "ESEARCH")
                c._imap.uid("SEARCH", "RETURN (COUNT)", "SUBJECT", "nothing-like-this")
                empty = untagged(c._imap, "ESEARCH")
            finally:
                c.logout()
            return bySubject, reversed_, filtered, typ, esearch, empty

        bySubject, reversed_, filtered, typ, esearch, empty = yield deferToThread(run)
        self.assertEqual(bySubject, [2, 1, 3])
        self.assertEqual(reversed_, [3, 1, 2])
        self.assertEqual(filtered, [1, 3])
        self.assertEqual(typ, "OK")
        [line] = esearch
        self.assertRegex(line, rb'^\(TAG "[A-Z0-9]+"\) UID ')
        self.assertIn(b" MIN 1", line)
        self.assertIn(b" MAX 3", line)
        self.assertIn(b" COUNT 3", line)
        self.assertIn(b" ALL 1:3", line)
        [nothing] = empty
        self.assertRegex(nothing, rb"UID COUNT 0$")

    @inlineCallbacks
    def test_listNamespaceIdEnableUnselect(self) -> Any:
        """SPECIAL-USE in LIST, LIST-STATUS, NAMESPACE, ID without a version, ENABLE of known names only, UNSELECT that expunges nothing."""
        yield self.send(message("one"), message("two"))

        def run() -> dict[str, Any]:
            out: dict[str, Any] = {}
            c = imapclient.IMAPClient(
                "127.0.0.1",
                self.server.ports["imaps"],
                ssl=True,
                ssl_context=insecureContext(),
                timeout=30,
            )
            try:
                out["idBefore"] = c.id_({"name": "test-suite", "version": "1"})
                c.login(USER, PASSWORD)
                out["capabilities"] = c.capabilities()
                out["id"] = c.id_()
                out["folders"] = c.list_folders()
                out["sent"] = c.find_special_folder(b"\\Sent")
                raw = c._imap
                raw._simple_command("LIST", "(SPECIAL-USE)", '""', "*")
                out["specialOnly"] = untagged(raw, "LIST")
                raw._simple_command(
                    "LIST", '""', "*", "RETURN", "(STATUS (MESSAGES UNSEEN UIDNEXT))"
                )
                out["listStatus"] = untagged(raw, "STATUS")
                out["namespace"] = c.namespace()
                out["enabled"] = c.enable("QRESYNC", "X-NOT-A-THING", "UTF8=ACCEPT")
                c.select_folder("INBOX")
                c.add_flags([1], [b"\\Deleted"])
                out["unselect"] = c.unselect_folder()
                out["afterUnselect"] = c.select_folder("INBOX", readonly=True)[b"EXISTS"]
            finally:
                c.logout()
            return out

        out = yield deferToThread(run)
        for answer in (out["idBefore"], out["id"]):
            self.assertEqual(answer, ((b"name", b"mta"),))
        for word in (
            b"SPECIAL-USE",
            b"NAMESPACE",
            b"UNSELECT",
            b"LIST-STATUS",
            b"ESEARCH",
            b"SORT",
        ):
            self.assertIn(word, out["capabilities"])
        flags = {name: set(f) for f, _, name in out["folders"]}
        self.assertEqual(
            {
                name: fl & {b"\\Sent", b"\\Drafts", b"\\Trash", b"\\Junk"}
                for name, fl in flags.items()
            },
            {
                "INBOX": set(),
                "Sent": {b"\\Sent"},
                "Drafts": {b"\\Drafts"},
                "Trash": {b"\\Trash"},
                "Junk": {b"\\Junk"},
            },
        )
        self.assertEqual(out["sent"], "Sent")
        self.assertEqual(len(out["specialOnly"]), 4)
        self.assertFalse(any(b"INBOX" in line for line in out["specialOnly"]))
        statuses = {line.split(b" ", 1)[0].strip(b'"'): line for line in out["listStatus"]}
        self.assertEqual(set(statuses), {b"INBOX", b"Sent", b"Drafts", b"Trash", b"Junk"})
        self.assertRegex(statuses[b"INBOX"], rb"MESSAGES 2 UNSEEN 2 UIDNEXT 3")
        self.assertRegex(statuses[b"Sent"], rb"MESSAGES 0 UNSEEN 0 UIDNEXT 1")
        self.assertEqual(out["namespace"].personal, (("", "."),))
        self.assertEqual(out["namespace"].other, None)
        self.assertEqual(out["enabled"], [b"QRESYNC"])
        self.assertEqual(out["afterUnselect"], 2)


def fetchedBody(data: list[Any]) -> bytes:
    """
    @return: the literal of imaplib's answer to a one-message FETCH.
    """
    first = data[0]
    assert isinstance(first, tuple), data
    body = first[1]
    assert isinstance(body, bytes)
    return body


class CrossProtocolTests(_ServerCase):
    """
    SMTP delivers, IMAP and POP3 read one store.
    """

    def pop3(self) -> poplib.POP3:
        """
        @return: a POP3 client logged in as carol (plaintext, from loopback).
        """
        pop = poplib.POP3("127.0.0.1", self.server.ports["pop3"], timeout=30)
        pop.user(USER)
        pop.pass_(PASSWORD)
        return pop

    @inlineCallbacks
    def test_imapExpungeHidesFromPop3(self) -> Any:
        """IMAP and POP3 read the same bytes; an IMAP EXPUNGE removes the message from POP3, whose other UIDLs stay the same."""
        bodies = [message("one"), message("two"), message("three")]
        yield self.send(*bodies)

        def run() -> dict[str, Any]:
            out: dict[str, Any] = {}
            pop = self.pop3()
            out["uidlBefore"] = pop.uidl()[1]
            out["pop"] = [b"\r\n".join(pop.retr(i)[1]) + b"\r\n" for i in (1, 2, 3)]
            pop.quit()
            c = self.imaps()
            try:
                c.select("INBOX")
                out["imap"] = [fetchedBody(c.fetch(str(i), "(BODY.PEEK[])")[1]) for i in (1, 2, 3)]
                c.store("2", "+FLAGS", "(\\Deleted)")
                out["expunge"] = c.expunge()
            finally:
                c.logout()
            pop = self.pop3()
            out["stat"] = pop.stat()
            out["uidlAfter"] = pop.uidl()[1]
            out["popAfter"] = [b"\r\n".join(pop.retr(i)[1]) + b"\r\n" for i in (1, 2)]
            pop.quit()
            return out

        onDisk = self.server.delivered(USER)
        out = yield deferToThread(run)
        self.assertEqual(out["pop"], onDisk)
        self.assertEqual(out["imap"], onDisk)
        self.assertEqual([subjectOf(m) for m in onDisk], [b"one", b"two", b"three"])
        self.assertEqual(out["expunge"], ("OK", [b"2"]))
        self.assertEqual(out["stat"][0], 2)
        before = [line.split()[1] for line in out["uidlBefore"]]
        after = [line.split()[1] for line in out["uidlAfter"]]
        self.assertEqual(after, [before[0], before[2]])
        self.assertEqual([subjectOf(m) for m in out["popAfter"]], [b"one", b"three"])
        self.assertEqual(len(self.server.delivered(USER)), 2)
