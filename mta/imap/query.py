# -*- test-case-name: tests.test_imapparser -*-
"""
The arguments that ask about messages: SEARCH keys, SORT criteria and FETCH
items, parsed into frozen values for the mailbox and the message renderer.

SEARCH keys follow RFC 3501 section 6.4.4 plus C{MODSEQ} (RFC 7162 section
3.1.5); the few keys that are shorthands become what they stand for
(C{ALL} is an empty L{And}, C{NEW} is C{RECENT UNSEEN}, C{OLD} is C{NOT
RECENT}, C{SEEN} is a L{FlagKey}), so a matcher has ten shapes to know.
SORT criteria are RFC 5256 section 3 (and C{DISPLAYFROM}/C{DISPLAYTO} of
RFC 5957).  FETCH items are RFC 3501 section 6.4.5 plus C{MODSEQ}; the
macros C{ALL}, C{FAST} and C{FULL} are expanded.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from datetime import date
from typing import TypeAlias

from mta.imap.syntax import MAX_NUMBER64, Cursor, SequenceSet, UnsupportedCharset

# --- SEARCH -----------------------------------------------------------------


@dataclass(frozen=True)
class And:
    """
    Every key matches; C{And(())} (C{ALL}) matches every message.
    """

    keys: tuple[SearchKey, ...]


@dataclass(frozen=True)
class Or:
    """
    Either key matches.
    """

    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class Not:
    """
    The key does not match.
    """

    key: SearchKey


@dataclass(frozen=True)
class FlagKey:
    """
    The message has (C{present}) or lacks a flag, system (C{\\Seen}) or keyword.
    """

    flag: str
    present: bool = True


@dataclass(frozen=True)
class HeaderKey:
    """
    A header field contains C{value} (case-insensitive substring, RFC 3501).

    C{FROM}, C{TO}, C{CC}, C{BCC} and C{SUBJECT} are this with the field's
    name; an empty C{value} matches every message having the field.
    """

    field: str
    value: str


@dataclass(frozen=True)
class BodyKey:
    """
    The body (C{BODY}), or header and body (C{TEXT}), contains C{value}.
    """

    value: str
    includeHeaders: bool


@dataclass(frozen=True)
class DateKey:
    """
    A date comparison, ignoring time and zone (RFC 3501).

    @ivar field: C{"INTERNAL"} (BEFORE, ON, SINCE) or C{"SENT"} (the Date
        header: SENTBEFORE, SENTON, SENTSINCE).
    @ivar comparison: C{"BEFORE"}, C{"ON"} or C{"SINCE"}.
    """

    field: str
    comparison: str
    day: date


@dataclass(frozen=True)
class SizeKey:
    """
    The RFC822 size is larger (C{LARGER}) or smaller (C{SMALLER}) than C{size}.
    """

    larger: bool
    size: int


@dataclass(frozen=True)
class SequenceKey:
    """
    The message's sequence number (or, with C{uid}, its UID) is in the set.
    """

    messages: SequenceSet
    uid: bool


@dataclass(frozen=True)
class ModSeqKey:
    """
    The message's mod-sequence is at least C{modseq} (RFC 7162 section 3.1.5).

    @ivar entry: the flag of the optional C{"/flags/<flag>"} entry name, or C{None}.
    @ivar entryType: C{"priv"}, C{"shared"} or C{"all"}, or C{None}.
    """

    modseq: int
    entry: str | None = None
    entryType: str | None = None


SearchKey: TypeAlias = (
    And | Or | Not | FlagKey | HeaderKey | BodyKey | DateKey | SizeKey | SequenceKey | ModSeqKey
)

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "RECENT": ("\\Recent", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
    "OLD": ("\\Recent", False),
}
_HEADER_KEYS = {"BCC": "Bcc", "CC": "Cc", "FROM": "From", "SUBJECT": "Subject", "TO": "To"}
_DATE_KEYS = {
    "BEFORE": ("INTERNAL", "BEFORE"),
    "ON": ("INTERNAL", "ON"),
    "SINCE": ("INTERNAL", "SINCE"),
    "SENTBEFORE": ("SENT", "BEFORE"),
    "SENTON": ("SENT", "ON"),
    "SENTSINCE": ("SENT", "SINCE"),
}
#: The ESEARCH return options (RFC 4731) and SAVE (RFC 5182).
SEARCH_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})
#: The charsets SEARCH and SORT accept; others get C{NO [BADCHARSET]}.
SEARCH_CHARSETS = frozenset({"UTF-8", "US-ASCII"})


class _SearchParser:
    """
    Read search keys from a cursor, decoding strings from the charset given.
    """

    def __init__(self, cursor: Cursor, charset: str) -> None:
        self.cursor = cursor
        self.charset = charset

    def string(self) -> str:
        """
        Read an astring argument and decode it from the search charset.
        """
        raw = self.cursor.astring()
        if self.charset == "US-ASCII" and any(b >= 0x80 for b in raw):
            raise self.cursor.error("8-bit text in a US-ASCII search")
        return self.cursor.text(raw)

    def keys(self) -> SearchKey:
        """
        Read one or more space-separated keys to the end of the command.
        """
        keys = [self.key()]
        while not self.cursor.atEnd():
            self.cursor.sp()
            keys.append(self.key())
        return keys[0] if len(keys) == 1 else And(tuple(keys))

    def key(self) -> SearchKey:
        """
        Read one search key.
        """
        c = self.cursor
        first = c.peek()
        if first == 0x28:
            keys = []
            for _ in c.listItems():
                keys.append(self.key())
            if not keys:
                raise c.error("empty search key list")
            return keys[0] if len(keys) == 1 else And(tuple(keys))
        if first is not None and (0x30 <= first <= 0x39 or first in b"*$"):
            return SequenceKey(c.sequenceSet(), uid=False)
        name = c.keyword()
        return self.named(name)

    def named(self, name: str) -> SearchKey:
        """
        Read the arguments of the key called C{name}.
        """
        c = self.cursor
        if name == "ALL":
            return And(())
        if name in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[name]
            return FlagKey(flag, present)
        if name == "NEW":
            return And((FlagKey("\\Recent"), FlagKey("\\Seen", False)))
        if name not in ("NOT", "OR") and name not in _SIMPLE_ARGUMENTS:
            raise c.error(f"unknown search key {name[:40]}")
        c.sp()
        if name == "NOT":
            c.enter()
            key = Not(self.key())
            c.leave()
            return key
        if name == "OR":
            c.enter()
            left = self.key()
            c.sp()
            right = self.key()
            c.leave()
            return Or(left, right)
        return _SIMPLE_ARGUMENTS[name](self, name)

    def header(self, name: str) -> SearchKey:
        """
        Read the field name and text of C{HEADER}.
        """
        field = self.cursor.text(self.cursor.astring())
        self.cursor.sp()
        return HeaderKey(field, self.string())

    def namedHeader(self, name: str) -> SearchKey:
        """
        Read the text of C{FROM}, C{TO}, C{CC}, C{BCC} or C{SUBJECT}.
        """
        return HeaderKey(_HEADER_KEYS[name], self.string())

    def body(self, name: str) -> SearchKey:
        """
        Read the text of C{BODY} or C{TEXT}.
        """
        return BodyKey(self.string(), includeHeaders=name == "TEXT")

    def keyword(self, name: str) -> SearchKey:
        """
        Read the flag of C{KEYWORD} or C{UNKEYWORD}.
        """
        return FlagKey(self.cursor.atom().decode("ascii"), present=name == "KEYWORD")

    def date(self, name: str) -> SearchKey:
        """
        Read the date of a date key.
        """
        field, comparison = _DATE_KEYS[name]
        return DateKey(field, comparison, self.cursor.date())

    def size(self, name: str) -> SearchKey:
        """
        Read the number of C{LARGER} or C{SMALLER}.
        """
        return SizeKey(name == "LARGER", self.cursor.number())

    def uid(self, name: str) -> SearchKey:
        """
        Read the set of C{UID}.
        """
        return SequenceKey(self.cursor.sequenceSet(), uid=True)

    def modseq(self, name: str) -> SearchKey:
        """
        Read C{MODSEQ [entry-name entry-type] value} (RFC 7162 section 3.1.5).
        """
        c = self.cursor
        if c.peek() != 0x22:
            return ModSeqKey(c.number(MAX_NUMBER64))
        entry = c.text(c.quoted())
        if not entry.lower().startswith("/flags/") or len(entry) == 7:
            raise c.error("bad MODSEQ entry name")
        c.sp()
        entryType = c.atom().decode("ascii").lower()
        if entryType not in ("priv", "shared", "all"):
            raise c.error("bad MODSEQ entry type")
        c.sp()
        return ModSeqKey(c.number(MAX_NUMBER64), entry[7:], entryType)


_SIMPLE_ARGUMENTS = {
    "HEADER": _SearchParser.header,
    "BODY": _SearchParser.body,
    "TEXT": _SearchParser.body,
    "KEYWORD": _SearchParser.keyword,
    "UNKEYWORD": _SearchParser.keyword,
    "LARGER": _SearchParser.size,
    "SMALLER": _SearchParser.size,
    "UID": _SearchParser.uid,
    "MODSEQ": _SearchParser.modseq,
    **dict.fromkeys(_HEADER_KEYS, _SearchParser.namedHeader),
    **dict.fromkeys(_DATE_KEYS, _SearchParser.date),
}


def readCharset(cursor: Cursor) -> str:
    """
    Read a charset name for SEARCH or SORT and check that it is one we decode.

    @return: the canonical name, C{"UTF-8"} or C{"US-ASCII"}.
    @raise UnsupportedCharset: for any other charset.
    """
    raw = cursor.text(cursor.astring())
    try:
        name = codecs.lookup(raw).name
    except LookupError:
        name = raw
    charset = {"utf-8": "UTF-8", "ascii": "US-ASCII"}.get(name)
    if charset is None:
        raise UnsupportedCharset(cursor.tag, "unsupported charset")
    return charset


def readSearchKeys(cursor: Cursor, charset: str) -> SearchKey:
    """
    Read the search keys that end a SEARCH or SORT command.

    @param charset: C{"UTF-8"} or C{"US-ASCII"}, from L{readCharset}.
    @return: one key (several are wrapped in an L{And}).
    """
    return _SearchParser(cursor, charset).keys()


# --- SORT -------------------------------------------------------------------

#: The RFC 5256 sort keys, and RFC 5957's display variants.
SORT_KEYS = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)


@dataclass(frozen=True)
class SortCriterion:
    """
    One RFC 5256 sort key, possibly reversed.
    """

    key: str
    reverse: bool = False


def readSortCriteria(cursor: Cursor) -> tuple[SortCriterion, ...]:
    """
    Read a parenthesised, non-empty list of sort criteria.
    """
    criteria = []
    for _ in cursor.listItems():
        name = cursor.keyword()
        reverse = name == "REVERSE"
        if reverse:
            cursor.sp()
            name = cursor.keyword()
        if name not in SORT_KEYS:
            raise cursor.error("unknown sort key")
        criteria.append(SortCriterion(name, reverse))
    if not criteria:
        raise cursor.error("empty sort criteria")
    return tuple(criteria)


# --- FETCH ------------------------------------------------------------------

#: The FETCH attributes that take no section.
FETCH_ATTRIBUTES = frozenset(
    {
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
    }
)
_MACROS = {
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SPECIFIERS = frozenset({"", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})
_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")


@dataclass(frozen=True)
class FetchAttribute:
    """
    A FETCH item without a section, by its upper-case name (C{"RFC822.SIZE"}).
    """

    name: str


@dataclass(frozen=True)
class BodySection:
    """
    C{BODY[section]<partial>} or C{BODY.PEEK[...]}.

    @ivar peek: C{BODY.PEEK}: do not set C{\\Seen}.
    @ivar part: the part numbers (C{(1, 2)} for C{1.2}), empty for the message.
    @ivar specifier: C{""}, C{"HEADER"}, C{"HEADER.FIELDS"},
        C{"HEADER.FIELDS.NOT"}, C{"TEXT"} or C{"MIME"}.
    @ivar fields: the header field names of C{HEADER.FIELDS(.NOT)}, upper-cased.
    @ivar partial: C{(offset, length)} of C{<offset.length>}, or C{None}.
    """

    peek: bool = False
    part: tuple[int, ...] = ()
    specifier: str = ""
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None

    def section(self) -> str:
        """
        Render the section as a response names it, e.g. C{1.HEADER.FIELDS (FROM)}.
        """
        text = ".".join([str(p) for p in self.part] + ([self.specifier] if self.specifier else []))
        if self.fields:
            text += " (" + " ".join(self.fields) + ")"
        return text

    def responseName(self) -> str:
        """
        Render the item's name in a FETCH response: C{BODY[...]<origin>}, never C{.PEEK}.
        """
        name = f"BODY[{self.section()}]"
        if self.partial is not None:
            name += f"<{self.partial[0]}>"
        return name


FetchItem: TypeAlias = FetchAttribute | BodySection


def readFetchItems(cursor: Cursor) -> tuple[FetchItem, ...]:
    """
    Read a macro, one FETCH item, or a parenthesised list of them.
    """
    if cursor.peek() == 0x28:
        items: list[FetchItem] = []
        for _ in cursor.listItems():
            name = cursor.take(_NAME_CHARS, "fetch item").decode("ascii").upper()
            items.append(_fetchNamed(cursor, name))
        if not items:
            raise cursor.error("empty fetch list")
        return tuple(items)
    name = cursor.take(_NAME_CHARS, "fetch item").decode("ascii").upper()
    if name in _MACROS and cursor.peek() != 0x5B:
        return tuple(FetchAttribute(n) for n in _MACROS[name])
    return (_fetchNamed(cursor, name),)


def _fetchNamed(cursor: Cursor, name: str) -> FetchItem:
    """
    Finish reading the FETCH item whose name was just read.
    """
    if cursor.peek() != 0x5B:
        if name not in FETCH_ATTRIBUTES:
            raise cursor.error(f"unknown fetch item {name[:40]}")
        return FetchAttribute(name)
    if name not in ("BODY", "BODY.PEEK"):
        raise cursor.error("only BODY takes a section")
    cursor.skip(b"[")
    part, specifier, fields = _section(cursor)
    cursor.skip(b"]")
    partial = None
    if cursor.peek() == 0x3C:
        cursor.skip(b"<")
        offset = cursor.number()
        cursor.skip(b".")
        partial = (offset, cursor.nzNumber())
        cursor.skip(b">")
    return BodySection(name == "BODY.PEEK", part, specifier, fields, partial)


def _section(cursor: Cursor) -> tuple[tuple[int, ...], str, tuple[str, ...]]:
    """
    Read a C{section-spec}: part numbers, a specifier and its field names.
    """
    if cursor.peek() == 0x5D:
        return (), "", ()
    words = cursor.take(_NAME_CHARS, "section").decode("ascii").upper().split(".")
    part: list[int] = []
    while words and words[0].isdigit():
        number = int(words.pop(0)) if len(words[0]) <= 10 else 0
        if not 1 <= number <= 2**32 - 1:
            raise cursor.error("bad section part")
        part.append(number)
    specifier = ".".join(words)
    if specifier not in _SPECIFIERS or (specifier == "MIME" and not part):
        raise cursor.error("bad section")
    fields: list[str] = []
    if specifier.startswith("HEADER.FIELDS"):
        cursor.sp()
        for _ in cursor.listItems():
            name = cursor.text(cursor.astring())
            if not name or any(ord(ch) <= 0x20 or ord(ch) > 0x7E or ch == ":" for ch in name):
                raise cursor.error("bad header field name")
            fields.append(name.upper())
        if not fields:
            raise cursor.error("empty header field list")
    return tuple(part), specifier, tuple(fields)
