# -*- test-case-name: tests.test_service -*-
"""
The edge of the server: listening sockets, and who may connect.

A L{Listener} is the service behind one C{[listen]} endpoint description
(C{tcp:25}, C{tcp6:587:interface=\\:\\:}, C{systemd:domain=INET:index=0}); it
adds implicit TLS for the submissions, imaps and pop3s ports and tells
tests which port it got.  A L{ConnectionLimiter} caps simultaneous
connections per listener and per client address, as Postfix's anvil and
Dovecot's C{mail_max_userip_connections} do, refusing the excess with a
protocol-appropriate line before the real protocol ever sees them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from mta.config import LimitsConfig
from mta.protocol import peerHost

_log = Logger()


class ListenError(Exception):
    """
    A listener could not listen; the message names its endpoint description.
    """


class Listener(Service):
    """
    Listen on one endpoint description while running.

    The description is anything C{serverFromString} parses: C{tcp:25},
    C{tcp:0:interface=127.0.0.1} in tests (then ask L{whenListening} for the
    port), or C{systemd:domain=INET:index=0} (or C{name=...}) to take a
    socket that systemd opened (see C{systemd/mta.socket}).

    Binding happens in C{privilegedStartService} when twistd calls it (so
    low ports work with C{twistd --uid}), else in C{startService}.  A
    failure to listen raises L{ListenError} from there, which stops
    twistd's start-up with the description in the message.

    @ivar description: the endpoint description.
    @ivar factory: the protocol factory, as given.
    """

    def __init__(
        self,
        description: str,
        factory: IProtocolFactory,
        reactor: IReactorTime,
        tls: IOpenSSLServerConnectionCreator | None = None,
    ) -> None:
        """
        @param description: a Twisted server endpoint description.
        @param factory: makes the protocol for each connection.
        @param reactor: the reactor to listen with (also the clock of the
            TLS layer).
        @param tls: for implicit-TLS ports, the server TLS options (an
            L{mta.tls.TLSContextHolder}, asked afresh for each connection
            so reloaded certificates are used); C{None} for plaintext ports
            and STARTTLS.
        """
        self.description = description
        self.factory = factory
        self._reactor = reactor
        self._tls = tls
        self._port: IListeningPort | None = None
        self._pending: Deferred[IListeningPort] | None = None
        self._error: ListenError | None = None
        self._waiting: list[Deferred[IListeningPort]] = []
        self._synchronous = False

    def _effectiveFactory(self) -> IProtocolFactory:
        if self._tls is None:
            return self.factory
        return TLSMemoryBIOFactory(self._tls, False, self.factory, clock=self._reactor)

    def _listen(self) -> None:
        """
        Start listening unless already listening or trying to.

        @raise ListenError: listening failed at once (the usual case for
            TCP: port in use, permission denied, bad description).
        """
        if self._pending is not None or self._port is not None:
            return
        self._error = None
        self._synchronous = True
        try:
            try:
                endpoint = serverFromString(self._reactor, self.description)
                pending = endpoint.listen(self._effectiveFactory())
            except Exception:
                self._failed(Failure())
                pending = None
            if pending is not None:
                self._pending = pending
                pending.addCallbacks(self._listened, self._failed)
        finally:
            self._synchronous = False
        if self._error is not None:
            raise self._error

    def _listened(self, port: IListeningPort) -> None:
        self._pending = None
        self._port = port
        host = port.getHost()
        _log.info(
            "mta: listening: {name} on {host}:{port}",
            name=self.name,
            host=getattr(host, "host", "-"),
            port=getattr(host, "port", "-"),
        )
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(port)

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        error = ListenError(f"cannot listen on {self.description!r}: {failure.getErrorMessage()}")
        self._error = error
        if not self._synchronous:
            # Nobody is on the stack to raise to: say it loudly instead.
            _log.critical("{error}", error=str(error))
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(error)

    def privilegedStartService(self) -> None:
        """
        Bind while the process may still hold privileges.

        @raise ListenError: binding failed.
        """
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        """
        Start listening if L{privilegedStartService} did not already.

        @raise ListenError: binding failed.
        """
        super().startService()
        self._listen()

    def stopService(self) -> Deferred[None]:
        """
        Stop listening.

        @return: a Deferred firing once the port is closed.
        """
        super().stopService()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
        port, self._port = self._port, None
        self._error = None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)

    def whenListening(self) -> Deferred[IListeningPort]:
        """
        @return: a Deferred firing with the listening port once bound (ask
            C{port.getHost().port} for the number), or failing with
            L{ListenError}.
        """
        if self._port is not None:
            return succeed(self._port)
        d: Deferred[IListeningPort] = Deferred()
        if self._error is not None:
            d.errback(self._error)
        else:
            self._waiting.append(d)
        return d


# -- connection limits ---------------------------------------------------------------


class _AbortTimer:
    """
    Aborts a transport that has not closed C{timeout} seconds after it was
    told to: a client that never reads, or never finishes the TLS
    handshake its close alert waits for, would otherwise keep the
    connection (and its slot) for ever.
    """

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self._clock = clock
        self._timeout = timeout
        self._call: IDelayedCall | None = None

    def start(self, transport: Any) -> None:
        """
        Start counting, unless already counting.
        """
        if self._call is None:
            self._call = self._clock.callLater(self._timeout, self._abort, transport)

    def _abort(self, transport: Any) -> None:
        self._call = None
        transport.abortConnection()

    def cancel(self) -> None:
        """
        The connection closed: stop counting.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class _LimitedConnection(ProtocolWrapper):
    """
    One admitted connection: counted while open, and aborted if it does not
    close in time after the protocol asked it to.
    """

    factory: ConnectionLimiter

    def __init__(self, factory: ConnectionLimiter, wrappedProtocol: IProtocol, peer: str) -> None:
        super().__init__(factory, wrappedProtocol)
        self.peer = peer
        self._abortTimer = _AbortTimer(factory.clock, factory.closeTimeout)

    def loseConnection(self) -> None:
        super().loseConnection()
        if self.transport is not None:
            self._abortTimer.start(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._abortTimer.cancel()
        super().connectionLost(reason)


class _Refusal(Protocol):
    """
    A connection over the limit: one line, then close.
    """

    def __init__(self, line: bytes, clock: IReactorTime, timeout: float) -> None:
        self.line = line
        self.clock = clock
        self.timeout = timeout
        self._abortTimer = _AbortTimer(clock, timeout)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.line)
        self.transport.loseConnection()
        self._abortTimer.start(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._abortTimer.cancel()


class ConnectionLimiter(WrappingFactory["_LimitedConnection"]):
    """
    Wrap a protocol factory to cap simultaneous connections, in total and
    per client IP address.

    A connection over either cap gets C{refusal} (one line, in the
    protocol's own words: C{b"421 4.7.0 Too many connections\\r\\n"} for
    SMTP, C{b"-ERR [SYS/TEMP] too many connections\\r\\n"} for POP3,
    C{b"* BYE Too many connections\\r\\n"} for IMAP) and is closed; the
    wrapped factory never sees it.  Connections without an IP address
    (UNIX sockets) count only towards the total.

    Every connection, admitted or refused, is aborted if it has not closed
    C{closeTimeout} seconds after being told to.

    For an implicit-TLS listener put the limiter inside the TLS layer
    (C{Listener(description, ConnectionLimiter(...), reactor, tls=...)}
    does this), so the refusal is sent over TLS as the client expects.

    @ivar clock: the time source for the close timeout.
    @ivar refusal: the line sent to refused connections.
    @ivar maxConnections: most simultaneous connections.
    @ivar maxPerAddress: most simultaneous connections from one address.
    @ivar closeTimeout: seconds a closing connection may linger.
    """

    protocol = _LimitedConnection

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        clock: IReactorTime,
        refusal: bytes,
        maxConnections: int,
        maxPerAddress: int,
        closeTimeout: float = 60.0,
    ) -> None:
        super().__init__(wrappedFactory)
        self.clock = clock
        self.refusal = refusal
        self.maxConnections = maxConnections
        self.maxPerAddress = maxPerAddress
        self.closeTimeout = closeTimeout
        self._perAddress: Counter[str] = Counter()

    @classmethod
    def fromConfig(
        cls,
        wrappedFactory: IProtocolFactory,
        limits: LimitsConfig,
        refusal: bytes,
        clock: IReactorTime,
    ) -> ConnectionLimiter:
        """
        Build a limiter from C{[limits] connections} and
        C{connections_per_ip}.
        """
        return cls(
            wrappedFactory,
            clock,
            refusal,
            maxConnections=limits.connections,
            maxPerAddress=limits.connections_per_ip,
        )

    def connectionsFrom(self, host: str) -> int:
        """
        @return: how many admitted connections C{host} has open.
        """
        return self._perAddress[host]

    def _overLimit(self, host: str) -> str | None:
        if len(self.protocols) >= self.maxConnections:
            return "too many connections"
        if host and self._perAddress[host] >= self.maxPerAddress:
            return "too many connections from this address"
        return None

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override]
        """
        Admit the connection to the wrapped factory, or refuse it.
        """
        host = peerHost(addr)
        why = self._overLimit(host)
        if why is not None:
            _log.info("Refused connection from {peer}: {why}", peer=host, why=why)
            return _Refusal(self.refusal, self.clock, self.closeTimeout)
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return _LimitedConnection(self, wrapped, host)

    def registerProtocol(self, p: _LimitedConnection) -> None:
        """
        Count a connection as it starts.
        """
        super().registerProtocol(p)
        if p.peer:
            self._perAddress[p.peer] += 1

    def unregisterProtocol(self, p: _LimitedConnection) -> None:
        """
        Stop counting a connection that ended.
        """
        super().unregisterProtocol(p)
        if p.peer:
            self._perAddress[p.peer] -= 1
            if self._perAddress[p.peer] <= 0:
                del self._perAddress[p.peer]
