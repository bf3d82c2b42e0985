# -*- test-case-name: tests.test_scheduler -*-
"""
When to deliver: step "schedule" of the lifecycle.

L{QueueManager} is the L{IMessageSink} the receiving protocols hand
messages to.  It stores each one in the L{ISpool} (the 250 waits for
that), tries it at once, and after a temporary failure again on the retry
schedule, the last interval repeating, until the message is delivered,
fails for good or outlives C{max_lifetime}.

Outcomes are reported to the sender as DSNs (L{mta.delivery.bounce}), as
each recipient's NOTIFY asks (RFC 3461; without it: failures and delays):
failed recipients at once, one report per message and event; recipients
still pending C{delayWarning} after arrival once per message (the
envelope's C{extra} remembers it across restarts); recipients delivered
here, or relayed to a peer without DSN (L{RelayedReply}), when NOTIFY has
C{SUCCESS}.  Never a report to C{<>}: a report that cannot be delivered
is dropped, with a log line.  On start-up it resumes what the spool holds
(loaded beforehand by the server, L{QueueManager.resumeFrom}).
Time comes from an injected clock, so all of this runs under
L{twisted.internet.task.Clock} in tests.

The first attempt gets the message's bytes from memory, as received, so a
message delivered at once is never read back from the spool; a budget
(L{FRESH_BYTES}) bounds what waits in memory when deliveries fall behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredSemaphore, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mta.delivery.bounce import DELAY, FAILURE, SUCCESS, RelayedReply, Report, notifies
from mta.envelope import Attempt, Envelope, Recipient
from mta.errors import Reply
from mta.interfaces import IDeliveryTarget, IMessageSink, ISpool
from mta.logs import logLine
from mta.message import MessageBody
from mta.queue.describe import HELD, describeMessage, isHeld
from mta.queue.spool import newQueueId

_log = Logger(namespace="mta.queue")

S451_INTERNAL = Reply(451, "4.3.0 Internal error during delivery")
S554_EXPIRED = Reply(554, "4.4.7 Message expired: delivery was not possible in time")
S550_BOUNCED = Reply(550, "5.0.0 Bounced by the administrator")

#: At most this many bytes of received messages wait in memory for their
#: first attempt; beyond it, that attempt reads the spool like any retry.
FRESH_BYTES = 64 * 1024 * 1024

#: The key in an envelope's C{extra} that says when its delay warning was
#: sent (POSIX time), so that it is sent once, restarts included.
DELAY_WARNED = "dsn_delay_warned"

#: Makes and enqueues the DSN of a report (L{mta.delivery.bounce.Bouncer}).
Bouncer = Callable[[Report, MessageBody], Deferred[object]]


@implementer(IMessageSink)
class QueueManager(Service):
    """
    Accepts messages into the spool and drives their delivery.

    @ivar items: the envelopes in the queue by id, as last stored.
    """

    def __init__(
        self,
        spool: ISpool,
        target: IDeliveryTarget,
        clock: IReactorTime,
        retrySchedule: Sequence[float],
        maxLifetime: float,
        concurrency: int = 32,
        delayWarning: float = 0.0,
    ) -> None:
        """
        @param delayWarning: after this long in the queue (from arrival),
            a message still being retried gets one delay report; C{0}: never.
        """
        self._spool = spool
        self._target = target
        self._clock = clock
        self._schedule = tuple(retrySchedule)
        self._maxLifetime = maxLifetime
        self._delayWarning = delayWarning
        self._slots = DeferredSemaphore(concurrency)
        self._calls: dict[str, IDelayedCall] = {}
        self._busy: set[str] = set()
        self._fresh: dict[str, bytes] = {}
        self._freshBytes = 0
        self.items: dict[str, Envelope] = {}
        self.bouncer: Bouncer | None = None
        self._preloaded: list[Envelope] | None = None

    # -- IMessageSink --------------------------------------------------------------

    def newQueueId(self) -> str:
        """
        @return: a fresh queue id for a message about to be enqueued.
        """
        return newQueueId()

    def enqueue(self, envelope: Envelope, data: bytes) -> Deferred[str]:
        """
        Store the message durably, then schedule its first attempt now.
        """
        d = self._spool.store(envelope, data)

        def stored(_: None) -> str:
            if self._freshBytes + len(data) <= FRESH_BYTES:
                self._fresh[envelope.queueId] = data
                self._freshBytes += len(data)
            self._track(envelope, 0)
            return envelope.queueId

        return d.addCallback(stored)

    # -- service ---------------------------------------------------------------------

    def resumeFrom(self, envelopes: list[Envelope]) -> None:
        """
        Take the spool's contents, loaded by the caller before start-up
        (see L{mta.tap}), so that L{startService} schedules them instead of
        loading the spool itself.

        The server does this because twistd ignores the Deferred that
        C{startService} returns: a load failing there would go unnoticed
        while the listeners accept mail.
        """
        self._preloaded = envelopes

    def startService(self) -> Deferred[None]:  # type: ignore[override]
        """
        Schedule everything in the spool: what L{resumeFrom} was given,
        else what the spool loads now.
        """
        super().startService()
        preloaded, self._preloaded = self._preloaded, None
        if preloaded is not None:
            self._resume(preloaded)
            return succeed(None)
        return self._spool.load().addCallback(self._resume)

    def _resume(self, envelopes: list[Envelope]) -> None:
        now = self._clock.seconds()
        for envelope in envelopes:
            self._track(envelope, max(0.0, envelope.nextAttempt - now))
        _log.info("queue: loaded {n} messages", n=len(envelopes))

    def stopService(self) -> None:
        super().stopService()
        for call in self._calls.values():
            if call.active():
                call.cancel()
        self._calls.clear()

    # -- scheduling -------------------------------------------------------------------

    def _track(self, envelope: Envelope, delay: float) -> None:
        self.items[envelope.queueId] = envelope
        self._later(envelope.queueId, delay)

    def _later(self, queueId: str, delay: float) -> None:
        old = self._calls.pop(queueId, None)
        if old is not None and old.active():
            old.cancel()
        envelope = self.items.get(queueId)
        if envelope is not None and isHeld(envelope):
            return
        if self.running:
            self._calls[queueId] = self._clock.callLater(delay, self._attempt, queueId)

    def flush(self, queueId: str | None = None) -> int:
        """
        Try now, ignoring the schedule: one message or all of them.

        @return: how many messages were rescheduled.
        """
        ids = [queueId] if queueId is not None else list(self.items)
        ids = [
            i for i in ids if i in self.items and i not in self._busy and not isHeld(self.items[i])
        ]
        for i in ids:
            self._later(i, 0)
        return len(ids)

    def forget(self, queueId: str) -> bool:
        """
        Stop tracking a message that was deleted from the spool by hand.

        @return: whether it was tracked.
        """
        call = self._calls.pop(queueId, None)
        if call is not None and call.active():
            call.cancel()
        self._takeFresh(queueId)
        return self.items.pop(queueId, None) is not None

    def _takeFresh(self, queueId: str) -> bytes | None:
        data = self._fresh.pop(queueId, None)
        if data is not None:
            self._freshBytes -= len(data)
        return data

    def delete(self, queueId: str) -> Deferred[bool]:
        """
        Delete a message from the queue without delivering it further
        (C{mta queue delete}).  One being delivered right now is removed
        when the attempt ends.

        @return: a Deferred firing with whether the message was queued.
        """
        known = self.forget(queueId)
        if known:
            _log.info("queue: id={id} deleted by the administrator", id=queueId)
        if queueId in self._busy:
            # Its attempt may be reading the file; _settle removes it.
            return succeed(known)
        return self._spool.remove(queueId).addCallback(lambda _: known)

    def hold(self, queueId: str) -> Deferred[bool]:
        """
        Make no attempt at a message until L{release}d (C{mta queue hold}).
        The envelope's C{extra} says so on disk, so it stays held across a
        restart; an attempt running right now ends as usual.

        @return: a Deferred firing with whether the message is queued.
        """
        return self._setHeld(queueId, True)

    def release(self, queueId: str) -> Deferred[bool]:
        """
        Undo L{hold} and try the message now (C{mta queue release}).

        @return: a Deferred firing with whether the message is queued.
        """
        return self._setHeld(queueId, False)

    def _setHeld(self, queueId: str, held: bool) -> Deferred[bool]:
        envelope = self.items.get(queueId)
        if envelope is None:
            return succeed(False)
        extra = {k: v for k, v in envelope.extra.items() if k != HELD}
        if held:
            extra[HELD] = True
        envelope = replace(envelope, extra=extra)
        if not held:
            envelope = replace(envelope, nextAttempt=self._clock.seconds())
        self.items[queueId] = envelope
        _log.info(
            "queue: id={id} {what} by the administrator",
            id=queueId,
            what="held" if held else "released",
        )
        if queueId in self._busy:
            # The running attempt's _settle stores the flag and schedules.
            return succeed(True)
        self._later(queueId, 0)
        return self._spool.update(envelope).addCallback(lambda _: True)

    def bounce(self, queueId: str) -> Deferred[bool]:
        """
        Fail every pending recipient now with L{S550_BOUNCED}
        (C{mta queue bounce}): recorded and reported to the sender as any
        permanent failure is, then the message leaves the queue.

        @return: a Deferred firing with whether the message was queued.
        @raise ValueError: it is being delivered right now.
        """
        if queueId not in self.items:
            return succeed(False)
        if queueId in self._busy:
            raise ValueError(f"{queueId} is being delivered right now; try again in a moment")
        call = self._calls.pop(queueId, None)
        if call is not None and call.active():
            call.cancel()
        self._busy.add(queueId)
        envelope = self.items[queueId]
        body = self._spool.body(queueId)
        data = self._takeFresh(queueId)
        if data is not None:
            body = replace(body, data=data)
        d = self._recordOutcomes({r: S550_BOUNCED for r in envelope.pending}, envelope, body)
        d.addBoth(self._unbusy, queueId)
        return d.addCallback(lambda _: True)

    def _unbusy(self, result: object, queueId: str) -> object:
        self._busy.discard(queueId)
        return result

    def describe(self, queueId: str) -> dict[str, Any]:
        """
        Describe a queued message as it is now, for C{mta queue list} and
        C{show} (L{describeMessage}).

        @raise KeyError: it is not queued.
        """
        envelope = self.items[queueId]
        try:
            size = self._spool.body(queueId).size
        except KeyError:
            size = 0
        return describeMessage(
            envelope,
            size,
            self._clock.seconds(),
            self._schedule,
            self._maxLifetime,
            queueId in self._busy,
        )

    def _attempt(self, queueId: str) -> Deferred[None] | None:
        self._calls.pop(queueId, None)
        if queueId not in self.items or queueId in self._busy:
            return None
        if isHeld(self.items[queueId]):
            return None
        self._busy.add(queueId)
        d = self._slots.run(self._deliverOnce, queueId)
        d.addErrback(lambda f: _log.failure("queue: id={id} attempt failed", f, id=queueId))
        d.addBoth(lambda _: self._busy.discard(queueId))
        return d

    def _deliverOnce(self, queueId: str) -> Deferred[None]:
        envelope = self.items[queueId]
        body = self._spool.body(queueId)
        data = self._takeFresh(queueId)
        if data is not None:
            body = replace(body, data=data)
        d = self._target.deliver(envelope, body)
        d.addErrback(self._allTemporary, envelope)
        return d.addCallback(self._recordOutcomes, envelope, body)

    def _allTemporary(self, failure: Failure, envelope: Envelope) -> dict[Recipient, Reply]:
        _log.failure("queue: id={id} delivery raised", failure, id=envelope.queueId)
        return {r: S451_INTERNAL for r in envelope.pending}

    # -- outcomes ---------------------------------------------------------------------

    def _recordOutcomes(
        self, results: dict[Recipient, Reply], envelope: Envelope, body: MessageBody
    ) -> Deferred[None]:
        now = self._clock.seconds()
        expired = now - envelope.arrival >= self._maxLifetime
        recipients = []
        failed: list[tuple[Recipient, Reply]] = []
        succeeded: list[tuple[Recipient, Reply]] = []
        deferred: list[tuple[Recipient, Reply]] = []
        for r in envelope.recipients:
            reply = results.get(r)
            if r.state != "pending" or reply is None:
                recipients.append(r)
                continue
            outcome = reply
            if reply.isTemporary and expired:
                outcome = Reply(554, f"{S554_EXPIRED.text}; last error: {reply}", reply.remote)
            updated = self._applyReply(envelope, r, outcome, now)
            recipients.append(updated)
            # Reports get the reply itself: a 4xx in a failure report is
            # an expiry, reported as such, with what the peer last said.
            if updated.state == "failed":
                failed.append((updated, reply))
            elif updated.state == "pending":
                deferred.append((updated, reply))
            elif notifies(r, SUCCESS) and (not reply.remote or isinstance(reply, RelayedReply)):
                # A 2xx from a peer that took DSN passed NOTIFY on: the
                # next hop reports success, not us.
                succeeded.append((updated, reply))
        envelope = replace(envelope, recipients=tuple(recipients))
        reports = []
        if failed:
            reports.append(Report(envelope, FAILURE, tuple(failed), now))
        if succeeded:
            reports.append(Report(envelope, SUCCESS, tuple(succeeded), now))
        if deferred and self._delayDue(envelope, now):
            envelope = replace(envelope, extra={**envelope.extra, DELAY_WARNED: now})
            until = envelope.arrival + self._maxLifetime
            reports.append(Report(envelope, DELAY, tuple(deferred), now, until))
        return self._reportAll(reports, body).addCallback(lambda _: self._settle(envelope))

    def _reportAll(self, reports: Sequence[Report], body: MessageBody) -> Deferred[object]:
        """
        L{_report} each of C{reports}, one after the other.
        """
        if not reports:
            return succeed(None)
        d = self._report(reports[0], body)
        return d.addCallback(lambda _: self._reportAll(reports[1:], body))

    def _delayDue(self, envelope: Envelope, now: float) -> bool:
        """
        @return: whether a message with recipients still pending after a
            failed attempt is due its one delay warning.
        """
        return (
            self._delayWarning > 0
            and now - envelope.arrival >= self._delayWarning
            and DELAY_WARNED not in envelope.extra
            and not envelope.sender.isNull
        )

    def _applyReply(self, envelope: Envelope, r: Recipient, reply: Reply, now: float) -> Recipient:
        if reply.code < 300:
            state = "delivered"
        elif reply.isPermanent:
            state = "failed"
        else:
            state = "pending"
        logLine(
            _log,
            "delivery: id={id} to=<{to}> orig=<{orig}> relay={relay} status={status} "
            "delay={delay:.2f}s attempts={n} reply={reply}",
            id=envelope.queueId,
            to=r.address,
            orig=r.original,
            relay=reply.remote or "local",
            status={"delivered": "sent", "failed": "bounced", "pending": "deferred"}[state],
            delay=now - envelope.arrival,
            n=r.attempts + 1,
            reply=str(reply),
        )
        attempt = Attempt(now, str(reply), reply.remote, reply.detail)
        return r.withOutcome(state, "" if state == "delivered" else str(reply), attempt)

    def _report(self, report: Report, body: MessageBody) -> Deferred[object]:
        """
        Send the DSN of C{report} for the recipients whose NOTIFY asks for
        it; say in the log when NOTIFY or a null sender suppresses a
        failure or delay report that would otherwise go out.
        """
        envelope = report.envelope
        event = report.event.lower()
        if envelope.sender.isNull:
            if report.event == FAILURE:
                _log.info(
                    "queue: id={id} sender is <>: {n} failed recipient(s) dropped without a report",
                    id=envelope.queueId,
                    n=len(report.recipients),
                )
            return succeed(None)
        wanted = tuple((r, reply) for r, reply in report.recipients if notifies(r, report.event))
        if len(wanted) < len(report.recipients) and report.event != SUCCESS:
            _log.info(
                "queue: id={id} no {event} report for {to}: NOTIFY does not ask for it",
                id=envelope.queueId,
                event=event,
                to=", ".join(
                    f"<{r.original}> NOTIFY={','.join(r.notify)}"
                    for r, _ in report.recipients
                    if not notifies(r, report.event)
                ),
            )
        if not wanted or self.bouncer is None:
            return succeed(None)
        return self.bouncer(replace(report, recipients=wanted), body)

    def _settle(self, envelope: Envelope) -> Deferred[None]:
        queueId = envelope.queueId
        if queueId not in self.items:
            # Deleted by the administrator while this attempt ran.
            return self._spool.remove(queueId)
        if not envelope.pending:
            # No line of its own: the delivery lines just written say that
            # every recipient is done (a third line per message was a tenth
            # of the reactor thread's time under load).
            self.items.pop(queueId, None)
            return self._spool.remove(queueId)
        attempts = max(r.attempts for r in envelope.pending)
        delay = self._schedule[min(attempts, len(self._schedule)) - 1]
        envelope = replace(envelope, nextAttempt=self._clock.seconds() + delay)
        # Held or released by the administrator while this attempt ran:
        # what the administrator said last wins.
        extra = {k: v for k, v in envelope.extra.items() if k != HELD}
        if isHeld(self.items[queueId]):
            extra[HELD] = True
        envelope = replace(envelope, extra=extra)
        self.items[queueId] = envelope

        def stored(_: None) -> None:
            if queueId in self.items:
                self._later(queueId, delay)

        return self._spool.update(envelope).addCallback(stored)
