# -*- test-case-name: tests.test_imapsearch -*-
"""
What IMAP SEARCH matches (RFC 3501 6.4.4, MODSEQ of RFC 7162 3.1.5).

L{matches} decides one key for one message, seen through a L{MessageView}.
Keys that need only the index (flags, dates, sizes, numbers) never read the
message; header keys read its header, C{BODY} and C{TEXT} its body.

Text keys match case-insensitively (Unicode case folding) as substrings,
after MIME decoding: header values have their RFC 2047 encoded words
decoded, and C{text/*} parts their transfer encoding (quoted-printable,
base64) and charset.  The server decodes the search string from the
command's charset, of which only UTF-8 and US-ASCII are accepted
(L{checkCharset}).

The keys are the parser's own (L{mta.imap.query}): C{ALL} is an empty
L{And}, C{NEW} is C{RECENT UNSEEN}, C{OLD} is C{NOT RECENT}, C{\\Recent}
is a flag (L{simpleKey} builds the argument-less ones).  The per-flag
entry of C{MODSEQ} is ignored, as RFC 7162 allows a server that does not
keep one mod-sequence per flag.  A sequence set's C{$} must be replaced by
the server before matching.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.utils import parsedate_tz

from mta.imap.message import Field, Part, headerFields, parseStructure
from mta.imap.query import (
    And,
    BodyKey,
    DateKey,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    Not,
    Or,
    SearchKey,
    SequenceKey,
    SizeKey,
)


class BadCharset(ValueError):
    """
    SEARCH named a charset other than UTF-8 and US-ASCII: the server answers
    C{NO [BADCHARSET (UTF-8 US-ASCII)]}.
    """


#: The charsets a SEARCH may name.
CHARSETS = frozenset({"UTF-8", "US-ASCII"})


def checkCharset(name: str) -> None:
    """
    @raise BadCharset: C{name} is not UTF-8 or US-ASCII (any case).
    """
    if name.upper() not in CHARSETS:
        raise BadCharset(name)


# -- Keys ------------------------------------------------------------------------


_SIMPLE: dict[str, SearchKey] = {
    "ALL": And(()),
    "NEW": And((FlagKey("\\Recent"), FlagKey("\\Seen", False))),
    "OLD": FlagKey("\\Recent", False),
    **{name: FlagKey("\\" + name.capitalize()) for name in ("ANSWERED", "DELETED", "DRAFT")},
    **{name: FlagKey("\\" + name.capitalize()) for name in ("FLAGGED", "RECENT", "SEEN")},
    **{
        "UN" + name: FlagKey("\\" + name.capitalize(), False)
        for name in ("ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN")
    },
}


def simpleKey(name: str) -> SearchKey:
    """
    @return: the key for an argument-less search key name (C{ALL}, C{NEW},
        C{UNSEEN}...), in any case.
    @raise KeyError: C{name} is not one.
    """
    return _SIMPLE[name.upper()]


# -- Messages --------------------------------------------------------------------


@dataclass
class MessageView:
    """
    What a search may know about one message.

    @ivar flags: system flags and keywords, as stored (C{\\Recent} is
        C{recent}, not a member).
    @ivar internalDate: an aware datetime; C{None} when not read (the
        search does not need it: see L{arrived}).
    @ivar load: returns the raw message; called at most once, and only by
        keys that look inside the message.
    """

    uid: int
    sequence: int
    flags: frozenset[str]
    internalDate: datetime | None
    size: int
    load: Callable[[], bytes]
    modseq: int = 0
    recent: bool = False
    _raw: bytes | None = field(default=None, repr=False)
    _structure: Part | None = field(default=None, repr=False)
    _fields: list[Field] | None = field(default=None, repr=False)
    _plain: Plain | None = field(default=None, repr=False)

    def raw(self) -> bytes:
        """
        @return: the message's bytes, loaded once.
        """
        if self._raw is None:
            self._raw = self.load()
        return self._raw

    def structure(self) -> Part:
        """
        @return: the message's MIME structure, parsed once.
        """
        if self._structure is None:
            self._structure = parseStructure(self.raw())
        return self._structure

    def fields(self) -> list[Field]:
        """
        @return: the top-level header fields, parsed once.
        """
        if self._fields is None:
            self._fields = headerFields(self.raw())
        return self._fields

    def plain(self) -> Plain:
        """
        @return: what the raw bytes alone prove about the message's text
            (L{Plain}), worked out once.
        """
        if self._plain is None:
            self._plain = Plain.of(self.raw())
        return self._plain


@dataclass(frozen=True)
class Context:
    """
    What C{*} stands for in sequence sets: the mailbox's last sequence
    number and its largest UID.
    """

    lastSequence: int = 0
    lastUid: int = 0


def matches(message: MessageView, key: SearchKey, context: Context | None = None) -> bool:
    """
    Say whether C{message} satisfies C{key}.

    @param context: the mailbox's last numbers, needed when a sequence set
        holds C{*}.
    """
    context = context or Context()
    if isinstance(key, And):
        return all(matches(message, each, context) for each in key.keys)
    if isinstance(key, Or):
        return matches(message, key.left, context) or matches(message, key.right, context)
    if isinstance(key, Not):
        return not matches(message, key.key, context)
    if isinstance(key, FlagKey):
        return _hasFlag(message, key.flag) == key.present
    if isinstance(key, SizeKey):
        return message.size > key.size if key.larger else message.size < key.size
    if isinstance(key, SequenceKey):
        number = message.uid if key.uid else message.sequence
        last = context.lastUid if key.uid else context.lastSequence
        return key.messages.contains(number, last)
    if isinstance(key, ModSeqKey):
        return message.modseq >= key.modseq
    if isinstance(key, DateKey):
        return _compareDay(_day(message, key.field), key.comparison, key.day)
    if isinstance(key, HeaderKey):
        if message.plain().lacks(key.value, headers=True, bodies=False):
            return False
        return _headerMatches(message.fields(), key.field, key.value)
    if message.plain().lacks(key.value, headers=key.includeHeaders, bodies=True):
        return False
    return _textMatches(message, key)


def _hasFlag(message: MessageView, flag: str) -> bool:
    if flag.lower() == "\\recent":
        return message.recent
    lowered = flag.lower()
    return any(each.lower() == lowered for each in message.flags)


def _compareDay(day: date, comparison: str, wanted: date) -> bool:
    if comparison == "BEFORE":
        return day < wanted
    if comparison == "ON":
        return day == wanted
    return day >= wanted


def _day(message: MessageView, which: str) -> date:
    if which == "SENT":
        sent = sentDate(message.fields())
        if sent is not None:
            return sent.date()
    return arrived(message).date()


def arrived(message: MessageView) -> datetime:
    """
    @return: the message's internal date, which the caller had read.
    """
    if message.internalDate is None:
        raise ValueError(f"the internal date of UID {message.uid} was not read")
    return message.internalDate


def sentDate(fields: list[Field]) -> datetime | None:
    """
    @return: the Date header as an aware datetime in its own zone, or
        C{None} when there is none that parses.
    """
    value = next((f.value for f in fields if f.name.lower() == b"date"), None)
    if value is None:
        return None
    parsed = parsedate_tz(value.decode("ascii", "replace"))
    if parsed is None:
        return None
    try:
        zone = timezone(timedelta(seconds=parsed[9] or 0))
        return datetime(*parsed[:6], tzinfo=zone)
    except (ValueError, OverflowError):
        return None


# -- Text ----------------------------------------------------------------------------


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def _headerMatches(fields: list[Field], name: str, value: str) -> bool:
    lowered = name.lower().encode("utf-8", "replace")
    needle = _fold(value)
    for each in fields:
        if each.name.lower() == lowered and needle in _fold(decodeHeader(each.value)):
            return True
    return False


def _textMatches(message: MessageView, key: BodyKey) -> bool:
    needle = _fold(key.value)
    raw = message.raw()
    top = message.structure()
    parts = top.walk()
    if key.includeHeaders:
        for each in [top, *(p.message for p in parts if p.message is not None)]:
            if needle in _fold(decodeHeader(b" ".join(f.raw for f in each.fields))):
                return True
    leaves = (p for p in parts if not p.children and p.message is None and _isText(p))
    return any(needle in _fold(decodeBody(part, raw)) for part in leaves)


def _isText(part: Part) -> bool:
    return part.mainType.lower() == b"text"


def decodeBody(part: Part, raw: bytes) -> str:
    """
    @return: a leaf part's body with its transfer encoding and charset
        decoded (bytes that do not decode become U+FFFD).
    """
    body = raw[part.bodyStart : part.bodyEnd]
    encoding = part.encoding.lower()
    try:
        if encoding == b"base64":
            body = binascii.a2b_base64(body)
        elif encoding == b"quoted-printable":
            body = binascii.a2b_qp(body)
    except (binascii.Error, ValueError):
        pass
    charset = (part.param(b"charset") or b"utf-8").decode("ascii", "replace")
    return _decode(body, charset)


def _decode(data: bytes, charset: str) -> str:
    """
    @return: C{data} decoded from C{charset}; UTF-8 for an unknown one,
        latin-1 for 8-bit bytes that are not UTF-8 in us-ascii text.
    """
    name = codecName(charset)
    if name != "utf-8":
        try:
            return data.decode(name, "replace")
        except (UnicodeError, LookupError):
            pass  # a codec without "replace" (idna) or that refuses the bytes
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


@functools.lru_cache(maxsize=256)
def codecName(charset: str) -> str:
    """
    @return: the name of the codec a part in C{charset} is decoded with:
        C{utf-8} for US-ASCII, for a name Python does not know and for a
        codec that is not a text encoding (C{zlib}, C{rot13}).
    """
    try:
        codec = codecs.lookup(charset.strip().strip('"'))
    except (LookupError, ValueError):
        return "utf-8"
    if codec.name == "ascii" or not getattr(codec, "_is_text_encoding", True):
        return "utf-8"
    return codec.name


_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"(\?=)[ \t\r\n]+(=\?)")


def decodeHeader(value: bytes) -> str:
    """
    Decode a header value's RFC 2047 encoded words; the rest is UTF-8 (or
    latin-1 when it is not).  White space between two encoded words goes.
    """
    value = _BETWEEN_WORDS.sub(rb"\1\2", value)
    out: list[str] = []
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        out.append(_decode(value[position : match.start()], "utf-8"))
        out.append(_encodedWord(match))
        position = match.end()
    out.append(_decode(value[position:], "utf-8"))
    return "".join(out)


def _encodedWord(match: re.Match[bytes]) -> str:
    charset, kind, text = match.group(1), match.group(2).upper(), match.group(3)
    charset = charset.split(b"*")[0]  # RFC 2231 language suffix
    try:
        if kind == b"B":
            data = binascii.a2b_base64(text + b"=" * (-len(text) % 4), strict_mode=True)
        else:
            data = binascii.a2b_qp(text, header=True)
    except (binascii.Error, ValueError):
        return match.group(0).decode("ascii", "replace")
    return _decode(data, charset.decode("ascii", "replace"))


# -- The pre-test on raw bytes ---------------------------------------------------------

#: Codecs that decode each ASCII byte to the same character.
ASCII_SAFE = frozenset(
    {"utf-8", "cp437", "cp850"}
    | {f"iso8859-{n}" for n in (*range(1, 12), *range(13, 17))}
    | {f"cp{n}" for n in range(1250, 1259)}
)

_CHARSET_PARAM = re.compile(rb'charset[ \t]*=[ \t]*("?)([a-z0-9._+-]+)\1(?=[ \t\r\n;]|\Z)')
_ENCODING_FIELD = re.compile(
    rb'content-transfer-encoding[ \t]*:[ \t]*([^()<>@,;:\\"/\[\]?= \t\r\n]+)'
)
_DECODED = frozenset({b"base64", b"quoted-printable"})


@dataclass(frozen=True)
class Plain:
    """
    What a message's raw bytes prove about its text without parsing it.

    When the message is ASCII (or UTF-8), no header has an encoded word
    (no C{=?} anywhere), no part is base64 or quoted-printable and every
    charset decodes ASCII (or is UTF-8) as itself, then every piece of
    text a search looks at is a run of the raw bytes decoded, and each
    word of a folded needle (no white space in it) that occurs in the
    folded text occurs in the case-folded raw message (case folding is
    one character at a time).  A word missing from the raw message then
    proves that the full, decoding search would not match.

    Any C{charset} or C{Content-Transfer-Encoding} text in the message
    that is not in the simple form recognised here makes the bodies not
    plain (the full search then decides), so a parameter the MIME parser
    would read differently can never be misjudged.

    @ivar folded: the whole message case-folded (bytes for an ASCII
        message, else text), or C{None} when it is neither ASCII nor UTF-8.
    @ivar plainHeaders: no header value has an encoded word.
    @ivar plainBodies: every C{text/*} part is searched as its raw bytes.
    """

    folded: bytes | str | None
    plainHeaders: bool
    plainBodies: bool

    @classmethod
    def of(cls, raw: bytes) -> Plain:
        """
        @return: what C{raw} proves.
        """
        folded: bytes | str
        if raw.isascii():
            folded = lowered = raw.lower()
            safe = ASCII_SAFE
        else:
            try:
                folded = raw.decode("utf-8").casefold()
            except UnicodeDecodeError:
                return cls(None, False, False)
            lowered = raw.lower()
            safe = frozenset({"utf-8"})
        return cls(folded, b"=?" not in raw, _plainBodies(lowered, safe))

    def lacks(self, value: str, headers: bool, bodies: bool) -> bool:
        """
        @param headers: whether the key searches header values.
        @param bodies: whether it searches C{text/*} bodies.
        @return: C{True} when the key's C{value} cannot match (the full
            search would say no); C{False} when only the full search can
            tell.
        """
        if self.folded is None or (headers and not self.plainHeaders):
            return False
        if bodies and not self.plainBodies:
            return False
        words = _fold(value).split(" ")
        if isinstance(self.folded, bytes):
            return any(w.encode("utf-8") not in self.folded for w in words)
        return any(w not in self.folded for w in words)


def _plainBodies(lowered: bytes, safe: frozenset[str]) -> bool:
    """
    @param lowered: the raw message, ASCII letters lowered.
    @param safe: the codecs whose text is the raw bytes decoded as-is.
    @return: whether every C{content-transfer-encoding} in the message is
        a field whose value is a plain word other than base64 and
        quoted-printable, and every C{charset} a parameter whose value is
        a plain name of one of C{safe} (anything else: C{False}).
    """
    at = lowered.find(b"content-transfer-encoding")
    while at >= 0:
        field = _ENCODING_FIELD.match(lowered, at)
        if field is None or field.group(1) in _DECODED:
            return False
        at = lowered.find(b"content-transfer-encoding", at + 1)
    at = lowered.find(b"charset")
    while at >= 0:
        param = _CHARSET_PARAM.match(lowered, at)
        if param is None or codecName(param.group(2).decode("ascii")) not in safe:
            return False
        at = lowered.find(b"charset", at + 1)
    return True


__all__ = [
    "CHARSETS",
    "And",
    "BadCharset",
    "BodyKey",
    "Context",
    "DateKey",
    "FlagKey",
    "HeaderKey",
    "MessageView",
    "ModSeqKey",
    "Not",
    "Or",
    "Plain",
    "SearchKey",
    "SequenceKey",
    "SizeKey",
    "arrived",
    "checkCharset",
    "codecName",
    "decodeBody",
    "decodeHeader",
    "matches",
    "sentDate",
    "simpleKey",
]
