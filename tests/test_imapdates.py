# -*- test-case-name: tests.test_imapdates -*-
"""
Tests for internal dates in the IMAP commands: the index reads them only
when a FETCH, SEARCH or SORT needs them (see L{mta.store.index}).
"""

from __future__ import annotations

import os

from mta.store.maildir import folderDirectory, mailRootOf, userDirectory
from tests.test_imapserver import USER, IMAPTestCase

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


class LazyInternalDateTests(IMAPTestCase):
    """
    FETCH INTERNALDATE, SEARCH by date and SORT on messages whose dates
    the index has not read when the folder is selected.
    """

    def setUp(self) -> None:
        super().setUp()
        inbox = folderDirectory(userDirectory(mailRootOf(self.dataDir), USER), "INBOX")
        mtimes = (1_500_000_000, 1_300_000_000, 1_400_000_000)
        self.paths = []
        for n, when in enumerate(mtimes, 1):
            # Named as local delivery does: size and arrival in the name.
            path = inbox / "new" / f"{1_700_000_000 + n}.M{n}P1Q{n}.host,S={len(MESSAGE)}"
            path.write_bytes(MESSAGE)
            os.utime(path, (when, when))
            self.paths.append(path)
        self.selectInbox()
        index = next(iter(self.store._folders.values())).index
        self.assertEqual([m.internalDate for m in index.messages()], [None, None, None])

    def test_fetch(self) -> None:
        """FETCH INTERNALDATE reports each file's mtime, and keeps it though the file is touched."""
        answer = self.send(b"f FETCH 1:* (INTERNALDATE)")
        self.assertIn(b'* 1 FETCH (INTERNALDATE "14-Jul-2017 02:40:00 +0000")', answer)
        self.assertIn(b'* 2 FETCH (INTERNALDATE "13-Mar-2011 07:06:40 +0000")', answer)
        self.assertIn(b'* 3 FETCH (INTERNALDATE "13-May-2014 16:53:20 +0000")', answer)
        for path in self.folderFiles():
            os.utime(path, (1_000_000_000, 1_000_000_000))
        self.assertEqual(self.send(b"f FETCH 1:* (INTERNALDATE)"), answer)

    def test_searchAndSort(self) -> None:
        """SEARCH SINCE/BEFORE and SORT (ARRIVAL) compare the files' mtimes."""
        self.assertIn(b"* SEARCH 3\r\n", self.send(b"s SEARCH SINCE 1-Jan-2012 BEFORE 1-Jan-2015"))
        self.assertIn(b"* SORT 2 3 1\r\n", self.send(b"s SORT (ARRIVAL) UTF-8 ALL"))

    def test_goneBeforeAsked(self) -> None:
        """A message whose file another tool removed is left out of FETCH INTERNALDATE and SEARCH by date."""
        [gone] = [p for p in self.folderFiles() if p.name.startswith(self.paths[1].name)]
        os.unlink(gone.path)
        answer = self.send(b"f FETCH 1:* (UID INTERNALDATE)")
        self.assertIn(b"* 1 FETCH (UID 1 INTERNALDATE", answer)
        self.assertIn(b"* 3 FETCH (UID 3 INTERNALDATE", answer)
        self.assertNotIn(b"* 2 FETCH", answer)
        self.assertIn(b"f OK", answer)
        self.assertIn(b"* SEARCH 1 3\r\n", self.send(b"s SEARCH SINCE 1-Jan-2000"))

    def folderFiles(self) -> list[os.DirEntry[str]]:
        inbox = self.paths[0].parent.parent
        return [e for sub in ("cur", "new") for e in os.scandir(inbox / sub)]
