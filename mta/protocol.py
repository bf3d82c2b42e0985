# -*- test-case-name: tests.test_smtpserver, tests.test_pop3 -*-
"""
The one line-command base that SMTP and POP3 (and later IMAP) build on.

It owns the input buffer and the transport: it splits lines, enforces the
line-length, command-count and error limits, drops idle clients on the
injected clock, and dispatches each line through a verb table to a
handler.  A handler returns a reply (or C{None}), or a L{Deferred} of one;
while a Deferred is pending no further input is processed, which gives
correct pipelining for free.  Only L{LineCommandProtocol.sendReply} writes
replies to the transport.

Subclasses may switch to bulk mode (L{LineCommandProtocol.setBulkMode}) to
receive raw bytes, which is how SMTP reads DATA without a callback per line.
"""

from __future__ import annotations

import ipaddress
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

R = TypeVar("R")

#: A bulk-mode consumer gets the bytes received.  It returns C{None} to say
#: it used everything and wants more; or, when it is done, how many bytes
#: it used (the rest go back to line mode) and its result, which is handled
#: like a command handler's.
BulkConsumer = Callable[[bytes], "tuple[int, Any] | None"]


def peerHost(address: IAddress | None) -> str:
    """
    @return: the IP address of a transport's peer, or C{""}.
    """
    host = getattr(address, "host", "")
    return str(host)


def parseIP(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    @return: C{host} as an IP address, a v4-mapped IPv6 address
        (C{::ffff:1.2.3.4}, as dual-stack listeners report IPv4 peers) as
        plain IPv4; C{None} when it is not an address.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def isLoopback(host: str) -> bool:
    """
    @return: whether C{host} is 127.0.0.0/8 or ::1 (or a v4-mapped loopback).
    """
    ip = parseIP(host)
    return ip is not None and ip.is_loopback


class ReadPausing:
    """
    Stop and restart reading from the transport (flow control for a
    protocol whose pending input must stay bounded); mixed into
    L{LineCommandProtocol} and the IMAP server.
    """

    transport: Any
    _readPaused = False

    def _pauseReading(self) -> None:
        if not self._readPaused and self.transport is not None:
            self._readPaused = True
            self.transport.pauseProducing()

    def _resumeReading(self) -> None:
        if self._readPaused and self.transport is not None:
            self._readPaused = False
            self.transport.resumeProducing()


class LineCommandProtocol(ReadPausing, Protocol, Generic[R], metaclass=ABCMeta):
    """
    Base protocol: lines in, replies (of type C{R}) out.

    @cvar commands: maps upper-case verbs to handler method names.
    @ivar maxLineLength: longest accepted line, line end included.
    @ivar maxCommands: most commands per connection, then L{tooManyCommands}.
    @ivar maxErrors: most protocol errors per connection, then a hang-up.
    @ivar idleTimeout: seconds without input before L{timedOut}.
    @ivar clock: the time source for the idle timer.
    """

    commands: ClassVar[dict[bytes, str]] = {}
    maxLineLength = 2048
    maxCommands = 1000
    maxErrors = 20
    idleTimeout = 300.0
    #: Input held while a handler's Deferred is pending, before the
    #: transport is told to stop reading (a client pipelining without end
    #: must not grow our memory).
    maxPendingInput = 256 * 1024
    _log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._buffer = b""
        self._paused = False
        self._bulk: BulkConsumer | None = None
        self._processing = False
        self._readPaused = False
        self._discarding = False
        self._idleCall: IDelayedCall | None = None
        self.commandCount = 0
        self.errorCount = 0
        self.disconnecting = False
        self.tlsActive = False
        self.peer = ""

    # -- hooks for subclasses -------------------------------------------------

    @abstractmethod
    def renderReply(self, reply: R) -> bytes:
        """
        Turn a reply into bytes for the wire.
        """

    def greeting(self) -> R | None:
        """
        @return: the banner sent on connect, if any.
        """
        return None

    @abstractmethod
    def unknownCommand(self, verb: bytes, args: bytes) -> R | Deferred[R | None] | None:
        """
        Called for a verb not in L{commands}.
        """

    @abstractmethod
    def lineTooLong(self) -> R | None:
        """
        Called once for an input line over L{maxLineLength}; the rest of
        that line is discarded.
        """

    @abstractmethod
    def tooManyCommands(self) -> R | None:
        """
        Called when L{maxCommands} is exceeded; the connection then closes.
        """

    @abstractmethod
    def tooManyErrors(self) -> R | None:
        """
        Called when L{maxErrors} is exceeded; the connection then closes.
        """

    @abstractmethod
    def timedOut(self) -> R | None:
        """
        Called when the client was idle for L{idleTimeout}; the connection
        then closes.
        """

    @abstractmethod
    def internalError(self, failure: Failure) -> R | None:
        """
        Called when a handler raised; the failure is logged already.
        """

    # -- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        # Replies are short and each one is awaited: Nagle's algorithm would
        # hold every reply that follows another in flight until the
        # client's delayed ACK (40 ms), which made pipelined sessions slower
        # than lock-step ones (bench/README.md).
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        self.peer = peerHost(self.transport.getPeer())  # type: ignore[union-attr]
        self.tlsActive = ISSLTransport.providedBy(self.transport)
        self._resetIdle()
        banner = self.greeting()
        if banner is not None:
            self.sendReply(banner)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.disconnecting = True
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.cancel()
        self._idleCall = None

    def _resetIdle(self) -> None:
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.reset(self.idleTimeout)
        elif not self.disconnecting:
            self._idleCall = self.clock.callLater(self.idleTimeout, self._idleExpired)

    def _idleExpired(self) -> None:
        self._idleCall = None
        self.closeWith(self.timedOut())

    # -- output ---------------------------------------------------------------------

    def sendReply(self, reply: R | None) -> None:
        """
        Write one reply; the only place replies reach the transport.
        """
        if reply is not None and not self.disconnecting and self.transport is not None:
            self.transport.write(self.renderReply(reply))

    def closeWith(self, reply: R | None) -> None:
        """
        Send C{reply} and close the connection once it is written.
        """
        self.sendReply(reply)
        self.disconnecting = True
        self._buffer = b""
        # A TLS connection cannot finish closing while reading is paused.
        self._resumeReading()
        if self.transport is not None:
            self.transport.loseConnection()

    # -- input ------------------------------------------------------------------------

    def setBulkMode(self, consumer: BulkConsumer | None) -> None:
        """
        Send raw input to C{consumer} instead of splitting lines, until it
        says it is done.  Call it from a handler: the rest of the current
        input goes to the consumer.
        """
        self._bulk = consumer

    def discardInput(self) -> None:
        """
        Drop everything received and not yet processed (after STARTTLS, so
        that nothing sent in plaintext is taken as sent under TLS).
        """
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        if self.disconnecting:
            return
        self._resetIdle()
        self._buffer += data
        if self._paused and len(self._buffer) > self.maxPendingInput:
            self._pauseReading()
        self._process()

    def _process(self) -> None:
        if self._processing:
            # A handler's Deferred fired synchronously: the loop below is
            # already running and will carry on; don't recurse.
            return
        self._processing = True
        try:
            self._processLoop()
        finally:
            self._processing = False

    def _processLoop(self) -> None:
        while self._buffer and not self._paused and not self.disconnecting:
            if self._bulk is not None:
                done = self._bulk(self._buffer)
                if done is None:
                    self._buffer = b""
                    return
                used, result = done
                self._buffer = self._buffer[used:]
                self._bulk = None
                self.handleResult(result)
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.maxLineLength:
                    self._overlong()
                return
            if self._discarding:
                self._discarding = False
                self._buffer = self._buffer[end + 1 :]
                continue
            if end + 1 > self.maxLineLength:
                self._buffer = self._buffer[end + 1 :]
                self._countError(self.lineTooLong())
                continue
            line = self._buffer[:end]
            self._buffer = self._buffer[end + 1 :]
            self.lineReceived(line[:-1] if line.endswith(b"\r") else line)

    def _overlong(self) -> None:
        # Answer once per over-long line, then drop input up to its end.
        self._buffer = b""
        if not self._discarding:
            self._discarding = True
            self._countError(self.lineTooLong())

    def _countError(self, reply: R | None) -> None:
        self.errorCount += 1
        if self.errorCount > self.maxErrors:
            self.sendReply(reply)
            self.closeWith(self.tooManyErrors())
        else:
            self.sendReply(reply)

    def protocolError(self, reply: R | None) -> R | None:
        """
        Count one client error (bad syntax, bad sequence) and return the
        reply to send; past L{maxErrors} the connection closes instead.
        """
        self.errorCount += 1
        if self.errorCount > self.maxErrors:
            self.sendReply(reply)
            self.closeWith(self.tooManyErrors())
            return None
        return reply

    def lineReceived(self, line: bytes) -> None:
        """
        Dispatch one line (without its line end) as a command.
        """
        self.commandCount += 1
        if self.commandCount > self.maxCommands:
            self.closeWith(self.tooManyCommands())
            return
        verb, _, args = line.partition(b" ")
        name = self.commands.get(verb.upper())
        try:
            if name is None:  # noqa: SIM108  (the two calls differ in arity)
                result = self.unknownCommand(verb, args)
            else:
                result = getattr(self, name)(args)
        except Exception:
            result = self._handlerFailed(Failure())
        self.handleResult(result)

    def handleResult(self, result: R | Deferred[Any] | None) -> None:
        """
        Send a handler's result; for a Deferred, hold further input until
        it fires.
        """
        if not isinstance(result, Deferred):
            self.sendReply(result)
            return
        self._paused = True
        result.addErrback(self._handlerFailed)
        result.addCallback(self._resume)

    def _resume(self, reply: R | None) -> None:
        self._paused = False
        self._resumeReading()
        self.sendReply(reply)
        if not self.disconnecting:
            self._process()

    def _handlerFailed(self, failure: Failure) -> R | None:
        self._log.failure("command handler failed", failure)
        return self.internalError(failure)
