# -*- test-case-name: tests.test_imapparser -*-
"""
The IMAP command parser: pure code over bytes, apart from the server.

L{CommandReader} is the framing.  The server feeds it whatever arrives and
pulls events one at a time, so that a command's handler (which may wait
on a Deferred) finishes before the next command is even parsed, and so
that IDLE and AUTHENTICATE can take the next line raw::

    reader.feed(data)
    while (event := reader.next()) is not None:
        if isinstance(event, ContinuationRequest):   # a {n} literal: say "+ Ready"
        elif isinstance(event, Command):              # dispatch on event.name
        elif isinstance(event, ContinuationLine):     # after expectLine(): DONE, SASL
        else:                                         # a CommandError: answer it
            send(f"{event.tag} {event.status} [{event.code}] {event.message}")
            if event.closeConnection: close

The refusals, each a L{CommandError} with its answer (RFC 9051 section
7.1 for C{TOOBIG}, RFC 7888 section 4 for literals):

  - a malformed command: C{<tag> BAD <why>} (C{* BAD} without a tag);
  - L{LineTooLong}, a line past L{Limits.maxLineLength}: C{BAD [TOOBIG]},
    the rest of the line is skipped;
  - L{LiteralTooBig} for a synchronising C{{n}} past the limit (the
    command's size included): C{NO [TOOBIG]} instead of C{+}; the client
    sends no data, the command is over and the next line is a new one;
  - L{LiteralTooBig} for a non-synchronising C{{n+}} past the limit:
    C{BAD [TOOBIG]} and the connection is closed (C{closeConnection}): the
    client is already sending the data, and reading up to 2**64 bytes to
    skip it is no option, while not reading it would run the data as
    commands.  The same holds for a too-long line that ends in C{{n+}};
  - L{CommandTooBig}, lines and literals of one command past
    L{Limits.maxCommandSize}: C{BAD [TOOBIG]};
  - L{UnsupportedCharset}: C{NO [BADCHARSET (UTF-8 US-ASCII)]}.

Eight-bit bytes in atoms, control bytes in quoted strings, nesting of lists
(and NOT/OR) past L{Limits.maxNesting} and garbage of any kind are C{BAD}
and leave the reader in step.  On disconnect, L{CommandReader.connectionLost}
drops any partial command: nothing half-received is ever returned.

APPEND's message literal, when larger than L{Limits.streamAppendOver}, is
not held: the reader checks that the command so far is an APPEND whose
message this literal is (else C{BAD}, and for C{{n+}} the close, as for a
literal too big), returns a L{LiteralStarted} (for C{{n}} it stands for the
continuation request too), then the data as it arrives in L{LiteralChunk}s,
and at the command's end the L{Command} whose message is the
L{StreamedLiteral} placeholder.  The server writes the chunks to disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

from mta.imap.commands import (
    Append,
    Arguments,
    Authenticate,
    Command,
    Copy,
    Create,
    Enable,
    Expunge,
    Fetch,
    Id,
    ListMailboxes,
    Login,
    Mailbox,
    NoArguments,
    QResync,
    Rename,
    Search,
    Select,
    Sort,
    Status,
    Store,
    parseCommand,
)
from mta.imap.query import (
    And,
    BodyKey,
    BodySection,
    DateKey,
    FetchAttribute,
    FetchItem,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    Not,
    Or,
    SearchKey,
    SequenceKey,
    SizeKey,
    SortCriterion,
)
from mta.imap.syntax import CommandError, SequenceSet, UnsupportedCharset, literalMarker

__all__ = [
    "And",
    "Append",
    "Arguments",
    "Authenticate",
    "BodyKey",
    "BodySection",
    "Command",
    "CommandError",
    "CommandReader",
    "CommandTooBig",
    "ContinuationLine",
    "ContinuationRequest",
    "Copy",
    "Create",
    "DateKey",
    "Enable",
    "Expunge",
    "Fetch",
    "FetchAttribute",
    "FetchItem",
    "FlagKey",
    "HeaderKey",
    "Id",
    "LineTooLong",
    "ListMailboxes",
    "LiteralChunk",
    "LiteralStarted",
    "LiteralTooBig",
    "Login",
    "Mailbox",
    "ModSeqKey",
    "NoArguments",
    "Not",
    "Or",
    "QResync",
    "ReaderEvent",
    "Rename",
    "Search",
    "SearchKey",
    "Select",
    "SequenceKey",
    "SequenceSet",
    "SizeKey",
    "Sort",
    "SortCriterion",
    "Status",
    "Store",
    "StreamedLiteral",
    "UnsupportedCharset",
]

_TAG_AND_NAME = re.compile(rb"([\x21-\x7e]+) (?:[Uu][Ii][Dd] )?([A-Za-z]+)")
# A line ending in a non-synchronising literal marker (to spot one in a skipped line).
_NONSYNC_TAIL = re.compile(rb"\{[0-9]+\+\}\r?\Z")
_TAIL_KEPT = 32


@dataclass(frozen=True)
class Limits:
    """
    The sizes a client may send.

    @ivar maxLineLength: one line of a command, literals aside, without CRLF.
    @ivar maxLiteralSize: one literal, except APPEND's.
    @ivar maxAppendSize: one literal of an APPEND command: the message size limit.
    @ivar maxCommandSize: the lines and literals of one command together,
        APPEND's message literals aside (those count against
        C{maxAppendSize} on top of this).
    @ivar maxNesting: parenthesised lists, NOT and OR nested in each other.
    @ivar streamAppendOver: APPEND's message literals larger than this are
        streamed (L{LiteralChunk}s) rather than held; C{None}: never.
    """

    maxLineLength: int = 64 * 1024
    maxLiteralSize: int = 64 * 1024
    maxAppendSize: int = 50 * 1024 * 1024
    maxCommandSize: int = 1024 * 1024
    maxNesting: int = 32
    streamAppendOver: int | None = None


class LineTooLong(CommandError):
    """
    A line longer than L{Limits.maxLineLength}: C{BAD [TOOBIG]}.
    """

    code = "TOOBIG"


class LiteralTooBig(CommandError):
    """
    A literal past its limit: C{NO [TOOBIG]} for C{{n}}, C{BAD [TOOBIG]} and
    close for C{{n+}} (C{closeConnection} tells which).
    """

    code = "TOOBIG"

    def __init__(self, tag: str, message: str, synchronising: bool) -> None:
        super().__init__(tag, message)
        self.status = "NO" if synchronising else "BAD"
        self.closeConnection = not synchronising


class CommandTooBig(CommandError):
    """
    A command whose lines and literals add up past L{Limits.maxCommandSize}.
    """

    code = "TOOBIG"


@dataclass(frozen=True)
class ContinuationRequest:
    """
    A synchronising literal was announced and accepted: send C{+ Ready}.
    """


@dataclass(frozen=True)
class ContinuationLine:
    """
    A line read raw after L{CommandReader.expectLine}, without its CRLF.
    """

    line: bytes


@dataclass(frozen=True)
class LiteralStarted:
    """
    APPEND's message literal is streamed: L{LiteralChunk}s follow.

    @ivar append: the command as far as it is read, with an empty message.
    @ivar synchronising: C{{n}}: send C{+ Ready} now.
    """

    size: int
    synchronising: bool
    append: Append


@dataclass(frozen=True)
class LiteralChunk:
    """
    The next piece of a streamed literal.
    """

    data: bytes


class StreamedLiteral(bytes):
    """
    The empty stand-in for a streamed literal's data in the parsed command.
    """


ReaderEvent: TypeAlias = (
    Command | ContinuationRequest | ContinuationLine | CommandError | LiteralStarted | LiteralChunk
)
CONTINUATION_REQUEST = ContinuationRequest()


class CommandReader:
    """
    Frame IMAP commands out of a byte stream, with limits, and parse them.

    @ivar limits: the L{Limits} in force; the server may replace them at
        any time (say, larger once the client has logged in).
    """

    def __init__(self, limits: Limits | None = None) -> None:
        """
        @param limits: the sizes allowed; L{Limits}C{()} if not given.
        """
        self.limits = limits if limits is not None else Limits()
        self._buffer = bytearray()
        self._scanned = 0
        self._closed = False
        self._lineMode = False
        self._skipping = False
        self._tail = b""
        self._reset()

    def _reset(self) -> None:
        """
        Forget the command being framed.
        """
        self._segments: list[bytes] = []
        self._literals: list[bytes] = []
        self._size = 0
        self._appendSize = 0
        self._pending: int | None = None
        self._streaming = 0
        self._tag = "*"
        self._isAppend = False

    @property
    def closed(self) -> bool:
        """
        Whether the stream is out of step: nothing more will be read.
        """
        return self._closed

    def feed(self, data: bytes) -> None:
        """
        Add bytes received from the client.

        @param data: any bytes; once L{closed}, they are ignored.
        """
        if not self._closed:
            self._buffer += data

    def expectLine(self) -> None:
        """
        Return the next line as a L{ContinuationLine}, not as a command.

        For IDLE's C{DONE} and AUTHENTICATE's responses; call it between
        commands, before the next L{next}.
        """
        self._lineMode = True

    def connectionLost(self) -> bool:
        """
        Drop everything buffered: a partial command is never returned.

        @return: whether a partial command (or unread input) was dropped.
        """
        partial = bool(self._segments or self._buffer or self._pending is not None)
        self._buffer = bytearray()
        self._scanned = 0
        self._reset()
        self._closed = True
        return partial

    def next(self) -> ReaderEvent | None:
        """
        Frame and parse as much as the buffered bytes allow, up to one event.

        @return: the next event, or C{None} when more bytes are needed (or
            the reader is closed).
        """
        while not self._closed:
            if self._streaming:
                return self._streamLiteral()
            if self._pending is not None:
                if not self._readLiteral():
                    return None
                continue
            if self._skipping:
                event = self._skipLine()
                if event is not None or self._skipping:
                    return event
                continue
            line = self._readLine()
            if line is None:
                if len(self._buffer) > self.limits.maxLineLength + 1:
                    return self._lineTooLong()
                return None
            event = self._onLine(line)
            if event is not None:
                return event
        return None

    def _readLine(self) -> bytes | None:
        """
        Take one line, without its CRLF (or bare LF), off the buffer.
        """
        index = self._buffer.find(b"\n", self._scanned)
        if index < 0:
            self._scanned = len(self._buffer)
            return None
        end = index - 1 if index > 0 and self._buffer[index - 1] == 0x0D else index
        line = bytes(self._buffer[:end])
        del self._buffer[: index + 1]
        self._scanned = 0
        return line

    def _readLiteral(self) -> bool:
        """
        Take the pending literal's data off the buffer, if it is all there.
        """
        assert self._pending is not None
        if len(self._buffer) < self._pending:
            return False
        self._literals.append(bytes(self._buffer[: self._pending]))
        del self._buffer[: self._pending]
        self._pending = None
        self._scanned = 0
        return True

    def _streamLiteral(self) -> LiteralChunk | None:
        """
        Take what is buffered of the streamed literal off the buffer.
        """
        if not self._buffer:
            return None
        if len(self._buffer) <= self._streaming:
            data = bytes(self._buffer)
            self._buffer = bytearray()
        else:
            data = bytes(self._buffer[: self._streaming])
            del self._buffer[: self._streaming]
        self._streaming -= len(data)
        self._scanned = 0
        return LiteralChunk(data)

    def _startStream(self, size: int, synchronising: bool) -> ReaderEvent:
        """
        Stream an APPEND literal if it is the command's message (parsing
        the command so far with an empty one tells), else refuse it: the
        command is over, and after C{{n+}} the connection too.
        """
        segments, literals = [*self._segments, b""], [*self._literals, b""]
        try:
            command = parseCommand(segments, literals, self.limits.maxNesting)
        except CommandError as e:
            refusal = CommandError(self._tag, e.message)
        else:
            if isinstance(command.arguments, Append):
                self._literals.append(StreamedLiteral())
                self._streaming = size
                return LiteralStarted(size, synchronising, command.arguments)
            refusal = CommandError(self._tag, "only APPEND's message may be this big")
        self._reset()
        self._closed = refusal.closeConnection = not synchronising
        return refusal

    def _onLine(self, line: bytes) -> ReaderEvent | None:
        """
        Handle one complete line: a raw line, a command's last line, or a
        line ending in a literal marker.
        """
        if len(line) > self.limits.maxLineLength:
            return self._refuseLine(line)
        if self._lineMode:
            self._lineMode = False
            return ContinuationLine(line)
        if not self._segments:
            if not line.strip():
                return None  # an empty line between commands: ignored, as most servers do
            self._noteTagAndName(line)
        self._segments.append(line)
        self._size += len(line) + 2
        marker = literalMarker(line)
        if self._size > self.limits.maxCommandSize:
            return self._refuseCommand(marker)
        if marker is None:
            return self._complete()
        size, synchronising = marker
        if self._isAppend:
            fits = size <= self.limits.maxAppendSize and self._appendSize + size <= (
                self.limits.maxAppendSize
            )
            self._appendSize += size
        else:
            fits = size <= self.limits.maxLiteralSize and self._size + size <= (
                self.limits.maxCommandSize
            )
            self._size += size
        if not fits:
            tag = self._tag
            self._reset()
            error = LiteralTooBig(tag, "literal too big", synchronising)
            self._closed = error.closeConnection
            return error
        stream = self.limits.streamAppendOver
        if self._isAppend and stream is not None and size > stream:
            return self._startStream(size, synchronising)
        self._pending = size
        return CONTINUATION_REQUEST if synchronising else None

    def _noteTagAndName(self, line: bytes) -> None:
        """
        Remember the tag and command of a command's first line, for errors
        and for the literal limit that applies.
        """
        match = _TAG_AND_NAME.match(line)
        if match is None:
            self._tag = "*"
            return
        tag = match.group(1)
        self._tag = tag.decode("ascii") if len(tag) <= 64 else "*"
        self._isAppend = match.group(2).upper() == b"APPEND"

    def _complete(self) -> ReaderEvent:
        """
        Parse the framed command and start afresh.
        """
        segments, literals = self._segments, self._literals
        self._reset()
        try:
            return parseCommand(segments, literals, self.limits.maxNesting)
        except CommandError as e:
            return e
        except RecursionError:  # pragma: no cover - the nesting bound prevents it
            return CommandError("*", "command nested too deeply")

    def _refuseCommand(self, marker: tuple[int, bool] | None) -> ReaderEvent:
        """
        Refuse a command whose lines add up past the limit.
        """
        tag = self._tag
        self._reset()
        if marker is not None and not marker[1]:
            self._closed = True
            return LiteralTooBig(tag, "command too big", synchronising=False)
        return CommandTooBig(tag, "command too big")

    def _lineTooLong(self) -> ReaderEvent | None:
        """
        The buffer holds more than a line's worth with no end in sight:
        refuse now and skip to the line's end.
        """
        if self._lineMode:
            tag = "*"
        elif not self._segments:
            self._noteTagAndName(bytes(self._buffer[:80]))
            tag = self._tag
        else:
            tag = self._tag
        self._tail = bytes(self._buffer[-_TAIL_KEPT:])
        self._buffer = bytearray()
        self._scanned = 0
        self._skipping = True
        self._reset()
        self._lineMode = False
        return LineTooLong(tag, "line too long")

    def _refuseLine(self, line: bytes) -> ReaderEvent:
        """
        Refuse a complete line that was too long.
        """
        if not self._segments and not self._lineMode:
            self._noteTagAndName(line[:80])
        tag = "*" if self._lineMode else self._tag
        self._reset()
        self._lineMode = False
        if _NONSYNC_TAIL.search(line[-_TAIL_KEPT:]):
            self._closed = True
            return LiteralTooBig(tag, "line too long", synchronising=False)
        return LineTooLong(tag, "line too long")

    def _skipLine(self) -> ReaderEvent | None:
        """
        Skip the rest of a refused line.

        A skipped line that ended in C{{n+}} is followed by literal data the
        client sends regardless: the stream cannot be resynchronised.
        """
        index = self._buffer.find(b"\n")
        if index < 0:
            self._tail = (self._tail + bytes(self._buffer))[-_TAIL_KEPT:]
            self._buffer = bytearray()
            return None
        tail = (self._tail + bytes(self._buffer[:index]))[-_TAIL_KEPT:]
        del self._buffer[: index + 1]
        self._skipping = False
        self._tail = b""
        if _NONSYNC_TAIL.search(tail):
            self._closed = True
            return LiteralTooBig("*", "line too long", synchronising=False)
        return None
