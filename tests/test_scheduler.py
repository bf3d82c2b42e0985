"""
Tests for L{mta.queue.scheduler}: delivery now, retries, expiry, bounces.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mta.envelope import NULL_ADDRESS, Envelope, Recipient
from mta.errors import Reply
from mta.interfaces import IDeliveryTarget, IMessageSink
from mta.queue.scheduler import QueueManager
from mta.queue.spool import Spool
from mta.threads import SynchronousRunner
from tests.test_spool import makeEnvelope


@implementer(IDeliveryTarget)
class ScriptedTarget:
    """
    Answers each attempt with the next reply from a script.
    """

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.calls: list[str] = []

    def deliver(self, envelope: Envelope, messagePath: str) -> Deferred[dict[Recipient, Reply]]:
        self.calls.append(envelope.queueId)
        reply = self.replies.pop(0)
        return succeed({r: reply for r in envelope.pending})


OK = Reply(250, "2.0.0 ok")
TEMP = Reply(451, "4.3.0 try later")
PERM = Reply(550, "5.1.1 no such user")


class QueueManagerTests(SynchronousTestCase):
    """
    L{QueueManager}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.path = Path(self.mktemp())
        self.spool = Spool(self.path, SynchronousRunner())
        self.bounces: list[tuple[Envelope, list[tuple[Recipient, Reply]]]] = []

    def manager(self, target: IDeliveryTarget) -> QueueManager:
        qm = QueueManager(self.spool, target, self.clock, [60, 300], maxLifetime=3600)

        def bounce(
            envelope: Envelope, failed: list[tuple[Recipient, Reply]], path: str
        ) -> Deferred[object]:
            self.bounces.append((envelope, list(failed)))
            return succeed(None)

        qm.bouncer = bounce
        qm.startService()
        self.addCleanup(qm.stopService)
        return qm

    def test_interface(self) -> None:
        """QueueManager provides IMessageSink."""
        self.assertTrue(verifyObject(IMessageSink, self.manager(ScriptedTarget())))

    def test_deliveredAtOnceAndRemoved(self) -> None:
        """An enqueued message is tried at once and removed after success."""
        target = ScriptedTarget(OK)
        qm = self.manager(target)
        self.assertEqual(self.successResultOf(qm.enqueue(makeEnvelope(), b"x")), "Q1")
        self.clock.advance(0)
        self.assertEqual(target.calls, ["Q1"])
        self.assertEqual(list(self.path.iterdir()), [])
        self.assertEqual(qm.items, {})

    def test_retrySchedule(self) -> None:
        """Temporary failures retry after each interval, the last repeating."""
        target = ScriptedTarget(TEMP, TEMP, TEMP, OK)
        qm = self.manager(target)
        qm.enqueue(makeEnvelope(), b"x")
        self.clock.advance(0)
        self.assertEqual(len(target.calls), 1)
        self.assertEqual(qm.items["Q1"].recipients[0].lastError, str(TEMP))
        self.clock.advance(59)
        self.assertEqual(len(target.calls), 1)
        self.clock.advance(1)
        self.assertEqual(len(target.calls), 2)
        self.clock.advance(300)
        self.assertEqual(len(target.calls), 3)
        self.clock.advance(300)
        self.assertEqual(len(target.calls), 4)
        self.assertEqual(qm.items, {})

    def test_permanentFailureBounces(self) -> None:
        """A permanent failure bounces to the sender and ends the message."""
        qm = self.manager(ScriptedTarget(PERM))
        qm.enqueue(makeEnvelope(), b"x")
        self.clock.advance(0)
        [(_, failed)] = self.bounces
        self.assertEqual(failed[0][1], PERM)
        self.assertEqual(qm.items, {})

    def test_noBounceToNullSender(self) -> None:
        """A failed message from <> is dropped without a bounce."""
        qm = self.manager(ScriptedTarget(PERM))
        qm.enqueue(
            makeEnvelope().__class__(**{**makeEnvelope().__dict__, "sender": NULL_ADDRESS}),
            b"x",
        )
        self.clock.advance(0)
        self.assertEqual(self.bounces, [])
        self.assertEqual(qm.items, {})

    def test_expiryBounces(self) -> None:
        """A message still failing temporarily after max_lifetime bounces."""
        qm = self.manager(ScriptedTarget(*([TEMP] * 20)))
        envelope = makeEnvelope().__class__(
            **{**makeEnvelope().__dict__, "arrival": self.clock.seconds()}
        )
        qm.enqueue(envelope, b"x")
        for _ in range(20):
            self.clock.advance(300)
        [(_, failed)] = self.bounces
        self.assertIn("4.4.7", str(failed[0][1]))
        self.assertEqual(qm.items, {})

    def test_resumesAfterRestart(self) -> None:
        """Messages in the spool are loaded and delivered at start-up."""
        self.successResultOf(self.spool.store(makeEnvelope("Q5"), b"x"))
        target = ScriptedTarget(OK)
        self.manager(target)
        self.clock.advance(0)
        self.assertEqual(target.calls, ["Q5"])

    def test_flush(self) -> None:
        """flush tries a deferred message now instead of at its time."""
        target = ScriptedTarget(TEMP, OK)
        qm = self.manager(target)
        qm.enqueue(makeEnvelope(), b"x")
        self.clock.advance(0)
        self.assertEqual(qm.flush(), 1)
        self.clock.advance(0)
        self.assertEqual(len(target.calls), 2)
        self.assertEqual(qm.items, {})
