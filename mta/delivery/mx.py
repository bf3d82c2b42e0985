# -*- test-case-name: tests.test_mx -*-
"""
Where mail for a domain goes: step "find the next hop" of the relay.

L{findHosts} turns a destination domain into the ordered list of hosts to
try, as RFC 5321 5.1 says: the MX records by preference, in random order
among equal preference; without MX records the domain itself (implicit
MX, its A/AAAA); a null MX (RFC 7505) means the domain takes no mail.
Hosts that name this server, and every host not preferred over it, are
dropped (a mail loop otherwise); each host's addresses are looked up
(AAAA and A, or one family when configured).  Every choice is written
down in L{HostPlan.notes}, so C{mta queue show} can say why a host was
or was not tried.

All lookups go through L{IDNSResolver} (L{mta.dns}); failures come out as
L{Reply}s: NXDOMAIN and null MX are permanent, SERVFAIL and time-outs
temporary.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.python.failure import Failure

from mta.dns import DNSNameError, DNSTemporaryError, MXRecord
from mta.errors import Reply
from mta.interfaces import IDNSResolver
from mta.protocol import parseIP

S556_NULL_MX = "5.1.10 Recipient domain {domain} does not accept mail (null MX)"
S550_NO_DOMAIN = "5.1.2 Recipient domain {domain} not found in DNS"
S451_DNS = "4.4.3 DNS lookup for {domain} failed; will try again"
S554_LOOP = "5.4.6 Mail for {domain} loops back to myself (MX {host})"
S451_NO_ADDRESS = "4.4.4 No address found for any mail host of {domain}"


class NoRoute(Exception):
    """
    No host can take mail for the domain; C{reply} says why and whether
    to try again later.
    """

    def __init__(self, reply: Reply, notes: list[str] | None = None) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.notes = notes or []


@dataclass(frozen=True)
class Host:
    """
    One host to try, with its addresses in the order to try them.

    @ivar name: the MX host name (or the domain itself for an implicit
        MX): the name TLS certificates are checked against.
    @ivar preference: its MX preference (0 for an implicit MX).
    """

    name: str
    preference: int
    addresses: tuple[str, ...]


@dataclass
class HostPlan:
    """
    The hosts for one domain, in order, and how they were chosen.
    """

    domain: str
    hosts: list[Host] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def orderMX(records: list[MXRecord], shuffle: Callable[[list[MXRecord]], None]) -> list[MXRecord]:
    """
    @return: C{records} by preference, each group of equal preference in
        the order C{shuffle} leaves it (random in production).
    """
    groups: dict[int, list[MXRecord]] = {}
    for r in records:
        groups.setdefault(r.preference, []).append(r)
    ordered: list[MXRecord] = []
    for preference in sorted(groups):
        group = sorted(groups[preference], key=lambda r: r.exchange)
        shuffle(group)
        ordered.extend(group)
    return ordered


class MXFinder:
    """
    Finds the hosts for a domain through an L{IDNSResolver}.
    """

    def __init__(
        self,
        resolver: IDNSResolver,
        myNames: Collection[str],
        family: str = "any",
        shuffle: Callable[[list[MXRecord]], None] = random.shuffle,
    ) -> None:
        """
        @param myNames: host names of this server (its C{hostname}): an MX
            naming one of them is this server.
        @param family: C{"any"}, C{"ipv4"} or C{"ipv6"}: the addresses to try.
        @param shuffle: orders hosts of equal preference (tests pass a
            deterministic one).
        """
        self._resolver = resolver
        self._myNames = frozenset(n.lower().rstrip(".") for n in myNames)
        self._family = family
        self._shuffle = shuffle

    def findHosts(self, domain: str) -> Deferred[HostPlan]:
        """
        @param domain: the destination domain, ASCII (A-labels).
        @return: a Deferred firing with the plan, or failing with
            L{NoRoute}.
        """
        plan = HostPlan(domain)
        d = self._resolver.lookupMX(domain)
        d.addErrback(self._lookupFailed, domain)
        return d.addCallback(self._gotMX, plan)

    def hostPlan(self, name: str) -> Deferred[HostPlan]:
        """
        The plan for one named host (a smarthost): its addresses, or the
        address it is.

        @return: a Deferred firing with the plan, or failing with
            L{NoRoute}.
        """
        literal = name.strip("[]")
        if parseIP(literal) is not None:
            return succeed(HostPlan(name, [Host(literal, 0, (literal,))], [f"host {literal}"]))
        plan = HostPlan(name, [], [f"host {name}"])
        return self._addresses([MXRecord(0, name)], plan)

    def _lookupFailed(self, failure: Failure, domain: str) -> list[MXRecord]:
        if failure.check(DNSNameError):
            raise NoRoute(Reply(550, S550_NO_DOMAIN.format(domain=domain)), [str(failure.value)])
        if failure.check(DNSTemporaryError):
            raise NoRoute(Reply(451, S451_DNS.format(domain=domain)), [str(failure.value)])
        failure.raiseException()
        raise AssertionError("unreachable")

    def _gotMX(self, records: list[MXRecord], plan: HostPlan) -> Deferred[HostPlan] | HostPlan:
        domain = plan.domain
        if any(r.exchange in ("", ".") for r in records):
            plan.notes.append("null MX (RFC 7505): the domain takes no mail")
            raise NoRoute(Reply(556, S556_NULL_MX.format(domain=domain)), plan.notes)
        if not records:
            plan.notes.append(f"no MX records: implicit MX, the addresses of {domain}")
            candidates = [MXRecord(0, domain)]
        else:
            candidates = self._withoutSelf(orderMX(records, self._shuffle), plan)
        return self._addresses(candidates, plan)

    def _withoutSelf(self, ordered: list[MXRecord], plan: HostPlan) -> list[MXRecord]:
        """
        RFC 5321 5.1: drop this server's own MX and every one not preferred
        over it.
        """
        mine = [r.preference for r in ordered if r.exchange in self._myNames]
        if not mine:
            plan.notes.append(
                "MX by preference: " + ", ".join(f"{r.exchange} ({r.preference})" for r in ordered)
            )
            return ordered
        cutoff = min(mine)
        kept = [r for r in ordered if r.preference < cutoff]
        me = next(
            r.exchange for r in ordered if r.preference == cutoff and r.exchange in self._myNames
        )
        if not kept:
            raise NoRoute(Reply(554, S554_LOOP.format(domain=plan.domain, host=me)), plan.notes)
        plan.notes.append(
            f"MX {me} ({cutoff}) is this server: only hosts preferred over it are tried: "
            + ", ".join(f"{r.exchange} ({r.preference})" for r in kept)
        )
        return kept

    def _addresses(self, candidates: list[MXRecord], plan: HostPlan) -> Deferred[HostPlan]:
        lookups = [self._resolver.lookupAddresses(r.exchange, self._family) for r in candidates]
        d: Deferred[list[tuple[bool, Any]]] = DeferredList(lookups, consumeErrors=True)
        return d.addCallback(self._gotAddresses, candidates, plan)

    def _gotAddresses(
        self,
        results: list[tuple[bool, Any]],
        candidates: list[MXRecord],
        plan: HostPlan,
    ) -> HostPlan:
        temporary = False
        for record, (ok, value) in zip(candidates, results, strict=True):
            if ok and isinstance(value, list) and value:
                plan.hosts.append(Host(record.exchange, record.preference, tuple(value)))
                continue
            if ok:
                why = f"no {self._familyName()} address"
            elif isinstance(value, Failure) and value.check(DNSNameError):
                why = "name not found"
            else:
                temporary = True
                why = "address lookup failed"
            plan.notes.append(f"{record.exchange}: {why}, skipped")
        if not plan.hosts:
            domain = plan.domain
            if len(candidates) == 1 and candidates[0].exchange == domain and not temporary:
                # An implicit MX with no address: the domain has no mail host.
                raise NoRoute(Reply(550, S550_NO_DOMAIN.format(domain=domain)), plan.notes)
            raise NoRoute(Reply(451, S451_NO_ADDRESS.format(domain=domain)), plan.notes)
        return plan

    def _familyName(self) -> str:
        return {"ipv4": "IPv4", "ipv6": "IPv6"}.get(self._family, "IPv4 or IPv6")
