# -*- test-case-name: tests.test_indexscan -*-
"""
Reading a Maildir folder's files for the IMAP index (L{mta.store.index}):
which files there are, and what the index records of a file it has not
seen before (its arrival time, internal date and size).

Written for the first SELECT of a big folder, when every file is new to
the index: one C{readdir} per directory, what the file name says parsed
without regular expressions, and one C{stat} per file, relative to a
descriptor of its directory (no path strings or L{Path} objects built per
file).  Dovecot needs no C{stat} on its first SELECT because it looks the
internal date up when it is first asked for; our index hands out every
message's internal date with the folder, so it reads the mtime here.

Blocking; call on a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mta.store.indexformat import INFO, flagsFromInfo

#: What the index learns of a new file: C{(arrival, base, sub, name,
#: internal date, size)}; sorted, they give the order of new UIDs.
Described = tuple[float, str, str, str, float, int]


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


def nameFacts(base: str) -> tuple[int | None, float | None]:
    """
    What a Maildir base name says of its file.

    @return: C{(size, arrival)}: the size is Dovecot's C{,W=} (the size
        with CRLF line ends, what IMAP serves, for a file stored with bare
        LF), else the C{,S=} (the file's size); the arrival is the leading
        C{<seconds>[.M<microseconds>]}.  Either is C{None} when the name
        does not say.
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


def describeFiles(folder: Path, files: Iterable[tuple[str, str, str]]) -> list[Described]:
    """
    Read what the index records of each file: its arrival time (which
    orders new UIDs) is the one in its name, else its mtime; its internal
    date is its mtime, as Dovecot and Courier have it (an APPEND with a
    date sets it); its size is the name's, else C{stat}'s.

    @param files: C{(base, sub, file name)} each.
    @return: one L{Described} per file still there, in no set order.
    """
    described: list[Described] = []
    fds: dict[str, int] = {}
    try:
        for base, sub, name in files:
            fd = fds.get(sub)
            if fd is None:
                try:
                    fd = fds[sub] = os.open(
                        folder / sub, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                    )
                except FileNotFoundError:
                    continue
            try:
                st = os.stat(name, dir_fd=fd)
            except FileNotFoundError:
                continue  # gone since the scan
            size, when = nameFacts(base)
            mtime = st.st_mtime
            described.append(
                (mtime if when is None else when, base, sub, name, mtime,
                 st.st_size if size is None else size)
            )  # fmt: skip
    finally:
        for fd in fds.values():
            os.close(fd)
    return described


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


__all__ = ["Described", "FlagsOfInfo", "describeFiles", "nameFacts", "scanMaildir"]
