# -*- test-case-name: tests.test_dovecot -*-
"""
Tests for L{mta.store.dovecot} and adopting a Dovecot Maildir in place.

The files are written here in Dovecot's documented formats (version 3
C{dovecot-uidlist} as Dovecot 2.x writes it, with and without extension
fields, and Courier's version 1); tests/e2e/test_dovecotadoption.py has a
real Dovecot write the Maildir.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mta.store.dovecot import parseKeywords, parseUIDList, readUIDList
from mta.store.index import FolderIndex
from tests.test_index import makeMaildir

UIDLIST = (
    "3 V1655390361 N47 Gbe88b9389940ab62f7580b00ce89bbd1\n"
    "12 :1655390418.M100238P743770.mail,S=3734,W=3800\n"
    "40 W3800 S3734 :1655390500.M2P2.mail,S=10,W=11\n"
    "45 :1655390600.M3P3.mail,S=7,W=8\n"
)
KEYWORDS = "0 $Forwarded\n1 Junk\n2 $label1\n"


class ParseTests(SynchronousTestCase):
    """
    Reading the two files.
    """

    def test_version3(self) -> None:
        """
        The v3 header gives UIDVALIDITY and UIDNEXT; each line a UID and
        base name, with extension fields skipped.
        """
        parsed = parseUIDList(UIDLIST)
        self.assertEqual((parsed.uidValidity, parsed.uidNext), (1655390361, 47))
        self.assertEqual(
            parsed.uids,
            {
                "1655390418.M100238P743770.mail,S=3734,W=3800": 12,
                "1655390500.M2P2.mail,S=10,W=11": 40,
                "1655390600.M3P3.mail,S=7,W=8": 45,
            },
        )

    def test_version1(self) -> None:
        """
        Courier's version 1 format is read too.
        """
        parsed = parseUIDList("1 1234 9\n3 1.M1P1.h\n5 2.M2P2.h:2,S\n")
        self.assertEqual((parsed.uidValidity, parsed.uidNext), (1234, 9))
        self.assertEqual(parsed.uids, {"1.M1P1.h": 3, "2.M2P2.h": 5})

    def test_uidNextAtLeastPastEveryUID(self) -> None:
        """
        A header whose N is behind a listed UID is corrected upward.
        """
        self.assertEqual(parseUIDList("3 V1 N2\n7 :a.M1P1.h\n").uidNext, 8)

    def test_unreadable(self) -> None:
        """
        A missing file or an unknown version means nothing to adopt.
        """
        folder = makeMaildir(Path(self.mktemp()))
        self.assertIsNone(readUIDList(folder))
        (folder / "dovecot-uidlist").write_text("2 V1 N1\n")
        self.assertIsNone(readUIDList(folder))

    def test_keywords(self) -> None:
        """
        Each keyword goes to its letter's index.
        """
        self.assertEqual(parseKeywords("0 $Forwarded\n2 Work\n"), ["$Forwarded", "", "Work"])


class AdoptionTests(SynchronousTestCase):
    """
    A new index takes over Dovecot's UIDs, flags and keywords.
    """

    def setUp(self) -> None:
        self.folder = makeMaildir(Path(self.mktemp()))
        (self.folder / "dovecot-uidlist").write_text(UIDLIST)
        (self.folder / "dovecot-keywords").write_text(KEYWORDS)
        cur = self.folder / "cur"
        (cur / "1655390418.M100238P743770.mail,S=3734,W=3800:2,RSa").write_bytes(b"a")
        (cur / "1655390500.M2P2.mail,S=10,W=11:2,Fbc").write_bytes(b"b")
        (self.folder / "new" / "1655390600.M3P3.mail,S=7,W=8").write_bytes(b"c")
        (self.folder / "new" / "1655390700.M4P4.mail,S=5").write_bytes(b"d")

    def test_adopted(self) -> None:
        """
        UIDVALIDITY, each UID, flags and keywords are Dovecot's; a file
        Dovecot never saw gets UIDNEXT.
        """
        index = FolderIndex(self.folder)
        self.addCleanup(index.close)
        messages = index.messages()
        self.assertEqual(index.uidValidity, 1655390361)
        self.assertEqual([m.uid for m in messages], [12, 40, 45, 47])
        self.assertEqual(
            [m.flags for m in messages],
            [
                {"\\Answered", "\\Seen", "$Forwarded"},
                {"\\Flagged", "Junk", "$label1"},
                set(),
                set(),
            ],
        )
        self.assertEqual(index.uidNext, 48)

    def test_internalDateIsMtime(self) -> None:
        """
        The internal date is the file's mtime, as Dovecot has it (an APPEND
        with a date sets the mtime, not the name): an adopted message and
        one Dovecot never saw alike, read when first asked for.  New UIDs
        still follow the names' arrival times.
        """
        cur, new = self.folder / "cur", self.folder / "new"
        os.utime(cur / "1655390418.M100238P743770.mail,S=3734,W=3800:2,RSa", (1.5e9, 1.5e9))
        os.utime(new / "1655390700.M4P4.mail,S=5", (1.4e9, 1.4e9))
        (new / "1655390800.M5P5.mail,S=5").write_bytes(b"e")
        os.utime(new / "1655390800.M5P5.mail,S=5", (1.3e9, 1.3e9))
        index = FolderIndex(self.folder)
        self.addCleanup(index.close)
        uids = {m.base.split(".")[0]: m.uid for m in index.messages()}
        read = index.internalDates(uids.values())
        dates = {time: (uid, read[uid]) for time, uid in uids.items()}
        self.assertEqual(dates["1655390418"], (12, 1.5e9))
        self.assertEqual(dates["1655390700"], (47, 1.4e9))
        self.assertEqual(dates["1655390800"], (48, 1.3e9))

    def test_keywordLettersKeptInStep(self) -> None:
        """
        Dropping an adopted keyword drops its letter from the file name.
        """
        index = FolderIndex(self.folder)
        self.addCleanup(index.close)
        index.setFlags([40], "remove", ["Junk"])
        self.assertTrue(index.body(40).path.endswith(":2,Fc"))

    def test_adoptedOnlyOnce(self) -> None:
        """
        Once our index exists, the uidlist is not read again: a damaged
        index is rebuilt under a UIDVALIDITY above Dovecot's.
        """
        index = FolderIndex(self.folder, lambda: 1000.0)
        index.messages()
        index.close()
        (self.folder / "mta-index").write_bytes(b"garbage")
        rebuilt = FolderIndex(self.folder, lambda: 1000.0)
        self.addCleanup(rebuilt.close)
        rebuilt.messages()
        self.assertGreater(rebuilt.uidValidity, 1655390361)
        self.assertEqual([m.uid for m in rebuilt.messages()], [1, 2, 3, 4])
