# -*- test-case-name: tests.test_maildir -*-
"""
Tests for L{mta.store.maildir}: layout, safe delivery, reading back.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorFromThreads
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mta.interfaces import IMailbox, IMessageStore
from mta.message import MessageBody
from mta.store.base import StoredMessage
from mta.store.maildir import (
    MaildirMailbox,
    MaildirStore,
    createUserFolders,
    folderDirectory,
    mailRootOf,
    userDirectory,
)
from mta.threads import BlockingRunner, SynchronousRunner

BODY = b"Subject: hi\r\n\r\nHello\r\n.leading dot\r\n..two dots\r\n\xe9\xff\x00\r\n"
PREFIX = b"Return-Path: <a@b.example>\r\nReceived: from x\r\n"
UNSAFE = [
    "alice",
    "@example.com",
    "alice@",
    "../x@example.com",
    "a/b@example.com",
    ".alice@example.com",
    "alice@..",
    "alice@../etc",
    "alice@.example.com",
    "alice@exa/mple.com",
    "al\0ice@example.com",
]


def _writeFile(directory: Path, data: bytes) -> MessageBody:
    """
    Write C{data} to a fresh file under C{directory}, after a few bytes
    that are not part of it (as in a queue file).

    @return: the body naming it.
    """
    path = directory / f"msg-{len(os.listdir(directory))}"
    path.write_bytes(b"head\n" + data)
    return MessageBody(str(path), 5, len(data))


class _StoreMixin:
    """
    A Maildir store under a fresh temporary data dir, on a synchronous runner.
    """

    def makeStore(self, case: SynchronousTestCase) -> MaildirStore:
        """
        Set up C{self.dataDir}, C{self.spool} and a store.
        """
        self.dataDir = Path(case.mktemp())
        self.spool = self.dataDir / "spool"
        self.spool.mkdir(parents=True)
        return MaildirStore(mailRootOf(self.dataDir), SynchronousRunner())

    def inbox(self, address: str = "alice@example.com") -> Path:
        """
        @return: the INBOX maildir of C{address}.
        """
        return userDirectory(mailRootOf(self.dataDir), address)


class LayoutTests(SynchronousTestCase, _StoreMixin):
    """
    Tests for the on-disk layout and folder creation.
    """

    def setUp(self) -> None:
        self.store = self.makeStore(self)

    def test_userPathIsLowerCase(self) -> None:
        """
        An address maps to C{<mailRoot>/<domain>/<local>}, lower-cased.
        """
        self.assertEqual(
            userDirectory(Path("/m"), "Alice@Example.COM"),
            Path("/m/example.com/alice"),
        )

    def test_folderPaths(self) -> None:
        """
        INBOX (any case) is the user's directory; other folders are dot dirs.
        """
        user = Path("/m/example.com/alice")
        self.assertEqual(folderDirectory(user, "inbox"), user)
        self.assertEqual(folderDirectory(user, "Sent"), user / ".Sent")
        self.assertEqual(folderDirectory(user, "Archive.2024"), user / ".Archive.2024")

    def test_unsafeAddressesRefused(self) -> None:
        """
        Addresses that could escape the mail root raise L{ValueError}.
        """
        for address in UNSAFE:
            with self.assertRaises(ValueError, msg=address):
                userDirectory(Path("/m"), address)
            with self.assertRaises(ValueError, msg=address):
                createUserFolders(self.dataDir, address)
        self.assertFalse(mailRootOf(self.dataDir).exists())

    def test_unsafeFolderRefused(self) -> None:
        """
        Folder names that could escape the user's directory are refused.
        """
        for folder in ["", "../x", "a/b", ".Sent", "a..b", "x\0"]:
            with self.assertRaises(ValueError, msg=folder):
                folderDirectory(Path("/m/example.com/alice"), folder)

    def test_createUserFolders(self) -> None:
        """
        A user gets INBOX plus four Maildir++ folders, each with C{maildirfolder}.
        """
        createUserFolders(self.dataDir, "Alice@Example.com")
        inbox = self.inbox()
        for sub in ("cur", "new", "tmp"):
            self.assertTrue((inbox / sub).is_dir())
        self.assertFalse((inbox / "maildirfolder").exists())
        for folder in (".Sent", ".Drafts", ".Trash", ".Junk"):
            for sub in ("cur", "new", "tmp"):
                self.assertTrue((inbox / folder / sub).is_dir())
            marker = inbox / folder / "maildirfolder"
            self.assertTrue(marker.is_file())
            self.assertEqual(marker.stat().st_size, 0)

    def test_directoriesArePrivate(self) -> None:
        """
        Every directory of the store is mode 0700 (at most).
        """
        createUserFolders(self.dataDir, "alice@example.com")
        root = mailRootOf(self.dataDir)
        for directory, _, _ in os.walk(root):
            mode = stat.S_IMODE(os.stat(directory).st_mode)
            self.assertEqual(mode & 0o077, 0, directory)

    def test_createUserFoldersIdempotent(self) -> None:
        """
        Creating a user twice keeps what is there.
        """
        createUserFolders(self.dataDir, "alice@example.com")
        path = _writeFile(self.spool, BODY)
        uid = self.successResultOf(self.store.deliver("alice@example.com", path, b""))
        createUserFolders(self.dataDir, "alice@example.com")
        self.assertEqual(os.listdir(self.inbox() / "new"), [uid])

    def test_createUser(self) -> None:
        """
        L{MaildirStore.createUser} makes the same folders.
        """
        self.successResultOf(self.store.createUser("bob@example.com"))
        self.assertTrue((self.inbox("bob@example.com") / ".Junk" / "new").is_dir())

    def test_openMailboxCreates(self) -> None:
        """
        Opening a missing folder creates it as a Maildir++ folder.
        """
        self.successResultOf(self.store.openMailbox("alice@example.com", "Archive"))
        self.assertTrue((self.inbox() / ".Archive" / "maildirfolder").is_file())
        self.assertTrue((self.inbox() / ".Sent" / "cur").is_dir())

    def test_unsafeOpenFails(self) -> None:
        """
        Unsafe names fail the Deferreds of every store method with L{ValueError}.
        """
        path = _writeFile(self.spool, BODY)
        self.failureResultOf(self.store.deliver("../x@y", path, b""), ValueError)
        self.failureResultOf(self.store.openMailbox("a@b", "../x"), ValueError)
        self.failureResultOf(self.store.createUser("a/b@c"), ValueError)

    def test_interfaces(self) -> None:
        """
        The store and its mailboxes provide their interfaces.
        """
        self.assertTrue(verifyObject(IMessageStore, self.store))
        mailbox = self.successResultOf(self.store.openMailbox("alice@example.com"))
        self.assertTrue(verifyObject(IMailbox, mailbox))


class MaildirStoreTests(SynchronousTestCase, _StoreMixin):
    """
    Tests for L{MaildirStore.deliver}.
    """

    def setUp(self) -> None:
        self.store = self.makeStore(self)

    def deliver(self, data: bytes, prefix: bytes = PREFIX, folder: str = "INBOX") -> str:
        """
        Deliver C{data} to alice; return the uid.
        """
        path = _writeFile(self.spool, data)
        return self.successResultOf(self.store.deliver("alice@example.com", path, prefix, folder))

    def test_deliverIsByteExact(self) -> None:
        """
        The stored file is the prefix then the message, CRLF, dots and 8-bit kept.
        """
        uid = self.deliver(BODY)
        self.assertEqual((self.inbox() / "new" / uid).read_bytes(), PREFIX + BODY)

    def test_deliverLargeMessage(self) -> None:
        """
        A 5 MB message, copied in chunks, arrives whole.
        """
        body = bytes(range(256)) * (5 * 1024 * 1024 // 256) + b"tail\r\n"
        uid = self.deliver(body)
        self.assertEqual((self.inbox() / "new" / uid).read_bytes(), PREFIX + body)

    def test_uidFormat(self) -> None:
        """
        The uid is a Maildir unique name with the Maildir++ size appended.
        """
        uid = self.deliver(BODY)
        self.assertRegex(uid, r"^\d+\.M\d+P\d+Q\d+\.[^/:]+,S=\d+$")
        self.assertTrue(uid.endswith(f",S={len(PREFIX + BODY)}"))

    def test_tmpIsEmptyAfterDelivery(self) -> None:
        """
        Nothing is left in C{tmp/} once the message is delivered.
        """
        self.deliver(BODY)
        self.assertEqual(os.listdir(self.inbox() / "tmp"), [])

    def test_failedCopyLeavesNothing(self) -> None:
        """
        A missing message file fails the delivery and leaves C{tmp/} empty.
        """
        d = self.store.deliver(
            "alice@example.com", MessageBody(str(self.spool / "nope"), 0, 1), b""
        )
        self.failureResultOf(d, FileNotFoundError)
        self.assertEqual(os.listdir(self.inbox() / "tmp"), [])
        self.assertEqual(os.listdir(self.inbox() / "new"), [])

    def test_deliverCreatesFolders(self) -> None:
        """
        Delivering to a user without a store creates all of it on the fly.
        """
        self.deliver(BODY)
        self.assertTrue((self.inbox() / ".Trash" / "maildirfolder").is_file())

    def test_deliverToFolder(self) -> None:
        """
        Delivery to a named folder lands in that folder's C{new/}.
        """
        uid = self.deliver(BODY, folder="Sent")
        self.assertEqual(os.listdir(self.inbox() / ".Sent" / "new"), [uid])
        self.assertEqual(os.listdir(self.inbox() / "new"), [])

    def test_deliverRecreatesRemovedStore(self) -> None:
        """
        A user directory removed behind the store's back is made again.
        """
        self.deliver(BODY)
        for directory, dirs, files in os.walk(self.inbox(), topdown=False):
            for name in files:
                os.unlink(os.path.join(directory, name))
            for name in dirs:
                os.rmdir(os.path.join(directory, name))
        os.rmdir(self.inbox())
        uid = self.deliver(BODY)
        self.assertEqual(os.listdir(self.inbox() / "new"), [uid])

    def test_uidsUnique(self) -> None:
        """
        Many deliveries in a row get distinct uids.
        """
        uids = {self.deliver(b"x\r\n") for _ in range(50)}
        self.assertEqual(len(uids), 50)

    def test_messageFileIsPrivate(self) -> None:
        """
        Delivered files are readable by the owner only.
        """
        uid = self.deliver(BODY)
        mode = stat.S_IMODE((self.inbox() / "new" / uid).stat().st_mode)
        self.assertEqual(mode & 0o077, 0)


class MaildirMailboxTests(SynchronousTestCase, _StoreMixin):
    """
    Tests for L{MaildirMailbox}: listing, reading and deleting.
    """

    def setUp(self) -> None:
        self.store = self.makeStore(self)
        self.uids = [
            self.successResultOf(
                self.store.deliver("alice@example.com", _writeFile(self.spool, body), b"")
            )
            for body in (b"one\r\n", b"two!\r\n", b"three\r\n")
        ]
        self.mailbox = self.successResultOf(self.store.openMailbox("alice@example.com"))

    def listing(self) -> list[StoredMessage]:
        """
        @return: the mailbox listing.
        """
        return self.successResultOf(self.mailbox.listMessages())

    def moveToCur(self, uid: str, flags: str = "S") -> None:
        """
        Do what a reader does on seeing a message: C{new/uid -> cur/uid:2,F}.
        """
        os.rename(self.inbox() / "new" / uid, self.inbox() / "cur" / f"{uid}:2,{flags}")

    def test_listOldestFirst(self) -> None:
        """
        The listing gives uid and exact size of each message, oldest first.
        """
        self.assertEqual(
            [(m.uid, m.size) for m in self.listing()],
            list(zip(self.uids, [5, 6, 7], strict=True)),
        )

    def test_listIncludesCur(self) -> None:
        """
        Messages in C{cur/} with flags are listed under their base name.
        """
        self.moveToCur(self.uids[1], "RS")
        self.assertEqual([m.uid for m in self.listing()], self.uids)

    def test_listSortsByNameTime(self) -> None:
        """
        Order follows the time in the name, not the directory or the uid text.
        """
        cur = self.inbox() / "cur"
        (cur / "999.M1P1Q1.h,S=1:2,").write_bytes(b"a")
        (cur / "1000.M1P1Q1.h,S=1:2,").write_bytes(b"b")
        uids = [m.uid for m in self.listing()]
        self.assertEqual(uids[:2], ["999.M1P1Q1.h,S=1", "1000.M1P1Q1.h,S=1"])

    def test_internalDateFromName(self) -> None:
        """
        The internal date is the time the name carries, to the microsecond.
        """
        (self.inbox() / "new" / "1700000000.M250000P7Q1.h,S=1").write_bytes(b"a")
        first = self.listing()[0]
        self.assertEqual(first.internalDate, 1700000000.25)

    def test_foreignNamesUseStat(self) -> None:
        """
        A file whose name has no time or size is listed with stat's values.
        """
        path = self.inbox() / "cur" / "foreign:2,S"
        path.write_bytes(b"12345678")
        os.utime(path, (1000, 1000))
        first = self.listing()[0]
        self.assertEqual((first.uid, first.size, first.internalDate), ("foreign", 8, 1000))

    def test_dotFilesIgnored(self) -> None:
        """
        Hidden files in C{new/} and C{cur/} are not messages.
        """
        (self.inbox() / "new" / ".nfs0001").write_bytes(b"junk")
        self.assertEqual(len(self.listing()), 3)

    def test_read(self) -> None:
        """
        Reading gives back the exact bytes delivered.
        """
        self.assertEqual(self.successResultOf(self.mailbox.readMessage(self.uids[1])), b"two!\r\n")

    def test_readAfterMoveToCur(self) -> None:
        """
        A message moved from C{new/} to C{cur/} after the listing is still read.
        """
        self.listing()
        self.moveToCur(self.uids[0])
        self.assertEqual(self.successResultOf(self.mailbox.readMessage(self.uids[0])), b"one\r\n")

    def test_readWithoutListing(self) -> None:
        """
        A fresh mailbox can read a uid it has not listed, wherever it is.
        """
        self.moveToCur(self.uids[2], "")
        mailbox = MaildirMailbox(self.inbox(), SynchronousRunner())
        self.assertEqual(self.successResultOf(mailbox.readMessage(self.uids[2])), b"three\r\n")

    def test_readMissing(self) -> None:
        """
        Reading an unknown or deleted uid fails with L{KeyError}.
        """
        self.failureResultOf(self.mailbox.readMessage("nope"), KeyError)
        self.failureResultOf(self.mailbox.readMessage("../../x"), KeyError)
        self.listing()
        os.unlink(self.inbox() / "new" / self.uids[0])
        self.failureResultOf(self.mailbox.readMessage(self.uids[0]), KeyError)

    def test_delete(self) -> None:
        """
        Deleted messages are gone from disk and from the listing.
        """
        self.listing()
        self.moveToCur(self.uids[0])
        self.successResultOf(self.mailbox.deleteMessages(self.uids[:2]))
        self.assertEqual([m.uid for m in self.listing()], self.uids[2:])
        self.assertEqual(os.listdir(self.inbox() / "cur"), [])
        self.assertEqual(os.listdir(self.inbox() / "new"), [self.uids[2]])

    def test_deleteMissingIgnored(self) -> None:
        """
        Deleting uids that do not exist (any more) succeeds.
        """
        self.successResultOf(self.mailbox.deleteMessages(["nope", self.uids[0]]))
        self.successResultOf(self.mailbox.deleteMessages([self.uids[0]]))
        self.assertEqual(len(self.listing()), 2)

    def test_uidsStableAcrossSessions(self) -> None:
        """
        A new session sees the same uids, even after flags were set.
        """
        self.moveToCur(self.uids[0], "S")
        other = self.successResultOf(self.store.openMailbox("ALICE@example.com"))
        listing = self.successResultOf(other.listMessages())
        self.assertEqual([m.uid for m in listing], self.uids)

    def test_seesNewDeliveries(self) -> None:
        """
        An open mailbox lists messages delivered after it was opened.
        """
        self.listing()
        uid = self.successResultOf(
            self.store.deliver("alice@example.com", _writeFile(self.spool, b"4"), b"")
        )
        self.assertEqual(self.listing()[-1].uid, uid)


class ThreadedDeliveryTests(TestCase):
    """
    Tests for deliveries running at once on a real thread pool.
    """

    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp())
        self.spool = self.dataDir / "spool"
        self.spool.mkdir(parents=True)
        self.runner = BlockingRunner(IReactorFromThreads(reactor), maxThreads=16, name="test")
        self.runner.startService()
        self.addCleanup(self.runner.stopService)
        self.store = MaildirStore(mailRootOf(self.dataDir), self.runner)

    def test_concurrentDeliveriesGetUniqueNames(self) -> Deferred[None]:
        """
        Deliveries from 16 threads at once all land, each under its own name.
        """
        count = 100
        paths = [_writeFile(self.spool, b"%d\r\n" % i) for i in range(count)]
        d = gatherResults([self.store.deliver("alice@example.com", p, b"") for p in paths])

        def check(uids: list[str]) -> None:
            self.assertEqual(len(set(uids)), count)
            new = userDirectory(mailRootOf(self.dataDir), "alice@example.com") / "new"
            self.assertEqual(sorted(os.listdir(new)), sorted(uids))
            bodies = {(new / uid).read_bytes() for uid in uids}
            self.assertEqual(bodies, {b"%d\r\n" % i for i in range(count)})

        return d.addCallback(check)

    def test_readBackThroughPool(self) -> Deferred[None]:
        """
        A mailbox opened on the pool lists and reads what was delivered.
        """
        path = _writeFile(self.spool, BODY)

        async def run() -> None:
            uid = await self.store.deliver("alice@example.com", path, PREFIX)
            mailbox = await self.store.openMailbox("alice@example.com")
            listing = await mailbox.listMessages()
            self.assertEqual([(m.uid, m.size) for m in listing], [(uid, len(PREFIX + BODY))])
            self.assertEqual(await mailbox.readMessage(uid), PREFIX + BODY)

        return Deferred.fromCoroutine(run())
