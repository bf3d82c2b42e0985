# -*- test-case-name: tests.test_dns -*-
"""
The single DNS adapter: every lookup mta makes goes through here.

L{Resolver} implements L{mta.interfaces.IDNSResolver} on top of
C{twisted.names}, so a lookup never blocks the reactor.  It asks the
servers of C{[dns] nameservers} (or those of the system's resolv.conf when
that list is empty), follows CNAME chains in the answers, turns the DNS
response codes into two exceptions that say what a mail server must do
(L{DNSNameError}: the name does not exist, fail for good;
L{DNSTemporaryError}: try later), and caches answers by their TTL on an
injected clock.

Libraries that do their DNS synchronously on worker threads (pyspf,
dkimpy's C{dnsfunc}) reach the same resolver, and so the same servers and
cache, through L{blockingTXT} (and L{Resolver.cached}): an answer in the
cache is read on the worker thread itself, under the cache's lock; only a
miss waits for the reactor thread to ask upstream.  Where a miss must not
wait at all, L{cachedLookup} raises L{NotCached} instead.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from twisted.internet import error as ierror
from twisted.internet.defer import (
    Deferred,
    FirstError,
    TimeoutError,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime, IResolver
from twisted.internet.threads import blockingCallFromThread
from twisted.names import client
from twisted.names import dns as tdns
from twisted.names import error as terror
from twisted.python.failure import Failure
from zope.interface import implementer

from mta.config import DNSConfig
from mta.interfaces import IDNSResolver
from mta.ttlcache import TTLCache

_T = TypeVar("_T")

#: Seconds to wait for an answer before asking again (each server in turn
#: per value); after the last one the lookup fails with L{DNSTemporaryError}.
DEFAULT_TIMEOUT: tuple[float, ...] = (1.0, 3.0, 5.0)

#: The longest a positive answer is kept, whatever its TTL says.
MAX_TTL = 24 * 60 * 60

#: How long a negative answer is kept when the server sent no SOA.
NEGATIVE_TTL = 5 * 60

#: The longest a negative answer is kept (RFC 2308 section 5 suggests
#: one to three hours), so a domain that is just being set up is not
#: refused for long.
MAX_NEGATIVE_TTL = 60 * 60

#: Entries kept in the cache; the least recently used go first.
CACHE_SIZE = 10_000

#: CNAMEs followed within one answer before giving up on the chain.
_MAX_CNAMES = 8

#: The system's resolver configuration, used only when C{[dns]
#: nameservers} is empty.
_RESOLV_CONF = "/etc/resolv.conf"


@dataclass(frozen=True)
class MXRecord:
    """
    One MX record.

    @ivar preference: lower is tried first.
    @ivar exchange: the mail host, lower-case, without the trailing dot;
        C{""} for a null MX (RFC 7505, C{MX 0 .}).
    """

    preference: int
    exchange: str

    @property
    def isNull(self) -> bool:
        """
        C{True} for the null MX of RFC 7505: the domain accepts no mail.
        """
        return self.exchange == ""


class DNSError(Exception):
    """
    A lookup failed; the base of L{DNSNameError} and L{DNSTemporaryError}.

    @ivar name: the name asked for.
    @ivar rrtype: the record type asked for (C{"MX"}, C{"A"}, ...).
    @ivar reason: why, in a few words (C{"NXDOMAIN"}, C{"SERVFAIL"},
        C{"timed out"}, ...).
    """

    def __init__(self, name: str, rrtype: str, reason: str) -> None:
        super().__init__(name, rrtype, reason)
        self.name = name
        self.rrtype = rrtype
        self.reason = reason

    def __str__(self) -> str:
        return f"DNS {self.rrtype} lookup of {self.name}: {self.reason}"


class DNSNameError(DNSError):
    """
    The name does not exist (NXDOMAIN): a permanent failure.
    """


class DNSTemporaryError(DNSError):
    """
    No usable answer now (SERVFAIL, REFUSED, a time-out, a network error):
    try again later.
    """


def parseNameserver(text: str) -> tuple[str, int]:
    """
    Read one C{[dns] nameservers} entry.

    @param text: C{"ip"}, C{"ipv4:port"} or C{"[ipv6]:port"}; a bare IPv6
        address means port 53.
    @return: C{(ip, port)}.
    @raise ValueError: if C{text} is none of those.
    """
    host, port = text, "53"
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            host, port = text[1:].rstrip("]"), "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    address = ipaddress.ip_address(host)
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in nameserver {text!r}")
    return str(address), int(port)


def _encodeName(name: str) -> bytes:
    """
    @return: C{name} as the ASCII bytes put on the wire: lower-case,
        without the trailing dot, U-labels as A-labels.
    @raise UnicodeError: if an internationalised name cannot be encoded.
    """
    name = name.rstrip(".").lower()
    if name.isascii():
        return name.encode("ascii")
    return name.encode("idna")


def _decodeName(name: tdns.Name) -> str:
    """
    @return: C{name} as text, lower-case, without the trailing dot.
    """
    return name.name.decode("ascii", "replace").rstrip(".").lower()


def _negativeTTL(authority: Sequence[Any]) -> float:
    """
    The time a negative answer may be kept (RFC 2308 section 5): the
    smaller of the SOA record's TTL and its MINIMUM field.
    """
    for rr in authority:
        if rr.type == tdns.SOA:
            return float(min(rr.ttl, rr.payload.minimum, MAX_NEGATIVE_TTL))
    return NEGATIVE_TTL


def _select(qname: bytes, rrtype: int, answers: Sequence[Any]) -> tuple[list[Any], float]:
    """
    Follow the CNAME chain from C{qname} through C{answers} and take the
    records of C{rrtype} at its end.

    @return: the payloads and the smallest TTL on the way (CNAMEs
        included); C{([], 0)} when the chain ends without the type.
    """
    target = qname
    ttls: list[int] = []
    for _ in range(_MAX_CNAMES):
        cname = next(
            (rr for rr in answers if rr.type == tdns.CNAME and rr.name.name.lower() == target),
            None,
        )
        if cname is None:
            break
        ttls.append(cname.ttl)
        target = cname.payload.name.name.lower()
    records = [rr for rr in answers if rr.type == rrtype and rr.name.name.lower() == target]
    if not records:
        return [], 0
    return [rr.payload for rr in records], min(ttls + [rr.ttl for rr in records])


_REASONS: list[tuple[type[BaseException], str]] = [
    (terror.DNSServerError, "SERVFAIL"),
    (terror.DNSQueryRefusedError, "REFUSED"),
    (terror.DNSFormatError, "FORMERR"),
    (terror.DNSNotImplementedError, "NOTIMP"),
    (terror.DNSUnknownError, "unknown response code"),
    (TimeoutError, "timed out"),
    (ierror.CannotListenError, "no local UDP port"),
    (ierror.ConnectError, "cannot connect"),
    (OSError, "network error"),
]


@implementer(IDNSResolver)
class Resolver:
    """
    An L{IDNSResolver} over a C{twisted.names} resolver, with a TTL cache.

    Positive answers are kept for their smallest TTL (at most L{MAX_TTL});
    NXDOMAIN and "no such record" for the SOA's negative TTL (RFC 2308, at
    most L{MAX_NEGATIVE_TTL}, L{NEGATIVE_TTL} without an SOA); temporary
    failures are not kept.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        nameservers: Sequence[str] = (),
        *,
        timeout: Sequence[float] = DEFAULT_TIMEOUT,
        upstream: IResolver | None = None,
        cacheSize: int = CACHE_SIZE,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param reactor: the clock of the cache and time-outs; without
            C{upstream} also the L{IReactorUDP} and L{IReactorTCP} the
            queries go through.
        @param nameservers: C{[dns] nameservers} entries (see
            L{parseNameserver}); empty means the servers of the system's
            resolv.conf.
        @param timeout: seconds to wait for each try (see
            L{DEFAULT_TIMEOUT}).
        @param upstream: the resolver to ask instead of building a
            C{twisted.names.client.Resolver} (for tests).
        @param cacheSize: most answers kept; 0 turns the cache off.
        @param clock: the cache's clock, when it is not C{reactor} (for
            tests that move time on with a L{Clock} while the queries go
            over real sockets).
        @raise ValueError: if a nameserver entry cannot be read.
        """
        self._timeout = tuple(timeout)
        self._reactor = reactor
        self._servers = [parseNameserver(n) for n in nameservers]
        self._upstream = upstream
        if upstream is None and self._servers:
            self._upstream = self._clientResolver()
        self._cache: TTLCache[tuple[bytes, int], tuple[Any, ...] | None] = TTLCache(
            (reactor if clock is None else clock).seconds, cacheSize
        )

    @property
    def upstream(self) -> IResolver:
        """
        The C{twisted.names} resolver asked on a cache miss.  The one over
        the system's resolv.conf is made at the first lookup, because it
        re-reads the file every minute from then on (and a server that
        never looks anything up should leave no timer behind, in tests
        above all).
        """
        if self._upstream is None:
            self._upstream = self._clientResolver()
        return self._upstream

    def _clientResolver(self) -> IResolver:
        return cast(
            IResolver,
            client.Resolver(
                resolv=None if self._servers else _RESOLV_CONF,
                servers=self._servers,
                timeout=self._timeout,
                reactor=self._reactor,
            ),
        )

    def lookupMX(self, domain: str) -> Deferred[list[MXRecord]]:
        """
        See L{IDNSResolver.lookupMX}; the records come sorted by preference.
        """

        def convert(records: list[Any]) -> list[MXRecord]:
            mxs = [MXRecord(int(r.preference), _decodeName(r.name)) for r in records]
            return sorted(mxs, key=lambda mx: mx.preference)

        return self._lookup(domain, tdns.MX).addCallback(convert)

    def lookupAddresses(self, host: str, family: str = "any") -> Deferred[list[str]]:
        """
        See L{IDNSResolver.lookupAddresses}.  AAAA and A are asked at once;
        the lookup fails with L{DNSNameError} only when every family asked
        says NXDOMAIN, and with L{DNSTemporaryError} only when none gave an
        address and one failed for now.  An IP address literal is its own
        answer.

        @raise ValueError: (in the Deferred) for an unknown C{family}.
        """
        if family not in ("any", "ipv4", "ipv6"):
            return fail(ValueError(f"unknown address family {family!r}"))
        literal = _literal(host, family)
        if literal is not None:
            return succeed(literal)
        types = [t for f, t in (("ipv6", tdns.AAAA), ("ipv4", tdns.A)) if family in (f, "any")]
        settled = [_settle(self._lookup(host, t).addCallback(_addresses)) for t in types]
        return gatherResults(settled, consumeErrors=True).addCallbacks(_mergeAddresses, _firstError)

    def lookupTXT(self, name: str) -> Deferred[list[bytes]]:
        """
        See L{IDNSResolver.lookupTXT}.
        """

        def convert(records: list[Any]) -> list[bytes]:
            return [b"".join(r.data) for r in records]

        return self._lookup(name, tdns.TXT).addCallback(convert)

    def lookupPTR(self, ip: str) -> Deferred[list[str]]:
        """
        See L{IDNSResolver.lookupPTR}.

        @raise ValueError: (in the Deferred) if C{ip} is no IP address.
        """
        try:
            name = ipaddress.ip_address(ip).reverse_pointer
        except ValueError as e:
            return fail(e)

        def convert(records: list[Any]) -> list[str]:
            return [_decodeName(r.name) for r in records]

        return self._lookup(name, tdns.PTR).addCallback(convert)

    def _cachedPayloads(self, name: str, rrtype: int) -> list[Any] | None:
        """
        The cache's answer for C{name} and C{rrtype}, without asking anyone:
        safe on any thread.

        @return: the payloads, or L{None} when the cache does not know.
        @raise DNSNameError: the cache holds an NXDOMAIN.
        """
        try:
            qname = _encodeName(name)
        except UnicodeError:
            return None
        entry = self._cache.get((qname, rrtype))
        if entry is None:
            return None
        if entry.value is None:
            raise DNSNameError(name, tdns.QUERY_TYPES.get(rrtype, str(rrtype)), "NXDOMAIN")
        return list(entry.value)

    def cached(self, kind: str, name: str, *args: str) -> Any:
        """
        Answer a lookup from the cache alone, on the calling thread (a
        worker thread's fast path; see L{blockingTXT}): what
        C{lookup<kind>(name, *args)} would give, when every answer it needs
        is cached and live.

        @param kind: C{"TXT"}, C{"MX"}, C{"PTR"} or C{"Addresses"}.
        @return: the answer, or L{None} when the cache cannot give it
            (ask the resolver on the reactor thread then).
        @raise DNSNameError: the cache holds an NXDOMAIN for it.
        """
        if kind == "TXT":
            records = self._cachedPayloads(name, tdns.TXT)
            return None if records is None else [b"".join(r.data) for r in records]
        if kind == "MX":
            records = self._cachedPayloads(name, tdns.MX)
            if records is None:
                return None
            mxs = [MXRecord(int(r.preference), _decodeName(r.name)) for r in records]
            return sorted(mxs, key=lambda mx: mx.preference)
        if kind == "PTR":
            try:
                reverse = ipaddress.ip_address(name).reverse_pointer
            except ValueError:
                return None
            records = self._cachedPayloads(reverse, tdns.PTR)
            return None if records is None else [_decodeName(r.name) for r in records]
        if kind == "Addresses":
            family = args[0] if args else "any"
            if family not in ("any", "ipv4", "ipv6"):
                return None
            literal = _literal(name, family)
            if literal is not None:
                return literal
            wanted = [t for f, t in (("ipv6", tdns.AAAA), ("ipv4", tdns.A)) if family in (f, "any")]
            outcomes: list[list[str] | DNSError] = []
            for rrtype in wanted:
                try:
                    records = self._cachedPayloads(name, rrtype)
                except DNSNameError as e:
                    outcomes.append(e)
                    continue
                if records is None:
                    return None
                outcomes.append(_addresses(records))
            return _mergeAddresses(outcomes)
        return None

    def cachedFor(self, kind: str, name: str, *args: str) -> float | None:
        """
        How much longer the cache keeps every answer that
        C{lookup<kind>(name, *args)} needs: a result computed from them
        holds as long (an SPF result, see L{mta.policy.spf.SPFResults}).
        Safe on any thread.

        @param kind: as L{cached}.
        @return: seconds (C{math.inf} for an address literal, which needs
            no answer), or L{None} when one of them is not cached.
        """
        if kind == "PTR":
            try:
                name = ipaddress.ip_address(name).reverse_pointer
            except ValueError:
                return None
            rrtypes = [tdns.PTR]
        elif kind == "Addresses":
            family = args[0] if args else "any"
            if family not in ("any", "ipv4", "ipv6"):
                return None
            if _literal(name, family) is not None:
                return math.inf
            rrtypes = [
                t for f, t in (("ipv6", tdns.AAAA), ("ipv4", tdns.A)) if family in (f, "any")
            ]
        elif kind in ("TXT", "MX"):
            rrtypes = [tdns.TXT if kind == "TXT" else tdns.MX]
        else:
            return None
        try:
            qname = _encodeName(name)
        except UnicodeError:
            return None
        now = self._cache.now()
        left = math.inf
        for rrtype in rrtypes:
            entry = self._cache.get((qname, rrtype))
            if entry is None:
                return None
            left = min(left, entry.expires - now)
        return left

    def _lookup(self, name: str, rrtype: int) -> Deferred[list[Any]]:
        """
        Answer from the cache, or ask upstream and keep what it says.

        @return: the payloads of the records of C{rrtype} at C{name} (at
            the end of its CNAME chain).
        """
        typeName = tdns.QUERY_TYPES.get(rrtype, str(rrtype))
        try:
            qname = _encodeName(name)
        except UnicodeError:
            return fail(DNSNameError(name, typeName, "not a valid domain name"))
        key = (qname, rrtype)
        entry = self._cache.get(key)
        if entry is not None:
            if entry.value is None:
                return fail(DNSNameError(name, typeName, "NXDOMAIN"))
            return succeed(list(entry.value))
        query = tdns.Query(qname, rrtype, tdns.IN)
        d = cast(
            "Deferred[tuple[Any, Any, Any]]",
            self.upstream.query(query, cast(Sequence[int], self._timeout)),
        )

        def answered(result: tuple[Any, Any, Any]) -> list[Any]:
            answers, authority, _ = result
            records, ttl = _select(qname, rrtype, answers)
            if records:
                self._cache.put(key, min(ttl, MAX_TTL), tuple(records))
            else:
                self._cache.put(key, _negativeTTL(authority), ())
            return records

        def failed(reason: Failure) -> Failure:
            if reason.check(terror.DNSNameError, terror.AuthoritativeDomainError):
                args = cast(BaseException, reason.value).args
                message = args[0] if args else None
                authority = getattr(message, "authority", [])
                self._cache.put(key, _negativeTTL(authority), None)
                return Failure(DNSNameError(name, typeName, "NXDOMAIN"))
            for kind, why in _REASONS:
                if reason.check(kind):
                    return Failure(DNSTemporaryError(name, typeName, why))
            return reason

        return d.addCallbacks(answered, failed)


def _literal(host: str, family: str) -> list[str] | None:
    """
    @return: C{[host]} if C{host} is an IP address of C{family}, C{[]} if
        one of the other family, L{None} if it is a name.
    """
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    wanted = {"any": (4, 6), "ipv4": (4,), "ipv6": (6,)}[family]
    return [str(address)] if address.version in wanted else []


def _addresses(records: list[Any]) -> list[str]:
    """
    @return: the addresses of A or AAAA payloads as text.
    """
    return [str(ipaddress.ip_address(r.address)) for r in records]


def _settle(d: Deferred[_T]) -> Deferred[_T | DNSError]:
    """
    @return: a Deferred that fires with C{d}'s result or its L{DNSError},
        so that L{gatherResults} sees every family's outcome.
    """

    def caught(reason: Failure) -> DNSError:
        reason.trap(DNSError)
        return cast(DNSError, reason.value)

    return d.addErrback(caught)


def _firstError(reason: Failure) -> Failure:
    """
    Unwrap the L{FirstError} of L{gatherResults}: a failure that is no
    L{DNSError} (a bug) comes out as itself.
    """
    reason.trap(FirstError)
    return cast(FirstError, reason.value).subFailure


def _mergeAddresses(outcomes: list[list[str] | DNSError]) -> list[str]:
    """
    Combine the AAAA and A outcomes, IPv6 first (see
    L{Resolver.lookupAddresses}).

    @raise DNSError: the first failure, when no family gave an address
        and at least one failed (L{DNSTemporaryError} before
        L{DNSNameError}).
    """
    addresses = [a for o in outcomes if not isinstance(o, DNSError) for a in o]
    errors = [o for o in outcomes if isinstance(o, DNSError)]
    if addresses or not errors:
        return addresses
    temporary = [e for e in errors if isinstance(e, DNSTemporaryError)]
    if temporary:
        raise temporary[0]
    if len(errors) == len(outcomes):
        raise errors[0]
    return []


def makeResolver(
    config: DNSConfig, reactor: IReactorTime, timeout: Sequence[float] = DEFAULT_TIMEOUT
) -> Resolver:
    """
    Build the server's one L{Resolver} from C{[dns]}.

    @param reactor: provides L{IReactorTime}, L{IReactorUDP} and
        L{IReactorTCP}.
    """
    return Resolver(reactor, config.nameservers, timeout=timeout)


def keptFor(resolver: IDNSResolver, lookups: Iterable[tuple[str, tuple[str, ...]]]) -> float | None:
    """
    How long a result computed from some lookups holds: as long as
    C{resolver} keeps every answer they needed (see L{Resolver.cachedFor}),
    at most L{MAX_TTL}.

    @param lookups: C{(kind, args)} of each lookup, as L{Resolver.cached}.
    @return: seconds, or L{None} when one answer is not kept (a temporary
        failure, a TTL of 0) or C{resolver} keeps none (it is no
        L{Resolver}).
    """
    if not isinstance(resolver, Resolver):
        return None
    left = float(MAX_TTL)
    for kind, args in lookups:
        t = resolver.cachedFor(kind, *args)
        if t is None:
            return None
        left = min(left, t)
    return left


def blockingTXT(resolver: IDNSResolver, reactor: IReactorFromThreads, name: str) -> list[bytes]:
    """
    Look up the TXT records of C{name} from a worker thread, waiting for
    the answer: for libraries that do blocking DNS (pyspf, dkimpy's
    C{dnsfunc}) running on a thread pool.

    Call it only from a worker thread, never from the reactor thread:
    there it would wait forever for the reactor it is blocking.

    @return: as L{IDNSResolver.lookupTXT}.
    @raise DNSNameError: NXDOMAIN.
    @raise DNSTemporaryError: no answer now.
    """
    return cast(list[bytes], blockingLookup(resolver, reactor, "TXT", name))


class NotCached(Exception):
    """
    A lookup that may not wait (L{cachedLookup}) found no live answer in
    the resolver's cache.
    """


def cachedLookup(resolver: IDNSResolver, kind: str, *args: str) -> Any:
    """
    C{resolver.lookup<kind>(*args)} answered from the cache alone, on any
    thread, never waiting: for a check that runs where waiting would hold
    up others (see L{mta.threads.BlockingRunner}'s draining runner) and is
    run again where it may wait when this raises.

    @param kind: as L{Resolver.cached}.
    @return: as the lookup.
    @raise DNSNameError: the cache holds an NXDOMAIN for it.
    @raise NotCached: the cache cannot answer (or C{resolver} has none).
    """
    found = resolver.cached(kind, *args) if isinstance(resolver, Resolver) else None
    if found is None:
        raise NotCached(kind, *args)
    return found


def blockingLookup(
    resolver: IDNSResolver, reactor: IReactorFromThreads, kind: str, *args: str
) -> Any:
    """
    C{resolver.lookup<kind>(*args)} from a worker thread, waiting for the
    answer.  A L{Resolver} answers from its cache on this thread when it
    can (no trip to the reactor thread); otherwise, and for any other
    L{IDNSResolver}, the lookup runs on the reactor thread.

    Call it only from a worker thread (see L{blockingTXT}).

    @param kind: C{"TXT"}, C{"MX"}, C{"PTR"} or C{"Addresses"}.
    @return: as the lookup.
    """
    if isinstance(resolver, Resolver):
        found = resolver.cached(kind, *args)
        if found is not None:
            return found
    lookup = cast(Callable[..., Deferred[Any]], getattr(resolver, f"lookup{kind}"))
    return blockingCallFromThread(reactor, lookup, *args)


__all__ = [
    "CACHE_SIZE",
    "DEFAULT_TIMEOUT",
    "MAX_NEGATIVE_TTL",
    "MAX_TTL",
    "NEGATIVE_TTL",
    "DNSError",
    "DNSNameError",
    "DNSTemporaryError",
    "MXRecord",
    "NotCached",
    "Resolver",
    "blockingLookup",
    "blockingTXT",
    "cachedLookup",
    "keptFor",
    "makeResolver",
    "parseNameserver",
]
