"""
Tests for L{mta.store.appending} and the streamed APPEND through the IMAP
server (L{mta.imap.server}, L{mta.imap.mailboxes}): a large literal goes
to the folder's C{tmp/} as it arrives, with the transport paused while
writes are behind, and a disconnect leaves nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mta.imap.server import STREAM_APPENDS_OVER
from mta.store.appending import MessageSpool, TemporaryMessage, writeTemporary
from mta.store.imapstore import NoSuchFolder
from mta.store.maildir import folderDirectory, mailRootOf, userDirectory
from mta.testing.fakes import HeldRunner
from tests.test_imapserver import MESSAGE, USER, IMAPTestCase


class TemporaryMessageTests(SynchronousTestCase):
    """
    L{TemporaryMessage}: created, written, fsync'd, or discarded.
    """

    def setUp(self) -> None:
        self.tmp = Path(self.mktemp())
        self.tmp.mkdir()

    def test_written(self) -> None:
        """Chunks are written in order; finish checks the size and closes."""
        temporary = TemporaryMessage.create(self.tmp, 6)
        self.assertTrue(temporary.path.name.endswith(",S=6"))
        temporary.write([b"abc", b"de"])
        self.assertRaises(ValueError, temporary.finish)
        temporary.write([b"f"])
        temporary.finish()
        self.assertEqual(temporary.path.read_bytes(), b"abcdef")

    def test_discard(self) -> None:
        """Discard closes and removes the file, twice without harm."""
        temporary = TemporaryMessage.create(self.tmp, 6)
        temporary.write([b"abc"])
        temporary.discard()
        temporary.discard()
        self.assertEqual(os.listdir(self.tmp), [])

    def test_handOverFails(self) -> None:
        """A hand-over that fails removes the file; one that succeeds does not."""
        temporary = TemporaryMessage.create(self.tmp, 3)
        temporary.write([b"abc"])
        temporary.finish()

        def refuse(path: Path, size: int) -> int:
            raise OSError("no room")

        self.assertRaises(OSError, temporary.handOver, refuse)
        self.assertEqual(os.listdir(self.tmp), [])
        temporary = TemporaryMessage.create(self.tmp, 0)
        temporary.finish()
        self.assertEqual(temporary.handOver(lambda path, size: (path.name, size))[1], 0)
        self.assertEqual(len(os.listdir(self.tmp)), 1)

    def test_writeTemporaryCleansUp(self) -> None:
        """A short write leaves no file."""
        self.assertRaises(ValueError, writeTemporary, self.tmp, [b"abc"], 4)
        self.assertEqual(os.listdir(self.tmp), [])
        path = writeTemporary(self.tmp, [b"ab", b"cd"], 4)
        self.assertEqual(path.read_bytes(), b"abcd")


class MessageSpoolTests(SynchronousTestCase):
    """
    L{MessageSpool}: one write job at a time, C{behind} past the high
    water mark, abort and failures remove the file.
    """

    def setUp(self) -> None:
        self.tmp = Path(self.mktemp())
        self.tmp.mkdir()
        self.runner = HeldRunner()
        self.flow: list[bool] = []
        self.spool = MessageSpool(
            self.runner,
            lambda: TemporaryMessage.create(self.tmp, 1000),
            lambda: self.flow.append(self.spool.behind),
            highWater=250,
        )

    def test_flowControl(self) -> None:
        """
        While the file is being made and written, chunks queue; past the
        high water mark the spool is behind, and catches up as jobs end.
        One job takes everything queued.
        """
        for _ in range(3):
            self.spool.write(b"a" * 100)
        self.assertEqual((self.spool.queued, self.flow), (300, [True]))
        self.runner.runOne()  # create; the first write job takes all 300
        self.assertEqual((self.spool.queued, len(self.runner.calls)), (0, 1))
        self.assertEqual(self.flow, [True, False])
        for _ in range(7):
            self.spool.write(b"b" * 100)
        self.assertEqual(self.flow, [True, False, True])
        self.runner.runOne()
        self.assertEqual(self.flow, [True, False, True, False])
        finished = self.spool.finish()
        self.runner.runAll()
        temporary = self.successResultOf(finished)
        self.assertEqual(temporary.path.read_bytes(), b"a" * 300 + b"b" * 700)

    def test_abortMidWrite(self) -> None:
        """An abort while a write runs removes the file once it is over."""
        self.runner.runOne()
        self.spool.write(b"a" * 100)
        aborted = self.spool.abort()
        self.spool.write(b"b" * 100)
        self.assertNoResult(aborted)
        self.runner.runAll()
        self.successResultOf(aborted)
        self.assertEqual(os.listdir(self.tmp), [])

    def test_abortBeforeCreated(self) -> None:
        """An abort before the file exists removes it once it does."""
        self.spool.write(b"a" * 300)
        aborted = self.spool.abort()
        self.assertFalse(self.spool.behind)
        self.runner.runAll()
        self.successResultOf(aborted)
        self.assertEqual(os.listdir(self.tmp), [])

    def test_createFails(self) -> None:
        """A failed create: chunks are dropped, finish fails with it."""

        def refuse() -> TemporaryMessage:
            raise NoSuchFolder("Nope")

        spool = MessageSpool(self.runner, refuse, lambda: None, highWater=250)
        self.runner.runAll()
        spool.write(b"a" * 1000)
        self.assertEqual((spool.queued, spool.behind, self.runner.calls), (0, False, []))
        self.failureResultOf(spool.finish(), NoSuchFolder)

    def test_shortMessage(self) -> None:
        """finish fails, and removes the file, if the size is not right."""
        self.spool.write(b"a" * 10)
        finished = self.spool.finish()
        self.runner.runAll()
        self.failureResultOf(finished, ValueError)
        self.assertEqual(os.listdir(self.tmp), [])


BIG = MESSAGE + b"x" * (STREAM_APPENDS_OVER * 8) + b"\r\n"


class StreamedAppendTests(IMAPTestCase):
    """
    A large APPEND through the server: streamed into C{tmp/}, never held.
    """

    def setUp(self) -> None:
        super().setUp()
        self.loggedIn()

    def folder(self, name: str = "INBOX") -> Path:
        return folderDirectory(userDirectory(mailRootOf(self.dataDir), USER), name)

    def contents(self, name: str = "INBOX") -> list[list[str]]:
        return [sorted(os.listdir(self.folder(name) / sub)) for sub in ("tmp", "new", "cur")]

    def feed(self, data: bytes, piece: int = 65536) -> None:
        for start in range(0, len(data), piece):
            self.server.dataReceived(data[start : start + piece])

    def test_streamed(self) -> None:
        """
        A {n} literal past the threshold is written to tmp/ as it arrives
        and moved into cur/ before the tagged OK, with its flags.
        """
        answer = self.send(b"a APPEND Drafts (\\Seen) {%d}" % len(BIG))
        self.assertEqual(answer, b"+ Ready\r\n")
        self.transport.clear()
        self.feed(BIG[:100000])
        [partial] = self.contents("Drafts")[0]
        self.assertEqual((self.folder("Drafts") / "tmp" / partial).stat().st_size, 100000)
        self.feed(BIG[100000:] + b"\r\n")
        self.assertRegex(self.transport.value(), rb"^a OK \[APPENDUID \d+ 1\] APPEND completed")
        tmp, new, [name] = self.contents("Drafts")
        self.assertEqual((tmp, new), ([], []))
        self.assertTrue(name.endswith(":2,S"))
        self.assertEqual((self.folder("Drafts") / "cur" / name).read_bytes(), BIG)
        self.assertIn(b"(MESSAGES 1)", self.send(b"s STATUS Drafts (MESSAGES)"))

    def test_literalPlusThenNext(self) -> None:
        """A streamed {n+} APPEND pipelined with the next command."""
        self.transport.clear()
        self.feed(b"a APPEND INBOX {%d+}\r\n" % len(BIG) + BIG + b"\r\nb NOOP\r\n")
        self.assertRegex(
            self.transport.value(), rb"^a OK \[APPENDUID \d+ 1\] APPEND completed\r\nb OK"
        )
        [name] = self.contents()[2]
        self.assertEqual((self.folder() / "cur" / name).read_bytes(), BIG)

    def test_missingFolder(self) -> None:
        """A streamed APPEND to a missing folder: NO [TRYCREATE], nothing kept."""
        self.transport.clear()
        self.feed(b"a APPEND Nope {%d+}\r\n" % len(BIG) + BIG + b"\r\n")
        self.assertEqual(self.transport.value(), b"a NO [TRYCREATE] Mailbox does not exist\r\n")
        self.assertFalse(self.folder("Nope").exists())

    def test_badAfterLiteral(self) -> None:
        """Junk after the streamed message: BAD, and tmp/ is emptied."""
        self.transport.clear()
        self.feed(b"a APPEND INBOX {%d+}\r\n" % len(BIG) + BIG + b" junk\r\n")
        self.assertRegex(self.transport.value(), rb"^a BAD ")
        self.assertEqual(self.contents(), [[], [], []])

    def test_disconnectMidLiteral(self) -> None:
        """
        A disconnect mid-literal leaves nothing in tmp/, new/ or cur/, and
        no index entry.
        """
        self.feed(b"a APPEND INBOX {%d+}\r\n" % len(BIG) + BIG[:300000])
        self.assertEqual(len(self.contents()[0]), 1)
        self.server.connectionLost()
        self.assertEqual(self.contents(), [[], [], []])
        transport, server = self.connect()
        self.send(b"l LOGIN alice@example.com secret", server, transport)
        answer = self.send(b"s STATUS INBOX (MESSAGES UIDNEXT)", server, transport)
        self.assertIn(b"(MESSAGES 0 UIDNEXT 1)", answer)


class BoundedAppendTests(IMAPTestCase):
    """
    With writes that lag (a held runner), the server stops reading and
    holds no more than the spool's high water mark and one read.
    """

    def setUp(self) -> None:
        super().setUp()
        self.runner = HeldRunner()
        self.loggedIn()
        # From here on the store's blocking work waits for the test.
        self.store._runner = self.runner

    def test_bounded(self) -> None:
        """
        As a 20 MB literal arrives in 64 KB reads, the reader's buffer stays
        empty, the queue stays under 2 MB, the transport is paused while the
        writes are behind and resumed when they catch up; the message ends
        in cur/ intact.
        """
        size = 20 * 1024 * 1024
        piece = b"0123456789abcdef" * 4096
        self.server.dataReceived(b"a APPEND INBOX {%d+}\r\n" % size)
        pauses = 0
        sent = 0
        while sent < size:
            if self.transport.producerState == "paused":
                pauses += 1
                self.runner.runAll()
                self.assertEqual(self.transport.producerState, "producing")
            data = piece[: size - sent]
            self.server.dataReceived(data)
            sent += len(data)
            self.assertEqual(len(self.server.reader._buffer), 0)
            spool = self.server.appendSpool
            assert spool is not None
            self.assertLessEqual(spool.queued, 2 * 1024 * 1024)
        self.assertGreater(pauses, 5)
        self.transport.clear()
        self.server.dataReceived(b"\r\n")
        self.runner.runAll()
        self.assertRegex(self.transport.value(), rb"a OK \[APPENDUID \d+ 1\] APPEND completed")
        inbox = folderDirectory(userDirectory(mailRootOf(self.dataDir), USER), "INBOX")
        [name] = os.listdir(inbox / "cur")
        self.assertEqual(os.path.getsize(inbox / "cur" / name), size)
        with open(inbox / "cur" / name, "rb") as f:
            self.assertEqual(f.read(len(piece)), piece)
        self.assertEqual(os.listdir(inbox / "tmp"), [])
