"""
Tests for L{mta.imap.wire}: encoding IMAP responses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mta.imap import wire
from mta.imap.syntax import SequenceSet, parseSequenceSet


class StringTests(SynchronousTestCase):
    """
    Strings come out quoted when that is safe, as literals otherwise.
    """

    def test_quoted(self) -> None:
        """
        Quotes and backslashes are escaped inside a quoted string.
        """
        self.assertEqual(wire.string('say "hi" \\o/'), b'"say \\"hi\\" \\\\o/"')
        self.assertEqual(wire.string(""), b'""')

    def test_literalFallback(self) -> None:
        """
        CR, LF, NUL, other controls, 8-bit bytes and long text become literals.
        """
        for text in (b"a\r\nb", b"a\nb", b"\x00", b"\x07", "é".encode(), b"x" * 1025):
            self.assertEqual(wire.quoted(text), b"{%d}\r\n" % len(text) + text, text)
        self.assertEqual(wire.string("héllo"), b"{6}\r\nh\xc3\xa9llo")
        self.assertEqual(wire.quoted(b"x" * 1024)[:1], b'"')

    def test_astring(self) -> None:
        """
        An astring is bare when it can be, quoted when empty, spaced, C{NIL} or special.
        """
        self.assertEqual(wire.astring("INBOX"), b"INBOX")
        self.assertEqual(wire.astring("a]b"), b"a]b")
        for text, out in (("", b'""'), ("a b", b'"a b"'), ("nil", b'"nil"'), ("a(", b'"a("')):
            self.assertEqual(wire.astring(text), out)
        self.assertEqual(wire.astring("%*"), b'"%*"')

    def test_nstring(self) -> None:
        """
        C{None} is C{NIL}; anything else a string.
        """
        self.assertEqual(wire.nstring(None), b"NIL")
        self.assertEqual(wire.nstring("NIL"), b'"NIL"')


class EncodeTests(SynchronousTestCase):
    """
    L{wire.encode} renders value trees.
    """

    def test_values(self) -> None:
        """
        NIL, numbers, strings, atoms, literals and nested lists render as IMAP.
        """
        value = [None, 0, 42, "a", b"b", wire.Atom("\\Seen"), wire.Literal(b"x"), [[], ["c"]]]
        self.assertEqual(wire.encode(value), b'(NIL 0 42 "a" "b" \\Seen {1}\r\nx (() ("c")))')

    def test_refused(self) -> None:
        """
        Booleans, negative numbers and unknown types have no IMAP form.
        """
        self.assertRaises(TypeError, wire.encode, True)
        self.assertRaises(ValueError, wire.encode, -1)
        self.assertRaises(TypeError, wire.encode, 1.5)  # type: ignore[arg-type]

    def test_atomRefusesLineBreaks(self) -> None:
        """
        An atom cannot carry CR, LF, 8-bit text or nothing at all.
        """
        for text in ("a\r\nb", "é", "", "\x00"):
            self.assertRaises(ValueError, wire.Atom, text)

    def test_flagList(self) -> None:
        """
        Flags render as a parenthesised list of bare words.
        """
        self.assertEqual(wire.flagList(["\\Seen", "$Forwarded"]), b"(\\Seen $Forwarded)")
        self.assertEqual(wire.flagList([]), b"()")

    def test_dateTime(self) -> None:
        """
        INTERNALDATE renders as the quoted C{date-time}, with the value's own zone.
        """
        when = datetime(1994, 2, 1, 21, 3, 11, tzinfo=timezone(-timedelta(hours=7, minutes=30)))
        self.assertEqual(wire.dateTime(when), b'"01-Feb-1994 21:03:11 -0730"')
        self.assertEqual(
            wire.dateTime(datetime(2026, 12, 9, 1, 2, 3, tzinfo=UTC)),
            b'"09-Dec-2026 01:02:03 +0000"',
        )
        self.assertRaises(ValueError, wire.dateTime, datetime(2026, 1, 1))


class MailboxTests(SynchronousTestCase):
    """
    Mailbox names go out in modified UTF-7.
    """

    def test_modifiedUTF7(self) -> None:
        """
        The RFC 3501 examples and C{&} encode as specified.
        """
        self.assertEqual(
            wire.encodeModifiedUTF7("~peter/mail/台北/日本語"), b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        )
        self.assertEqual(wire.encodeModifiedUTF7("A&B"), b"A&-B")
        self.assertEqual(wire.encodeModifiedUTF7("Entwürfe"), b"Entw&APw-rfe")

    def test_mailbox(self) -> None:
        """
        A mailbox renders as an astring of its encoded name.
        """
        self.assertEqual(wire.mailbox("INBOX"), b"INBOX")
        self.assertEqual(wire.mailbox("Sent Items"), b'"Sent Items"')
        self.assertEqual(wire.mailbox("Été"), b"&AMk-t&AOk-")

    @given(st.text())
    def test_alwaysASCII(self, name: str) -> None:
        """
        Any name encodes to printable ASCII.
        """
        self.assertTrue(all(0x20 <= b < 0x7F for b in wire.encodeModifiedUTF7(name)))


class SequenceSetTests(SynchronousTestCase):
    """
    Sets of numbers render compactly.
    """

    def test_compact(self) -> None:
        """
        Runs become ranges, repeats and order do not matter.
        """
        self.assertEqual(wire.sequenceSet([1, 2, 3, 4, 5, 7]), "1:5,7")
        self.assertEqual(wire.sequenceSet([9, 3, 3, 1, 2]), "1:3,9")
        self.assertEqual(wire.sequenceSet([4]), "4")
        self.assertRaises(ValueError, wire.sequenceSet, [])
        self.assertRaises(ValueError, wire.sequenceSet, [0, 1])

    def test_asWritten(self) -> None:
        """
        A parsed set renders as written, C{*} and C{$} included.
        """
        for text in ("1:*", "*:4", "2,4:7,9", "*", "$"):
            self.assertEqual(wire.sequenceSetAsWritten(parseSequenceSet(text.encode())), text)
        self.assertEqual(wire.sequenceSetAsWritten(SequenceSet(((3, 3),))), "3")


class ResponseTests(SynchronousTestCase):
    """
    Response codes and whole response lines.
    """

    def test_codes(self) -> None:
        """
        Each response code renders in brackets with its arguments.
        """
        cases = [
            (wire.uidValidity(3857529045), b"[UIDVALIDITY 3857529045]"),
            (wire.uidNext(4392), b"[UIDNEXT 4392]"),
            (wire.unseen(12), b"[UNSEEN 12]"),
            (wire.highestModSeq(715194045007), b"[HIGHESTMODSEQ 715194045007]"),
            (wire.appendUid(38505, [3955]), b"[APPENDUID 38505 3955]"),
            (
                wire.copyUid(38505, [304, 319, 320], [3956, 3957, 3958]),
                b"[COPYUID 38505 304,319:320 3956:3958]",
            ),
            (wire.copyUid(7, [5, 2], [10, 11]), b"[COPYUID 7 5,2 10,11]"),
            (wire.permanentFlags(["\\Seen", "\\*"]), b"[PERMANENTFLAGS (\\Seen \\*)]"),
            (wire.modified([7, 9, 8]), b"[MODIFIED 7:9]"),
            (wire.capabilityCode(["IMAP4rev1", "IDLE"]), b"[CAPABILITY IMAP4rev1 IDLE]"),
            (wire.badCharset(), b"[BADCHARSET (UTF-8 US-ASCII)]"),
            (wire.TOOBIG, b"[TOOBIG]"),
            (wire.READ_WRITE, b"[READ-WRITE]"),
            (wire.TRYCREATE, b"[TRYCREATE]"),
        ]
        for code, rendered in cases:
            self.assertEqual(code.render(), rendered)
        self.assertRaises(ValueError, wire.copyUid, 1, [1, 2], [3])

    def test_tagged(self) -> None:
        """
        A tagged line carries status, code and text, with controls made harmless.
        """
        self.assertEqual(
            wire.tagged("a1", "OK", "SELECT completed", wire.READ_WRITE),
            b"a1 OK [READ-WRITE] SELECT completed\r\n",
        )
        self.assertEqual(
            wire.tagged("a2", "BAD", "bad\r\n* OK injected"), b"a2 BAD bad??* OK injected\r\n"
        )
        self.assertEqual(wire.tagged("a3", "NO", "", wire.TOOBIG), b"a3 NO [TOOBIG]\r\n")

    def test_untagged(self) -> None:
        """
        Untagged data and status lines start with C{*}.
        """
        self.assertEqual(wire.untagged(23, wire.Atom("EXISTS")), b"* 23 EXISTS\r\n")
        self.assertEqual(
            wire.untagged(
                wire.Atom("LIST"),
                [wire.Atom("\\HasNoChildren")],
                "/",
                wire.Atom(wire.mailbox("Été").decode()),
            ),
            b'* LIST (\\HasNoChildren) "/" &AMk-t&AOk-\r\n',
        )
        self.assertEqual(wire.untaggedStatus("BYE", "Autologout"), b"* BYE Autologout\r\n")
        self.assertEqual(wire.continuation(), b"+ Ready\r\n")
        self.assertEqual(wire.continuation("go\r\n"), b"+ go??\r\n")

    def test_fetchResponse(self) -> None:
        """
        A FETCH response lists each item's name and encoded value.
        """
        line = wire.fetchResponse(
            12,
            [
                ("UID", 4827),
                ("FLAGS", [wire.Atom("\\Seen")]),
                (
                    "INTERNALDATE",
                    wire.Atom(wire.dateTime(datetime(1996, 7, 17, 2, 44, 25, tzinfo=UTC)).decode()),
                ),
                ("RFC822.SIZE", 44827),
                ("BODY[HEADER.FIELDS (SUBJECT)]", wire.Literal(b"Subject: hi\r\n\r\n")),
                ("MODSEQ", [624140003]),
            ],
        )
        self.assertEqual(
            line,
            b'* 12 FETCH (UID 4827 FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 +0000" '
            b"RFC822.SIZE 44827 BODY[HEADER.FIELDS (SUBJECT)] {15}\r\nSubject: hi\r\n\r\n "
            b"MODSEQ (624140003))\r\n",
        )
