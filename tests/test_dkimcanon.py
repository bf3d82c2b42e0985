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


#: Signature field values: tags, the base64 of b= and bh=, every kind of
#: white space and line break, and bytes that end a base64 run.
_SIGNATURE = st.lists(
    st.sampled_from(
        [
            b"b",
            b"=",
            b";",
            b" b=",
            b"; b =",
            b"bh=",
            b"A",
            b"z9+/",
            b"==",
            b" ",
            b"\t",
            b"\r\n ",
            b"\r\n",
            b"\n",
            b"\r",
            b"\x0b\x0c",
            b"-",
            b":",
            b"\xff",
        ]
    ),
    max_size=30,
).map(b"".join)


class SignatureBValueTests(SynchronousTestCase):
    """
    L{dkimcanon.SIGNATURE_B_VALUE} empties the same C{b=} values as
    dkimpy's C{RE_BTAG}.
    """

    def check(self, value: bytes) -> None:
        self.assertEqual(
            dkimcanon.SIGNATURE_B_VALUE.sub(b"\\1", value),
            dkimcanon.DKIMPY_RE_BTAG.sub(b"\\1", value),
            value,
        )

    @given(_SIGNATURE)
    def test_sameAsDKIMPy(self, value: bytes) -> None:
        """
        Any value comes out as dkimpy's pattern makes it.
        """
        self.check(value)

    @given(_SIGNATURE, _SIGNATURE)
    def test_signatureEnding(self, head: bytes, tail: bytes) -> None:
        """
        Values ending as dkimpy holds them (CRLF), with a b= tag inside.
        """
        self.check(head + b"; b=" + tail + b"\r\n")

    def test_examples(self) -> None:
        """
        A folded signature, b= last and not last, an empty b=, bh= left
        alone, a base64 run ending in white space, a lone LF at the end.
        """
        for value in [
            b"v=1; a=rsa-sha256; bh=abc=; b=dGVz\r\n dA==\r\n",
            b"v=1; b=dGVzdA==; bh=abc=\r\n",
            b"v=1; b=\r\n",
            b"v=1;\r\n b\r\n =\r\n dG Vz \r\n",
            b"v=1; b=dGVz \t; s=x\n",
            b"v=1; b=dGVz\n",
            b"b=x",
        ]:
            self.check(value)

    def test_installed(self) -> None:
        """
        L{dkimcanon.install} gives dkimpy the pattern.
        """
        dkimcanon.install()
        self.assertIs(dkim.RE_BTAG, dkimcanon.SIGNATURE_B_VALUE)
