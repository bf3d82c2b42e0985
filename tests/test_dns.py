"""
Tests for L{mta.dns}: the resolver against a fake upstream on a L{Clock}
(errors, cache), and against the real test DNS server on loopback.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.defer import TimeoutError as DeferTimeoutError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.names import dns
from twisted.names import error as terror
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mta.config import DNSConfig
from mta.dns import (
    MAX_NEGATIVE_TTL,
    MAX_TTL,
    NEGATIVE_TTL,
    DNSNameError,
    DNSTemporaryError,
    MXRecord,
    Resolver,
    blockingLookup,
    blockingTXT,
    makeResolver,
    parseNameserver,
)
from mta.interfaces import IDNSResolver
from mta.testing.dnsserver import DNSServer, Record


def _rr(name: str, payload: Any, ttl: int = 300) -> dns.RRHeader:
    return dns.RRHeader(name, payload.TYPE, dns.IN, ttl, payload=payload)


def _soa(ttl: int, minimum: int) -> dns.RRHeader:
    return _rr("test", dns.Record_SOA(b"ns.test", b"hm.test", minimum=minimum), ttl)


def _nxdomain(*authority: dns.RRHeader) -> terror.DNSNameError:
    """
    The exception twisted.names' client fails with for NXDOMAIN: it
    carries the response message.
    """
    message = dns.Message(rCode=dns.ENAME)
    message.authority = list(authority)
    return terror.DNSNameError(message)


class _FakeUpstream:
    """
    A twisted.names resolver answering from a table and counting queries.

    @ivar table: C{(name, type)} to the answer section, or to an exception
        the query fails with; unknown questions get NXDOMAIN.
    @ivar authority: the authority section of every positive response.
    @ivar queries: every C{(name, type)} asked.
    """

    def __init__(self) -> None:
        self.table: dict[tuple[bytes, int], list[dns.RRHeader] | Exception] = {}
        self.authority: list[dns.RRHeader] = []
        self.queries: list[tuple[bytes, int]] = []

    def query(self, query: dns.Query, timeout: Sequence[int] = ()) -> Deferred[Any]:
        key = (query.name.name, query.type)
        self.queries.append(key)
        result = self.table.get(key, _nxdomain())
        if isinstance(result, Exception):
            return fail(result)
        return succeed((result, self.authority, []))


class ResolverFakeTests(SynchronousTestCase):
    """
    L{Resolver} over a fake upstream on a L{Clock}: answers, errors and the
    cache.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.upstream = _FakeUpstream()
        self.resolver = Resolver(self.clock, upstream=self.upstream)  # type: ignore[arg-type]

    def mx(self, name: str, *records: tuple[int, str, int]) -> None:
        self.upstream.table[(name.encode(), dns.MX)] = [
            _rr(name, dns.Record_MX(p, x.encode()), ttl) for p, x, ttl in records
        ]

    def test_verifyObject(self) -> None:
        """
        L{Resolver} provides L{IDNSResolver}.
        """
        self.assertTrue(verifyObject(IDNSResolver, self.resolver))

    def test_mxSortedAndNormalised(self) -> None:
        """
        MX records come sorted by preference, exchanges lower-case without
        the trailing dot, and the question is asked lower-case.
        """
        self.mx("example.test", (20, "MX2.Example.Test.", 300), (10, "mx1.example.test", 300))
        result = self.successResultOf(self.resolver.lookupMX("Example.TEST."))
        self.assertEqual(
            result, [MXRecord(10, "mx1.example.test"), MXRecord(20, "mx2.example.test")]
        )

    def test_nullMX(self) -> None:
        """
        C{MX 0 .} is the null MX: C{MXRecord(0, "")}, and C{isNull}.
        """
        self.mx("nullmx.test", (0, "", 300))
        [record] = self.successResultOf(self.resolver.lookupMX("nullmx.test"))
        self.assertEqual(record, MXRecord(0, ""))
        self.assertTrue(record.isNull)
        self.assertFalse(MXRecord(0, "mx.test").isNull)

    def test_internationalisedName(self) -> None:
        """
        A name with U-labels is asked as A-labels.
        """
        self.successResultOf(self.resolver.lookupMX("bücher.example").addErrback(lambda f: None))
        self.assertEqual(self.upstream.queries, [(b"xn--bcher-kva.example", dns.MX)])

    def test_unencodableName(self) -> None:
        """
        A name that cannot be put on the wire fails with L{DNSNameError}
        without a query.
        """
        self.failureResultOf(self.resolver.lookupMX("ü" * 70 + ".test"), DNSNameError)
        self.assertEqual(self.upstream.queries, [])

    def test_cnameChain(self) -> None:
        """
        Records at the end of a CNAME chain in the answer are the answer; the
        chain's smallest TTL is how long it is cached.
        """
        self.upstream.table[(b"alias.test", dns.A)] = [
            _rr("alias.test", dns.Record_CNAME(b"Middle.Test"), ttl=30),
            _rr("middle.test", dns.Record_CNAME(b"host.test"), ttl=300),
            _rr("host.test", dns.Record_A("192.0.2.1"), ttl=300),
            _rr("other.test", dns.Record_A("192.0.2.9"), ttl=300),
        ]
        result = self.resolver.lookupAddresses("alias.test", "ipv4")
        self.assertEqual(self.successResultOf(result), ["192.0.2.1"])
        self.clock.advance(29)
        self.resolver.lookupAddresses("alias.test", "ipv4")
        self.clock.advance(1)
        self.resolver.lookupAddresses("alias.test", "ipv4")
        self.assertEqual(len(self.upstream.queries), 2)

    def test_cnameWithoutTarget(self) -> None:
        """
        A CNAME chain that ends without the type asked is an empty answer.
        """
        self.upstream.table[(b"alias.test", dns.MX)] = [
            _rr("alias.test", dns.Record_CNAME(b"host.test"))
        ]
        self.assertEqual(self.successResultOf(self.resolver.lookupMX("alias.test")), [])

    def test_nxdomain(self) -> None:
        """
        NXDOMAIN fails with L{DNSNameError}, naming the name and type.
        """
        failure = self.failureResultOf(self.resolver.lookupMX("nowhere.test"), DNSNameError)
        self.assertEqual(str(failure.value), "DNS MX lookup of nowhere.test: NXDOMAIN")

    def test_temporaryErrors(self) -> None:
        """
        SERVFAIL, REFUSED, a time-out and a network error fail with
        L{DNSTemporaryError} saying which.
        """
        cases = [
            (terror.DNSServerError(dns.Message()), "SERVFAIL"),
            (terror.DNSQueryRefusedError(dns.Message()), "REFUSED"),
            (DeferTimeoutError(), "timed out"),
            (terror.DNSQueryTimeoutError(1), "timed out"),
            (ConnectionRefusedError(), "network error"),
        ]
        for exception, reason in cases:
            self.upstream.table[(b"bad.test", dns.TXT)] = exception
            failure = self.failureResultOf(self.resolver.lookupTXT("bad.test"), DNSTemporaryError)
            self.assertEqual(failure.value.reason, reason)

    def test_temporaryErrorsNotCached(self) -> None:
        """
        After a temporary failure the next lookup asks again.
        """
        self.upstream.table[(b"bad.test", dns.MX)] = terror.DNSServerError(dns.Message())
        self.failureResultOf(self.resolver.lookupMX("bad.test"), DNSTemporaryError)
        self.mx("bad.test", (10, "mx.test", 300))
        self.assertEqual(len(self.successResultOf(self.resolver.lookupMX("bad.test"))), 1)
        self.assertEqual(len(self.upstream.queries), 2)

    def test_unknownErrorsPropagate(self) -> None:
        """
        An exception that is no DNS or network failure (a bug) is not
        disguised as a temporary DNS error.
        """
        self.upstream.table[(b"bug.test", dns.MX)] = ZeroDivisionError()
        self.failureResultOf(self.resolver.lookupMX("bug.test"), ZeroDivisionError)

    def test_positiveCacheByTTL(self) -> None:
        """
        An answer is served from the cache until its TTL runs out, then asked
        again.
        """
        self.mx("example.test", (10, "mx.test", 60))
        self.resolver.lookupMX("example.test")
        self.clock.advance(59)
        self.assertEqual(len(self.successResultOf(self.resolver.lookupMX("example.test"))), 1)
        self.assertEqual(len(self.upstream.queries), 1)
        self.clock.advance(1)
        self.resolver.lookupMX("example.test")
        self.assertEqual(len(self.upstream.queries), 2)

    def test_positiveTTLCapped(self) -> None:
        """
        A TTL longer than L{MAX_TTL} is kept only L{MAX_TTL} seconds.
        """
        self.mx("example.test", (10, "mx.test", 30 * MAX_TTL))
        self.resolver.lookupMX("example.test")
        self.clock.advance(MAX_TTL - 1)
        self.resolver.lookupMX("example.test")
        self.assertEqual(len(self.upstream.queries), 1)
        self.clock.advance(1)
        self.resolver.lookupMX("example.test")
        self.assertEqual(len(self.upstream.queries), 2)

    def test_zeroTTLNotCached(self) -> None:
        """
        A record with TTL 0 is asked for every time.
        """
        self.mx("example.test", (10, "mx.test", 0))
        self.resolver.lookupMX("example.test")
        self.resolver.lookupMX("example.test")
        self.assertEqual(len(self.upstream.queries), 2)

    def test_nxdomainCachedBySOA(self) -> None:
        """
        NXDOMAIN is cached for the smaller of the SOA's TTL and MINIMUM, and
        the cached answer fails the same way.
        """
        self.upstream.table[(b"gone.test", dns.MX)] = _nxdomain(_soa(ttl=120, minimum=30))
        self.failureResultOf(self.resolver.lookupMX("gone.test"), DNSNameError)
        self.clock.advance(29)
        self.failureResultOf(self.resolver.lookupMX("gone.test"), DNSNameError)
        self.assertEqual(len(self.upstream.queries), 1)
        self.clock.advance(1)
        self.failureResultOf(self.resolver.lookupMX("gone.test"), DNSNameError)
        self.assertEqual(len(self.upstream.queries), 2)

    def test_negativeTTLCapped(self) -> None:
        """
        A negative answer is kept at most L{MAX_NEGATIVE_TTL} seconds.
        """
        self.upstream.authority = [_soa(ttl=10 * MAX_NEGATIVE_TTL, minimum=10 * MAX_NEGATIVE_TTL)]
        self.upstream.table[(b"empty.test", dns.TXT)] = []
        self.resolver.lookupTXT("empty.test")
        self.clock.advance(MAX_NEGATIVE_TTL - 1)
        self.resolver.lookupTXT("empty.test")
        self.assertEqual(len(self.upstream.queries), 1)
        self.clock.advance(1)
        self.resolver.lookupTXT("empty.test")
        self.assertEqual(len(self.upstream.queries), 2)

    def test_noDataCachedByDefault(self) -> None:
        """
        An empty answer without an SOA is cached for L{NEGATIVE_TTL} seconds.
        """
        self.upstream.table[(b"empty.test", dns.TXT)] = []
        self.assertEqual(self.successResultOf(self.resolver.lookupTXT("empty.test")), [])
        self.clock.advance(NEGATIVE_TTL - 1)
        self.assertEqual(self.successResultOf(self.resolver.lookupTXT("empty.test")), [])
        self.assertEqual(len(self.upstream.queries), 1)
        self.clock.advance(1)
        self.resolver.lookupTXT("empty.test")
        self.assertEqual(len(self.upstream.queries), 2)

    def test_cacheBounded(self) -> None:
        """
        Past C{cacheSize} answers the least recently used one is dropped.
        """
        resolver = Resolver(self.clock, upstream=self.upstream, cacheSize=2)  # type: ignore[arg-type]
        for name in ("a.test", "b.test", "c.test"):
            self.mx(name, (10, "mx.test", 300))
        resolver.lookupMX("a.test")
        resolver.lookupMX("b.test")
        resolver.lookupMX("a.test")
        resolver.lookupMX("c.test")
        del self.upstream.queries[:]
        resolver.lookupMX("a.test")
        resolver.lookupMX("b.test")
        self.assertEqual(self.upstream.queries, [(b"b.test", dns.MX)])

    def test_typesCachedApart(self) -> None:
        """
        The cache keeps each record type of a name apart.
        """
        self.mx("example.test", (10, "mx.test", 300))
        self.upstream.table[(b"example.test", dns.TXT)] = []
        self.resolver.lookupMX("example.test")
        self.assertEqual(self.successResultOf(self.resolver.lookupTXT("example.test")), [])
        self.assertEqual(len(self.upstream.queries), 2)

    def test_addressesBothFamilies(self) -> None:
        """
        AAAA and A are both asked, and IPv6 addresses come first.
        """
        self.upstream.table[(b"h.test", dns.A)] = [_rr("h.test", dns.Record_A("192.0.2.1"))]
        self.upstream.table[(b"h.test", dns.AAAA)] = [_rr("h.test", dns.Record_AAAA("2001:DB8::1"))]
        result = self.successResultOf(self.resolver.lookupAddresses("h.test"))
        self.assertEqual(result, ["2001:db8::1", "192.0.2.1"])
        self.assertEqual(set(self.upstream.queries), {(b"h.test", dns.A), (b"h.test", dns.AAAA)})

    def test_addressesOneFamilyNXDOMAIN(self) -> None:
        """
        NXDOMAIN for one family only does not hide the other's addresses.
        """
        self.upstream.table[(b"h.test", dns.A)] = [_rr("h.test", dns.Record_A("192.0.2.1"))]
        result = self.successResultOf(self.resolver.lookupAddresses("h.test"))
        self.assertEqual(result, ["192.0.2.1"])

    def test_addressesBothNXDOMAIN(self) -> None:
        """
        NXDOMAIN for both families is L{DNSNameError}.
        """
        self.failureResultOf(self.resolver.lookupAddresses("h.test"), DNSNameError)

    def test_addressesTemporaryAndAddresses(self) -> None:
        """
        When one family fails for now and the other has addresses, the
        addresses are the answer.
        """
        self.upstream.table[(b"h.test", dns.AAAA)] = DeferTimeoutError()
        self.upstream.table[(b"h.test", dns.A)] = [_rr("h.test", dns.Record_A("192.0.2.1"))]
        result = self.successResultOf(self.resolver.lookupAddresses("h.test"))
        self.assertEqual(result, ["192.0.2.1"])

    def test_addressesTemporaryAndNothing(self) -> None:
        """
        When one family fails for now and the other has none, the lookup
        fails with L{DNSTemporaryError}.
        """
        self.upstream.table[(b"h.test", dns.AAAA)] = DeferTimeoutError()
        self.failureResultOf(self.resolver.lookupAddresses("h.test"), DNSTemporaryError)

    def test_addressesOneFamily(self) -> None:
        """
        C{family="ipv4"} or C{"ipv6"} asks only for A or only for AAAA.
        """
        self.resolver.lookupAddresses("h.test", "ipv4").addErrback(lambda f: None)
        self.resolver.lookupAddresses("i.test", "ipv6").addErrback(lambda f: None)
        self.assertEqual(self.upstream.queries, [(b"h.test", dns.A), (b"i.test", dns.AAAA)])

    def test_addressesBug(self) -> None:
        """
        An unexpected exception in one family's lookup comes out as itself.
        """
        self.upstream.table[(b"h.test", dns.A)] = ZeroDivisionError()
        self.upstream.table[(b"h.test", dns.AAAA)] = []
        self.failureResultOf(self.resolver.lookupAddresses("h.test"), ZeroDivisionError)

    def test_addressesUnknownFamily(self) -> None:
        """
        An unknown family is a C{ValueError}.
        """
        self.failureResultOf(self.resolver.lookupAddresses("h.test", "ipx"), ValueError)

    def test_addressLiteral(self) -> None:
        """
        An IP address is its own answer (nothing when of the other family),
        without a query.
        """
        lookup = self.resolver.lookupAddresses
        self.assertEqual(self.successResultOf(lookup("192.0.2.7")), ["192.0.2.7"])
        self.assertEqual(self.successResultOf(lookup("[2001:db8::7]", "ipv6")), ["2001:db8::7"])
        self.assertEqual(self.successResultOf(lookup("192.0.2.7", "ipv6")), [])
        self.assertEqual(self.upstream.queries, [])

    def test_ptrName(self) -> None:
        """
        PTR lookups ask the in-addr.arpa or ip6.arpa name of the address.
        """
        self.resolver.lookupPTR("192.0.2.1").addErrback(lambda f: None)
        self.resolver.lookupPTR("2001:db8::1").addErrback(lambda f: None)
        v6 = "1." + "0." * 23 + "8.b.d.0.1.0.0.2.ip6.arpa"
        self.assertEqual(
            self.upstream.queries,
            [(b"1.2.0.192.in-addr.arpa", dns.PTR), (v6.encode(), dns.PTR)],
        )

    def test_ptrNotAnAddress(self) -> None:
        """
        L{Resolver.lookupPTR} of something that is no IP address is a
        C{ValueError}.
        """
        self.failureResultOf(self.resolver.lookupPTR("mx.test"), ValueError)


class _NoReactor:
    """
    A reactor that must not be asked: a cached answer needs no trip to it.
    """

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the reactor thread was asked")


class CachedTests(SynchronousTestCase):
    """
    L{Resolver.cached} and L{blockingLookup}'s fast path: answers read from
    the cache on the calling thread, without the reactor.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.upstream = _FakeUpstream()
        self.resolver = Resolver(self.clock, upstream=self.upstream)  # type: ignore[arg-type]
        self.upstream.table[(b"txt.test", dns.TXT)] = [
            _rr("txt.test", dns.Record_TXT(b"v=spf1 ", b"-all"), 60)
        ]
        self.upstream.table[(b"mx.test", dns.MX)] = [
            _rr("mx.test", dns.Record_MX(20, b"b.mx.test")),
            _rr("mx.test", dns.Record_MX(10, b"a.mx.test")),
        ]
        self.upstream.table[(b"host.test", dns.A)] = [_rr("host.test", dns.Record_A("192.0.2.1"))]
        self.upstream.table[(b"host.test", dns.AAAA)] = [
            _rr("host.test", dns.Record_AAAA("2001:db8::1"))
        ]
        self.upstream.table[(b"1.2.0.192.in-addr.arpa", dns.PTR)] = [
            _rr("1.2.0.192.in-addr.arpa", dns.Record_PTR(b"Host.Test."))
        ]

    def test_missThenHit(self) -> None:
        """
        Before a lookup the cache does not know (L{None}); after it, every
        kind gives what the lookup gave.
        """
        r = self.resolver
        self.assertIsNone(r.cached("TXT", "txt.test"))
        self.assertIsNone(r.cached("MX", "mx.test"))
        self.assertIsNone(r.cached("Addresses", "host.test", "any"))
        self.assertIsNone(r.cached("PTR", "192.0.2.1"))
        self.assertEqual(self.successResultOf(r.lookupTXT("txt.test")), [b"v=spf1 -all"])
        self.successResultOf(r.lookupMX("mx.test"))
        self.successResultOf(r.lookupAddresses("host.test", "ipv4"))
        self.successResultOf(r.lookupPTR("192.0.2.1"))
        self.assertEqual(r.cached("TXT", "TXT.test."), [b"v=spf1 -all"])
        self.assertEqual(r.cached("MX", "mx.test"), self.successResultOf(r.lookupMX("mx.test")))
        self.assertEqual(r.cached("Addresses", "host.test", "ipv4"), ["192.0.2.1"])
        # "any" needs the AAAA answer too, which is not cached yet.
        self.assertIsNone(r.cached("Addresses", "host.test", "any"))
        self.successResultOf(r.lookupAddresses("host.test"))
        self.assertEqual(r.cached("Addresses", "host.test", "any"), ["2001:db8::1", "192.0.2.1"])
        self.assertEqual(r.cached("PTR", "192.0.2.1"), ["host.test"])
        self.assertEqual(r.cached("Addresses", "192.0.2.7", "ipv4"), ["192.0.2.7"])

    def test_expires(self) -> None:
        """
        A cached answer past its TTL is no answer.
        """
        self.successResultOf(self.resolver.lookupTXT("txt.test"))
        self.clock.advance(61)
        self.assertIsNone(self.resolver.cached("TXT", "txt.test"))

    def test_nxdomain(self) -> None:
        """
        A cached NXDOMAIN raises L{DNSNameError}; for addresses only when
        every family asked is NXDOMAIN.
        """
        self.failureResultOf(self.resolver.lookupTXT("nowhere.test"), DNSNameError)
        self.assertRaises(DNSNameError, self.resolver.cached, "TXT", "nowhere.test")
        self.failureResultOf(self.resolver.lookupAddresses("nowhere.test"), DNSNameError)
        self.assertRaises(DNSNameError, self.resolver.cached, "Addresses", "nowhere.test", "any")

    def test_cachedFor(self) -> None:
        """
        L{Resolver.cachedFor} is how much longer every answer a lookup
        needs stays cached: the smallest TTL left, L{None} while one is
        missing or once one has expired, C{inf} for an address literal.
        """
        r = self.resolver
        self.upstream.table[(b"host.test", dns.A)] = [
            _rr("host.test", dns.Record_A("192.0.2.1"), 100)
        ]
        self.assertIsNone(r.cachedFor("TXT", "txt.test"))
        self.successResultOf(r.lookupTXT("txt.test"))
        self.clock.advance(15)
        self.assertEqual(r.cachedFor("TXT", "txt.test"), 45)
        self.successResultOf(r.lookupAddresses("host.test", "ipv4"))
        self.assertEqual(r.cachedFor("Addresses", "host.test", "ipv4"), 100)
        # "any" needs the AAAA answer too.
        self.assertIsNone(r.cachedFor("Addresses", "host.test", "any"))
        self.successResultOf(r.lookupAddresses("host.test"))
        self.assertEqual(r.cachedFor("Addresses", "host.test", "any"), 100)
        self.successResultOf(r.lookupPTR("192.0.2.1"))
        self.assertEqual(r.cachedFor("PTR", "192.0.2.1"), 300)
        self.successResultOf(r.lookupMX("mx.test"))
        self.assertEqual(r.cachedFor("MX", "mx.test"), 300)
        self.failureResultOf(r.lookupTXT("nowhere.test"), DNSNameError)
        self.assertEqual(r.cachedFor("TXT", "nowhere.test"), NEGATIVE_TTL)
        self.assertEqual(r.cachedFor("Addresses", "192.0.2.7", "ipv4"), math.inf)
        self.assertIsNone(r.cachedFor("PTR", "not an address"))
        self.assertIsNone(r.cachedFor("SRV", "txt.test"))
        self.clock.advance(45)
        self.assertIsNone(r.cachedFor("TXT", "txt.test"))
        self.assertEqual(r.cachedFor("Addresses", "host.test", "ipv4"), 55)

    def test_blockingLookupFromCache(self) -> None:
        """
        L{blockingLookup} and L{blockingTXT} answer a cached name without
        the reactor, and ask the reactor on a miss.
        """
        self.successResultOf(self.resolver.lookupTXT("txt.test"))
        noReactor: Any = _NoReactor()
        self.assertEqual(blockingTXT(self.resolver, noReactor, "txt.test"), [b"v=spf1 -all"])
        self.successResultOf(self.resolver.lookupMX("mx.test"))
        self.assertEqual(
            [mx.exchange for mx in blockingLookup(self.resolver, noReactor, "MX", "mx.test")],
            ["a.mx.test", "b.mx.test"],
        )
        self.assertRaises(AssertionError, blockingTXT, self.resolver, noReactor, "other.test")


class NameserverTests(SynchronousTestCase):
    """
    L{parseNameserver} and L{makeResolver}.
    """

    def test_forms(self) -> None:
        """
        Every C{[dns] nameservers} form gives an address and a port, 53 by
        default.
        """
        cases = {
            "192.0.2.1": ("192.0.2.1", 53),
            "192.0.2.1:5353": ("192.0.2.1", 5353),
            "::1": ("::1", 53),
            "[::1]:5353": ("::1", 5353),
            "[2001:db8::1]": ("2001:db8::1", 53),
        }
        for text, expected in cases.items():
            self.assertEqual(parseNameserver(text), expected)

    def test_bad(self) -> None:
        """
        A name, a bad port or a bad address is a C{ValueError}.
        """
        for text in ("dns.google", "192.0.2.1:0", "192.0.2.1:x", "[::1]:70000", "300.1.1.1"):
            self.assertRaises(ValueError, parseNameserver, text)

    def test_systemResolverMadeLazily(self) -> None:
        """
        Without nameservers nothing is read or scheduled until the first
        lookup (the system resolver re-reads resolv.conf on a timer).
        """
        clock = Clock()
        makeResolver(DNSConfig(), clock)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_makeResolver(self) -> None:
        """
        L{makeResolver} asks the configured servers, in order.
        """
        config = DNSConfig(nameservers=("192.0.2.1:5353", "[::1]:53"))
        resolver = makeResolver(config, Clock())
        self.assertEqual(resolver.upstream.servers, [("192.0.2.1", 5353), ("::1", 53)])  # type: ignore[attr-defined]


_ZONES = {
    "example.test": {"MX": [(20, "mx2.example.test"), (10, "mx1.example.test")]},
    "mx1.example.test": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
    "v4only.test": {"A": ["127.0.0.3"]},
    "nullmx.test": {"MX": [(0, ".")]},
    "txt.test": {"TXT": ["v=spf1 -all", ("v=DKIM1; k=rsa; ", "p=MIIB")]},
    "alias.test": {"CNAME": "mx1.example.test"},
    "short.test": {"MX": [Record((10, "mx1.example.test"), ttl=30)]},
    "2.0.0.127.in-addr.arpa": {"PTR": ["mx1.example.test"]},
    "1." + "0." * 31 + "ip6.arpa": {"PTR": ["localhost.test"]},
    "servfail.test": "SERVFAIL",
    "refused.test": "REFUSED",
    "silent.test": "TIMEOUT",
}


class ResolverNetworkTests(TestCase):
    """
    L{Resolver} against the test DNS server over UDP on 127.0.0.1.
    """

    def setUp(self) -> None:
        self.server = DNSServer(_ZONES)
        self.server.listen(reactor)
        self.addCleanup(self.server.stop)
        self.clock = Clock()
        self.resolver = Resolver(
            reactor, [self.server.nameserver], timeout=(0.2,), clock=self.clock
        )

    async def test_mx(self) -> None:
        """
        MX records with their preferences, sorted.
        """
        result = await self.resolver.lookupMX("example.test")
        self.assertEqual(
            result, [MXRecord(10, "mx1.example.test"), MXRecord(20, "mx2.example.test")]
        )

    async def test_nullMX(self) -> None:
        """
        A null MX on the wire is C{MXRecord(0, "")}.
        """
        self.assertEqual(await self.resolver.lookupMX("nullmx.test"), [MXRecord(0, "")])

    async def test_addresses(self) -> None:
        """
        Both families by default, IPv6 first; each alone when asked; a name
        with only A records gives only those.
        """
        lookup = self.resolver.lookupAddresses
        self.assertEqual(await lookup("mx1.example.test"), ["::1", "127.0.0.2"])
        self.assertEqual(await lookup("mx1.example.test", "ipv4"), ["127.0.0.2"])
        self.assertEqual(await lookup("mx1.example.test", "ipv6"), ["::1"])
        self.assertEqual(await lookup("v4only.test"), ["127.0.0.3"])
        self.assertEqual(await lookup("v4only.test", "ipv6"), [])

    async def test_cname(self) -> None:
        """
        An alias resolves to its target's addresses.
        """
        self.assertEqual(await self.resolver.lookupAddresses("alias.test"), ["::1", "127.0.0.2"])

    async def test_txt(self) -> None:
        """
        Each TXT record is one value, its strings joined.
        """
        result = await self.resolver.lookupTXT("txt.test")
        self.assertEqual(result, [b"v=spf1 -all", b"v=DKIM1; k=rsa; p=MIIB"])

    async def test_ptr(self) -> None:
        """
        PTR lookups of an IPv4 and an IPv6 address.
        """
        self.assertEqual(await self.resolver.lookupPTR("127.0.0.2"), ["mx1.example.test"])
        self.assertEqual(await self.resolver.lookupPTR("::1"), ["localhost.test"])

    async def test_nxdomain(self) -> None:
        """
        A name that does not exist fails with L{DNSNameError}.
        """
        await self.assertFailure(self.resolver.lookupMX("nowhere.test"), DNSNameError)
        await self.assertFailure(self.resolver.lookupAddresses("nowhere.test"), DNSNameError)

    async def test_servfailAndRefused(self) -> None:
        """
        SERVFAIL and REFUSED fail with L{DNSTemporaryError}.
        """
        failure = await self.assertFailure(
            self.resolver.lookupMX("servfail.test"), DNSTemporaryError
        )
        self.assertEqual(failure.reason, "SERVFAIL")
        failure = await self.assertFailure(
            self.resolver.lookupMX("refused.test"), DNSTemporaryError
        )
        self.assertEqual(failure.reason, "REFUSED")

    async def test_noAnswer(self) -> None:
        """
        A question the server never answers fails with L{DNSTemporaryError}
        after the time-out.
        """
        failure = await self.assertFailure(self.resolver.lookupMX("silent.test"), DNSTemporaryError)
        self.assertEqual(failure.reason, "timed out")

    async def test_silentNameserver(self) -> None:
        """
        A nameserver that never answers (a bound, silent UDP socket) gives
        L{DNSTemporaryError} once every try has timed out.
        """
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        resolver = Resolver(reactor, [f"127.0.0.1:{silent.getHost().port}"], timeout=(0.05, 0.1))
        started = reactor.seconds()
        await self.assertFailure(resolver.lookupMX("example.test"), DNSTemporaryError)
        self.assertGreaterEqual(reactor.seconds() - started, 0.14)

    async def test_secondNameserver(self) -> None:
        """
        When the first nameserver does not answer, the next one is asked.
        """
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        servers = [f"127.0.0.1:{silent.getHost().port}", self.server.nameserver]
        resolver = Resolver(reactor, servers, timeout=(0.1,))
        self.assertEqual(len(await resolver.lookupMX("example.test")), 2)

    async def test_ipv6Nameserver(self) -> None:
        """
        A nameserver written C{[::1]:port} is asked over IPv6.
        """
        server = DNSServer(_ZONES)
        server.listen(reactor, interface="::1")
        self.addCleanup(server.stop)
        resolver = Resolver(reactor, [server.nameserver], timeout=(0.5,))
        self.assertEqual(
            await resolver.lookupTXT("txt.test"), [b"v=spf1 -all", b"v=DKIM1; k=rsa; p=MIIB"]
        )
        self.assertEqual(server.queries, [("txt.test", "TXT")])

    async def test_cacheAndChange(self) -> None:
        """
        A cached answer is not asked again; after its TTL the changed record
        is fetched.
        """
        self.assertEqual((await self.resolver.lookupMX("short.test"))[0].preference, 10)
        self.server.zones["short.test"] = {"MX": [(5, "mx1.example.test")]}
        self.clock.advance(29)
        self.assertEqual((await self.resolver.lookupMX("short.test"))[0].preference, 10)
        self.assertEqual(self.server.queries, [("short.test", "MX")])
        self.clock.advance(1)
        self.assertEqual((await self.resolver.lookupMX("short.test"))[0].preference, 5)
        self.assertEqual(len(self.server.queries), 2)

    async def test_negativeCacheFromSOA(self) -> None:
        """
        NXDOMAIN is kept for the server's SOA negative TTL, then asked again
        (and a name added meanwhile is found).
        """
        await self.assertFailure(self.resolver.lookupMX("late.test"), DNSNameError)
        self.server.zones["late.test"] = {"MX": [(10, "mx1.example.test")]}
        self.clock.advance(self.server.negativeTTL - 1)
        await self.assertFailure(self.resolver.lookupMX("late.test"), DNSNameError)
        self.clock.advance(1)
        self.assertEqual(len(await self.resolver.lookupMX("late.test")), 1)
        self.assertEqual(len(self.server.queries), 2)

    async def test_blockingTXT(self) -> None:
        """
        L{blockingTXT} called on a worker thread returns the records, and
        raises L{DNSNameError} there for NXDOMAIN.
        """
        result = await deferToThread(blockingTXT, self.resolver, reactor, "txt.test")
        self.assertEqual(result, [b"v=spf1 -all", b"v=DKIM1; k=rsa; p=MIIB"])
        await self.assertFailure(
            deferToThread(blockingTXT, self.resolver, reactor, "nowhere.test"), DNSNameError
        )


def _haveIPv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


if not _haveIPv6():
    ResolverNetworkTests.test_ipv6Nameserver.skip = "no IPv6 loopback"  # type: ignore[attr-defined]
