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

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeAlias, cast

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


def needsDate(items: Sequence[FetchItem]) -> bool:
    """
    @return: whether a FETCH asks for the internal date (which the index
        may not have read yet).
    """
    return any(not isinstance(i, BodySection) and i.name == "INTERNALDATE" for i in items)


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
    @ivar flags: its flags, C{\\Recent} included, as the session reports
        them: the rendered list, e.g. C{(\\Seen $Forwarded)}.
    @ivar internalDate: POSIX time of arrival; C{None} when not read (the
        FETCH does not ask for it: see L{needsDate}).
    @ivar size: its size in octets.
    @ivar modseq: its mod-sequence.
    @ivar raw: its bytes, when an item needs them; else C{None}.
    """

    __slots__ = ("_structure", "flags", "internalDate", "modseq", "raw", "size", "uid")

    def __init__(
        self,
        uid: int,
        flags: bytes,
        internalDate: float | None,
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


#: Renders one item's value for a message.
_Renderer: TypeAlias = Callable[[MessageData], bytes]


class FetchPlan:
    """
    The items of one FETCH command, prepared once for all its messages:
    each item once, in the order asked, with its response name rendered
    and its way of rendering the value chosen, so that a message costs
    only its values.
    """

    def __init__(
        self, items: Sequence[FetchItem], withUid: bool, withModseq: bool, withFlags: bool
    ) -> None:
        """
        @param withUid: add C{UID} if not asked (UID FETCH always reports it).
        @param withModseq: add C{MODSEQ} if not asked (CONDSTORE enabled by
            CHANGEDSINCE or a MODSEQ item).
        @param withFlags: add C{FLAGS} if not asked (the FETCH set
            C{\\Seen}).
        """
        self._entries: list[tuple[bytes, _Renderer]] = []
        seen: set[str] = set()
        extra = [(withUid, "UID"), (withModseq, "MODSEQ"), (withFlags, "FLAGS")]
        for item in [*items, *(FetchAttribute(name) for wanted, name in extra if wanted)]:
            name = item.responseName() if isinstance(item, BodySection) else item.name
            if name not in seen:
                seen.add(name)
                prefix = wire.Atom(name).text.encode("ascii") + b" "
                self._entries.append((prefix, _renderer(item)))

    def render(self, number: int, message: MessageData) -> bytes:
        """
        @param number: the message's sequence number.
        @return: its C{* n FETCH (...)} response line.
        """
        values = b" ".join([prefix + value(message) for prefix, value in self._entries])
        return b"* %d FETCH (%b)\r\n" % (number, values)


def _renderer(item: FetchItem) -> _Renderer:
    """
    @return: what renders C{item}'s value for a message.
    """
    if isinstance(item, BodySection):
        spec = Section(
            item.part, item.specifier.encode("ascii"), tuple(f.encode() for f in item.fields)
        )
        partial = item.partial
        if not item.part and item.specifier in ("", "HEADER", "TEXT"):
            # The whole message, its header or its text: no MIME parsing.
            return lambda m: wire.literal(section(m.content(), spec, partial))
        return lambda m: wire.literal(section(m.content(), spec, partial, m.structure))
    return _ATTRIBUTES[item.name]


def _dated(message: MessageData) -> float:
    if message.internalDate is None:
        raise ValueError(f"the internal date of UID {message.uid} was not read")
    return message.internalDate


def _envelope(message: MessageData) -> bytes:
    return wire.encode(cast(wire.Value, envelope(message.structure)))


def _rfc822Text(message: MessageData) -> bytes:
    data = section(message.content(), Section(text=b"TEXT"), None, message.structure)
    return wire.literal(data)


#: How each FETCH attribute without a section is rendered.
_ATTRIBUTES: dict[str, _Renderer] = {
    "FLAGS": lambda m: m.flags,
    "UID": lambda m: b"%d" % (m.uid,),
    "INTERNALDATE": lambda m: wire.encode(internalDate(_dated(m))),
    "RFC822.SIZE": lambda m: b"%d" % (m.size,),
    "MODSEQ": lambda m: b"(%d)" % (m.modseq,),
    "ENVELOPE": _envelope,
    "BODY": lambda m: wire.encode(cast(wire.Value, bodyStructure(m.structure, False))),
    "BODYSTRUCTURE": lambda m: wire.encode(cast(wire.Value, bodyStructure(m.structure, True))),
    "RFC822": lambda m: wire.literal(m.content()),
    "RFC822.HEADER": lambda m: wire.literal(section(m.content(), Section(text=b"HEADER"))),
    "RFC822.TEXT": _rfc822Text,
}


__all__ = [
    "FetchPlan",
    "MessageData",
    "internalDate",
    "needsContent",
    "needsDate",
    "setsSeen",
    "toDatetime",
]
