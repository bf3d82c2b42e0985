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
from mta.message import MessageBody
from mta.queue import scheduler
from mta.queue.scheduler import QueueManager
from mta.queue.spool import Spool
from mta.threads import SynchronousRunner
from tests.test_spool import makeEnvelope


@implementer(IDeliveryTarget)
class ScriptedTarget:
    """
    Answers each attempt with the next reply from a script.
    """

    def __init__(self, *replies: Reply | Deferred[dict[Recipient, Reply]]) -> None:
        self.replies = list(replies)
        self.calls: list[str] = []
        self.bodies: list[MessageBody] = []
        self.read: list[bytes] = []

    def deliver(self, envelope: Envelope, body: MessageBody) -> Deferred[dict[Recipient, Reply]]:
        self.calls.append(envelope.queueId)
        self.bodies.append(body)
        self.read.append(body.readSync())
        reply = self.replies.pop(0)
        if isinstance(reply, Deferred):
            return reply
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
            envelope: Envelope, failed: list[tuple[Recipient, Reply]], body: MessageBody
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
        self.assertEqual(list(self.path.glob("Q1.msg")), [])
        self.assertEqual(qm.items, {})

    def test_firstAttemptFromMemory(self) -> None:
        """
        The first attempt gets the message's bytes from memory; a retry
        reads them from the queue file.
        """
        target = ScriptedTarget(TEMP, OK)
        qm = self.manager(target)
        self.successResultOf(qm.enqueue(makeEnvelope(), b"the message"))
        self.clock.advance(0)
        self.assertEqual(target.bodies[0].data, b"the message")
        self.clock.advance(60)
        self.assertIsNone(target.bodies[1].data)
        self.assertEqual(target.read, [b"the message", b"the message"])

    def test_freshBytesBounded(self) -> None:
        """
        Past FRESH_BYTES waiting in memory, first attempts read the file.
        """
        self.patch(scheduler, "FRESH_BYTES", 10)
        target = ScriptedTarget(OK, OK)
        qm = self.manager(target)
        self.successResultOf(qm.enqueue(makeEnvelope("Q1"), b"123456"))
        self.successResultOf(qm.enqueue(makeEnvelope("Q2"), b"789012"))
        self.clock.advance(0)
        self.assertEqual([b.data for b in target.bodies], [b"123456", None])
        self.assertEqual(target.read, [b"123456", b"789012"])

    def test_deleteDuringAttempt(self) -> None:
        """
        A message deleted while an attempt is under way keeps its file
        until the attempt ends, then is removed.
        """
        attempt: Deferred[dict[Recipient, Reply]] = Deferred()
        qm = self.manager(ScriptedTarget(attempt))
        self.successResultOf(qm.enqueue(makeEnvelope(), b"x"))
        self.clock.advance(0)
        self.assertTrue(self.successResultOf(qm.delete("Q1")))
        self.assertTrue((self.path / "Q1.msg").exists())
        attempt.callback({r: TEMP for r in makeEnvelope().pending})
        self.assertFalse((self.path / "Q1.msg").exists())
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

    def test_resumesFromPreloaded(self) -> None:
        """Envelopes given to resumeFrom are scheduled at start-up; the spool is not loaded again."""
        self.successResultOf(self.spool.store(makeEnvelope("Q6"), b"x"))
        envelopes = self.spool.loadSync()
        loads: list[None] = []
        self.patch(self.spool, "load", lambda: loads.append(None))
        target = ScriptedTarget(OK)
        qm = QueueManager(self.spool, target, self.clock, [60], maxLifetime=3600)
        qm.resumeFrom(envelopes)
        self.successResultOf(qm.startService())
        self.addCleanup(qm.stopService)
        self.clock.advance(0)
        self.assertEqual((target.calls, loads), (["Q6"], []))

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
