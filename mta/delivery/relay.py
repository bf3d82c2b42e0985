# -*- test-case-name: tests.test_relay -*-
"""
Delivery to other domains: step "relay" of the lifecycle.

L{RelayDelivery} is the L{IDeliveryTarget} for recipients in non-local
domains.  It groups a message's pending recipients by destination domain
(all recipients of one domain travel in one SMTP transaction, the ones a
peer defers with 452 in the next one over the same connection), finds the
domain's hosts with L{mta.delivery.mx.MXFinder} (or takes the smarthost),
and tries them in order with L{mta.smtp.client}: the first host that
answers decides each recipient's outcome; connection failures and a
temporary greeting move on to the next host.  A connection that ends its
work usable waits a few seconds for the next message to the same domain.
At most C{connections_per_domain} deliveries run at once per domain.

Every reply that came from a remote server carries it in L{Reply.remote},
for the DSNs and the queue's timeline; each connection is logged with its
TLS outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mta.delivery.bounce import RelayedReply
from mta.delivery.mx import Host, HostPlan, MXFinder, NoRoute
from mta.envelope import Envelope, Recipient
from mta.errors import Reply
from mta.interfaces import IBlockingRunner, IDeliveryTarget
from mta.logs import logLine
from mta.message import MessageBody
from mta.smtp.client import (
    ClientPolicy,
    ConnectionFailed,
    OutboundMessage,
    SMTPClient,
    TLSOutcome,
)

_log = Logger(namespace="mta.relay")

#: How long a usable connection waits for the next message to its domain.
IDLE_REUSE = 5.0

#: How long a shutdown waits for a peer to answer QUIT.
STOP_WAIT = 2.0

#: Most transactions one delivery makes for the recipients a peer defers
#: with "too many recipients".
MAX_TRANSACTIONS = 100

S451_NO_HOST = "4.4.1 No mail host of {domain} could be reached; last: {last}"
S451_INTERNAL = "4.3.0 Internal error during delivery"
S451_SMARTHOST = "4.4.3 smarthost {name} not found: {reply}"

#: Makes a connection and sets the session up: C{connect(host, ip, port,
#: policy)} fires with a ready client or fails with L{ConnectionFailed}.
Connect = Callable[[Host, str, int, ClientPolicy], "Deferred[SMTPClient]"]


@dataclass(frozen=True)
class Smarthost:
    """
    Where all outbound mail goes instead of MX delivery.

    @ivar host: its name (for TLS checks) or address.
    @ivar port: its port; 465 means implicit TLS.
    """

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Smarthost:
        """
        Read C{[relay] smarthost}: C{host}, C{host:port}, C{[v6]:port}
        (the port defaults to 25).
        """
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _, port = text.partition(":")
        return cls(host, int(port) if port else 25)


@dataclass
class _Idle:
    client: SMTPClient
    host: Host
    ip: str
    call: IDelayedCall


def remoteName(host: Host, ip: str) -> str:
    """
    @return: how a remote server is named in replies and logs:
        C{mx.example.com[192.0.2.1]}.
    """
    return f"{host.name}[{ip}]"


@implementer(IDeliveryTarget)
class RelayDelivery(Service):
    """
    Relays recipients of other domains to their mail hosts.
    """

    def __init__(
        self,
        *,
        finder: MXFinder,
        connect: Connect,
        policy: ClientPolicy,
        clock: IReactorTime,
        runner: IBlockingRunner,
        port: int = 25,
        perDomain: int = 10,
        smarthost: Smarthost | None = None,
    ) -> None:
        """
        @param finder: finds each domain's hosts (and the smarthost's
            addresses).
        @param connect: opens a client connection.
        @param policy: how clients behave (EHLO name, TLS, AUTH).
        @param clock: for the idle connections' timers.
        @param runner: reads queue files off the reactor thread.
        @param port: the port of MX hosts (C{[relay] outbound_port}).
        @param perDomain: most deliveries at once to one domain.
        @param smarthost: where to send everything, if anywhere.
        """
        self._finder = finder
        self._connect = connect
        self._policy = policy
        self._clock = clock
        self._runner = runner
        self._port = smarthost.port if smarthost is not None else port
        self._perDomain = perDomain
        self._smarthost = smarthost
        self._limits: dict[str, DeferredSemaphore] = {}
        self._idle: dict[str, list[_Idle]] = {}
        self._stopped = False

    # -- IDeliveryTarget ------------------------------------------------------------

    def deliver(self, envelope: Envelope, body: MessageBody) -> Deferred[dict[Recipient, Reply]]:
        """
        Try each pending recipient once; see L{IDeliveryTarget.deliver}.
        """
        if body.data is not None:
            return self._deliverData(envelope, body.data)
        d = self._runner.run(body.readSync)
        return d.addCallback(lambda data: self._deliverData(envelope, data))

    def _deliverData(self, envelope: Envelope, data: bytes) -> Deferred[dict[Recipient, Reply]]:
        groups: dict[str, list[Recipient]] = {}
        for r in envelope.pending:
            groups.setdefault(r.address.asciiDomain, []).append(r)
        ds = [self._limited(domain, envelope, rs, data) for domain, rs in groups.items()]
        if len(ds) == 1:
            return ds[0]
        merged = DeferredList(ds, consumeErrors=True)
        return merged.addCallback(_merge)

    def _limited(
        self, domain: str, envelope: Envelope, recipients: list[Recipient], data: bytes
    ) -> Deferred[dict[Recipient, Reply]]:
        limit = self._limits.get(domain)
        if limit is None:
            limit = self._limits[domain] = DeferredSemaphore(self._perDomain)
        d: Deferred[dict[Recipient, Reply]] = limit.run(
            self._deliverDomain, domain, envelope, recipients, data
        )
        d.addBoth(self._forgetLimit, domain, limit)
        # An error in one domain's delivery must neither be lost (with
        # several domains the results are merged) nor cost the others.
        d.addErrback(self._internalError, domain, envelope, recipients)
        return d

    def _internalError(
        self, failure: Failure, domain: str, envelope: Envelope, recipients: list[Recipient]
    ) -> dict[Recipient, Reply]:
        _log.failure(
            "relay: id={id} domain={domain} delivery raised",
            failure,
            id=envelope.queueId,
            domain=domain,
        )
        reply = Reply(451, S451_INTERNAL)
        return {r: reply for r in recipients}

    def _forgetLimit(self, result: Any, domain: str, limit: DeferredSemaphore) -> Any:
        if limit.tokens == limit.limit and not limit.waiting:
            self._limits.pop(domain, None)
        return result

    # -- one domain ---------------------------------------------------------------

    @inlineCallbacks
    def _deliverDomain(
        self, domain: str, envelope: Envelope, recipients: list[Recipient], data: bytes
    ) -> Generator[Deferred[Any], Any, dict[Recipient, Reply]]:
        try:
            plan = yield self._plan(domain)
        except NoRoute as e:
            _log.info(
                "relay: id={id} domain={domain} no route: {reply}",
                id=envelope.queueId,
                domain=domain,
                reply=str(e.reply),
            )
            reply = replace(e.reply, detail="; ".join(e.notes))
            return {r: reply for r in recipients}
        message = OutboundMessage.fromEnvelope(envelope, tuple(recipients), data)
        notes = list(plan.notes)
        last = "no host tried"
        idle = self._takeIdle(domain)
        tries = [(idle.host, idle.ip) for idle in [idle] if idle is not None]
        tries += [(host, ip) for host in plan.hosts for ip in host.addresses]
        for host, ip in tries:
            name = remoteName(host, ip)
            reused = idle is not None
            if idle is not None:
                client: SMTPClient | Reply = idle.client
                notes.append(f"{name}: connection reused")
                idle = None
            else:
                client = yield self._session(host, ip, envelope)
            if isinstance(client, Reply):
                last = f"{name}: {client}"
                notes.append(last)
                continue
            notes.append(f"{name}: {describeTLS(client.tlsOutcome)}")
            results = yield self._transactions(client, message)
            if reused and not client.usable and all(r.isTemporary for r in results.values()):
                # The peer had closed the idle connection: start afresh.
                notes.append(f"{name}: reused connection lost")
                continue
            dsnPassed = client.dsnPassed
            self._release(domain, client, host, ip)
            detail = "; ".join(notes)
            return {r: _remoteReply(reply, name, detail, dsnPassed) for r, reply in results.items()}
        reply = Reply(451, S451_NO_HOST.format(domain=domain, last=last), detail="; ".join(notes))
        return {r: reply for r in recipients}

    def _plan(self, domain: str) -> Deferred[HostPlan]:
        if self._smarthost is None:
            return self._finder.findHosts(domain)
        d = self._finder.hostPlan(self._smarthost.host)
        d.addErrback(_smarthostNotFound, self._smarthost.host)
        return d.addCallback(_asSmarthost, domain)

    @inlineCallbacks
    def _session(
        self, host: Host, ip: str, envelope: Envelope
    ) -> Generator[Deferred[Any], Any, SMTPClient | Reply]:
        """
        @return: a ready client connected to C{ip}, or the reply that says
            why there is none.
        """
        policy = self._policy
        for attempt in range(2):
            try:
                client: SMTPClient = yield self._connect(host, ip, self._port, policy)
            except ConnectionFailed as e:
                self._logConnection(envelope, host, ip, None, str(e.reply))
                if e.retryWithoutTLS and attempt == 0:
                    # A broken TLS stack at the peer: opportunistic TLS
                    # means plaintext is still better than no delivery.
                    policy = replace(policy, tls="none")
                    continue
                return e.reply
            self._logConnection(envelope, host, ip, client, "ready")
            return client
        raise AssertionError("unreachable")

    @inlineCallbacks
    def _transactions(
        self, client: SMTPClient, message: OutboundMessage
    ) -> Generator[Deferred[Any], Any, dict[Recipient, Reply]]:
        """
        Send the message; recipients deferred with "too many recipients"
        (452 4.5.3) go again in the next transaction, while each one makes
        progress.
        """
        outcome: dict[Recipient, Reply] = {}
        todo = message.recipients
        for _ in range(MAX_TRANSACTIONS):
            results = yield client.send(replace(message, recipients=todo))
            outcome.update(results)
            again = tuple(r for r in todo if _tooMany(results.get(r)))
            if not again or len(again) == len(todo) or not client.usable:
                break
            todo = again
        return outcome

    # -- idle connections ---------------------------------------------------------

    def _takeIdle(self, domain: str) -> _Idle | None:
        parked = self._idle.get(domain, [])
        while parked:
            idle = parked.pop()
            if idle.call.active():
                idle.call.cancel()
            if idle.client.usable:
                return idle
            idle.client.quit()
        return None

    def _release(self, domain: str, client: SMTPClient, host: Host, ip: str) -> None:
        if not client.usable:
            client.quit()
            return
        if self._stopped:
            # A delivery that ends after stopService does not park its
            # connection: nothing would close it.
            self._quitSoon(client)
            return
        call = self._clock.callLater(IDLE_REUSE, self._expire, domain, client)
        self._idle.setdefault(domain, []).append(_Idle(client, host, ip, call))

    def _expire(self, domain: str, client: SMTPClient) -> None:
        parked = self._idle.get(domain, [])
        self._idle[domain] = [i for i in parked if i.client is not client]
        if not self._idle[domain]:
            del self._idle[domain]
        client.quit()

    def stopService(self) -> Deferred[list[tuple[bool, None]]]:
        """
        Close every idle connection (at shutdown).

        @return: a Deferred firing once they are closed.
        """
        super().stopService()
        self._stopped = True
        closing = []
        for parked in self._idle.values():
            for idle in parked:
                if idle.call.active():
                    idle.call.cancel()
                closing.append(self._quitSoon(idle.client))
        self._idle.clear()
        return DeferredList(closing)

    def _quitSoon(self, client: SMTPClient) -> Deferred[None]:
        """
        Say QUIT, but give a peer that does not answer only L{STOP_WAIT}
        seconds before the connection is cut: it must not hold up a
        shutdown.
        """
        d = client.quit()
        transport = client.transport
        cut = self._clock.callLater(STOP_WAIT, _abort, transport)
        d.addBoth(lambda result: cut.cancel() if cut.active() else None)
        return d

    # -- logging --------------------------------------------------------------------

    def _logConnection(
        self, envelope: Envelope, host: Host, ip: str, client: SMTPClient | None, result: str
    ) -> None:
        tls = client.tlsOutcome if client is not None else None
        logLine(
            _log,
            "relay: id={id} host={host} tls={tls} verified={verified} result={result}",
            id=envelope.queueId,
            host=remoteName(host, ip),
            tls=(tls.version or "none") if tls is not None else "-",
            verified=("yes" if tls.verified else f"no ({tls.reason or 'unknown'})")
            if tls is not None and tls.version
            else "-",
            result=result,
        )


def describeTLS(tls: TLSOutcome) -> str:
    """
    @return: a TLS outcome in a few words: C{"TLSv1.3, certificate
        verified"}, C{"TLSv1.2, certificate not verified (self-signed)"},
        C{"no TLS (peer offered no STARTTLS)"}.
    """
    if not tls.version:
        return f"no TLS ({tls.reason})" if tls.reason else "no TLS"
    if tls.verified:
        return f"{tls.version}, certificate verified"
    return f"{tls.version}, certificate not verified ({tls.reason or 'unknown'})"


def _remoteReply(reply: Reply, remote: str, detail: str, dsnPassed: bool) -> Reply:
    """
    @return: C{reply} naming the server that gave it; a success from a
        peer that did not take the DSN request is a L{RelayedReply}, so
        that this server sends the success notices asked for.
    """
    if reply.code < 300 and not dsnPassed:
        return RelayedReply(reply.code, reply.text, remote, detail)
    return replace(reply, remote=remote, detail=detail)


def _abort(transport: Any) -> None:
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()


def _tooMany(reply: Reply | None) -> bool:
    """
    @return: whether C{reply} says "too many recipients" (RFC 5321 4.5.3.1.10:
        452, with 4.5.3 when the peer gives enhanced codes), rather than,
        say, a full mailbox (452 4.2.2), which waits for the next attempt.
    """
    if reply is None or reply.code != 452:
        return False
    enhanced = reply.text.split(" ", 1)[0]
    return enhanced == "4.5.3" or not enhanced[:1].isdigit()


def _smarthostNotFound(failure: Failure, name: str) -> HostPlan:
    """
    A smarthost that cannot be found is the administrator's to fix: keep
    the mail (a temporary reply) rather than bounce it as if the
    recipient's domain did not exist.
    """
    failure.trap(NoRoute)
    error = failure.value
    assert isinstance(error, NoRoute)
    if error.reply.isPermanent:
        raise NoRoute(Reply(451, S451_SMARTHOST.format(name=name, reply=error.reply)), error.notes)
    raise error


def _asSmarthost(plan: HostPlan, domain: str) -> HostPlan:
    return HostPlan(domain, plan.hosts, [f"smarthost {h.name}" for h in plan.hosts])


def _merge(results: Sequence[tuple[bool, Any]]) -> dict[Recipient, Reply]:
    merged: dict[Recipient, Reply] = {}
    for ok, value in results:
        if ok:
            merged.update(value)
    return merged
