# -*- test-case-name: tests.test_routing -*-
"""
Where each recipient goes: step "route" of the lifecycle.

L{route} is a pure function: a recipient in a local domain is L{Route.LOCAL},
anything else L{Route.RELAY}.  L{Router} is an L{IDeliveryTarget} that
splits a message's pending recipients by route and hands each group to its
target: L{mta.delivery.local.LocalDelivery} or
L{mta.delivery.relay.RelayDelivery}.  A router built without a relay
target (some tests) gives relay recipients a temporary failure, so they
wait in the queue rather than being lost or bounced.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import replace

from twisted.internet.defer import Deferred, DeferredList, succeed
from zope.interface import implementer

from mta.envelope import Address, Envelope, Recipient
from mta.errors import Reply
from mta.interfaces import IDeliveryTarget
from mta.message import MessageBody

S451_NO_RELAY = Reply(451, "4.3.2 Remote delivery is not configured here")


class Route(enum.Enum):
    """
    The two ways out of the queue.
    """

    LOCAL = "local"
    RELAY = "relay"


def route(address: Address, localDomains: Collection[str]) -> Route:
    """
    @return: how C{address} is delivered.
    """
    return Route.LOCAL if address.domain in localDomains else Route.RELAY


@implementer(IDeliveryTarget)
class Router:
    """
    An L{IDeliveryTarget} dispatching recipients to the local or relay
    target.
    """

    def __init__(
        self,
        localDomains: Collection[str],
        local: IDeliveryTarget,
        relay: IDeliveryTarget | None = None,
    ) -> None:
        self._domains = frozenset(localDomains)
        self._targets = {Route.LOCAL: local, Route.RELAY: relay}

    def deliver(self, envelope: Envelope, body: MessageBody) -> Deferred[dict[Recipient, Reply]]:
        """
        Deliver each pending recipient through its route's target.
        """
        groups: dict[Route, list[Recipient]] = {}
        for r in envelope.pending:
            groups.setdefault(route(r.address, self._domains), []).append(r)
        ds = [self._deliverGroup(kind, rs, envelope, body) for kind, rs in groups.items()]
        if len(ds) == 1:
            return ds[0]
        merged: Deferred[dict[Recipient, Reply]] = DeferredList(ds, consumeErrors=True).addCallback(
            _merge
        )
        return merged

    def _deliverGroup(
        self,
        kind: Route,
        recipients: list[Recipient],
        envelope: Envelope,
        body: MessageBody,
    ) -> Deferred[dict[Recipient, Reply]]:
        target = self._targets[kind]
        if target is None:
            return succeed({r: S451_NO_RELAY for r in recipients})
        if len(recipients) == len(envelope.pending):
            # The common case: one route for every pending recipient.
            return target.deliver(envelope, body)
        # Each target sees only its own recipients as pending.
        mine = set(recipients)
        part = replace(
            envelope,
            recipients=tuple(r for r in envelope.recipients if r.state != "pending" or r in mine),
        )
        return target.deliver(part, body)


def _merge(results: list[tuple[bool, dict[Recipient, Reply]]]) -> dict[Recipient, Reply]:
    merged: dict[Recipient, Reply] = {}
    for ok, value in results:
        if ok:
            merged.update(value)
    # A target that failed outright leaves its recipients for the next try.
    return merged
