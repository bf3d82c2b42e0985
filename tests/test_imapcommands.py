"""
Tests for L{mta.imap.commands} and L{mta.imap.query}: the grammar of every
command the server parses, good and bad, and sequence sets.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from mta.imap.commands import NO_ARGUMENTS, Arguments
from mta.imap.parser import (
    And,
    Append,
    Authenticate,
    BodyKey,
    BodySection,
    Command,
    CommandError,
    Copy,
    Create,
    DateKey,
    Enable,
    Expunge,
    Fetch,
    FetchAttribute,
    FlagKey,
    HeaderKey,
    Id,
    ListMailboxes,
    Login,
    Mailbox,
    ModSeqKey,
    Not,
    Or,
    QResync,
    Rename,
    Search,
    SearchKey,
    Select,
    SequenceKey,
    SequenceSet,
    SizeKey,
    Sort,
    SortCriterion,
    Status,
    Store,
    UnsupportedCharset,
)
from mta.imap.syntax import parseSequenceSet
from tests.test_imapparser import parseOne

S = parseSequenceSet

SEEN = FlagKey("\\Seen")
FETCH_ALL = (
    FetchAttribute("FLAGS"),
    FetchAttribute("INTERNALDATE"),
    FetchAttribute("RFC822.SIZE"),
    FetchAttribute("ENVELOPE"),
)

#: (command line, expected name, uid, arguments): every command form.
GOOD: list[tuple[bytes, str, bool, Arguments]] = [
    (b"a1 CAPABILITY", "CAPABILITY", False, NO_ARGUMENTS),
    (b"a1 noop", "NOOP", False, NO_ARGUMENTS),
    (b"a1 LOGOUT", "LOGOUT", False, NO_ARGUMENTS),
    (b"a1 STARTTLS", "STARTTLS", False, NO_ARGUMENTS),
    (b"a1 CHECK", "CHECK", False, NO_ARGUMENTS),
    (b"a1 CLOSE", "CLOSE", False, NO_ARGUMENTS),
    (b"a1 UNSELECT", "UNSELECT", False, NO_ARGUMENTS),
    (b"a1 IDLE", "IDLE", False, NO_ARGUMENTS),
    (b"a1 NAMESPACE", "NAMESPACE", False, NO_ARGUMENTS),
    (b"a1 EXPUNGE", "EXPUNGE", False, Expunge()),
    (b"a1 UID EXPUNGE 3:5,9", "EXPUNGE", True, Expunge(S(b"3:5,9"))),
    (b"a1 AUTHENTICATE plain", "AUTHENTICATE", False, Authenticate("PLAIN")),
    (b"a1 AUTHENTICATE PLAIN =", "AUTHENTICATE", False, Authenticate("PLAIN", b"")),
    (
        b"a1 AUTHENTICATE PLAIN AGFsaWNlAHB3",
        "AUTHENTICATE",
        False,
        Authenticate("PLAIN", b"\x00alice\x00pw"),
    ),
    (b'a1 LOGIN alice "se cr\\"et\\\\"', "LOGIN", False, Login("alice", 'se cr"et\\')),
    (b"a1 LOGIN {5+}\r\nj\xc3\xb6rg {2+}\r\npw", "LOGIN", False, Login("jörg", "pw")),
    (b"a1 LOGIN alice]x pw", "LOGIN", False, Login("alice]x", "pw")),
    (b"a1 SELECT inbox", "SELECT", False, Select("INBOX")),
    (b'a1 EXAMINE "Sent Items"', "EXAMINE", False, Select("Sent Items")),
    (b"a1 SELECT x (CONDSTORE)", "SELECT", False, Select("x", condstore=True)),
    (b"a1 SELECT x (QRESYNC (1 2))", "SELECT", False, Select("x", qresync=QResync(1, 2))),
    (
        b"a1 SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541))",
        "SELECT",
        False,
        Select("INBOX", qresync=QResync(67890007, 90060115194045000, S(b"41:211,214:541"))),
    ),
    (
        b"a1 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:* (1:10 41:50)))",
        "SELECT",
        False,
        Select(
            "INBOX",
            qresync=QResync(67890007, 90060115194045000, S(b"1:*"), (S(b"1:10"), S(b"41:50"))),
        ),
    ),
    (
        b"a1 SELECT INBOX (QRESYNC (7 9 (1,3 41,43)))",
        "SELECT",
        False,
        Select("INBOX", qresync=QResync(7, 9, None, (S(b"1,3"), S(b"41,43")))),
    ),
    (b"a1 CREATE &ZeVnLIqe-", "CREATE", False, Create("日本語")),
    (b"a1 CREATE Arch (USE (\\Archive))", "CREATE", False, Create("Arch", ("\\Archive",))),
    (b'a1 CREATE "R&AOk-sum&AOk-/x"', "CREATE", False, Create("Résumé/x")),
    (b'a1 CREATE "Caf\xc3\xa9"', "CREATE", False, Create("Café")),
    (b"a1 DELETE foo", "DELETE", False, Mailbox("foo")),
    (b"a1 RENAME INBOX Old", "RENAME", False, Rename("INBOX", "Old")),
    (b"a1 SUBSCRIBE &-x", "SUBSCRIBE", False, Mailbox("&x")),
    (b"a1 UNSUBSCRIBE {3+}\r\na b", "UNSUBSCRIBE", False, Mailbox("a b")),
    (b'a1 LIST "" *', "LIST", False, ListMailboxes("", ("*",))),
    (b"a1 LIST ~/Mail/ %", "LIST", False, ListMailboxes("~/Mail/", ("%",))),
    (b'a1 LSUB "" "news.*"', "LSUB", False, ListMailboxes("", ("news.*",))),
    (
        b'a1 LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" Sent/%) RETURN (CHILDREN)',
        "LIST",
        False,
        ListMailboxes(
            "",
            ("INBOX", "Sent/%"),
            frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
            frozenset({"CHILDREN"}),
            None,
            True,
        ),
    ),
    (
        b'a1 LIST "" % RETURN (SPECIAL-USE STATUS (MESSAGES UIDNEXT))',
        "LIST",
        False,
        ListMailboxes(
            "", ("%",), frozenset(), frozenset({"SPECIAL-USE"}), ("MESSAGES", "UIDNEXT"), True
        ),
    ),
    (
        b'a1 LIST (SPECIAL-USE) "" * RETURN ()',
        "LIST",
        False,
        ListMailboxes("", ("*",), frozenset({"SPECIAL-USE"}), extended=True),
    ),
    (
        b"a1 STATUS blurdybloop (UIDNEXT MESSAGES HIGHESTMODSEQ)",
        "STATUS",
        False,
        Status("blurdybloop", ("UIDNEXT", "MESSAGES", "HIGHESTMODSEQ")),
    ),
    (b"a1 APPEND Drafts {3+}\r\nabc", "APPEND", False, Append("Drafts", (), None, b"abc")),
    (
        b'a1 APPEND Sent (\\Seen $Fwd) "01-Feb-1994 21:03:11 -0130" {4+}\r\nx\r\ny',
        "APPEND",
        False,
        Append(
            "Sent",
            ("\\Seen", "$Fwd"),
            datetime(1994, 2, 1, 21, 3, 11, tzinfo=timezone(-timedelta(hours=1, minutes=30))),
            b"x\r\ny",
        ),
    ),
    (
        b'a1 APPEND x " 1-Feb-1994 21:03:11 +0000" {0+}\r\n',
        "APPEND",
        False,
        Append("x", (), datetime(1994, 2, 1, 21, 3, 11, tzinfo=UTC), b""),
    ),
    (b"a1 APPEND x () {1+}\r\nm", "APPEND", False, Append("x", (), None, b"m")),
    (b"a1 SEARCH ALL", "SEARCH", False, Search(And(()))),
    (
        b"a1 SEARCH FROM {5+}\r\nj\xc3\xb6rg",
        "SEARCH",
        False,
        Search(HeaderKey("From", "j\u00f6rg")),
    ),
    (
        b"a1 SEARCH CHARSET utf-8 SUBJECT {6+}\r\ngr\xc3\xbc\xc3\x9f",
        "SEARCH",
        False,
        Search(HeaderKey("Subject", "grüß"), "UTF-8"),
    ),
    (
        b"a1 SEARCH RETURN (MIN MAX COUNT ALL SAVE) UNSEEN",
        "SEARCH",
        False,
        Search(FlagKey("\\Seen", False), returnOptions=("MIN", "MAX", "COUNT", "ALL", "SAVE")),
    ),
    (
        b"a1 SEARCH RETURN () DELETED",
        "SEARCH",
        False,
        Search(FlagKey("\\Deleted"), returnOptions=("ALL",)),
    ),
    (
        b"a1 UID SEARCH OR FROM bob NOT (SEEN 1:5) $",
        "SEARCH",
        True,
        Search(
            And(
                (
                    Or(HeaderKey("From", "bob"), Not(And((SEEN, SequenceKey(S(b"1:5"), False))))),
                    SequenceKey(SequenceSet((), saved=True), False),
                )
            )
        ),
    ),
    (
        b'a1 SEARCH MODSEQ "/flags/\\\\Draft" all 620162338',
        "SEARCH",
        False,
        Search(ModSeqKey(620162338, "\\Draft", "all")),
    ),
    (b"a1 SEARCH MODSEQ 0", "SEARCH", False, Search(ModSeqKey(0))),
    (
        b"a1 SORT (REVERSE ARRIVAL subject) UTF-8 SINCE 1-Feb-1994",
        "SORT",
        False,
        Sort(
            (SortCriterion("ARRIVAL", True), SortCriterion("SUBJECT")),
            "UTF-8",
            DateKey("INTERNAL", "SINCE", date(1994, 2, 1)),
        ),
    ),
    (
        b"a1 UID SORT (DISPLAYFROM) US-ASCII ALL",
        "SORT",
        True,
        Sort((SortCriterion("DISPLAYFROM"),), "US-ASCII", And(())),
    ),
    (b"a1 FETCH 1:* ALL", "FETCH", False, Fetch(S(b"1:*"), FETCH_ALL)),
    (b"a1 FETCH 2 fast", "FETCH", False, Fetch(S(b"2"), FETCH_ALL[:3])),
    (b"a1 FETCH 2 FULL", "FETCH", False, Fetch(S(b"2"), (*FETCH_ALL, FetchAttribute("BODY")))),
    (b"a1 FETCH *:4 UID", "FETCH", False, Fetch(S(b"*:4"), (FetchAttribute("UID"),))),
    (
        b"a1 FETCH 1 (FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT "
        b"ENVELOPE BODY BODYSTRUCTURE UID MODSEQ)",
        "FETCH",
        False,
        Fetch(
            S(b"1"),
            tuple(
                FetchAttribute(n)
                for n in [
                    "FLAGS",
                    "INTERNALDATE",
                    "RFC822",
                    "RFC822.HEADER",
                    "RFC822.SIZE",
                    "RFC822.TEXT",
                    "ENVELOPE",
                    "BODY",
                    "BODYSTRUCTURE",
                    "UID",
                    "MODSEQ",
                ]
            ),
        ),
    ),
    (b"a1 FETCH 1 BODY[]", "FETCH", False, Fetch(S(b"1"), (BodySection(),))),
    (
        b"a1 FETCH 1 (BODY.PEEK[HEADER] BODY[TEXT]<0.2048> BODY[1.2.MIME] BODY[3] BODY[4.TEXT])",
        "FETCH",
        False,
        Fetch(
            S(b"1"),
            (
                BodySection(peek=True, specifier="HEADER"),
                BodySection(specifier="TEXT", partial=(0, 2048)),
                BodySection(part=(1, 2), specifier="MIME"),
                BodySection(part=(3,)),
                BodySection(part=(4,), specifier="TEXT"),
            ),
        ),
    ),
    (
        b'a1 UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (From "Subject" {2+}\r\nTo)]) '
        b"(CHANGEDSINCE 12345 VANISHED)",
        "FETCH",
        True,
        Fetch(
            S(b"1:*"),
            (
                FetchAttribute("UID"),
                FetchAttribute("FLAGS"),
                BodySection(True, (), "HEADER.FIELDS", ("FROM", "SUBJECT", "TO")),
            ),
            12345,
            True,
        ),
    ),
    (
        b"a1 FETCH 2,4:7 BODY[1.HEADER.FIELDS.NOT (X-Spam)]<10.5> (CHANGEDSINCE 7)",
        "FETCH",
        False,
        Fetch(
            S(b"2,4:7"),
            (BodySection(False, (1,), "HEADER.FIELDS.NOT", ("X-SPAM",), (10, 5)),),
            7,
        ),
    ),
    (b"a1 FETCH $ FLAGS", "FETCH", False, Fetch(SequenceSet((), True), (FetchAttribute("FLAGS"),))),
    (
        b"a1 STORE 1:3 +FLAGS (\\Deleted)",
        "STORE",
        False,
        Store(S(b"1:3"), "ADD", False, ("\\Deleted",)),
    ),
    (
        b"a1 STORE 1 -flags.silent \\Seen $Junk",
        "STORE",
        False,
        Store(S(b"1"), "REMOVE", True, ("\\Seen", "$Junk")),
    ),
    (b"a1 STORE 1 FLAGS ()", "STORE", False, Store(S(b"1"), "SET", False, ())),
    (
        b"a1 UID STORE 5 (UNCHANGEDSINCE 320162338) FLAGS.SILENT (\\Answered)",
        "STORE",
        True,
        Store(S(b"5"), "SET", True, ("\\Answered",), 320162338),
    ),
    (b"a1 COPY 2:4 MEETING", "COPY", False, Copy(S(b"2:4"), "MEETING")),
    (b"a1 UID COPY 2:4 inbox", "COPY", True, Copy(S(b"2:4"), "INBOX")),
    (b"a1 MOVE 1 Trash", "MOVE", False, Copy(S(b"1"), "Trash")),
    (b'a1 UID MOVE 42:69 "Junk"', "MOVE", True, Copy(S(b"42:69"), "Junk")),
    (b"a1 ID NIL", "ID", False, Id(None)),
    (
        b'a1 ID ("name" "sodr" "version" NIL "os" {5+}\r\nLi\r\nx)',
        "ID",
        False,
        Id((("name", "sodr"), ("version", None), ("os", "Li\r\nx"))),
    ),
    (b"a1 ID ()", "ID", False, Id(())),
    (b"a1 ENABLE condstore QRESYNC", "ENABLE", False, Enable(("CONDSTORE", "QRESYNC"))),
]

#: Every RFC 3501 search key, and what it parses into.
SEARCH_KEYS: list[tuple[bytes, SearchKey]] = [
    (b"ALL", And(())),
    (b"ANSWERED", FlagKey("\\Answered")),
    (b"BCC bob", HeaderKey("Bcc", "bob")),
    (b"BEFORE 1-Feb-1994", DateKey("INTERNAL", "BEFORE", date(1994, 2, 1))),
    (b'BODY "hello world"', BodyKey("hello world", False)),
    (b"CC x", HeaderKey("Cc", "x")),
    (b"DELETED", FlagKey("\\Deleted")),
    (b"DRAFT", FlagKey("\\Draft")),
    (b"FLAGGED", FlagKey("\\Flagged")),
    (b"FROM smith", HeaderKey("From", "smith")),
    (b'HEADER X-Mailer ""', HeaderKey("X-Mailer", "")),
    (b"KEYWORD $Forwarded", FlagKey("$Forwarded")),
    (b"LARGER 1024", SizeKey(True, 1024)),
    (b"NEW", And((FlagKey("\\Recent"), FlagKey("\\Seen", False)))),
    (b"NOT SEEN", Not(SEEN)),
    (b"OLD", FlagKey("\\Recent", False)),
    (b'ON "21-Dec-2020"', DateKey("INTERNAL", "ON", date(2020, 12, 21))),
    (b"OR SEEN FLAGGED", Or(SEEN, FlagKey("\\Flagged"))),
    (b"RECENT", FlagKey("\\Recent")),
    (b"SEEN", SEEN),
    (b"SENTBEFORE 1-Jan-2000", DateKey("SENT", "BEFORE", date(2000, 1, 1))),
    (b"SENTON 01-jan-2000", DateKey("SENT", "ON", date(2000, 1, 1))),
    (b"SENTSINCE 29-Feb-2024", DateKey("SENT", "SINCE", date(2024, 2, 29))),
    (b"SINCE 1-Feb-1994", DateKey("INTERNAL", "SINCE", date(1994, 2, 1))),
    (b"SMALLER 10", SizeKey(False, 10)),
    (b"SUBJECT hi", HeaderKey("Subject", "hi")),
    (b"TEXT hi", BodyKey("hi", True)),
    (b"TO x", HeaderKey("To", "x")),
    (b"UID 1:*", SequenceKey(S(b"1:*"), True)),
    (b"UNANSWERED", FlagKey("\\Answered", False)),
    (b"UNDELETED", FlagKey("\\Deleted", False)),
    (b"UNDRAFT", FlagKey("\\Draft", False)),
    (b"UNFLAGGED", FlagKey("\\Flagged", False)),
    (b"UNKEYWORD $Junk", FlagKey("$Junk", False)),
    (b"UNSEEN", FlagKey("\\Seen", False)),
    (b"2,4:*", SequenceKey(S(b"2,4:*"), False)),
    (b"(SEEN)", SEEN),
    (b"(SEEN (FLAGGED))", And((SEEN, FlagKey("\\Flagged")))),
    (b"MODSEQ 5", ModSeqKey(5)),
]

#: (command line, a word of the error message): commands refused with BAD.
BAD: list[tuple[bytes, str]] = [
    (b"a1 FOO", "unknown command"),
    (b"a1 UID NOOP", "unknown UID command"),
    (b"a1 NOOP extra", "unexpected text"),
    (b"a1  NOOP", "atom"),
    (b"a1 LOGIN alice", "missing argument"),
    (b'a1 LOGIN "unterminated', "unterminated"),
    (b'a1 LOGIN "bad\\x" pw', "escape"),
    (b"a1 LOGIN {3+}\r\n\xff\xfe\xfd pw", "UTF-8"),
    (b"a1 SELECT", "missing argument"),
    (b"a1 SELECT &Jjo", "encoding"),
    (b"a1 SELECT &AGE-", "encoding"),
    (b"a1 SELECT &2D3-", "encoding"),
    (b"a1 SELECT x (FOO)", "select parameter"),
    (b"a1 SELECT x (QRESYNC (0 1))", "non-zero"),
    (b"a1 CREATE x (USE)", "space"),
    (b'a1 LIST (RECURSIVEMATCH) "" *', "RECURSIVEMATCH"),
    (b'a1 LIST "" * RETURN (BOGUS)', "return option"),
    (b'a1 LIST "" ()', "empty pattern"),
    (b"a1 STATUS x ()", "empty status"),
    (b"a1 STATUS x (MESSAGES BOGUS)", "status item"),
    (b'a1 APPEND box (\\Seen) "x"', "date-time"),
    (b"a1 APPEND box abc", "literal"),
    (b'a1 APPEND box "31-Feb-1994 21:03:11 +0000" {1+}\r\nx', "date-time"),
    (b"a1 SEARCH", "missing argument"),
    (b"a1 SEARCH FOO", "unknown search key"),
    (b"a1 SEARCH ()", "empty search"),
    (b"a1 SEARCH SINCE 30-Feb-2020", "date"),
    (b"a1 SEARCH SINCE 1-Foo-2020", "date"),
    (b"a1 SEARCH LARGER x", "number"),
    (b"a1 SEARCH LARGER 99999999999", "too large"),
    (b"a1 SEARCH RETURN (BOGUS) ALL", "return option"),
    (b'a1 SEARCH MODSEQ "/other/x" all 1', "entry"),
    (b"a1 SEARCH CHARSET US-ASCII SUBJECT {2+}\r\n\xc3\xa9", "US-ASCII"),
    (b"a1 SORT () UTF-8 ALL", "empty sort"),
    (b"a1 SORT (BOGUS) UTF-8 ALL", "sort key"),
    (b"a1 SORT (DATE)", "missing argument"),
    (b"a1 FETCH 0 FLAGS", "sequence"),
    (b"a1 FETCH 1:x FLAGS", "sequence"),
    (b"a1 FETCH 1 BOGUS", "fetch item"),
    (b"a1 FETCH 1 ()", "empty fetch"),
    (b"a1 FETCH 1 BODY[MIME]", "section"),
    (b"a1 FETCH 1 BODY[1.MIMEX]", "section"),
    (b"a1 FETCH 1 BODY[HEADER.FIELDS ()]", "empty header"),
    (b'a1 FETCH 1 BODY[HEADER.FIELDS ("a:b")]', "field name"),
    (b"a1 FETCH 1 BODY[]<0.0>", "non-zero"),
    (b"a1 FETCH 1 FLAGS[]", "section"),
    (b"a1 FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)", "VANISHED"),
    (b"a1 UID FETCH 1 FLAGS (VANISHED)", "VANISHED"),
    (b"a1 FETCH 1 FLAGS (CHANGEDSINCE 0)", "non-zero"),
    (b"a1 STORE 1 FLAGZ (\\Seen)", "store item"),
    (b"a1 STORE 1 +FLAGS", "missing argument"),
    (b"a1 STORE 1 +FLAGS (\\*)", "atom"),
    (b"a1 STORE 1 (UNCHANGEDSINCE x) FLAGS ()", "number"),
    (b"a1 COPY 1", "missing argument"),
    (b"a1 UID EXPUNGE", "missing argument"),
    (b'a1 ID ("k" "v" "x")', "space"),
    (b'a1 ID ("' + b"k" * 31 + b'" "v")', "too long"),
    (b"a1 ID x", "NIL"),
    (b"a1 ENABLE", "missing argument"),
    (b"a1 AUTHENTICATE PLAIN !!!", "initial response"),
    (b"a1 AUTHENTICATE PLAIN AGFsaWNlAHB", "base64"),
    (b"a1 NOOP \xc3\xa9", "unexpected"),
    (b"a1 LOGIN a\xc3\xa9 pw", "8-bit"),
    (b'a1 LOGIN "a\x01" pw', "control"),
]


class GrammarTests(SynchronousTestCase):
    """
    Every command form parses into its typed value; malformed ones are BAD.
    """

    def test_goodCommands(self) -> None:
        """
        Each command in L{GOOD} parses into the expected L{Command}.
        """
        for line, name, uid, arguments in GOOD:
            self.assertEqual(parseOne(line), Command("a1", name, uid, arguments), line)

    def test_searchKeys(self) -> None:
        """
        Every RFC 3501 search key parses, alone and among others.
        """
        for text, key in SEARCH_KEYS:
            self.assertEqual(
                parseOne(b"t SEARCH " + text), Command("t", "SEARCH", False, Search(key)), text
            )
        every = b" ".join(text for text, _ in SEARCH_KEYS)
        event = parseOne(b"t UID SEARCH CHARSET UTF-8 " + every)
        assert isinstance(event, Command) and isinstance(event.arguments, Search)
        self.assertEqual(event.arguments.criteria, And(tuple(key for _, key in SEARCH_KEYS)))

    def test_badCommands(self) -> None:
        """
        Each command in L{BAD} gives a C{BAD} L{CommandError} with the tag and a reason.
        """
        for line, word in BAD:
            event = parseOne(line)
            self.assertIsInstance(event, CommandError, line)
            assert isinstance(event, CommandError)
            self.assertEqual(
                (event.tag, event.status, event.closeConnection), ("a1", "BAD", False), line
            )
            self.assertIn(word.lower(), event.message.lower(), line)

    def test_unsupportedCharset(self) -> None:
        """
        SEARCH and SORT with an unknown charset get C{NO [BADCHARSET ...]}.
        """
        for line in (b"a1 SEARCH CHARSET KOI8-R ALL", b"a1 SORT (DATE) X-UNKNOWN ALL"):
            event = parseOne(line)
            self.assertIsInstance(event, UnsupportedCharset)
            assert isinstance(event, CommandError)
            self.assertEqual((event.status, event.code), ("NO", "BADCHARSET (UTF-8 US-ASCII)"))

    def test_untaggedGarbage(self) -> None:
        """
        A line without a usable tag is answered C{* BAD}.
        """
        for line in (b"\xff\xfe\x00", b"+ NOOP", b"(((", b"{5}x"):
            event = parseOne(line)
            assert isinstance(event, CommandError)
            self.assertEqual((event.tag, event.status), ("*", "BAD"), line)

    def test_bodySectionNames(self) -> None:
        """
        A body section renders the name its FETCH response uses, never with C{.PEEK}.
        """
        item = BodySection(True, (1, 2), "HEADER.FIELDS", ("FROM", "TO"), (0, 10))
        self.assertEqual(item.responseName(), "BODY[1.2.HEADER.FIELDS (FROM TO)]<0>")
        self.assertEqual(BodySection().responseName(), "BODY[]")
        self.assertEqual(BodySection(part=(3,), specifier="MIME").section(), "3.MIME")


class SequenceSetTests(SynchronousTestCase):
    """
    Sequence sets resolve against the mailbox size or the largest UID.
    """

    def test_resolve(self) -> None:
        """
        Ranges are ordered, merged, reversed ones flipped and C{*} replaced.
        """
        self.assertEqual(S(b"1:*").resolve(5), [(1, 5)])
        self.assertEqual(S(b"*:4").resolve(10), [(4, 10)])
        self.assertEqual(S(b"2,4:7,3,9").resolve(100), [(2, 7), (9, 9)])
        self.assertEqual(S(b"*").resolve(0), [])
        self.assertEqual(S(b"5:7").resolve(3), [(5, 7)])
        self.assertEqual(list(S(b"3:1,2").numbers(9)), [1, 2, 3])
        self.assertTrue(S(b"1,5:*").contains(8, 9))
        self.assertFalse(S(b"1,5:*").contains(3, 9))

    def test_saved(self) -> None:
        """
        C{$} parses as the saved set, which only the server can resolve.
        """
        self.assertTrue(S(b"$").saved)
        self.assertRaises(ValueError, S(b"$").resolve, 3)

    def test_bad(self) -> None:
        """
        Zero, empty parts and overlong numbers are refused.
        """
        for text in (b"0", b"1,", b":3", b"1:0", b"4294967296", b"1::2", b"$,1", b""):
            self.assertRaises(ValueError, parseSequenceSet, text)
