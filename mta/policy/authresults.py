# -*- test-case-name: tests.test_mailauth -*-
"""
Mail authentication of inbound mail, as one L{IPolicyCheck}: SPF, DKIM and
DMARC at end of data, one C{Authentication-Results} header (RFC 8601) with
our host name as authserv-id, and what C{[checks]} says to enforce.

Only mail arriving on the MX listener from clients that neither
authenticated nor sit in a trusted network is checked.  The whole check
is one job: SPF (L{mta.policy.spf}), DKIM (L{mta.policy.dkimverify}),
DMARC (L{mta.policy.dmarc}) on their results, the header text and the
verdict.  It runs first on a draining runner (one thread that takes every
waiting message at once; see L{mta.threads.BlockingRunner}) with every
DNS lookup answered from the resolver's cache alone
(L{mta.dns.cachedLookup}): such a check never waits, so it never holds up
the others drained with it.  Should an answer not be cached, that result
is dropped and the check runs again on the waiting runner, a pool whose
lookups wait for the resolver (L{mta.dns.blockingLookup}) and whose
answers are then cached for the next message.  Incoming
C{Authentication-Results} fields that claim our authserv-id are removed
(RFC 8601 section 5) through L{Verdict.stripHeaders}, asked for only
when the message has such a field.

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
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from mta.config import ChecksConfig
from mta.dns import NotCached
from mta.envelope import Address, Envelope
from mta.errors import Reply
from mta.interfaces import IBlockingRunner, IDNSResolver
from mta.policy.base import ACCEPT, PolicyCheck, Session, Verdict
from mta.policy.dkimverify import DKIMResult, PublicKeys, verifyMessage
from mta.policy.dmarc import DMARCEvaluator, DMARCResult, loadPublicSuffixList
from mta.policy.spf import BlockingLookups, SPFResult, SPFResults

_log = Logger(namespace="mta.mailauth")

#: The header this check writes and strips.
HEADER = "Authentication-Results"

#: A field of that name at the start of a header line.
_HEADER_FIELD = re.compile(rb"(?im)^authentication-results[ \t]*:")

#: What cannot stand in a comment: control characters (line ends
#: included), parentheses and backslashes.
_NOT_IN_COMMENT = re.compile(r"[\x00-\x1f()\\]")

#: A property value that needs no quotes: letters and digits (C{\w}, as
#: C{str.isalnum}, and C{_}) and the other atext and dot characters.
_PLAIN_VALUE = re.compile(r"[\w.\-+@=/!#$%&'*^`{|}~]+")


def _hasField(data: bytes) -> bool:
    """
    @return: whether the header of C{data} has an Authentication-Results
        field (which L{stripHeaderFields} may then have to remove).
    """
    end = data.find(b"\r\n\r\n")
    return _HEADER_FIELD.search(data, 0, len(data) if end < 0 else end + 2) is not None


def _comment(text: str) -> str:
    """
    @return: C{text} made safe inside an RFC 5322 comment: no parentheses,
        backslashes or control characters, and short.
    """
    cleaned = " ".join(_NOT_IN_COMMENT.sub(" ", text).split())
    return cleaned[:200]


def _value(text: str) -> str:
    """
    @return: C{text} as an RFC 8601 property value: as it is when it is a
        plain token or address, else a quoted string.
    """
    if _PLAIN_VALUE.fullmatch(text):
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
    @ivar runner: runs pyspf and dkimpy on messages whose DNS answers
        are all cached (a draining runner: such a check never waits).
    @ivar psl: the Public Suffix List, or L{None} to load it.
    @ivar random: for DMARC's pct.
    @ivar waitingRunner: runs the checks that must wait for DNS (better a
        pool of its own than the one of fsyncs: a lookup may take
        seconds); L{None} for C{runner}.
    """

    hostname: str
    config: ChecksConfig
    resolver: IDNSResolver
    reactor: IReactorFromThreads
    runner: IBlockingRunner
    psl: Any = None
    random: Callable[[], float] = random.random
    waitingRunner: IBlockingRunner | None = None

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
            waitingRunner=self.waitingRunner,
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
        waitingRunner: IBlockingRunner | None = None,
    ) -> None:
        """
        @param hostname: our host name: the authserv-id.
        @param config: C{[checks]}.
        @param resolver: every lookup goes here.
        @param reactor: answers the worker threads' lookups.
        @param runner: runs pyspf and dkimpy first, with DNS answered from
            the cache alone (see the module docstring).
        @param isTrusted: whether a client address is in a trusted network.
        @param psl: the Public Suffix List (loaded when not given).
        @param random: for DMARC's pct.
        @param waitingRunner: runs the checks that must wait for DNS;
            L{None} for C{runner}.
        """
        self._hostname = hostname
        self._config = config
        self._isTrusted = isTrusted
        self._resolver = resolver
        self._reactor = reactor
        self._runner = runner
        self._waitingRunner = runner if waitingRunner is None else waitingRunner
        self._lookups = BlockingLookups(resolver, reactor)
        self._spf = SPFResults()
        self._keys = PublicKeys(resolver)
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
        facts = (envelope.clientAddress, envelope.sender, envelope.heloName, data)
        d = self._runner.run(self._checkCached, *facts)
        d.addCallback(self._waitIfMissed, facts)
        return d.addCallbacks(self._checked, self._jobFailed)

    def _checkCached(self, ip: str, sender: Address, helo: str, data: bytes) -> _Checked | None:
        """
        L{_check} with every lookup answered from the resolver's cache
        alone, never waiting.

        @return: the check, or L{None} when an answer was not cached.
        """
        lookups = self._lookups.cachedOnly()
        try:
            checked = self._check(ip, sender, helo, data, lookups)
        except NotCached:
            return None
        return None if lookups.missed else checked

    def _waitIfMissed(
        self, checked: _Checked | None, facts: tuple[str, Address, str, bytes]
    ) -> _Checked | Deferred[_Checked]:
        """
        The check of L{_checkCached}, or when it missed an answer, the
        check again on the runner where lookups may wait.
        """
        if checked is not None:
            return checked
        return self._waitingRunner.run(self._check, *facts, self._lookups)

    def _check(
        self, ip: str, sender: Address, helo: str, data: bytes, lookups: BlockingLookups
    ) -> _Checked:
        """
        The whole check, blocking: on a worker thread only.  A mechanism
        that breaks counts as a temporary error; its failure goes back to
        be logged on the reactor thread.

        @param lookups: answer every lookup (or raise L{NotCached}).
        """
        c = self._config
        broken: list[Failure] = []
        spf: SPFResult | None = None
        if c.spf != "off":
            try:
                spf = self._spf.check(lookups, ip, sender, helo, self._hostname)
            except NotCached:
                raise
            except Exception:
                broken.append(Failure())
                spf = SPFResult("temperror", "mailfrom", sender.domain, "", "check error")
        dkim: list[DKIMResult] = []
        if c.dkim != "off":
            try:
                dkim = verifyMessage(data, lookups.txt, self._keys)
            except NotCached:
                raise
            except Exception:
                broken.append(Failure())
                dkim = [DKIMResult("temperror", reason="verifier error")]
        dmarc: DMARCResult | None = None
        if self._dmarc is not None:
            signed = [r for r in dkim if r.result != "none"]
            try:
                dmarc = self._dmarc.evaluateBlocking(data, spf, signed, lookups.txt)
            except NotCached:
                raise
            except Exception:
                broken.append(Failure())
                dmarc = DMARCResult("temperror", reason="evaluation error")
        refusal, junk = enforce(c, spf, dkim, dmarc)
        action = f"{refusal.code}" if refusal else ("junk" if junk else "accept")
        line = (
            f"spf={spf.result if spf else 'off'}"
            f" dkim={','.join(f'{r.result}:{r.domain}' for r in dkim) or 'off'}"
            f" dmarc={dmarc.result if dmarc else 'off'}"
            f" from={dmarc.fromDomain if dmarc else ''}"
            f" policy={dmarc.policy if dmarc else ''}"
            f" disposition={dmarc.disposition if dmarc else ''}"
            f" rua={','.join(dmarc.rua) if dmarc else ''} action={action}"
        )
        if refusal is not None:
            return _Checked(Verdict(refusal, logNote=line), broken)
        header = authenticationResults(self._hostname, spf, dkim, dmarc)
        strip = ((HEADER, self._hostname),) if _hasField(data) else ()
        verdict = Verdict(None, (header,), junk=junk, stripHeaders=strip, logNote=line)
        return _Checked(verdict, broken)

    def _checked(self, checked: _Checked) -> Verdict:
        for reason in checked.broken:
            _log.failure("mailauth: a check failed; counted as temperror", reason)
        return checked.verdict

    def _jobFailed(self, reason: Failure) -> Verdict:
        """
        The job itself broke (not one mechanism; a bug): never a pass.
        With a mechanism enforced, C{451}; checked only, accepted
        without a header.
        """
        _log.failure("mailauth: the check failed; counted as temperror", reason)
        c = self._config
        if "enforce" in (c.spf, c.dkim, c.dmarc):
            return Verdict(
                Reply(451, "4.7.1 Message could not be checked; try again later"),
                logNote="mailauth=temperror",
            )
        return Verdict(logNote="mailauth=temperror")


@dataclass(frozen=True)
class _Checked:
    """
    What the checking job hands back to the reactor thread.

    @ivar verdict: the check's answer, its results in its C{logNote} for
        the transaction's log line.
    @ivar broken: the failures of mechanisms that broke, to log.
    """

    verdict: Verdict
    broken: list[Failure]


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
