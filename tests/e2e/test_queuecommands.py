"""
End to end: the real C{mta queue} command, run as its own process,
against a running tree over the control socket.

Mail for a remote domain stays queued: the tree's DNS points at a
nameserver that is not there, so every attempt ends in C{451 4.4.3} (after
the resolver's timeout: seconds), and the next one is a minute later.
"""

from __future__ import annotations

import json
import smtplib
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.e2e.serverprocess import runAdmin

ALICE = "alice@example.com"
FAR = "far@remote.test"


class QueueCommandTests(TestCase):
    """
    C{mta queue list|show|flush|hold|release|bounce|delete} on a live server.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        dataDir = Path(self.mktemp()).absolute()
        self.server: RunningServer = yield startServer(self, testConfig(dataDir))
        yield deferToThread(self.server.addUser, ALICE, "pw")
        self.configFile = dataDir / "mta.toml"
        self.configFile.write_text(
            f'hostname = "mx.example.com"\ndata_dir = "{dataDir}"\ndomains = ["example.com"]\n'
        )

    def admin(self, *argv: str) -> Any:
        """
        Run C{mta --config ... queue argv} in a process of its own.

        @return: a Deferred firing with (exit status, stdout, stderr).
        """
        d = deferToThread(runAdmin, self.configFile, "queue", *argv)
        return d.addCallback(lambda r: (r.returncode, r.stdout, r.stderr))

    def attempts(self, queueId: str) -> int:
        """
        @return: how many attempts the queue has made at C{queueId}.
        """
        return self.server.queue.items[queueId].recipients[0].attempts

    @inlineCallbacks
    def queued(self) -> Any:
        """
        Send alice's message to FAR and wait for its first attempt.

        @return: a Deferred firing with its queue id.
        """

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=30) as c:
                c.sendmail(ALICE, [FAR], b"Subject: queued\r\nFrom: alice@example.com\r\n\r\nq\r\n")

        before = set(self.server.queue.items)
        yield deferToThread(send)
        yield waitFor(lambda: len(set(self.server.queue.items) - before) == 1)
        [queueId] = set(self.server.queue.items) - before
        yield self.settled(queueId, 1)
        return queueId

    def settled(self, queueId: str, attempts: int) -> Any:
        """
        Wait until C{queueId} has had C{attempts} attempts and none runs.
        """
        queue = self.server.queue
        return waitFor(
            lambda: self.attempts(queueId) >= attempts and not queue.describe(queueId)["busy"],
            timeout=60,
        )

    @inlineCallbacks
    def test_listShowJson(self) -> Any:
        """list and show print the message and its timeline with the DNS failure; --json parses."""
        queueId = yield self.queued()
        code, out, err = yield self.admin("list")
        self.assertEqual(code, 0, err)
        [line] = out.splitlines()
        self.assertTrue(line.startswith(f"{queueId} "), line)
        self.assertIn(f"<{ALICE}> <{FAR}>(pending: 451 4.4.3 ", line)
        code, out, err = yield self.admin("show", queueId)
        self.assertEqual(code, 0, err)
        self.assertIn(f"message {queueId}\n  sender:   <{ALICE}>\n", out)
        self.assertIn(f"recipient <{FAR}>: pending after ", out)
        self.assertRegex(out, r"\n  \d\d:\d\d:\d\d  451 4\.4\.3 ")
        self.assertIn("next attempt: ", out)
        self.assertIn("retry 1 of the schedule (1m)", out)
        self.assertIn("headers:\n", out)
        self.assertIn("  Subject: queued\n", out)
        code, out, err = yield self.admin("list", "--json")
        [message] = json.loads(out)
        self.assertEqual((message["id"], message["sender"]), (queueId, ALICE))
        code, out, err = yield self.admin("show", queueId, "--json")
        message = json.loads(out)
        [rcpt] = message["recipients"]
        self.assertTrue(rcpt["history"][0]["reply"].startswith("451 4.4.3 "), rcpt)
        self.assertIn("Subject: queued\r\n", message["headers"])

    @inlineCallbacks
    def test_holdReleaseBounce(self) -> Any:
        """A held message gets no attempt even when flushed; released it is retried; bounced, alice gets the report."""
        queueId = yield self.queued()
        code, out, err = yield self.admin("hold", queueId)
        self.assertEqual(
            (code, out), (0, f"{queueId}: held; no attempt until 'mta queue release {queueId}'\n")
        )
        envelope = self.server.config.data_dir / "queue" / f"{queueId}.env"
        self.assertTrue(json.loads(envelope.read_text())["extra"]["held"])
        held = self.attempts(queueId)
        code, out, err = yield self.admin("flush", queueId)
        self.assertEqual(
            (code, err), (1, f"mta: {queueId}: held; 'mta queue release {queueId}' tries it now\n")
        )
        code, out, err = yield self.admin("flush")
        self.assertEqual((code, out), (0, "0 message(s) to be tried now\n"))
        code, out, err = yield self.admin("show", queueId)
        self.assertIn("next attempt: held by the administrator", out)
        yield deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(self.attempts(queueId), held)
        self.assertFalse(self.server.queue.describe(queueId)["busy"])

        code, out, err = yield self.admin("release", queueId)
        self.assertEqual((code, out), (0, f"{queueId}: released, to be tried now\n"))
        yield self.settled(queueId, held + 1)

        # Held again first, so that no attempt runs when the bounce comes.
        yield self.admin("hold", queueId)
        code, out, err = yield self.admin("bounce", queueId)
        self.assertEqual(code, 0, err)
        self.assertIn(f"{queueId}: bounced", out)
        yield waitFor(lambda: len(self.server.delivered(ALICE)) == 1)
        [report] = self.server.delivered(ALICE)
        self.assertIn(b"Content-Type: multipart/report", report)
        self.assertIn(b"Status: 5.0.0", report)
        self.assertIn(b"Bounced by the administrator", report)
        self.assertIn(f"Final-Recipient: rfc822;{FAR}".encode(), report)
        self.assertNotIn(queueId, self.server.queue.items)

    @inlineCallbacks
    def test_delete(self) -> Any:
        """delete removes a queued message and its files; a second delete says it is gone."""
        queueId = yield self.queued()
        code, out, err = yield self.admin("delete", queueId)
        self.assertEqual((code, out), (0, f"{queueId}: deleted\n"))
        self.assertEqual(self.server.queue.items, {})
        yield waitFor(
            lambda: not list((self.server.config.data_dir / "queue").glob(f"{queueId}.*[mv]"))
        )
        code, out, err = yield self.admin("delete", queueId)
        self.assertEqual((code, err), (1, f"mta: {queueId}: no such message in the queue\n"))

    @inlineCallbacks
    def test_stoppedServer(self) -> Any:
        """With the server stopped, list reads the files, hold says no server runs, and the socket is gone."""
        queueId = yield self.queued()
        yield self.server.top.stopService()
        self.assertFalse((self.server.config.data_dir / "control.sock").exists())
        code, out, err = yield self.admin("list")
        self.assertEqual(code, 0, err)
        self.assertIn(queueId, out)
        code, out, err = yield self.admin("hold", queueId)
        self.assertEqual(code, 1)
        self.assertIn("no server is running", err)
