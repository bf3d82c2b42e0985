"""
Tests for L{mta.dnsdoctor}: each check against zones served by the real
test DNS server on 127.0.0.1, through L{mta.dns.Resolver}.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mta.dns import Resolver
from mta.dnsdoctor import (
    FAIL,
    INFO,
    OK,
    WARN,
    Finding,
    ServerFacts,
    checkDMARC,
    diagnose,
    evaluateSPF,
    exitStatus,
    isSPF,
    parseTags,
    renderJSON,
    renderText,
    txtLine,
)
from mta.testing.dnsserver import DNSServer

DOMAIN = "example.test"
HOST = "mx.example.test"
KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtest"
DMARC_LINE = (
    '_dmarc.example.test. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"'
)

#: A domain where everything is right for mail from 127.0.0.2.
GOOD: dict[str, Any] = {
    DOMAIN: {"MX": [(10, HOST)], "TXT": ["v=spf1 mx -all", "google-site-verification=x"]},
    HOST: {"A": ["127.0.0.2"]},
    "2.0.0.127.in-addr.arpa": {"PTR": [HOST]},
    "s1._domainkey.example.test": {"TXT": [("v=DKIM1; k=rsa; ", f"p={KEY}")]},
    "_dmarc.example.test": {"TXT": ["v=DMARC1; p=reject; rua=mailto:dmarc@example.test"]},
}


@dataclass(frozen=True)
class FakeKey:
    """
    A DKIM key as L{mta.dkimkeys.DKIMKey} describes itself, without a
    file.
    """

    domain: str
    selector: str
    public: str = KEY

    def publicRecord(self) -> str:
        """
        @return: the record text for C{public}.
        """
        return f"v=DKIM1; k=rsa; p={self.public}"

    def zoneLine(self) -> str:
        """
        @return: the zone line for C{public}.
        """
        return f'{self.selector}._domainkey.{self.domain}. IN TXT "{self.publicRecord()}"'


class DoctorTestsMixin:
    """
    Start a test DNS server with a copy of L{GOOD} and run the doctor
    against it.
    """

    def setUp(self) -> None:
        case: Any = self
        self.server = DNSServer(copy.deepcopy(GOOD))
        self.server.listen(cast(IReactorUDP, reactor))
        case.addCleanup(self.server.stop)
        self.resolver = Resolver(
            reactor, [self.server.nameserver], timeout=(0.5,), cacheSize=0, clock=Clock()
        )

    def facts(self, **changes: Any) -> ServerFacts:
        """
        @return: this server: C{mx.example.test} with key C{s1}, changed
            by C{changes}.
        """
        values: dict[str, Any] = {"hostname": HOST, "dkimKeys": [FakeKey(DOMAIN, "s1")]}
        values.update(changes)
        return ServerFacts(**values)

    async def diagnose(self, **changes: Any) -> list[Finding]:
        """
        @return: the findings for L{DOMAIN}.
        """
        return await diagnose(self.resolver, DOMAIN, self.facts(**changes))

    async def finding(self, check: str, **changes: Any) -> Finding:
        """
        @return: the one finding of C{check}.
        """
        [found] = [f for f in await self.diagnose(**changes) if f.check == check]
        return found


class GoodZoneTests(DoctorTestsMixin, TestCase):
    """
    A domain with every record right.
    """

    async def test_allPass(self) -> None:
        """
        Every check passes, the TLS-policy ones are informational, and the
        exit status is 0.
        """
        findings = await self.diagnose()
        self.assertEqual(
            [(f.check, f.status) for f in findings],
            [
                ("MX", OK),
                ("A/AAAA", OK),
                ("PTR", OK),
                ("SPF", OK),
                ("DKIM", OK),
                ("DMARC", OK),
                ("MTA-STS", INFO),
                ("TLS-RPT", INFO),
                ("TLSA", INFO),
            ],
        )
        self.assertEqual(exitStatus(findings), 0)
        self.assertEqual([f.fix for f in findings], [()] * len(findings))

    async def test_dnsNameCase(self) -> None:
        """
        The domain is checked whatever its case or trailing dot.
        """
        findings = await diagnose(self.resolver, "Example.TEST.", self.facts())
        self.assertEqual(exitStatus(findings), 0)

    async def test_notChecked(self) -> None:
        """
        MTA-STS, TLS-RPT and TLSA say they are not checked yet, at the
        names they will be checked at.
        """
        findings = [f for f in await self.diagnose() if f.status == INFO]
        self.assertEqual(
            [f.name for f in findings],
            ["_mta-sts.example.test", "_smtp._tls.example.test", "_25._tcp.mx.example.test"],
        )
        self.assertIn("not checked yet", findings[0].message)


class MXTests(DoctorTestsMixin, TestCase):
    """
    The domain's MX must name this server.
    """

    async def test_elsewhere(self) -> None:
        """
        An MX naming other hosts fails, names them, and gives the MX line.
        """
        self.server.zones[DOMAIN]["MX"] = [(10, "mx.other.test"), (20, "mx2.other.test")]
        found = await self.finding("MX")
        self.assertEqual(found.status, FAIL)
        self.assertIn("mx.other.test, mx2.other.test", found.message)
        self.assertEqual(found.fix, ("example.test. IN MX 10 mx.example.test.",))

    async def test_backup(self) -> None:
        """
        An MX that names this server among others passes.
        """
        self.server.zones[DOMAIN]["MX"] = [(5, "mx.other.test"), (10, HOST)]
        self.assertEqual((await self.finding("MX")).status, OK)

    async def test_missing(self) -> None:
        """
        No MX record fails with the MX line.
        """
        del self.server.zones[DOMAIN]["MX"]
        found = await self.finding("MX")
        self.assertEqual((found.status, found.message), (FAIL, "no MX record"))
        self.assertEqual(found.fix, ("example.test. IN MX 10 mx.example.test.",))

    async def test_nullMX(self) -> None:
        """
        A null MX is flagged.
        """
        self.server.zones[DOMAIN]["MX"] = [(0, ".")]
        found = await self.finding("MX")
        self.assertEqual(found.status, FAIL)
        self.assertIn("null MX", found.message)

    async def test_servfail(self) -> None:
        """
        A DNS error fails the checks with its reason, and does not crash
        the others.
        """
        self.server.zones[DOMAIN] = "SERVFAIL"
        findings = await self.diagnose()
        mx = findings[0]
        self.assertEqual(mx.status, FAIL)
        self.assertIn("SERVFAIL", mx.message)
        self.assertEqual(exitStatus(findings), 1)
        self.assertEqual(findings[1].status, OK)


class AddressTests(DoctorTestsMixin, TestCase):
    """
    The server's hostname resolves, to our address, and that address's PTR
    names it back.
    """

    async def test_noAddress(self) -> None:
        """
        A hostname without A/AAAA fails, and the PTR cannot be checked.
        """
        self.server.zones[HOST] = {"TXT": ["something"]}
        findings = await self.diagnose()
        address, ptr = findings[1], findings[2]
        self.assertEqual((address.status, ptr.status), (FAIL, FAIL))
        self.assertIn("no A or AAAA record", address.message)
        self.assertIn("--ip", ptr.message)

    async def test_ipElsewhere(self) -> None:
        """
        With C{--ip} an address the hostname does not resolve to, the
        A/AAAA check fails with the A line for it.
        """
        self.server.zones["3.0.0.127.in-addr.arpa"] = {"PTR": [HOST]}
        found = await self.finding("A/AAAA", ip="127.0.0.3")
        self.assertEqual(found.status, FAIL)
        self.assertEqual(found.fix, ("mx.example.test. IN A 127.0.0.3",))

    async def test_sourceAddressWins(self) -> None:
        """
        C{[relay] source_address} is our address before C{--ip}: the PTR
        checked is its own.
        """
        self.server.zones[HOST]["AAAA"] = ["2001:db8::25"]
        self.server.zones[
            "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        ] = {"PTR": [HOST]}
        ptrs = [
            f
            for f in await self.diagnose(sourceAddress="2001:db8::25", ip="127.0.0.2")
            if f.check == "PTR"
        ]
        self.assertEqual([(f.status, f.name[:8]) for f in ptrs], [(OK, "5.2.0.0.")])

    async def test_ptrMissing(self) -> None:
        """
        No PTR for our address fails with the PTR line.
        """
        del self.server.zones["2.0.0.127.in-addr.arpa"]
        found = await self.finding("PTR")
        self.assertEqual(found.status, FAIL)
        self.assertEqual(found.message, "127.0.0.2 has no PTR")
        self.assertTrue(found.fix[0].startswith("2.0.0.127.in-addr.arpa. IN PTR mx.example.test."))

    async def test_ptrOtherName(self) -> None:
        """
        A PTR naming another host fails and says which.
        """
        self.server.zones["2.0.0.127.in-addr.arpa"] = {"PTR": ["host-2.isp.test"]}
        found = await self.finding("PTR")
        self.assertEqual(found.status, FAIL)
        self.assertIn("host-2.isp.test, not at mx.example.test", found.message)

    async def test_ptrNotConfirmed(self) -> None:
        """
        A PTR naming our hostname that does not resolve back to the
        address fails forward confirmation.
        """
        self.server.zones["3.0.0.127.in-addr.arpa"] = {"PTR": [HOST]}
        found = await self.finding("PTR", sourceAddress="127.0.0.3")
        self.assertEqual(found.status, FAIL)
        self.assertIn("does not resolve back to 127.0.0.3", found.message)


class SPFTests(DoctorTestsMixin, TestCase):
    """
    Exactly one SPF record that passes our address within 10 lookups.
    """

    def setSPF(self, *records: str) -> None:
        """
        Replace the domain's TXT records.
        """
        self.server.zones[DOMAIN]["TXT"] = list(records)

    async def test_missing(self) -> None:
        """
        No SPF record fails with the C{mx -all} suggestion when the MX is
        this server at our address.
        """
        self.setSPF("not spf")
        found = await self.finding("SPF")
        self.assertEqual((found.status, found.message), (FAIL, "no SPF record"))
        self.assertEqual(found.fix, ('example.test. IN TXT "v=spf1 mx -all"',))

    async def test_missingSuggestsAddress(self) -> None:
        """
        When the MX is not this server, the suggestion lists our address.
        """
        self.setSPF()
        self.server.zones[DOMAIN]["MX"] = [(10, "mx.other.test")]
        found = await self.finding("SPF")
        self.assertEqual(found.fix, ('example.test. IN TXT "v=spf1 ip4:127.0.0.2 -all"',))

    async def test_two(self) -> None:
        """
        Two SPF records fail.
        """
        self.setSPF("v=spf1 mx -all", "v=spf1 a -all")
        found = await self.finding("SPF")
        self.assertEqual(found.status, FAIL)
        self.assertIn("2 SPF records", found.message)
        self.assertEqual(found.found, ("v=spf1 mx -all", "v=spf1 a -all"))

    async def test_notCovering(self) -> None:
        """
        A record that does not pass our address fails with the record
        fixed by an ip4 term.
        """
        self.setSPF("v=spf1 ip4:192.0.2.0/24 ~all")
        found = await self.finding("SPF")
        self.assertEqual(found.status, FAIL)
        self.assertIn("127.0.0.2 (softfail)", found.message)
        self.assertEqual(
            found.fix, ('example.test. IN TXT "v=spf1 ip4:127.0.0.2 ip4:192.0.2.0/24 ~all"',)
        )

    async def test_tooManyLookups(self) -> None:
        """
        A record costing more than 10 lookups through its includes fails,
        even when our address passes early on.
        """
        self.setSPF("v=spf1 mx include:spf1.example.test -all")
        for n in range(1, 6):
            self.server.zones[f"spf{n}.example.test"] = {
                "TXT": [f"v=spf1 a mx include:spf{n + 1}.example.test ?all"]
            }
        self.server.zones["spf6.example.test"] = {"TXT": ["v=spf1 -all"]}
        found = await self.finding("SPF")
        self.assertEqual(found.status, FAIL)
        self.assertIn("needs 17 DNS lookups", found.message)

    async def test_tenLookups(self) -> None:
        """
        Exactly 10 lookups pass.
        """
        self.setSPF("v=spf1 mx a a a a a a a a a -all")
        found = await self.finding("SPF")
        self.assertEqual(found.status, OK)
        self.assertIn("10 DNS lookups", found.message)

    async def test_permerror(self) -> None:
        """
        A record that does not evaluate fails with the suggestion.
        """
        self.setSPF("v=spf1 bogus:x mx -all")
        found = await self.finding("SPF")
        self.assertEqual(found.status, FAIL)
        self.assertIn("permerror", found.message)
        self.assertEqual(found.fix, ('example.test. IN TXT "v=spf1 mx -all"',))

    async def test_temperror(self) -> None:
        """
        A DNS failure on the way is a failure with the reason, not a pass.
        """
        self.setSPF("v=spf1 include:broken.example.test -all")
        self.server.zones["broken.example.test"] = "SERVFAIL"
        found = await self.finding("SPF")
        self.assertEqual(found.status, FAIL)
        self.assertIn("SERVFAIL", found.message)


class SPFEvaluationTests(DoctorTestsMixin, TestCase):
    """
    L{evaluateSPF} for one address, mechanism by mechanism.
    """

    async def result(self, record: str, ip: str = "127.0.0.2", **zones: Any) -> str:
        """
        @return: the result for C{ip} when L{DOMAIN}'s SPF is C{record}.
        """
        self.server.zones[DOMAIN]["TXT"] = [record]
        for name, value in zones.items():
            self.server.zones[name.replace("_", ".")] = value
        outcome, _ = await evaluateSPF(self.resolver, DOMAIN, ip, HOST)
        return outcome

    async def test_ip(self) -> None:
        """
        C{ip4} and C{ip6} match by network; a qualifier gives the result.
        """
        self.assertEqual(await self.result("v=spf1 ip4:127.0.0.0/8 -all"), "pass")
        self.assertEqual(await self.result("v=spf1 -ip4:127.0.0.2 +all"), "fail")
        self.assertEqual(await self.result("v=spf1 ip6:2001:db8::/32 -all", "2001:db8::1"), "pass")
        self.assertEqual(await self.result("v=spf1 ip6:2001:db8::/32 ~all"), "softfail")
        self.assertEqual(await self.result("v=spf1 ip4:10.0.0.1"), "neutral")

    async def test_a(self) -> None:
        """
        C{a} matches the domain's (or the named host's) addresses, with a
        CIDR length.
        """
        self.server.zones[DOMAIN]["A"] = ["127.0.0.9"]
        self.assertEqual(await self.result("v=spf1 a -all"), "fail")
        self.assertEqual(await self.result("v=spf1 a/24 -all"), "pass")
        self.assertEqual(await self.result("v=spf1 a:mx.example.test -all"), "pass")

    async def test_mx(self) -> None:
        """
        C{mx} matches the addresses of the domain's MX hosts.
        """
        self.assertEqual(await self.result("v=spf1 mx -all"), "pass")
        self.assertEqual(await self.result("v=spf1 mx -all", "127.0.0.3"), "fail")

    async def test_include(self) -> None:
        """
        C{include} matches when the included record passes; one without a
        record is a permerror.
        """
        other = {"TXT": ["v=spf1 ip4:127.0.0.2 -all"]}
        self.assertEqual(await self.result("v=spf1 include:o.test -all", o_test=other), "pass")
        self.assertEqual(
            await self.result("v=spf1 include:o.test -all", "127.0.0.3", o_test=other), "fail"
        )
        self.assertEqual(await self.result("v=spf1 include:nothing.test -all"), "permerror")

    async def test_redirect(self) -> None:
        """
        C{redirect} applies when nothing matched.
        """
        other = {"TXT": ["v=spf1 ip4:127.0.0.2 -all"]}
        self.assertEqual(await self.result("v=spf1 redirect=o.test", o_test=other), "pass")
        self.assertEqual(await self.result("v=spf1 redirect=o.test", "127.0.0.3"), "fail")

    async def test_existsAndMacros(self) -> None:
        """
        C{exists} with the C{%{i}} and C{%{d}} macros asks for the
        expanded name.
        """
        zone = {"A": ["127.0.0.1"]}
        self.server.zones["2.0.0.127.example.test.list.test"] = zone
        self.assertEqual(await self.result("v=spf1 exists:%{ir}.%{d}.list.test -all"), "pass")
        self.assertEqual(
            await self.result("v=spf1 exists:%{ir}.%{d}.list.test -all", "127.0.0.3"), "fail"
        )

    async def test_ptr(self) -> None:
        """
        C{ptr} matches a forward-confirmed name under the domain.
        """
        self.assertEqual(await self.result("v=spf1 ptr -all"), "pass")
        self.assertEqual(await self.result("v=spf1 ptr:other.test -all"), "fail")

    async def test_voidLimit(self) -> None:
        """
        More than two lookups that find nothing is a permerror.
        """
        record = "v=spf1 a:n1.test a:n2.test a:n3.test -all"
        self.assertEqual(await self.result(record), "permerror")

    async def test_lookupLimit(self) -> None:
        """
        The eleventh lookup is a permerror.
        """
        ten = "a:mx.example.test/32 " * 10
        self.assertEqual(await self.result("v=spf1 " + ten + "mx -all", "127.0.0.3"), "permerror")
        self.assertEqual(await self.result("v=spf1 " + ten + "-all", "127.0.0.3"), "fail")

    async def test_none(self) -> None:
        """
        No SPF record is C{none}.
        """
        self.assertEqual(await self.result("not spf"), "none")


class DKIMTests(DoctorTestsMixin, TestCase):
    """
    Each DKIM key of the domain is published, with our public key.
    """

    async def test_mismatch(self) -> None:
        """
        A published key that is not ours fails with our zone line.
        """
        self.server.zones["s1._domainkey.example.test"] = {"TXT": ["v=DKIM1; k=rsa; p=OTHER"]}
        found = await self.finding("DKIM")
        self.assertEqual(found.status, FAIL)
        self.assertIn("not ours", found.message)
        self.assertEqual(found.fix, (FakeKey(DOMAIN, "s1").zoneLine(),))

    async def test_missing(self) -> None:
        """
        No record at the selector fails with our zone line.
        """
        del self.server.zones["s1._domainkey.example.test"]
        found = await self.finding("DKIM")
        self.assertEqual((found.status, found.message), (FAIL, "selector s1: no key published"))
        self.assertEqual(found.fix, (FakeKey(DOMAIN, "s1").zoneLine(),))

    async def test_revoked(self) -> None:
        """
        An empty C{p=} (a revoked key) fails.
        """
        self.server.zones["s1._domainkey.example.test"] = {"TXT": ["v=DKIM1; p="]}
        self.assertIn("revoked", (await self.finding("DKIM")).message)

    async def test_eachSelector(self) -> None:
        """
        Every key is checked at its own selector.
        """
        keys = [FakeKey(DOMAIN, "s1"), FakeKey(DOMAIN, "s2"), FakeKey("other.test", "s3")]
        found = [f for f in await self.diagnose(dkimKeys=keys) if f.check == "DKIM"]
        self.assertEqual(
            [(f.name, f.status) for f in found],
            [("s1._domainkey.example.test", OK), ("s2._domainkey.example.test", FAIL)],
        )

    async def test_noKey(self) -> None:
        """
        Without a key the fix is the command that makes one.
        """
        found = await self.finding("DKIM", dkimKeys=[])
        self.assertEqual(found.status, FAIL)
        self.assertEqual(found.fix, ("mta dkim keygen example.test",))


class DMARCTests(DoctorTestsMixin, TestCase):
    """
    One valid DMARC record.
    """

    def setDMARC(self, *records: str) -> None:
        """
        Replace the C{_dmarc} TXT records.
        """
        self.server.zones["_dmarc.example.test"] = {"TXT": list(records)}

    async def test_missing(self) -> None:
        """
        No record fails with the suggestion.
        """
        del self.server.zones["_dmarc.example.test"]
        found = await self.finding("DMARC")
        self.assertEqual((found.status, found.fix), (FAIL, (DMARC_LINE,)))

    async def test_syntaxError(self) -> None:
        """
        A record with a syntax error fails and says what is wrong.
        """
        self.setDMARC("v=DMARC1; p=rejected; pct=150")
        found = await self.finding("DMARC")
        self.assertEqual(found.status, FAIL)
        self.assertIn("p=rejected is not none, quarantine or reject", found.message)
        self.assertIn("pct=150", found.message)
        self.assertEqual(found.fix, (DMARC_LINE,))

    async def test_two(self) -> None:
        """
        Two DMARC records fail.
        """
        self.setDMARC("v=DMARC1; p=none", "v=DMARC1; p=reject")
        self.assertIn("2 DMARC records", (await self.finding("DMARC")).message)

    async def test_none(self) -> None:
        """
        C{p=none} is a warning, which does not fail the exit status.
        """
        self.setDMARC("v=DMARC1; p=none")
        findings = await self.diagnose()
        [found] = [f for f in findings if f.check == "DMARC"]
        self.assertEqual(found.status, WARN)
        self.assertEqual(exitStatus(findings), 0)


class SyntaxTests(TestCase):
    """
    The record parsers.
    """

    def test_checkDMARC(self) -> None:
        """
        Each DMARC syntax error is named; valid records give none.
        """
        self.assertEqual(
            checkDMARC("v=DMARC1; p=reject; sp=none; adkim=s; aspf=r; pct=0; fo=1:d; ri=3600"),
            [],
        )
        self.assertEqual(
            checkDMARC("v=DMARC1;p=quarantine;rua=mailto:a@b.test!10m,mailto:c@d.test"), []
        )
        cases = {
            "p=reject; v=DMARC1": "must start with v=DMARC1",
            "v=DMARC1": "p= is missing",
            "v=DMARC1; p=reject; p=none": "p= appears more than once",
            "v=DMARC1; p=reject; adkim=x": "adkim=x is not r or s",
            "v=DMARC1; p=reject; pct=-1": "pct=-1",
            "v=DMARC1; p=reject; rua=dmarc@example.test": "not a mailto: address URI",
            "v=DMARC1; p=reject; rua=mailto:nobody": "not a mailto: address URI",
            "v=DMARC1; p=reject; rau=mailto:a@b.test": "unknown tag rau=",
            "v=DMARC1; p=reject; fo=2": "fo=2",
            "v=DMARC1; p reject": "not a tag=value pair",
        }
        for record, problem in cases.items():
            self.assertIn(problem, " ".join(checkDMARC(record)), record)

    def test_parseTags(self) -> None:
        """
        Tags are split on semicolons, names lower-cased, spaces stripped.
        """
        self.assertEqual(parseTags(" V=DKIM1 ;p = abc ; "), [("v", "DKIM1"), ("p", "abc")])

    def test_isSPF(self) -> None:
        """
        Only C{v=spf1} alone or followed by a space is SPF.
        """
        self.assertEqual(
            [isSPF(t) for t in ["v=spf1", "V=SPF1 -all", "v=spf10 -all", "spf1 -all"]],
            [True, True, False, False],
        )

    def test_txtLine(self) -> None:
        """
        Quotes and backslashes in a TXT value are escaped.
        """
        self.assertEqual(txtLine("a.test", 'x "y" \\'), 'a.test. IN TXT "x \\"y\\" \\\\"')


class RenderTests(TestCase):
    """
    The human and JSON reports.
    """

    findings = [
        Finding("MX", "example.test", OK, "points at mx.example.test"),
        Finding("SPF", "example.test", FAIL, "no SPF record", fix=("the line",)),
        Finding("TLSA", "x", INFO, "not checked yet"),
    ]

    def test_text(self) -> None:
        """
        One line per check with its mark, the fix lines under it, and a
        summary.
        """
        self.assertEqual(
            renderText("example.test", self.findings, "utf-8"),
            [
                "DNS records for example.test:",
                "\u2713 MX   example.test: points at mx.example.test",
                "\u2717 SPF  example.test: no SPF record",
                "    fix: the line",
                "- TLSA x: not checked yet",
                "1 check(s) failed",
            ],
        )

    def test_ascii(self) -> None:
        """
        On an output that cannot show the marks, ASCII ones are used.
        """
        lines = renderText("example.test", self.findings, "ascii")
        self.assertEqual([line[:3] for line in lines[1:3]], ["ok ", "XX "])
        "\n".join(lines).encode("ascii")

    def test_json(self) -> None:
        """
        The JSON report is a list of the findings' fields.
        """
        data = json.loads(renderJSON(self.findings))
        self.assertEqual(
            data[1],
            {
                "check": "SPF",
                "name": "example.test",
                "status": "fail",
                "message": "no SPF record",
                "found": [],
                "expected": "",
                "fix": ["the line"],
            },
        )
