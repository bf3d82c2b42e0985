"""
Tests for L{mta.imap.parser}: framing, limits, hostile input and properties
over any bytes (the grammar of each command is in L{tests.test_imapcommands}).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mta.imap import wire
from mta.imap.commands import NO_ARGUMENTS
from mta.imap.parser import (
    And,
    Append,
    Authenticate,
    Command,
    CommandError,
    CommandReader,
    CommandTooBig,
    ContinuationLine,
    ContinuationRequest,
    Fetch,
    FlagKey,
    Id,
    Limits,
    LineTooLong,
    LiteralChunk,
    LiteralStarted,
    LiteralTooBig,
    Login,
    ReaderEvent,
    Search,
    Select,
    SequenceSet,
    StreamedLiteral,
)
from mta.imap.syntax import decodeModifiedUTF7, parseSequenceSet

SEEN = FlagKey("\\Seen")


def drain(reader: CommandReader) -> list[ReaderEvent]:
    """
    Pull every event the reader can give now.
    """
    events = []
    while (event := reader.next()) is not None:
        events.append(event)
    return events


def readAll(data: bytes, limits: Limits | None = None) -> list[ReaderEvent]:
    """
    Feed C{data} to a new reader at once and return its events.
    """
    reader = CommandReader(limits)
    reader.feed(data)
    return drain(reader)


def parseOne(line: bytes) -> ReaderEvent:
    """
    Parse one command line (literals as C{{n+}} inside C{line}), ignoring continuations.
    """
    events = [e for e in readAll(line + b"\r\n") if not isinstance(e, ContinuationRequest)]
    assert len(events) == 1, events
    return events[0]


class FramingTests(SynchronousTestCase):
    """
    L{CommandReader} frames commands with literals out of a byte stream.
    """

    def test_synchronisingLiteral(self) -> None:
        """
        C{{n}} asks for a continuation; the command comes once the data has.
        """
        reader = CommandReader()
        reader.feed(b"a1 LOGIN {5}\r\n")
        self.assertEqual(drain(reader), [ContinuationRequest()])
        reader.feed(b"alice {2}\r\n")
        self.assertEqual(drain(reader), [ContinuationRequest()])
        reader.feed(b"pw\r\n")
        self.assertEqual(drain(reader), [Command("a1", "LOGIN", False, Login("alice", "pw"))])

    def test_literalPlus(self) -> None:
        """
        C{{n+}} (RFC 7888) asks for nothing: the data follows at once.
        """
        events = readAll(b"a1 LOGIN {5+}\r\nalice {2+}\r\npw\r\na2 NOOP\r\n")
        self.assertEqual(
            events,
            [
                Command("a1", "LOGIN", False, Login("alice", "pw")),
                Command("a2", "NOOP", False, NO_ARGUMENTS),
            ],
        )

    def test_byteByByte(self) -> None:
        """
        Feeding one byte at a time gives the same events as feeding all at once.
        """
        data = b"a1 APPEND x {11}\r\nb2 LOGOUT\r\n\r\na3 NOOP\r\n"
        reader = CommandReader()
        events = []
        for i in range(len(data)):
            reader.feed(data[i : i + 1])
            events.extend(drain(reader))
        self.assertEqual(events, readAll(data))
        self.assertEqual(
            events[1], Command("a1", "APPEND", False, Append("x", (), None, b"b2 LOGOUT\r\n"))
        )

    def test_literalIsNeverACommand(self) -> None:
        """
        A command inside literal data is data, not a command.
        """
        events = readAll(b"a1 APPEND x {12+}\r\nz LOGOUT\r\n\r\n\r\n")
        self.assertEqual(len(events), 1)
        assert isinstance(events[0], Command)
        self.assertEqual(events[0].name, "APPEND")

    def test_bareLineFeedAndEmptyLines(self) -> None:
        """
        A bare LF ends a line too, and empty lines between commands are ignored.
        """
        self.assertEqual(
            readAll(b"\r\n\r\na NOOP\n  \r\nb NOOP\r\n"),
            [Command("a", "NOOP", False, NO_ARGUMENTS), Command("b", "NOOP", False, NO_ARGUMENTS)],
        )

    def test_expectLine(self) -> None:
        """
        After L{CommandReader.expectLine} the next line comes raw (IDLE's DONE),
        even when pipelined behind the command.
        """
        reader = CommandReader()
        reader.feed(b"a IDLE\r\nDONE\r\nb NOOP\r\n")
        self.assertEqual(reader.next(), Command("a", "IDLE", False, NO_ARGUMENTS))
        reader.expectLine()
        self.assertEqual(reader.next(), ContinuationLine(b"DONE"))
        self.assertEqual(reader.next(), Command("b", "NOOP", False, NO_ARGUMENTS))

    def test_authenticateExchange(self) -> None:
        """
        SASL response lines, even empty ones, come as L{ContinuationLine}s.
        """
        reader = CommandReader()
        reader.feed(b"a AUTHENTICATE LOGIN\r\nYWxpY2U=\r\n\r\n")
        self.assertEqual(reader.next(), Command("a", "AUTHENTICATE", False, Authenticate("LOGIN")))
        reader.expectLine()
        self.assertEqual(reader.next(), ContinuationLine(b"YWxpY2U="))
        reader.expectLine()
        self.assertEqual(reader.next(), ContinuationLine(b""))
        self.assertIsNone(reader.next())

    def test_errorThenNextCommand(self) -> None:
        """
        A malformed command is refused and the next one parses.
        """
        events = readAll(b"a BOGUS\r\nb NOOP\r\n")
        self.assertIsInstance(events[0], CommandError)
        self.assertEqual(events[1], Command("b", "NOOP", False, NO_ARGUMENTS))

    def test_disconnectMidLiteral(self) -> None:
        """
        An unterminated literal followed by a disconnect leaves nothing.
        """
        reader = CommandReader()
        reader.feed(b"a APPEND INBOX {100+}\r\nFrom: x\r\n")
        self.assertEqual(drain(reader), [])
        self.assertTrue(reader.connectionLost())
        reader.feed(b"x" * 100 + b"\r\n")
        self.assertEqual(drain(reader), [])
        self.assertTrue(reader.closed)

    def test_disconnectBetweenCommands(self) -> None:
        """
        A disconnect between commands drops nothing.
        """
        reader = CommandReader()
        reader.feed(b"a NOOP\r\n")
        drain(reader)
        self.assertFalse(reader.connectionLost())


def small(**kw: int) -> Limits:
    """
    Limits small enough to cross in a test.
    """
    values = {
        "maxLineLength": 100,
        "maxLiteralSize": 50,
        "maxAppendSize": 1000,
        "maxCommandSize": 300,
    }
    values.update(kw)
    return Limits(**values)


class LimitTests(SynchronousTestCase):
    """
    Each size limit gives its own refusal, and the reader resynchronises
    whenever the stream allows.
    """

    def test_longLine(self) -> None:
        """
        A 100 KB line is C{BAD [TOOBIG]} with its tag; the next command parses.
        """
        events = readAll(b"a1 LOGIN " + b"x" * 100_000 + b" y\r\nb NOOP\r\n")
        self.assertIsInstance(events[0], LineTooLong)
        assert isinstance(events[0], CommandError)
        self.assertEqual((events[0].tag, events[0].status, events[0].code), ("a1", "BAD", "TOOBIG"))
        self.assertEqual(events[1:], [Command("b", "NOOP", False, NO_ARGUMENTS)])

    def test_longLineInPieces(self) -> None:
        """
        A line that keeps coming is refused once past the limit, is not
        buffered, and its end is skipped.
        """
        reader = CommandReader(small())
        reader.feed(b"a1 LOGIN ")
        events = []
        for _ in range(1000):
            reader.feed(b"x" * 100)
            events.extend(drain(reader))
        self.assertEqual([type(e) for e in events], [LineTooLong])
        self.assertLess(len(reader._buffer), 200)
        reader.feed(b"xx\r\nb NOOP\r\n")
        self.assertEqual(drain(reader), [Command("b", "NOOP", False, NO_ARGUMENTS)])

    def test_synchronisingLiteralTooBig(self) -> None:
        """
        A C{{n}} past the limit is C{NO [TOOBIG]} instead of C{+}, and the
        next line is a new command.
        """
        events = readAll(b"a1 LOGIN {51}\r\nb NOOP\r\n", small())
        self.assertIsInstance(events[0], LiteralTooBig)
        assert isinstance(events[0], CommandError)
        self.assertEqual(
            (events[0].tag, events[0].status, events[0].code, events[0].closeConnection),
            ("a1", "NO", "TOOBIG", False),
        )
        self.assertEqual(events[1:], [Command("b", "NOOP", False, NO_ARGUMENTS)])

    def test_nonSynchronisingLiteralTooBig(self) -> None:
        """
        A C{{n+}} past the limit is C{BAD [TOOBIG]} and closes: its data is on its way.
        """
        reader = CommandReader(small())
        reader.feed(b"a1 LOGIN {51+}\r\n" + b"b NOOP\r\n" * 7)
        events = drain(reader)
        self.assertEqual(len(events), 1)
        assert isinstance(events[0], LiteralTooBig)
        self.assertEqual(
            (events[0].status, events[0].code, events[0].closeConnection), ("BAD", "TOOBIG", True)
        )
        self.assertTrue(reader.closed)
        reader.feed(b"c NOOP\r\n")
        self.assertIsNone(reader.next())

    def test_absurdLiteralCount(self) -> None:
        """
        A literal count of any number of digits is a literal, too big, never a command.
        """
        events = readAll(b"a1 LOGIN {" + b"9" * 5000 + b"+}\r\nb NOOP\r\n")
        self.assertEqual([type(e) for e in events], [LiteralTooBig])

    def test_longLineEndingInLiteralPlus(self) -> None:
        """
        A too-long line ending in C{{n+}} closes the stream, whole or in pieces.
        """
        line = b"a1 LOGIN " + b"x" * 200 + b" {5+}\r\nb NOOP\r\n"
        reader = CommandReader(small())
        reader.feed(line)
        self.assertEqual([type(e) for e in drain(reader)], [LiteralTooBig])
        reader = CommandReader(small())
        events = []
        for i in range(0, len(line), 7):
            reader.feed(line[i : i + 7])
            events.extend(drain(reader))
        self.assertEqual([type(e) for e in events], [LineTooLong, LiteralTooBig])
        self.assertTrue(reader.closed)

    def test_appendLimit(self) -> None:
        """
        APPEND's message may reach L{Limits.maxAppendSize}; beyond it is C{NO [TOOBIG]}.
        """
        ok = readAll(b"a1 APPEND x {1000}\r\n" + b"m" * 1000 + b"\r\n", small())
        self.assertEqual(ok[1], Command("a1", "APPEND", False, Append("x", (), None, b"m" * 1000)))
        refused = readAll(b"a1 APPEND x {1001}\r\n", small())
        assert isinstance(refused[0], LiteralTooBig)
        self.assertEqual(refused[0].status, "NO")

    def test_commandTooBig(self) -> None:
        """
        Literals that each fit but together pass L{Limits.maxCommandSize} are refused.
        """
        data = b"a1 ID (" + b'"k" {50+}\r\n' + b"v" * 50 + b" " + b'"k" {50+}\r\n' + b"v" * 50
        events = readAll(data * 3 + b")\r\n", small())
        self.assertIsInstance(events[0], LiteralTooBig)
        self.assertTrue(events[0].closeConnection)  # type: ignore[union-attr]
        events = readAll(b"a1 SEARCH " + b"SEEN " * 15 + b"{5}\r\n", small(maxCommandSize=80))
        self.assertIsInstance(events[0], CommandTooBig)

    def test_limitsChangeable(self) -> None:
        """
        The server may raise the limits (after login, say) between commands.
        """
        reader = CommandReader(small())
        reader.feed(b"a1 LOGIN {60}\r\n")
        self.assertIsInstance(reader.next(), LiteralTooBig)
        reader.limits = small(maxLiteralSize=100)
        reader.feed(b"a1 LOGIN {60}\r\n")
        self.assertEqual(reader.next(), ContinuationRequest())


class HostileInputTests(SynchronousTestCase):
    """
    Hostile input gets BAD (or a close), never a crash or unbounded work.
    """

    def test_deepParentheses(self) -> None:
        """
        10,000 nested parentheses are refused quickly as nested too deeply.
        """
        for line in (
            b"a SEARCH " + b"(" * 10_000 + b"ALL" + b")" * 10_000,
            b"a SEARCH " + b"NOT " * 10_000 + b"ALL",
            b"a SEARCH " + b"OR ALL " * 10_000 + b"ALL",
            b"a LIST " + b"(" * 10_000,
        ):
            event = readAll(line + b"\r\n", Limits(maxLineLength=100_000))[0]
            assert isinstance(event, CommandError)
            self.assertEqual((event.tag, event.status), ("a", "BAD"))

    def test_nestingWithinLimit(self) -> None:
        """
        Nesting up to L{Limits.maxNesting} is accepted.
        """
        event = parseOne(b"a SEARCH " + b"(" * 31 + b"SEEN" + b")" * 31)
        self.assertEqual(event, Command("a", "SEARCH", False, Search(SEEN)))

    def test_eightBitAtoms(self) -> None:
        """
        8-bit bytes in a tag, a command name or an atom argument are BAD.
        """
        for line in (b"\xe9 NOOP", b"a NO\xe9OP", b"a FETCH 1 FL\xc3\xa9GS", b"a ENABLE \xff"):
            self.assertIsInstance(parseOne(line), CommandError, line)

    def test_garbage(self) -> None:
        """
        Random binary garbage in lines is answered BAD, and the stream stays in step.
        """
        garbage = bytes(range(256)).replace(b"\n", b"").replace(b"{", b"")
        events = readAll(garbage + b"\r\n" + b"\x00\x00\r\nc NOOP\r\n")
        self.assertEqual([type(e) for e in events[:-1]], [CommandError, CommandError])
        self.assertEqual(events[-1], Command("c", "NOOP", False, NO_ARGUMENTS))


EXPECTED = (
    Command,
    ContinuationRequest,
    ContinuationLine,
    CommandError,
    LiteralStarted,
    LiteralChunk,
)


class StreamingTests(SynchronousTestCase):
    """
    APPEND's message literal past L{Limits.streamAppendOver} comes out in
    pieces as it arrives, never whole.
    """

    limits = Limits(streamAppendOver=100)

    def test_streamedInPieces(self) -> None:
        """
        A large {n} literal gives LiteralStarted (the continuation request)
        with the command so far, then a chunk per feed holding what came,
        then the command with the StreamedLiteral stand-in; the buffer
        never holds more than the last feed.
        """
        reader = CommandReader(self.limits)
        reader.feed(b'a APPEND Drafts (\\Seen) "05-Jan-2024 10:00:00 +0000" {1000}\r\n')
        [started] = drain(reader)
        assert isinstance(started, LiteralStarted)
        self.assertEqual((started.size, started.synchronising), (1000, True))
        self.assertEqual((started.append.mailbox, started.append.flags), ("Drafts", ("\\Seen",)))
        received = b""
        for i in range(10):
            piece = bytes([65 + i]) * 100
            reader.feed(piece)
            self.assertEqual(drain(reader), [LiteralChunk(piece)])
            self.assertEqual(len(reader._buffer), 0)
            received += piece
        reader.feed(b"\r\nb NOOP\r\n")
        command, noop = drain(reader)
        assert isinstance(command, Command) and isinstance(command.arguments, Append)
        self.assertIsInstance(command.arguments.message, StreamedLiteral)
        self.assertEqual(command.arguments.mailbox, "Drafts")
        self.assertEqual(noop, Command("b", "NOOP", False, NO_ARGUMENTS))
        self.assertEqual(len(received), 1000)

    def test_chunkStopsAtLiteralEnd(self) -> None:
        """
        Bytes after the literal in the same feed are the command's rest,
        not literal data; a {n+} literal is streamed without a "+".
        """
        events = readAll(b"a APPEND INBOX {101+}\r\n" + b"x" * 101 + b"\r\n", self.limits)
        started, chunk, command = events
        assert isinstance(started, LiteralStarted)
        self.assertFalse(started.synchronising)
        self.assertEqual(chunk, LiteralChunk(b"x" * 101))
        self.assertIsInstance(command, Command)

    def test_smallLiteralHeld(self) -> None:
        """
        A literal at the threshold is held and parsed as before.
        """
        events = readAll(b"a APPEND INBOX {100+}\r\n" + b"y" * 100 + b"\r\n", self.limits)
        [command] = events
        assert isinstance(command, Command) and isinstance(command.arguments, Append)
        self.assertEqual(command.arguments.message, b"y" * 100)
        self.assertNotIsInstance(command.arguments.message, StreamedLiteral)

    def test_onlyTheMessage(self) -> None:
        """
        A large literal that is not APPEND's message (here its mailbox name)
        is refused: BAD instead of "+" for {n}, BAD and the close for {n+}.
        """
        [refused] = readAll(b"a APPEND {500}\r\n", self.limits)
        assert isinstance(refused, CommandError)
        self.assertEqual((refused.tag, refused.status), ("a", "BAD"))
        self.assertFalse(refused.closeConnection)
        reader = CommandReader(self.limits)
        reader.feed(b"a APPEND {500+}\r\n" + b"z" * 500)
        [refused] = drain(reader)
        assert isinstance(refused, CommandError)
        self.assertTrue(refused.closeConnection)
        self.assertTrue(reader.closed)

    def test_badAfterLiteral(self) -> None:
        """
        Anything after the streamed message makes the command BAD.
        """
        events = readAll(b"a APPEND INBOX {101+}\r\n" + b"x" * 101 + b" junk\r\n", self.limits)
        self.assertEqual([type(e) for e in events], [LiteralStarted, LiteralChunk, CommandError])

    def test_disconnectMidStream(self) -> None:
        """
        A disconnect mid-literal drops the command: nothing more comes out.
        """
        reader = CommandReader(self.limits)
        reader.feed(b"a APPEND INBOX {1000+}\r\n" + b"x" * 300)
        self.assertEqual([type(e) for e in drain(reader)], [LiteralStarted, LiteralChunk])
        self.assertTrue(reader.connectionLost())
        reader.feed(b"x" * 700 + b"\r\n")
        self.assertEqual(drain(reader), [])

    @settings(deadline=None, max_examples=200)
    @given(st.integers(101, 3000), st.lists(st.integers(1, 500), max_size=20))
    def test_anySplit(self, size: int, cuts: list[int]) -> None:
        """
        However the bytes are split, the chunks add up to the literal and
        the command follows.
        """
        literal = bytes(i % 251 for i in range(size))
        data = b"a APPEND INBOX {%d}\r\n" % size + literal + b"\r\n"
        reader = CommandReader(self.limits)
        events: list[ReaderEvent] = []
        start = 0
        for cut in [*cuts, len(data)]:
            reader.feed(data[start : start + cut])
            start += cut
            events += drain(reader)
        self.assertIsInstance(events[0], LiteralStarted)
        chunks = [e.data for e in events[1:-1] if isinstance(e, LiteralChunk)]
        self.assertEqual(len(chunks), len(events) - 2)
        self.assertEqual(b"".join(chunks), literal)
        self.assertIsInstance(events[-1], Command)


imapish = st.lists(
    st.sampled_from(
        [
            b"a",
            b" ",
            b"\r\n",
            b"\n",
            b"(",
            b")",
            b"{3}",
            b"{2+}",
            b"{0}\r\n",
            b'"',
            b"\\",
            b"NOOP",
            b"FETCH",
            b"1:*",
            b"BODY[",
            b"]",
            b"<0.5>",
            b"UID",
            b"SEARCH",
            b"NOT",
            b"OR",
            b"LOGIN",
            b"APPEND",
            b"\xff",
            b"\x00",
            b"*",
            b"$",
            b"&",
            b"-",
            b"%",
        ]
    ),
    max_size=60,
).map(b"".join)


class PropertyTests(SynchronousTestCase):
    """
    Properties over any input: the documented events only, and round trips
    through L{mta.imap.wire}.
    """

    @settings(deadline=None, max_examples=300)
    @given(st.one_of(st.binary(max_size=400), imapish), st.lists(st.integers(1, 50), max_size=10))
    def test_anyBytes(self, data: bytes, cuts: list[int]) -> None:
        """
        For any bytes, in any chunks, the reader yields only documented
        events, the same ones however the bytes are split.
        """
        whole = readAll(data)
        reader = CommandReader()
        pieces = []
        start = 0
        for cut in cuts:
            pieces.append(data[start : start + cut])
            start += cut
        pieces.append(data[start:])
        chunked = []
        for piece in pieces:
            reader.feed(piece)
            chunked.extend(drain(reader))
        for event in whole:
            self.assertIsInstance(event, EXPECTED)
        self.assertEqual([repr(e) for e in chunked], [repr(e) for e in whole])

    @settings(deadline=None, max_examples=200)
    @given(st.one_of(st.binary(max_size=600), imapish))
    def test_anyBytesSmallLimits(self, data: bytes) -> None:
        """
        With tiny limits too, any bytes give only documented events.
        """
        limits = Limits(
            maxLineLength=20,
            maxLiteralSize=3,
            maxAppendSize=5,
            maxCommandSize=40,
            maxNesting=2,
            streamAppendOver=2,
        )
        for event in readAll(data, limits):
            self.assertIsInstance(event, EXPECTED)

    @settings(deadline=None)
    @given(st.text(), st.text())
    def test_astringRoundTrip(self, user: str, password: str) -> None:
        """
        Any two strings encoded as astrings come back from LOGIN as they were.
        """
        line = b"t LOGIN " + wire.astring(user) + b" " + wire.astring(password) + b"\r\n"
        events = [e for e in readAll(line) if not isinstance(e, ContinuationRequest)]
        self.assertEqual(events, [Command("t", "LOGIN", False, Login(user, password))])

    @settings(deadline=None)
    @given(
        st.lists(
            # RFC 2971: a field name is at most 30 octets; 7 characters of
            # UTF-8 never pass that.
            st.tuples(st.text(max_size=7), st.one_of(st.none(), st.text(max_size=200))),
            max_size=30,
        )
    )
    def test_listRoundTrip(self, fields: list[tuple[str, str | None]]) -> None:
        """
        An ID list of strings and NILs encoded by L{wire.encode} parses back.
        """
        line = b"t ID " + wire.encode([v for pair in fields for v in pair]) + b"\r\n"
        events = [e for e in readAll(line) if not isinstance(e, ContinuationRequest)]
        self.assertEqual(events, [Command("t", "ID", False, Id(tuple(fields)))])

    @settings(deadline=None)
    @given(
        st.recursive(
            st.sampled_from(["SEEN", "DRAFT"]),
            lambda kids: st.lists(kids, min_size=1, max_size=3),
            max_leaves=12,
        )
    )
    def test_nestedListRoundTrip(self, tree: object) -> None:
        """
        Nested lists encoded by L{wire.encode} parse back as nested search keys.
        """

        def atoms(node: object) -> object:
            return wire.Atom(node) if isinstance(node, str) else [atoms(n) for n in node]  # type: ignore[attr-defined]

        def keys(node: object) -> object:
            if isinstance(node, str):
                return FlagKey("\\" + node.capitalize())
            inner = [keys(n) for n in node]  # type: ignore[attr-defined]
            return inner[0] if len(inner) == 1 else And(tuple(inner))  # type: ignore[arg-type]

        rendered = wire.encode(atoms(tree))  # type: ignore[arg-type]
        event = readAll(b"t SEARCH " + rendered + b"\r\n", Limits(maxNesting=100))[0]
        self.assertEqual(event, Command("t", "SEARCH", False, Search(keys(tree))))  # type: ignore[arg-type]

    @given(st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=50))
    def test_sequenceSetRoundTrip(self, numbers: list[int]) -> None:
        """
        Numbers rendered as a compact sequence set parse back to the same numbers.
        """
        text = wire.sequenceSet(numbers).encode()
        event = readAll(b"t UID FETCH " + text + b" UID\r\n")[0]
        assert isinstance(event, Command) and isinstance(event.arguments, Fetch)
        spans = event.arguments.messages.resolve(2**32 - 1)
        self.assertEqual([n for lo, hi in spans for n in (lo, hi)], _spans(sorted(set(numbers))))

    @given(
        st.lists(
            st.tuples(
                st.one_of(st.none(), st.integers(1, 10**6)),
                st.one_of(st.none(), st.integers(1, 10**6)),
            ),
            min_size=1,
            max_size=10,
        )
    )
    def test_writtenSequenceSetRoundTrip(self, ranges: list[tuple[int | None, int | None]]) -> None:
        """
        A parsed sequence set, C{*} and all, renders back to itself.
        """
        original = SequenceSet(tuple(ranges))
        self.assertEqual(parseSequenceSet(wire.sequenceSetAsWritten(original).encode()), original)

    @settings(deadline=None)
    @given(st.text())
    def test_modifiedUTF7RoundTrip(self, name: str) -> None:
        """
        Any string survives modified UTF-7, and a SELECT of the encoded name.
        """
        encoded = wire.encodeModifiedUTF7(name)
        self.assertTrue(encoded.isascii())
        self.assertEqual(decodeModifiedUTF7(encoded), name)
        event = [
            e
            for e in readAll(b"t SELECT " + wire.mailbox(name) + b"\r\n")
            if isinstance(e, Command)
        ]
        expected = "INBOX" if name.upper() == "INBOX" else name
        self.assertEqual(event, [Command("t", "SELECT", False, Select(expected))])


def _spans(ordered: list[int]) -> list[int]:
    """
    Flatten the runs of consecutive numbers in C{ordered} into [low, high, low, high, ...].
    """
    out: list[int] = []
    for n in ordered:
        if out and out[-1] == n - 1:
            out[-1] = n
        else:
            out.extend((n, n))
    return out
