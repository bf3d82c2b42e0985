# -*- test-case-name: tests.test_imapparser -*-
"""
The lexical layer of the IMAP command parser: pure functions over bytes.

A L{Cursor} walks one complete command as the framing of
L{mta.imap.parser.CommandReader} delivered it (line segments, each but the
last ending in a literal marker, and the literals between them) and reads
the RFC 3501 section 9 primitives: atoms, quoted strings, literals,
astrings, numbers, parenthesised lists (with bounded nesting), sequence
sets, dates and mailbox names (modified UTF-7, RFC 3501 section 5.1.3).
Every refusal is a L{CommandError} carrying the command's tag, which the
server answers with C{<tag> BAD <message>}.

Nothing here knows about connections or mailboxes; the per-command shapes
live in L{mta.imap.commands} and L{mta.imap.query}.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

#: The largest value of C{number} and C{nz-number} (RFC 3501 section 9).
MAX_NUMBER = 2**32 - 1
#: The largest C{mod-sequence-value} (RFC 7162 section 7).
MAX_NUMBER64 = 2**63 - 1

# atom-specials: "(" ")" "{" SP CTL list-wildcards quoted-specials resp-specials.
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')
#: Bytes allowed in an atom (RFC 3501 ATOM-CHAR): printable ASCII less the specials.
ATOM_CHARS = frozenset(c for c in range(0x21, 0x7F) if c not in _ATOM_SPECIALS)
#: ASTRING-CHAR: an atom character or "]".
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
#: list-char: what a LIST pattern may hold unquoted.
LIST_CHARS = ASTRING_CHARS | {ord("%"), ord("*")}
_SEQUENCE_CHARS = frozenset(b"0123456789:,*$")
_LITERAL_MARKER = re.compile(rb"\{([0-9]+)(\+?)\}\Z")
_SEQUENCE_SET = re.compile(
    rb"(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?(?:,(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?)*"
)
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([-+])([0-9]{2})([0-9]{2})"
)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBERS = {name.upper().encode(): i + 1 for i, name in enumerate(MONTHS)}


class CommandError(Exception):
    """
    A command refused by the parser: the server answers
    C{<tag> <status> [<code>] <message>} and, if C{closeConnection}, closes.

    Most refusals are syntax errors (C{BAD}, no code, connection kept);
    L{mta.imap.parser} adds the size refusals.

    @ivar tag: the command's tag, or C{"*"} when not even a tag could be read.
    @ivar message: a short human-readable reason, safe to echo (ASCII, no CR/LF).
    @ivar status: C{"BAD"} or C{"NO"}.
    @ivar code: the response code's text without brackets (C{"TOOBIG"}), or C{None}.
    @ivar closeConnection: whether the session cannot go on (the stream is
        out of step and must be closed after the reply).
    """

    status = "BAD"
    code: str | None = None
    closeConnection = False

    def __init__(self, tag: str, message: str) -> None:
        super().__init__(tag, message)
        self.tag = tag
        self.message = message


class UnsupportedCharset(CommandError):
    """
    SEARCH or SORT named a charset the parser cannot decode: C{NO [BADCHARSET (...)]}.
    """

    status = "NO"
    code = "BADCHARSET (UTF-8 US-ASCII)"


def literalMarker(segment: bytes) -> tuple[int, bool] | None:
    """
    Find the literal marker ending a line, if any.

    @param segment: a command line without its CRLF.
    @return: C{(size, synchronising)} for a line ending in C{{n}} or
        C{{n+}}, else C{None}.
    """
    match = _LITERAL_MARKER.search(segment)
    if match is None:
        return None
    digits = match.group(1)
    # Any count is a literal, so that the bytes after it are never taken
    # for commands; an absurd one is simply too big.
    size = int(digits) if len(digits) <= 20 else 2**64
    return size, match.group(2) == b""


@dataclass(frozen=True)
class SequenceSet:
    """
    An IMAP C{sequence-set} (RFC 3501 section 9) or the saved result C{$}.

    @ivar ranges: C{(first, last)} pairs as written, C{None} standing for C{*}.
    @ivar saved: C{True} for C{$}, the result saved by C{SEARCH RETURN (SAVE)}
        (RFC 5182); C{ranges} is then empty and the server substitutes it.
    """

    ranges: tuple[tuple[int | None, int | None], ...]
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """
        Turn the set into sorted, merged, inclusive ranges.

        C{*} means C{largest} (the number of messages or the largest UID);
        C{4:2} is C{2:4}.  An empty mailbox gives no ranges.

        @param largest: the value of C{*}.
        @return: disjoint ascending C{(low, high)} pairs.
        @raise ValueError: for the saved set C{$}, which only the server can resolve.
        """
        if self.saved:
            raise ValueError("$ must be resolved by the server")
        spans = []
        for first, last in self.ranges:
            a = largest if first is None else first
            b = largest if last is None else last
            low, high = min(a, b), max(a, b)
            if high >= 1:
                spans.append((max(low, 1), high))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return merged

    def contains(self, number: int, largest: int) -> bool:
        """
        Say whether C{number} is in the set when C{*} is C{largest}.

        @param number: a message sequence number or UID.
        @param largest: the value of C{*}.
        """
        return any(low <= number <= high for low, high in self.resolve(largest))

    def numbers(self, largest: int) -> Iterator[int]:
        """
        Iterate over the set's members in ascending order, each once.

        @param largest: the value of C{*}.
        """
        for low, high in self.resolve(largest):
            yield from range(low, high + 1)


def parseSequenceSet(text: bytes) -> SequenceSet:
    """
    Parse a C{sequence-set} or C{$}.

    @param text: the token, e.g. C{b"1:*,7"}.
    @raise ValueError: if it is not one, or a number is 0 or too large.
    """
    if text == b"$":
        return SequenceSet((), saved=True)
    if _SEQUENCE_SET.fullmatch(text) is None:
        raise ValueError("bad sequence set")
    ranges = []
    for item in text.split(b","):
        first, _, last = item.partition(b":")
        a = _seqNumber(first)
        ranges.append((a, _seqNumber(last) if last else a))
    return SequenceSet(tuple(ranges))


def _seqNumber(text: bytes) -> int | None:
    """
    Parse one C{seq-number}: a non-zero number or C{*} (C{None}).
    """
    if text == b"*":
        return None
    value = int(text)
    if not 1 <= value <= MAX_NUMBER:
        raise ValueError("sequence number out of range")
    return value


def decodeMailboxName(raw: bytes) -> str:
    """
    Decode a mailbox name as sent by a client.

    Names with 8-bit bytes are taken as UTF-8 (RFC 9051, RFC 6855); others
    as modified UTF-7 (RFC 3501 section 5.1.3).  C{INBOX} in any case is
    C{"INBOX"}.

    @param raw: the mailbox astring's bytes.
    @raise ValueError: if the name is neither valid UTF-8 nor valid modified UTF-7.
    """
    name = raw.decode("utf-8") if any(b >= 128 for b in raw) else decodeModifiedUTF7(raw)
    if name.upper() == "INBOX":
        return "INBOX"
    return name


def decodeModifiedUTF7(raw: bytes) -> str:
    """
    Decode modified UTF-7 (RFC 3501 section 5.1.3), strictly.

    Refused: 8-bit bytes, an unterminated C{&} shift, bad base64, an odd
    number of UTF-16 bytes, unpaired surrogates, non-zero padding bits, and
    printable ASCII written in base64 (which would give one name two
    spellings).

    @param raw: ASCII bytes.
    @raise ValueError: if C{raw} is not canonical modified UTF-7.
    """
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c >= 0x80:
            raise ValueError("8-bit byte in modified UTF-7")
        if c != 0x26:  # "&"
            out.append(chr(c))
            i += 1
            continue
        end = raw.find(b"-", i + 1)
        if end < 0:
            raise ValueError("unterminated & shift")
        if end == i + 1:
            out.append("&")
        else:
            out.append(_decodeShift(raw[i + 1 : end]))
        i = end + 1
    return "".join(out)


def _decodeShift(chunk: bytes) -> str:
    """
    Decode the modified base64 between C{&} and C{-}.
    """
    if len(chunk) % 4 == 1 or any(
        not (0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or 0x30 <= b <= 0x39 or b in b"+,")
        for b in chunk
    ):
        raise ValueError("bad modified base64")
    padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
    try:
        data = binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error as e:
        raise ValueError("bad modified base64") from e
    if len(data) % 2 or binascii.b2a_base64(data, newline=False).rstrip(b"=") != chunk.replace(
        b",", b"/"
    ):
        raise ValueError("bad modified base64")
    text = data.decode("utf-16-be")  # raises UnicodeDecodeError (a ValueError) on lone surrogates
    if any(0x20 <= ord(ch) <= 0x7E for ch in text):
        raise ValueError("printable ASCII in a modified base64 shift")
    return text


def parseDate(text: bytes) -> date:
    """
    Parse an RFC 3501 C{date-text} such as C{1-Feb-1994}.

    @raise ValueError: if it is not one or names no real day.
    """
    match = _DATE.fullmatch(text)
    if match is None:
        raise ValueError("bad date")
    month = _MONTH_NUMBERS.get(match.group(2).upper())
    if month is None:
        raise ValueError("bad month")
    return date(int(match.group(3)), month, int(match.group(1)))


def parseDateTime(text: bytes) -> datetime:
    """
    Parse the inside of an RFC 3501 C{date-time}, e.g. C{01-Feb-1994 21:03:11 +0000}.

    A one-digit day may be written with or without its leading space.

    @return: an aware datetime in the zone written.
    @raise ValueError: if it is not one or names no real instant.
    """
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise ValueError("bad date-time")
    day, mon, year, hh, mm, ss, sign, zh, zm = match.groups()
    month = _MONTH_NUMBERS.get(mon.upper())
    if month is None or int(zm) > 59:
        raise ValueError("bad date-time")
    offset = timedelta(hours=int(zh), minutes=int(zm))
    zone = timezone(-offset if sign == b"-" else offset)
    return datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=zone)


class Cursor:
    """
    A reading position in one framed command.

    @ivar tag: the command's tag, for errors (C{"*"} until it is read).
    """

    def __init__(
        self, segments: Sequence[bytes], literals: Sequence[bytes], maxDepth: int = 32
    ) -> None:
        """
        @param segments: the command's lines without CRLF; every one but the
            last ends in a literal marker.
        @param literals: the literal data, C{literals[i]} following C{segments[i]}.
        @param maxDepth: how deeply parenthesised lists may nest.
        """
        self._segments = segments
        self._literals = literals
        self._index = 0
        self._line = segments[0]
        self._pos = 0
        self._depth = 0
        self._maxDepth = maxDepth
        self.tag = "*"

    def error(self, message: str) -> CommandError:
        """
        Make the error to raise for a syntax problem here.

        @param message: what was expected or found.
        """
        return CommandError(self.tag, message)

    def peek(self) -> int | None:
        """
        Return the next byte without consuming it, or C{None} at the end of a line.
        """
        if self._pos < len(self._line):
            return self._line[self._pos]
        return None

    def atEnd(self) -> bool:
        """
        Say whether the whole command has been read.
        """
        return self._index == len(self._segments) - 1 and self._pos == len(self._line)

    def end(self) -> None:
        """
        Require the end of the command.

        @raise CommandError: if anything is left.
        """
        if not self.atEnd():
            raise self.error("unexpected text at end of command")

    def skip(self, expected: bytes) -> None:
        """
        Consume exactly C{expected}.

        @raise CommandError: if the next bytes differ.
        """
        if self._line[self._pos : self._pos + len(expected)] != expected:
            raise self.error(f"expected {expected.decode('ascii')!r}")
        self._pos += len(expected)

    def accept(self, expected: bytes) -> bool:
        """
        Consume C{expected} if it comes next, case-insensitively.

        @return: whether it did.
        """
        got = self._line[self._pos : self._pos + len(expected)]
        if got.upper() == expected.upper():
            self._pos += len(expected)
            return True
        return False

    def sp(self) -> None:
        """
        Consume the single space between two arguments.
        """
        if self.peek() != 0x20:
            raise self.error("expected a space" if not self.atEnd() else "missing argument")
        self._pos += 1

    def take(self, allowed: frozenset[int], what: str) -> bytes:
        """
        Consume a non-empty run of bytes from C{allowed}.

        @param what: the name of the token, for the error message.
        @raise CommandError: if the run is empty, or stops at an 8-bit byte.
        """
        start = self._pos
        line = self._line
        while self._pos < len(line) and line[self._pos] in allowed:
            self._pos += 1
        if self._pos < len(line) and line[self._pos] >= 0x80:
            raise self.error(f"8-bit byte in {what}")
        if self._pos == start:
            raise self.error(f"expected {what}")
        return line[start : self._pos]

    def atom(self) -> bytes:
        """
        Read an atom.
        """
        return self.take(ATOM_CHARS, "atom")

    def keyword(self) -> str:
        """
        Read an atom and return it upper-cased, for keyword comparisons.
        """
        return self.atom().decode("ascii").upper()

    def number(self, maximum: int = MAX_NUMBER) -> int:
        """
        Read a C{number} (or, with C{maximum=MAX_NUMBER64}, a mod-sequence value).
        """
        digits = self.take(frozenset(b"0123456789"), "number")
        value = int(digits) if len(digits) <= 20 else maximum + 1
        if value > maximum:
            raise self.error("number too large")
        return value

    def nzNumber(self, maximum: int = MAX_NUMBER) -> int:
        """
        Read a non-zero C{number}.
        """
        value = self.number(maximum)
        if value == 0:
            raise self.error("expected a non-zero number")
        return value

    def quoted(self) -> bytes:
        """
        Read a quoted string (the opening quote is next).

        Backslash escapes only C{"} and C{\\}; 8-bit text must be UTF-8
        (RFC 9051 C{utf8-quoted}); NUL and other control bytes are refused.
        """
        self.skip(b'"')
        out = bytearray()
        line = self._line
        while True:
            if self._pos >= len(line):
                raise self.error("unterminated quoted string")
            c = line[self._pos]
            self._pos += 1
            if c == 0x22:
                break
            if c == 0x5C:
                if self._pos >= len(line) or line[self._pos] not in b'"\\':
                    raise self.error("bad escape in quoted string")
                c = line[self._pos]
                self._pos += 1
            elif c < 0x20 or c == 0x7F:
                raise self.error("control character in quoted string")
            out.append(c)
        try:
            out.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("quoted string is not UTF-8") from None
        return bytes(out)

    def literal(self) -> bytes:
        """
        Read a literal: its marker ends this line and its data was framed apart.
        """
        rest = self._line[self._pos :]
        if self._index >= len(self._literals) or _LITERAL_MARKER.fullmatch(rest) is None:
            raise self.error("bad literal")
        data = self._literals[self._index]
        self._index += 1
        self._line = self._segments[self._index]
        self._pos = 0
        return data

    def string(self) -> bytes:
        """
        Read a C{string}: quoted or literal.
        """
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()
        raise self.error("expected a string")

    def astring(self) -> bytes:
        """
        Read an C{astring}: an atom (C{]} allowed) or a string.
        """
        if self.peek() in (0x22, 0x7B):
            return self.string()
        return self.take(ASTRING_CHARS, "astring")

    def text(self, raw: bytes) -> str:
        """
        Decode a string argument as UTF-8.

        @raise CommandError: if it is not UTF-8 (a literal may hold anything).
        """
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("string is not UTF-8") from None

    def nstring(self) -> bytes | None:
        """
        Read an C{nstring}: C{NIL} or a string.
        """
        if self.peek() in (0x22, 0x7B):
            return self.string()
        if self.keyword() != "NIL":
            raise self.error("expected a string or NIL")
        return None

    def mailbox(self) -> str:
        """
        Read a C{mailbox} and decode it (see L{decodeMailboxName}).
        """
        raw = self.astring()
        try:
            return decodeMailboxName(raw)
        except ValueError:
            raise self.error("bad mailbox name encoding") from None

    def listMailbox(self) -> str:
        """
        Read a LIST pattern (C{list-mailbox}): list-chars or a string, decoded.
        """
        raw = self.string() if self.peek() in (0x22, 0x7B) else self.take(LIST_CHARS, "pattern")
        try:
            return decodeMailboxName(raw)
        except ValueError:
            raise self.error("bad mailbox name encoding") from None

    def sequenceSet(self) -> SequenceSet:
        """
        Read a C{sequence-set} or C{$}.
        """
        raw = self.take(_SEQUENCE_CHARS, "sequence set")
        try:
            return parseSequenceSet(raw)
        except ValueError:
            raise self.error("bad sequence set") from None

    def date(self) -> date:
        """
        Read a C{date}, bare or quoted.
        """
        raw = self.quoted() if self.peek() == 34 else self.take(ATOM_CHARS, "date")
        try:
            return parseDate(raw)
        except ValueError:
            raise self.error("bad date") from None

    def dateTime(self) -> datetime:
        """
        Read a quoted C{date-time}.
        """
        if self.peek() != 0x22:
            raise self.error("expected a date-time")
        try:
            return parseDateTime(self.quoted())
        except ValueError:
            raise self.error("bad date-time") from None

    def enter(self) -> None:
        """
        Go one level deeper into a nested construct (a list, a NOT or an OR).

        The bound keeps hostile nesting from exhausting the Python stack.

        @raise CommandError: if constructs nest deeper than allowed.
        """
        self._depth += 1
        if self._depth > self._maxDepth:
            raise self.error("nested too deeply")

    def leave(self) -> None:
        """
        Come back out of a construct entered with L{enter}.
        """
        self._depth -= 1

    def openList(self) -> None:
        """
        Consume C{(}, counting nesting depth.

        @raise CommandError: if lists nest deeper than allowed.
        """
        self.skip(b"(")
        self.enter()

    def closeList(self) -> None:
        """
        Consume C{)}.
        """
        self.skip(b")")
        self.leave()

    def listItems(self) -> Iterator[None]:
        """
        Iterate over the items of a parenthesised, space-separated list.

        The caller reads one item per iteration; the list may be empty.
        Use as C{for _ in cursor.listItems(): items.append(cursor.atom())}.
        """
        self.openList()
        first = True
        while self.peek() != 0x29:
            if not first:
                self.sp()
            first = False
            yield
        self.closeList()

    def flag(self) -> str:
        """
        Read a C{flag}: C{\\Name} (system or extension) or a keyword atom.
        """
        if self.peek() == 0x5C:
            self._pos += 1
            return "\\" + self.atom().decode("ascii")
        return self.atom().decode("ascii")

    def flagList(self) -> tuple[str, ...]:
        """
        Read a parenthesised C{flag-list}.
        """
        flags = []
        for _ in self.listItems():
            flags.append(self.flag())
        return tuple(flags)
