# -*- test-case-name: tests.test_imapstore -*-
"""
Tests for L{mta.store.imapstore}: folders, subscriptions, STATUS, select,
and change notifications between IMAP sessions, local delivery and POP3.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mta.message import MessageBody
from mta.store.imapstore import (
    BadFolderName,
    FolderExists,
    FolderInfo,
    IMAPMailbox,
    IMAPStore,
    NoSuchFolder,
)
from mta.store.indexformat import SyncResult
from mta.store.maildir import MaildirStore
from mta.threads import SynchronousRunner

USER = "alice@example.com"
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.runner = SynchronousRunner()
        self.store = IMAPStore(self.root, self.runner)
        self.maildir = MaildirStore(self.root, self.runner)
        self.maildir.onChange = self.store.notifyChanged

    def open(self, name: str = "INBOX") -> IMAPMailbox:
        return self.successResultOf(self.store.openFolder(USER, name))

    def deliver(self, folder: str = "INBOX") -> str:
        body = MessageBody("", 0, len(MESSAGE), MESSAGE)
        return self.successResultOf(self.maildir.deliver(USER, body, b"", folder))

    def names(self) -> list[str]:
        return [f.name for f in self.successResultOf(self.store.listFolders(USER))]


class FolderTests(_Base):
    """
    LIST, CREATE, DELETE, RENAME and subscriptions.
    """

    def test_defaultFolders(self) -> None:
        """
        A user has INBOX and the four special-use folders.
        """
        folders = self.successResultOf(self.store.listFolders(USER))
        self.assertEqual(
            folders,
            [
                FolderInfo("INBOX", ("\\HasNoChildren",)),
                FolderInfo("Drafts", ("\\HasNoChildren", "\\Drafts")),
                FolderInfo("Junk", ("\\HasNoChildren", "\\Junk")),
                FolderInfo("Sent", ("\\HasNoChildren", "\\Sent")),
                FolderInfo("Trash", ("\\HasNoChildren", "\\Trash")),
            ],
        )

    def test_createHierarchy(self) -> None:
        """
        Creating C{Work.Projects} makes C{.Work} and C{.Work.Projects}.
        """
        self.successResultOf(self.store.createFolder(USER, "Work.Projects"))
        self.assertTrue((self.root / "example.com/alice/.Work.Projects/cur").is_dir())
        folders = {f.name: f.attributes for f in self.successResultOf(self.store.listFolders(USER))}
        self.assertEqual(folders["Work"], ("\\HasChildren",))
        self.assertEqual(folders["Work.Projects"], ("\\HasNoChildren",))
        self.failureResultOf(self.store.createFolder(USER, "Work"), FolderExists)
        self.failureResultOf(self.store.createFolder(USER, "inbox"), FolderExists)

    def test_badNames(self) -> None:
        """
        Names with empty levels, hidden levels or slashes are refused.
        """
        for name in ("a..b", ".a", "a.", "a/b", "a.\0"):
            self.failureResultOf(self.store.createFolder(USER, name), BadFolderName)

    def test_delete(self) -> None:
        """
        DELETE removes a folder and its messages but not INBOX.
        """
        self.successResultOf(self.store.createFolder(USER, "Old"))
        self.deliver("Old")
        self.successResultOf(self.store.deleteFolder(USER, "Old"))
        self.assertNotIn("Old", self.names())
        self.failureResultOf(self.store.deleteFolder(USER, "Old"), NoSuchFolder)
        self.failureResultOf(self.store.deleteFolder(USER, "INBOX"), BadFolderName)
        self.assertEqual(
            sorted(
                p.name for p in (self.root / "example.com/alice").iterdir() if p.name[:2] == ".."
            ),
            [],
        )

    def test_renameWithChildren(self) -> None:
        """
        RENAME moves a folder and its children, keeping their messages.
        """
        self.successResultOf(self.store.createFolder(USER, "A.B"))
        self.deliver("A.B")
        self.successResultOf(self.store.renameFolder(USER, "A", "C"))
        self.assertEqual(self.names(), ["INBOX", "C", "C.B", "Drafts", "Junk", "Sent", "Trash"])
        selection = self.successResultOf(self.open("C.B").select())
        self.assertEqual(len(selection.messages), 1)
        self.failureResultOf(self.store.renameFolder(USER, "C", "Sent"), FolderExists)
        self.failureResultOf(self.store.renameFolder(USER, "Nope", "X"), NoSuchFolder)

    def test_renameInbox(self) -> None:
        """
        Renaming INBOX moves its messages into the new folder; INBOX stays.
        """
        self.deliver()
        self.deliver()
        inbox = self.open()
        self.successResultOf(inbox.setFlags([1], "add", ["\\Seen"]))
        self.successResultOf(self.store.renameFolder(USER, "INBOX", "Archive"))
        self.assertEqual(self.successResultOf(inbox.select()).messages, ())
        archived = self.successResultOf(self.open("Archive").select()).messages
        self.assertEqual([m.flags for m in archived], [{"\\Seen"}, set()])

    def test_subscriptions(self) -> None:
        """
        Subscriptions persist in the user's C{subscriptions} file.
        """
        self.successResultOf(self.store.subscribe(USER, "Work"))
        self.successResultOf(self.store.unsubscribe(USER, "Junk"))
        again = IMAPStore(self.root, self.runner)
        self.assertEqual(
            self.successResultOf(again.subscriptions(USER)),
            ["INBOX", "Sent", "Drafts", "Trash", "Work"],
        )

    def test_openMissing(self) -> None:
        """
        Opening a folder that does not exist fails with L{NoSuchFolder}.
        """
        self.failureResultOf(self.store.openFolder(USER, "Nope"), NoSuchFolder)
        self.failureResultOf(self.store.openFolder(USER, "a..b"), NoSuchFolder)


class MailboxTests(_Base):
    """
    SELECT, STATUS, reading, copying.
    """

    def test_selectAndStatus(self) -> None:
        """
        SELECT snapshots the folder and takes its \\Recent messages;
        STATUS counts them all.
        """
        self.deliver()
        self.deliver()
        status = self.successResultOf(self.store.status(USER, "INBOX"))
        self.assertEqual((status.messages, status.recent, status.unseen), (2, 2, 2))
        self.assertEqual((status.uidNext, status.size), (3, 2 * len(MESSAGE)))
        selection = self.successResultOf(self.open().select())
        self.assertEqual([m.uid for m in selection.messages], [1, 2])
        self.assertEqual(selection.recent, {1, 2})
        self.assertEqual(self.successResultOf(self.open().select()).recent, set())

    def test_readAndBody(self) -> None:
        """
        A message reads back byte for byte, and its body names its file.
        """
        self.deliver()
        box = self.open()
        self.successResultOf(box.select())
        self.assertEqual(self.successResultOf(box.read(1)), MESSAGE)
        body = self.successResultOf(box.body(1))
        self.assertEqual((body.size, body.readSync()), (len(MESSAGE), MESSAGE))

    def test_appendCopyMove(self) -> None:
        """
        APPEND answers APPENDUID; COPY and MOVE answer COPYUID's parts.
        """
        box = self.open()
        validity, uid = self.successResultOf(box.append(MESSAGE, ["\\Seen"]))
        self.assertEqual(uid, 1)
        trashValidity, mapping = self.successResultOf(box.copy([1], "Trash"))
        self.assertEqual(mapping, {1: 1})
        _, mapping = self.successResultOf(box.move([1], "Junk"))
        self.assertEqual(mapping, {1: 1})
        self.assertEqual(self.successResultOf(box.messages()), [])
        self.failureResultOf(box.copy([1], "Nope"), NoSuchFolder)
        self.assertIsInstance(validity + trashValidity, int)


class NotificationTests(_Base):
    """
    Changes reach every other session with the folder selected.
    """

    def listen(self, box: IMAPMailbox) -> list[SyncResult]:
        heard: list[SyncResult] = []
        box.addListener(heard.append)
        return heard

    def test_flagsReachOtherSessions(self) -> None:
        """
        A STORE in one session reaches the others, not itself.
        """
        self.deliver()
        one, two = self.open(), self.open()
        self.successResultOf(one.select())
        self.successResultOf(two.select())
        heardOne, heardTwo = self.listen(one), self.listen(two)
        self.successResultOf(one.setFlags([1], "add", ["\\Seen"], origin=heardOne.append))
        self.assertEqual([r.changed for r in heardTwo], [(1,)])
        self.assertEqual(heardOne, [])

    def test_deliveryNotifies(self) -> None:
        """
        Local delivery into a selected folder reaches its sessions as a new
        message, already moved to C{cur/}.
        """
        box = self.open()
        self.successResultOf(box.select())
        heard = self.listen(box)
        self.deliver()
        self.assertEqual([r.added for r in heard], [(1,)])
        self.assertEqual(list((self.root / "example.com/alice/new").iterdir()), [])

    def test_pop3DeleteIsExpunge(self) -> None:
        """
        A POP3 DELE (applied at QUIT) reaches IMAP sessions as an expunge,
        and POP3's UIDL is the base name whatever IMAP did to the flags.
        """
        uid = self.deliver()
        box = self.open()
        self.successResultOf(box.select())
        self.successResultOf(box.setFlags([1], "add", ["\\Seen", "\\Flagged"]))
        heard = self.listen(box)
        pop = self.successResultOf(self.maildir.openMailbox(USER))
        self.assertEqual([m.uid for m in self.successResultOf(pop.listMessages())], [uid])
        self.successResultOf(pop.deleteMessages([uid]))
        self.assertEqual([r.expunged for r in heard], [(1,)])
        self.assertEqual(self.successResultOf(box.vanishedSince(0)), [(1, 1)])

    def test_imapExpungeSeenByPOP3(self) -> None:
        """
        A message IMAP expunges is gone for POP3 too.
        """
        self.deliver()
        box = self.open()
        self.successResultOf(box.select())
        self.successResultOf(box.expunge([1]))
        pop = self.successResultOf(self.maildir.openMailbox(USER))
        self.assertEqual(self.successResultOf(pop.listMessages()), [])

    def test_unselectedFolderCostsNothing(self) -> None:
        """
        A delivery into a folder no session listens to runs no sync.
        """
        self.deliver("Sent")
        self.assertEqual(self.store._folders, {})

    def test_moveNotifiesBothFolders(self) -> None:
        """
        MOVE reaches the source's other sessions as an expunge and the
        destination's as a new message.
        """
        self.deliver()
        source, watcher, junk = self.open(), self.open(), self.open("Junk")
        for box in (source, watcher, junk):
            self.successResultOf(box.select())
        heardSource, heardJunk = self.listen(watcher), self.listen(junk)
        self.successResultOf(source.move([1], "Junk"))
        self.assertEqual([r.expunged for r in heardSource], [(1,)])
        self.assertEqual([r.added for r in heardJunk], [(1,)])


class ForeignFilesTests(SynchronousTestCase):
    """
    Files another server wrote: bare LF messages and Dovecot's subscriptions.
    """

    def test_withCRLF(self) -> None:
        """A bare-LF message is served with CRLF; one with CRs is left alone."""
        from mta.store.imapstore import withCRLF

        self.assertEqual(withCRLF(b"A: b\n\nc\n"), b"A: b\r\n\r\nc\r\n")
        self.assertEqual(withCRLF(b"A: b\r\n\r\nc\n"), b"A: b\r\n\r\nc\n")
        self.assertEqual(withCRLF(b"no newline"), b"no newline")

    def test_dovecotSubscriptions(self) -> None:
        """Dovecot 2.3's format (header, TAB between levels) and ours both read."""
        from mta.store.imapstore import parseSubscriptions

        self.assertEqual(
            parseSubscriptions("V\t2\n\nSent\nWork\tProjects\n"), ["Sent", "Work.Projects"]
        )
        self.assertEqual(parseSubscriptions("INBOX\nSent\n"), ["INBOX", "Sent"])


class BatchTests(SynchronousTestCase):
    """
    L{batches} keeps batch reads bounded.
    """

    def test_bounds(self) -> None:
        """Batches stop at BATCH_MESSAGES or BATCH_BYTES; a big message goes alone."""
        from mta.store.imapstore import BATCH_BYTES, BATCH_MESSAGES, batches

        small = list(range(BATCH_MESSAGES + 5))
        self.assertEqual([len(b) for b in batches(small, lambda u: 10)], [BATCH_MESSAGES, 5])
        sizes = {1: 10, 2: BATCH_BYTES, 3: 10, 4: 10}
        self.assertEqual(list(batches([1, 2, 3, 4], sizes.__getitem__)), [[1], [2], [3, 4]])
        self.assertEqual(list(batches([], lambda u: 1)), [])
