# -*- test-case-name: tests.test_smtpclient -*-
"""
The outbound ESMTP client: the last step of relay delivery
(C{delivery.relay} -> C{delivery.mx} -> here).

One L{SMTPClient} is one connection to one peer.  L{connectSMTP} connects
and brings the session to the point where mail can flow: greeting, EHLO
(HELO when EHLO is refused), STARTTLS as the L{ClientPolicy} says, EHLO
again, AUTH for a smarthost.  L{SMTPClient.send} then carries one
transaction and answers with a L{Reply} per recipient; the connection can
carry further transactions until L{SMTPClient.quit}.

The client never alters a message to suit a peer: a message the peer cannot
take as it is (too big for its SIZE, 8-bit without 8BITMIME, UTF-8
addresses without SMTPUTF8, REQUIRETLS without verified TLS) gets a
permanent reply for every recipient and nothing is sent.  Everything that
goes wrong with the connection itself (timeouts on the injected clock, a
lost connection, a peer speaking garbage) is a temporary C{421 4.4.2}
for whatever was not final yet.
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mta.envelope import Recipient
from mta.errors import Reply
from mta.protocol import parseIP
from mta.smtp.clientparts import _CONTROL as _CONTROL
from mta.smtp.clientparts import (
    ClientPolicy,
    ConnectionFailed,
    OutboundMessage,
    ProtocolError,
    ReplyParser,
    Timeouts,
    _ok,
    bdatCommand,
    canonicalLineEnds,
    dotStuff,
    mailCommand,
    parseExtensions,
    rcptCommand,
    refusalFor,
)
from mta.smtp.clienttls import ClientTLS, TLSOutcome, clientContext

__all__ = [
    "ClientPolicy",
    "ConnectionFailed",
    "OutboundMessage",
    "ReplyParser",
    "SMTPClient",
    "TLSOutcome",
    "Timeouts",
    "connectSMTP",
    "dotStuff",
]

_log = Logger(namespace="mta.smtp.client")

#: Bodies up to this size go with MAIL and RCPT in the first pipelined
#: write when the peer offers CHUNKING; bigger ones wait for the RCPT
#: replies, so that nothing large is sent for nobody.
PIPELINED_BDAT_MAX = 64 * 1024
#: The size of each BDAT chunk of a big message.
CHUNK_SIZE = 1024 * 1024


@dataclass
class _Waiter:
    """
    A reply expected from the peer.
    """

    what: str
    timeout: float
    deferred: Deferred[Reply] = field(default_factory=Deferred)


@implementer(IHandshakeListener)
class SMTPClient(Protocol):
    """
    One ESMTP client session to one peer.

    Commands wait for replies in order through a queue of L{_Waiter}s;
    when the session breaks (timeout, lost connection, garbage) every
    waiter gets the same made-up C{421 4.4.2} reply, so the transaction
    code handles a dead peer as it handles a refusing one.

    @ivar extensions: the EHLO keywords, upper case, to their parameters.
    @ivar tlsOutcome: what came of TLS (see L{TLSOutcome}).
    @ivar greeting: the peer's banner, once received.
    @ivar dsnPassed: whether the last L{send} passed the DSN parameters on
        (the peer offers DSN).  When not, and a recipient asked for
        NOTIFY=SUCCESS, a "relayed" DSN is due (RFC 3461 section 4.1).
    @ivar transactions: how many L{send}s were made on this connection.
    """

    def __init__(
        self,
        serverName: str,
        policy: ClientPolicy,
        clock: IReactorTime,
        tlsContext: SSL.Context | None = None,
    ) -> None:
        """
        @param serverName: the peer's host name (the MX name): for SNI,
            the certificate check and the made-up replies.
        @param policy: how to go about it.
        @param clock: the time source for every timeout.
        @param tlsContext: a context from
            L{mta.smtp.clienttls.clientContext} to share between
            connections; by default one is made from C{policy.trustRoots}
            when TLS is first needed.
        """
        self.serverName = serverName
        self.policy = policy
        self.clock = clock
        self._tlsContext = tlsContext
        self.tlsCreator: ClientTLS | None = None
        self.extensions: dict[str, str] = {}
        self.tlsOutcome = TLSOutcome(reason="not negotiated")
        self.greeting: Reply | None = None
        self.dsnPassed = False
        self.transactions = 0
        self._parser = ReplyParser()
        self._waiters: deque[_Waiter] = deque()
        self._timer: IDelayedCall | None = None
        self._broken: Reply | None = None
        self._retryWithoutTLS = False
        self._connected = False
        self._ready = False
        self._busy = False
        self._quitting = False
        self._handshake: Deferred[Reply | None] | None = None
        self._inHandshake = False
        self._tlsActive = False
        self._readyResult: ConnectionFailed | bool | None = False
        self._readyWaiters: list[Deferred[None]] = []
        self._closedWaiters: list[Deferred[None]] = []

    # -- state ----------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """
        @return: whether the session is up and sound, so that L{send} may
            be called (once any running transaction is over).
        """
        return self._connected and self._ready and self._broken is None and not self._quitting

    @property
    def idle(self) -> bool:
        """
        @return: whether L{send} may be called now: L{usable} and no
            transaction running.
        """
        return self.usable and not self._busy

    def whenReady(self) -> Deferred[None]:
        """
        @return: fires when the session can carry mail, or fails with
            L{ConnectionFailed}.
        """
        if isinstance(self._readyResult, ConnectionFailed):
            failed: Deferred[None] = Deferred()
            failed.errback(self._readyResult)
            return failed
        if self._readyResult is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._readyWaiters.append(d)
        return d

    def _made(self, text: str) -> Reply:
        """
        @param text: an enhanced status code, a space and what happened.
        @return: a C{421} reply of our own about this peer.
        """
        enhanced, _, what = text.partition(" ")
        return Reply(421, f"{enhanced} {self.serverName}: {what}")

    # -- connection ---------------------------------------------------------------------

    def connectionMade(self) -> None:
        self._connected = True
        self._inHandshake = self.policy.implicitTLS
        greeting = self._expect("the greeting", self.policy.timeouts.greeting)
        setUp = Deferred.fromCoroutine(self._setUp(greeting))
        setUp.addBoth(self._setUpDone)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._connected = False
        if self._broken is None:
            if self._inHandshake:
                self._retryWithoutTLS = (
                    self._handshake is not None and self.policy.tls == "opportunistic"
                )
                broken = self._made(f"4.7.5 TLS handshake failed: {_failureText(reason)}")
            elif self._waiters:
                what = self._waiters[0].what
                broken = self._made(f"4.4.2 connection lost waiting for the reply to {what}")
            else:
                broken = self._made("4.4.2 connection closed")
            self._fail(broken)
        self._cancelTimer()
        waiters, self._closedWaiters = self._closedWaiters, []
        for d in waiters:
            d.callback(None)

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done: judge the certificate.
        """
        self._inHandshake = False
        self._tlsActive = True
        assert self.tlsCreator is not None
        self.tlsOutcome = self.tlsCreator.outcome()
        handshake, self._handshake = self._handshake, None
        self._armTimer()
        if handshake is not None:
            handshake.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if self._broken is not None:
            return
        self._parser.feed(data)
        while self._broken is None:
            try:
                reply = self._parser.next()
            except ProtocolError as e:
                self._fail(self._made(f"4.4.2 protocol error: {e}"))
                return
            if reply is None:
                return
            self._dispatch(reply)

    def _dispatch(self, reply: Reply) -> None:
        if not self._waiters:
            # A peer may say 421 and hang up at any time (RFC 5321 3.8);
            # anything else unasked for is a peer we cannot follow.
            if reply.code == 421:
                self._fail(reply)
            else:
                self._fail(self._made(f"4.4.2 protocol error: unexpected reply {reply}"))
            return
        waiter = self._waiters.popleft()
        self._armTimer()
        waiter.deferred.callback(reply)

    def _fail(self, reply: Reply) -> None:
        """
        Break the session: every reply still awaited is C{reply}, and the
        connection is dropped.
        """
        if self._broken is not None:
            return
        self._broken = reply
        self._cancelTimer()
        self._parser.discard()
        waiters, self._waiters = self._waiters, deque()
        handshake, self._handshake = self._handshake, None
        for waiter in waiters:
            waiter.deferred.callback(reply)
        if handshake is not None:
            handshake.callback(reply)
        if self._connected and self.transport is not None:
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()

    # -- timers ----------------------------------------------------------------------

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _armTimer(self) -> None:
        """
        Time the step the session is in: the oldest awaited reply, the TLS
        handshake, or idleness between transactions.
        """
        self._cancelTimer()
        if self._broken is not None or not self._connected:
            return
        if self._waiters:
            waiter = self._waiters[0]
            self._timer = self.clock.callLater(waiter.timeout, self._timedOut, waiter.what)
        elif self._handshake is not None:
            timeout = self.policy.timeouts.starttls
            self._timer = self.clock.callLater(timeout, self._timedOut, "the TLS handshake")
        elif self.idle:
            self._timer = self.clock.callLater(self.policy.timeouts.idle, self.quit)

    def _timedOut(self, what: str) -> None:
        self._timer = None
        if what == "the TLS handshake":
            self._retryWithoutTLS = self.policy.tls == "opportunistic"
            self._fail(self._made("4.7.5 TLS handshake timed out"))
        else:
            self._fail(self._made(f"4.4.2 timed out waiting for the reply to {what}"))

    # -- commands --------------------------------------------------------------------

    def _write(self, data: list[bytes]) -> None:
        if self._broken is None and self.transport is not None:
            self.transport.writeSequence(data)

    def _expect(self, what: str, timeout: float) -> Deferred[Reply]:
        """
        @return: the next reply not yet claimed, or the broken session's.
        """
        if self._broken is not None:
            return succeed(self._broken)
        waiter = _Waiter(what, timeout)
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._armTimer()
        return waiter.deferred

    def _command(self, line: bytes, what: str, timeout: float) -> Deferred[Reply]:
        """
        Send one command line and expect its reply.
        """
        return self._pipeline([(line + b"\r\n", what, timeout)])[0]

    def _pipeline(self, group: list[tuple[bytes, str, float]]) -> list[Deferred[Reply]]:
        """
        Send C{group}'s payloads in one write; expect a reply to each.
        """
        self._write([payload for payload, _, _ in group])
        return [self._expect(what, timeout) for _, what, timeout in group]

    # -- setting up --------------------------------------------------------------------

    async def _setUp(self, greetingReply: Deferred[Reply]) -> None:
        """
        Greeting, EHLO, STARTTLS and EHLO, AUTH.

        @raise ConnectionFailed: the session cannot carry mail.
        """
        timeouts = self.policy.timeouts
        greeting = self.greeting = await greetingReply
        if greeting.code != 220:
            raise ConnectionFailed(greeting, self._retryWithoutTLS)
        await self._hello()
        if not self.policy.implicitTLS:
            await self._maybeStartTLS(timeouts.starttls)
        if self.policy.tls == "verify" and not self.tlsOutcome.verified:
            raise ConnectionFailed(self._made(f"4.7.5 TLS not verified: {self.tlsOutcome.reason}"))
        if self.policy.auth is not None:
            await self._authenticate(self.policy.auth)

    def _setUpDone(self, result: Failure | None) -> None:
        failure: ConnectionFailed | None = None
        if isinstance(result, Failure):
            if isinstance(result.value, ConnectionFailed):
                failure = result.value
            else:
                _log.failure("smtp client: setting up {host} failed", result, host=self.serverName)
                failure = ConnectionFailed(self._made("4.3.0 internal error"))
            self._readyResult = failure
        else:
            self._ready = True
            self._readyResult = None
            self._armTimer()
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            if failure is None:
                d.callback(None)
            else:
                d.errback(failure)
        if failure is not None:
            # RFC 5321 3.1 and 4.1.1.10: end politely when the peer is
            # still there to hear it.
            self.quit()

    async def _hello(self) -> None:
        """
        EHLO, or HELO when the peer refuses EHLO.
        """
        name = self.policy.hostname.encode("idna")
        timeout = self.policy.timeouts.helo
        reply = await self._command(b"EHLO " + name, "EHLO", timeout)
        if _ok(reply):
            self.extensions = parseExtensions(reply)
            return
        if self._broken is not None or reply.code == 421:
            raise ConnectionFailed(reply, self._retryWithoutTLS)
        reply = await self._command(b"HELO " + name, "HELO", timeout)
        if not _ok(reply):
            raise ConnectionFailed(reply, self._retryWithoutTLS)
        self.extensions = {}

    async def _maybeStartTLS(self, limit: float) -> None:
        """
        STARTTLS as the policy says, then EHLO again.
        """
        mode = self.policy.tls
        if mode == "none":
            self.tlsOutcome = TLSOutcome(reason="STARTTLS not attempted (plaintext policy)")
            return
        if "STARTTLS" not in self.extensions:
            self.tlsOutcome = TLSOutcome(reason="peer offered no STARTTLS")
            if mode != "opportunistic":
                raise ConnectionFailed(self._made("4.7.4 TLS required but not offered"))
            return
        reply = await self._command(b"STARTTLS", "STARTTLS", limit)
        if reply.code != 220:
            if self._broken is not None or mode != "opportunistic":
                raise ConnectionFailed(self._made(f"4.7.4 STARTTLS refused: {reply}"))
            self.tlsOutcome = TLSOutcome(reason=f"STARTTLS refused: {reply}")
            return
        # Whatever came after the 220 came in plaintext: it must not be
        # taken as the peer's word under TLS.
        self._parser.discard()
        handshake: Deferred[Reply | None] = Deferred()
        self._handshake = handshake
        self._inHandshake = True
        self._armTimer()
        self.transport.startTLS(self._creator())  # type: ignore[union-attr]
        failed = await handshake
        if failed is not None:
            raise ConnectionFailed(failed, self._retryWithoutTLS)
        self.extensions = {}
        await self._hello()

    def _creator(self) -> ClientTLS:
        """
        @return: the TLS connection creator for this session.
        """
        if self.tlsCreator is None:
            if self._tlsContext is None:
                self._tlsContext = clientContext(self.policy.trustRoots)
            self.tlsCreator = ClientTLS(self.serverName, self._tlsContext)
        return self.tlsCreator

    async def _authenticate(self, credentials: tuple[str, str]) -> None:
        """
        AUTH PLAIN (with an initial response) or LOGIN, only under TLS.
        """
        if not self._tlsActive:
            raise ConnectionFailed(self._made("4.7.0 will not send AUTH credentials without TLS"))
        user, password = (s.encode("utf-8") for s in credentials)
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        timeout = self.policy.timeouts.auth

        def b64(data: bytes) -> bytes:
            return base64.b64encode(data)

        if "PLAIN" in mechanisms:
            reply = await self._command(
                b"AUTH PLAIN " + b64(b"\0" + user + b"\0" + password), "AUTH", timeout
            )
        elif "LOGIN" in mechanisms:
            reply = await self._command(b"AUTH LOGIN", "AUTH", timeout)
            for answer in (user, password):
                if reply.code != 334:
                    break
                reply = await self._command(b64(answer), "AUTH", timeout)
        else:
            raise ConnectionFailed(self._made("4.7.8 peer offers neither AUTH PLAIN nor LOGIN"))
        if reply.code != 235:
            # A wrong password is fixed by the administrator, not by the
            # sender: keep the mail and try again later.
            raise ConnectionFailed(self._made(f"4.7.8 AUTH refused: {reply}"))

    # -- sending -------------------------------------------------------------------------

    def send(self, message: OutboundMessage) -> Deferred[dict[Recipient, Reply]]:
        """
        Carry one transaction.

        @return: a reply for every recipient: 2xx delivered, 4xx try
            again, 5xx give up.  Recipients refused at RCPT have their own
            reply; the others share DATA's (or BDAT's) final one, or a
            C{421 4.4.2} when the session broke before it.
        @raise RuntimeError: the session is not ready or already busy.
        """
        if self._busy or not self._ready:
            raise RuntimeError("send() needs a ready, idle session")
        return Deferred.fromCoroutine(self._send(message))

    async def _send(self, message: OutboundMessage) -> dict[Recipient, Reply]:
        results: dict[Recipient, Reply] = {}
        if not self.usable:
            gone = self._broken or self._made("4.4.2 connection closed")
            return {r: gone for r in message.recipients}
        refusal = self.refusal(message)
        if refusal is not None:
            return {r: refusal for r in message.recipients}
        self._busy = True
        self._armTimer()
        try:
            await self._transaction(message, results)
        finally:
            self._busy = False
            self.transactions += 1
            self._armTimer()
        return {r: results[r] for r in message.recipients}

    def refusal(self, message: OutboundMessage) -> Reply | None:
        """
        @return: the permanent reply every recipient gets when this peer
            cannot take C{message} as it is, or C{None}; see
            L{refusalFor}.
        """
        return refusalFor(message, self.extensions, self.tlsOutcome, self.serverName)

    async def _transaction(self, message: OutboundMessage, results: dict[Recipient, Reply]) -> None:
        """
        MAIL, RCPTs, then the message; fill C{results}.
        """
        t = self.policy.timeouts
        self.dsnPassed = "DSN" in self.extensions
        pipelining = "PIPELINING" in self.extensions
        chunking = "CHUNKING" in self.extensions
        body = canonicalLineEnds(message.data)
        group = [(mailCommand(message, self.extensions) + b"\r\n", "MAIL", t.mail)]
        group += [
            (rcptCommand(r, self.extensions) + b"\r\n", "RCPT", t.rcpt) for r in message.recipients
        ]
        bodyReply: Deferred[Reply] | None = None
        if not pipelining:
            mailReply = await self._pipeline(group[:1])[0]
            rcptReplies = []
            if _ok(mailReply):
                for entry in group[1:]:
                    rcptReplies.append(await self._pipeline([entry])[0])
        else:
            # RFC 2920: the envelope and DATA (or a small message's only
            # BDAT) in one write, the replies read in order.
            withBody = not chunking or len(body) <= PIPELINED_BDAT_MAX
            if not chunking:
                group.append((b"DATA\r\n", "DATA", t.dataInit))
            elif withBody:
                group.append((bdatCommand(body, True), "BDAT", t.dataBlock + t.dataFinal))
            replies = self._pipeline(group)
            if withBody:
                bodyReply = replies.pop()
            mailReply, *rcptReplies = [await d for d in replies]
        accepted = self._envelopeResults(message, mailReply, rcptReplies, results)
        final = await self._body(body, accepted, bodyReply, chunking, pipelining)
        for r in accepted:
            results[r] = final
        if _ok(mailReply) and not _ok(final) and self._broken is None:
            await self._reset()

    def _envelopeResults(
        self,
        message: OutboundMessage,
        mailReply: Reply,
        rcptReplies: list[Reply],
        results: dict[Recipient, Reply],
    ) -> list[Recipient]:
        """
        Record the final replies MAIL and RCPT gave.

        @return: the recipients the peer accepted.
        """
        if not _ok(mailReply):
            # The RCPT replies after a refused MAIL (503s) say less.
            results.update((r, mailReply) for r in message.recipients)
            return []
        accepted = []
        for r, reply in zip(message.recipients, rcptReplies, strict=True):
            if _ok(reply):
                accepted.append(r)
            else:
                results[r] = reply
        return accepted

    async def _body(
        self,
        body: bytes,
        accepted: list[Recipient],
        bodyReply: Deferred[Reply] | None,
        chunking: bool,
        pipelining: bool,
    ) -> Reply:
        """
        Send the message (DATA or BDAT) when someone accepted it.

        @param bodyReply: the reply to the DATA or BDAT pipelined with the
            envelope, if it was.
        @return: the final reply (meaningless when nobody was accepted).
        """
        t = self.policy.timeouts
        if bodyReply is not None:
            reply = await bodyReply
            if not chunking and reply.code == 354:
                # Sent ahead of the RCPT replies: when nobody was accepted
                # a peer should have refused DATA, but this one did not.
                return await self._data(body if accepted else b"")
            return reply
        if not accepted:
            return Reply(554, "5.5.1 no valid recipients")
        if chunking:
            return await self._chunks(body, pipelining)
        reply = await self._command(b"DATA", "DATA", t.dataInit)
        if reply.code != 354:
            return reply
        return await self._data(body)

    async def _data(self, body: bytes) -> Reply:
        t = self.policy.timeouts
        self._write([dotStuff(body)])
        return await self._expect("the end of data", t.dataBlock + t.dataFinal)

    async def _chunks(self, body: bytes, pipelining: bool) -> Reply:
        """
        Send C{body} by BDAT (RFC 3030), in chunks of L{CHUNK_SIZE},
        pipelined when the peer allows.

        @return: the first failure, or the last chunk's reply.
        """
        t = self.policy.timeouts
        pieces = [body[i : i + CHUNK_SIZE] for i in range(0, len(body), CHUNK_SIZE)] or [b""]
        group = [
            (bdatCommand(piece, i == len(pieces) - 1), "BDAT", t.dataBlock + t.dataFinal)
            for i, piece in enumerate(pieces)
        ]
        if pipelining:
            replies = [await d for d in self._pipeline(group)]
        else:
            replies = []
            for entry in group:
                replies.append(await self._pipeline([entry])[0])
                if not _ok(replies[-1]):
                    break
        return next((r for r in replies if not _ok(r)), replies[-1])

    async def _reset(self) -> None:
        """
        RSET after a failed transaction; a peer refusing it is not used
        again.
        """
        reply = await self._command(b"RSET", "RSET", self.policy.timeouts.rset)
        if not _ok(reply):
            self.quit()

    # -- ending -------------------------------------------------------------------------------

    def quit(self) -> Deferred[None]:
        """
        Say QUIT and close.

        @return: fires when the connection is closed; never fails.
        """
        if not self._connected:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._closedWaiters.append(closed)
        if self._quitting:
            return closed
        self._quitting = True
        if self._broken is None:
            reply = self._command(b"QUIT", "QUIT", self.policy.timeouts.quit)
            reply.addBoth(lambda _: self._close())
        else:
            self._close()
        return closed

    def _close(self) -> None:
        if self._connected and self.transport is not None:
            self.transport.loseConnection()


def _failureText(reason: Failure) -> str:
    """
    @return: why the connection ended, on one line (an OpenSSL error list
        as its reasons).
    """
    value = reason.value
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        parts = [str(item[-1]) for item in value.args[0] if isinstance(item, tuple)]
        if parts:
            return ", ".join(parts)
    return _CONTROL.sub(" ", str(value))[:200] or type(value).__name__


class _OneClient(Factory):
    """
    Hands out the one client a connection was made for.
    """

    def __init__(self, client: SMTPClient) -> None:
        self.client = client

    def buildProtocol(self, addr: IAddress | None) -> SMTPClient:
        return self.client


def _endpoint(
    reactor: Any, host: str, port: int, timeout: float, bindAddress: str
) -> IStreamClientEndpoint:
    """
    @return: a TCP endpoint for an IPv4 or IPv6 literal (or a name).
    """
    bind = (bindAddress, 0) if bindAddress else None
    ip = parseIP(host)
    if ip is None:
        return HostnameEndpoint(reactor, host.encode("idna"), port, timeout, bind)
    if ip.version == 6:
        return TCP6ClientEndpoint(reactor, host, port, timeout, bind)
    return TCP4ClientEndpoint(reactor, str(ip), port, timeout, bind)


def connectSMTP(
    reactor: Any,
    endpoint: IStreamClientEndpoint | tuple[str, int],
    serverName: str,
    policy: ClientPolicy,
    bindAddress: str = "",
    tlsContext: SSL.Context | None = None,
) -> Deferred[SMTPClient]:
    """
    Connect to a peer and set the session up (see L{SMTPClient.whenReady}).

    @param reactor: an C{IReactorTCP} and C{IReactorTime}: connects and
        times every step.
    @param endpoint: where to connect: an endpoint, or an (IP, port) pair
        connected to with C{policy.timeouts.connect}.
    @param serverName: the peer's host name: SNI and the certificate check.
    @param bindAddress: the local address to connect from (C{[relay]
        source_address}), for an (IP, port) pair.
    @param tlsContext: a shared context from
        L{mta.smtp.clienttls.clientContext}, or C{None}.
    @return: fires with a ready client, or fails with L{ConnectionFailed}.
    """
    client = SMTPClient(serverName, policy, reactor, tlsContext)
    if isinstance(endpoint, tuple):
        host, port = endpoint
        endpoint = _endpoint(reactor, host, port, policy.timeouts.connect, bindAddress)
    if policy.implicitTLS:
        endpoint = wrapClientTLS(client._creator(), endpoint)
    return Deferred.fromCoroutine(_connect(client, endpoint))


async def _connect(client: SMTPClient, endpoint: IStreamClientEndpoint) -> SMTPClient:
    try:
        await endpoint.connect(_OneClient(client))
    except Exception as e:
        reason = _failureText(Failure(e))
        raise ConnectionFailed(client._made(f"4.4.1 cannot connect: {reason}")) from None
    await client.whenReady()
    return client
