"""
Tests for L{mta.routing} and L{mta.delivery.local}: where each recipient
goes, and local delivery into a store.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from mta.delivery.local import LocalDelivery
from mta.directory.memory import MemoryDirectory
from mta.envelope import Address, Envelope, Recipient
from mta.errors import Reply
from mta.interfaces import IDeliveryTarget
from mta.message import MessageBody
from mta.routing import S451_NO_RELAY, Route, Router, route
from mta.store.memory import MemoryStore


@implementer(IDeliveryTarget)
class Recording:
    """
    A target that answers 250 and records whom it was asked for.
    """

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def deliver(self, envelope: Envelope, body: MessageBody) -> Deferred[dict[Recipient, Reply]]:
        self.asked.append([str(r.address) for r in envelope.pending])
        return succeed({r: Reply(250, "2.0.0 ok") for r in envelope.pending})


def recipient(text: str) -> Recipient:
    """
    @return: a pending recipient for C{text}.
    """
    address = Address.parse(text)
    return Recipient(address, address)


BODY = MessageBody("", 0, 2, b"x\n")


class RouterTests(SynchronousTestCase):
    """
    L{route} and L{Router}.
    """

    def test_route(self) -> None:
        """Local domains are LOCAL, everything else RELAY."""
        self.assertEqual(route(Address("a", "example.com"), {"example.com"}), Route.LOCAL)
        self.assertEqual(route(Address("a", "far.test"), {"example.com"}), Route.RELAY)

    def test_splitsByRoute(self) -> None:
        """Each target sees only its own pending recipients; replies are merged."""
        local, relay = Recording(), Recording()
        router = Router(["example.com"], local, relay)
        envelope = Envelope(
            "Q1",
            Address("s", "x.test"),
            (recipient("a@example.com"), recipient("b@far.test"), recipient("c@example.com")),
            0.0,
        )
        replies = self.successResultOf(router.deliver(envelope, BODY))
        self.assertEqual(local.asked, [["a@example.com", "c@example.com"]])
        self.assertEqual(relay.asked, [["b@far.test"]])
        self.assertEqual(len(replies), 3)

    def test_noRelayTarget(self) -> None:
        """Without a relay target, relay recipients wait with 451."""
        router = Router(["example.com"], Recording())
        envelope = Envelope("Q1", Address("s", "x.test"), (recipient("b@far.test"),), 0.0)
        [(_, reply)] = self.successResultOf(router.deliver(envelope, BODY)).items()
        self.assertEqual(reply, S451_NO_RELAY)


class LocalDeliveryTests(SynchronousTestCase):
    """
    L{LocalDelivery}.
    """

    def test_deliversWithTraceHeaders(self) -> None:
        """A user's copy starts with Return-Path and Delivered-To; an unknown one gets 550."""
        store = MemoryStore()
        directory = MemoryDirectory(["example.com"], users={"a@example.com": "x"})
        target = LocalDelivery(directory, store)
        envelope = Envelope(
            "Q1",
            Address("s", "x.test"),
            (recipient("a@example.com"), recipient("z@example.com")),
            0.0,
        )
        replies = self.successResultOf(target.deliver(envelope, BODY))
        codes = sorted(reply.code for reply in replies.values())
        self.assertEqual(codes, [250, 550])
        [stored] = store.messages("a@example.com")
        self.assertEqual(stored, b"Return-Path: <s@x.test>\r\nDelivered-To: a@example.com\r\nx\n")

    def test_junk(self) -> None:
        """A message a check marked as junk goes to the Junk folder."""
        store = MemoryStore()
        directory = MemoryDirectory(["example.com"], users={"a@example.com": "x"})
        envelope = Envelope(
            "Q1", Address("s", "x.test"), (recipient("a@example.com"),), 0.0, extra={"junk": True}
        )
        self.successResultOf(LocalDelivery(directory, store).deliver(envelope, BODY))
        self.assertEqual(store.messages("a@example.com"), [])
        self.assertEqual(len(store.messages("a@example.com", "Junk")), 1)
