# -*- test-case-name: tests.test_index -*-
"""
Tests for L{mta.store.index}: UIDs, flags in file names, MODSEQ, the
journal and its crash safety, rebuilding.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mta.store.index import FolderIndex
from mta.store.indexformat import INDEX, JOURNAL, crc


def makeMaildir(root: Path) -> Path:
    """
    @return: an empty maildir under C{root}.
    """
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def deliver(folder: Path, n: int, data: bytes = b"Subject: x\r\n\r\nbody\r\n") -> str:
    """
    Put a message into C{new/} as local delivery names it.

    @return: its base name.
    """
    base = f"{1000 + n}.M{n}P1Q{n}.host,S={len(data)}"
    (folder / "new" / base).write_bytes(data)
    return base


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = makeMaildir(Path(self.mktemp()))
        self.clock = [1_700_000_000.0]

    def index(self) -> FolderIndex:
        index = FolderIndex(self.folder, lambda: self.clock[0])
        self.addCleanup(index.close)
        return index

    def files(self) -> list[str]:
        return sorted(os.listdir(self.folder / "cur") + os.listdir(self.folder / "new"))


class IndexBasicsTests(_Base):
    """
    UID assignment, reopen, flags and MODSEQ.
    """

    def test_uidsInDeliveryOrder(self) -> None:
        """
        Files get UIDs in the order of their delivery time, starting at 1.
        """
        bases = [deliver(self.folder, n) for n in (3, 1, 2)]
        index = self.index()
        self.assertEqual([m.uid for m in index.messages()], [1, 2, 3])
        self.assertEqual([m.base for m in index.messages()], sorted(bases))
        self.assertEqual(index.uidNext, 4)
        self.assertEqual(index.uidValidity, 1_700_000_000)

    def test_stableAcrossReopen(self) -> None:
        """
        A reopened index gives every message the same UID and UIDVALIDITY.
        """
        for n in range(5):
            deliver(self.folder, n)
        first = self.index()
        before = [(m.uid, m.base) for m in first.messages()]
        first.close()
        second = self.index()
        self.assertEqual([(m.uid, m.base) for m in second.messages()], before)
        self.assertEqual(second.uidValidity, first.uidValidity)

    def test_syncAddsAndExpunges(self) -> None:
        """
        A sync gives new files the next UIDs and reports gone ones.
        """
        deliver(self.folder, 1)
        index = self.index()
        os.unlink(self.folder / "new" / index.messages()[0].base)
        deliver(self.folder, 2)
        result = index.sync()
        self.assertEqual(result.added, (2,))
        self.assertEqual(result.expunged, (1,))
        self.assertEqual(index.vanishedSince(0), [(1, 1)])

    def test_uidNeverReusedAfterExpunge(self) -> None:
        """
        Expunging the newest message does not let its UID be given again,
        even after a reopen.
        """
        deliver(self.folder, 1)
        deliver(self.folder, 2)
        index = self.index()
        index.expunge([2])
        index.close()
        index = self.index()
        deliver(self.folder, 3)
        self.assertEqual(index.sync().added, (3,))

    def test_takeNewMovesToCur(self) -> None:
        """
        C{sync(takeNew=True)} moves C{new/} files into C{cur/} with C{:2,}.
        """
        base = deliver(self.folder, 1)
        index = self.index()
        index.sync(takeNew=True)
        self.assertEqual(os.listdir(self.folder / "cur"), [base + ":2,"])
        self.assertEqual(os.listdir(self.folder / "new"), [])
        self.assertEqual(index.messages()[0].uid, 1)

    def test_firstSyncMovesBeforeIndexing(self) -> None:
        """
        The first C{sync(takeNew=True)} of a folder moves the C{new/}
        files before it indexes them: the snapshot names them in C{cur/}
        (keeping info letters it does not own) and the journal holds no
        record; a reopened index agrees.
        """
        plain = deliver(self.folder, 1)
        (self.folder / "new" / "2.M2P2.host,S=3:2,PS").write_bytes(b"abc")
        index = self.index()
        self.assertEqual(index.sync(takeNew=True).added, ())
        self.assertEqual(
            sorted(os.listdir(self.folder / "cur")), [plain + ":2,", "2.M2P2.host,S=3:2,PS"]
        )
        snapshot = (self.folder / INDEX).read_text()
        self.assertIn(f"\nP\t1\t2.M2P2.host,S=3:2,PS\t{plain}:2,\n", snapshot)
        self.assertEqual((self.folder / JOURNAL).read_text().count("\n"), 1)
        index.close()
        reopened = self.index()
        self.assertFalse(reopened.sync(takeNew=True))
        self.assertEqual([m.flags for m in reopened.messages()], [{"\\Seen"}, frozenset()])

    def test_buildOneMessagePerBase(self) -> None:
        """
        A folder's first index has one message per base name: a file in
        both C{new/} and C{cur/} (another reader moving it) is the
        C{cur/} one and stays where it is, two names of one base in
        C{cur/} make one message; dot files and names with a tab are no
        messages and are not moved.
        """
        both = deliver(self.folder, 1)
        (self.folder / "cur" / (both + ":2,S")).write_bytes(b"x")
        twice = "2.M2P2.host,S=1"
        (self.folder / "cur" / (twice + ":2,S")).write_bytes(b"x")
        (self.folder / "cur" / (twice + ":2,RS")).write_bytes(b"x")
        for odd in (".hidden", "3.M3P3.host,S=1\tx"):
            (self.folder / "new" / odd).write_bytes(b"x")
        index = self.index()
        index.sync(takeNew=True)
        messages = index.messages()
        self.assertEqual([(m.uid, m.base) for m in messages], [(1, twice), (2, both)])
        self.assertEqual((messages[1].sub, messages[1].name), ("cur", both + ":2,S"))
        self.assertEqual(
            sorted(os.listdir(self.folder / "new")), [".hidden", both, "3.M3P3.host,S=1\tx"]
        )
        self.assertEqual(index.sync(takeNew=True).expunged, ())

    def test_plainSnapshot(self) -> None:
        """
        A first index whose files all say their size writes them as one
        C{P} line (UIDs in order, no A line); reopened, the index has the
        same messages; once compacted, A lines again.
        """
        (self.folder / "cur" / "5.M1P1.host,S=3,W=4:2,FSa").write_bytes(b"abc")
        (self.folder / "dovecot-keywords").write_text("0 $Work\n")
        for n in (1, 2):
            deliver(self.folder, n)
        index = self.index()
        index.sync(takeNew=True)
        before = index.messages()
        self.assertEqual([(m.uid, m.size) for m in before], [(1, 4), (2, 20), (3, 20)])
        self.assertEqual(before[0].flags, {"\\Flagged", "\\Seen", "$Work"})
        snapshot = (self.folder / INDEX).read_text()
        self.assertIn("\nP\t1\t5.M1P1.host,S=3,W=4:2,FSa\t", snapshot)
        self.assertNotIn("\nA\t", snapshot)
        index.close()
        reopened = self.index()
        self.assertEqual(reopened.messages(), before)
        self.assertEqual(reopened.uidNext, 4)
        reopened.compactAt = 0
        for i in range(4):  # until the journal outgrows the snapshot
            reopened.setFlags([2], "replace", ["\\Seen"] if i % 2 else ["\\Draft"])
        self.assertNotIn("\nP\t", (self.folder / INDEX).read_text())
        reopened.close()
        self.assertEqual([m.flags for m in self.index().messages()][1], {"\\Seen"})

    def test_notPlainWhenStated(self) -> None:
        """
        A file whose name does not say its size is C{stat}ed: that first
        index is written as A lines.
        """
        deliver(self.folder, 1)
        (self.folder / "cur" / "bare:2,S").write_bytes(b"abcde")
        index = self.index()
        index.sync(takeNew=True)
        snapshot = (self.folder / INDEX).read_text()
        self.assertNotIn("\nP\t", snapshot)
        self.assertEqual(snapshot.count("\nA\t"), 2)

    def test_flagsRenameFiles(self) -> None:
        """
        Setting flags renames the file's info part; removing them too.
        """
        base = deliver(self.folder, 1)
        index = self.index()
        changed, failed = index.setFlags([1], "add", ["\\Seen", "\\Flagged", "$Label1"])
        self.assertEqual(failed, [])
        self.assertEqual(changed[0].flags, {"\\Seen", "\\Flagged", "$Label1"})
        self.assertEqual(self.files(), [base + ":2,FS"])
        index.setFlags([1], "remove", ["\\Flagged"])
        self.assertEqual(self.files(), [base + ":2,S"])
        index.setFlags([1], "replace", ["\\Answered", "\\Deleted", "\\Draft"])
        self.assertEqual(self.files(), [base + ":2,DRT"])

    def test_messagesFollowChanges(self) -> None:
        """
        L{FolderIndex.messages} hands out the same L{MessageInfo} objects
        while nothing changes, and new ones once a flag change, a rename by
        another Maildir tool, or a journal replay changes a message.
        """
        base = deliver(self.folder, 1)
        deliver(self.folder, 2)
        index = self.index()
        first = index.messages()
        self.assertIs(index.messages()[0], first[0])
        index.setFlags([1], "add", ["\\Flagged", "$Later"])
        changed, same = index.messages()
        self.assertIs(same, first[1])
        self.assertEqual((changed.flags, changed.modseq), ({"\\Flagged", "$Later"}, 2))
        os.rename(self.folder / "cur" / (base + ":2,F"), self.folder / "cur" / (base + ":2,FS"))
        index.sync()
        self.assertEqual(index.messages()[0].flags, {"\\Flagged", "\\Seen", "$Later"})
        index.close()
        reopened = self.index().messages()
        self.assertEqual(reopened[0].flags, {"\\Flagged", "\\Seen", "$Later"})
        self.assertEqual(reopened[0].modseq, 3)

    def test_flagsFromNames(self) -> None:
        """
        Flags come from file names for new files and for files another
        Maildir tool renamed; keywords the names cannot hold are kept.
        """
        (self.folder / "cur" / "1.M1P1Q1.h:2,RS").write_bytes(b"x")
        index = self.index()
        self.assertEqual(index.messages()[0].flags, {"\\Answered", "\\Seen"})
        index.setFlags([1], "add", ["$Work"])
        os.rename(self.folder / "cur" / "1.M1P1Q1.h:2,RS", self.folder / "cur" / "1.M1P1Q1.h:2,F")
        result = index.sync()
        self.assertEqual(result.changed, (1,))
        self.assertEqual(index.messages()[0].flags, {"\\Flagged", "$Work"})

    def test_unknownInfoLettersKept(self) -> None:
        """
        A letter without IMAP meaning (P, passed) survives a flag change.
        """
        (self.folder / "cur" / "1.M1P1Q1.h:2,P").write_bytes(b"x")
        index = self.index()
        index.setFlags([1], "add", ["\\Seen"])
        self.assertEqual(self.files(), ["1.M1P1Q1.h:2,PS"])

    def test_modseqAndChangedSince(self) -> None:
        """
        Each change raises HIGHESTMODSEQ, and CHANGEDSINCE answers only
        the messages changed after the given MODSEQ.
        """
        for n in range(3):
            deliver(self.folder, n)
        index = self.index()
        start = index.highestModseq
        index.setFlags([2], "add", ["\\Seen"])
        middle = index.highestModseq
        index.setFlags([3], "add", ["\\Seen"])
        self.assertEqual([m.uid for m in index.changedSince(start)], [2, 3])
        self.assertEqual([m.uid for m in index.changedSince(middle)], [3])
        self.assertGreater(index.highestModseq, middle)

    def test_noChangeNoModseq(self) -> None:
        """
        A STORE that changes nothing leaves MODSEQ alone.
        """
        deliver(self.folder, 1)
        index = self.index()
        index.setFlags([1], "add", ["\\Seen"])
        before = index.highestModseq
        changed, _ = index.setFlags([1], "add", ["\\Seen"])
        self.assertEqual((changed, index.highestModseq), ([], before))

    def test_unchangedSince(self) -> None:
        """
        UNCHANGEDSINCE leaves messages modified later alone and reports
        their UIDs.
        """
        deliver(self.folder, 1)
        deliver(self.folder, 2)
        index = self.index()
        base = index.highestModseq
        index.setFlags([2], "add", ["\\Flagged"])
        changed, failed = index.setFlags([1, 2], "add", ["\\Seen"], unchangedSince=base)
        self.assertEqual([m.uid for m in changed], [1])
        self.assertEqual(failed, [2])

    def test_vanishedRanges(self) -> None:
        """
        Expunged UIDs are kept as ranges with their MODSEQ for QRESYNC.
        """
        for n in range(6):
            deliver(self.folder, n)
        index = self.index()
        index.expunge([1, 2])
        mark = index.highestModseq
        index.expunge([5])
        self.assertEqual(index.vanishedSince(0), [(1, 2), (5, 5)])
        self.assertEqual(index.vanishedSince(mark), [(5, 5)])
        index.expunge([4, 6])
        self.assertEqual(index.vanishedSince(0), [(1, 2), (4, 6)])

    def test_appendAndBody(self) -> None:
        """
        An appended message gets the next UID, its flags in its name, its
        internal date as mtime, and reads back byte for byte.
        """
        index = self.index()
        uid = index.append(b"Subject: a\r\n\r\nhi\r\n", ["\\Seen", "$X"], 1_600_000_000.0)
        self.assertEqual(uid, 1)
        info = index.messages()[0]
        self.assertEqual((info.flags, info.internalDate, info.size), ({"\\Seen", "$X"}, 1.6e9, 18))
        body = index.body(uid)
        self.assertEqual(body.readSync(), b"Subject: a\r\n\r\nhi\r\n")
        self.assertTrue(body.path.endswith(":2,S"))
        self.assertEqual(os.stat(body.path).st_mtime, 1.6e9)
        self.assertEqual(os.listdir(self.folder / "tmp"), [])

    def test_copyAndMove(self) -> None:
        """
        COPY keeps the source and maps UIDs; MOVE removes it from the source.
        """
        deliver(self.folder, 1)
        deliver(self.folder, 2)
        index = self.index()
        index.setFlags([2], "add", ["\\Seen", "$K"])
        other = FolderIndex(makeMaildir(Path(self.mktemp())))
        self.addCleanup(other.close)
        self.assertEqual(index.copy([2], other), {2: 1})
        self.assertEqual(index.move([1, 2], other), {1: 2, 2: 3})
        self.assertEqual(index.messages(), [])
        self.assertEqual(
            [m.flags for m in other.messages()], [{"\\Seen", "$K"}, set(), {"\\Seen", "$K"}]
        )
        self.assertEqual(other.body(2).readSync(), b"Subject: x\r\n\r\nbody\r\n")

    def test_status(self) -> None:
        """
        STATUS counts messages, unseen, size and recent (every message of
        a folder indexed for the first time), until a session claims them.
        """
        deliver(self.folder, 1)
        index = self.index()
        index.append(b"abc", ["\\Seen"])
        status = index.status()
        self.assertEqual(
            (status.messages, status.unseen, status.size, status.recent, status.uidNext),
            (2, 1, 23, 2, 3),
        )
        self.assertEqual(index.claimRecent(), [1, 2])
        self.assertEqual(index.status().recent, 0)

    def test_compaction(self) -> None:
        """
        Once the journal grows past its limit it is folded into a new
        snapshot; the state survives a reopen.
        """
        for n in range(20):
            deliver(self.folder, n)
        index = self.index()
        index.compactAt = 1000
        for i in range(30):
            index.setFlags([i % 20 + 1], "replace", ["\\Seen"] if i % 2 else [])
        self.assertLess(os.path.getsize(self.folder / JOURNAL), 2000)
        expected = index.messages()
        index.close()
        self.assertEqual(self.index().messages(), expected)


class CrashTests(_Base):
    """
    A crash at any point never reuses a UID nor loses an acknowledged
    change.
    """

    def test_tornJournalAtEveryOffset(self) -> None:
        """
        Cutting the journal at any byte after its header keeps every
        record before the cut, never reuses a UID, and keeps UIDVALIDITY.
        """
        deliver(self.folder, 1)
        index = self.index()
        index.setFlags([1], "add", ["\\Seen"])
        deliver(self.folder, 2)
        index.sync()
        index.setFlags([2], "add", ["\\Flagged"])
        validity = index.uidValidity
        index.close()
        journal = (self.folder / JOURNAL).read_bytes()
        snapshot = (self.folder / INDEX).read_bytes()
        records = journal.split(b"\n")
        # The header is written whole (temp file and rename) at creation;
        # records are appended after it, so a crash cuts only those.
        for cut in range(len(records[0]) + 1, len(journal) + 1):
            (self.folder / JOURNAL).write_bytes(journal[:cut])
            (self.folder / INDEX).write_bytes(snapshot)
            reopened = FolderIndex(self.folder)
            reopened.sync()
            messages = reopened.messages()
            self.assertEqual(reopened.uidValidity, validity, cut)
            self.assertEqual([m.uid for m in messages], [1, 2], cut)
            whole = journal[:cut].count(b"\n")
            if whole >= 2:
                self.assertIn("\\Seen", messages[0].flags)
            if whole == len(records) - 1:
                self.assertIn("\\Flagged", messages[1].flags)
            reopened.close()

    def test_damagedSnapshotRebuilds(self) -> None:
        """
        A snapshot whose checksum fails is rebuilt under a greater
        UIDVALIDITY, with flags from the file names.
        """
        deliver(self.folder, 1)
        index = self.index()
        index.setFlags([1], "add", ["\\Seen"])
        validity = index.uidValidity
        index.close()
        data = bytearray((self.folder / INDEX).read_bytes())
        data[20] ^= 1
        (self.folder / INDEX).write_bytes(bytes(data))
        rebuilt = self.index()
        rebuilt.messages()
        self.assertGreater(rebuilt.uidValidity, validity)
        self.assertEqual([(m.uid, m.flags) for m in rebuilt.messages()], [(1, {"\\Seen"})])

    def test_truncatedSnapshotRebuilds(self) -> None:
        """
        A snapshot cut anywhere is noticed and rebuilt under a new
        UIDVALIDITY.
        """
        for n in range(3):
            deliver(self.folder, n)
        index = self.index()
        index.messages()
        validity = index.uidValidity
        index.close()
        snapshot = (self.folder / INDEX).read_bytes()
        for cut in range(0, len(snapshot) - 1, 7):
            (self.folder / INDEX).write_bytes(snapshot[:cut])
            rebuilt = FolderIndex(self.folder)
            self.assertNotEqual(rebuilt.uidValidity, validity, cut)
            self.assertEqual(len(rebuilt.messages()), 3)
            rebuilt.close()
            (self.folder / JOURNAL).unlink()

    def test_missingIndexRebuildsWithNewValidity(self) -> None:
        """
        A journal without its snapshot counts as damage: new UIDVALIDITY.
        """
        deliver(self.folder, 1)
        index = self.index()
        index.messages()
        validity = index.uidValidity
        index.close()
        (self.folder / INDEX).unlink()
        rebuilt = self.index()
        rebuilt.messages()
        self.assertGreater(rebuilt.uidValidity, validity)

    def test_badRecordBeforeGoodOnesRebuilds(self) -> None:
        """
        A damaged journal record followed by good ones means rebuild.
        """
        deliver(self.folder, 1)
        index = self.index()
        index.setFlags([1], "add", ["\\Seen"])
        index.setFlags([1], "add", ["\\Flagged"])
        validity = index.uidValidity
        index.close()
        lines = (self.folder / JOURNAL).read_bytes().split(b"\n")
        lines[1] = b"00000000" + lines[1][8:]
        (self.folder / JOURNAL).write_bytes(b"\n".join(lines))
        rebuilt = self.index()
        rebuilt.messages()
        self.assertGreater(rebuilt.uidValidity, validity)

    def test_damagedPlainLineRebuilds(self) -> None:
        """
        A C{P} line naming a file whose name does not say its size (with a
        good checksum: written by something else) is damage: the folder is
        indexed again under a new UIDVALIDITY.
        """
        deliver(self.folder, 1)
        index = self.index()
        index.sync(takeNew=True)
        validity = index.uidValidity
        index.close()
        body = (self.folder / INDEX).read_bytes().rsplit(b"C\t", 1)[0]
        body = body.replace(b"P\t1\t", b"P\t1\tnosize\t")
        (self.folder / INDEX).write_bytes(body + f"C\t{crc(body)}\n".encode())
        self.clock[0] += 10
        reopened = self.index()
        self.assertEqual(len(reopened.messages()), 1)
        self.assertGreater(reopened.uidValidity, validity)

    def test_staleJournalAfterCompaction(self) -> None:
        """
        A journal of an older generation (crash between the renames of a
        compaction) is already in the snapshot and is dropped.
        """
        deliver(self.folder, 1)
        index = self.index()
        index.setFlags([1], "add", ["\\Seen"])
        old = (self.folder / JOURNAL).read_bytes()
        index._compact()
        index.setFlags([1], "add", ["\\Flagged"])
        index.close()
        (self.folder / JOURNAL).write_bytes(old)
        reopened = self.index()
        self.assertEqual(reopened.messages()[0].flags, {"\\Seen"})
        self.assertEqual(reopened.uidNext, 2)

    def test_renamedButNotJournalled(self) -> None:
        """
        A crash after a flag change's rename but before its record leaves
        the flags the file name says.
        """
        base = deliver(self.folder, 1)
        index = self.index()
        index.sync(takeNew=True)
        index.close()
        os.rename(self.folder / "cur" / (base + ":2,"), self.folder / "cur" / (base + ":2,S"))
        reopened = self.index()
        reopened.sync()
        self.assertEqual(reopened.messages()[0].flags, {"\\Seen"})


class PerformanceTests(_Base):
    """
    A big folder syncs fast once indexed.
    """

    def test_tenThousand(self) -> None:
        """
        Re-opening and syncing a 10,000-message folder takes about a tenth
        of a second on an idle machine; the bound leaves room for a CI
        machine running the whole suite in parallel, while anything
        quadratic (seconds to minutes at this size) still fails.
        """
        for n in range(10_000):
            (self.folder / "cur" / f"{1000 + n}.M{n}P1Q{n}.h,S=1:2,S").write_bytes(b"x")
        self.index().close()
        start = time.monotonic()
        index = self.index()
        result = index.sync(takeNew=True)
        elapsed = time.monotonic() - start
        self.assertFalse(result)
        self.assertEqual(len(index.messages()), 10_000)
        self.assertLess(elapsed, 3.0)
