"""
Tests for L{mta.envelope}: address parsing and the envelope's JSON form.
"""

from __future__ import annotations

import json
import string
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mta.envelope import (
    MAX_HISTORY,
    NULL_ADDRESS,
    Address,
    AddressError,
    AddressNeedsUTF8,
    Attempt,
    Envelope,
    Recipient,
    hasControlCharacter,
    parseDomain,
    quoteLocalPart,
)

#: Every control character: C0, DEL and C1.
CONTROLS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]]


def isControl(c: str) -> bool:
    """
    @return: whether C{c} is a control character (category Cc).
    """
    return unicodedata.category(c) == "Cc"


#: Text that may be anything at all, lone surrogates included.
anyText = st.text(st.characters(codec=None), max_size=80)
#: Pieces of near-valid addresses.
atoms = st.text(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~", min_size=1)
unicodeAtoms = st.text(st.characters(min_codepoint=0xA0, categories=("L", "N")), min_size=1)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
controls = st.sampled_from(CONTROLS)


@st.composite
def nearAddresses(draw: st.DrawFn) -> str:
    """
    Build an address-like string: a dot-string or quoted local part,
    ASCII or UTF-8, at a domain, maybe with a control character or a
    stray quote, backslash or dot slipped in somewhere.
    """
    localAtoms = draw(st.lists(st.one_of(atoms, unicodeAtoms), min_size=1, max_size=3))
    local = ".".join(localAtoms)
    if draw(st.booleans()):
        local = '"' + draw(st.text(max_size=10)).replace('"', '\\"') + '"'
    domain = ".".join(draw(st.lists(st.one_of(labels, unicodeAtoms), min_size=1, max_size=3)))
    text = f"{local}@{domain}"
    for _ in range(draw(st.integers(0, 2))):
        extra = draw(st.one_of(controls, st.sampled_from(['"', "\\", ".", "@", " ", "["])))
        at = draw(st.integers(0, len(text)))
        text = text[:at] + extra + text[at:]
    return text


class AddressParseTests(SynchronousTestCase):
    """
    L{Address.parse}.
    """

    def assertRefused(self, text: str, utf8: bool = True) -> None:
        """
        Fail unless C{text} is refused with L{AddressError} (and not for
        want of SMTPUTF8).
        """
        with self.assertRaises(AddressError) as caught:
            Address.parse(text, utf8=utf8)
        self.assertNotIsInstance(caught.exception, AddressNeedsUTF8)

    def test_simple(self) -> None:
        """A plain address keeps its local part and lower-cases its domain."""
        self.assertEqual(Address.parse("Who@Remote.NET"), Address("Who", "remote.net"))

    def test_null(self) -> None:
        """The empty text is the null address."""
        self.assertIs(Address.parse(""), NULL_ADDRESS)
        self.assertTrue(NULL_ADDRESS.isNull)
        self.assertEqual(str(NULL_ADDRESS), "")

    def test_crInQuotedLocalPart(self) -> None:
        """The header-injection address of issue 8 is refused."""
        self.assertRefused('"a\rX-Injected: 1"@remote.test')

    def test_everyControlCharacter(self) -> None:
        """Every C0, DEL and C1 character is refused, quoted, escaped or bare."""
        for c in CONTROLS:
            for text in (f"a{c}b@x.test", f'"a{c}b"@x.test', f'"a\\{c}"@x.test', f"a@x{c}.test"):
                self.assertRefused(text)

    def test_lineSeparators(self) -> None:
        """Unicode line and paragraph separators are refused like CR and LF."""
        self.assertRefused('"a\u2028b"@x.test')
        self.assertRefused("a\u2029b@x.test")

    def test_surrogate(self) -> None:
        """Text that was not valid UTF-8 (a lone surrogate) is refused."""
        self.assertRefused("a\udcff@x.test")

    def test_dotString(self) -> None:
        """Local parts are atoms of atext joined by single dots."""
        self.assertEqual(Address.parse("a.b+c@x.test").local, "a.b+c")
        self.assertEqual(Address.parse("!#$%&'*+-/=?^_`{|}~@x.test").local, "!#$%&'*+-/=?^_`{|}~")
        for bad in ("a..b", ".a", "a.", "a b", "a(b)", "a,b", "a:b", "a;b", "a<b", "a[b", "a\\b"):
            self.assertRefused(f"{bad}@x.test")

    def test_quotedString(self) -> None:
        """Quoted local parts keep their quotes only where needed."""
        self.assertEqual(Address.parse('"alice"@x.test').local, "alice")
        self.assertEqual(Address.parse('"a b"@x.test').local, '"a b"')
        self.assertEqual(Address.parse('"a..b"@x.test').local, '"a..b"')
        self.assertEqual(Address.parse('"a\\b"@x.test').local, "ab")
        self.assertEqual(Address.parse('"a\\"b\\\\"@x.test').local, '"a\\"b\\\\"')
        self.assertEqual(Address.parse('"a@b"@x.test'), Address('"a@b"', "x.test"))

    def test_badQuotedString(self) -> None:
        """An unescaped quote or backslash, or a quote not closed, is refused."""
        for bad in ('"a"b"', '"a\\"', '"a', 'a"', '"a\\', '"a"."b"'):
            self.assertRefused(f"{bad}@x.test")

    def test_quotedPairOfNonASCII(self) -> None:
        """A quoted pair may escape only printable ASCII (quoted-pairSMTP)."""
        self.assertRefused('"a\\ü"@x.test')

    def test_noAt(self) -> None:
        """Text without a local part or domain is refused."""
        for bad in ("alice", "@x.test", "a@", "@"):
            self.assertRefused(bad)

    def test_lengths(self) -> None:
        """Local parts of 64 octets and addresses of 254 pass; longer do not."""
        self.assertEqual(len(Address.parse("a" * 64 + "@x.test").local), 64)
        self.assertRefused("a" * 65 + "@x.test")
        self.assertRefused("ä" * 33 + "@x.test")
        domain = ".".join(["b" * 63] * 3) + "." + "c" * 60
        self.assertEqual(len(str(Address.parse("a@" + domain))), 254)
        self.assertRefused("ab@" + domain)
        self.assertRefused("a@" + "b" * 64 + ".test")

    def test_domains(self) -> None:
        """Domains are dot-separated labels; one trailing dot is dropped."""
        self.assertEqual(Address.parse("a@X-1.Example.").domain, "x-1.example")
        self.assertEqual(Address.parse("a@under_score.test").domain, "under_score.test")
        for bad in ("x..test", ".x.test", "x.test..", "-x.test", "x-.test", "x!.test", "x test"):
            self.assertRefused(f"a@{bad}")

    def test_addressLiterals(self) -> None:
        """IPv4 and IPv6 address literals are accepted, and nothing else in brackets."""
        self.assertEqual(Address.parse("a@[192.0.2.1]").domain, "[192.0.2.1]")
        self.assertEqual(Address.parse("a@[ipv6:2001:DB8::1]").domain, "[IPv6:2001:db8::1]")
        self.assertEqual(
            Address.parse("a@[IPv6:::ffff:192.0.2.1]").domain, "[IPv6:::ffff:192.0.2.1]"
        )
        for bad in ("[192.0.2]", "[192.0.2.256]", "[2001:db8::1]", "[IPv6:fe80::1%eth0]", "[x:y]"):
            self.assertRefused(f"a@{bad}")

    def test_utf8NeedsSMTPUTF8(self) -> None:
        """Non-ASCII local parts or domains need utf8=True."""
        for text in ("ü@x.test", "a@例え.jp", '"ü x"@x.test'):
            self.assertRaises(AddressNeedsUTF8, Address.parse, text)
            self.assertTrue(Address.parse(text, utf8=True).isUTF8)
        self.assertFalse(Address.parse("a@x.test").isUTF8)

    def test_garbageIsNotUTF8Problem(self) -> None:
        """Non-ASCII text that is no address at all is a syntax error."""
        self.assertRefused("ü ü@x.test", utf8=False)

    def test_utf8LocalPart(self) -> None:
        """UTF-8 local parts keep their case; spaces of any script need quotes."""
        self.assertEqual(Address.parse("Jürgen@x.test", utf8=True).local, "Jürgen")
        self.assertRefused("a\u3000b@x.test")
        self.assertEqual(Address.parse('"a\u3000b"@x.test', utf8=True).local, '"a\u3000b"')

    def test_utf8Domain(self) -> None:
        """U-labels are NFC and lower case; punctuation and symbols are refused."""
        decomposed = "e\u0301"
        address = Address.parse(f"a@CAF{decomposed.upper()}.test", utf8=True)
        self.assertEqual(address.domain, "caf\u00e9.test")
        self.assertRefused("a@例え。jp")
        self.assertRefused("a@☃.test")

    def test_asciiDomain(self) -> None:
        """asciiDomain gives A-labels, so both spellings of a domain compare equal."""
        self.assertEqual(Address.parse("a@例え.JP", utf8=True).asciiDomain, "xn--r8jz45g.jp")
        self.assertEqual(Address.parse("a@xn--r8jz45g.jp").asciiDomain, "xn--r8jz45g.jp")
        self.assertEqual(Address.parse("a@faß.de", utf8=True).asciiDomain, "xn--fa-hia.de")
        self.assertEqual(Address.parse("a@[192.0.2.1]").asciiDomain, "[192.0.2.1]")

    def test_asciiDomainUnencodable(self) -> None:
        """A domain whose label cannot become an A-label is returned unchanged."""
        self.assertEqual(Address("a", "ü" * 70 + ".test").asciiDomain, "ü" * 70 + ".test")

    def test_canonical(self) -> None:
        """canonical() lower-cases the whole address."""
        self.assertEqual(Address.parse("Alice@X.test").canonical(), "alice@x.test")

    @given(anyText)
    @settings(deadline=None)
    def test_anyText(self, text: str) -> None:
        """Any text is refused, or parses to a control-free address that round-trips."""
        self.checkParse(text)

    @given(nearAddresses())
    @settings(deadline=None)
    def test_nearAddresses(self, text: str) -> None:
        """Near-valid addresses with injected characters are refused or round-trip."""
        self.checkParse(text)

    def checkParse(self, text: str) -> None:
        """
        Parse C{text} both ways; whatever comes back has no control
        character and parses again to itself.
        """
        for utf8 in (False, True):
            try:
                address = Address.parse(text, utf8=utf8)
            except AddressError:
                continue
            written = str(address)
            self.assertFalse(any(isControl(c) for c in written), written)
            self.assertFalse(hasControlCharacter(written), written)
            self.assertEqual(Address.parse(written, utf8=address.isUTF8), address)
            if not utf8:
                self.assertFalse(address.isUTF8)
            if any(isControl(c) for c in text):
                self.fail(f"accepted a control character: {text!r}")


class HelperTests(SynchronousTestCase):
    """
    L{quoteLocalPart}, L{parseDomain} and L{hasControlCharacter}.
    """

    def test_quoteLocalPart(self) -> None:
        """Quotes are added only when the text is not a dot-string."""
        self.assertEqual(quoteLocalPart("a.b"), "a.b")
        self.assertEqual(quoteLocalPart('a "b"'), '"a \\"b\\""')

    @given(st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Zl", "Zp"))))
    @settings(deadline=None)
    def test_quoteRoundTrip(self, local: str) -> None:
        """A quoted local part parses back to the same written form."""
        written = quoteLocalPart(local)
        if len(written.encode()) <= 64 and written:
            self.assertEqual(Address.parse(written + "@x.test", utf8=True).local, written)

    def test_parseDomainNeedsUTF8(self) -> None:
        """parseDomain refuses U-labels unless told UTF-8 is fine."""
        self.assertRaises(AddressNeedsUTF8, parseDomain, "例え.jp")
        self.assertEqual(parseDomain("例え.JP", utf8=True), "例え.jp")

    def test_hasControlCharacter(self) -> None:
        """C0, DEL, C1 and surrogates count; tabs too; ordinary text does not."""
        for text in ("a\tb", "\x7f", "\x85", "\udcff", "é\r"):
            self.assertTrue(hasControlCharacter(text), repr(text))
        for text in ("plain", "Jürgen 例え", ""):
            self.assertFalse(hasControlCharacter(text), repr(text))


def makeEnvelope(**kw: object) -> Envelope:
    """
    @return: an envelope with one recipient, changed by C{kw}.
    """
    fields: dict[str, object] = {
        "queueId": "Q1",
        "sender": Address.parse("s@remote.test"),
        "recipients": (
            Recipient(Address.parse("alice@example.com"), Address.parse("alice+x@example.com")),
        ),
        "arrival": 1000.0,
    }
    fields.update(kw)
    return Envelope(**fields)  # type: ignore[arg-type]


def throughJSON(envelope: Envelope) -> Envelope:
    """
    @return: C{envelope} written as JSON text and read back.
    """
    return Envelope.fromJSON(json.loads(json.dumps(envelope.toJSON())))


class EnvelopeJSONTests(SynchronousTestCase):
    """
    L{Envelope.toJSON} and L{Envelope.fromJSON}.
    """

    def test_defaultsOmitted(self) -> None:
        """An envelope without the new fields writes none of their keys."""
        data = makeEnvelope().toJSON()
        for key in ("smtputf8", "body_type", "require_tls", "dsn_ret", "dsn_envid"):
            self.assertNotIn(key, data)
        self.assertNotIn("notify", data["recipients"][0])
        self.assertNotIn("orcpt", data["recipients"][0])

    def test_oldEnvelopeLoads(self) -> None:
        """An envelope written before these fields loads with their defaults."""
        data = makeEnvelope().toJSON()
        loaded = Envelope.fromJSON(data)
        self.assertEqual(
            (loaded.smtputf8, loaded.bodyType, loaded.requireTLS, loaded.dsnRet, loaded.dsnEnvid),
            (False, "", False, "", ""),
        )
        self.assertEqual((loaded.recipients[0].notify, loaded.recipients[0].orcpt), ((), ""))

    def test_roundTrip(self) -> None:
        """Every field, UTF-8 addresses included, survives JSON."""
        recipient = Recipient(
            Address.parse("jürgen@例え.jp", utf8=True),
            Address.parse('"J Ü"@例え.jp', utf8=True),
            notify=("SUCCESS", "DELAY"),
            orcpt="utf-8;J Ü@例え.jp",
        )
        envelope = makeEnvelope(
            sender=Address.parse("ü@x.test", utf8=True),
            recipients=(recipient, Recipient(NULL_ADDRESS, NULL_ADDRESS, notify=("NEVER",))),
            smtputf8=True,
            bodyType="8BITMIME",
            requireTLS=True,
            dsnRet="HDRS",
            dsnEnvid="abc 123",
        )
        self.assertEqual(throughJSON(envelope), envelope)

    def test_withOutcomeKeepsDSN(self) -> None:
        """A recipient's NOTIFY and ORCPT survive an attempt."""
        r = Recipient(NULL_ADDRESS, NULL_ADDRESS, notify=("FAILURE",), orcpt="rfc822;a@b.c")
        after = r.withOutcome("failed", "550 no")
        self.assertEqual(
            (after.notify, after.orcpt, after.attempts), (("FAILURE",), "rfc822;a@b.c", 1)
        )

    def test_badValues(self) -> None:
        """Values this code never writes are refused with ValueError."""
        good = makeEnvelope().toJSON()
        bad: list[dict[str, object]] = [
            {"body_type": "BINARYMIME"},
            {"dsn_ret": "ALL"},
            {"smtputf8": "yes"},
            {"require_tls": 1},
            {"dsn_envid": "a\r\nb"},
            {"sender": '"a\rb"@x.test'},
        ]
        for change in bad:
            self.assertRaises(ValueError, Envelope.fromJSON, {**good, **change})
        for recipientChange in (
            {"notify": ["NEVER", "SUCCESS"]},
            {"notify": ["DELAY", "SUCCESS"]},
            {"notify": ["SOMETIMES"]},
            {"orcpt": "rfc822;a\nb"},
        ):
            recipients = [{**good["recipients"][0], **recipientChange}]
            self.assertRaises(ValueError, Envelope.fromJSON, {**good, "recipients": recipients})


class HistoryTests(SynchronousTestCase):
    """
    A recipient's delivery attempts, kept for C{mta queue show}.
    """

    def test_roundTrip(self) -> None:
        """Attempts survive the queue's JSON, empty fields left out."""
        r = Recipient(Address("b", "x.test"), Address("b", "x.test"))
        r = r.withOutcome("pending", "451 later", Attempt(1.5, "451 later", "mx[192.0.2.1]", "why"))
        r = r.withOutcome("delivered", "", Attempt(2.0, "250 ok"))
        envelope = Envelope("Q1", Address("a", "y.test"), (r,), 1.0)
        data = envelope.toJSON()
        self.assertEqual(data["recipients"][0]["history"][1], {"time": 2.0, "reply": "250 ok"})
        again = Envelope.fromJSON(data)
        self.assertEqual(again.recipients[0].history, r.history)
        self.assertEqual(again.recipients[0].history[0].remote, "mx[192.0.2.1]")

    def test_bounded(self) -> None:
        """Only the latest MAX_HISTORY attempts are kept."""
        r = Recipient(Address("b", "x.test"), Address("b", "x.test"))
        for i in range(MAX_HISTORY + 3):
            r = r.withOutcome("pending", "", Attempt(float(i), "451"))
        self.assertEqual(len(r.history), MAX_HISTORY)
        self.assertEqual(r.history[0].time, 3.0)
