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
otherwise runs the same substitution with a pattern compiled once.
L{install} puts them where dkimpy's C{Relaxed} looks them up.
"""

from __future__ import annotations

import re

import dkim.canonicalization

_TRAILING = re.compile(b"[\t ]+\r\n")
_WHITESPACE = re.compile(b"[\t ]+")
_NEWLINE = re.compile(b"\r?\n")

#: dkimpy's own helpers, as they were before L{install}: the reference the
#: tests compare with.
DKIMPY_HELPERS = {
    name: getattr(dkim.canonicalization, name)
    for name in ("strip_trailing_whitespace", "compress_whitespace", "unfold_header_value")
}


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
    return _NEWLINE.sub(b"", content)


def install() -> None:
    """
    Have dkimpy's canonicalisation use L{stripTrailingWhitespace},
    L{compressWhitespace} and L{unfoldHeaderValue}.  Idempotent.
    """
    dkim.canonicalization.strip_trailing_whitespace = stripTrailingWhitespace  # type: ignore[assignment]
    dkim.canonicalization.compress_whitespace = compressWhitespace  # type: ignore[assignment]
    dkim.canonicalization.unfold_header_value = unfoldHeaderValue  # type: ignore[assignment]


__all__ = [
    "DKIMPY_HELPERS",
    "compressWhitespace",
    "install",
    "stripTrailingWhitespace",
    "unfoldHeaderValue",
]
