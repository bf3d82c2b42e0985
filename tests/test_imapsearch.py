"""
Tests for L{mta.imap.search} (SEARCH keys) and L{mta.imap.sort} (SORT
keys, base subjects).
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta

from twisted.trial.unittest import SynchronousTestCase

from mta.imap.search import (
    And,
    BadCharset,
    BodyKey,
    Context,
    DateKey,
    FlagKey,
    HeaderKey,
    MessageView,
    ModSeqKey,
    Not,
    Or,
    SearchKey,
    SequenceKey,
    SizeKey,
    checkCharset,
    decodeHeader,
    matches,
    simpleKey,
)
from mta.imap.sort import SortCriterion, baseSubject, sortKey, sortMessages
from mta.imap.syntax import SequenceSet

MESSAGE = (
    b"Date: Mon, 3 Mar 2025 23:30:00 -0800\r\n"
    b"From: =?iso-8859-1?Q?J=F6rg?= <joerg@example.de>\r\n"
    b"To: Mary <mary@example.org>, bob@example.net\r\n"
    b"Cc: carol@example.com\r\n"
    b"Bcc: dave@example.com\r\n"
    b"Subject: =?utf-8?B?R3LDvMOfZQ==?= =?utf-8?Q?_aus_K=C3=B6ln?=\r\n"
    b"X-Thing: Stra\xc3\x9fe\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n'
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain; charset=iso-8859-15\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Der Preis ist 5 =A4, sch=F6n=\r\n"
    b" gesagt.\r\n"
    b"--b\r\n"
    b"Content-Type: text/html; charset=windows-1252\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.encodebytes("<p>Smart “quotes”</p>".encode("cp1252")).replace(b"\n", b"\r\n")
    + b"--b\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"\r\n"
    b"needle-in-binary\r\n"
    b"--b\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: =?koi8-r?B?8NLJ18XU?=\r\n"
    b"\r\n"
    b"inner body in utf-8: \xc3\xa9t\xc3\xa9\r\n"
    b"--b--\r\n"
)


def view(
    raw: bytes = MESSAGE,
    flags: frozenset[str] = frozenset(),
    uid: int = 10,
    sequence: int = 3,
    internalDate: datetime = datetime(2025, 3, 5, 1, 0, tzinfo=UTC),
    recent: bool = False,
    modseq: int = 7,
) -> MessageView:
    """
    Make a view of C{raw} with the given index data.
    """
    return MessageView(uid, sequence, flags, internalDate, len(raw), lambda: raw, modseq, recent)


class SearchTests(SynchronousTestCase):
    """
    L{matches} for every key.
    """

    def check(self, key: SearchKey, expected: bool, message: MessageView | None = None) -> None:
        """
        Assert that C{key} matches C{message} (the default view) or not.
        """
        self.assertEqual(matches(message or view(), key, Context(5, 12)), expected, key)

    def test_flags(self) -> None:
        """
        Flag keys and their UN- forms, keywords in any case.
        """
        seen = view(flags=frozenset({"\\Seen", "\\Answered", "$Forwarded"}))
        for name, expected in [
            ("SEEN", True),
            ("UNSEEN", False),
            ("ANSWERED", True),
            ("UNANSWERED", False),
            ("DELETED", False),
            ("UNDELETED", True),
            ("DRAFT", False),
            ("UNDRAFT", True),
            ("FLAGGED", False),
            ("unflagged", True),
            ("ALL", True),
        ]:
            self.check(simpleKey(name), expected, seen)
        self.check(FlagKey("$forwarded"), True, seen)
        self.check(FlagKey("$Junk", False), True, seen)
        self.check(FlagKey("$Forwarded", False), False, seen)

    def test_recent(self) -> None:
        """
        RECENT, NEW (recent and unseen) and OLD.
        """
        fresh = view(recent=True)
        self.check(simpleKey("RECENT"), True, fresh)
        self.check(simpleKey("NEW"), True, fresh)
        self.check(simpleKey("OLD"), False, fresh)
        self.check(simpleKey("NEW"), False, view(recent=True, flags=frozenset({"\\Seen"})))
        self.check(simpleKey("OLD"), True)
        self.assertRaises(KeyError, simpleKey, "NOPE")

    def test_headers(self) -> None:
        """
        FROM, TO, CC, BCC, SUBJECT and HEADER match decoded text under Unicode case folding.
        """
        self.check(HeaderKey("From", "jörg"), True)
        self.check(HeaderKey("FROM", "JÖRG"), True)
        self.check(HeaderKey("From", "EXAMPLE.DE"), True)
        self.check(HeaderKey("To", "bob@"), True)
        self.check(HeaderKey("Cc", "carol"), True)
        self.check(HeaderKey("Bcc", "dave"), True)
        self.check(HeaderKey("Bcc", "carol"), False)
        self.check(HeaderKey("Subject", "grüße aus köln"), True)
        self.check(HeaderKey("Subject", "GRÜSSE"), True)
        self.check(HeaderKey("X-Thing", "STRASSE"), True)
        self.check(HeaderKey("X-Thing", "strassen"), False)
        self.check(HeaderKey("X-Thing", "straße"), True)
        self.check(HeaderKey("X-Thing", ""), True)
        self.check(HeaderKey("X-Missing", ""), False)

    def test_body(self) -> None:
        """
        BODY decodes quoted-printable and base64 in the parts' charsets,
        and looks into attached messages, not into binary attachments.
        """
        self.check(BodyKey("5 €, SCHÖN GESAGT", False), True)
        self.check(BodyKey("smart “quotes”", False), True)
        self.check(BodyKey("ÉTÉ", False), True)
        self.check(BodyKey("needle-in-binary", False), False)
        self.check(BodyKey("jörg", False), False)

    def test_text(self) -> None:
        """
        TEXT also searches every header, an attached message's included.
        """
        self.check(BodyKey("jörg", includeHeaders=True), True)
        self.check(BodyKey("привет", includeHeaders=True), True)
        self.check(BodyKey("schön", includeHeaders=True), True)
        self.check(BodyKey("nowhere", includeHeaders=True), False)

    def test_internalDates(self) -> None:
        """
        BEFORE, ON and SINCE compare the internal date's day.
        """
        for comparison, day, expected in [
            ("BEFORE", date(2025, 3, 5), False),
            ("BEFORE", date(2025, 3, 6), True),
            ("ON", date(2025, 3, 5), True),
            ("ON", date(2025, 3, 4), False),
            ("SINCE", date(2025, 3, 5), True),
            ("SINCE", date(2025, 3, 6), False),
        ]:
            self.check(DateKey("INTERNAL", comparison, day), expected)

    def test_sentDates(self) -> None:
        """
        SENT* compare the Date header's day in its own zone, else the internal date's.
        """
        self.check(DateKey("SENT", "ON", date(2025, 3, 3)), True)
        self.check(DateKey("SENT", "BEFORE", date(2025, 3, 4)), True)
        self.check(DateKey("SENT", "SINCE", date(2025, 3, 4)), False)
        undated = view(b"Subject: x\r\n\r\n")
        self.check(DateKey("SENT", "ON", date(2025, 3, 5)), True, undated)
        self.check(DateKey("SENT", "ON", date(2025, 3, 5)), True, view(b"Date: garbage\r\n\r\n"))

    def test_sizes(self) -> None:
        """
        LARGER and SMALLER are strict comparisons with RFC822.SIZE.
        """
        size = len(MESSAGE)
        self.check(SizeKey(True, size - 1), True)
        self.check(SizeKey(True, size), False)
        self.check(SizeKey(False, size + 1), True)
        self.check(SizeKey(False, size), False)

    def test_sequenceSets(self) -> None:
        """
        Sequence sets and UID sets, with * and reversed ranges.
        """
        self.check(SequenceKey(SequenceSet(((1, 2), (3, 3))), False), True)
        self.check(SequenceKey(SequenceSet(((4, None),)), False), False)
        self.check(SequenceKey(SequenceSet(((None, 2),)), False), True)
        self.check(SequenceKey(SequenceSet(((10, 10),)), True), True)
        self.check(SequenceKey(SequenceSet(((11, None),)), True), False)
        self.check(SequenceKey(SequenceSet(((None, None),)), True), False)

    def test_modseq(self) -> None:
        """
        MODSEQ n matches mod-sequences of n and above.
        """
        self.check(ModSeqKey(7), True)
        self.check(ModSeqKey(8), False)

    def test_combinations(self) -> None:
        """
        NOT, OR and AND-lists combine keys.
        """
        self.check(Not(simpleKey("SEEN")), True)
        self.check(Or(simpleKey("SEEN"), HeaderKey("To", "mary")), True)
        self.check(Or(simpleKey("SEEN"), HeaderKey("To", "zed")), False)
        self.check(And((HeaderKey("To", "mary"), SizeKey(True, 1))), True)
        self.check(And((HeaderKey("To", "mary"), SizeKey(True, 10**9))), False)

    def test_lazyLoad(self) -> None:
        """
        Keys answered from the index never load the message; others load it once.
        """
        loads: list[int] = []

        def load() -> bytes:
            loads.append(1)
            return MESSAGE

        message = MessageView(1, 1, frozenset(), datetime.now(UTC), 10, load)
        matches(
            message,
            And(
                (simpleKey("UNSEEN"), SizeKey(True, 1), SequenceKey(SequenceSet(((1, 1),)), False))
            ),
        )
        self.assertEqual(loads, [])
        matches(message, And((HeaderKey("To", "x"), BodyKey("y", False), BodyKey("z", True))))
        self.assertEqual(loads, [1])

    def test_charsets(self) -> None:
        """
        UTF-8 and US-ASCII are accepted; any other charset is BADCHARSET.
        """
        checkCharset("utf-8")
        checkCharset("US-ASCII")
        self.assertRaises(BadCharset, checkCharset, "ISO-8859-1")

    def test_decodeHeader(self) -> None:
        """
        Encoded words decode, white space between them goes, bad ones stay.
        """
        self.assertEqual(decodeHeader(b"=?UTF-8?Q?a?= =?UTF-8?Q?b?= c"), "ab c")
        self.assertEqual(decodeHeader(b"=?iso-8859-2*pl?Q?=B1?="), "ą")
        self.assertEqual(decodeHeader(b"=?x-unknown?Q?caf=C3=A9?="), "café")
        self.assertEqual(decodeHeader(b"=?utf-8?B?###?="), "=?utf-8?B?###?=")
        self.assertEqual(decodeHeader(b"caf\xe9"), "café")


class SortTests(SynchronousTestCase):
    """
    L{sortKey}, L{sortMessages} and L{baseSubject}.
    """

    def test_baseSubject(self) -> None:
        """
        RFC 5256 2.1 strips reply and forward markers, blobs and (fwd) trailers.
        """
        for subject, base in [
            (b"Re: hello", "hello"),
            (b"RE: re:   FWD: Fw: hello", "hello"),
            (b"Re: [list] Re[2]: hello (fwd)(FWD) ", "hello"),
            (b"[list] hello", "hello"),
            (b"[list]", "[list]"),
            (b"[fwd: Re: hello]", "hello"),
            (b"Re: [fwd: [fwd: hello (fwd)]]", "hello"),
            (b"re:hello\t\r\n  world", "hello world"),
            (b"=?utf-8?Q?Re=3A_gr=C3=BC=C3=9Fe?=", "grüße"),
            (b"Rebel: yes", "Rebel: yes"),
            (b"", ""),
        ]:
            self.assertEqual(baseSubject(subject), base, subject)

    def test_keys(self) -> None:
        """
        Each criterion orders as RFC 5256 says, ties by sequence number.
        """
        first = view(
            b"Date: Tue, 4 Mar 2025 10:00:00 +0000\r\nFrom: zed@a\r\nTo: amy@b\r\nCc: c@c\r\n"
            b"Subject: Re: beta\r\n\r\n",
            sequence=1,
            internalDate=datetime(2025, 3, 9, tzinfo=UTC),
        )
        second = view(
            b"Date: Tue, 4 Mar 2025 09:00:00 -0200\r\nFrom: Al <al@a>\r\nTo: Bo <bo@b>\r\n"
            b"Subject: Alpha\r\n\r\nlonger body",
            sequence=2,
            internalDate=datetime(2025, 3, 1, tzinfo=UTC),
        )
        third = view(
            b"Subject: [x] ALPHA\r\n\r\n", sequence=3, internalDate=datetime(2025, 3, 5, tzinfo=UTC)
        )
        messages = [third, second, first]

        def order(*criteria: SortCriterion) -> list[int]:
            return [m.sequence for m in sortMessages(messages, criteria)]

        self.assertEqual(order(SortCriterion("ARRIVAL")), [2, 3, 1])
        self.assertEqual(order(SortCriterion("DATE")), [1, 2, 3])
        self.assertEqual(order(SortCriterion("SIZE")), [3, 1, 2])
        self.assertEqual(order(SortCriterion("SUBJECT")), [2, 3, 1])
        self.assertEqual(order(SortCriterion("SUBJECT", reverse=True)), [1, 2, 3])
        self.assertEqual(order(SortCriterion("FROM")), [3, 2, 1])
        self.assertEqual(order(SortCriterion("TO")), [3, 1, 2])
        self.assertEqual(order(SortCriterion("CC")), [2, 3, 1])
        self.assertEqual(order(SortCriterion("CC", True), SortCriterion("ARRIVAL")), [1, 2, 3])
        self.assertEqual(sortKey(first, [SortCriterion("SIZE")])[-1], 1)
        self.assertRaises(ValueError, sortKey, first, [SortCriterion("NOPE")])

    def test_dateFallsBackToArrival(self) -> None:
        """
        A message without a usable Date sorts by its internal date, in UTC.
        """
        dated = view(b"Date: Tue, 4 Mar 2025 23:00:00 -0500\r\n\r\n", sequence=1)
        undated = view(b"\r\n", sequence=2, internalDate=datetime(2025, 3, 5, 3, 30, tzinfo=UTC))
        self.assertEqual(
            [m.sequence for m in sortMessages([dated, undated], [SortCriterion("DATE")])], [2, 1]
        )
        self.assertEqual(
            dated.internalDate - undated.internalDate, timedelta(hours=-2, minutes=-30)
        )
