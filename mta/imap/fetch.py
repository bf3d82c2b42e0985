# -*- test-case-name: tests.test_imapserver -*-
"""
FETCH items for one message (RFC 3501 section 6.4.5 and 7.4.2, MODSEQ of
RFC 7162): the parser's L{FetchItem}s to the name/value pairs of a
C{* n FETCH (...)} response.

Pure code.  The server reads a message's bytes only when L{needsContent}
says an item looks inside it, and renders one message at a time, so a
C{1:*} fetch never holds more than one message in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

from mta.imap import wire
from mta.imap.envelope import bodyStructure, envelope
from mta.imap.message import Part, Section, parseStructure, section
from mta.imap.query import BodySection, FetchAttribute, FetchItem

#: Attributes that need the message's bytes.
_CONTENT_ATTRIBUTES = frozenset(
    {"ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822", "RFC822.HEADER", "RFC822.TEXT"}
)


def needsContent(items: Sequence[FetchItem]) -> bool:
    """
    @return: whether any item needs the message's bytes (not just the index).
    """
    return any(isinstance(item, BodySection) or item.name in _CONTENT_ATTRIBUTES for item in items)


def setsSeen(items: Sequence[FetchItem]) -> bool:
    """
    @return: whether fetching C{items} sets C{\\Seen} (C{BODY[...]} without
        C{.PEEK}, C{RFC822}, C{RFC822.TEXT}).
    """
    for item in items:
        if isinstance(item, BodySection):
            if not item.peek:
                return True
        elif item.name in ("RFC822", "RFC822.TEXT"):
            return True
    return False


def toDatetime(timestamp: float) -> datetime:
    """
    @return: a POSIX time as an aware UTC datetime; one out of range (a
        damaged file time) is the epoch.
    """
    try:
        return datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.fromtimestamp(0, UTC)


def internalDate(timestamp: float) -> wire.Atom:
    """
    @return: the INTERNALDATE value for a POSIX time, in UTC.
    """
    return wire.Atom(wire.dateTime(toDatetime(timestamp)).decode("ascii"))


class MessageData:
    """
    What one message's FETCH may report.

    @ivar uid: its UID.
    @ivar flags: its flags, C{\\Recent} included, as the session reports them.
    @ivar internalDate: POSIX time of arrival.
    @ivar size: its size in octets.
    @ivar modseq: its mod-sequence.
    @ivar raw: its bytes, when an item needs them; else C{None}.
    """

    def __init__(
        self,
        uid: int,
        flags: Sequence[str],
        internalDate: float,
        size: int,
        modseq: int,
        raw: bytes | None = None,
    ) -> None:
        self.uid = uid
        self.flags = flags
        self.internalDate = internalDate
        self.size = size
        self.modseq = modseq
        self.raw = raw
        self._structure: Part | None = None

    @property
    def structure(self) -> Part:
        """
        The MIME structure, parsed once.
        """
        if self._structure is None:
            assert self.raw is not None
            self._structure = parseStructure(self.raw)
        return self._structure

    def content(self) -> bytes:
        """
        @return: the message's bytes (which the caller must have loaded).
        """
        assert self.raw is not None, "needsContent said no"
        return self.raw


def render(
    message: MessageData, items: Sequence[FetchItem], withUid: bool, withModseq: bool
) -> list[tuple[str, wire.Value]]:
    """
    Render the items of one message's FETCH response.

    @param withUid: add C{UID} if not asked (UID FETCH always reports it).
    @param withModseq: add C{MODSEQ} if not asked (CONDSTORE enabled by
        CHANGEDSINCE or a MODSEQ item).
    @return: C{(name, value)} pairs, each item once, in the order asked.
    """
    out: list[tuple[str, wire.Value]] = []
    seen: set[str] = set()

    def add(name: str, value: wire.Value) -> None:
        if name not in seen:
            seen.add(name)
            out.append((name, value))

    for item in items:
        if isinstance(item, BodySection):
            add(item.responseName(), wire.Literal(_section(message, item)))
        else:
            add(item.name, _attribute(message, item))
    if withUid:
        add("UID", message.uid)
    if withModseq:
        add("MODSEQ", (message.modseq,))
    return out


def _section(message: MessageData, item: BodySection) -> bytes:
    """
    The bytes of C{BODY[section]<partial>}.
    """
    spec = Section(
        item.part, item.specifier.encode("ascii"), tuple(f.encode() for f in item.fields)
    )
    simple = not item.part and item.specifier in ("", "HEADER", "TEXT")
    structure = None if simple else message.structure
    return section(message.content(), spec, item.partial, structure)


def _attribute(message: MessageData, item: FetchAttribute) -> wire.Value:
    """
    The value of a FETCH attribute without a section.
    """
    name = item.name
    if name == "FLAGS":
        return wire.Atom(wire.flagList(message.flags).decode("ascii"))
    if name == "UID":
        return message.uid
    if name == "INTERNALDATE":
        return internalDate(message.internalDate)
    if name == "RFC822.SIZE":
        return message.size
    if name == "MODSEQ":
        return (message.modseq,)
    if name == "ENVELOPE":
        return cast(wire.Value, envelope(message.structure))
    if name in ("BODY", "BODYSTRUCTURE"):
        return cast(wire.Value, bodyStructure(message.structure, name == "BODYSTRUCTURE"))
    if name == "RFC822":
        return wire.Literal(message.content())
    if name == "RFC822.HEADER":
        return wire.Literal(section(message.content(), Section(text=b"HEADER")))
    # RFC822.TEXT, the last attribute the parser knows.
    return wire.Literal(section(message.content(), Section(text=b"TEXT"), None, message.structure))


__all__ = ["MessageData", "internalDate", "needsContent", "render", "setsSeen", "toDatetime"]
