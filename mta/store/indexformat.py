# -*- test-case-name: tests.test_index -*-
"""
The pieces of the IMAP index (L{mta.store.index}) that are about names
and bytes rather than state: the values it answers with, how flags are
written in Maildir file names, and the helpers that read and write its
files.

Maildir names: C{<base>:2,<info>}, where the base (the part before
C{:2,}) never changes and is the POP3 UIDL, and the info holds one letter
per flag, sorted: C{D F R S T} for \\Draft \\Flagged \\Answered \\Seen
\\Deleted, C{P} (passed, no IMAP meaning: kept as found) and Dovecot's
keyword letters C{a}-C{z} (see L{mta.store.dovecot}).

On disk, two files:

  - C{mta-index}, the snapshot, written whole (temp file, fsync, rename,
    fsync of the folder)::

        mta-index<TAB>1<TAB>V<uidvalidity><TAB>N<uidnext><TAB>M<highestmodseq>
            <TAB>R<first recent uid><TAB>G<generation>
        K<TAB><keyword of letter a><TAB><keyword of b>...
        E<TAB><first uid><TAB><last uid><TAB><modseq>     (expunged ranges)
        A<TAB><uid><TAB><modseq><TAB><new|cur><TAB><file name><TAB><date>
            <TAB><size><TAB><flags, space separated>   (one per message;
            the date is empty while it has not been read from the file)
        P<TAB><first uid><TAB><file name><TAB><file name>...   (instead of
            the A lines, when a folder's first index wrote the snapshot
            and every name says its file's size: UIDs first, first + 1...,
            all in cur/, MODSEQ 1, no date read, size and flags what the
            names say; written and read column by column, see
            L{mta.store.indexscan})
        C<TAB><CRC-32 of every byte above, hex>

  - C{mta-index.log}, the journal: a header C{mta-journal<TAB>1<TAB>G<n><TAB>V<uidvalidity>}
    then one record per line, C{<CRC-32 hex><TAB><record>}, where a record
    is an C{A} line as above, C{F<TAB>uid<TAB>modseq<TAB>sub<TAB>name<TAB>
    flags} (flags or file name changed), C{X<TAB>modseq<TAB>uid,uid...}
    (expunged), C{R<TAB>uid} (first recent UID) or C{D<TAB>uid<TAB>date}
    (an internal date read from the file).  It is replayed on the
    snapshot of the same generation; a journal of an older generation is
    already in the snapshot (a crash between the two renames of a
    compaction) and is dropped.

Blocking helpers; call them on a worker thread.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
import zlib
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from mta.fileutil import fsyncDirectory, writeAll
from mta.store.dovecot import KEYWORD_LETTERS
from mta.store.maildir import _hostPart

INDEX = "mta-index"
JOURNAL = "mta-index.log"

#: IMAP system flag to Maildir info letter.
FLAG_LETTERS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
_LETTER_FLAGS = {letter: flag for flag, letter in FLAG_LETTERS.items()}
INFO = ":2,"
FILE_MODE = 0o600

#: How a flag change applies: replace the flags, add to them, remove from them.
FlagMode = Literal["replace", "add", "remove"]


class IndexDamaged(Exception):
    """
    The index files cannot be trusted; the folder is re-indexed.
    """


class MessageInfo(NamedTuple):
    """
    One message as the index knows it, at one instant: the index keeps
    one per message and replaces it when the message changes, so the
    sessions that select the folder share them (a named tuple: a SELECT
    hands out every one, and a big folder's first SELECT makes them all).

    @ivar uid: its IMAP UID.
    @ivar flags: system flags (C{\\Seen}...) and keywords.
    @ivar modseq: its RFC 7162 modification sequence.
    @ivar internalDate: POSIX time of delivery; C{None} while the index
        has not read it yet (L{mta.store.index.FolderIndex.internalDates}
        reads it).
    @ivar size: exact size in octets.
    @ivar base: its Maildir base name (the POP3 UIDL).
    @ivar sub: where its file is, C{cur} or C{new}.
    @ivar name: its file's name (C{base}, then C{:2,} and the info).
    """

    uid: int
    flags: frozenset[str]
    modseq: int
    internalDate: float | None
    size: int
    base: str
    sub: str = "cur"
    name: str = ""


@dataclass(frozen=True)
class SyncResult:
    """
    What changed in one operation on a folder.

    @ivar added: UIDs of new messages, ascending.
    @ivar expunged: UIDs gone, ascending.
    @ivar changed: UIDs whose flags changed.
    @ivar highestModseq: the folder's HIGHESTMODSEQ afterwards.
    """

    added: tuple[int, ...] = ()
    expunged: tuple[int, ...] = ()
    changed: tuple[int, ...] = ()
    highestModseq: int = 0

    def __bool__(self) -> bool:
        return bool(self.added or self.expunged or self.changed)


@dataclass(frozen=True)
class FolderStatus:
    """
    The counts IMAP STATUS reports.
    """

    messages: int
    recent: int
    uidNext: int
    uidValidity: int
    unseen: int
    highestModseq: int
    size: int


class ExpungedRanges:
    """
    The UIDs a folder has expunged, as ranges C{[first, last, modseq]},
    remembered for QRESYNC.

    Ranges merge whenever no live message lies between them (the merged
    range keeps the higher MODSEQ: a client may then hear of an old
    expunge again, which RFC 7162 allows), so the list never outgrows the
    folder.  Merging is lazy: a journal replay expunges many times, and
    merging each time would cost a pass over the folder.
    """

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []  # by first once merged
        self._merged = True

    def add(self, first: int, last: int, modseq: int) -> None:
        self.ranges.append([first, last, modseq])
        self._merged = False

    def merge(self, live: Sequence[int]) -> list[list[int]]:
        """
        @param live: the folder's UIDs, ascending.
        @return: the merged ranges.
        """
        if self._merged:
            return self.ranges
        merged: list[list[int]] = []
        for r in sorted(self.ranges):
            if merged:
                last = merged[-1]
                between = bisect.bisect_right(live, last[1]) == bisect.bisect_left(live, r[0])
                if r[0] <= last[1] + 1 or between:
                    last[1] = max(last[1], r[1])
                    last[2] = max(last[2], r[2])
                    continue
            merged.append(list(r))
        self.ranges = merged
        self._merged = True
        return merged


#: A message's line in the snapshot (and its C{A} record in the journal).
_ENTRY_LINE = "A\t%d\t%d\t%s\t%s\t%s\t%d\t%s"


def entryLines(messages: Collection[MessageInfo]) -> Iterator[str]:
    """
    The snapshot's lines for C{messages}: C{A} lines (see the module
    docstring).

    Written column by column, with each column's per-message work in C
    (C{zip}, C{map}, one C{%} format per line): the first SELECT of a big
    folder writes a line for every message.
    """
    if not messages:
        return iter(())
    uids, flags, modseqs, dates, sizes, _, subs, names = zip(*messages, strict=True)
    flagTexts = {f: " ".join(sorted(f)) for f in set(flags)}
    dateTexts = ["" if date is None else repr(date) for date in dates]
    flagColumn = map(flagTexts.__getitem__, flags)
    columns = zip(uids, modseqs, subs, names, dateTexts, sizes, flagColumn, strict=True)
    return map(_ENTRY_LINE.__mod__, columns)


def combineFlags(old: frozenset[str], mode: FlagMode, flags: frozenset[str]) -> frozenset[str]:
    """
    @return: a message's flags after a STORE of C{flags} in C{mode}.
    """
    if mode == "add":
        return old | flags
    if mode == "remove":
        return old - flags
    return flags


def headerValidity(data: bytes | None) -> int:
    """
    @return: the UIDVALIDITY a (maybe damaged) snapshot or journal names
        in its first line, or 0.
    """
    if data:
        for field in data.split(b"\n", 1)[0].split(b"\t"):
            if field[:1] == b"V" and field[1:].isdigit():
                return int(field[1:])
    return 0


def crc(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


def uidRanges(uids: Iterable[int]) -> str:
    """
    @return: C{uids} as an IMAP-style set, C{1:3,7}.
    """
    parts: list[str] = []
    ordered = sorted(uids)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parseRanges(text: str) -> list[int]:
    uids: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition(":")
        uids.extend(range(int(first), int(last or first) + 1))
    return uids


def flagsFromInfo(info: str, letters: Sequence[str]) -> frozenset[str]:
    """
    @param letters: the keyword of each lower-case letter.
    @return: the flags a Maildir info part (after C{:2,}) stands for.
    """
    flags = {_LETTER_FLAGS[c] for c in info if c in _LETTER_FLAGS}
    for c in info:
        i = KEYWORD_LETTERS.find(c)
        if 0 <= i < len(letters) and letters[i]:
            flags.add(letters[i])
    return frozenset(flags)


def flagsAfterRename(entry: MessageInfo, name: str, letters: Sequence[str]) -> frozenset[str]:
    """
    @return: an entry's flags once its file is called C{name} (renamed by
        another Maildir tool): system flags and lettered keywords from the
        name, other keywords kept.
    """
    if entry.sub == "new" and INFO not in name:
        return entry.flags
    fromName = flagsFromInfo(name.partition(INFO)[2], letters)
    lettered = set(letters)
    kept = {f for f in entry.flags if not f.startswith("\\") and f not in lettered}
    return fromName | kept


def infoFor(flags: frozenset[str], oldInfo: str, letters: Sequence[str]) -> str:
    """
    @return: the info part for C{flags}, keeping letters we do not own
        (such as C{P}, passed) from C{oldInfo}.
    """
    owned = set(FLAG_LETTERS.values()) | set(KEYWORD_LETTERS[: len(letters)])
    chars = {c for c in oldInfo if c not in owned and c.isalpha()}
    chars |= {FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS}
    chars |= {KEYWORD_LETTERS[i] for i, k in enumerate(letters) if k and k in flags}
    return "".join(sorted(chars))


def fsyncFile(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writeDurably(path: Path, data: bytes) -> None:
    """
    Replace C{path} with C{data} atomically and durably.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        writeAll(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsyncDirectory(path.parent)


_uniqueCounter = iter(range(1, 1 << 62))
_uniqueLock = threading.Lock()


def uniqueBase(size: int) -> str:
    """
    @return: a fresh Maildir base name for a message of C{size} octets,
        C{<sec>.M<usec>P<pid>A<n>.<host>,S=<size>} (C{A}: made by the
        index, so it never meets the names local delivery makes).
    """
    with _uniqueLock:
        count = next(_uniqueCounter)
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return f"{seconds}.M{nanos // 1000}P{os.getpid()}A{count}.{_hostPart()},S={size}"


__all__ = [
    "FILE_MODE",
    "FLAG_LETTERS",
    "INDEX",
    "INFO",
    "JOURNAL",
    "ExpungedRanges",
    "FlagMode",
    "FolderStatus",
    "IndexDamaged",
    "MessageInfo",
    "SyncResult",
    "combineFlags",
    "crc",
    "entryLines",
    "flagsAfterRename",
    "flagsFromInfo",
    "fsyncFile",
    "headerValidity",
    "infoFor",
    "parseRanges",
    "uidRanges",
    "uniqueBase",
    "writeDurably",
]
