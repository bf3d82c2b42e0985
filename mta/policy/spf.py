# -*- test-case-name: tests.test_spf -*-
"""
SPF (RFC 7208): is the client allowed to send for the envelope sender's
domain?

The evaluation is pyspf's.  pyspf does its DNS synchronously, so a check
runs on an L{IBlockingRunner} worker thread, and pyspf's one DNS hook (the
module-level C{spf.DNSLookup}) is pointed, for that thread only, at
L{BlockingLookups}: blocking calls into the reactor-side
L{mta.interfaces.IDNSResolver}, so C{[dns] nameservers} and its cache
apply and pyspf's own (dnspython, system resolver) path is never taken.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import spf
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads

from mta.dns import (
    DNSNameError,
    DNSTemporaryError,
    NotCached,
    blockingLookup,
    cachedLookup,
    keptFor,
)
from mta.envelope import Address
from mta.interfaces import IBlockingRunner, IDNSResolver
from mta.ttlcache import TTLCache

#: The results RFC 7208 section 2.6 defines, as RFC 8601 writes them.
RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")

#: Seconds pyspf may spend on one check in all (RFC 7208 section 4.6.4
#: suggests at least 20); each lookup also has the resolver's time-outs.
CHECK_TIME = 20

#: SPF results kept at most by L{SPFResults}.
RESULTS_KEPT = 10_000


@dataclass(frozen=True)
class SPFResult:
    """
    The outcome of one SPF check.

    @ivar result: one of L{RESULTS}.
    @ivar identity: C{"mailfrom"} or C{"helo"}: which identity was checked.
    @ivar domain: the domain checked (the MAIL FROM domain, or the HELO
        name for the null sender).
    @ivar mailfrom: the identity as RFC 8601 writes it in
        C{smtp.mailfrom} or C{smtp.helo}.
    @ivar reason: why, in words (pyspf's explanation).
    """

    result: str
    identity: str
    domain: str
    mailfrom: str
    reason: str = ""


class BlockingLookups:
    """
    Blocking DNS lookups for worker threads, answered by the reactor-side
    resolver, or its cache on the worker thread (L{mta.dns.blockingLookup},
    for every type pyspf asks).

    Never call these on the reactor thread: they wait for the reactor.

    @ivar missed: whether a lookup of a L{cachedOnly} copy found no
        answer in the cache.
    """

    def __init__(
        self, resolver: IDNSResolver, reactor: IReactorFromThreads, wait: bool = True
    ) -> None:
        """
        @param wait: whether a lookup the cache cannot answer waits for
            the resolver; if not, it raises L{NotCached}.
        """
        self._resolver = resolver
        self._reactor = reactor
        self._wait = wait
        self.missed = False

    def _call(self, kind: str, *args: str) -> Any:
        if self._wait:
            return blockingLookup(self._resolver, self._reactor, kind, *args)
        try:
            return cachedLookup(self._resolver, kind, *args)
        except NotCached:
            # Also remembered: a library may swallow the exception.
            self.missed = True
            raise

    def cachedOnly(self) -> BlockingLookups:
        """
        @return: the same lookups answered from the cache alone, raising
            L{NotCached} (and remembering it in C{missed}) where the cache
            cannot answer: one per check, on a thread that must not wait.
        """
        return BlockingLookups(self._resolver, self._reactor, wait=False)

    def txt(self, name: str) -> list[bytes]:
        """
        @return: the TXT records of C{name}, each joined.
        """
        return cast(list[bytes], self._call("TXT", name))

    def addresses(self, host: str, family: str) -> list[str]:
        """
        @return: the addresses of C{host} of C{family} (C{"ipv4"}, C{"ipv6"}).
        """
        return cast(list[str], self._call("Addresses", host, family))

    def mx(self, domain: str) -> list[tuple[int, str]]:
        """
        @return: C{(preference, exchange)} pairs of C{domain}.
        """
        records = self._call("MX", domain)
        return [(r.preference, r.exchange) for r in records]

    def ptr(self, ip: str) -> list[str]:
        """
        @return: the names the reverse zone gives for C{ip}.
        """
        return cast(list[str], self._call("PTR", ip))

    def recording(self) -> RecordingLookups:
        """
        @return: the same lookups, remembering what they were asked.
        """
        return RecordingLookups(self)


class RecordingLookups(BlockingLookups):
    """
    The lookups of one check, remembered so that its result can be kept as
    long as the answers it came from (L{SPFResults}).

    @ivar asked: C{(kind, args)} of every lookup, in order.
    """

    def __init__(self, through: BlockingLookups) -> None:
        """
        @param through: the lookups that answer (and remember misses).
        """
        super().__init__(through._resolver, through._reactor)
        self._through = through
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def _call(self, kind: str, *args: str) -> Any:
        self.asked.append((kind, args))
        return self._through._call(kind, *args)

    def validFor(self) -> float | None:
        """
        @return: seconds every answer looked up stays in the resolver's
            cache (see L{mta.dns.keptFor}), or L{None}.
        """
        return keptFor(self._resolver, self.asked)


def _reverseNameToIP(name: str) -> str | None:
    """
    @return: the address a C{in-addr.arpa} or C{ip6.arpa} name stands for,
        or L{None}.
    """
    labels = name.lower().rstrip(".").split(".")
    try:
        if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
            nibbles = "".join(reversed(labels[:32]))
            return str(ipaddress.IPv6Address(int(nibbles, 16)))
    except ValueError:
        return None
    return None


def _pyspfAnswers(lookups: BlockingLookups, name: str, qtype: str) -> list[Any]:
    """
    Answer one of pyspf's queries in the form its C{DNSLookup} hook returns:
    C{((name, qtype), value)} pairs.  No such name or no such record is an
    empty list (pyspf counts it as a void lookup); a temporary failure is
    pyspf's C{TempError}.
    """
    try:
        if qtype == "TXT":
            return [((name, qtype), [record]) for record in lookups.txt(name)]
        if qtype in ("A", "AAAA"):
            family = "ipv4" if qtype == "A" else "ipv6"
            return [((name, qtype), a) for a in lookups.addresses(name, family)]
        if qtype == "MX":
            return [((name, qtype), mx) for mx in lookups.mx(name)]
        if qtype == "PTR":
            ip = _reverseNameToIP(name)
            return [] if ip is None else [((name, qtype), n) for n in lookups.ptr(ip)]
    except DNSNameError:
        return []
    except DNSTemporaryError as e:
        raise spf.TempError(f"DNS {e.rrtype} lookup of {e.name}: {e.reason}") from None
    # SPF (type 99) and anything else pyspf might ask: not served.
    return []


_thread = threading.local()


def _dnsLookup(name: str, qtype: str, strict: Any = True, timeout: float = 0) -> list[Any]:
    """
    pyspf's C{DNSLookup} while mta runs: the lookups of the check running
    on this thread, and never pyspf's own resolver.
    """
    lookups: BlockingLookups | None = getattr(_thread, "lookups", None)
    if lookups is None:
        raise spf.TempError("DNS: no resolver given for this SPF check")
    return _pyspfAnswers(lookups, name, qtype)


@contextmanager
def _lookupsThrough(lookups: BlockingLookups) -> Iterator[None]:
    spf.DNSLookup = _dnsLookup
    _thread.lookups = lookups
    try:
        yield
    finally:
        _thread.lookups = None


def _localPartText(local: str) -> str:
    """
    @return: the text of a local part in its written form: a quoted
        string without its quotes and quoted pairs (C{"a\\"b"} is
        C{a"b}); a dot-string as it is.
    """
    if len(local) >= 2 and local[0] == local[-1] == '"':
        return re.sub(r"\\(.)", r"\1", local[1:-1])
    return local


def _isDomainName(name: str) -> bool:
    return "." in name and not name.startswith("[") and _reverseNameToIP(name) is None


def checkSPF(
    lookups: BlockingLookups, ip: str, sender: Address, helo: str, receiver: str
) -> SPFResult:
    """
    Check SPF, blocking: on a worker thread only.

    The MAIL FROM identity is checked; for the null sender the HELO
    identity (RFC 7208 section 2.4).  A HELO name that is an address
    literal or no domain name gives C{none}.

    @param ip: the client's address.
    @param receiver: our host name (the C{%{r}} macro).
    """
    if sender.isNull:
        domain = helo.lower().rstrip(".")
        identity, shown = "helo", domain
        if not _isDomainName(domain):
            return SPFResult("none", identity, domain, shown, "HELO name is not a domain name")
        envelopeSender = ""
    else:
        domain = sender.domain
        identity, shown = "mailfrom", str(sender)
        envelopeSender = str(sender)
    query = spf.query(
        i=ip, s=envelopeSender, h=helo, receiver=receiver, timeout=CHECK_TIME, querytime=CHECK_TIME
    )
    if not sender.isNull:
        # pyspf splits the sender at its first "@", which for a quoted
        # local part holding one ("a@x.test"@example.com) checks a domain
        # that is not the sender's; and %{l} is the local part's text,
        # without the quotes of its written form.
        query.l = _localPartText(sender.local)
        query.o = query.d = domain
    with _lookupsThrough(lookups):
        result, _, explanation = query.check()
    if result not in RESULTS:
        # pyspf's "ambiguous" and the like appear only in harsh mode.
        result = "permerror"
    return SPFResult(result, identity, domain, shown, str(explanation))


class SPFResults:
    """
    SPF checks, with each result kept as long as every DNS answer it came
    from stays in the resolver's cache.

    A result is a function of the client address, the envelope sender, the
    HELO name, our host name and the DNS answers; while those answers are
    cached, checking again would read the same ones and give the same
    result.  So a client sending many messages from one sender is
    evaluated once per TTL, not once per message (pyspf's evaluation, with
    the caches cold as in a busy server, is about a fifth of the inbound
    check).  A temporary error is never kept, nor a result from an answer
    the resolver does not keep (a TTL of 0).  Safe on several threads.
    """

    def __init__(
        self, size: int = RESULTS_KEPT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """
        @param size: most results kept, least recently used dropped first.
        @param clock: seconds, for how long a result is kept.
        """
        self._kept: TTLCache[tuple[str, ...], SPFResult] = TTLCache(clock, size)

    def check(
        self, lookups: BlockingLookups, ip: str, sender: Address, helo: str, receiver: str
    ) -> SPFResult:
        """
        L{checkSPF}, or the result it gave for the same facts while its
        answers are still cached.  Blocking: on a worker thread only.
        """
        key = (ip, sender.local, sender.domain, helo, receiver)
        kept = self._kept.get(key)
        if kept is not None:
            return kept.value
        recording = lookups.recording()
        result = checkSPF(recording, ip, sender, helo, receiver)
        left = recording.validFor()
        if result.result != "temperror" and left is not None:
            self._kept.put(key, left, result)
        return result

    def __len__(self) -> int:
        return len(self._kept)


class SPFChecker:
    """
    Checks SPF off the reactor thread.
    """

    def __init__(
        self,
        resolver: IDNSResolver,
        reactor: IReactorFromThreads,
        runner: IBlockingRunner,
        receiver: str,
    ) -> None:
        """
        @param resolver: answers every lookup (from the reactor thread).
        @param reactor: runs those lookups for the worker thread.
        @param runner: runs pyspf.
        @param receiver: our host name.
        """
        self._lookups = BlockingLookups(resolver, reactor)
        self._runner = runner
        self._receiver = receiver

    def check(self, ip: str, sender: Address, helo: str) -> Deferred[SPFResult]:
        """
        @return: the SPF result for a client at C{ip} that said C{helo}
            and gave C{sender} as MAIL FROM.
        """
        return self._runner.run(checkSPF, self._lookups, ip, sender, helo, self._receiver)


__all__ = [
    "RESULTS",
    "RESULTS_KEPT",
    "BlockingLookups",
    "RecordingLookups",
    "SPFChecker",
    "SPFResult",
    "SPFResults",
    "checkSPF",
]
