# -*- test-case-name: tests.test_indexscan -*-
"""
Reading a Maildir folder's files for the IMAP index (L{mta.store.index}):
which files there are, and what the index records of a file it has not
seen before (its arrival time, internal date and size).

Written for the first SELECT of a big folder, when every file is new to
the index: one C{readdir} per directory, what the file name says parsed
without regular expressions, and a C{stat} only for a file whose name
does not say its size and arrival time.  The internal date (the file's
mtime, as Dovecot and Courier have it) is not read then: like Dovecot,
the index reads it when a client first asks for it (L{fileDates}) and
records it from then on.

Blocking; call on a worker thread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from mta.store.indexformat import INFO, flagsFromInfo

#: What the index learns of a new file: C{(arrival, base, sub, name,
#: internal date or C{None} when not read yet, size)}; sorted, they give
#: the order of new UIDs.
Described = tuple[float, str, str, str, float | None, int]


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
                    if name[0] != "." and "\t" not in name and "\n" not in name:
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


def describeFiles(folder: Path, files: Iterable[tuple[str, tuple[str, str]]]) -> list[Described]:
    """
    Read what the index records of each file: its arrival time (which
    orders new UIDs) is the one in its name, else its mtime; its size is
    the name's, else C{stat}'s.  Its internal date is its mtime when the
    file was C{stat}ed anyway, else C{None} (not read yet: see
    L{fileDates}).

    @param files: C{(base, (sub, file name))} each, as a scan's items.
    @return: one L{Described} per file still there, in no set order.
    """
    described: list[Described] = []
    unnamed: list[tuple[str, str, str, int | None, float | None]] = []
    for base, (sub, name) in files:
        size, when = nameFacts(base)
        if size is None or when is None:
            unnamed.append((base, sub, name, size, when))
        else:
            described.append((when, base, sub, name, None, size))
    if unnamed:
        with _Directories(folder) as directories:
            for base, sub, name, size, when in unnamed:
                st = directories.stat(sub, name)
                if st is None:
                    continue  # gone since the scan
                mtime = st.st_mtime
                described.append(
                    (mtime if when is None else when, base, sub, name, mtime,
                     st.st_size if size is None else size)
                )  # fmt: skip
    return described


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


class FlagsOfInfo:
    """
    L{flagsFromInfo} with a memory: a folder's files share a handful of
    info parts, and their entries then share one C{frozenset} each.
    """

    def __init__(self, letters: Sequence[str]) -> None:
        self._letters = letters
        self._known: dict[str, frozenset[str]] = {}

    def __call__(self, name: str) -> frozenset[str]:
        """
        @return: the flags a file name's info part stands for.
        """
        info = name.partition(INFO)[2]
        flags = self._known.get(info)
        if flags is None:
            flags = self._known[info] = flagsFromInfo(info, self._letters)
        return flags


__all__ = [
    "Described",
    "FlagsOfInfo",
    "describeFiles",
    "fileDates",
    "nameFacts",
    "parseName",
    "scanMaildir",
]
