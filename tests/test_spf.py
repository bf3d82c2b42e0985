"""
Tests for L{mta.policy.spf}: pyspf on a worker thread, its DNS through
an L{IDNSResolver}.
"""

from __future__ import annotations

from typing import Any, cast

import spf
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.names import error as terror
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mta.dns import Resolver
from mta.envelope import NULL_ADDRESS, Address
from mta.policy.spf import (
    BlockingLookups,
    SPFChecker,
    SPFResult,
    SPFResults,
    _dnsLookup,
    _reverseNameToIP,
)
from mta.testing.fakes import AtOnceReactor, FakeResolver, TXTUpstream
from mta.threads import BlockingRunner

#: The global reactor, as the interfaces the checks ask for.
reactor = cast(Any, _reactor)

CLIENT = "192.0.2.10"
SENDER = Address("alice", "example.test")


def startedRunner(case: TestCase) -> BlockingRunner:
    """
    @return: a started thread-pool runner, stopped when C{case} ends.
    """
    runner = BlockingRunner(reactor, 2, name="spf-test")
    runner.startService()
    case.addCleanup(runner.stopService)
    return runner


class SPFCheckTests(TestCase):
    """
    L{SPFChecker.check} over a L{FakeResolver}.
    """

    def setUp(self) -> None:
        self.resolver = FakeResolver()
        self.checker = SPFChecker(self.resolver, reactor, startedRunner(self), "mx.our.test")

    def check(
        self, record: str | None, ip: str = CLIENT, sender: Address = SENDER, helo: str = "h.test"
    ) -> Deferred[SPFResult]:
        if record is not None:
            self.resolver.txt["example.test"] = [record.encode()]
        return self.checker.check(ip, sender, helo)

    async def assertResult(self, expected: str, record: str | None, ip: str = CLIENT) -> None:
        result = await self.check(record, ip=ip)
        self.assertEqual(result.result, expected, result.reason)

    async def test_ip4Pass(self) -> None:
        """
        A client inside an ip4 network passes.
        """
        await self.assertResult("pass", "v=spf1 ip4:192.0.2.0/24 -all")

    async def test_fail(self) -> None:
        """
        A client outside every mechanism fails on C{-all}.
        """
        await self.assertResult("fail", "v=spf1 ip4:198.51.100.0/24 -all")

    async def test_softfail(self) -> None:
        """
        C{~all} gives softfail.
        """
        await self.assertResult("softfail", "v=spf1 ip4:198.51.100.1 ~all")

    async def test_neutral(self) -> None:
        """
        C{?all} gives neutral.
        """
        await self.assertResult("neutral", "v=spf1 ?all")

    async def test_noRecord(self) -> None:
        """
        A domain without an SPF record gives none.
        """
        self.resolver.txt["example.test"] = [b"google-site-verification=x"]
        await self.assertResult("none", None)

    async def test_noDomain(self) -> None:
        """
        A sender domain that does not exist gives none.
        """
        await self.assertResult("none", None)

    async def test_twoRecordsPermerror(self) -> None:
        """
        Two SPF records are a permerror (RFC 7208 section 4.5).
        """
        self.resolver.txt["example.test"] = [b"v=spf1 -all", b"v=spf1 +all"]
        await self.assertResult("permerror", None)

    async def test_syntaxPermerror(self) -> None:
        """
        An unknown mechanism is a permerror.
        """
        await self.assertResult("permerror", "v=spf1 bogus:x -all")

    async def test_temperror(self) -> None:
        """
        A temporary DNS failure gives temperror.
        """
        self.resolver.failing.add("example.test")
        await self.assertResult("temperror", None)

    async def test_ip6(self) -> None:
        """
        An IPv6 client inside an ip6 network passes.
        """
        await self.assertResult("pass", "v=spf1 ip6:2001:db8::/32 -all", ip="2001:db8::5")

    async def test_aMechanism(self) -> None:
        """
        C{a} matches the domain's own A records, looked up through the resolver.
        """
        self.resolver.addresses["example.test"] = [CLIENT]
        await self.assertResult("pass", "v=spf1 a -all")
        self.assertIn(("A/AAAA", "example.test"), self.resolver.queries)

    async def test_mxMechanism(self) -> None:
        """
        C{mx} matches the addresses of the domain's MX hosts.
        """
        self.resolver.mx["example.test"] = [(10, "mx.example.test")]
        self.resolver.addresses["mx.example.test"] = ["192.0.2.99", CLIENT]
        await self.assertResult("pass", "v=spf1 mx -all")

    async def test_mxMechanismMiss(self) -> None:
        """
        C{mx} does not match a client that is no MX host.
        """
        self.resolver.mx["example.test"] = [(10, "mx.example.test")]
        self.resolver.addresses["mx.example.test"] = ["192.0.2.99"]
        await self.assertResult("fail", "v=spf1 mx -all")

    async def test_include(self) -> None:
        """
        C{include} passes when the included record passes.
        """
        self.resolver.txt["_spf.other.test"] = [b"v=spf1 ip4:192.0.2.10 -all"]
        await self.assertResult("pass", "v=spf1 include:_spf.other.test -all")

    async def test_redirect(self) -> None:
        """
        C{redirect=} evaluates the other domain's record instead.
        """
        self.resolver.txt["_spf.other.test"] = [b"v=spf1 -all"]
        await self.assertResult("fail", "v=spf1 redirect=_spf.other.test")

    def chain(self, length: int) -> None:
        """
        Publish C{example.test} including a chain of C{length} records, the
        last one passing everything.
        """
        for i in range(1, length):
            self.resolver.txt[f"l{i}.test"] = [f"v=spf1 include:l{i + 1}.test -all".encode()]
        self.resolver.txt[f"l{length}.test"] = [b"v=spf1 +all"]
        self.resolver.txt["example.test"] = [b"v=spf1 include:l1.test -all"]

    async def test_tenLookups(self) -> None:
        """
        Ten DNS-querying mechanisms are allowed.
        """
        self.chain(10)
        await self.assertResult("pass", None)

    async def test_elevenLookupsPermerror(self) -> None:
        """
        The eleventh DNS-querying mechanism is a permerror (RFC 7208 section 4.6.4).
        """
        self.chain(11)
        await self.assertResult("permerror", None)

    async def test_nullSenderChecksHelo(self) -> None:
        """
        For the null sender the HELO name is checked.
        """
        self.resolver.txt["mail.example.test"] = [b"v=spf1 ip4:192.0.2.10 -all"]
        result = await self.checker.check(CLIENT, NULL_ADDRESS, "mail.example.test")
        self.assertEqual(
            (result.result, result.identity, result.domain),
            ("pass", "helo", "mail.example.test"),
        )

    async def test_heloLiteralIsNone(self) -> None:
        """
        A HELO address literal with the null sender gives none without a lookup.
        """
        result = await self.checker.check(CLIENT, NULL_ADDRESS, "[192.0.2.10]")
        self.assertEqual((result.result, self.resolver.queries), ("none", []))

    async def test_mailfromIdentity(self) -> None:
        """
        The result names the MAIL FROM identity and domain.
        """
        result = await self.check("v=spf1 -all")
        self.assertEqual(
            (result.identity, result.domain, result.mailfrom),
            ("mailfrom", "example.test", "alice@example.test"),
        )


class HookTests(SynchronousTestCase):
    """
    pyspf's DNS hook outside a check, and reverse names.
    """

    def test_noResolverTemperror(self) -> None:
        """
        pyspf asking DNS on a thread with no check running gets a temporary
        error, never an answer from the system resolver.
        """
        self.assertRaises(spf.TempError, _dnsLookup, "example.test", "TXT")

    def test_reverseNames(self) -> None:
        """
        C{in-addr.arpa} and C{ip6.arpa} names turn back into addresses.
        """
        v6 = ".".join(reversed("20010db8000000000000000000000001")) + ".ip6.arpa"
        self.assertEqual(
            [_reverseNameToIP("10.2.0.192.in-addr.arpa"), _reverseNameToIP(v6)],
            ["192.0.2.10", "2001:db8::1"],
        )
        self.assertIsNone(_reverseNameToIP("example.test"))


class SPFResultsTests(SynchronousTestCase):
    """
    L{SPFResults}: a result is kept exactly as long as the resolver keeps
    every answer it came from.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.upstream = TXTUpstream()
        resolver = Resolver(self.clock, upstream=cast(Any, self.upstream))
        self.lookups = BlockingLookups(resolver, cast(Any, AtOnceReactor()))
        self.results = SPFResults(clock=self.clock.seconds)

    def check(self, ip: str = CLIENT, sender: Address = SENDER) -> SPFResult:
        return self.results.check(self.lookups, ip, sender, "h.test", "mx.our.test")

    def test_keptWhileCached(self) -> None:
        """
        The same facts again within the TTL give the same result without a
        query; after it, the record is read again and a new record counts.
        """
        self.upstream.txt["example.test"] = ("v=spf1 ip4:192.0.2.0/24 -all", 60)
        first = self.check()
        self.assertEqual((first.result, self.upstream.queries), ("pass", 1))
        self.clock.advance(59)
        self.assertIs(self.check(), first)
        self.assertEqual(self.upstream.queries, 1)
        self.upstream.txt["example.test"] = ("v=spf1 -all", 60)
        self.clock.advance(1)
        self.assertEqual(self.check().result, "fail")
        self.assertEqual(self.upstream.queries, 2)

    def test_shortestTTL(self) -> None:
        """
        A result from several answers lasts as long as the shortest-lived.
        """
        self.upstream.txt["example.test"] = ("v=spf1 include:other.test -all", 300)
        self.upstream.txt["other.test"] = ("v=spf1 ip4:192.0.2.10 -all", 10)
        self.assertEqual(self.check().result, "pass")
        queries = self.upstream.queries
        self.clock.advance(9)
        self.check()
        self.assertEqual(self.upstream.queries, queries)
        self.clock.advance(1)
        self.check()
        self.assertGreater(self.upstream.queries, queries)

    def test_otherFactsApart(self) -> None:
        """
        Another client address or sender is checked on its own.
        """
        self.upstream.txt["example.test"] = ("v=spf1 ip4:192.0.2.10 -all", 300)
        self.assertEqual(self.check().result, "pass")
        self.assertEqual(self.check(ip="192.0.2.11").result, "fail")
        self.assertEqual(self.check(sender=Address("bob", "example.test")).result, "pass")
        self.assertEqual(len(self.results), 3)

    def test_temperrorNotKept(self) -> None:
        """
        A temporary DNS failure is asked again on the next message.
        """
        self.upstream.txt["example.test"] = terror.DNSServerError(dns.Message(rCode=dns.ESERVER))
        self.assertEqual(self.check().result, "temperror")
        self.upstream.txt["example.test"] = ("v=spf1 ip4:192.0.2.10 -all", 300)
        self.assertEqual(self.check().result, "pass")

    def test_ttlZeroNotKept(self) -> None:
        """
        An answer the resolver does not keep (TTL 0) keeps no result.
        """
        self.upstream.txt["example.test"] = ("v=spf1 ip4:192.0.2.10 -all", 0)
        self.check()
        self.check()
        self.assertEqual((self.upstream.queries, len(self.results)), (2, 0))

    def test_bounded(self) -> None:
        """
        At most C{size} results are kept, the least recently used dropped.
        """
        self.results = SPFResults(size=2, clock=self.clock.seconds)
        self.upstream.txt["example.test"] = ("v=spf1 -all", 300)
        for i in range(4):
            self.check(ip=f"192.0.2.{i}")
        self.assertEqual(len(self.results), 2)
