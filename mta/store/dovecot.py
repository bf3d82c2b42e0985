# -*- test-case-name: tests.test_dovecot -*-
"""
Reading a Dovecot Maildir's own bookkeeping, so that L{mta.store.index}
can adopt the folder in place: same UIDVALIDITY, same UID per message,
same keywords, and clients that knew the folder under Dovecot keep their
caches.

Two files are read, never written:

  - C{dovecot-uidlist}: a header line, then one line per message.  Version
    3 (Dovecot 1.1 and later) reads C{3 V<uidvalidity> N<uidnext>
    G<guid>} (the fields after the version in any order, others possible)
    and each message line C{<uid> [<extension fields>] :<file name>}; the
    extension fields (C{W<vsize>}, C{S<size>}, C{G<guid>}...) are skipped.
    Version 1 (Courier's format) reads C{1 <uidvalidity> <uidnext>} and
    C{<uid> <file name>}.  The file name is the Maildir base name, the part
    before C{:2,}.
  - C{dovecot-keywords}: C{<index> <keyword>} per line; in a file name's
    info part, the letter C{a} stands for keyword 0, C{b} for 1, and so on
    to C{z}.

Pure blocking file reads; callers run them on an L{IBlockingRunner}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"

#: Dovecot's keyword letters, in index order.
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class DovecotUIDList:
    """
    What a C{dovecot-uidlist} says.

    @ivar uidValidity: the folder's UIDVALIDITY.
    @ivar uidNext: the UID Dovecot would have given the next message.
    @ivar uids: Maildir base name to UID.
    """

    uidValidity: int
    uidNext: int
    uids: dict[str, int] = field(default_factory=dict)


class UIDListError(ValueError):
    """
    The C{dovecot-uidlist} cannot be understood.
    """


def _parseHeader(line: str) -> tuple[int, int]:
    """
    @return: C{(uidvalidity, uidnext)} from a version 1 or 3 header.
    @raise UIDListError: another version, or fields missing.
    """
    fields = line.split()
    if fields[:1] == ["1"] and len(fields) >= 3:
        if fields[1].isdigit() and fields[2].isdigit():
            return int(fields[1]), int(fields[2])
        raise UIDListError(f"bad version 1 header: {line!r}")
    if fields[:1] != ["3"]:
        raise UIDListError(f"unsupported dovecot-uidlist header: {line!r}")
    values = {f[0]: f[1:] for f in fields[1:] if f}
    validity, uidNext = values.get("V", ""), values.get("N", "")
    if not (validity.isdigit() and uidNext.isdigit()):
        raise UIDListError(f"dovecot-uidlist header lacks V or N: {line!r}")
    return int(validity), int(uidNext)


def _parseRecord(line: str, version1: bool) -> tuple[int, str] | None:
    """
    @return: C{(uid, base name)} of one message line, or C{None} for a
        line that names no message.
    """
    uidText, _, rest = line.partition(" ")
    if not uidText.isdigit() or not rest:
        return None
    if version1:
        name = rest.strip()
    else:
        # The file name follows the first " :"; extension fields before it
        # never contain a colon at their start.
        marker = rest.find(":") if rest.startswith(":") else rest.find(" :")
        if marker < 0:
            return None
        name = rest[marker + (1 if rest.startswith(":") else 2) :]
    base = name.split(":2,", 1)[0]
    return (int(uidText), base) if base else None


def parseUIDList(text: str) -> DovecotUIDList:
    """
    Parse the text of a C{dovecot-uidlist}.

    @raise UIDListError: the header is missing or not understood.
    """
    lines = text.split("\n")
    if not lines or not lines[0].strip():
        raise UIDListError("empty dovecot-uidlist")
    validity, uidNext = _parseHeader(lines[0])
    version1 = lines[0].split()[0] == "1"
    uids: dict[str, int] = {}
    for line in lines[1:]:
        record = _parseRecord(line.rstrip("\r"), version1)
        if record is not None:
            uid, base = record
            uids[base] = uid
            uidNext = max(uidNext, uid + 1)
    return DovecotUIDList(validity, uidNext, uids)


def parseKeywords(text: str) -> list[str]:
    """
    Parse the text of a C{dovecot-keywords}.

    @return: the keyword of each letter, C{""} where the file names none;
        at most 26 entries.
    """
    names = [""] * len(KEYWORD_LETTERS)
    for line in text.split("\n"):
        index, _, name = line.strip().partition(" ")
        if index.isdigit() and int(index) < len(names) and name.strip():
            names[int(index)] = name.strip()
    while names and not names[-1]:
        names.pop()
    return names


def readUIDList(folder: Path) -> DovecotUIDList | None:
    """
    Read C{folder}'s C{dovecot-uidlist} (blocking).

    @return: its contents, or C{None} when there is none or it cannot be
        understood (the folder is then indexed afresh).
    """
    try:
        text = (folder / UIDLIST).read_text("utf-8", "surrogateescape")
        return parseUIDList(text)
    except (FileNotFoundError, NotADirectoryError, UIDListError):
        return None


def readKeywords(folder: Path) -> list[str]:
    """
    Read C{folder}'s C{dovecot-keywords} (blocking).

    @return: see L{parseKeywords}; empty when there is no such file.
    """
    try:
        return parseKeywords((folder / KEYWORDS).read_text("utf-8", "surrogateescape"))
    except (FileNotFoundError, NotADirectoryError):
        return []


__all__ = [
    "KEYWORDS",
    "KEYWORD_LETTERS",
    "UIDLIST",
    "DovecotUIDList",
    "UIDListError",
    "parseKeywords",
    "parseUIDList",
    "readKeywords",
    "readUIDList",
]
