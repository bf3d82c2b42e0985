"""
Tests for L{mta.smtp.params}: the arguments of MAIL and RCPT.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mta.envelope import NULL_ADDRESS, Address
from mta.errors import Reply
from mta.smtp import params as P
from mta.smtp import replies as R
from mta.smtp.params import (
    MailParams,
    ParamError,
    RcptParams,
    parseMail,
    parseMailParams,
    parsePath,
    parseRcpt,
    parseRcptParams,
    utf8AddressDecode,
    utf8AddressEncode,
    xtextDecode,
    xtextEncode,
)
from tests.test_envelope import nearAddresses

SENDER_SYNTAX = Reply(501, "5.1.7 Bad sender address syntax")
RCPT_SYNTAX = Reply(501, "5.1.3 Bad recipient address syntax")
MAX = 10_000_000


class ReplyAssertions(SynchronousTestCase):
    """
    A test case that checks which reply a L{ParamError} carries.
    """

    def assertReply(self, reply: Reply, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        """
        Fail unless C{f(*args, **kw)} raises L{ParamError} with C{reply}.
        """
        with self.assertRaises(ParamError) as caught:
            f(*args, **kw)
        self.assertEqual(caught.exception.reply, reply)


class ParsePathTests(ReplyAssertions):
    """
    L{parsePath}.
    """

    def test_forms(self) -> None:
        """Bracketed, bare, spaced and source-routed paths parse."""
        self.assertEqual(parsePath("FROM:<a@b.c>", "FROM"), (Address("a", "b.c"), []))
        self.assertEqual(parsePath("from: <a@B.c>", "FROM")[0], Address("a", "b.c"))
        self.assertEqual(parsePath("FROM:a@b.c", "FROM")[0], Address("a", "b.c"))
        self.assertEqual(parsePath("TO:<@x,@[192.0.2.1]:a@b.c>", "TO")[0], Address("a", "b.c"))

    def test_null(self) -> None:
        """<> is the null sender, and no recipient."""
        self.assertEqual(parsePath("FROM:<>", "FROM")[0], NULL_ADDRESS)
        self.assertReply(RCPT_SYNTAX, parsePath, "TO:<>", "TO")

    def test_params(self) -> None:
        """Parameters come back in order, names upper case, values as written."""
        self.assertEqual(
            parsePath("FROM:<> SIZE=10  body=8bitmime SMTPUTF8", "FROM")[1],
            [("SIZE", "10"), ("BODY", "8bitmime"), ("SMTPUTF8", None)],
        )

    def test_quotedBracket(self) -> None:
        """A '>' inside a quoted local part does not end the path."""
        address, params = parsePath('TO:<"a>b"@c.d> NOTIFY=NEVER', "TO")
        self.assertEqual((address.local, params), ('"a>b"', [("NOTIFY", "NEVER")]))

    def test_badSyntax(self) -> None:
        """Malformed paths get 501 5.1.7 for FROM and 501 5.1.3 for TO."""
        for text in (
            "FROM <a@b.c>",
            "TO:<a@b.c>",
            "FROM:<a@b.c",
            "FROM:<a@b.c>x",
            "FROM:",
            "FROM:<a>",
        ):
            self.assertReply(SENDER_SYNTAX, parsePath, text, "FROM")
        for text in ("TO:<a..b@c.d>", "TO:<@x:>", "TO:<@x a@b.c>", "TO:<@:a@b.c>", "TO:a<b@c.d"):
            self.assertReply(RCPT_SYNTAX, parsePath, text, "TO")

    def test_controlCharacters(self) -> None:
        """A control character anywhere, parameters included, is a syntax error."""
        for text in (
            'FROM:<"a\rX-Injected: 1"@remote.test>',
            "FROM:<a@b.c> SIZE=1\x00",
            "FROM:<a@b.c>\tSIZE=1",
            "FROM:<a@b.c> X=\x85",
            "FR\nOM:<a@b.c>",
        ):
            self.assertReply(SENDER_SYNTAX, parsePath, text, "FROM")

    def test_needsUTF8(self) -> None:
        """Non-ASCII addresses without UTF-8 get 553 5.6.7."""
        self.assertReply(P.S553_NEEDS_UTF8, parsePath, "TO:<ü@x.test>", "TO", utf8=False)
        self.assertReply(P.S553_NEEDS_UTF8, parsePath, "TO:<a@例え.jp>", "TO", utf8=False)
        self.assertEqual(parsePath("TO:<ü@例え.jp>", "TO")[0], Address("ü", "例え.jp"))

    def test_badParameterSyntax(self) -> None:
        """Malformed parameters get 501 5.5.4."""
        for text in ("FROM:<> SIZE=", "FROM:<> =1", "FROM:<> -X=1", "FROM:<> A=b=c", "FROM:<> A_B"):
            self.assertReply(P.S501_PARAM_SYNTAX, parsePath, text, "FROM")
        self.assertReply(P.S501_PARAM_SYNTAX, parsePath, "TO:<a@b.c> X=ü", "TO", utf8=False)

    @given(st.text(st.characters(codec=None), max_size=60), st.sampled_from(["FROM", "TO"]))
    @settings(deadline=None)
    def test_anyText(self, text: str, keyword: str) -> None:
        """Any argument gives a control-free address or a ParamError, never another error."""
        self.checkPath(keyword + ":" + text, keyword)

    @given(
        st.sampled_from(["FROM", "TO"]),
        st.one_of(
            st.sampled_from(["a@b.test", '"x y"@b.test', "ü@例え.jp", "@r.test:a@b.test"]),
            nearAddresses(),
            st.text(string.ascii_letters + 'ü例."\\@<>, :[]' + "\r\n\x00\x7f\x85", max_size=30),
        ),
        st.lists(
            st.tuples(
                st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,5}", fullmatch=True),
                st.lists(
                    st.one_of(
                        st.sampled_from(string.ascii_letters + "ü+"),
                        st.sampled_from(["\r", "\n", "\x00", "\x85", "\u2028", " ", "="]),
                    ),
                    max_size=5,
                ).map("".join),
            ),
            max_size=3,
        ),
    )
    @settings(deadline=None, max_examples=300)
    def test_nearPaths(self, keyword: str, path: str, params: list[tuple[str, str]]) -> None:
        """Path-like arguments with injected characters parse cleanly or are refused."""
        words = " ".join(f"{key}={value}" for key, value in params)
        self.checkPath(f"{keyword}:<{path}> {words}", keyword)

    def checkPath(self, text: str, keyword: str) -> None:
        """
        Parse C{text}; what comes back has no control characters and its
        address round-trips.
        """
        for utf8 in (False, True):
            try:
                address, params = parsePath(text, keyword, utf8=utf8)
            except ParamError as e:
                self.assertIn(e.reply.code, (501, 553))
                continue
            written = str(address)
            for piece in [written, *(k + (v or "") for k, v in params)]:
                self.assertFalse(any(unicodedata.category(c) == "Cc" for c in piece), repr(piece))
            self.assertEqual(Address.parse(written, utf8=address.isUTF8), address)
            if not utf8:
                self.assertFalse(address.isUTF8)


class MailParamsTests(ReplyAssertions):
    """
    L{parseMailParams} and L{parseMail}.
    """

    def test_none(self) -> None:
        """No parameters give the defaults."""
        self.assertEqual(parseMailParams([], maxSize=MAX), MailParams())

    def test_all(self) -> None:
        """Every known parameter is parsed and normalised."""
        params = parsePath(
            "FROM:<a@b.c> SIZE=1000 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2B1 "
            "REQUIRETLS AUTH=alice+40example.com",
            "FROM",
        )[1]
        self.assertEqual(
            parseMailParams(params, maxSize=MAX),
            MailParams(1000, "8BITMIME", True, "HDRS", "QQ+1", True, "alice@example.com"),
        )

    def test_size(self) -> None:
        """SIZE must be digits and no more than the limit."""
        self.assertEqual(parseMailParams([("SIZE", str(MAX))], maxSize=MAX).size, MAX)
        self.assertReply(R.S552_TOO_BIG, parseMailParams, [("SIZE", str(MAX + 1))], maxSize=MAX)
        self.assertReply(R.S552_TOO_BIG, parseMailParams, [("SIZE", "9" * 5000)], maxSize=MAX)
        for bad in ("", "1k", "-1", "١٢", None):
            self.assertReply(P.S501_SIZE, parseMailParams, [("SIZE", bad)], maxSize=MAX)

    def test_body(self) -> None:
        """BODY is 7BIT or 8BITMIME; BINARYMIME and others are refused."""
        self.assertEqual(parseMailParams([("BODY", "7bit")], maxSize=MAX).body, "7BIT")
        for bad in ("BINARYMIME", "8BIT", None):
            self.assertReply(P.S501_BODY, parseMailParams, [("BODY", bad)], maxSize=MAX)

    def test_flagsTakeNoValue(self) -> None:
        """SMTPUTF8 and REQUIRETLS with a value are refused."""
        self.assertReply(P.S501_SMTPUTF8, parseMailParams, [("SMTPUTF8", "1")], maxSize=MAX)
        self.assertReply(P.S501_REQUIRETLS, parseMailParams, [("REQUIRETLS", "1")], maxSize=MAX)

    def test_ret(self) -> None:
        """RET is FULL or HDRS."""
        self.assertEqual(parseMailParams([("RET", "Full")], maxSize=MAX).ret, "FULL")
        for bad in ("ALL", None):
            self.assertReply(P.S501_RET, parseMailParams, [("RET", bad)], maxSize=MAX)

    def test_envid(self) -> None:
        """ENVID is xtext of printable ASCII, at most 100 characters decoded."""
        self.assertEqual(parseMailParams([("ENVID", "x" * 100)], maxSize=MAX).envid, "x" * 100)
        for bad in ("x" * 101, "a+0D+0Ab", "a+4", "a+ZZ", "+C3+A9", None):
            self.assertReply(P.S501_ENVID, parseMailParams, [("ENVID", bad)], maxSize=MAX)

    def test_auth(self) -> None:
        """AUTH is decoded xtext; <> passes; control characters do not."""
        self.assertEqual(parseMailParams([("AUTH", "<>")], maxSize=MAX).auth, "<>")
        for bad in ("a+0Ab", "a+", None):
            self.assertReply(P.S501_AUTH_PARAMETER, parseMailParams, [("AUTH", bad)], maxSize=MAX)

    def test_duplicate(self) -> None:
        """A parameter given twice is refused."""
        twice = [("SIZE", "1"), ("SIZE", "1")]
        self.assertReply(P.S501_DUPLICATE, parseMailParams, twice, maxSize=MAX)

    def test_unknown(self) -> None:
        """An unknown parameter gets 555, as does an RCPT one on MAIL."""
        for key in ("X-FOO", "NOTIFY"):
            self.assertReply(P.S555_PARAMETER, parseMailParams, [(key, "1")], maxSize=MAX)

    def test_parseMailUTF8(self) -> None:
        """parseMail takes a UTF-8 sender only with SMTPUTF8 in the same command."""
        sender, params = parseMail("FROM:<ü@例え.jp> SMTPUTF8", maxSize=MAX)
        self.assertEqual((sender, params.smtputf8), (Address("ü", "例え.jp"), True))
        self.assertReply(P.S553_NEEDS_UTF8, parseMail, "FROM:<ü@x.test>", maxSize=MAX)
        self.assertReply(SENDER_SYNTAX, parseMail, "FROM:<a b@x.test> SMTPUTF8", maxSize=MAX)


class RcptParamsTests(ReplyAssertions):
    """
    L{parseRcptParams} and L{parseRcpt}.
    """

    def test_none(self) -> None:
        """No parameters give the defaults."""
        self.assertEqual(parseRcptParams([]), RcptParams((), None))

    def test_notify(self) -> None:
        """NOTIFY keywords come back upper case in canonical order."""
        self.assertEqual(
            parseRcptParams([("NOTIFY", "delay,Success")]).notify, ("SUCCESS", "DELAY")
        )
        self.assertEqual(parseRcptParams([("NOTIFY", "never")]).notify, ("NEVER",))

    def test_badNotify(self) -> None:
        """NEVER with others, unknown or empty keywords, or no value, are refused."""
        for bad in ("NEVER,SUCCESS", "SOMETIMES", "SUCCESS,", "", None):
            self.assertReply(P.S501_NOTIFY, parseRcptParams, [("NOTIFY", bad)])

    def test_orcpt(self) -> None:
        """ORCPT's type is upper-cased and its xtext decoded."""
        parsed = parseRcptParams([("ORCPT", "rfc822;bob+2Bx@example.com")])
        self.assertEqual(parsed.orcpt, ("RFC822", "bob+x@example.com"))

    def test_orcptUTF8(self) -> None:
        """The utf-8 type decodes \\x{HEX} escapes and raw UTF-8 (RFC 6533)."""
        for encoded in ("J\\x{FC}rgen@\\x{4F8B}\\x{3048}.jp", "Jürgen@例え.jp"):
            parsed = parseRcptParams([("ORCPT", "UTF-8;" + encoded)])
            self.assertEqual(parsed.orcpt, ("UTF-8", "Jürgen@例え.jp"))

    def test_badOrcpt(self) -> None:
        """ORCPT without a type, bad escapes, or control characters are refused."""
        for bad in (
            "bob@example.com",
            ";bob@example.com",
            "rfc822;",
            "rfc822;a+0D+0Ab@c.d",
            "rfc822;a+4",
            "utf-8;a\\x{D}b@c.d",
            "utf-8;a\\x{0041}@c.d",
            "utf-8;a\\x{41}@c.d",
            "utf-8;a\\x{D800}@c.d",
            "utf-8;a\\b@c.d",
            "utf-8;a+b@c.d",
            "utf-8;not an address",
            "rfc822;" + "a" * 500,
            None,
        ):
            self.assertReply(P.S501_ORCPT, parseRcptParams, [("ORCPT", bad)])

    def test_duplicateAndUnknown(self) -> None:
        """A parameter given twice gets 501; unknown or MAIL-only ones 555."""
        twice = [("NOTIFY", "NEVER"), ("NOTIFY", "NEVER")]
        self.assertReply(P.S501_DUPLICATE, parseRcptParams, twice)
        self.assertReply(P.S555_PARAMETER, parseRcptParams, [("SIZE", "1")])

    def test_parseRcpt(self) -> None:
        """parseRcpt parses the path with the transaction's UTF-8 setting."""
        rcpt, params = parseRcpt("TO:<a@b.c> NOTIFY=FAILURE", utf8=False)
        self.assertEqual((rcpt, params.notify), (Address("a", "b.c"), ("FAILURE",)))
        self.assertReply(P.S553_NEEDS_UTF8, parseRcpt, "TO:<ü@b.c>", utf8=False)
        self.assertEqual(parseRcpt("TO:<ü@b.c>", utf8=True)[0], Address("ü", "b.c"))


class XtextTests(SynchronousTestCase):
    """
    L{xtextDecode}, L{xtextEncode}, L{utf8AddressDecode} and
    L{utf8AddressEncode}.
    """

    def test_xtext(self) -> None:
        """'+' and '=' and everything outside printable ASCII are hex-escaped."""
        self.assertEqual(xtextEncode("a+b=c d"), "a+2Bb+3Dc+20d")
        self.assertEqual(xtextDecode("a+2Bb+3dc"), "a+b=c")

    def test_badXtext(self) -> None:
        """Raw '=', spaces, non-ASCII, short escapes and bad UTF-8 are refused."""
        for bad in ("a=b", "a b", "ü", "+2", "+G0", "+FF"):
            self.assertRaises(ValueError, xtextDecode, bad)

    def test_utf8Address(self) -> None:
        """The RFC 6533 form escapes non-ASCII and '+', '=', '\\'."""
        self.assertEqual(utf8AddressEncode("ü+1@x"), "\\x{FC}\\x{2B}1@x")
        self.assertEqual(utf8AddressDecode("\\x{FC}\\x{2B}1@x"), "ü+1@x")

    @given(st.text(st.characters(codec="utf-8")))
    def test_xtextRoundTrip(self, text: str) -> None:
        """xtextDecode undoes xtextEncode, whose output is printable ASCII."""
        encoded = xtextEncode(text)
        self.assertTrue(all("!" <= c <= "~" and c != "=" for c in encoded))
        self.assertEqual(xtextDecode(encoded), text)

    @given(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1))
    def test_utf8AddressRoundTrip(self, text: str) -> None:
        """utf8AddressDecode undoes utf8AddressEncode."""
        self.assertEqual(utf8AddressDecode(utf8AddressEncode(text)), text)

    @given(st.text(st.characters(codec=None), max_size=40))
    def test_decodersNeverCrash(self, text: str) -> None:
        """The decoders raise ValueError or give text that is valid Unicode."""
        for decode in (xtextDecode, utf8AddressDecode):
            try:
                decoded = decode(text)
            except ValueError:
                continue
            self.assertEqual(decoded.encode("utf-8").decode("utf-8"), decoded)
