# -*- test-case-name: tests.test_mailauth -*-
"""
Mail authentication of inbound mail, as one L{IPolicyCheck}: SPF, DKIM and
DMARC at end of data, one C{Authentication-Results} header (RFC 8601) with
our host name as authserv-id, and what C{[checks]} says to enforce.

Only mail arriving on the MX listener from clients that neither
authenticated nor sit in a trusted network is checked.  SPF
(L{mta.policy.spf}) and DKIM (L{mta.policy.dkimverify}) run side by side
on the blocking runner, then DMARC (L{mta.policy.dmarc}) on their results.
Incoming C{Authentication-Results} fields that claim our authserv-id are
removed (RFC 8601 section 5) through L{Verdict.stripHeaders}.

Enforcement, per mechanism set to C{"enforce"}, first match wins:

  - DMARC fails with disposition C{reject}: C{550 5.7.1}; a temporary
    error where the disposition would be C{reject}: C{451 4.7.1};
    several From addresses: C{550 5.7.1};
  - DMARC disposition C{quarantine} (fail or temporary error): accepted,
    filed into the Junk folder;
  - SPF fail (C{-all}) unless DMARC passed: C{550 5.7.23}; an SPF
    temperror unless DMARC passed: C{451 4.7.24};
  - DKIM: signatures present, none passes and one fails: C{550 5.7.20};
    none passes and one had a temporary error: C{451 4.7.20}.

C{"check"} only writes the header; C{"off"} skips the mechanism (DMARC
then also lacks its result).  A check that breaks (a bug, a library
exception) counts as a temporary error, never as a pass.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from mta.config import ChecksConfig
from mta.envelope import Envelope
from mta.errors import Reply
from mta.interfaces import IBlockingRunner, IDNSResolver
from mta.policy.base import ACCEPT, PolicyCheck, Session, Verdict
from mta.policy.dkimverify import DKIMResult, DKIMVerifier
from mta.policy.dmarc import DMARCEvaluator, DMARCResult, loadPublicSuffixList
from mta.policy.spf import SPFChecker, SPFResult

_log = Logger(namespace="mta.mailauth")

#: The header this check writes and strips.
HEADER = "Authentication-Results"


def _comment(text: str) -> str:
    """
    @return: C{text} made safe inside an RFC 5322 comment: no parentheses,
        backslashes or control characters, and short.
    """
    cleaned = "".join(" " if ord(c) < 32 or c in "()\\" else c for c in text.replace("\r\n", " "))
    cleaned = " ".join(cleaned.split())
    return cleaned[:200]


def _value(text: str) -> str:
    """
    @return: C{text} as an RFC 8601 property value: as it is when it is a
        plain token or address, else a quoted string.
    """
    if text and all(c.isalnum() or c in "._-+@=/!#$%&'*^`{|}~" for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def spfClause(spf: SPFResult) -> str:
    """
    @return: the C{spf=} result of an Authentication-Results header.
    """
    prop = "smtp.mailfrom" if spf.identity == "mailfrom" else "smtp.helo"
    comment = f" ({_comment(spf.reason)})" if spf.reason else ""
    return f"spf={spf.result}{comment} {prop}={_value(spf.mailfrom or spf.domain)}"


def dkimClause(dkim: DKIMResult) -> str:
    """
    @return: one C{dkim=} result of an Authentication-Results header.
    """
    comment = f" ({_comment(dkim.reason)})" if dkim.reason else ""
    props = []
    if dkim.domain:
        props.append(f"header.d={_value(dkim.domain)}")
    if dkim.selector:
        props.append(f"header.s={_value(dkim.selector)}")
    if dkim.algorithm:
        props.append(f"header.a={_value(dkim.algorithm)}")
    if dkim.b:
        props.append(f"header.b={_value(dkim.b)}")
    return " ".join([f"dkim={dkim.result}{comment}", *props])


def dmarcClause(result: DMARCResult) -> str:
    """
    @return: the C{dmarc=} result of an Authentication-Results header; the
        comment carries the policy, the disposition, pct, the rua
        addresses and the reason.
    """
    words = []
    if result.policy:
        words.append(f"p={result.policy}")
        words.append(f"dis={result.disposition}")
        if result.pct != 100:
            words.append(f"pct={result.pct}")
        if result.rua:
            words.append(f"rua={','.join(result.rua)}")
    text = " ".join(words)
    if result.reason:
        text = f"{text}; {result.reason}" if text else result.reason
    comment = f" ({_comment(text)})" if text else ""
    prop = f" header.from={_value(result.fromDomain)}" if result.fromDomain else ""
    return f"dmarc={result.result}{comment}{prop}"


def authenticationResults(
    authservId: str,
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    dmarc: DMARCResult | None,
) -> str:
    """
    @return: the whole C{Authentication-Results} header line (folded, no
        line end) for the results of the mechanisms that ran.
    """
    clauses = []
    if spf is not None:
        clauses.append(spfClause(spf))
    clauses.extend(dkimClause(r) for r in dkim)
    if dmarc is not None:
        clauses.append(dmarcClause(dmarc))
    if not clauses:
        clauses.append("none")
    return f"{HEADER}: {authservId};\r\n\t" + ";\r\n\t".join(clauses)


def enforce(
    config: ChecksConfig,
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    dmarc: DMARCResult | None,
) -> tuple[Reply | None, bool]:
    """
    Decide what C{[checks]} makes of the results (see the module
    docstring).

    @return: the refusal or L{None}, and whether to file into Junk.
    """
    dmarcPassed = dmarc is not None and dmarc.result == "pass"
    if config.dmarc == "enforce" and dmarc is not None:
        where = dmarc.fromDomain
        if dmarc.result == "fail" and dmarc.disposition == "reject":
            why = f"{where} DMARC policy is reject: {dmarc.reason}"
            return Reply(550, f"5.7.1 Message rejected: {why}"), False
        if dmarc.result == "temperror" and dmarc.disposition == "reject":
            why = f"{where} DMARC policy could not be checked: {dmarc.reason}"
            return Reply(451, f"4.7.1 {why}; try again later"), False
        if dmarc.result == "permerror":
            return Reply(550, f"5.7.1 Message rejected: {dmarc.reason}"), False
        if dmarc.result in ("fail", "temperror") and dmarc.disposition == "quarantine":
            return None, True
    if config.spf == "enforce" and spf is not None and not dmarcPassed:
        if spf.result == "fail":
            why = f"SPF of {spf.domain} does not allow this client"
            return Reply(550, f"5.7.23 {why}: {_comment(spf.reason)}"), False
        if spf.result == "temperror":
            return Reply(451, f"4.7.24 SPF of {spf.domain} could not be checked"), False
    if config.dkim == "enforce" and not any(r.result == "pass" for r in dkim):
        if any(r.result == "fail" for r in dkim):
            return Reply(550, "5.7.20 No passing DKIM signature found"), False
        if any(r.result == "temperror" for r in dkim):
            return Reply(451, "4.7.20 DKIM signature could not be checked"), False
    return None, False


@dataclass(frozen=True)
class InboundChecks:
    """
    What L{mta.policy.chain.smtpPolicy} needs to build L{MailAuthentication}.

    @ivar hostname: our host name, the authserv-id.
    @ivar config: C{[checks]}.
    @ivar resolver: the server's one resolver.
    @ivar reactor: answers the worker threads' lookups.
    @ivar runner: runs pyspf and dkimpy (better a pool of its own than the
        one of fsyncs: a check may wait seconds for DNS).
    @ivar psl: the Public Suffix List, or L{None} to load it.
    @ivar random: for DMARC's pct.
    """

    hostname: str
    config: ChecksConfig
    resolver: IDNSResolver
    reactor: IReactorFromThreads
    runner: IBlockingRunner
    psl: Any = None
    random: Callable[[], float] = random.random

    def build(self, isTrusted: Callable[[str], bool]) -> MailAuthentication:
        """
        @param isTrusted: whether a client address is in a trusted network.
        @return: the check.
        """
        return MailAuthentication(
            hostname=self.hostname,
            config=self.config,
            resolver=self.resolver,
            reactor=self.reactor,
            runner=self.runner,
            isTrusted=isTrusted,
            psl=self.psl,
            random=self.random,
        )


class MailAuthentication(PolicyCheck):
    """
    SPF, DKIM and DMARC on inbound mail, and the Authentication-Results
    header.
    """

    def __init__(
        self,
        *,
        hostname: str,
        config: ChecksConfig,
        resolver: IDNSResolver,
        reactor: IReactorFromThreads,
        runner: IBlockingRunner,
        isTrusted: Callable[[str], bool],
        psl: Any = None,
        random: Callable[[], float] = random.random,
    ) -> None:
        """
        @param hostname: our host name: the authserv-id.
        @param config: C{[checks]}.
        @param resolver: every lookup goes here.
        @param reactor: answers the worker threads' lookups.
        @param runner: runs pyspf and dkimpy.
        @param isTrusted: whether a client address is in a trusted network.
        @param psl: the Public Suffix List (loaded when not given).
        @param random: for DMARC's pct.
        """
        self._hostname = hostname
        self._config = config
        self._isTrusted = isTrusted
        self._spf = SPFChecker(resolver, reactor, runner, hostname)
        self._dkim = DKIMVerifier(resolver, reactor, runner)
        if config.dmarc != "off":
            psl = psl if psl is not None else loadPublicSuffixList()
        self._dmarc = DMARCEvaluator(resolver, psl, random) if config.dmarc != "off" else None

    def applies(self, session: Session) -> bool:
        """
        @return: whether mail of C{session} is checked: on the MX listener,
            unauthenticated, from outside the trusted networks.
        """
        return (
            session.listener == "smtp"
            and not session.authUser
            and not self._isTrusted(session.peer)
        )

    def checkMessage(
        self, session: Session, envelope: Envelope, data: bytes
    ) -> Verdict | Deferred[Verdict]:
        """
        Check the message; see the module docstring.
        """
        if not self.applies(session):
            return ACCEPT
        c = self._config
        if c.spf == "off" and c.dkim == "off" and c.dmarc == "off":
            return ACCEPT
        spf: Deferred[SPFResult | None] = succeed(None)
        if c.spf != "off":
            checked = self._spf.check(envelope.clientAddress, envelope.sender, envelope.heloName)
            error = SPFResult("temperror", "mailfrom", envelope.sender.domain, "", "check error")
            spf = cast("Deferred[SPFResult | None]", checked.addErrback(self._broken, error))
        dkim: Deferred[list[DKIMResult]] = succeed([])
        if c.dkim != "off":
            dkim = self._dkim.verify(data)
            dkim.addErrback(self._broken, [DKIMResult("temperror", reason="verifier error")])
        both = gatherResults([cast(Deferred[Any], spf), cast(Deferred[Any], dkim)])
        return both.addCallback(self._evaluate, envelope, data)

    def _broken(self, reason: Failure, instead: Any) -> Any:
        _log.failure("mailauth: a check failed; counted as temperror", reason)
        return instead

    def _evaluate(
        self, results: list[Any], envelope: Envelope, data: bytes
    ) -> Deferred[Verdict] | Verdict:
        spf = cast("SPFResult | None", results[0])
        dkim = cast(list[DKIMResult], results[1])
        shownDKIM = [] if self._config.dkim == "off" else dkim
        if self._dmarc is None:
            return self._verdict(spf, shownDKIM, None, envelope)
        d = self._dmarc.evaluate(data, spf, [r for r in dkim if r.result != "none"])

        def failed(reason: Failure) -> DMARCResult:
            self._broken(reason, None)
            return DMARCResult("temperror", reason="evaluation error")

        return d.addErrback(failed).addCallback(
            lambda dmarc: self._verdict(spf, shownDKIM, dmarc, envelope)
        )

    def _verdict(
        self,
        spf: SPFResult | None,
        dkim: Sequence[DKIMResult],
        dmarc: DMARCResult | None,
        envelope: Envelope,
    ) -> Verdict:
        header = authenticationResults(self._hostname, spf, dkim, dmarc)
        refusal, junk = enforce(self._config, spf, dkim, dmarc)
        _log.info(
            "mailauth: id={id} client={client} spf={spf} dkim={dkim} dmarc={dmarc}"
            " from={fromDomain} policy={policy} disposition={disposition} rua={rua}"
            " action={action}",
            id=envelope.queueId,
            client=envelope.clientAddress,
            spf=spf.result if spf else "off",
            dkim=",".join(f"{r.result}:{r.domain}" for r in dkim) or "off",
            dmarc=dmarc.result if dmarc else "off",
            fromDomain=dmarc.fromDomain if dmarc else "",
            policy=dmarc.policy if dmarc else "",
            disposition=dmarc.disposition if dmarc else "",
            rua=",".join(dmarc.rua) if dmarc else "",
            action=f"{refusal.code}" if refusal else ("junk" if junk else "accept"),
        )
        if refusal is not None:
            return Verdict(refusal)
        return Verdict(None, (header,), junk=junk, stripHeaders=((HEADER, self._hostname),))


__all__ = [
    "HEADER",
    "InboundChecks",
    "MailAuthentication",
    "authenticationResults",
    "dkimClause",
    "dmarcClause",
    "enforce",
    "spfClause",
]
