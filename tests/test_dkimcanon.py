"""
Tests for L{mta.policy.dkimcanon}: the same canonical bytes as dkimpy's.
"""

from __future__ import annotations

import dkim
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mta.policy import dkimcanon

#: Bytes that matter to the three helpers, with the odd other byte.
_TEXT = st.lists(
    st.sampled_from([b" ", b"\t", b"\r", b"\n", b"\r\n", b"a", b"b", b"\x00", b"\xff", b"  "]),
    max_size=40,
).map(b"".join)


class HelperTests(SynchronousTestCase):
    """
    Each replacement gives what dkimpy's helper gives, for any bytes.
    """

    def check(self, name: str, ours: object, text: bytes) -> None:
        reference = dkimcanon.DKIMPY_HELPERS[name]
        self.assertEqual(ours(text), reference(text))  # type: ignore[operator]

    @given(_TEXT)
    def test_stripTrailingWhitespace(self, text: bytes) -> None:
        """
        Spaces and tabs before every CRLF go, and only those.
        """
        self.check("strip_trailing_whitespace", dkimcanon.stripTrailingWhitespace, text)

    @given(_TEXT)
    def test_compressWhitespace(self, text: bytes) -> None:
        """
        Every run of spaces and tabs becomes one space.
        """
        self.check("compress_whitespace", dkimcanon.compressWhitespace, text)

    @given(_TEXT)
    def test_unfoldHeaderValue(self, text: bytes) -> None:
        """
        CRLF and bare LF go; a bare CR stays.
        """
        self.check("unfold_header_value", dkimcanon.unfoldHeaderValue, text)

    def test_examples(self) -> None:
        """
        The cases the short cuts turn on: nothing to do, and each thing to
        do alone.
        """
        cases = [
            b"",
            b"plain text, one space each\r\n",
            b"trailing \r\n",
            b"trailing tab\t\r\n",
            b"two  spaces\r\n",
            b"a\ttab\r\n",
            b"folded\r\n value",
            b"folded\r\n value\r\n",
            b"cr\r\r\n",
            b"mixed\r\n and\n bare\r\n",
            b"bare\nLF",
            b"bare\rCR",
        ]
        for text in cases:
            self.check("strip_trailing_whitespace", dkimcanon.stripTrailingWhitespace, text)
            self.check("compress_whitespace", dkimcanon.compressWhitespace, text)
            self.check("unfold_header_value", dkimcanon.unfoldHeaderValue, text)
        self.assertIs(dkimcanon.compressWhitespace(cases[1]), cases[1])


class InstalledTests(SynchronousTestCase):
    """
    Once installed, dkimpy's relaxed canonicalisation uses the replacements
    and still gives its own bytes.
    """

    def setUp(self) -> None:
        dkimcanon.install()

    def test_installed(self) -> None:
        """
        L{dkimcanon.install} puts the three where C{Relaxed} finds them.
        """
        module = dkim.canonicalization
        self.assertIs(module.strip_trailing_whitespace, dkimcanon.stripTrailingWhitespace)
        self.assertIs(module.compress_whitespace, dkimcanon.compressWhitespace)
        self.assertIs(module.unfold_header_value, dkimcanon.unfoldHeaderValue)

    @given(_TEXT)
    def test_body(self, body: bytes) -> None:
        """
        Relaxed body canonicalisation is dkimpy's composition over dkimpy's
        helpers.
        """
        original = dkimcanon.DKIMPY_HELPERS
        expected = dkim.canonicalization.correct_empty_body(
            dkim.canonicalization.strip_trailing_lines(
                original["compress_whitespace"](original["strip_trailing_whitespace"](body))
            )
        )
        self.assertEqual(Relaxed.canonicalize_body(body), expected)

    @given(st.lists(st.tuples(st.sampled_from([b"From", b"to ", b"X-A"]), _TEXT), max_size=5))
    def test_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """
        Relaxed header canonicalisation likewise.
        """
        original = dkimcanon.DKIMPY_HELPERS
        expected = [
            (
                name.lower().rstrip(),
                original["compress_whitespace"](original["unfold_header_value"](value)).strip()
                + b"\r\n",
            )
            for name, value in headers
        ]
        self.assertEqual(Relaxed.canonicalize_headers(headers), expected)


#: Message pieces that matter to the parser: fields, continuations, the
#: empty line in either ending, mbox From lines, bad lines, body text.
_MESSAGE = st.lists(
    st.sampled_from(
        [
            b"From: a@x.test",
            b"Subject:hi",
            b"X-Odd :v",
            b" folded",
            b"\tfolded",
            b"From mbox line",
            b"bad header",
            b":empty name",
            b"\r\n",
            b"\n",
            b"\r",
            b"body  text ",
            b"\x00\xff",
            b"",
        ]
    ),
    max_size=12,
).map(b"".join)


def _parsed(parse: object, message: bytes) -> object:
    """
    @return: what C{parse} returns for C{message}, or the type and text of
        what it raises.
    """
    try:
        return parse(message)  # type: ignore[operator]
    except Exception as e:
        return (type(e), str(e))


class ParseTests(SynchronousTestCase):
    """
    L{dkimcanon.rfc822Parse} gives dkimpy's C{rfc822_parse} answers.
    """

    @given(_MESSAGE)
    def test_sameAsDKIMPy(self, message: bytes) -> None:
        """
        Any message parses to the same fields and body, or fails the same
        way.
        """
        self.assertEqual(
            _parsed(dkimcanon.rfc822Parse, message),
            _parsed(dkimcanon.DKIMPY_RFC822_PARSE, message),
        )

    def test_examples(self) -> None:
        """
        Both endings, a folded field, an mbox line, bare LFs and CRs in the
        body, no body, no empty line, an unusable header line.
        """
        for message in [
            b"",
            b"From: a@x.test\r\nSubject: s\r\n\r\nbody\r\n",
            b"From: a@x.test\nSubject: s\n\nbody\nmore\r\n",
            b"From mbox\r\nTo: b\r\n  folded\r\n\r\nx\r\r\ny\rz\n",
            b"To: b\r\n",
            b"To: b",
            b"To: b\r\n\r\n",
            b"To: b\r\n\n\r\n",
            b"bad line\r\n\r\n",
            b" continuation first\r\n\r\n",
        ]:
            self.assertEqual(
                _parsed(dkimcanon.rfc822Parse, message),
                _parsed(dkimcanon.DKIMPY_RFC822_PARSE, message),
                message,
            )

    def test_installed(self) -> None:
        """
        L{dkimcanon.install} gives dkimpy the parser.
        """
        dkimcanon.install()
        self.assertIs(dkim.rfc822_parse, dkimcanon.rfc822Parse)
