"""
The RFC 7208 test suite (the openspf.org suite pyspf ships, release
2014.04) run through L{mta.policy.spf}: every case whose identity our SMTP
server can present is checked by L{SPFChecker}, its lookups going through
the real L{mta.dns.Resolver} (its name encoding, CNAME following, cache
and error mapping) to an upstream that answers from the suite's zones.

The YAML is vendored in C{tests/data} (BSD-style licence, kept beside it
in C{rfc7208-tests.LICENSE}): pyspf's wheel does not install it, only its
sdist has it.  Without PyYAML the suite is skipped.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.names import dns
from twisted.names import error as terror
from twisted.trial.unittest import SkipTest, TestCase

from mta.dns import Resolver
from mta.envelope import Address, AddressError, quoteLocalPart
from mta.policy.spf import SPFChecker
from mta.threads import BlockingRunner

try:
    import yaml
except ImportError:  # pragma: no cover
    yaml = None

#: The global reactor, as the interfaces the checks ask for.
reactor = cast(Any, _reactor)

SUITE = Path(__file__).parent / "data" / "rfc7208-tests.yml"

#: Cases left out, with the reason.  Each is a case our path cannot
#: present as the suite means it, or where pyspf (the evaluation we use)
#: itself answers otherwise; the rest must give the suite's result.
SKIPPED: dict[str, str] = {}


def loadSuite() -> list[dict[str, Any]]:
    """
    @return: the scenarios of the suite, each with C{zonedata} and
        C{tests}; C{[]} when the file or PyYAML is missing.
    """
    if yaml is None or not SUITE.exists():
        return []
    with SUITE.open("rb") as f:
        return list(yaml.safe_load_all(f))


def _name(text: str) -> str:
    """
    A zone or query name as the suite's driver keys it: lower case,
    empty labels dropped (the way pydns treated them).
    """
    return ".".join(label for label in text.lower().rstrip(".").split(".") if label)


class Zone:
    """
    One scenario's zone data, answering as the suite's reference driver
    (pyspf's C{test/testspf.py}) does: a name's C{SPF} records double as
    its TXT records unless it has TXT records of its own (C{TXT: NONE}
    means none), a bare C{TIMEOUT} times out every type not listed before
    it, a missing name under C{error.} times out, and a CNAME is followed.
    """

    def __init__(self, zonedata: dict[str, list[Any]]) -> None:
        self.entries: dict[str, list[Any]] = {}
        for name, records in zonedata.items():
            items: list[Any] = []
            spf: list[Any] = []
            hasTXT = False
            for r in records:
                if not isinstance(r, dict):
                    items.append(r)
                    continue
                for rrtype, value in r.items():
                    if rrtype == "TXT":
                        hasTXT = True
                    if rrtype == "SPF":
                        spf.append(value)
                        continue
                    if value != "NONE":
                        items.append((rrtype, value))
            if not hasTXT:
                items.extend(("TXT", v) for v in spf)
            self.entries[_name(name)] = items

    def lookup(self, name: str, rrtype: str, depth: int = 0) -> list[tuple[str, str, Any]] | None:
        """
        @return: C{(owner, type, value)} of C{name}'s records of
            C{rrtype}, CNAMEs first; L{None} for NXDOMAIN.
        @raise terror.DNSQueryTimeoutError: the zone says it times out.
        """
        entries = self.entries.get(name)
        if entries is None:
            if name.startswith("error."):
                raise terror.DNSQueryTimeoutError(name)
            return None
        found: list[tuple[str, str, Any]] = []
        for item in entries:
            if item == "TIMEOUT":
                if not found:
                    raise terror.DNSQueryTimeoutError(name)
                break
            itemType, value = item
            if itemType == rrtype:
                if value == "TIMEOUT":
                    raise terror.DNSQueryTimeoutError(name)
                found.append((name, rrtype, value))
            elif itemType == "CNAME" and rrtype != "CNAME":
                # A recursive resolver gives up on a CNAME loop; the chain
                # so far is its answer.
                target = [] if depth > 8 else self.lookup(_name(value), rrtype, depth + 1) or []
                return [(name, "CNAME", value), *target]
        return found


def _rr(owner: str, rrtype: str, value: Any) -> dns.RRHeader:
    """
    @return: the resource record for one zone value.
    """
    if rrtype == "TXT":
        parts = [value] if isinstance(value, str) else list(value)
        payload: Any = dns.Record_TXT(*[p.encode("utf-8") for p in parts], ttl=300)
    elif rrtype == "A":
        payload = dns.Record_A(value, ttl=300)
    elif rrtype == "AAAA":
        payload = dns.Record_AAAA(value, ttl=300)
    elif rrtype == "MX":
        payload = dns.Record_MX(int(value[0]), value[1].encode("ascii"), ttl=300)
    elif rrtype == "PTR":
        payload = dns.Record_PTR(value.encode("ascii"), ttl=300)
    elif rrtype == "CNAME":
        payload = dns.Record_CNAME(value.encode("ascii"), ttl=300)
    else:
        raise ValueError(rrtype)
    return dns.RRHeader(owner.encode("ascii"), payload.TYPE, dns.IN, 300, payload=payload)


class ZoneUpstream:
    """
    The C{twisted.names} resolver under L{mta.dns.Resolver}: answers each
    query from a L{Zone} at once (a timeout fails at once, too).

    @ivar queries: C{(name, type)} per query.
    """

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.queries: list[tuple[str, str]] = []

    def query(self, query: dns.Query, timeout: Any = None) -> Deferred[Any]:
        raw = query.name.name.decode("utf-8", "replace")
        rrtype = dns.QUERY_TYPES.get(query.type, str(query.type))
        self.queries.append((raw, rrtype))
        try:
            found = self.zone.lookup(_name(raw), rrtype)
        except terror.DNSQueryTimeoutError as e:
            return fail(e)
        if found is None:
            return fail(terror.DNSNameError(dns.Message()))
        # The owner of the first answer is the name asked, as sent.
        answers = [_rr(raw.lower() if i == 0 else o, t, v) for i, (o, t, v) in enumerate(found)]
        return succeed((answers, [], []))


def expected(case: dict[str, Any]) -> list[str]:
    """
    @return: the results the suite accepts for C{case}, preferred first.
    """
    result = case["result"]
    return [result] if isinstance(result, str) else list(result)


class RFC7208SuiteTests(TestCase):
    """
    One test per case of the suite (added below from the YAML).
    """

    def setUp(self) -> None:
        if yaml is None:
            raise SkipTest("PyYAML is not installed")
        if not SUITE.exists():
            raise SkipTest(f"{SUITE} is missing")
        runner = BlockingRunner(reactor, 1, name="spf-suite")
        runner.startService()
        self.addCleanup(runner.stopService)
        self.runner = runner

    def sender(self, mailfrom: str) -> Address:
        """
        @return: the MAIL FROM address our SMTP server would take for the
            suite's C{mailfrom}: as written, or with its local part quoted
            when it needs quotes (C{Macro Error@...}: RFC 5321 has no
            unquoted spaces).
        @raise SkipTest: our SMTP server refuses it before SPF.
        """
        try:
            return Address.parse(mailfrom, utf8=True)
        except AddressError as e:
            local, at, domain = mailfrom.rpartition("@")
            if at and local:
                try:
                    return Address.parse(f"{quoteLocalPart(local)}@{domain}", utf8=True)
                except AddressError:
                    pass
            raise SkipTest(
                f"MAIL FROM {mailfrom!r} is refused by our SMTP server before SPF ({e})"
            ) from None

    async def runCase(self, caseId: str, zone: Zone, case: dict[str, Any]) -> None:
        if caseId in SKIPPED:
            raise SkipTest(SKIPPED[caseId])
        sender = self.sender(case["mailfrom"])
        upstream = ZoneUpstream(zone)
        resolver = Resolver(reactor, upstream=cast(Any, upstream))
        checker = SPFChecker(resolver, reactor, self.runner, "mx.our.test")
        host = str(ipaddress.ip_address(case["host"]))
        result = await checker.check(host, sender, case["helo"])
        want = expected(case)
        self.assertIn(
            result.result,
            want,
            f"{caseId} ({case.get('spec')}): {result.result!r}, not {want}: {result.reason}"
            f"\nqueries: {upstream.queries}",
        )
        if result.result == "fail" and case.get("explanation") not in (None, "DEFAULT"):
            self.assertEqual(result.reason, case["explanation"], caseId)
        if sender.isNull:
            self.assertEqual((result.identity, result.domain), ("helo", _name(case["helo"])))
        else:
            self.assertEqual((result.identity, result.domain), ("mailfrom", sender.domain))


def _addCases() -> int:
    count = 0
    for scenario in loadSuite():
        zone = Zone(scenario.get("zonedata") or {})
        for caseId, case in scenario["tests"].items():

            async def test(self: RFC7208SuiteTests, c: str = caseId, z: Zone = zone) -> None:
                await self.runCase(c, z, _cases[c])

            _cases[caseId] = case
            method = "test_" + caseId.replace("-", "_")
            test.__name__ = method
            test.__doc__ = f"{caseId} ({case.get('spec')}): {case.get('description', '')}".strip()
            setattr(RFC7208SuiteTests, method, test)
            count += 1
    return count


_cases: dict[str, dict[str, Any]] = {}
CASES = _addCases()


class QuotedLocalPartTests(TestCase):
    """
    A quoted local part (RFC 5321 section 4.1.2) reaches pyspf as its
    text: C{%{l}} expands without the quotes, and an C{@} inside it does
    not move the domain checked.
    """

    def setUp(self) -> None:
        runner = BlockingRunner(reactor, 1, name="spf-quoted")
        runner.startService()
        self.addCleanup(runner.stopService)
        zone = Zone(
            {
                "example.test": [{"SPF": "v=spf1 ip4:192.0.2.10 -all exp=why.example.test"}],
                "why.example.test": [{"TXT": "%{l} may not send"}],
                "evil.test": [{"SPF": "v=spf1 -all"}],
            }
        )
        self.upstream = ZoneUpstream(zone)
        resolver = Resolver(reactor, upstream=cast(Any, self.upstream))
        self.checker = SPFChecker(resolver, reactor, runner, "mx.our.test")

    async def test_atInQuotedLocalPart(self) -> None:
        """
        C{"a@evil.test"@example.test} is checked against example.test.
        """
        sender = Address.parse('"a@evil.test"@example.test')
        result = await self.checker.check("192.0.2.10", sender, "h.test")
        self.assertEqual((result.result, result.domain), ("pass", "example.test"))
        self.assertNotIn(("evil.test", "TXT"), self.upstream.queries)

    async def test_macroUnquoted(self) -> None:
        """
        The explanation's C{%{l}} is the local part without its quotes.
        """
        sender = Address.parse('"a b"@example.test')
        result = await self.checker.check("203.0.113.5", sender, "h.test")
        self.assertEqual((result.result, result.reason), ("fail", "a b may not send"))
