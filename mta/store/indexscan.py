# -*- test-case-name: tests.test_indexscan -*-
"""
Reading a Maildir folder's files for the IMAP index (L{mta.store.index}):
which files there are, and what the index records of a file it has not
seen before (its arrival time, internal date and size).

Written for the first SELECT of a big folder, when every file is new to
the index: one C{readdir} per directory, the common names read with one
regular expression match over the whole listing and turned into the
index's messages column by column (C{zip}, C{map}: the work per file is
done in C), and a C{stat} only for a file whose name does not say its
size and arrival time.  The internal date (the file's
mtime, as Dovecot and Courier have it) is not read then: like Dovecot,
the index reads it when a client first asks for it (L{fileDates}) and
records it from then on.

Blocking; call on a worker thread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import add, truediv
from pathlib import Path
from typing import Any, NamedTuple, cast

from mta.store.indexformat import INFO, MessageInfo, flagsFromInfo


def storable(name: str) -> bool:
    """
    @return: whether a file in C{new/} or C{cur/} is a message the index
        can record: not a dot file, no tab or line end in its name.
    """
    return name[0] != "." and "\t" not in name and "\n" not in name


def scanMaildir(folder: Path) -> dict[str, tuple[str, str]]:
    """
    @return: base name to C{(sub, file name)} for every message file;
        C{cur/} wins over C{new/} while another reader moves a file.
    """
    found: dict[str, tuple[str, str]] = {}
    for sub in ("new", "cur"):
        try:
            with os.scandir(folder / sub) as entries:
                for entry in entries:
                    name = entry.name
                    if name[0] != "." and "\t" not in name and "\n" not in name:  # storable
                        found[name.split(INFO, 1)[0]] = (sub, name)
        except FileNotFoundError:
            continue
    return found


#: The names local delivery and Dovecot give, C{<seconds>.M<microseconds>
#: P<pid>...,S=<size>[,W=<size>]}: one match instead of L{nameFacts}'s
#: general parse, which gives the same answer (the first SELECT of a big
#: folder reads every name).
_COMMON_NAME = re.compile(r"([0-9]+)\.M([0-9]{1,6})P[^,]*,S=([0-9]+)(?:,W=([0-9]+))?")


def nameFacts(base: str) -> tuple[int | None, float | None]:
    """
    What a Maildir base name says of its file.

    @return: C{(size, arrival)}: the size is Dovecot's C{,W=} (the size
        with CRLF line ends, what IMAP serves, for a file stored with bare
        LF), else the C{,S=} (the file's size); the arrival is the leading
        C{<seconds>[.M<microseconds>]}.  Either is C{None} when the name
        does not say.
    """
    common = _COMMON_NAME.fullmatch(base)
    if common is not None:
        seconds, micros, stored, wireSize = common.groups()
        return int(stored if wireSize is None else wireSize), float(seconds) + int(micros) / 1e6
    return parseName(base)


def parseName(base: str) -> tuple[int | None, float | None]:
    """
    L{nameFacts} for any name: field by field.
    """
    head, _, rest = base.partition(".")
    when: float | None = None
    if head.isdigit():
        when = float(head)
        if rest[:1] == "M":
            digits = rest[1:].partition("P")[0]
            if digits.isdigit() and len(digits) <= 6:
                when += int(digits) / 1e6
    size: int | None = None
    if "," in base:
        wire: int | None = None
        for field in base.split(",")[1:]:
            key, value = field[:2], field[2:]
            if key == "S=" and value.isdigit():
                size = int(value)
            elif key == "W=" and value.isdigit() and wire is None:
                wire = int(value)
        if wire is not None:
            size = wire
    return size, when


class _Directories:
    """
    Descriptors of a folder's C{new/} and C{cur/}, opened once each, so a
    file is C{stat}ed by name with no path built.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._fds: dict[str, int] = {}

    def stat(self, sub: str, name: str) -> os.stat_result | None:
        """
        @return: the file's C{stat}, or C{None} if it (or its directory)
            is not there.
        """
        fd = self._fds.get(sub)
        try:
            if fd is None:
                fd = self._fds[sub] = os.open(
                    self._folder / sub, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                )
            return os.stat(name, dir_fd=fd)
        except FileNotFoundError:
            return None

    def __enter__(self) -> _Directories:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def listMaildir(folder: Path) -> tuple[list[str], list[str]]:
    """
    @return: the names in C{new/} and in C{cur/}, as C{readdir} gives
        them (a directory not there has none).
    """
    listed: list[list[str]] = []
    for sub in ("new", "cur"):
        try:
            listed.append(os.listdir(folder / sub))
        except FileNotFoundError:
            listed.append([])
    return listed[0], listed[1]


class Files(NamedTuple):
    """
    What the index learns of files it has not seen before, column by
    column: file C{i} is C{names[i]} in C{subs[i]}, and so on.

    @ivar arrivals: the arrival times (which order new UIDs).
    @ivar bases: the base names.
    @ivar subs: C{new} or C{cur}.
    @ivar names: the file names.
    @ivar dates: the internal dates, C{None} when not read yet.
    @ivar sizes: the sizes.
    @ivar infos: the info parts (after C{:2,}), C{None} when there is none.
    """

    arrivals: list[float]
    bases: list[str]
    subs: list[str]
    names: list[str]
    dates: list[float | None]
    sizes: list[int]
    infos: list[str | None]

    def plus(self, other: Files) -> Files:
        """
        @return: these files, then C{other}'s.
        """
        mine: tuple[Any, ...] = self  # columns of different types
        theirs: tuple[Any, ...] = other
        return Files(*(a + b for a, b in zip(mine, theirs, strict=True)))

    def pick(self, indices: Iterable[int]) -> Files:
        """
        @return: the files at C{indices}, in their order.
        """
        chosen = list(indices)
        columns: tuple[Any, ...] = self
        return Files(*(list(map(column.__getitem__, chosen)) for column in columns))

    def inOrder(self, indices: Sequence[int] | None = None) -> list[int]:
        """
        @return: the indices of files (all, or those of C{indices}) in the
            order of new UIDs: by arrival, then base name.
        """
        chosen = range(len(self.names)) if indices is None else indices
        order = sorted(chosen, key=self.arrivals.__getitem__)
        if len(set(map(self.arrivals.__getitem__, order))) < len(order):
            order.sort(key=lambda i: (self.arrivals[i], self.bases[i]))  # rare: equal times
        return order


#: No files.
NO_FILES = Files([], [], [], [], [], [], [])

#: L{_COMMON_NAME} and the info part, for a listing's lines (one name a
#: line): L{re.split} on it gives for each name that matches C{(base,
#: seconds, microseconds, size, info or None)} (the size C{,W=}'s if
#: there, else C{,S=}'s), and between two of them the lines that do not
#: match.  No C{:} in the base (the first C{:2,} ends it), no tab or
#: line end anywhere.
_COMMON_LINES = re.compile(
    r"(?:^|\n)(([0-9]+)\.M([0-9]{1,6})P[^,:\t\n]*,S=(?:[0-9]+,W=)?([0-9]+))"
    r"(?::2,([^\t\n]*))?(?=\n|$)"
)


def describeFiles(folder: Path, sub: str, names: Sequence[str]) -> Files:
    """
    Read what the index records of each file of C{sub}: its arrival time
    (which orders new UIDs) is the one in its name, else its mtime; its
    size is the name's, else C{stat}'s.  Its internal date is its mtime
    when the file was C{stat}ed anyway, else C{None} (not read yet: see
    L{fileDates}).  Dot files and names the index cannot store (a tab or
    line end in them) are left out.

    The common names (L{_COMMON_LINES}) are read all at once, one split
    of the whole listing, and made into columns in C (slices, C{map}): a
    big folder's first SELECT reads every name.

    @param names: file names in C{folder/sub}, each once.
    @return: the files still there, in no set order.
    """
    files, others = _readCommon(sub, names)
    return files.plus(_describeOthers(folder, sub, others)) if others else files


def _readCommon(sub: str, names: Sequence[str]) -> tuple[Files, set[str]]:
    """
    L{describeFiles} for the common names, without I/O.

    @return: the common names' files, in the order of C{names}, and the
        other names.
    """
    listing = "\n".join(names)
    if listing.count("\n") >= len(names):
        names = [name for name in names if "\n" not in name]
        listing = "\n".join(names)
    parts = _COMMON_LINES.split(listing)
    bases, seconds, micros, sizes, infos = (parts[i::6] for i in range(1, 6))
    if len(bases) < len(names):
        others = {n for between in parts[::6] if between for n in between.split("\n") if n}
        common = [name for name in names if name not in others]
    else:
        others, common = set(), list(names)
    # float(seconds) + int(micros) / 1e6, as nameFacts reads them.
    arrivals = map(add, map(float, seconds), map(truediv, map(int, micros), repeat(1e6)))
    files = Files(
        list(arrivals), bases, [sub] * len(bases), common, [None] * len(bases),
        list(map(int, sizes)), infos,
    )  # fmt: skip
    return files, others


def _describeOthers(folder: Path, sub: str, names: Iterable[str]) -> Files:
    """
    L{describeFiles} for the names that are not common: by L{nameFacts},
    and C{stat} when the name does not say enough.
    """
    described: list[tuple[float, str, str, str, float | None, int, str | None]] = []
    unnamed: list[tuple[str, str, int | None, float | None]] = []
    for name in names:
        if not storable(name):
            continue
        base, _, info = name.partition(INFO)
        size, when = nameFacts(base)
        if size is None or when is None:
            unnamed.append((base, name, size, when))
        else:
            described.append((when, base, sub, name, None, size, info))
    if unnamed:
        with _Directories(folder) as directories:
            for base, name, size, when in unnamed:
                st = directories.stat(sub, name)
                if st is None:
                    continue  # gone since the scan
                mtime = st.st_mtime
                described.append(
                    (mtime if when is None else when, base, sub, name, mtime,
                     st.st_size if size is None else size, name.partition(INFO)[2])
                )  # fmt: skip
    if not described:
        return NO_FILES
    columns: Iterable[Any] = map(list, zip(*described, strict=True))
    return Files(*columns)


def describeFolder(folder: Path, takeNew: bool) -> Files:
    """
    L{describeFiles} for every message file of a folder the index has
    not seen before (its first index), one per base name: C{cur/} wins
    over C{new/} while another reader moves a file.

    @param takeNew: move the C{new/} files to C{cur/} first (L{moveNew}).
    """
    newNames, curNames = listMaildir(folder)
    files = describeFiles(folder, "cur", curNames)
    inCur = set(files.bases)
    if len(inCur) < len(files.bases):  # two names of one base: keep one
        files = files.pick(dict(zip(files.bases, range(len(files.bases)), strict=True)).values())
    newNames = [n for n in newNames if storable(n) and n.split(INFO, 1)[0] not in inCur]
    if takeNew:
        moved, newNames = moveNew(folder, newNames)
        files = files.plus(describeFiles(folder, "cur", moved))
    return files.plus(describeFiles(folder, "new", newNames))


def moveNew(
    folder: Path, names: Iterable[str], infoOf: Callable[[str, str], str] | None = None
) -> tuple[list[str], list[str]]:
    """
    Move C{new/} files to C{cur/} (no fsync: a move lost in a crash only
    leaves the file in C{new/}, under the same base name).

    @param infoOf: the info part a file gets in C{cur/}, given its base
        name and its info part now; by default the one it has.
    @return: C{(moved, stayed)}: the names of the files moved, in C{cur/}
        now, and of those left (gone meanwhile: another reader moved them).
    """
    moved: list[str] = []
    stayed: list[str] = []
    new, cur = os.fspath(folder / "new"), os.fspath(folder / "cur")
    for name in names:
        base, _, info = name.partition(INFO)
        target = base + INFO + (info if infoOf is None else infoOf(base, info))
        try:
            os.rename(f"{new}/{name}", f"{cur}/{target}")
        except FileNotFoundError:
            stayed.append(name)
        else:
            moved.append(target)
    return moved, stayed


def fileDates(folder: Path, files: Iterable[tuple[str, str]]) -> list[float | None]:
    """
    @param files: C{(sub, file name)} each.
    @return: each file's mtime (its internal date), or C{None} for one
        that is not there (expunged, or renamed by another Maildir tool).
    """
    with _Directories(folder) as directories:
        return [
            None if (st := directories.stat(sub, name)) is None else st.st_mtime
            for sub, name in files
        ]


def messageInfos(
    uids: Iterable[int], files: Files, order: Sequence[int], letters: Sequence[str]
) -> list[MessageInfo]:
    """
    The index's messages for files it meets: file C{order[i]} gets
    C{uids[i]} and MODSEQ 1; its flags are what its name's info part
    says (each distinct info part read once, and its messages share one
    C{frozenset}).

    Made column by column in C, as L{describeFiles} reads the names.
    """
    flagsOf = {info: flagsFromInfo(info or "", letters) for info in set(files.infos)}
    chosen = files.pick(order)
    columns = zip(
        uids, map(flagsOf.__getitem__, chosen.infos), repeat(1), chosen.dates, chosen.sizes,
        chosen.bases, chosen.subs, chosen.names,
    )  # fmt: skip
    # tuple.__new__ straight from C: MessageInfo(...) would run the named
    # tuple's __new__, a Python function, once per message.
    return cast("list[MessageInfo]", list(map(tuple.__new__, repeat(MessageInfo), columns)))


def plainMessages(first: int, names: list[str], letters: Sequence[str]) -> list[MessageInfo]:
    """
    The messages of a snapshot's C{P} line (see L{mta.store.indexformat}):
    UIDs from C{first} on, in C{cur/}, MODSEQ 1, no internal date read,
    their sizes and flags what their names say.  Read as a first index
    reads the names.

    @raise ValueError: a name does not say its size.
    """
    files, others = _readCommon("cur", names)
    if not others:
        return messageInfos(range(first, first + len(names)), files, range(len(names)), letters)
    plain: list[MessageInfo] = []
    for uid, name in enumerate(names, first):
        base, _, info = name.partition(INFO)
        size = nameFacts(base)[0]
        if size is None:
            raise ValueError(f"no size in {name!r}")
        plain.append(
            MessageInfo(uid, flagsFromInfo(info, letters), 1, None, size, base, "cur", name)
        )
    return plain


__all__ = [
    "NO_FILES",
    "Files",
    "describeFiles",
    "describeFolder",
    "fileDates",
    "listMaildir",
    "messageInfos",
    "moveNew",
    "nameFacts",
    "parseName",
    "plainMessages",
    "scanMaildir",
    "storable",
]
