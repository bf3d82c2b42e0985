"""
Tests for L{mta.store.janitor}: crash leftovers in the Maildirs' C{tmp/}.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mta.store import janitor
from mta.store.janitor import INTERVAL, MAX_AGE, TmpCleaner, removeStaleTemporaries
from mta.store.maildir import createUserFolders, folderDirectory, mailRootOf, userDirectory
from mta.threads import SynchronousRunner


def _file(path: Path, age: float, now: float) -> Path:
    """
    Write C{path} and date its mtime (and so, roughly, its ctime: the
    test runs now) C{age} seconds before C{now}.
    """
    path.write_bytes(b"partial")
    os.utime(path, (now - age, now - age))
    return path


class RemoveStaleTemporariesTests(SynchronousTestCase):
    """
    L{removeStaleTemporaries}.
    """

    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp())
        createUserFolders(self.dataDir, "alice@example.com")
        self.root = mailRootOf(self.dataDir)
        self.inbox = userDirectory(self.root, "alice@example.com")

    def test_onlyOldFilesInTmp(self) -> None:
        """
        A file in INBOX's or a folder's C{tmp/} untouched for 36 hours
        goes; a younger one, and anything in C{new/} or C{cur/}, stay.
        """
        # ctime cannot be set back: the cut-off is measured from a "now"
        # far enough ahead that ctime (the test's start) is old too.
        now = os.stat(self.inbox).st_ctime + MAX_AGE + 60
        sent = folderDirectory(self.inbox, "Sent")
        old = [
            _file(self.inbox / "tmp" / "1.old", MAX_AGE + 1, now),
            _file(sent / "tmp" / "2.old", MAX_AGE * 3, now),
        ]
        kept = [
            _file(self.inbox / "new" / "3.old", MAX_AGE * 3, now),
            _file(sent / "cur" / "4.old:2,S", MAX_AGE * 3, now),
        ]
        removed = removeStaleTemporaries(self.root, now)
        self.assertEqual(sorted(removed), sorted(str(p) for p in old))
        self.assertEqual([p.exists() for p in old + kept], [False, False, True, True])

    def test_recentFileKept(self) -> None:
        """A file written now (the ctime is recent) is an APPEND or delivery under way."""
        now = os.stat(self.inbox).st_ctime + 1
        young = _file(self.inbox / "tmp" / "5.young", MAX_AGE * 2, now)
        self.assertEqual(removeStaleTemporaries(self.root, now), [])
        self.assertTrue(young.exists())

    def test_directoriesAndLinksLeft(self) -> None:
        """Only regular files are removed; an empty or missing mail root is fine."""
        now = os.stat(self.inbox).st_ctime + MAX_AGE * 2
        (self.inbox / "tmp" / "subdir").mkdir()
        (self.inbox / "tmp" / "link").symlink_to("/etc/hostname")
        self.assertEqual(removeStaleTemporaries(self.root, now), [])
        self.assertEqual(removeStaleTemporaries(Path(self.mktemp()), now), [])


class TmpCleanerTests(SynchronousTestCase):
    """
    L{TmpCleaner}: a sweep at start-up and every L{INTERVAL}.
    """

    def test_sweepsAtStartAndEveryInterval(self) -> None:
        dataDir = Path(self.mktemp())
        createUserFolders(dataDir, "alice@example.com")
        inbox = userDirectory(mailRootOf(dataDir), "alice@example.com")
        clock = Clock()
        clock.advance(os.stat(inbox).st_ctime + MAX_AGE + 60)
        first = _file(inbox / "tmp" / "1.old", MAX_AGE + 1, clock.seconds())
        cleaner = TmpCleaner(mailRootOf(dataDir), SynchronousRunner(), clock)
        cleaner.startService()
        self.assertFalse(first.exists())
        second = _file(inbox / "tmp" / "2.old", MAX_AGE + 1, clock.seconds())
        clock.advance(INTERVAL - 1)
        self.assertTrue(second.exists())
        clock.advance(1)
        self.assertFalse(second.exists())
        self.assertIsNone(cleaner.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_failureLoggedAndRetried(self) -> None:
        """A sweep that breaks is logged; the next one runs all the same."""
        clock = Clock()
        cleaner = TmpCleaner(Path(self.mktemp()), SynchronousRunner(), clock)
        calls = []

        def broken(root: Path, now: float) -> list[str]:
            calls.append(now)
            raise OSError("disk gone")

        self.patch(janitor, "removeStaleTemporaries", broken)
        cleaner.startService()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        clock.advance(INTERVAL)
        self.assertEqual(len(calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        cleaner.stopService()
