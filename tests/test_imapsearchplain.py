"""
Tests for L{mta.imap.search.Plain}: the pre-test on a message's raw bytes
that proves a text search cannot match, and that it never disagrees with
the full, decoding search.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mta.imap.message import parseStructure
from mta.imap.search import (
    ASCII_SAFE,
    BodyKey,
    HeaderKey,
    MessageView,
    Plain,
    _headerMatches,
    _textMatches,
    codecName,
    decodeBody,
    decodeHeader,
    matches,
)

PLAIN = (
    b"From: Alice <alice@example.com>\r\n"
    b"Subject: the budget meeting\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"Please review the Quetzal report.\r\n"
)


def view(raw: bytes) -> MessageView:
    return MessageView(1, 1, frozenset(), datetime(2025, 1, 1, tzinfo=UTC), len(raw), lambda: raw)


def full(raw: bytes, key: BodyKey | HeaderKey) -> bool:
    """
    @return: what the decoding search alone says, without the pre-test.
    """
    if isinstance(key, HeaderKey):
        return _headerMatches(view(raw).fields(), key.field, key.value)
    return _textMatches(view(raw), key)


class PlainTests(SynchronousTestCase):
    """
    What L{Plain.of} proves for chosen messages.
    """

    def test_plainMessage(self) -> None:
        """
        An ASCII message without encodings: a word that is nowhere in it
        is proven absent, one that is (in any case) is left to the full
        search, and so is a needle whose every word is somewhere.
        """
        plain = Plain.of(PLAIN)
        self.assertTrue(plain.plainHeaders and plain.plainBodies)
        self.assertTrue(plain.lacks("nowhere", headers=True, bodies=True))
        self.assertTrue(plain.lacks("quetzal nowhere", headers=True, bodies=True))
        self.assertFalse(plain.lacks("QUETZAL", headers=True, bodies=True))
        self.assertFalse(plain.lacks("report quetzal", headers=False, bodies=True))
        self.assertFalse(plain.lacks("", headers=True, bodies=True))
        self.assertTrue(plain.lacks("grüße", headers=True, bodies=True))

    def test_unicodeCaseFolding(self) -> None:
        """
        In a UTF-8 message the comparison is with the case-folded text, so
        C{ß} is found by C{SS} and the Kelvin sign by C{k}.
        """
        raw = PLAIN.replace(b"Quetzal", "Straße \u212aelvin".encode())
        plain = Plain.of(raw)
        self.assertFalse(plain.lacks("STRASSE", headers=False, bodies=True))
        self.assertFalse(plain.lacks("kelvin", headers=False, bodies=True))
        self.assertTrue(matches(view(raw), BodyKey("STRASSE KELVIN", False)))
        self.assertTrue(plain.lacks("strassen", headers=False, bodies=True))

    def test_notPlain(self) -> None:
        """
        Encoded words, base64 and quoted-printable, a charset that does not
        decode ASCII as itself, and anything not in the simplest form leave
        the decision to the full search.
        """
        cases = [
            (PLAIN.replace(b"the budget", b"=?utf-8?q?the?= budget"), False, True),
            (PLAIN.replace(b"7bit", b"base64"), True, False),
            (PLAIN.replace(b"7bit", b"Quoted-Printable"), True, False),
            (PLAIN.replace(b"7bit", b'"b\\ase64"'), True, False),
            (PLAIN.replace(b"7bit", b"(comment) base64"), True, False),
            (PLAIN.replace(b": 7bit", b":\r\n 7bit"), True, False),
            (PLAIN.replace(b'"utf-8"', b"utf-16"), True, False),
            (PLAIN.replace(b'"utf-8"', b"cp500"), True, False),
            (PLAIN.replace(b'"utf-8"', b"utf-7"), True, False),
            (PLAIN.replace(b'"utf-8"', b'"utf\\-16"'), True, False),
            (PLAIN.replace(b'"utf-8"', b"utf\x0b16"), True, False),
            (PLAIN.replace(b"charset=", b"charset*="), True, False),
            (PLAIN.replace(b"report", b"report, charset: none"), True, False),
        ]
        for raw, headers, bodies in cases:
            plain = Plain.of(raw)
            self.assertEqual((plain.plainHeaders, plain.plainBodies), (headers, bodies), raw)
            self.assertFalse(plain.lacks("nowhere", headers=True, bodies=True), raw)
        latin = Plain.of(PLAIN.replace(b"Quetzal", b"Qu\xe9tzal"))
        self.assertIsNone(latin.folded)
        self.assertFalse(latin.lacks("nowhere", headers=True, bodies=False))

    def test_charsets(self) -> None:
        """
        Each codec counted as safe for ASCII decodes every ASCII byte to
        itself; a UTF-8 message is plain only with UTF-8 (or unknown or
        US-ASCII) parts.
        """
        ascii = bytes(range(128))
        for name in ASCII_SAFE:
            self.assertEqual(ascii.decode(name), ascii.decode("ascii"), name)
        utf8 = PLAIN.replace(b"Quetzal", "Grüße".encode())
        self.assertTrue(Plain.of(utf8).plainBodies)
        self.assertTrue(Plain.of(utf8.replace(b'"utf-8"', b"us-ascii")).plainBodies)
        self.assertTrue(Plain.of(utf8.replace(b'"utf-8"', b"x-unknown")).plainBodies)
        self.assertFalse(Plain.of(utf8.replace(b'"utf-8"', b"latin-1")).plainBodies)
        self.assertTrue(Plain.of(PLAIN.replace(b'"utf-8"', b"latin-1")).plainBodies)

    def test_strangeCharsets(self) -> None:
        """
        A charset naming a codec that is not a text encoding, or one that
        cannot decode with replacement, is searched as UTF-8 instead of
        failing the search.
        """
        self.assertEqual(codecName("zlib"), "utf-8")
        self.assertEqual(codecName("rot13"), "utf-8")
        self.assertEqual(codecName("a\x00b"), "utf-8")
        self.assertEqual(codecName("US-ASCII"), "utf-8")
        self.assertEqual(codecName("Latin-1"), "iso8859-1")
        for charset in (b"zlib", b"idna", b"undefined", b"punycode", b"hex"):
            raw = PLAIN.replace(b'"utf-8"', charset).replace(b"Quetzal", b"Qu\xc3\xa9tzal")
            part = parseStructure(raw)
            self.assertIn("qu", decodeBody(part, raw).lower(), charset)
            self.assertFalse(matches(view(raw), BodyKey("nowhere", False)))


# -- Equivalence with the full search -------------------------------------------------

_TEXT = st.text(alphabet="aAbBkKsS \t\u00dfß\u017f\u212a\u00e9=?-_.\u00a0\u0130i", max_size=12)
_CHARSETS = [
    b"utf-8",
    b'"utf-8"',
    b"us-ascii",
    b"latin-1",
    b"iso-8859-15",
    b"windows-1252",
    b"utf-16",
    b"utf-7",
    b"cp500",
    b"x-unknown",
    b"zlib",
    b"idna",
    b'"utf\\-16"',
    b"utf-8 (c)",
    b"(c)utf-16",
    b"\r\n utf-16",
]
_ENCODINGS = [b"7bit", b"8bit", b"base64", b"BASE64", b"quoted-printable", b'"base64"', b"x-uu"]


_FORMS = ["utf-8", "ascii", "latin-1", "base64", "qp", "utf-16", "word"]
_CLEAN = _FORMS[:2]
#: The body forms of a clean part, by its transfer encoding.
_BODY_FORMS = {b"base64": ["base64"], b"BASE64": ["base64"], b"quoted-printable": ["qp"]}


@st.composite
def _encodedText(draw: st.DrawFn, forms: list[str]) -> bytes:
    """
    Some text, as bytes in one of C{forms}: UTF-8, ASCII, latin-1, base64,
    quoted-printable, UTF-16, or an encoded word.
    """
    text = draw(_TEXT)
    form = draw(st.sampled_from(forms))
    if form == "latin-1":
        return text.encode("latin-1", "replace")
    if form == "base64":
        return base64.b64encode(text.encode())
    if form == "qp":
        return binascii.b2a_qp(text.encode())
    if form == "utf-16":
        return text.encode("utf-16")
    if form == "word":
        return b"=?utf-8?B?" + base64.b64encode(text.encode()) + b"?="
    if form == "ascii":
        return text.encode("ascii", "replace")
    return text.encode()


@st.composite
def _part(draw: st.DrawFn, inner: bool, clean: bool, multipart: bool = False) -> bytes:
    """
    A header (text fields, perhaps a Content-Type with a charset and a
    Content-Transfer-Encoding) and, unless C{multipart}, a body.  A clean
    part has UTF-8 or ASCII text and no encoded words, and its body is in
    the form its transfer encoding says, so that the pre-test often has a
    say; any part has any charset.
    """
    forms = _CLEAN if clean else _FORMS
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([b"Subject", b"From", b"X-Note", b"subject "]))
        lines.append(name + b": " + draw(_encodedText(forms)) + b"\r\n")
        if draw(st.booleans()):
            lines.append(b"\t" + draw(_encodedText(forms)) + b"\r\n")
    if not multipart and draw(st.booleans()):
        charset = draw(st.sampled_from(_CHARSETS))
        kind = b"text/plain" if inner or draw(st.booleans()) else b"text/html"
        lines.append(b"Content-Type: " + kind + b"; charset=" + charset + b"\r\n")
    encoding = None
    if draw(st.booleans()):
        encoding = draw(st.sampled_from(_ENCODINGS))
        lines.append(b"Content-Transfer-Encoding: " + encoding + b"\r\n")
    head = b"".join(draw(st.permutations(lines)))
    if multipart:
        return head
    if clean:
        forms = _BODY_FORMS.get(encoding or b"", _CLEAN)
    return head + b"\r\n" + draw(_encodedText(forms)) + b"\r\n"


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    """
    A message: a header, then a single body or a multipart of such parts,
    one of them perhaps an attached message; two in three clean (see
    L{_part}).
    """
    clean = draw(st.sampled_from([True, True, False]))
    if not draw(st.booleans()):
        return draw(_part(False, clean))
    head = draw(_part(False, clean, multipart=True))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        part = draw(_part(True, clean))
        if draw(st.booleans()):
            part = b"Content-Type: message/rfc822\r\n\r\n" + part
        parts.append(part)
    body = b"".join(b"--b\r\n" + p for p in parts) + b"--b--\r\n"
    return head + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body


def _decoded(raw: bytes) -> list[str]:
    """
    @return: the texts the full search looks at: each header (the top
        one and attached messages') and each C{text/*} body, decoded.
    """
    top = parseStructure(raw)
    parts = top.walk()
    heads = [top, *(p.message for p in parts if p.message is not None)]
    texts = [decodeHeader(b" ".join(f.raw for f in each.fields)) for each in heads]
    leaves = [p for p in parts if not p.children and p.message is None]
    return texts + [decodeBody(p, raw) for p in leaves if p.mainType.lower() == b"text"]


@st.composite
def _needles(draw: st.DrawFn, raw: bytes) -> str:
    """
    A search string: often a piece of the text the full search sees, or
    of the raw message read as UTF-8 or latin-1, perhaps with its case
    changed; else arbitrary text.
    """
    source = draw(st.sampled_from(["any", "decoded", "decoded", "decoded", "utf-8", "latin-1"]))
    if source == "any":
        return draw(_TEXT)
    if source == "decoded":
        text = draw(st.sampled_from(_decoded(raw)))
    else:
        text = raw.decode(source, "replace")
    start = draw(st.integers(0, len(text)))
    piece = text[start : start + draw(st.integers(0, 8))]
    change = draw(st.sampled_from([str, str.upper, str.casefold, str.swapcase]))
    return change(piece)


class EquivalenceTests(SynchronousTestCase):
    """
    With the pre-test, TEXT, BODY and header keys give exactly what the
    full search gives.
    """

    @settings(max_examples=1500)
    @given(st.data())
    def test_sameAnswer(self, data: st.DataObject) -> None:
        raw = data.draw(_messages())
        needle = data.draw(_needles(raw))
        for key in (
            BodyKey(needle, True),
            BodyKey(needle, False),
            HeaderKey("Subject", needle),
            HeaderKey("From", needle),
        ):
            self.assertEqual(matches(view(raw), key), full(raw, key), (raw, key))

    @settings(max_examples=1000)
    @given(st.data())
    def test_sameAnswerOnePart(self, data: st.DataObject) -> None:
        """
        The same for a clean message of one part, its needle taken from
        its decoded body most of the time (the case where transfer
        encodings and charsets matter most).
        """
        raw = data.draw(_part(False, True))
        body = _decoded(raw)[-1]
        if data.draw(st.sampled_from([True, True, False])):
            start = data.draw(st.integers(0, len(body)))
            needle = body[start : start + data.draw(st.integers(1, 4))]
        else:
            needle = data.draw(_TEXT)
        for key in (BodyKey(needle, True), BodyKey(needle, False)):
            self.assertEqual(matches(view(raw), key), full(raw, key), (raw, key))

    @settings(max_examples=300)
    @given(st.data())
    def test_plainWhenPlain(self, data: st.DataObject) -> None:
        """
        The pre-test does decide: a plain message (no encodings) and a
        word that is not in it are answered without the full search.
        """
        words = data.draw(st.lists(st.sampled_from(["meeting", "report", "budget"]), max_size=9))
        raw = PLAIN.replace(b"Quetzal", " ".join(words).encode())
        self.assertTrue(Plain.of(raw).lacks("zzz", headers=True, bodies=True))
        self.assertFalse(matches(view(raw), BodyKey("zzz", True)))
