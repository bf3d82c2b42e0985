"""
Tests for L{mta.queue.control} and L{mta.queue.describe}: the control
socket's protocol and server, what C{mta queue list} and C{show} print,
and the queue's hold, release and bounce.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mta.delivery.bounce import FAILURE, Report
from mta.envelope import Address, Attempt, Envelope, Recipient
from mta.errors import Reply
from mta.message import MessageBody
from mta.queue.control import (
    ControlError,
    ControlProtocol,
    ControlRequests,
    ControlServer,
    QueueCommands,
)
from mta.queue.describe import HELD, describeMessage, formatTime, renderList, renderShow
from mta.queue.scheduler import S550_BOUNCED, QueueManager
from mta.queue.spool import Spool
from mta.threads import SynchronousRunner
from tests.test_scheduler import OK, TEMP, ScriptedTarget
from tests.test_spool import makeEnvelope

SCHEDULE = (60.0, 300.0)
LIFETIME = 3600.0
NOW = 100_000.0
DNS_FAILED = "451 4.4.3 No DNS answer for remote.test (SERVFAIL)"
DETAIL = "MX lookup for remote.test failed: SERVFAIL; no host left to try"


def waitingEnvelope(**changes: Any) -> Envelope:
    """
    @return: a message from alice to far@remote.test, tried twice (the
        history built by hand), next try 5 minutes from L{NOW}.
    """
    far = Address.parse("far@remote.test")
    history = (
        Attempt(NOW - 70, DNS_FAILED, "", DETAIL),
        Attempt(NOW - 10, "451 4.7.0 try later", "mx.remote.test[192.0.2.7]", "TLSv1.3 verified"),
    )
    recipient = Recipient(far, far, attempts=2, lastError=DNS_FAILED, history=history)
    return replace(
        Envelope(
            queueId="Q1",
            sender=Address.parse("alice@example.com"),
            recipients=(recipient,),
            arrival=NOW - 300,
            nextAttempt=NOW + 290,
            clientAddress="127.0.0.1",
            heloName="client.example.com",
            authUser="alice@example.com",
            dsnRet="HDRS",
        ),
        **changes,
    )


def describe(envelope: Envelope, busy: bool = False) -> dict[str, Any]:
    """
    @return: L{describeMessage} of C{envelope} at L{NOW}, 1234 bytes long.
    """
    return describeMessage(envelope, 1234, NOW, SCHEDULE, LIFETIME, busy)


class DescribeTests(SynchronousTestCase):
    """
    L{describeMessage}, L{renderList} and L{renderShow}.
    """

    def test_listLine(self) -> None:
        """A list line has id, age, size, sender, and the recipient's state, error, attempts and next try."""
        [line] = renderList([describe(waitingEnvelope())], NOW)
        self.assertEqual(
            line,
            f"Q1 5m 1.2K <alice@example.com> <far@remote.test>(pending: {DNS_FAILED}; "
            f"2 attempts, next {formatTime(NOW + 290, NOW)})",
        )

    def test_listHeld(self) -> None:
        """A held message says so on its list line, instead of a next attempt."""
        [line] = renderList([describe(waitingEnvelope(extra={HELD: True}))], NOW)
        self.assertTrue(line.startswith("Q1 HELD 5m "), line)
        self.assertTrue(line.endswith("2 attempts, held)"), line)

    def test_showTimeline(self) -> None:
        """show gives the envelope, each attempt with its server and detail a note a line, then the next try and why."""
        message = {**describe(waitingEnvelope()), "headers": "Subject: hi\r\nFrom: a@b\r\n"}
        text = "\n".join(renderShow(message, NOW))
        self.assertIn("  sender:   <alice@example.com>\n", text)
        self.assertIn(
            "  client:   127.0.0.1 (HELO client.example.com), authenticated as alice@example.com",
            text,
        )
        self.assertIn("  mail:     RET=HDRS\n", text)
        self.assertIn(
            f"  {formatTime(NOW - 70, NOW)}  {DNS_FAILED}\n"
            "            MX lookup for remote.test failed: SERVFAIL\n"
            "            no host left to try\n"
            f"  {formatTime(NOW - 10, NOW)}  451 4.7.0 try later\n"
            "            server: mx.remote.test[192.0.2.7]\n"
            "            TLSv1.3 verified\n"
            f"  next attempt: {formatTime(NOW + 290, NOW)}, retry 2 of the schedule (5m)\n",
            text,
        )
        self.assertTrue(text.endswith("headers:\n  Subject: hi\n  From: a@b"), text)

    def test_showHeld(self) -> None:
        """A held message's timeline ends with who holds it, not a time."""
        message = describe(waitingEnvelope(extra={HELD: True}))
        self.assertIn(
            "  next attempt: held by the administrator (mta queue release ID)",
            renderShow(message, NOW),
        )
        self.assertIsNone(message["next_time"])

    def test_firstAttempt(self) -> None:
        """A message not yet tried is due since it arrived, for its first attempt."""
        message = describe(makeEnvelope())
        self.assertEqual((message["next_time"], message["next_reason"]), (1000.0, "first attempt"))

    def test_beingDelivered(self) -> None:
        """A message whose attempt runs now says so."""
        message = describe(waitingEnvelope(), busy=True)
        self.assertEqual(message["next_reason"], "being delivered right now")

    def test_expiresFirst(self) -> None:
        """A next try past the message's lifetime says a failure then bounces it."""
        message = describe(waitingEnvelope(nextAttempt=NOW - 300 + LIFETIME))
        self.assertIn("the message expires before then", message["next_reason"])
        self.assertEqual(message["expires"], NOW - 300 + LIFETIME)

    def test_jsonIsTheEnvelope(self) -> None:
        """The JSON form survives json.dumps and holds the envelope's own on-disk form."""
        envelope = waitingEnvelope()
        message = json.loads(json.dumps(describe(envelope)))
        self.assertEqual(Envelope.fromJSON(message), envelope)
        self.assertEqual(message["recipients"][0]["history"][0]["detail"], DETAIL)
        self.assertEqual((message["size"], message["age"], message["held"]), (1234, 300.0, False))


class QueueControlTests(SynchronousTestCase):
    """
    L{QueueManager.hold}, C{release}, C{bounce} and C{describe}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.path = Path(self.mktemp())
        self.spool = Spool(self.path, SynchronousRunner())
        self.reports: list[Report] = []

    def manager(self, target: ScriptedTarget) -> QueueManager:
        """
        @return: a started queue on our spool, its reports kept in
            C{self.reports}.
        """
        qm = QueueManager(self.spool, target, self.clock, SCHEDULE, LIFETIME)

        def bounce(report: Report, body: MessageBody) -> Deferred[object]:
            self.reports.append(report)
            return succeed(None)

        qm.bouncer = bounce
        qm.startService()
        self.addCleanup(qm.stopService)
        return qm

    def waiting(self, target: ScriptedTarget) -> QueueManager:
        """
        @return: a queue holding Q1 after one temporary failure.
        """
        qm = self.manager(target)
        self.successResultOf(qm.enqueue(makeEnvelope(), b"Subject: q\r\n\r\nbody\r\n"))
        self.clock.advance(0)
        return qm

    def test_holdStopsAttempts(self) -> None:
        """A held message gets no attempt, on schedule or flushed, until released; then at once."""
        target = ScriptedTarget(TEMP, OK)
        qm = self.waiting(target)
        self.assertTrue(self.successResultOf(qm.hold("Q1")))
        self.clock.advance(3 * 300)
        self.assertEqual(qm.flush(), 0)
        self.clock.advance(0)
        self.assertEqual(target.calls, ["Q1"])
        self.assertTrue(self.successResultOf(qm.release("Q1")))
        self.clock.advance(0)
        self.assertEqual(target.calls, ["Q1", "Q1"])
        self.assertEqual(qm.items, {})

    def test_holdSurvivesRestart(self) -> None:
        """The hold is in the stored envelope: a restarted queue keeps it."""
        target = ScriptedTarget(TEMP)
        qm = self.waiting(target)
        self.successResultOf(qm.hold("Q1"))
        qm.stopService()
        again = self.manager(target)
        self.clock.advance(3600)
        self.assertEqual(target.calls, ["Q1"])
        self.assertTrue(again.describe("Q1")["held"])

    def test_holdDuringAttempt(self) -> None:
        """A hold given while an attempt runs holds the message once the attempt ends."""
        attempt: Deferred[dict[Recipient, Reply]] = Deferred()
        target = ScriptedTarget(attempt)
        qm = self.manager(target)
        self.successResultOf(qm.enqueue(makeEnvelope(), b"x"))
        self.clock.advance(0)
        self.assertEqual(qm.describe("Q1")["next_reason"], "being delivered right now")
        self.successResultOf(qm.hold("Q1"))
        attempt.callback({r: TEMP for r in makeEnvelope().pending})
        self.clock.advance(3600)
        self.assertEqual(target.calls, ["Q1"])
        self.assertTrue(self.spool.readEnvelope("Q1").extra[HELD])

    def test_bounceReports(self) -> None:
        """bounce fails every pending recipient with 5.0.0, reports it to the sender and removes the message."""
        qm = self.waiting(ScriptedTarget(TEMP))
        self.assertTrue(self.successResultOf(qm.bounce("Q1")))
        [report] = self.reports
        self.assertEqual(report.event, FAILURE)
        [(recipient, reply)] = report.recipients
        self.assertEqual(reply, S550_BOUNCED)
        self.assertEqual(recipient.state, "failed")
        self.assertEqual(
            [a.reply for a in recipient.history],
            [str(TEMP), "550 5.0.0 Bounced by the administrator"],
        )
        self.assertEqual(qm.items, {})
        self.assertEqual([*self.path.glob("Q1.msg"), *self.path.glob("Q1.env")], [])

    def test_bounceDuringAttempt(self) -> None:
        """A message being delivered cannot be bounced until its attempt ends."""
        qm = self.manager(ScriptedTarget(Deferred()))
        self.successResultOf(qm.enqueue(makeEnvelope(), b"x"))
        self.clock.advance(0)
        self.assertRaises(ValueError, qm.bounce, "Q1")

    def test_unknown(self) -> None:
        """hold, release and bounce of a message not queued say so."""
        qm = self.manager(ScriptedTarget())
        for action in (qm.hold, qm.release, qm.bounce):
            self.assertFalse(self.successResultOf(action("Q9")))


class ProtocolTests(SynchronousTestCase):
    """
    L{ControlProtocol} and L{QueueCommands} over a L{StringTransport}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.spool = Spool(Path(self.mktemp()), SynchronousRunner())
        self.target = ScriptedTarget(TEMP)
        self.queue = QueueManager(self.spool, self.target, self.clock, SCHEDULE, LIFETIME)
        self.queue.startService()
        self.addCleanup(self.queue.stopService)
        self.successResultOf(
            self.queue.enqueue(makeEnvelope(), b"Subject: q\r\nFrom: s@remote.test\r\n\r\nbody\r\n")
        )
        self.clock.advance(0)
        self.transport = StringTransport()
        self.protocol = ControlProtocol(QueueCommands(self.queue, self.spool, SynchronousRunner()))
        self.protocol.makeConnection(self.transport)

    def ask(self, *requests: object) -> list[dict[str, Any]]:
        """
        Send C{requests} (JSON values, or bytes as they are) in one go.

        @return: the answers, decoded.
        """
        self.transport.clear()
        self.protocol.dataReceived(
            b"".join(
                r if isinstance(r, bytes) else json.dumps(r).encode() + b"\n" for r in requests
            )
        )
        return [json.loads(line) for line in self.transport.value().splitlines()]

    def test_list(self) -> None:
        """list answers with a description of every queued message."""
        [answer] = self.ask({"command": "list"})
        self.assertTrue(answer["ok"])
        [message] = answer["data"]
        self.assertEqual(message["id"], "Q1")
        self.assertEqual(message["recipients"][0]["last_error"], str(TEMP))

    def test_showHasHeaders(self) -> None:
        """show answers with the description and the message's headers, never its body."""
        [answer] = self.ask({"command": "show", "id": "Q1"})
        self.assertEqual(answer["data"]["headers"], "Subject: q\r\nFrom: s@remote.test\r\n")
        self.assertEqual(answer["data"]["next_reason"], "retry 1 of the schedule (1m)")

    def test_holdFlushRelease(self) -> None:
        """Requests on one connection are answered in order, each in one line."""
        answers = self.ask(
            {"command": "hold", "id": "Q1"},
            {"command": "flush", "id": "Q1"},
            {"command": "release", "id": "Q1"},
        )
        self.assertEqual(
            [a.get("text", a.get("error")) for a in answers],
            [
                "Q1: held; no attempt until 'mta queue release Q1'",
                "Q1: held; 'mta queue release Q1' tries it now",
                "Q1: released, to be tried now",
            ],
        )
        self.assertEqual([a["ok"] for a in answers], [True, False, True])

    def test_bounceAndDelete(self) -> None:
        """bounce and delete answer with what they did; the message is gone after either."""
        [answer] = self.ask({"command": "bounce", "id": "Q1"})
        self.assertTrue(answer["ok"], answer)
        [answer] = self.ask({"command": "delete", "id": "Q1"})
        self.assertEqual(answer, {"ok": False, "error": "Q1: no such message in the queue"})

    def test_flushAll(self) -> None:
        """flush without an id counts what it flushed and triggers the attempts."""
        self.target.replies.append(OK)
        [answer] = self.ask({"command": "flush"})
        self.assertEqual(answer["text"], "1 message(s) to be tried now")
        self.clock.advance(0)
        self.assertEqual(self.queue.items, {})

    def test_badRequests(self) -> None:
        """Unknown commands, missing ids and lines that are not JSON get one error line each."""
        answers = self.ask(
            {"command": "nuke"},
            {"command": "hold"},
            b"not json\n",
            {"command": 3},
            {"command": "show", "id": "Q9"},
        )
        self.assertEqual(
            [a["error"] for a in answers],
            [
                "unknown command 'nuke'",
                "hold needs a queue id",
                "bad request: not a JSON object with a command",
                "bad request: command and id must be strings",
                "Q9: no such message in the queue",
            ],
        )

    def test_tooLong(self) -> None:
        """A line too long to be a request is refused and the connection closed."""
        [answer] = self.ask(b"x" * 10_000)
        self.assertEqual(answer, {"ok": False, "error": "request too long"})
        self.assertTrue(self.transport.disconnecting)


class ControlServerTests(TestCase):
    """
    L{ControlServer} on a real UNIX socket, asked by
    L{ControlRequests.request} from a thread.
    """

    def setUp(self) -> None:
        # Deeper than a socket path may be, as trial's folders often are.
        self.dataDir = Path(self.mktemp()).absolute() / ("d" * 100)
        (self.dataDir / "queue").mkdir(parents=True)
        self.control = ControlRequests(self.dataDir / "queue")
        self.spool = Spool(self.dataDir / "queue", SynchronousRunner())
        self.queue = QueueManager(self.spool, ScriptedTarget(), Clock(), SCHEDULE, LIFETIME)
        commands = QueueCommands(self.queue, self.spool, SynchronousRunner())
        self.server = ControlServer(self.control.socketPath, commands, reactor)  # type: ignore[arg-type]

    @inlineCallbacks
    def test_roundTrip(self) -> Any:
        """The server replaces a stale socket with a 0600 one, answers requests and removes it at stop."""
        self.control.socketPath.write_text("stale")
        self.server.startService()
        mode = stat.S_IMODE(os.stat(self.control.socketPath).st_mode)
        self.assertEqual(mode, 0o600)
        self.assertTrue(stat.S_ISSOCK(os.stat(self.control.socketPath).st_mode))
        messages = yield deferToThread(self.control.request, "list")
        self.assertEqual(messages, [])
        failure = yield deferToThread(self.control.request, "hold", "Q9").addErrback(
            lambda f: f.trap(ControlError) and f.value
        )
        self.assertEqual(str(failure), "Q9: no such message in the queue")
        yield self.server.stopService()
        self.assertFalse(self.control.socketPath.exists())

    def test_nobodyListening(self) -> None:
        """Asking with no server on the socket fails with one line naming the socket."""
        error = self.assertRaises(ControlError, self.control.request, "list")
        self.assertIn("cannot reach the running server", str(error))
