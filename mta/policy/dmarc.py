# -*- test-case-name: tests.test_dmarc -*-
"""
DMARC (RFC 7489): does an authenticated identifier align with the From
domain, and what does the domain owner ask us to do when none does?

The record is found here (C{_dmarc.<From domain>}, else the organisational
domain's, through the reactor-side L{mta.interfaces.IDNSResolver}; the
organisational domain comes from the Public Suffix List that
C{publicsuffixlist} ships, so no download happens at run time).  Parsing
the record and evaluating the policy (pass when an aligned SPF or DKIM
identifier passed; else C{p}, or C{sp} when the record is the
organisational domain's) is the C{dmarc} library's, with one correction:
relaxed alignment compares organisational domains (RFC 7489 section
3.1.1), where the library would also align a public suffix with any name
under it.  C{pct} sampling (section 6.6.4: a message not sampled gets the
next milder policy) is done here, with an injectable random source.

L{DMARCEvaluator.evaluate} looks the record up on the reactor thread;
L{DMARCEvaluator.evaluateBlocking} does the same on a worker thread with
blocking lookups, as part of the one job that checks a message (see
L{mta.policy.authresults}).  A record's parse is kept (by its text), so a
domain's record is parsed once, not once per message.  On the blocking
path the decision itself is kept too: what the record says of a From
domain and the identifiers that passed (the SPF domain, the DKIM
domains) is the same for every message while the record's answer is
cached, so it is kept exactly that long (L{mta.dns.keptFor});
the C{pct} draw is still made for each message.  With the caches cold, as
in a busy server, finding and evaluating the record was about a fifth of
the inbound check.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import dmarc
from publicsuffixlist import PublicSuffixList
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from mta.dns import DNSNameError, DNSTemporaryError, keptFor
from mta.interfaces import IDNSResolver
from mta.policy.dkimverify import DKIMResult
from mta.policy.sender import fromAddresses
from mta.policy.spf import SPFResult
from mta.ttlcache import TTLCache

#: Parsed records kept (by record text and domains).
PARSED_RECORDS = 1024

#: Decisions kept by L{DMARCEvaluator.evaluateBlocking} (see there).
DECISIONS_KEPT = 10_000

#: The policy one step milder, for a message that C{pct} leaves out.
_MILDER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


@dataclass(frozen=True)
class DMARCResult:
    """
    The DMARC outcome for one message.

    @ivar result: C{pass}, C{fail}, C{none} (no policy, or no From domain),
        C{temperror} (a lookup failed, or it fails while an underlying
        check had a temporary error) or C{permerror} (not exactly one
        From address).
    @ivar fromDomain: the RFC 5322 From domain (C{header.from}), or C{""}.
    @ivar policy: the published policy that applies (C{p}, or C{sp} for a
        subdomain under the organisational domain's record): C{none},
        C{quarantine}, C{reject}, or C{""} without a record.
    @ivar disposition: what to do: C{policy} when the message fails and
        was sampled by C{pct}, the next milder one when it was not,
        C{none} when it passes.
    @ivar pct: the record's C{pct}.
    @ivar rua: the record's aggregate report addresses (kept for reports).
    @ivar recordDomain: where the record was found.
    @ivar reason: why, in words.
    """

    result: str
    fromDomain: str = ""
    policy: str = ""
    disposition: str = "none"
    pct: int = 100
    rua: tuple[str, ...] = ()
    recordDomain: str = ""
    reason: str = ""


class _Alignment(dmarc.DMARC):  # type: ignore[misc]
    """
    The library's evaluation with RFC 7489 alignment: strict means the
    same name, relaxed the same organisational domain.
    """

    def __init__(self, orgDomain: Callable[[str], str]) -> None:
        super().__init__()
        self._orgDomain = orgDomain

    def check_alignment(self, fd: str, ad: str, mode: Any, psl: Any = None) -> bool:
        fd, ad = fd.lower().rstrip("."), ad.lower().rstrip(".")
        if fd == ad:
            return True
        return bool(
            mode is dmarc.DMARCAlignment.RELAXED and self._orgDomain(fd) == self._orgDomain(ad)
        )


def _published(policy: Any) -> str:
    """
    @return: the policy of a parsed record that applies: C{sp} when the
        record is the organisational domain's and has one, else C{p}.
    """
    unspecified = dmarc.DMARCDisposition.UNSPECIFIED
    chosen = policy.sp if policy.org_domain and policy.sp is not unspecified else policy.p
    return str(chosen.value or "none")


def _passed(spf: SPFResult | None, dkim: Sequence[DKIMResult]) -> tuple[str, tuple[str, ...]]:
    """
    @return: the domain SPF passed for (or C{""}), and the domains of the
        DKIM signatures that passed: all DMARC needs of the checks.
    """
    spfPass = spf.domain if spf is not None and spf.result == "pass" and spf.domain else ""
    return spfPass, tuple(r.domain for r in dkim if r.result == "pass" and r.domain)


def loadPublicSuffixList() -> PublicSuffixList:
    """
    @return: the Public Suffix List shipped with C{publicsuffixlist}
        (reading it takes a fraction of a second: do it once, at start).
    """
    return PublicSuffixList()


def _fromDomain(message: bytes) -> str | DMARCResult:
    """
    @return: the one RFC 5322 From domain of C{message}, or the result
        when there is none to check (no From, several, no domain).
    """
    addresses = fromAddresses(message)
    if not addresses:
        why = "no From address" if addresses == [] else "From address unreadable"
        return DMARCResult("none", reason=why)
    domains = {a.rpartition("@")[2].lower().rstrip(".") for a in addresses}
    if len(addresses) > 1:
        return DMARCResult(
            "permerror",
            ",".join(sorted(domains)),
            reason="not exactly one From address (RFC 7489 section 6.6.1)",
        )
    fromDomain = domains.pop()
    if not fromDomain or "." not in fromDomain:
        return DMARCResult("none", fromDomain, reason="From has no domain")
    return fromDomain


def _pick(records: list[bytes]) -> str | None:
    """
    @return: the one DMARC record among the TXT records C{records}, or
        L{None} when there is none or more than one (RFC 7489 section
        6.6.3).
    """
    texts = [r.decode("utf-8", "replace") for r in records]
    found = [t for t in texts if t.replace(" ", "").startswith("v=DMARC1;")]
    found += [t for t in texts if t.strip() == "v=DMARC1"]
    return found[0] if len(found) == 1 else None


class DMARCEvaluator:
    """
    Finds a From domain's DMARC record and evaluates it.
    """

    def __init__(
        self,
        resolver: IDNSResolver,
        psl: PublicSuffixList | None = None,
        random: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param resolver: looks up the records.
        @param psl: the Public Suffix List (loaded when not given).
        @param random: a number in [0, 1) per message, for C{pct}.
        @param clock: seconds, for how long a decision is kept.
        """
        self._resolver = resolver
        self._psl = psl if psl is not None else loadPublicSuffixList()
        self._random = random
        self._dmarc = _Alignment(self.orgDomain)
        self._parse = functools.lru_cache(maxsize=PARSED_RECORDS)(self._dmarc.parse_record)
        self._decided: TTLCache[tuple[str, str, tuple[str, ...]], DMARCResult] = TTLCache(
            clock, DECISIONS_KEPT
        )

    def orgDomain(self, domain: str) -> str:
        """
        @return: the organisational domain of C{domain} (RFC 7489 section
            3.2): one label more than its public suffix; C{domain} itself
            when it is a public suffix.
        """
        domain = domain.lower().rstrip(".")
        return self._psl.privatesuffix(domain) or domain

    def evaluate(
        self, message: bytes, spf: SPFResult | None, dkim: Sequence[DKIMResult]
    ) -> Deferred[DMARCResult]:
        """
        @param message: the message as received (its From header counts).
        @param spf: the SPF result, or L{None} when SPF is not checked.
        @param dkim: the DKIM results.
        """
        fromDomain = _fromDomain(message)
        if isinstance(fromDomain, DMARCResult):
            return succeed(fromDomain)
        d = self._findRecord(fromDomain).addCallback(self._evaluate, fromDomain, spf, dkim)
        return d.addErrback(self._lookupFailed, fromDomain)

    def evaluateBlocking(
        self,
        message: bytes,
        spf: SPFResult | None,
        dkim: Sequence[DKIMResult],
        txt: Callable[[str], list[bytes]],
    ) -> DMARCResult:
        """
        L{evaluate}, blocking: on a worker thread only.

        @param txt: looks up TXT records, blocking (see
            L{mta.dns.blockingTXT}); raises L{DNSNameError} or
            L{DNSTemporaryError}.
        """
        fromDomain = _fromDomain(message)
        if isinstance(fromDomain, DMARCResult):
            return fromDomain
        spfPass, dkimPass = _passed(spf, dkim)
        key = (fromDomain, spfPass, dkimPass)
        kept = self._decided.get(key)
        if kept is not None:
            return self._dispose(kept.value, spf, dkim)
        asked: list[str] = []

        def recordingTXT(name: str) -> list[bytes]:
            asked.append(name)
            return txt(name)

        try:
            found: tuple[str, str] | None = None
            record = self._recordBlocking(fromDomain, recordingTXT)
            if record is not None:
                found = (fromDomain, record)
            else:
                org = self.orgDomain(fromDomain)
                if org != fromDomain:
                    record = self._recordBlocking(org, recordingTXT)
                    found = None if record is None else (org, record)
        except DNSTemporaryError as e:
            return DMARCResult("temperror", fromDomain, reason=str(e))
        decided = self._decide(found, fromDomain, spfPass, dkimPass)
        left = keptFor(self._resolver, [("TXT", (name,)) for name in asked])
        if left is not None:
            self._decided.put(key, left, decided)
        return self._dispose(decided, spf, dkim)

    def _recordBlocking(self, domain: str, txt: Callable[[str], list[bytes]]) -> str | None:
        try:
            return _pick(txt(f"_dmarc.{domain}"))
        except DNSNameError:
            return None

    def _findRecord(self, fromDomain: str) -> Deferred[tuple[str, str] | None]:
        """
        @return: C{(domain, record)} of the policy that applies, or L{None}.
        """
        org = self.orgDomain(fromDomain)

        def then(found: str | None) -> Deferred[tuple[str, str] | None] | tuple[str, str] | None:
            if found is not None:
                return (fromDomain, found)
            if org == fromDomain:
                return None
            return self._record(org).addCallback(lambda r: None if r is None else (org, r))

        return self._record(fromDomain).addCallback(then)

    def _record(self, domain: str) -> Deferred[str | None]:
        """
        @return: the one DMARC record at C{_dmarc.<domain>}, or L{None}
            when there is none or more than one (RFC 7489 section 6.6.3).
        """

        def missing(reason: Failure) -> None:
            reason.trap(DNSNameError)
            return None

        return self._resolver.lookupTXT(f"_dmarc.{domain}").addCallbacks(_pick, missing)

    def _evaluate(
        self,
        found: tuple[str, str] | None,
        fromDomain: str,
        spf: SPFResult | None,
        dkim: Sequence[DKIMResult],
    ) -> DMARCResult:
        return self._dispose(self._decide(found, fromDomain, *_passed(spf, dkim)), spf, dkim)

    def _decide(
        self,
        found: tuple[str, str] | None,
        fromDomain: str,
        spfPass: str,
        dkimPass: tuple[str, ...],
    ) -> DMARCResult:
        """
        What the record says of the identifiers that passed, the same for
        every message with these facts (no C{pct} draw yet).

        @param found: C{(domain, record)} of the policy, or L{None}.
        @param spfPass: the domain SPF passed for, or C{""}.
        @param dkimPass: the domains of the DKIM signatures that passed.
        @return: the result; a C{fail} still to be disposed of by
            L{_dispose}.
        """
        if found is None:
            return DMARCResult("none", fromDomain, reason="no DMARC record")
        recordDomain, record = found
        orgRecord = recordDomain if recordDomain != fromDomain else None
        try:
            policy = self._parse(record, fromDomain, orgRecord)
        except (dmarc.RecordSyntaxError, ValueError) as e:
            return DMARCResult("none", fromDomain, recordDomain=recordDomain, reason=f"{e}")
        identifiers: list[Any] = [
            dmarc.DKIMAuthResult(domain, dmarc.DKIMResult.PASS) for domain in dkimPass
        ]
        spfAuth = dmarc.SPFAuthResult(spfPass, dmarc.SPFResult.PASS) if spfPass else None
        outcome = self._dmarc.get_result(
            policy, auth_results=dmarc.AuthResults(spf=spfAuth, dkim=identifiers or None)
        )
        passed = outcome.result is dmarc.DMARCResult.PASS
        reason = ""
        if passed:
            reason = f"aligned {'DKIM' if outcome.dkim is dmarc.DMARCResult.PASS else 'SPF'} pass"
        return DMARCResult(
            "pass" if passed else "fail",
            fromDomain,
            policy=_published(policy),
            pct=max(0, min(100, policy.pct)),
            rua=tuple(policy.rua),
            recordDomain=recordDomain,
            reason=reason,
        )

    def _dispose(
        self, decided: DMARCResult, spf: SPFResult | None, dkim: Sequence[DKIMResult]
    ) -> DMARCResult:
        """
        A failing message's disposition: its policy when C{pct} samples it
        (a draw per message), the next milder one when not; C{temperror}
        when an underlying check failed for now.

        @param decided: what L{_decide} said.
        """
        if decided.result != "fail":
            return decided
        pct = decided.pct
        sampled = self._random() * 100 < pct
        disposition = decided.policy if sampled else _MILDER[decided.policy]
        temporary = (spf is not None and spf.result == "temperror") or any(
            r.result == "temperror" for r in dkim
        )
        if temporary:
            why = "no aligned pass, and a check failed for now"
            return replace(decided, result="temperror", disposition=disposition, reason=why)
        why = "no aligned SPF or DKIM pass"
        if not sampled:
            why += f" (not sampled by pct={pct})"
        return replace(decided, disposition=disposition, reason=why)

    def _lookupFailed(self, reason: Failure, fromDomain: str) -> DMARCResult:
        reason.trap(DNSTemporaryError)
        return DMARCResult("temperror", fromDomain, reason=str(reason.value))


__all__ = [
    "DECISIONS_KEPT",
    "PARSED_RECORDS",
    "DMARCEvaluator",
    "DMARCResult",
    "loadPublicSuffixList",
]
