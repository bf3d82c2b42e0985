"""
Tests for L{mta.policy.dmarc}: record discovery, alignment, p/sp/pct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from twisted.internet.task import Clock
from twisted.names import dns
from twisted.names import error as terror
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mta.dns import NEGATIVE_TTL, Resolver, blockingTXT
from mta.policy.dkimverify import DKIMResult
from mta.policy.dmarc import DMARCEvaluator, DMARCResult, _Alignment, loadPublicSuffixList
from mta.policy.spf import SPFResult
from mta.testing.fakes import AtOnceReactor, FakeResolver, TXTUpstream

PSL = loadPublicSuffixList()


def message(fromHeader: str = "alice@example.test") -> bytes:
    """
    @return: a message with the given From header.
    """
    return f"From: {fromHeader}\r\nSubject: x\r\n\r\nbody\r\n".encode()


def spfPass(domain: str) -> SPFResult:
    """
    @return: an SPF pass for MAIL FROM at C{domain}.
    """
    return SPFResult("pass", "mailfrom", domain, f"bounce@{domain}")


def dkimPass(domain: str) -> list[DKIMResult]:
    """
    @return: one passing DKIM signature of C{domain}.
    """
    return [DKIMResult("pass", domain, "s1", "rsa-sha256")]


class DMARCTests(SynchronousTestCase):
    """
    L{DMARCEvaluator.evaluate} over a L{FakeResolver}.
    """

    def setUp(self) -> None:
        self.resolver = FakeResolver()
        self.draw = 0.5
        self.evaluator = DMARCEvaluator(self.resolver, PSL, lambda: self.draw)

    def publish(self, domain: str, record: str) -> None:
        self.resolver.txt[f"_dmarc.{domain}"] = [record.encode()]

    def evaluate(
        self,
        fromHeader: str = "alice@example.test",
        spf: SPFResult | None = None,
        dkim: Sequence[DKIMResult] = (),
    ) -> DMARCResult:
        return self.successResultOf(self.evaluator.evaluate(message(fromHeader), spf, dkim))

    def test_noRecord(self) -> None:
        """
        Without a record at the domain or its organisational domain the result is none.
        """
        result = self.evaluate(dkim=dkimPass("example.test"))
        self.assertEqual((result.result, result.fromDomain), ("none", "example.test"))

    def test_alignedDKIMPass(self) -> None:
        """
        A DKIM pass of the From domain itself passes DMARC.
        """
        self.publish("example.test", "v=DMARC1; p=reject")
        result = self.evaluate(dkim=dkimPass("example.test"))
        self.assertEqual(
            (result.result, result.policy, result.disposition), ("pass", "reject", "none")
        )

    def test_alignedSPFPass(self) -> None:
        """
        An SPF pass of the From domain passes DMARC.
        """
        self.publish("example.test", "v=DMARC1; p=reject")
        self.assertEqual(self.evaluate(spf=spfPass("example.test")).result, "pass")

    def test_unalignedFails(self) -> None:
        """
        Passes of other domains do not count: p=reject gives a reject disposition.
        """
        self.publish("example.test", "v=DMARC1; p=reject")
        result = self.evaluate(spf=spfPass("other.test"), dkim=dkimPass("other.test"))
        self.assertEqual((result.result, result.disposition), ("fail", "reject"))

    def test_failingDKIMDoesNotAlign(self) -> None:
        """
        A failed signature of the From domain does not pass DMARC.
        """
        self.publish("example.test", "v=DMARC1; p=quarantine")
        result = self.evaluate(dkim=[DKIMResult("fail", "example.test", "s1")])
        self.assertEqual((result.result, result.disposition), ("fail", "quarantine"))

    def test_relaxedDKIMAlignment(self) -> None:
        """
        Relaxed DKIM alignment (the default) accepts a signature of another
        name under the same organisational domain.
        """
        self.publish("example.test", "v=DMARC1; p=reject")
        result = self.evaluate("a@news.example.test", dkim=dkimPass("mail.example.test"))
        self.assertEqual((result.result, result.recordDomain), ("pass", "example.test"))

    def test_strictDKIMAlignment(self) -> None:
        """
        adkim=s wants the very From domain.
        """
        self.publish("example.test", "v=DMARC1; p=reject; adkim=s")
        result = self.evaluate("a@news.example.test", dkim=dkimPass("example.test"))
        self.assertEqual(result.result, "fail")

    def test_relaxedSPFAlignment(self) -> None:
        """
        Relaxed SPF alignment accepts a MAIL FROM subdomain.
        """
        self.publish("example.test", "v=DMARC1; p=reject")
        self.assertEqual(self.evaluate(spf=spfPass("bounce.example.test")).result, "pass")

    def test_strictSPFAlignment(self) -> None:
        """
        aspf=s refuses a MAIL FROM subdomain.
        """
        self.publish("example.test", "v=DMARC1; p=reject; aspf=s")
        self.assertEqual(self.evaluate(spf=spfPass("bounce.example.test")).result, "fail")

    def test_publicSuffixSeparates(self) -> None:
        """
        Two registrations under one public suffix (co.uk, from the PSL) do
        not align, nor does the suffix itself.
        """
        self.publish("good.co.uk", "v=DMARC1; p=reject")
        fromGood = "a@good.co.uk"
        self.assertEqual(self.evaluate(fromGood, dkim=dkimPass("evil.co.uk")).result, "fail")
        self.assertEqual(self.evaluate(fromGood, dkim=dkimPass("co.uk")).result, "fail")

    def test_orgDomain(self) -> None:
        """
        The organisational domain is one label under the public suffix.
        """
        self.assertEqual(
            [self.evaluator.orgDomain(d) for d in ("a.b.example.co.uk", "example.test", "co.uk")],
            ["example.co.uk", "example.test", "co.uk"],
        )

    def test_subdomainPolicy(self) -> None:
        """
        A subdomain without its own record gets the organisational
        domain's sp policy.
        """
        self.publish("example.test", "v=DMARC1; p=reject; sp=quarantine")
        result = self.evaluate("a@sub.example.test")
        self.assertEqual(
            (result.result, result.policy, result.recordDomain),
            ("fail", "quarantine", "example.test"),
        )
        self.assertIn(("TXT", "_dmarc.sub.example.test"), self.resolver.queries)

    def test_ownRecordBeforeOrg(self) -> None:
        """
        A record at the From domain itself is used before the organisational one.
        """
        self.publish("example.test", "v=DMARC1; p=reject; sp=reject")
        self.publish("sub.example.test", "v=DMARC1; p=none")
        self.assertEqual(self.evaluate("a@sub.example.test").policy, "none")

    def test_orgPolicyWithoutSp(self) -> None:
        """
        Without sp, a subdomain gets the organisational domain's p.
        """
        self.publish("example.test", "v=DMARC1; p=quarantine")
        self.assertEqual(self.evaluate("a@sub.example.test").disposition, "quarantine")

    def test_pctNotSampled(self) -> None:
        """
        A failing message left out by pct gets the next milder policy
        (RFC 7489 section 6.6.4).
        """
        self.publish("example.test", "v=DMARC1; p=reject; pct=40")
        self.draw = 0.5
        result = self.evaluate()
        self.assertEqual(
            (result.policy, result.disposition, result.pct), ("reject", "quarantine", 40)
        )

    def test_pctSampled(self) -> None:
        """
        A failing message pct samples gets the policy itself.
        """
        self.publish("example.test", "v=DMARC1; p=reject; pct=40")
        self.draw = 0.3
        self.assertEqual(self.evaluate().disposition, "reject")

    def test_pctZeroQuarantine(self) -> None:
        """
        pct=0 turns quarantine into none, and pct=100 (the default) samples everything.
        """
        self.publish("example.test", "v=DMARC1; p=quarantine; pct=0")
        self.draw = 0.0
        self.assertEqual(self.evaluate().disposition, "none")
        self.publish("example.test", "v=DMARC1; p=quarantine")
        self.draw = 0.99
        self.assertEqual(self.evaluate().disposition, "quarantine")

    def test_ruaKept(self) -> None:
        """
        The record's aggregate report addresses are kept in the result.
        """
        self.publish("example.test", "v=DMARC1; p=none; rua=mailto:d@example.test,mailto:e@x.test")
        self.assertEqual(self.evaluate().rua, ("mailto:d@example.test", "mailto:e@x.test"))

    def test_severalFromAddresses(self) -> None:
        """
        A From header with two addresses is a permerror (RFC 7489 section 6.6.1).
        """
        self.publish("example.test", "v=DMARC1; p=reject")
        result = self.evaluate("a@example.test, b@other.test")
        self.assertEqual(result.result, "permerror")

    def test_noFrom(self) -> None:
        """
        A message without From gets none, without a lookup.
        """
        result = self.successResultOf(self.evaluator.evaluate(b"Subject: x\r\n\r\n", None, ()))
        self.assertEqual((result.result, self.resolver.queries), ("none", []))

    def test_twoRecordsIgnored(self) -> None:
        """
        Two DMARC records at one name count as none (RFC 7489 section 6.6.3).
        """
        self.resolver.txt["_dmarc.example.test"] = [b"v=DMARC1; p=reject", b"v=DMARC1; p=none"]
        self.assertEqual(self.evaluate().result, "none")

    def test_badRecordIgnored(self) -> None:
        """
        A record without p= is no policy.
        """
        self.publish("example.test", "v=DMARC1; rua=mailto:x@example.test")
        self.assertEqual(self.evaluate().result, "none")

    def test_lookupTemperror(self) -> None:
        """
        A record lookup that fails for now gives temperror.
        """
        self.resolver.failing.add("_dmarc.example.test")
        self.assertEqual(self.evaluate().result, "temperror")

    def test_underlyingTemperror(self) -> None:
        """
        Failing while a DKIM check had a temporary error gives temperror,
        keeping the disposition.
        """
        self.publish("example.test", "v=DMARC1; p=reject")
        result = self.evaluate(dkim=[DKIMResult("temperror", "example.test", "s1")])
        self.assertEqual((result.result, result.disposition), ("temperror", "reject"))

    def test_recordParsedOnce(self) -> None:
        """
        A domain's record is parsed once, whatever the number of messages;
        a changed record is parsed anew.
        """
        self.publish("example.test", "v=DMARC1; p=reject")
        parsed = []
        parse = _Alignment.parse_record

        def counting(self: _Alignment, *args: Any) -> Any:
            parsed.append(args)
            return parse(self, *args)

        self.patch(_Alignment, "parse_record", counting)
        self.evaluator = DMARCEvaluator(self.resolver, PSL, lambda: self.draw)
        for _ in range(3):
            self.assertEqual(self.evaluate(dkim=dkimPass("example.test")).result, "pass")
        self.publish("example.test", "v=DMARC1; p=none")
        self.assertEqual(self.evaluate().policy, "none")
        self.assertEqual(len(parsed), 2)


class BlockingDMARCTests(DMARCTests):
    """
    The same cases through L{DMARCEvaluator.evaluateBlocking}, whose
    lookups are blocking calls (here answered by the L{FakeResolver} at
    once).
    """

    def txt(self, name: str) -> list[bytes]:
        d = self.resolver.lookupTXT(name)
        results: list[object] = []
        d.addBoth(results.append)
        [result] = results
        if isinstance(result, Failure):
            result.raiseException()
        return cast(list[bytes], result)

    def evaluate(
        self,
        fromHeader: str = "alice@example.test",
        spf: SPFResult | None = None,
        dkim: Sequence[DKIMResult] = (),
    ) -> DMARCResult:
        return self.evaluator.evaluateBlocking(message(fromHeader), spf, dkim, self.txt)


class DecisionsKeptTests(SynchronousTestCase):
    """
    L{DMARCEvaluator.evaluateBlocking} over a real L{Resolver}: what a
    record decides for the same From domain and passing identifiers is
    kept as long as the record's answer is cached; the C{pct} draw is still
    made for every message.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.upstream = TXTUpstream()
        self.resolver = Resolver(self.clock, upstream=cast(Any, self.upstream))
        self.draws = [0.9, 0.9]
        self.evaluator = DMARCEvaluator(
            self.resolver, PSL, lambda: self.draws.pop(0), clock=self.clock.seconds
        )

    def evaluate(self, dkim: Sequence[DKIMResult] = ()) -> DMARCResult:
        return self.evaluator.evaluateBlocking(
            message(), None, dkim, lambda name: blockingTXT(self.resolver, AtOnceReactor(), name)
        )

    def test_keptWhileCached(self) -> None:
        """
        Within the record's TTL no lookup is made and each message gets its
        own C{pct} draw; after it, a changed record counts.
        """
        self.upstream.txt["_dmarc.example.test"] = ("v=DMARC1; p=reject; pct=50", 60)
        self.draws = [0.9, 0.1]
        first = self.evaluate()
        self.assertEqual((first.result, first.disposition), ("fail", "quarantine"))
        queries = self.upstream.queries
        second = self.evaluate()
        self.assertEqual((second.result, second.disposition), ("fail", "reject"))
        self.assertEqual(self.upstream.queries, queries)
        self.assertEqual(self.evaluate(dkimPass("example.test")).result, "pass")
        self.upstream.txt["_dmarc.example.test"] = ("v=DMARC1; p=none", 60)
        self.clock.advance(60)
        self.draws = [0.1]
        self.assertEqual(self.evaluate().policy, "none")
        self.assertGreater(self.upstream.queries, queries)

    def test_noRecordKeptForNegativeTTL(self) -> None:
        """
        "No record" (NXDOMAIN at the From and organisational domains) is
        kept as long as the resolver keeps the NXDOMAIN.
        """
        self.assertEqual(self.evaluate().result, "none")
        queries = self.upstream.queries
        self.upstream.txt["_dmarc.example.test"] = ("v=DMARC1; p=reject", 60)
        self.assertEqual(self.evaluate().result, "none")
        self.assertEqual(self.upstream.queries, queries)
        self.clock.advance(NEGATIVE_TTL)
        self.assertEqual(self.evaluate().policy, "reject")

    def test_temperrorNotKept(self) -> None:
        """
        A lookup that fails for now is asked again with the next message.
        """
        self.upstream.txt["_dmarc.example.test"] = terror.DNSServerError(
            dns.Message(rCode=dns.ESERVER)
        )
        self.assertEqual(self.evaluate().result, "temperror")
        self.upstream.txt["_dmarc.example.test"] = ("v=DMARC1; p=reject", 60)
        self.assertEqual(self.evaluate().policy, "reject")

    def test_ttlZeroNotKept(self) -> None:
        """
        A record the resolver does not keep (TTL 0) keeps no decision.
        """
        self.upstream.txt["_dmarc.example.test"] = ("v=DMARC1; p=reject", 0)
        self.evaluate()
        queries = self.upstream.queries
        self.evaluate()
        self.assertGreater(self.upstream.queries, queries)
