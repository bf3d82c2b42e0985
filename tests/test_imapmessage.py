"""
Tests for L{mta.imap.message} and L{mta.imap.envelope}: MIME structure,
ENVELOPE, BODY/BODYSTRUCTURE and BODY[section]<partial>.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mta.imap.envelope import bodyStructure, envelope, parseAddresses
from mta.imap.message import Concat, Part, Section, parseContentType, parseStructure, section


def render(value: object) -> bytes:
    """
    Write a value as IMAP does: the module docstring's conventions.
    """
    if value is None:
        return b"NIL"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, bytes):
        if any(c >= 0x80 or c in b"\r\n\0" for c in value):
            return b"{%d}\r\n" % len(value) + value
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    if isinstance(value, Concat):
        return b"".join(render(each) for each in value)
    assert isinstance(value, tuple), value
    return b"(" + b" ".join(render(each) for each in value) + b")"


def text(size: int, lines: int, final: bool = False) -> bytes:
    """
    Make a body of C{size} octets in C{lines} CRLF lines (the last without
    its CRLF unless C{final}).
    """
    ends = lines if final else lines - 1
    content = size - 2 * ends
    each, extra = divmod(content, lines)
    rows = [b"x" * (each + (1 if i < extra else 0)) for i in range(lines)]
    return b"\r\n".join(rows) + (b"\r\n" if final else b"")


def crlf(message: bytes) -> bytes:
    """
    Turn LF line ends into CRLF, as the store keeps messages.
    """
    return message.replace(b"\n", b"\r\n")


RFC_HEADER = crlf(
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
    b"From: Terry Gray <gray@cac.washington.edu>\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\n"
    b"To: imap@cac.washington.edu\n"
    b"cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\n"
    b"MIME-Version: 1.0\n"
)

MIXED = crlf(
    b"From: a@example.org\n"
    b"Subject: mixed\n"
    b'Content-Type: multipart/mixed; boundary="outer"\n'
    b"\n"
    b"This is the preamble.\n"
    b"--outer\n"
    b'Content-Type: multipart/alternative; boundary="inner"\n'
    b"\n"
    b"--inner\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"Gr=C3=BC=C3=9Fe\n"
    b"--inner\n"
    b"Content-Type: text/html; charset=utf-8\n"
    b"\n"
    b"<p>hi</p>\n"
    b"--inner--\n"
    b"--outer\n"
    b"Content-Type: application/pdf; name=doc.pdf\n"
    b"Content-Transfer-Encoding: base64\n"
    b"Content-Disposition: attachment; filename=doc.pdf\n"
    b"Content-Language: en, fr\n"
    b"Content-Location: http://example.org/doc.pdf\n"
    b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    b"\n"
    b"JVBERi0xLjQK\n"
    b"--outer\n"
    b"Content-Type: message/rfc822\n"
    b"Content-Description: forwarded\n"
    b"\n"
    b"From: Bob <bob@example.net>\n"
    b"Subject: inner\n"
    b'Content-Type: multipart/mixed; boundary="deep"\n'
    b"\n"
    b"--deep\n"
    b"\n"
    b"first\n"
    b"--deep\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"second\n"
    b"--deep--\n"
    b"--outer--\n"
    b"epilogue\n"
)


class EnvelopeTests(SynchronousTestCase):
    """
    L{envelope} and the address lists in it.
    """

    def test_rfcExample(self) -> None:
        """
        The RFC 3501 7.4.2 example header gives the RFC's ENVELOPE.
        """
        self.assertEqual(
            render(envelope(RFC_HEADER + b"\r\nbody\r\n")),
            b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes"'
            b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
            b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
            b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
            b' ((NIL NIL "imap" "cac.washington.edu"))'
            b' ((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU"))'
            b' NIL NIL "<B27397-0100000@cac.washington.edu>")',
        )

    def test_missingHeaders(self) -> None:
        """
        A message without any envelope header has ten NILs.
        """
        self.assertEqual(
            render(envelope(b"X-A: b\r\n\r\nbody")), b"(" + b" ".join([b"NIL"] * 10) + b")"
        )

    def test_emptySenderDefaultsToFrom(self) -> None:
        """
        An empty Sender and an absent Reply-To are From's address list.
        """
        env = envelope(b"From: a@b.c\r\nSender:\r\nIn-Reply-To: <x@y>\r\n\r\n")
        self.assertEqual(env[3], env[2])
        self.assertEqual(env[4], env[2])
        self.assertEqual(env[8], b"<x@y>")

    def test_groups(self) -> None:
        """
        Groups open with a NIL-host address naming them and close with four NILs.
        """
        env = envelope(
            b"To: A Group:Ed Jones <c@a.test>,joe@where.test;, undisclosed-recipients:;\r\n\r\n"
        )
        self.assertEqual(
            render(env[5]),
            b'((NIL NIL "A Group" NIL)("Ed Jones" NIL "c" "a.test")(NIL NIL "joe" "where.test")'
            b'(NIL NIL NIL NIL)(NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))',
        )

    def test_unclosedGroup(self) -> None:
        """
        A group without its semicolon is closed at the end of the field.
        """
        self.assertEqual(
            parseAddresses(b"friends: a@b.c"),
            [(None, None, b"friends", None), (None, None, b"a", b"b.c"), (None, None, None, None)],
        )

    def test_encodedWordsKept(self) -> None:
        """
        RFC 2047 encoded words stay as written, in names and the subject.
        """
        env = envelope(
            b"Subject: =?utf-8?Q?gr=C3=BC=C3=9Fe?=\r\n"
            b"From: =?iso-8859-1?Q?J=F6rg?= <j@example.de>\r\n\r\n"
        )
        self.assertEqual(env[1], b"=?utf-8?Q?gr=C3=BC=C3=9Fe?=")
        self.assertEqual(render(env[2]), b'(("=?iso-8859-1?Q?J=F6rg?=" NIL "j" "example.de"))')

    def test_utf8Headers(self) -> None:
        """
        8-bit UTF-8 header text passes through as bytes (a literal on the wire).
        """
        subject = "grüße".encode()
        env = envelope(
            b"Subject: "
            + subject
            + b"\r\nFrom: J\xc3\xb6rg <j\xc3\xb6rg@b\xc3\xbccher.example>\r\n\r\n"
        )
        self.assertEqual(env[1], subject)
        self.assertEqual(render(env[1]), b"{7}\r\n" + subject)
        self.assertEqual(
            parseAddresses("Jörg <jörg@bücher.example>".encode()),
            [("Jörg".encode(), None, "jörg".encode(), "bücher.example".encode())],
        )

    def test_foldedSubject(self) -> None:
        """
        A folded field is unfolded: its CRLFs go, the white space stays.
        """
        env = envelope(b"Subject: one\r\n two\r\n\tthree\r\n\r\n")
        self.assertEqual(env[1], b"one two\tthree")

    def test_addressForms(self) -> None:
        """
        Quoted names, comments, routes, domain literals and missing parts.
        """
        self.assertEqual(
            parseAddresses(
                b'"Giant; \\"Big\\" Box" <sys@example.net>, a@b.c (Alice A.), '
                b"<@r1,@r2:x@y.z>, Q. Public <q@[192.0.2.1]>, nobody, <>"
            ),
            [
                (b'Giant; "Big" Box', None, b"sys", b"example.net"),
                (b"Alice A.", None, b"a", b"b.c"),
                (None, b"@r1,@r2", b"x", b"y.z"),
                (b"Q. Public", None, b"q", b"[192.0.2.1]"),
                (None, None, b"nobody", b"MISSING_DOMAIN"),
                (None, None, b"MISSING_MAILBOX", b"MISSING_DOMAIN"),
            ],
        )

    def test_emptyAddressList(self) -> None:
        """
        A To field with no address in it is NIL.
        """
        self.assertIsNone(envelope(b"To: \r\nCc: ,\r\n\r\n")[5])
        self.assertIsNone(envelope(b"To: \r\nCc: ,\r\n\r\n")[6])

    def test_envelopeOfPart(self) -> None:
        """
        An already parsed part gives the same envelope as the raw bytes.
        """
        self.assertEqual(envelope(parseStructure(MIXED)), envelope(MIXED))


class BodyStructureTests(SynchronousTestCase):
    """
    L{parseStructure} and L{bodyStructure}.
    """

    def test_rfcSinglePart(self) -> None:
        """
        The RFC 3501 7.4.2 single-part example.
        """
        body = text(3028, 92, final=True)
        message = (
            RFC_HEADER
            + b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
            + b"Content-Transfer-Encoding: 7BIT\r\n\r\n"
            + body
        )
        self.assertEqual(
            render(bodyStructure(parseStructure(message), extended=False)),
            b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)',
        )

    def test_rfcMultipart(self) -> None:
        """
        The RFC 3501 7.4.2 multipart example, as BODY.
        """
        message = (
            RFC_HEADER
            + b'Content-Type: MULTIPART/MIXED; BOUNDARY="b"\r\n\r\n--b\r\n'
            + b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\nContent-Transfer-Encoding: 7BIT\r\n\r\n"
            + text(1152, 23)
            + b"\r\n--b\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n"
            + b"Content-ID: <960723163407.20117h@cac.washington.edu>\r\n"
            + b"Content-Description: Compiler diff\r\nContent-Transfer-Encoding: BASE64\r\n\r\n"
            + text(4554, 73)
            + b"\r\n--b--\r\n"
        )
        self.assertEqual(
            render(bodyStructure(parseStructure(message), extended=False)),
            b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
            b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff")'
            b' "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73)'
            b' "MIXED")',
        )

    def test_nested(self) -> None:
        """
        Alternative inside mixed, an attachment with every extension field,
        and a message/rfc822 carrying its own envelope and multipart.
        """
        self.assertEqual(
            render(bodyStructure(parseStructure(MIXED))),
            b'((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 15 1 NIL NIL NIL NIL)'
            b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 9 1 NIL NIL NIL NIL)'
            b' "alternative" ("boundary" "inner") NIL NIL NIL)'
            b'("application" "pdf" ("name" "doc.pdf") NIL NIL "base64" 12 "Q2hlY2sgSW50ZWdyaXR5IQ=="'
            b' ("attachment" ("filename" "doc.pdf")) ("en" "fr") "http://example.org/doc.pdf")'
            b'("message" "rfc822" NIL NIL "forwarded" "7bit" 164'
            b' (NIL "inner" (("Bob" NIL "bob" "example.net")) (("Bob" NIL "bob" "example.net"))'
            b' (("Bob" NIL "bob" "example.net")) NIL NIL NIL NIL NIL)'
            b' (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 1 NIL NIL NIL NIL)'
            b'("text" "plain" NIL NIL NIL "7bit" 6 1 NIL NIL NIL NIL)'
            b' "mixed" ("boundary" "deep") NIL NIL NIL) 12 NIL NIL NIL NIL)'
            b' "mixed" ("boundary" "outer") NIL NIL NIL)',
        )

    def test_nonExtended(self) -> None:
        """
        BODY leaves out every extension field, in nested parts too.
        """
        value = render(bodyStructure(parseStructure(MIXED), extended=False))
        self.assertTrue(value.endswith(b'"7bit" 6 1) "mixed") 12) "mixed")'), value)
        self.assertNotIn(b"boundary", value)

    def test_offsets(self) -> None:
        """
        Each part's size is its stored body's octet count, CRLFs included.
        """
        top = parseStructure(MIXED)
        html = top.children[0].children[1]
        self.assertEqual(MIXED[html.bodyStart : html.bodyEnd], b"<p>hi</p>")
        self.assertEqual(
            MIXED[html.headerStart : html.bodyStart],
            b"Content-Type: text/html; charset=utf-8\r\n\r\n",
        )
        inner = top.children[2].message
        assert inner is not None
        self.assertEqual(MIXED[inner.headerStart : inner.headerStart + 5], b"From:")
        self.assertEqual(top.children[2].size, top.children[2].bodyEnd - top.children[2].bodyStart)

    def test_defaultType(self) -> None:
        """
        No Content-Type is text/plain; charset=us-ascii, and the lines count
        a last line without its CRLF.
        """
        self.assertEqual(
            render(bodyStructure(parseStructure(b"Subject: x\r\n\r\na\r\nb"))),
            b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 2 NIL NIL NIL NIL)',
        )

    def test_digestDefault(self) -> None:
        """
        Parts of a multipart/digest default to message/rfc822.
        """
        message = crlf(
            b'Content-Type: multipart/digest; boundary="d"\n\n--d\n\nSubject: one\n\nbody\n--d--\n'
        )
        part = parseStructure(message).children[0]
        self.assertEqual((part.mainType, part.subType), (b"message", b"rfc822"))
        assert part.message is not None
        self.assertEqual(part.message.header(b"subject"), b"one")

    def test_headerOnly(self) -> None:
        """
        A message without an empty line is all header, with an empty body.
        """
        part = parseStructure(b"Subject: x\r\nFrom: a@b")
        self.assertEqual((part.bodyStart, part.bodyEnd, part.size, part.lines), (21, 21, 0, 0))

    def test_rfc2231(self) -> None:
        """
        Parameter continuations are merged; an encoded one keeps its star and prefix.
        """
        parsed = parseContentType(
            b"application/x-stuff; title*0*=us-ascii'en'This%20is%20even%20more%20;"
            b' title*1*=%2A%2A%2Afun%2A%2A%2A%20; title*2="isn\'t it!"; name=a (comment)'
        )
        self.assertEqual(
            parsed,
            (
                b"application",
                b"x-stuff",
                (
                    (
                        b"title*",
                        b"us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn't it!",
                    ),
                    (b"name", b"a"),
                ),
            ),
        )

    def test_badContentType(self) -> None:
        """
        An unreadable Content-Type, or a multipart without a usable boundary,
        is text/plain.
        """
        for header in (b"garbage", b"multipart/mixed", b'multipart/mixed; boundary="nothere"'):
            part = parseStructure(b"Content-Type: " + header + b"\r\n\r\n--x\r\nhello\r\n")
            self.assertEqual(
                (part.mainType, part.subType, part.params, part.children),
                (b"text", b"plain", ((b"charset", b"us-ascii"),), []),
            )
            self.assertEqual(part.lines, 2)

    def test_noFinalBoundary(self) -> None:
        """
        A multipart whose closing delimiter is missing ends at the end of the message.
        """
        part = parseStructure(
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n"
        )
        self.assertEqual(len(part.children), 2)
        self.assertEqual(section(b"", Section((2,)), structure=part), b"")
        raw = (
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n"
        )
        self.assertEqual(section(raw, Section((2,))), b"two\r\n")

    def test_boundaryPrefix(self) -> None:
        """
        A line that merely starts with the delimiter is body, not a boundary.
        """
        raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--bb\r\n--b \r\n\r\ntwo\r\n--b--"
        part = parseStructure(raw)
        self.assertEqual(
            [section(raw, Section((n,)), structure=part) for n in (1, 2)], [b"one\r\n--bb", b"two"]
        )

    def test_deepNesting(self) -> None:
        """
        Thousands of nested multiparts parse without recursion errors.
        """
        raw = b"".join(
            b"Content-Type: multipart/mixed; boundary=%d\r\n\r\n--%d\r\n" % (n, n)
            for n in range(3000)
        )
        part = parseStructure(raw + b"\r\nend")
        self.assertEqual(part.mainType, b"multipart")
        self.assertTrue(bodyStructure(part))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=400))
    def test_arbitraryBytes(self, raw: bytes) -> None:
        """
        Any bytes parse, and every part lies within the message.
        """
        self._check(raw)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [
                    b"Content-Type: multipart/mixed; boundary=b",
                    b"Content-Type: message/rfc822",
                    b"--b",
                    b"--b--",
                    b"",
                    b"text",
                    b"Content-Type: multipart/digest; boundary=c",
                    b"--c",
                    b"Content-Type: text/plain; charset*0*=utf-8''%C3; a*1=b",
                    b"To: a:b@c;,<x>",
                    b" folded",
                ]
            ),
            max_size=40,
        ),
        st.sampled_from([b"\r\n", b"\n"]),
    )
    def test_mimeLikeBytes(self, lines: list[bytes], end: bytes) -> None:
        """
        MIME-shaped input, nested and broken at random, parses within bounds.
        """
        self._check(end.join(lines))

    def _check(self, raw: bytes) -> None:
        """
        Parse C{raw}, check the offsets and render everything about it.
        """
        top = parseStructure(raw)
        for part in top.walk():
            self.assertTrue(0 <= part.headerStart <= part.bodyStart <= part.bodyEnd <= len(raw))
        render(bodyStructure(top))
        render(envelope(top))
        for spec in (Section((1, 1)), Section((2,), b"MIME"), Section((1,), b"TEXT")):
            section(raw, spec, structure=top)


class SectionTests(SynchronousTestCase):
    """
    L{section} and L{Section.parse}.
    """

    def fetch(
        self, spec: bytes, partial: tuple[int, int] | None = None, raw: bytes = MIXED
    ) -> bytes:
        """
        @return: C{BODY[spec]<partial>} of C{raw}.
        """
        return section(raw, Section.parse(spec), partial)

    def test_whole(self) -> None:
        """
        BODY[] (RFC822) is the message; HEADER and TEXT split it at the empty line.
        """
        header, _, body = MIXED.partition(b"\r\n\r\n")
        self.assertEqual(self.fetch(b""), MIXED)
        self.assertEqual(self.fetch(b"HEADER"), header + b"\r\n\r\n")
        self.assertEqual(self.fetch(b"TEXT"), body)

    def test_headerFields(self) -> None:
        """
        HEADER.FIELDS keeps the named fields as written, in message order,
        then the empty line; .NOT keeps the others.
        """
        raw = b"Subject: a\r\n b\r\nFrom: x@y\r\nsubject: again\r\nTo: z@w\r\n\r\nbody"
        self.assertEqual(
            self.fetch(b"HEADER.FIELDS (SUBJECT)", raw=raw),
            b"Subject: a\r\n b\r\nsubject: again\r\n\r\n",
        )
        self.assertEqual(
            self.fetch(b"HEADER.FIELDS.NOT (subject from)", raw=raw), b"To: z@w\r\n\r\n"
        )
        self.assertEqual(self.fetch(b"HEADER.FIELDS (X-None)", raw=raw), b"\r\n")

    def test_parts(self) -> None:
        """
        Part numbers walk into multiparts and through message/rfc822.
        """
        self.assertEqual(self.fetch(b"1.1"), b"Gr=C3=BC=C3=9Fe")
        self.assertEqual(self.fetch(b"1.2"), b"<p>hi</p>")
        self.assertEqual(self.fetch(b"1.2.MIME"), b"Content-Type: text/html; charset=utf-8\r\n\r\n")
        self.assertEqual(self.fetch(b"3.1"), b"first")
        self.assertEqual(self.fetch(b"3.2.MIME"), b"Content-Type: text/plain\r\n\r\n")
        self.assertTrue(self.fetch(b"3").startswith(b"From: Bob"))
        self.assertTrue(self.fetch(b"3").endswith(b"--deep--"))
        self.assertTrue(self.fetch(b"1").startswith(b"--inner\r\n"))

    def test_embeddedMessage(self) -> None:
        """
        HEADER, TEXT and HEADER.FIELDS of a message/rfc822 part are its message's.
        """
        self.assertEqual(
            self.fetch(b"3.HEADER"),
            b'From: Bob <bob@example.net>\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary="deep"\r\n\r\n',
        )
        self.assertTrue(self.fetch(b"3.TEXT").startswith(b"--deep\r\n\r\nfirst"))
        self.assertEqual(self.fetch(b"3.HEADER.FIELDS (subject)"), b"Subject: inner\r\n\r\n")

    def test_missing(self) -> None:
        """
        Parts that do not exist, and HEADER/TEXT of a part that is not a
        message, are empty.
        """
        for spec in (b"4", b"1.3", b"2.1", b"2.HEADER", b"1.1.TEXT", b"3.3", b"9.MIME"):
            self.assertEqual(self.fetch(spec), b"", spec)

    def test_singlePart(self) -> None:
        """
        A message that is not multipart has one part, its body; 1.MIME is its header.
        """
        raw = b"Subject: x\r\n\r\nhello\r\n"
        self.assertEqual(self.fetch(b"1", raw=raw), b"hello\r\n")
        self.assertEqual(self.fetch(b"1.MIME", raw=raw), b"Subject: x\r\n\r\n")
        self.assertEqual(self.fetch(b"2", raw=raw), b"")

    def test_partial(self) -> None:
        """
        <start.length> slices the section; past its end is empty.
        """
        self.assertEqual(self.fetch(b"1.2", (3, 2)), b"hi")
        self.assertEqual(self.fetch(b"1.2", (3, 100)), b"hi</p>")
        self.assertEqual(self.fetch(b"1.2", (50, 10)), b"")
        self.assertEqual(self.fetch(b"", (0, 4)), b"From")

    def test_parse(self) -> None:
        """
        Section specs parse in any case; malformed ones are refused.
        """
        self.assertEqual(
            Section.parse(b"1.2.header.fields (A b)"),
            Section((1, 2), b"HEADER.FIELDS", (b"A", b"b")),
        )
        self.assertEqual(Section.parse(b"TEXT"), Section((), b"TEXT"))
        self.assertEqual(Section.parse(b"3"), Section((3,)))
        for bad in (b"MIME", b"0", b"1.x", b"HEADER.FIELDS", b"(A)", b"1..2"):
            self.assertRaises(ValueError, Section.parse, bad)

    def test_partIsMultipart(self) -> None:
        """
        The part tree types say what they hold.
        """
        top = parseStructure(MIXED)
        self.assertIsInstance(top, Part)
        self.assertTrue(top.isMultipart)
        self.assertEqual(len(top.walk()), 9)


class TopLevelSectionTests(SynchronousTestCase):
    """
    BODY[HEADER] and BODY[TEXT] of the whole message take a short cut that
    must agree with the full MIME parse.
    """

    @settings(deadline=None)
    @given(st.binary(max_size=300))
    def test_shortCutAgrees(self, raw: bytes) -> None:
        """For any bytes, HEADER and TEXT are the same with and without the parsed tree."""
        structure = parseStructure(raw)
        for text in (b"HEADER", b"TEXT"):
            spec = Section((), text, ())
            self.assertEqual(section(raw, spec), section(raw, spec, None, structure))
