"""
Test doubles shipped with mta (like C{treq.testing}): deterministic,
reactor-free stand-ins for the seams in L{mta.interfaces}.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.names import dns
from twisted.names import error as terror
from zope.interface import implementer

from mta.auth import LoginFailed, LoginRefused
from mta.dns import DNSNameError, DNSTemporaryError, MXRecord
from mta.envelope import Envelope
from mta.interfaces import IBlockingRunner, IDNSResolver, ILoginService, IMessageSink


@implementer(IMessageSink)
class RecordingSink:
    """
    An L{IMessageSink} that keeps what it is given in memory.

    @ivar messages: (envelope, data) pairs, in order.
    @ivar failWith: when set, C{enqueue} fails with it.
    @ivar hold: when set, C{enqueue} returns this unfired Deferred's
        successors instead (to test "no 250 before the fsync").
    """

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, bytes]] = []
        self.failWith: Exception | None = None
        self.held: list[Deferred[str]] = []
        self.hold = False
        self._ids = itertools.count(1)

    def newQueueId(self) -> str:
        """
        @return: C{Q1}, C{Q2}, ...
        """
        return f"Q{next(self._ids)}"

    def enqueue(self, envelope: Envelope, data: bytes) -> Deferred[str]:
        """
        Record the message; see L{IMessageSink.enqueue}.
        """
        if self.failWith is not None:
            return fail(self.failWith)
        self.messages.append((envelope, data))
        if self.hold:
            d: Deferred[str] = Deferred()
            self.held.append(d)
            return d
        return succeed(envelope.queueId)


@implementer(ILoginService)
class FakeLogin:
    """
    An L{ILoginService} with passwords in a dict, answering at once.

    @ivar attempts: C{(user, password, peer, protocol)} per call, in order.
    @ivar blocked: peers whose logins are refused unchecked.
    """

    def __init__(self, passwords: dict[str, str]) -> None:
        """
        @param passwords: user address to password.
        """
        self.passwords = passwords
        self.attempts: list[tuple[str, str, str, str]] = []
        self.blocked: set[str] = set()

    def login(self, username: str, password: str, peer: str, protocol: str = "-") -> Deferred[str]:
        """
        See L{ILoginService.login}.
        """
        self.attempts.append((username, password, peer, protocol))
        if peer in self.blocked:
            return fail(LoginRefused("blocked"))
        user = username.lower()
        if self.passwords.get(user) != password:
            return fail(LoginFailed("Authentication failed"))
        return succeed(user)


@implementer(IDNSResolver)
class FakeResolver:
    """
    An L{IDNSResolver} answering at once from dicts.

    @ivar mx: domain to MX records; a domain missing from every table is
        NXDOMAIN.
    @ivar addresses: host to its addresses (IPv6 and IPv4 mixed).
    @ivar txt: name to TXT records.
    @ivar failing: names whose lookups fail temporarily (SERVFAIL).
    @ivar queries: C{(kind, name)} per lookup, in order.
    """

    def __init__(
        self,
        mx: dict[str, list[tuple[int, str]]] | None = None,
        addresses: dict[str, list[str]] | None = None,
        txt: dict[str, list[bytes]] | None = None,
        failing: set[str] | None = None,
    ) -> None:
        self.mx = mx or {}
        self.addresses = addresses or {}
        self.txt = txt or {}
        self.failing = failing or set()
        self.queries: list[tuple[str, str]] = []

    def _exists(self, name: str) -> bool:
        return name in self.mx or name in self.addresses or name in self.txt

    def _answer(self, kind: str, name: str, table: dict[str, Any]) -> Deferred[Any]:
        self.queries.append((kind, name))
        if name in self.failing:
            return fail(DNSTemporaryError(name, kind, "SERVFAIL"))
        if not self._exists(name):
            return fail(DNSNameError(name, kind, "NXDOMAIN"))
        return succeed(list(table.get(name, [])))

    def lookupMX(self, domain: str) -> Deferred[list[MXRecord]]:
        """
        See L{IDNSResolver.lookupMX}.
        """
        d = self._answer("MX", domain, self.mx)
        return d.addCallback(
            lambda rs: [MXRecord(p, "" if h == "." else h.rstrip(".")) for p, h in rs]
        )

    def lookupAddresses(self, host: str, family: str = "any") -> Deferred[list[str]]:
        """
        See L{IDNSResolver.lookupAddresses}.
        """
        d = self._answer("A/AAAA", host, self.addresses)

        def pick(found: list[str]) -> list[str]:
            v6 = [a for a in found if ":" in a]
            v4 = [a for a in found if ":" not in a]
            return {"ipv4": v4, "ipv6": v6}.get(family, v6 + v4)

        return d.addCallback(pick)

    def lookupTXT(self, name: str) -> Deferred[list[bytes]]:
        """
        See L{IDNSResolver.lookupTXT}.
        """
        return self._answer("TXT", name, self.txt)

    def lookupPTR(self, ip: str) -> Deferred[list[str]]:
        """
        See L{IDNSResolver.lookupPTR}: nothing is known.
        """
        return self._answer("PTR", ip, {})


class TXTUpstream:
    """
    A C{twisted.names} resolver answering TXT questions from a table and
    counting them: the upstream of a real L{mta.dns.Resolver} in tests of
    what its cache keeps.

    @ivar txt: name to C{(record, ttl)}, or to an exception to fail with;
        other names (and other types) are NXDOMAIN.
    @ivar queries: how many questions were asked.
    """

    def __init__(self) -> None:
        self.txt: dict[str, tuple[str, int] | Exception] = {}
        self.queries = 0

    def query(self, query: dns.Query, timeout: Any = ()) -> Deferred[Any]:
        self.queries += 1
        name = query.name.name.decode()
        found = self.txt.get(name) if query.type == dns.TXT else None
        if isinstance(found, Exception):
            return fail(found)
        if found is None:
            return fail(terror.DNSNameError(dns.Message(rCode=dns.ENAME)))
        record, ttl = found
        payload = dns.Record_TXT(record.encode())
        return succeed(([dns.RRHeader(name, dns.TXT, dns.IN, ttl, payload=payload)], [], []))


class AtOnceReactor:
    """
    A reactor that runs what a worker thread hands it at once: the test
    plays the worker thread of a blocking lookup.
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


@implementer(IBlockingRunner)
class HeldRunner:
    """
    An L{IBlockingRunner} whose calls wait, in order, until the test runs
    them (L{runOne}, L{runAll}): a test sees the work queued and decides
    when the thread would have done it.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def run(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((f, args, d))
        return d

    def runOne(self) -> None:
        """
        Run the oldest waiting call; its Deferred fires with its result or
        its exception.
        """
        f, args, d = self.calls.pop(0)
        try:
            result = f(*args)
        except BaseException as e:
            d.errback(e)
        else:
            d.callback(result)

    def runAll(self) -> None:
        """
        Run every waiting call, including those queued meanwhile.
        """
        while self.calls:
            self.runOne()
