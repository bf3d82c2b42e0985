# -*- test-case-name: tests.test_imapwire -*-
"""
Encoding IMAP responses: Python values to the bytes of RFC 3501 section 9.

Pure functions, no I/O.  L{encode} renders a value tree: C{None} is
C{NIL}, an C{int} a number, C{str} and C{bytes} strings (quoted when
that is safe and short, a literal otherwise), lists and tuples
parenthesised lists (a L{Concat} its items back to back, with no
parentheses or spaces of its own), and the wrappers L{Atom} (written as is) and
L{Literal} (always a literal).  On top of it: mailbox names in modified
UTF-7 (RFC 3501 section 5.1.3), flag lists, date-times, compact sequence
sets, response codes (L{ResponseCode}) and whole response lines
(L{tagged}, L{untagged}, L{fetchResponse}, L{continuation}).

The server never writes a string without this module, so a client can
never put CR, LF or a bare quote into a response line.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias, cast

from mta.imap.message import Concat
from mta.imap.syntax import ASTRING_CHARS, MONTHS, SequenceSet

#: Quoted strings longer than this are sent as literals instead.
MAX_QUOTED = 1024
_SAFE_QUOTED = frozenset(range(0x20, 0x7F))


@dataclass(frozen=True)
class Atom:
    """
    Text written as it is: keywords, flags, item names like C{BODY[1]<0>}.

    @ivar text: ASCII without CR, LF or NUL.
    """

    text: str

    def __post_init__(self) -> None:
        # ASCII and printable is exactly 0x20-0x7E.
        if not (self.text.isascii() and self.text.isprintable()) or not self.text:
            raise ValueError(f"not an atom: {self.text!r}")


@dataclass(frozen=True)
class Literal:
    """
    Bytes always sent as a literal (message bodies, sections).
    """

    data: bytes


Value: TypeAlias = int | str | bytes | Atom | Literal | Sequence["Value"] | None

NIL = b"NIL"


def literal(data: bytes) -> bytes:
    """
    Render C{data} as a literal: C{{n}} CRLF and the bytes.
    """
    return b"{%d}\r\n" % (len(data),) + data


def quoted(data: bytes) -> bytes:
    """
    Render C{data} as a quoted string, or as a literal when it holds CR,
    LF, NUL, other controls or 8-bit bytes, or is longer than L{MAX_QUOTED}.
    """
    if len(data) > MAX_QUOTED or any(b not in _SAFE_QUOTED for b in data):
        return literal(data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def string(text: str | bytes) -> bytes:
    """
    Render a C{string}; text is encoded as UTF-8.
    """
    return quoted(text.encode("utf-8") if isinstance(text, str) else text)


def astring(text: str | bytes) -> bytes:
    """
    Render an C{astring}: bare when it is a non-empty run of ASTRING-CHARs
    other than C{NIL}, a string otherwise.
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    if data and data.upper() != b"NIL" and all(b in ASTRING_CHARS for b in data):
        return data
    return quoted(data)


def nstring(value: str | bytes | None) -> bytes:
    """
    Render an C{nstring}: C{NIL} for C{None}.
    """
    return NIL if value is None else string(value)


def encode(value: Value) -> bytes:
    """
    Render a value tree (see the module docstring).

    @raise TypeError: for a value of another type.
    """
    if value is None:
        return NIL
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("IMAP numbers are unsigned")
        return b"%d" % (value,)
    if isinstance(value, str | bytes):
        return string(value)
    if isinstance(value, Atom):
        return value.text.encode("ascii")
    if isinstance(value, Literal):
        return literal(value.data)
    if isinstance(value, Concat):
        # Lists RFC 3501 writes back to back: C{(part)(part) "mixed"}.
        return b"".join(encode(cast(Value, v)) for v in value)
    if isinstance(value, list | tuple):
        return b"(" + b" ".join(encode(v) for v in value) + b")"
    raise TypeError(f"cannot encode {type(value).__name__}")


def encodeModifiedUTF7(name: str) -> bytes:
    """
    Encode a mailbox name in modified UTF-7 (RFC 3501 section 5.1.3).

    Printable ASCII stands for itself (C{&} as C{&-}); every run of other
    characters is UTF-16BE in base64 with C{,} for C{/}, between C{&} and C{-}.
    """
    out = bytearray()
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be")
            b64 = binascii.b2a_base64(data, newline=False).rstrip(b"=").replace(b"/", b",")
            out.extend(b"&" + b64 + b"-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.extend(b"&-" if ch == "&" else ch.encode("ascii"))
        else:
            run.append(ch)
    flush()
    return bytes(out)


def mailbox(name: str) -> bytes:
    """
    Render a mailbox name: modified UTF-7, as an astring.
    """
    return astring(encodeModifiedUTF7(name))


def flagList(flags: Iterable[str]) -> bytes:
    """
    Render a parenthesised flag list, e.g. C{(\\Seen $Forwarded)}.
    """
    return b"(" + b" ".join(Atom(flag).text.encode("ascii") for flag in flags) + b")"


def dateTime(when: datetime) -> bytes:
    """
    Render a quoted C{date-time} (INTERNALDATE), e.g. C{"01-Feb-1994 21:03:11 +0000"}.

    @param when: an aware datetime; its own offset is written.
    """
    offset = when.utcoffset()
    if offset is None:
        raise ValueError("a date-time needs a zone")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    text = (
        f"{when.day:02d}-{MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    )
    return b'"' + text.encode("ascii") + b'"'


def sequenceSet(numbers: Iterable[int]) -> str:
    """
    Render numbers as a compact C{sequence-set}: C{[1, 2, 3, 5, 7, 8]} gives C{1:3,5,7:8}.

    @param numbers: positive numbers in any order, repeats allowed, not empty.
    @raise ValueError: if C{numbers} is empty or holds a number below 1.
    """
    ordered = sorted(set(numbers))
    if not ordered or ordered[0] < 1:
        raise ValueError("a sequence set needs positive numbers")
    parts = []
    start = previous = ordered[0]
    for n in ordered[1:]:
        if n != previous + 1:
            parts.append(_span(start, previous))
            start = n
        previous = n
    parts.append(_span(start, previous))
    return ",".join(parts)


def _span(first: int, last: int) -> str:
    """
    Render one range of a sequence set.
    """
    return str(first) if first == last else f"{first}:{last}"


def sequenceSetAsWritten(messages: SequenceSet) -> str:
    """
    Render a parsed L{SequenceSet} as the client wrote it (C{*} kept, order kept).
    """
    if messages.saved:
        return "$"

    def number(n: int | None) -> str:
        return "*" if n is None else str(n)

    return ",".join(number(a) if a == b else f"{number(a)}:{number(b)}" for a, b in messages.ranges)


@dataclass(frozen=True)
class ResponseCode:
    """
    A response code: C{[NAME]} or C{[NAME arguments]}.

    @ivar name: e.g. C{"UIDVALIDITY"}.
    @ivar arguments: the text after the name, already rendered, or C{None}.
    """

    name: str
    arguments: str | None = None

    def render(self) -> bytes:
        """
        Render the code with its brackets.
        """
        inner = self.name if self.arguments is None else f"{self.name} {self.arguments}"
        return b"[" + Atom(inner).text.encode("ascii") + b"]"


TOOBIG = ResponseCode("TOOBIG")
READ_ONLY = ResponseCode("READ-ONLY")
READ_WRITE = ResponseCode("READ-WRITE")
TRYCREATE = ResponseCode("TRYCREATE")
ALERT = ResponseCode("ALERT")
NOMODSEQ = ResponseCode("NOMODSEQ")
CLOSED = ResponseCode("CLOSED")
NONEXISTENT = ResponseCode("NONEXISTENT")
ALREADYEXISTS = ResponseCode("ALREADYEXISTS")
AUTHENTICATIONFAILED = ResponseCode("AUTHENTICATIONFAILED")
PRIVACYREQUIRED = ResponseCode("PRIVACYREQUIRED")
UNAVAILABLE = ResponseCode("UNAVAILABLE")
OVERQUOTA = ResponseCode("OVERQUOTA")
CANNOT = ResponseCode("CANNOT")
INUSE = ResponseCode("INUSE")


def uidValidity(value: int) -> ResponseCode:
    """
    C{[UIDVALIDITY n]}.
    """
    return ResponseCode("UIDVALIDITY", str(value))


def uidNext(value: int) -> ResponseCode:
    """
    C{[UIDNEXT n]}.
    """
    return ResponseCode("UIDNEXT", str(value))


def unseen(number: int) -> ResponseCode:
    """
    C{[UNSEEN n]}: the first unseen message's sequence number.
    """
    return ResponseCode("UNSEEN", str(number))


def highestModSeq(value: int) -> ResponseCode:
    """
    C{[HIGHESTMODSEQ n]} (RFC 7162).
    """
    return ResponseCode("HIGHESTMODSEQ", str(value))


def permanentFlags(flags: Iterable[str]) -> ResponseCode:
    """
    C{[PERMANENTFLAGS (...)]}; include C{\\*} when keywords may be created.
    """
    return ResponseCode("PERMANENTFLAGS", flagList(flags).decode("ascii"))


def appendUid(validity: int, uids: Iterable[int]) -> ResponseCode:
    """
    C{[APPENDUID validity uid-set]} (RFC 4315).
    """
    return ResponseCode("APPENDUID", f"{validity} {sequenceSet(uids)}")


def copyUid(validity: int, sources: Sequence[int], destinations: Sequence[int]) -> ResponseCode:
    """
    C{[COPYUID validity source-uids destination-uids]} (RFC 4315).

    The two sets pair up in order, so each is written in the order given
    (ascending source UIDs are the usual case, and then both compact).

    @raise ValueError: if the two lists differ in length or are empty.
    """
    if len(sources) != len(destinations) or not sources:
        raise ValueError("COPYUID needs as many destinations as sources")
    if list(sources) == sorted(sources) and list(destinations) == sorted(destinations):
        return ResponseCode(
            "COPYUID", f"{validity} {sequenceSet(sources)} {sequenceSet(destinations)}"
        )
    return ResponseCode(
        "COPYUID",
        f"{validity} {','.join(map(str, sources))} {','.join(map(str, destinations))}",
    )


def modified(numbers: Iterable[int]) -> ResponseCode:
    """
    C{[MODIFIED set]}: the messages a conditional STORE left alone (RFC 7162).
    """
    return ResponseCode("MODIFIED", sequenceSet(numbers))


def capabilityCode(capabilities: Iterable[str]) -> ResponseCode:
    """
    C{[CAPABILITY IMAP4rev1 ...]}.
    """
    return ResponseCode("CAPABILITY", " ".join(capabilities))


def badCharset(charsets: Iterable[str] = ("UTF-8", "US-ASCII")) -> ResponseCode:
    """
    C{[BADCHARSET (UTF-8 US-ASCII)]}.
    """
    return ResponseCode("BADCHARSET", "(" + " ".join(charsets) + ")")


def _line(prefix: bytes, status: str, text: str, code: ResponseCode | None) -> bytes:
    """
    Render a status response line; the text is cleaned of controls.
    """
    clean = "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in text)
    parts = [prefix, status.encode("ascii")]
    if code is not None:
        parts.append(code.render())
    if clean:
        parts.append(clean.encode("ascii"))
    return b" ".join(parts) + b"\r\n"


def tagged(tag: str, status: str, text: str, code: ResponseCode | None = None) -> bytes:
    """
    Render C{<tag> OK|NO|BAD [code] text} CRLF.
    """
    return _line(tag.encode("ascii"), status, text, code)


def untaggedStatus(status: str, text: str, code: ResponseCode | None = None) -> bytes:
    """
    Render C{* OK|NO|BAD|BYE|PREAUTH [code] text} CRLF.
    """
    return _line(b"*", status, text, code)


def untagged(*values: Value) -> bytes:
    """
    Render C{* value value ...} CRLF, e.g. C{untagged(3, Atom("EXISTS"))}.
    """
    return b"* " + b" ".join(encode(v) for v in values) + b"\r\n"


def continuation(text: str = "Ready") -> bytes:
    """
    Render a continuation request, C{+ text} CRLF.
    """
    clean = "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in text)
    return b"+ " + clean.encode("ascii") + b"\r\n"


def fetchResponse(number: int, items: Sequence[tuple[str, Value]]) -> bytes:
    """
    Render C{* n FETCH (NAME value ...)} CRLF.

    @param number: the message's sequence number.
    @param items: item names (C{"UID"}, C{"BODY[1]<0>"}) and their values.
    """
    body = b" ".join(Atom(name).text.encode("ascii") + b" " + encode(v) for name, v in items)
    return b"* %d FETCH (" % (number,) + body + b")\r\n"
