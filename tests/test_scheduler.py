"""
Tests for L{mta.queue.scheduler}: delivery now, retries, expiry, and the
DSNs each recipient's NOTIFY asks for.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mta.config import loadConfig
from mta.delivery.bounce import DELAY, FAILURE, SUCCESS, RelayedReply, Report
from mta.envelope import NULL_ADDRESS, Envelope, Recipient
from mta.errors import ConfigError, Reply
from mta.interfaces import IDeliveryTarget, IMessageSink
from mta.message import MessageBody
from mta.queue import scheduler
from mta.queue.scheduler import DELAY_WARNED, QueueManager
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
REMOTE_OK = Reply(250, "2.0.0 queued as 1234", remote="mx.example.com[192.0.2.1]")
RELAYED = RelayedReply(250, "2.0.0 queued as 1234", remote="mx.example.com[192.0.2.1]")

HOUR = 3600.0


def envelopeWith(notify: tuple[str, ...] = (), **changes: Any) -> Envelope:
    """
    @return: L{makeEnvelope}'s envelope with its recipient's NOTIFY set and
        other fields changed.
    """
    envelope = makeEnvelope()
    recipients = tuple(replace(r, notify=notify) for r in envelope.recipients)
    return replace(envelope, recipients=recipients, **changes)


def captureLog(case: SynchronousTestCase) -> list[str]:
    """
    @return: a list that receives every log line emitted during the test.
    """
    lines: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return lines


class QueueManagerTests(SynchronousTestCase):
    """
    L{QueueManager}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.path = Path(self.mktemp())
        self.spool = Spool(self.path, SynchronousRunner())
        self.reports: list[Report] = []

    def manager(
        self,
        target: IDeliveryTarget,
        schedule: tuple[float, ...] = (60, 300),
        maxLifetime: float = 3600,
        delayWarning: float = 0.0,
    ) -> QueueManager:
        qm = QueueManager(
            self.spool, target, self.clock, schedule, maxLifetime, delayWarning=delayWarning
        )

        def bounce(report: Report, body: MessageBody) -> Deferred[object]:
            self.reports.append(report)
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

    def test_attemptsRemembered(self) -> None:
        """Each attempt is kept in the recipient's history with the server and how it went."""
        busy = Reply(451, "4.7.1 busy", remote="mx.example.com[192.0.2.1]", detail="MX mx (10)")
        qm = self.manager(ScriptedTarget(busy, TEMP))
        qm.enqueue(makeEnvelope(), b"x")
        self.clock.advance(0)
        self.clock.advance(60)
        [first, second] = qm.items["Q1"].recipients[0].history
        self.assertEqual((first.time, first.reply), (1000.0, str(busy)))
        self.assertEqual((first.remote, first.detail), ("mx.example.com[192.0.2.1]", "MX mx (10)"))
        self.assertEqual((second.time, second.remote), (1060.0, ""))

    def test_permanentFailureBounces(self) -> None:
        """A permanent failure bounces to the sender and ends the message."""
        qm = self.manager(ScriptedTarget(PERM))
        qm.enqueue(makeEnvelope(), b"x")
        self.clock.advance(0)
        [report] = self.reports
        self.assertEqual(report.event, FAILURE)
        self.assertEqual([reply for _, reply in report.recipients], [PERM])
        self.assertEqual(report.recipients[0][0].state, "failed")
        self.assertEqual(report.attempted, self.clock.seconds())
        self.assertEqual(qm.items, {})

    def test_noBounceToNullSender(self) -> None:
        """A failed message from <> is dropped without a report, and the log says so."""
        log = captureLog(self)
        qm = self.manager(ScriptedTarget(PERM))
        qm.enqueue(replace(makeEnvelope(), sender=NULL_ADDRESS), b"x")
        self.clock.advance(0)
        self.assertEqual(self.reports, [])
        self.assertEqual(qm.items, {})
        self.assertEqual(
            [line for line in log if "sender is <>" in line],
            ["queue: id=Q1 sender is <>: 1 failed recipient(s) dropped without a report"],
        )

    def test_expiredReportDroppedAndLogged(self) -> None:
        """
        A report (sender <>) still failing temporarily at max_lifetime is
        logged as bounced, dropped without a report, and removed from the
        queue and the spool.
        """
        log = captureLog(self)
        qm = self.manager(ScriptedTarget(*([TEMP] * 20)))
        qm.enqueue(replace(makeEnvelope(), sender=NULL_ADDRESS, arrival=1000.0), b"x")
        for _ in range(20):
            self.clock.advance(300)
        self.assertEqual(self.reports, [])
        self.assertEqual(qm.items, {})
        self.assertEqual(self.spool.loadSync(), [])
        [bounced] = [line for line in log if "status=bounced" in line]
        self.assertIn("4.4.7 Message expired", bounced)
        self.assertEqual(len([line for line in log if "sender is <>" in line]), 1)

    def test_expiryBounces(self) -> None:
        """
        A message still failing temporarily after max_lifetime bounces; the
        report gets the last temporary reply (an expiry), the log the 4.4.7.
        """
        log = captureLog(self)
        qm = self.manager(ScriptedTarget(*([TEMP] * 20)))
        qm.enqueue(replace(makeEnvelope(), arrival=self.clock.seconds()), b"x")
        for _ in range(20):
            self.clock.advance(300)
        [report] = self.reports
        self.assertEqual((report.event, report.recipients[0][1]), (FAILURE, TEMP))
        self.assertIn("4.4.7", report.recipients[0][0].lastError)
        self.assertEqual(len([line for line in log if "status=bounced" in line]), 1)
        self.assertEqual(qm.items, {})

    def test_defaultNotifyFailureOnly(self) -> None:
        """
        Without NOTIFY, a delivered recipient gets no report and a failed
        one a failure report.
        """
        qm = self.manager(ScriptedTarget(OK, PERM))
        qm.enqueue(makeEnvelope("Q1"), b"x")
        self.clock.advance(0)
        self.assertEqual(self.reports, [])
        qm.enqueue(makeEnvelope("Q2"), b"x")
        self.clock.advance(0)
        self.assertEqual([(r.envelope.queueId, r.event) for r in self.reports], [("Q2", FAILURE)])

    def test_notifyNever(self) -> None:
        """NOTIFY=NEVER suppresses the failure report, with one log line."""
        log = captureLog(self)
        qm = self.manager(ScriptedTarget(PERM))
        qm.enqueue(envelopeWith(("NEVER",)), b"x")
        self.clock.advance(0)
        self.assertEqual(self.reports, [])
        self.assertEqual(qm.items, {})
        self.assertEqual(
            [line for line in log if "no failure report" in line],
            [
                "queue: id=Q1 no failure report for <alice+x@example.com> NOTIFY=NEVER: "
                "NOTIFY does not ask for it"
            ],
        )

    def test_notifySuccessOnlyNoFailure(self) -> None:
        """NOTIFY=SUCCESS alone asks for no failure report."""
        qm = self.manager(ScriptedTarget(PERM))
        qm.enqueue(envelopeWith(("SUCCESS",)), b"x")
        self.clock.advance(0)
        self.assertEqual(self.reports, [])

    def test_notifyOnlySomeRecipients(self) -> None:
        """A failure report names only the recipients whose NOTIFY asks for it."""
        envelope = makeEnvelope()
        [alice] = envelope.recipients
        bob = replace(alice, address=alice.address.__class__("bob", "example.com"))
        never = replace(alice, notify=("NEVER",))
        qm = self.manager(ScriptedTarget(PERM))
        qm.enqueue(replace(envelope, recipients=(bob, never)), b"x")
        self.clock.advance(0)
        [report] = self.reports
        self.assertEqual([str(r.address) for r, _ in report.recipients], ["bob@example.com"])

    def test_successLocal(self) -> None:
        """A recipient delivered here with NOTIFY=SUCCESS gets a success report."""
        qm = self.manager(ScriptedTarget(OK))
        qm.enqueue(envelopeWith(("SUCCESS", "FAILURE")), b"x")
        self.clock.advance(0)
        [report] = self.reports
        self.assertEqual((report.event, report.recipients[0][1]), (SUCCESS, OK))
        self.assertEqual(report.recipients[0][0].state, "delivered")
        self.assertEqual(qm.items, {})

    def test_successRemoteWithDSN(self) -> None:
        """
        A 2xx from a peer that took DSN (a plain Reply with remote set)
        gets no success report here: the next hop owes it.
        """
        qm = self.manager(ScriptedTarget(REMOTE_OK))
        qm.enqueue(envelopeWith(("SUCCESS",)), b"x")
        self.clock.advance(0)
        self.assertEqual(self.reports, [])

    def test_successRelayed(self) -> None:
        """
        A RelayedReply (a peer without DSN) gets a success report for
        NOTIFY=SUCCESS, carrying the RelayedReply.
        """
        qm = self.manager(ScriptedTarget(RELAYED))
        qm.enqueue(envelopeWith(("SUCCESS",)), b"x")
        self.clock.advance(0)
        [report] = self.reports
        self.assertEqual(report.event, SUCCESS)
        self.assertIsInstance(report.recipients[0][1], RelayedReply)

    def test_relayedWithoutSuccessNoReport(self) -> None:
        """A RelayedReply for a recipient without NOTIFY=SUCCESS gets no report."""
        qm = self.manager(ScriptedTarget(RELAYED))
        qm.enqueue(makeEnvelope(), b"x")
        self.clock.advance(0)
        self.assertEqual(self.reports, [])

    def delayedManager(self, notify: tuple[str, ...] = ()) -> QueueManager:
        """
        @return: a manager retrying hourly for 5 days with a 4-hour delay
            warning, holding Q1 (with C{notify}) after its first failure.
        """
        qm = self.manager(
            ScriptedTarget(*([TEMP] * 200)),
            schedule=(HOUR,),
            maxLifetime=5 * 24 * HOUR,
            delayWarning=4 * HOUR,
        )
        qm.enqueue(envelopeWith(notify, arrival=self.clock.seconds()), b"x")
        self.clock.advance(0)
        return qm

    def test_delayWarningOnce(self) -> None:
        """
        After 4 hours of temporary failures one delay report goes out, with
        Will-Retry-Until at arrival + max_lifetime, and never a second.
        """
        arrival = self.clock.seconds()
        qm = self.delayedManager()
        for _ in range(3):
            self.clock.advance(HOUR)
        self.assertEqual(self.reports, [])
        self.clock.advance(HOUR)
        [report] = self.reports
        self.assertEqual(report.event, DELAY)
        self.assertEqual(report.retryUntil, arrival + 5 * 24 * HOUR)
        self.assertEqual(report.attempted, arrival + 4 * HOUR)
        self.assertEqual(report.recipients[0][1], TEMP)
        self.assertEqual(qm.items["Q1"].extra[DELAY_WARNED], arrival + 4 * HOUR)
        for _ in range(10):
            self.clock.advance(HOUR)
        self.assertEqual(len(self.reports), 1)

    def test_delayWarningNotRepeatedAfterReload(self) -> None:
        """
        The delay warning is recorded in the queue file: a new manager that
        loads the envelope from JSON does not send it again.
        """
        qm = self.delayedManager()
        for _ in range(4):
            self.clock.advance(HOUR)
        self.assertEqual(len(self.reports), 1)
        qm.stopService()
        [loaded] = self.spool.loadSync()
        self.assertIn(DELAY_WARNED, loaded.extra)
        again = self.manager(
            ScriptedTarget(*([TEMP] * 20)),
            schedule=(HOUR,),
            maxLifetime=5 * 24 * HOUR,
            delayWarning=4 * HOUR,
        )
        for _ in range(10):
            self.clock.advance(HOUR)
        self.assertEqual(len(self.reports), 1)
        self.assertIn("Q1", again.items)

    def test_delayWarningNotifyDelay(self) -> None:
        """NOTIFY=DELAY gets the delay warning."""
        self.delayedManager(("DELAY",))
        self.clock.advance(4 * HOUR)
        self.assertEqual([r.event for r in self.reports], [DELAY])

    def test_delayWarningSuppressedByNotify(self) -> None:
        """
        NOTIFY without DELAY gets no delay warning; one log line says so,
        once.
        """
        log = captureLog(self)
        self.delayedManager(("FAILURE",))
        for _ in range(8):
            self.clock.advance(HOUR)
        self.assertEqual(self.reports, [])
        self.assertEqual(len([line for line in log if "no delay report" in line]), 1)

    def test_delayWarningOff(self) -> None:
        """A delay_warning of 0 sends no delay report."""
        qm = self.manager(
            ScriptedTarget(*([TEMP] * 20)), schedule=(HOUR,), maxLifetime=5 * 24 * HOUR
        )
        qm.enqueue(replace(makeEnvelope(), arrival=self.clock.seconds()), b"x")
        for _ in range(10):
            self.clock.advance(HOUR)
        self.assertEqual(self.reports, [])

    def test_noDelayWarningFromNullSender(self) -> None:
        """A message from <> gets no delay warning."""
        qm = self.manager(
            ScriptedTarget(*([TEMP] * 20)),
            schedule=(HOUR,),
            maxLifetime=5 * 24 * HOUR,
            delayWarning=HOUR,
        )
        qm.enqueue(replace(makeEnvelope(), sender=NULL_ADDRESS, arrival=1000.0), b"x")
        for _ in range(5):
            self.clock.advance(HOUR)
        self.assertEqual(self.reports, [])

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


class DelayWarningConfigTests(SynchronousTestCase):
    """
    C{[relay] delay_warning}, which L{QueueManager} takes as C{delayWarning}.
    """

    def load(self, text: str) -> float:
        path = Path(self.mktemp())
        path.write_text('domains = ["example.com"]\n' + text)
        return loadConfig(path).relay.delay_warning

    def test_default(self) -> None:
        """Without the key, the warning comes after 4 hours."""
        self.assertEqual(self.load(""), 4 * HOUR)

    def test_duration(self) -> None:
        """A duration is taken in seconds."""
        self.assertEqual(self.load('[relay]\ndelay_warning = "90m"\n'), 5400.0)

    def test_off(self) -> None:
        """An empty string turns the warning off."""
        self.assertEqual(self.load('[relay]\ndelay_warning = ""\n'), 0.0)

    def test_bad(self) -> None:
        """A value that is no duration is refused with the key named."""
        e = self.assertRaises(ConfigError, self.load, '[relay]\ndelay_warning = "soon"\n')
        self.assertTrue(str(e).startswith("config: relay.delay_warning: "), str(e))
