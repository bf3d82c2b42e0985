# -*- test-case-name: tests.test_dnsdoctor -*-
"""
The deliverability doctor behind C{mta dns DOMAIN}.

L{diagnose} asks DNS, through an L{IDNSResolver} (so C{[dns] nameservers}
applies), for every record a domain served by this server needs: its MX,
the server's A/AAAA and PTR (forward-confirmed reverse DNS), SPF, DKIM for
each key of the domain, and DMARC.  It returns one L{Finding} per check,
each saying what was found, what is expected, and the exact zone-file
line (or command) that fixes it.  It prints nothing: L{renderText} and
L{renderJSON} turn the findings into output, and L{exitStatus} into the
command's exit status.

SPF is evaluated for this server's address by L{mta.spfwalk}, because the
question is "would a receiver's check pass for mail from us", with the
record's DNS lookups counted through every include, as receivers stop at
10.  DMARC records are parsed here against RFC 7489 section 6.3.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from mta.dns import DNSError, DNSNameError, DNSTemporaryError, MXRecord
from mta.interfaces import IDNSResolver
from mta.spfwalk import (
    SPF_LOOKUP_LIMIT,
    SPFEvaluation,
    SPFPermError,
    SPFTempError,
    countSPFLookups,
    decodeTXT,
    dnsReason,
    evaluateSPF,
    isSPF,
)

#: A finding's status: published and correct.
OK = "ok"
#: Published and working, but worth changing.
WARN = "warn"
#: Missing, wrong, or DNS did not answer: mail will suffer.
FAIL = "fail"
#: Not a check (yet): shown for completeness, never a failure.
INFO = "info"


#: The records of the TLS-policy work, listed but not checked yet.
_NOT_CHECKED = [
    ("MTA-STS", "_mta-sts.{domain}"),
    ("TLS-RPT", "_smtp._tls.{domain}"),
    ("TLSA", "_25._tcp.{hostname}"),
]


class DKIMKeyInfo(Protocol):
    """
    What the doctor needs of a DKIM key (L{mta.dkimkeys.DKIMKey}).
    """

    @property
    def domain(self) -> str:
        """
        The signing domain.
        """

    @property
    def selector(self) -> str:
        """
        The selector: the key is published at C{selector._domainkey.domain}.
        """

    def publicRecord(self) -> str:
        """
        @return: the TXT record's text, C{"v=DKIM1; k=rsa; p=..."}.
        """

    def zoneLine(self) -> str:
        """
        @return: the zone-file line that publishes the key.
        """


@dataclass(frozen=True)
class ServerFacts:
    """
    What the doctor knows about this server.

    @ivar hostname: the server's C{hostname}: its MX name and HELO name.
    @ivar sourceAddress: C{[relay] source_address}, or C{""}.
    @ivar ip: the address given with C{--ip}, or C{""}.
    @ivar dkimKeys: the domain's DKIM keys.
    """

    hostname: str
    sourceAddress: str = ""
    ip: str = ""
    dkimKeys: Sequence[DKIMKeyInfo] = ()


@dataclass(frozen=True)
class Finding:
    """
    The outcome of one check.

    @ivar check: what was checked: C{"MX"}, C{"A/AAAA"}, C{"PTR"},
        C{"SPF"}, C{"DKIM"}, C{"DMARC"}, C{"MTA-STS"}, C{"TLS-RPT"},
        C{"TLSA"}.
    @ivar name: the DNS name looked at.
    @ivar status: L{OK}, L{WARN}, L{FAIL} or L{INFO}.
    @ivar message: one sentence on what is right or wrong.
    @ivar found: the records found (as text).
    @ivar expected: the record that should be there, or what it should do.
    @ivar fix: the zone-file lines to publish (or the command to run),
        when something needs doing.
    """

    check: str
    name: str
    status: str
    message: str
    found: tuple[str, ...] = ()
    expected: str = ""
    fix: tuple[str, ...] = field(default=())

    def asDict(self) -> dict[str, Any]:
        """
        @return: the finding as JSON-ready data.
        """
        return {
            "check": self.check,
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "found": list(self.found),
            "expected": self.expected,
            "fix": list(self.fix),
        }


def txtLine(name: str, text: str) -> str:
    """
    @return: the zone-file line publishing C{text} as a TXT record at
        C{name}, quoted.
    """
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}. IN TXT "{quoted}"'


# Tags


def parseTags(text: str) -> list[tuple[str, str]]:
    """
    Split a tag list (RFC 6376 3.2, RFC 7489 6.4): C{"v=X; p=Y"}.

    @return: the C{(name, value)} pairs in order, names lower-case and
        both stripped of whitespace.
    @raise ValueError: a part is not C{name=value}.
    """
    tags = []
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]*", name.strip()):
            raise ValueError(f"{part.strip()!r} is not a tag=value pair")
        tags.append((name.strip().lower(), value.strip()))
    return tags


# DMARC

_DMARC_TAGS = {"v", "p", "sp", "rua", "ruf", "adkim", "aspf", "pct", "fo", "rf", "ri"}
_POLICIES = ("none", "quarantine", "reject")
_MAILTO = re.compile(
    r"^mailto:([^@\s,;!]+@[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?)(![0-9]+[kmgt]?)?$", re.I
)


def checkDMARC(text: str) -> list[str]:
    """
    Check a DMARC record's syntax (RFC 7489 6.3 and 6.4).

    @return: what is wrong, one sentence each; empty when it is valid.
    """
    try:
        tags = parseTags(text)
    except ValueError as e:
        return [str(e)]
    problems = []
    if not tags or tags[0] != ("v", "DMARC1"):
        problems.append("the record must start with v=DMARC1")
    names = [name for name, _ in tags]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{name}= appears more than once")
    values = dict(tags)
    if "p" not in values:
        problems.append("p= is missing (none, quarantine or reject)")
    for name in ("p", "sp"):
        if name in values and values[name].lower() not in _POLICIES:
            problems.append(f"{name}={values[name]} is not none, quarantine or reject")
    for name in ("adkim", "aspf"):
        if name in values and values[name].lower() not in ("r", "s"):
            problems.append(f"{name}={values[name]} is not r or s")
    if "pct" in values and not (values["pct"].isdigit() and 0 <= int(values["pct"]) <= 100):
        problems.append(f"pct={values['pct']} is not a number from 0 to 100")
    if "ri" in values and not values["ri"].isdigit():
        problems.append(f"ri={values['ri']} is not a number of seconds")
    if "fo" in values and not all(o in ("0", "1", "d", "s") for o in values["fo"].split(":")):
        problems.append(f"fo={values['fo']} is not a colon list of 0, 1, d and s")
    if "rf" in values and not all(f.lower() == "afrf" for f in values["rf"].split(":")):
        problems.append(f"rf={values['rf']} is not afrf")
    for name in ("rua", "ruf"):
        for uri in values.get(name, "").split(",") if name in values else []:
            if not _MAILTO.match(uri.strip()):
                problems.append(f"{name}: {uri.strip()!r} is not a mailto: address URI")
    for name in names:
        if name not in _DMARC_TAGS:
            problems.append(f"unknown tag {name}=")
    return problems


# The checks


def _spfTerm(address: str) -> str:
    """
    @return: the C{ip4:} or C{ip6:} term for C{address}.
    """
    return f"ip{ipaddress.ip_address(address).version}:{address}"


def _addressLine(hostname: str, address: str) -> str:
    kind = "AAAA" if ipaddress.ip_address(address).version == 6 else "A"
    return f"{hostname}. IN {kind} {address}"


class _Doctor:
    """
    The checks of one C{mta dns DOMAIN} run, sharing what they learn.

    @ivar mxHere: whether the domain's MX names our hostname.
    @ivar hostAddresses: what our hostname resolves to.
    @ivar ours: the addresses mail from us comes from.
    """

    def __init__(self, resolver: IDNSResolver, domain: str, facts: ServerFacts) -> None:
        self.resolver = resolver
        self.domain = domain.rstrip(".").lower()
        self.facts = facts
        self.hostname = facts.hostname.rstrip(".").lower()
        self.mxHere = False
        self.hostAddresses: list[str] = []
        self.ours: list[str] = []

    async def run(self) -> list[Finding]:
        """
        @return: every finding, in the order they are printed.
        """
        findings = [await self.mx(), await self.address()]
        findings += await self.ptr()
        findings.append(await self.spf())
        findings += await self.dkim()
        findings.append(await self.dmarc())
        for check, name in _NOT_CHECKED:
            where = name.format(domain=self.domain, hostname=self.hostname)
            findings.append(
                Finding(check, where, INFO, "not checked yet (TLS-policy work not landed)")
            )
        return findings

    async def mx(self) -> Finding:
        """
        The domain's MX names our hostname, and is no null MX.
        """
        wanted = f"{self.domain}. IN MX 10 {self.hostname}."
        mxs: list[MXRecord] = []
        try:
            mxs = await self.resolver.lookupMX(self.domain)
        except DNSNameError:
            return Finding(
                "MX",
                self.domain,
                FAIL,
                f"{self.domain} does not exist in DNS",
                (),
                wanted,
                (wanted,),
            )
        except DNSTemporaryError as e:
            return Finding("MX", self.domain, FAIL, dnsReason(e), (), wanted)
        found = tuple(f"{mx.preference} {mx.exchange or '.'}" for mx in mxs)
        if any(mx.isNull for mx in mxs):
            return Finding(
                "MX",
                self.domain,
                FAIL,
                "null MX (RFC 7505): the domain says it accepts no mail",
                found,
                wanted,
                (f"remove {self.domain}. IN MX 0 .", wanted),
            )
        if not mxs:
            return Finding("MX", self.domain, FAIL, "no MX record", found, wanted, (wanted,))
        hosts = [mx.exchange for mx in mxs]
        if self.hostname in hosts:
            self.mxHere = True
            return Finding("MX", self.domain, OK, f"points at {self.hostname}", found, wanted)
        return Finding(
            "MX",
            self.domain,
            FAIL,
            f"points at {', '.join(hosts)}, not at this server ({self.hostname})",
            found,
            wanted,
            (wanted,),
        )

    async def address(self) -> Finding:
        """
        Our hostname resolves, to our address when we know it otherwise.
        """
        given = self.facts.sourceAddress or self.facts.ip
        expected = (
            _addressLine(self.hostname, given)
            if given
            else f"{self.hostname}. IN A <this server's address>"
        )
        fix = (expected,)
        try:
            self.hostAddresses = await self.resolver.lookupAddresses(self.hostname)
        except DNSNameError:
            pass
        except DNSTemporaryError as e:
            self.ours = [given] if given else []
            return Finding("A/AAAA", self.hostname, FAIL, dnsReason(e), (), expected)
        self.ours = [given] if given else list(self.hostAddresses)
        found = tuple(self.hostAddresses)
        if not self.hostAddresses:
            message = f"{self.hostname} has no A or AAAA record"
            return Finding("A/AAAA", self.hostname, FAIL, message, found, expected, fix)
        if given and given not in self.hostAddresses:
            message = f"{self.hostname} resolves to {', '.join(found)}, not to {given}"
            return Finding("A/AAAA", self.hostname, FAIL, message, found, expected, fix)
        message = f"{self.hostname} resolves to {', '.join(found)}"
        expected = "\n".join(_addressLine(self.hostname, a) for a in self.ours)
        return Finding("A/AAAA", self.hostname, OK, message, found, expected)

    async def ptr(self) -> list[Finding]:
        """
        Each of our addresses has a PTR naming our hostname, which
        resolves back to it (forward-confirmed reverse DNS).
        """
        if not self.ours:
            message = "no address to check the PTR of: publish the A/AAAA record or give --ip"
            return [Finding("PTR", "", FAIL, message)]
        return [await self.onePTR(address) for address in self.ours]

    async def onePTR(self, address: str) -> Finding:
        """
        The PTR of one address.
        """
        reverse = ipaddress.ip_address(address).reverse_pointer
        expected = f"{reverse}. IN PTR {self.hostname}."
        fix = (expected + "   (set by whoever runs the address block: your hosting provider)",)
        try:
            names = await self.resolver.lookupPTR(address)
        except DNSNameError:
            names = []
        except DNSTemporaryError as e:
            return Finding("PTR", reverse, FAIL, dnsReason(e), (), expected)
        if not names:
            return Finding("PTR", reverse, FAIL, f"{address} has no PTR", (), expected, fix)
        found = tuple(names)
        if self.hostname not in names:
            message = f"{address} points at {', '.join(names)}, not at {self.hostname}"
            return Finding("PTR", reverse, FAIL, message, found, expected, fix)
        try:
            back = await self.resolver.lookupAddresses(self.hostname)
        except DNSError:
            back = []
        if address not in back:
            message = f"{self.hostname} does not resolve back to {address}"
            return Finding(
                "PTR",
                reverse,
                FAIL,
                message,
                found,
                expected,
                (_addressLine(self.hostname, address),),
            )
        message = f"{address} is {self.hostname}, which resolves back to it"
        return Finding("PTR", reverse, OK, message, found, expected)

    def suggestedSPF(self) -> str:
        """
        @return: the SPF record that covers us: C{mx} when the MX is
            this server at our address, else our addresses.
        """
        if self.mxHere and self.ours and set(self.ours) <= set(self.hostAddresses):
            return "v=spf1 mx -all"
        terms = [_spfTerm(a) for a in self.ours]
        if self.mxHere:
            terms.append("mx")
        return " ".join(["v=spf1", *terms, "-all"])

    async def spf(self) -> Finding:
        """
        Exactly one SPF record, which passes our addresses within 10
        lookups.
        """
        expected = txtLine(self.domain, self.suggestedSPF())
        try:
            txt = await self.resolver.lookupTXT(self.domain)
        except DNSNameError:
            txt = []
        except DNSTemporaryError as e:
            return Finding("SPF", self.domain, FAIL, dnsReason(e), (), expected)
        records = tuple(r for r in map(decodeTXT, txt) if isSPF(r))
        if not records:
            return Finding("SPF", self.domain, FAIL, "no SPF record", (), expected, (expected,))
        if len(records) > 1:
            message = f"{len(records)} SPF records (receivers give permerror): publish only one"
            return Finding("SPF", self.domain, FAIL, message, records, expected, (expected,))
        evaluation = SPFEvaluation(self.resolver, "192.0.2.1", "", self.hostname)
        try:
            lookups = await countSPFLookups(self.resolver, self.domain, evaluation)
        except (SPFTempError, SPFPermError) as e:
            return Finding("SPF", self.domain, FAIL, str(e), records, expected)
        if lookups > SPF_LOOKUP_LIMIT:
            message = (
                f"the record needs {lookups} DNS lookups (receivers give permerror over"
                f" {SPF_LOOKUP_LIMIT}): replace include:s by the ip4:/ip6: ranges they list"
            )
            return Finding("SPF", self.domain, FAIL, message, records, expected, (expected,))
        missing = []
        for address in self.ours:
            result, why = await evaluateSPF(self.resolver, self.domain, address, self.hostname)
            if result == "temperror":
                return Finding("SPF", self.domain, FAIL, why, records, expected)
            if result == "permerror":
                message = f"the record does not evaluate (permerror): {why}"
                return Finding("SPF", self.domain, FAIL, message, records, expected, (expected,))
            if result != "pass":
                missing.append((address, result))
        if missing:
            fixed = records[0].split()
            fixed[1:1] = [_spfTerm(a) for a, _ in missing]
            fix = txtLine(self.domain, " ".join(fixed))
            notCovered = ", ".join(f"{a} ({result})" for a, result in missing)
            message = f"does not pass this server's address: {notCovered}"
            return Finding("SPF", self.domain, FAIL, message, records, expected, (fix,))
        if not self.ours:
            message = f"one record, {lookups} DNS lookups; no address of ours to check it for"
            return Finding("SPF", self.domain, WARN, message, records, expected)
        message = f"passes {', '.join(self.ours)} with {lookups} DNS lookups"
        return Finding("SPF", self.domain, OK, message, records, expected)

    async def dkim(self) -> list[Finding]:
        """
        Each DKIM key of the domain is published at its selector, with
        our public key.
        """
        keys = [k for k in self.facts.dkimKeys if k.domain.rstrip(".").lower() == self.domain]
        if not keys:
            message = f"no DKIM key for {self.domain}: make one, then publish the line it prints"
            fix = (f"mta dkim keygen {self.domain}",)
            return [Finding("DKIM", f"_domainkey.{self.domain}", FAIL, message, (), "", fix)]
        return [await self.oneDKIM(key) for key in keys]

    async def oneDKIM(self, key: DKIMKeyInfo) -> Finding:
        """
        One key's TXT record.
        """
        name = f"{key.selector}._domainkey.{self.domain}"
        try:
            ours = dict(parseTags(key.publicRecord()))
            expected = key.zoneLine()
        except (OSError, ValueError) as e:
            message = f"selector {key.selector}: cannot read our key: {e}"
            return Finding("DKIM", name, FAIL, message)
        fix = (expected,)
        try:
            txt = await self.resolver.lookupTXT(name)
        except DNSNameError:
            txt = []
        except DNSTemporaryError as e:
            return Finding("DKIM", name, FAIL, dnsReason(e), (), expected)
        found = tuple(map(decodeTXT, txt))
        if not found:
            message = f"selector {key.selector}: no key published"
            return Finding("DKIM", name, FAIL, message, found, expected, fix)
        if len(found) > 1:
            message = f"selector {key.selector}: {len(found)} TXT records, receivers need one"
            return Finding("DKIM", name, FAIL, message, found, expected, fix)
        try:
            theirs = dict(parseTags(found[0]))
        except ValueError as e:
            message = f"selector {key.selector}: the record does not parse: {e}"
            return Finding("DKIM", name, FAIL, message, found, expected, fix)
        published = re.sub(r"\s", "", theirs.get("p", ""))
        if not published:
            message = f"selector {key.selector}: no public key (p= missing or empty: revoked)"
            return Finding("DKIM", name, FAIL, message, found, expected, fix)
        if published != re.sub(r"\s", "", ours.get("p", "")):
            message = f"selector {key.selector}: the published key is not ours"
            return Finding("DKIM", name, FAIL, message, found, expected, fix)
        if theirs.get("k", "rsa").lower() != ours.get("k", "rsa").lower():
            message = f"selector {key.selector}: k={theirs.get('k', 'rsa')} but the key is {ours.get('k', 'rsa')}"
            return Finding("DKIM", name, FAIL, message, found, expected, fix)
        message = f"selector {key.selector}: our public key is published"
        return Finding("DKIM", name, OK, message, found, expected)

    async def dmarc(self) -> Finding:
        """
        One valid DMARC record.
        """
        name = f"_dmarc.{self.domain}"
        suggestion = f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{self.domain}"
        expected = txtLine(name, suggestion)
        try:
            txt = await self.resolver.lookupTXT(name)
        except DNSNameError:
            txt = []
        except DNSTemporaryError as e:
            return Finding("DMARC", name, FAIL, dnsReason(e), (), expected)
        found = tuple(r for r in map(decodeTXT, txt) if "dmarc" in r.lower())
        if not found:
            return Finding("DMARC", name, FAIL, "no DMARC record", (), expected, (expected,))
        if len(found) > 1:
            message = f"{len(found)} DMARC records (receivers use none): publish only one"
            return Finding("DMARC", name, FAIL, message, found, expected, (expected,))
        problems = checkDMARC(found[0])
        if problems:
            message = "syntax error: " + "; ".join(problems)
            return Finding("DMARC", name, FAIL, message, found, expected, (expected,))
        policy = dict(parseTags(found[0]))["p"].lower()
        if policy == "none":
            message = "valid, but p=none only monitors: forged mail is still delivered"
            return Finding("DMARC", name, WARN, message, found, expected, (expected,))
        return Finding("DMARC", name, OK, f"valid, p={policy}", found, expected)


def diagnose(resolver: IDNSResolver, domain: str, facts: ServerFacts) -> Deferred[list[Finding]]:
    """
    Check every record C{domain} needs for mail from and to this server.

    @return: a L{Finding} per check (never a failure for DNS errors:
        those are findings too).
    """
    return Deferred.fromCoroutine(_Doctor(resolver, domain, facts).run())


def exitStatus(findings: Sequence[Finding]) -> int:
    """
    @return: 0 when no finding failed, else 1.
    """
    return 1 if any(f.status == FAIL for f in findings) else 0


_MARKS = {OK: "\u2713", WARN: "!", FAIL: "\u2717", INFO: "-"}
_ASCII_MARKS = {OK: "ok", WARN: "!!", FAIL: "XX", INFO: "--"}


def renderText(domain: str, findings: Sequence[Finding], encoding: str | None) -> list[str]:
    """
    The human report: one line per check with its mark, then the lines
    to publish.

    @param encoding: the output's encoding; marks fall back to ASCII
        when it cannot show them.
    @return: the lines.
    """
    marks = _MARKS
    try:
        "".join(_MARKS.values()).encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        marks = _ASCII_MARKS
    width = max(len(f.check) for f in findings)
    lines = [f"DNS records for {domain}:"]
    for finding in findings:
        where = f" {finding.name}:" if finding.name else ""
        lines.append(f"{marks[finding.status]} {finding.check:<{width}}{where} {finding.message}")
        for fix in finding.fix:
            lines.append(f"    fix: {fix}")
    failed = sum(f.status == FAIL for f in findings)
    lines.append("all checks pass" if not failed else f"{failed} check(s) failed")
    return lines


def renderJSON(findings: Sequence[Finding]) -> str:
    """
    @return: the findings as a JSON list, for monitoring.
    """
    return json.dumps([f.asDict() for f in findings], indent=2, ensure_ascii=False)


__all__ = [
    "FAIL",
    "INFO",
    "OK",
    "SPF_LOOKUP_LIMIT",
    "WARN",
    "DKIMKeyInfo",
    "Finding",
    "ServerFacts",
    "checkDMARC",
    "countSPFLookups",
    "diagnose",
    "evaluateSPF",
    "exitStatus",
    "isSPF",
    "parseTags",
    "renderJSON",
    "renderText",
    "txtLine",
]
