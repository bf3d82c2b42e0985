# -*- test-case-name: tests.test_indexdates -*-
"""
Tests for the internal dates of L{mta.store.index.FolderIndex}: read from
the files' mtimes when first asked for (not when the folder is indexed),
then recorded, so that they never change afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mta.store.index import FolderIndex
from mta.store.indexformat import INDEX, JOURNAL
from tests.test_index import deliver, makeMaildir


class InternalDateTests(SynchronousTestCase):
    """
    L{FolderIndex.internalDates} and what L{FolderIndex.messages} says of
    dates.
    """

    def setUp(self) -> None:
        self.folder = makeMaildir(Path(self.mktemp()))

    def index(self, folder: Path | None = None) -> FolderIndex:
        index = FolderIndex(folder or self.folder, lambda: 1_700_000_000.0)
        self.addCleanup(index.close)
        return index

    def path(self, base: str) -> Path:
        for sub in ("cur", "new"):
            for name in os.listdir(self.folder / sub):
                if name.split(":2,")[0] == base:
                    return self.folder / sub / name
        raise AssertionError(f"{base} not found")

    def touch(self, base: str, when: float) -> None:
        os.utime(self.path(base), (when, when))

    def test_readWhenAsked(self) -> None:
        """
        Indexing a folder reads no dates (the names give arrival and size);
        asking reads each file's mtime, and the messages then carry it.
        """
        first, second = deliver(self.folder, 1), deliver(self.folder, 2)
        self.touch(first, 1_500_000_000.25)
        self.touch(second, 1_400_000_000.0)
        index = self.index()
        index.sync(takeNew=True)
        self.assertEqual([m.internalDate for m in index.messages()], [None, None])
        self.assertEqual(index.internalDates([2]), {2: 1_400_000_000.0})
        self.assertEqual([m.internalDate for m in index.messages()], [None, 1_400_000_000.0])
        self.assertEqual(index.internalDates([1, 2, 99]), {1: 1_500_000_000.25, 2: 1.4e9})

    def test_keptAfterTouchAndRestart(self) -> None:
        """
        Once read, a date stays what it was though another tool touches the
        file: in the same process, after a restart (the journal), and after
        a compaction (the snapshot).
        """
        base = deliver(self.folder, 1)
        self.touch(base, 1_500_000_000.0)
        index = self.index()
        self.assertEqual(index.internalDates([1]), {1: 1.5e9})
        self.touch(base, 1_600_000_000.0)
        self.assertEqual(index.internalDates([1]), {1: 1.5e9})
        index.close()
        self.assertIn(b"\tD\t1\t1500000000.0\n", (self.folder / JOURNAL).read_bytes())
        reopened = self.index()
        self.assertEqual(reopened.messages()[0].internalDate, 1.5e9)
        self.assertEqual(reopened.internalDates([1]), {1: 1.5e9})
        reopened._compact()
        reopened.close()
        self.assertIn(b"\t1500000000.0\t", (self.folder / INDEX).read_bytes())
        self.assertEqual(self.index().internalDates([1]), {1: 1.5e9})

    def test_notReadFollowsTheFile(self) -> None:
        """
        A date nobody asked for is not recorded (the snapshot's field is
        empty): it is the file's mtime when first asked, as with Dovecot.
        """
        base = deliver(self.folder, 1)
        index = self.index()
        index.messages()
        index.close()
        self.assertIn(b"\t\t", (self.folder / INDEX).read_bytes().split(b"\n")[2])
        self.touch(base, 1_300_000_000.0)
        self.assertEqual(self.index().internalDates([1]), {1: 1.3e9})

    def test_appendDateKept(self) -> None:
        """
        A date given at APPEND is recorded at once: touching the file
        afterwards does not change it, before or after a restart.
        """
        index = self.index()
        uid = index.append(b"Subject: a\r\n\r\nhi\r\n", [], 1_200_000_000.0)
        path = index.body(uid).path
        os.utime(path, (1_600_000_000, 1_600_000_000))
        self.assertEqual(index.messages()[0].internalDate, 1.2e9)
        self.assertEqual(index.internalDates([uid]), {uid: 1.2e9})
        index.close()
        self.assertEqual(self.index().internalDates([uid]), {uid: 1.2e9})

    def test_renamedByAnotherTool(self) -> None:
        """
        A file renamed by another Maildir tool since the last sync (a
        flag change by mutt) is still found and its date read.
        """
        base = deliver(self.folder, 1)
        index = self.index()
        index.sync(takeNew=True)
        path = self.path(base)
        os.utime(path, (1_500_000_000, 1_500_000_000))
        path.rename(self.folder / "cur" / (base + ":2,S"))
        self.assertEqual(index.internalDates([1]), {1: 1.5e9})

    def test_goneLeftOut(self) -> None:
        """
        A message whose file is gone (expunged by another tool, not yet
        synced) is left out, and nothing is recorded for it.
        """
        base = deliver(self.folder, 1)
        deliver(self.folder, 2)
        index = self.index()
        index.messages()
        self.path(base).unlink()
        self.assertEqual(list(index.internalDates([1, 2])), [2])
        self.assertIsNone(index.messages()[0].internalDate)

    def test_copyAndMoveKeepTheDate(self) -> None:
        """
        A message copied or moved before its date was read has the same
        date in its new folder (the file keeps its mtime).
        """
        for n in (1, 2):
            self.touch(deliver(self.folder, n), 1_500_000_000.0 + n)
        other = self.index(makeMaildir(Path(self.mktemp())))
        index = self.index()
        copied = index.copy([1], other)
        moved = index.move([2], other)
        self.assertEqual(
            other.internalDates([copied[1], moved[2]]),
            {copied[1]: 1_500_000_001.0, moved[2]: 1_500_000_002.0},
        )
