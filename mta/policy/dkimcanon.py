# -*- test-case-name: tests.test_dkimcanon -*-
"""
dkimpy's relaxed canonicalisation without a regular expression where none
would match.

dkimpy (1.1) canonicalises with three helpers in C{dkim.canonicalization},
each one C{re.sub} with the pattern given as a string, so every call looks
the pattern up in C{re}'s cache and then scans the whole text with the
regular-expression engine:

  - C{strip_trailing_whitespace}: C{[\\t ]+\\r\\n} becomes C{\\r\\n};
  - C{compress_whitespace}: C{[\\t ]+} becomes one space;
  - C{unfold_header_value}: C{\\r?\\n} is removed.

Relaxed verification (and signing) calls them on the whole body and on
every header field of the message, about twenty calls for a short message.
Measured in-process on a 2 KB message (the inbound check's own work being
about 0.3 ms), they took about 70 us, most of it scanning text in which
nothing matched: a body without tabs, double spaces or trailing blanks,
header values without folding.

The replacements here give the same bytes for every input (the tests
compare them with dkimpy's own, by property): each first asks, with
C{bytes.__contains__} (a C{memchr}-speed search), whether anything could
match at all, returns its argument unchanged when nothing can, and
otherwise runs the same substitution with a pattern compiled once.  Header
values as dkimpy holds them always end in CRLF, so unfolding one whose
every LF follows a CR is a C{bytes.replace} of CRLF instead.
L{install} puts them where dkimpy's C{Relaxed} looks them up.

dkimpy also reads every message with C{rfc822_parse}, which splits the
whole message, body included, into lines with a regular expression and
joins the body's lines again with CRLF (about 30 us of the 170 us a
verification took); L{rfc822Parse} walks only the header lines and
returns the body as it is unless it has a bare LF to make CRLF.

Before hashing the headers, dkimpy empties the C{b=} value of the
C{DKIM-Signature} field with C{RE_BTAG}, in which folding white space is
C{(?:(?:\\s*\\r?\\n)?\\s+)?} before every base64 character: the engine tries
those nested alternatives some 350 times for a 2048-bit signature (54 us
in-process, 94 us with the caches cold, as in the server).  That folding
white space matches exactly the strings C{\\s*} matches, and a greedy run of
"white space, then a base64 character" ends at the last base64 character
of the longest run of white space and base64 characters, so
L{SIGNATURE_B_VALUE} says the same with one character class (6 us; the
tests compare the two by property), and L{install} puts it in place.
"""

from __future__ import annotations

import re

import dkim.canonicalization

_TRAILING = re.compile(b"[\t ]+\r\n")
_WHITESPACE = re.compile(b"[\t ]+")
_NEWLINE = re.compile(b"\r?\n")
_FIELD_NAME = re.compile(b"([\x21-\x7e]+?):")

#: dkimpy's C{RE_BTAG} without nested quantifiers: C{sub(b"\\1", value)}
#: empties every C{b=} tag value of a C{DKIM-Signature} field value.
SIGNATURE_B_VALUE = re.compile(rb"([;\s]b\s*=)(?:[\sa-zA-Z0-9+/=]*[a-zA-Z0-9+/=])?(?:\r?\n\Z)?")

#: dkimpy's own helpers, as they were before L{install}: the reference the
#: tests compare with.
DKIMPY_HELPERS = {
    name: getattr(dkim.canonicalization, name)
    for name in ("strip_trailing_whitespace", "compress_whitespace", "unfold_header_value")
}
#: dkimpy's own message parser, as it was before L{install}.
DKIMPY_RFC822_PARSE = dkim.rfc822_parse
#: dkimpy's own C{b=} pattern, as it was before L{install}.
DKIMPY_RE_BTAG = dkim.RE_BTAG


def stripTrailingWhitespace(content: bytes) -> bytes:
    """
    @return: C{content} without the spaces and tabs that end its lines.
    """
    if b" \r\n" not in content and b"\t\r\n" not in content:
        return content
    return _TRAILING.sub(b"\r\n", content)


def compressWhitespace(content: bytes) -> bytes:
    """
    @return: C{content} with every run of spaces and tabs made one space.
    """
    if b"\t" not in content and b"  " not in content:
        return content
    return _WHITESPACE.sub(b" ", content)


def unfoldHeaderValue(content: bytes) -> bytes:
    """
    @return: C{content} without its line breaks (CRLF or bare LF).
    """
    if b"\n" not in content:
        return content
    if content.count(b"\n") == content.count(b"\r\n"):
        return content.replace(b"\r\n", b"")
    return _NEWLINE.sub(b"", content)


def rfc822Parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """
    dkimpy's C{rfc822_parse}: split C{message} into its header fields and
    its body, with the same answers and errors, without splitting the body
    into lines and joining them again.

    @return: C{([[name, value + CRLF], ...], body)}, the body's line breaks
        made CRLF.
    @raise dkim.MessageFormatError: a header line is neither a field, a
        continuation nor an mbox C{From } line.
    """
    headers: list[list[bytes]] = []
    pos = 0
    while True:
        nl = message.find(b"\n", pos)
        if nl < 0:
            line, pos = message[pos:], len(message)
        else:
            line, pos = message[pos:nl], nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
        if not line:
            break
        if line[0] in (0x09, 0x20):
            headers[-1][1] += line + b"\r\n"
        else:
            m = _FIELD_NAME.match(line)
            if m is not None:
                headers.append([m.group(1), line[m.end(0) :] + b"\r\n"])
            elif not line.startswith(b"From "):
                raise dkim.MessageFormatError(f"Unexpected characters in RFC822 header: {line!r}")
        if nl < 0:
            return headers, b""
    body = message[pos:]
    if body.count(b"\n") != body.count(b"\r\n"):
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return headers, body


def install() -> None:
    """
    Have dkimpy's canonicalisation use L{stripTrailingWhitespace},
    L{compressWhitespace} and L{unfoldHeaderValue}, its message parsing
    L{rfc822Parse}, and L{SIGNATURE_B_VALUE} for its C{RE_BTAG}.
    Idempotent.
    """
    dkim.canonicalization.strip_trailing_whitespace = stripTrailingWhitespace  # type: ignore[assignment]
    dkim.canonicalization.compress_whitespace = compressWhitespace  # type: ignore[assignment]
    dkim.canonicalization.unfold_header_value = unfoldHeaderValue  # type: ignore[assignment]
    dkim.rfc822_parse = rfc822Parse
    dkim.RE_BTAG = SIGNATURE_B_VALUE


__all__ = [
    "DKIMPY_HELPERS",
    "DKIMPY_RE_BTAG",
    "DKIMPY_RFC822_PARSE",
    "SIGNATURE_B_VALUE",
    "compressWhitespace",
    "install",
    "rfc822Parse",
    "stripTrailingWhitespace",
    "unfoldHeaderValue",
]
