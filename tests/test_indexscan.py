"""
Tests for L{mta.store.indexscan}: what the index reads of a Maildir's
files when it meets them.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mta.store.indexformat import MessageInfo
from mta.store.indexscan import (
    Files,
    describeFiles,
    fileDates,
    listMaildir,
    messageInfos,
    nameFacts,
    parseName,
    plainMessages,
    scanMaildir,
)


def rows(files: Files) -> list[tuple[object, ...]]:
    """
    @return: the files as sorted rows C{(arrival, base, sub, name, date,
        size, info)}.
    """
    return sorted(zip(*files, strict=True))


class NameFactsTests(SynchronousTestCase):
    """
    L{nameFacts} reads the size and arrival time a base name carries.
    """

    def test_localDelivery(self) -> None:
        """
        C{<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>}: both are there.
        """
        self.assertEqual(nameFacts("1700000000.M250000P42Q1.host,S=123"), (123, 1700000000.25))

    def test_wireSizeWins(self) -> None:
        """
        Dovecot's C{,W=} (the CRLF size) wins over C{,S=}, in either order.
        """
        self.assertEqual(nameFacts("17.M1P2.host,S=100,W=104")[0], 104)
        self.assertEqual(nameFacts("17.M1P2.host,W=104,S=100")[0], 104)

    def test_commonNamesAsParsed(self) -> None:
        """
        The one-match reading of common names gives what the field by field
        parse gives, on names that match it and names that nearly do.
        """
        names = [
            "1700000000.M250000P42Q1.host,S=123",
            "1655390418.M100238P743770.mail,S=3734,W=3800",
            "17.M1P2.host,S=100,W=104",
            "17.M1234567P2.host,S=100",
            "17.MP2.host,S=100",
            "17.M12P2.host,S=",
            "17.M12P2.host,S=1,S=2",
            "17.M12P2.host,S=1,W=2,W=3",
            "17.M12P2.host,W=2",
            "17.M12.host,S=5",
            "x17.M12P2.host,S=5",
            "17.M\u0662P2.host,S=5",
        ]
        for name in names:
            self.assertEqual(nameFacts(name), parseName(name), name)

    def test_nothingSaid(self) -> None:
        """
        A name without a leading time or a size field says neither.
        """
        self.assertEqual(nameFacts("message-one"), (None, None))
        self.assertEqual(nameFacts("abc.M1P2.host,S=x,W=,Z=9"), (None, None))

    def test_secondsOnly(self) -> None:
        """
        The microseconds count only in the C{M<digits>} form, six digits at
        most.
        """
        self.assertEqual(nameFacts("1700000000.P42.host")[1], 1700000000.0)
        self.assertEqual(nameFacts("1700000000.M1234567P1.host")[1], 1700000000.0)


class DescribeFilesTests(SynchronousTestCase):
    """
    L{describeFiles} reads a C{stat} only for a file whose name does not
    say its size and arrival time.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        for sub in ("cur", "new", "tmp"):
            (self.folder / sub).mkdir(parents=True)

    def test_facts(self) -> None:
        """
        The arrival and size come from the name when it has them, else
        from C{stat}; the internal date is the mtime when the file was
        C{stat}ed, else C{None} (not read: the name said all).
        """
        named = "1700000000.M5P1Q1.host,S=999"
        (self.folder / "new" / named).write_bytes(b"abc")
        os.utime(self.folder / "new" / named, (1_600_000_000, 1_600_000_000))
        bare = "bare:2,S"
        (self.folder / "cur" / bare).write_bytes(b"abcde")
        os.utime(self.folder / "cur" / bare, (1_500_000_000, 1_500_000_000))
        self.assertEqual(
            rows(describeFiles(self.folder, "new", [named])),
            [(1700000000.000005, named, "new", named, None, 999, None)],
        )
        self.assertEqual(
            rows(describeFiles(self.folder, "cur", [bare])),
            [(1_500_000_000.0, "bare", "cur", bare, 1_500_000_000.0, 5, "S")],
        )

    def test_namesAsNameFactsReadThem(self) -> None:
        """
        The one match over a whole listing reads each name as L{nameFacts}
        reads its base, whether the name is common or not (those are read
        one by one, with a C{stat} when they say too little).
        """
        names = [
            "1700000000.M250000P42Q1.host,S=123:2,S",
            "1655390418.M100238P743770.mail,S=3734,W=3800:2,",
            "17.M1P2.host,S=100,W=104",
            "17.M1P2.host,W=104,S=100:2,RS",
            "17.M1234567P2.host,S=100:2,S",
            "17.M12P2.host,S=1,S=2",
            "17.M12P2.host,S=1,W=2,W=3",
            "17.M12P:2.host,S=5:2,F",
            "17.M12P2.host,S=5:2,S:2,T",
            "17.M12P2.host,S=5:3,",
            "17.M\u0662P2.host,S=5",
        ]
        for name in names:
            (self.folder / "cur" / name).write_bytes(b"x")
        described = describeFiles(self.folder, "cur", names)
        expected = []
        for name in names:
            base = name.split(":2,", 1)[0]
            size, when = nameFacts(base)
            if size is not None and when is not None:
                expected.append((when, base, "cur", name, None, size))
                continue
            mtime = os.stat(self.folder / "cur" / name).st_mtime
            expected.append((mtime if when is None else when, base, "cur", name, mtime, size or 1))
        self.assertEqual([row[:6] for row in rows(described)], sorted(expected))
        infos = {name: info for name, info in zip(described.names, described.infos, strict=True)}
        for name in names:
            self.assertEqual(infos[name] or "", name.partition(":2,")[2], name)

    def test_unstorableLeftOut(self) -> None:
        """
        Dot files and names with a tab or a line end are no messages of
        the index's; a line end does not let a name's tail pass for one.
        """
        names = [".hidden", "1.M1P1.h,S=1\tx", "junk\n2.M2P2.h,S=2", "3.M3P3.h,S=3"]
        described = describeFiles(self.folder, "cur", names)
        self.assertEqual(described.names, ["3.M3P3.h,S=3"])

    def test_fileDates(self) -> None:
        """
        L{fileDates} reads each file's mtime by directory and name; a file
        or directory not there gives C{None}.
        """
        (self.folder / "cur" / "a:2,S").write_bytes(b"a")
        os.utime(self.folder / "cur" / "a:2,S", (1_500_000_000.5, 1_500_000_000.5))
        (self.folder / "new" / "b").write_bytes(b"b")
        os.utime(self.folder / "new" / "b", (1_400_000_000, 1_400_000_000))
        (self.folder / "tmp").rmdir()
        dates = fileDates(
            self.folder, [("cur", "a:2,S"), ("cur", "gone"), ("new", "b"), ("tmp", "t")]
        )
        self.assertEqual(dates, [1_500_000_000.5, None, 1_400_000_000.0, None])

    def test_goneSkipped(self) -> None:
        """
        A file gone since the scan, or a directory gone, is left out.
        """
        (self.folder / "cur" / "here").write_bytes(b"x")
        (self.folder / "tmp").rmdir()
        self.assertEqual(describeFiles(self.folder, "tmp", ["t"]).names, [])
        described = describeFiles(self.folder, "cur", ["gone", "here"])
        self.assertEqual(described.bases, ["here"])

    def test_scan(self) -> None:
        """
        L{scanMaildir} keys files by base name, skips dot files and names
        the index cannot store, and prefers C{cur/} when a file is in both.
        """
        for sub, name in [
            ("new", "a"),
            ("new", "b"),
            ("cur", "b:2,S"),
            ("cur", ".hidden"),
            ("cur", "tab\there"),
        ]:
            (self.folder / sub / name).write_bytes(b"x")
        self.assertEqual(scanMaildir(self.folder), {"a": ("new", "a"), "b": ("cur", "b:2,S")})


class MessageInfosTests(SynchronousTestCase):
    """
    L{messageInfos} makes the index's messages of described files.
    """

    def test_messages(self) -> None:
        """
        Each file gets its UID, MODSEQ 1 and the flags its info part says
        (system letters and Dovecot keyword letters); files with the same
        info part share one set.
        """
        files = Files(
            [4.0, 1.0, 2.0, 3.0], ["y", "x", "p", "q"], ["new", "cur", "cur", "new"],
            ["y", "x:2,RSb", "p:2,FS", "q:2,FS"], [None, None, 5.0, None], [40, 10, 20, 30],
            [None, "RSb", "FS", "FS"],
        )  # fmt: skip
        order = files.inOrder()
        self.assertEqual(order, [1, 2, 3, 0])
        infos = messageInfos([7, 8, 9, 12], files, order, ["$Work", "Later"])
        self.assertEqual(
            infos,
            [
                MessageInfo(7, frozenset({"\\Answered", "\\Seen", "Later"}), 1, None, 10, "x",
                            "cur", "x:2,RSb"),
                MessageInfo(8, frozenset({"\\Flagged", "\\Seen"}), 1, 5.0, 20, "p", "cur", "p:2,FS"),
                MessageInfo(9, frozenset({"\\Flagged", "\\Seen"}), 1, None, 30, "q", "new", "q:2,FS"),
                MessageInfo(12, frozenset(), 1, None, 40, "y", "new", "y"),
            ],
        )  # fmt: skip
        self.assertIs(infos[1].flags, infos[2].flags)
        self.assertIsInstance(infos[0], MessageInfo)
        empty = Files([], [], [], [], [], [], [])
        self.assertEqual(messageInfos([], empty, [], []), [])

    def test_order(self) -> None:
        """
        New UIDs go by arrival, then base name; some files only when asked.
        """
        files = Files(
            [2.0, 1.0, 2.0, 0.5], ["b", "z", "a", "c"], ["cur"] * 4, ["b", "z", "a", "c"],
            [None] * 4, [1] * 4, [None] * 4,
        )  # fmt: skip
        self.assertEqual(files.inOrder(), [3, 1, 2, 0])
        self.assertEqual(files.inOrder([0, 1, 2]), [1, 2, 0])
        self.assertEqual(files.pick([2, 0]).bases, ["a", "b"])
        self.assertEqual(files.plus(files.pick([3])).names, ["b", "z", "a", "c", "c"])

    def test_plainMessages(self) -> None:
        """
        L{plainMessages} reads a snapshot's C{P} line: UIDs in order, sizes
        and flags from the names, common or not; a name without a size is
        an error.
        """
        common, other = "9.M1P1.h,S=5:2,S", "3.M1P1.h,W=7,S=6:2,RS"
        first = MessageInfo(4, frozenset({"\\Seen"}), 1, None, 5, "9.M1P1.h,S=5", "cur", common)
        self.assertEqual(plainMessages(4, [common], []), [first])
        second = MessageInfo(
            5, frozenset({"\\Answered", "\\Seen"}), 1, None, 7, "3.M1P1.h,W=7,S=6", "cur", other
        )
        self.assertEqual(plainMessages(4, [common, other], []), [first, second])
        self.assertRaises(ValueError, plainMessages, 1, ["1.M1P1.h,S=5", "nosize"], [])

    def test_listMaildir(self) -> None:
        """
        L{listMaildir} gives the names of C{new/} and C{cur/}; a directory
        not there has none.
        """
        folder = Path(self.mktemp())
        (folder / "cur").mkdir(parents=True)
        (folder / "cur" / "a:2,S").write_bytes(b"a")
        self.assertEqual(listMaildir(folder), ([], ["a:2,S"]))
