"""
Tests for L{mta.tap}: how the service tree is built, and what stops a start.
"""

from __future__ import annotations

import io
import sys
from dataclasses import replace
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mta import tap
from mta.queue.spool import Spool
from mta.smtp.clientparts import ClientPolicy
from mta.tap import MailServer, Options, StartupError, buildService, listeningPorts
from mta.threads import SynchronousRunner
from tests.e2e.harness import testConfig
from tests.test_spool import makeEnvelope


class FakeReactor(Clock):
    """
    A clock that can also take calls from threads (nothing here runs any).
    """

    def callFromThread(self, f: object, *args: object) -> None:
        raise AssertionError("no thread should call back in these tests")


class QueueLoadTests(SynchronousTestCase):
    """
    The queue is loaded while the tree is built, before any listener.
    """

    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp()).absolute()
        self.dataDir.mkdir()
        self.config = testConfig(self.dataDir)

    def build(self) -> MailServer:
        """
        Build (never start) a tree; let go of its queue lock at the end.
        """
        top = buildService(self.config, FakeReactor())
        self.addCleanup(lambda: top.lockFile and top.lockFile.close())
        return top

    def test_queueLoadedBeforeStart(self) -> None:
        """A queued message is in the manager once the tree is built, before it starts."""
        queueDir = self.dataDir / "queue"
        Spool(queueDir, SynchronousRunner()).storeSync(makeEnvelope("Q1"), b"hello\r\n")
        top = self.build()
        preloaded = top.queue._preloaded or []
        self.assertEqual([e.queueId for e in preloaded], ["Q1"])

    def test_unreadableQueueStopsBuild(self) -> None:
        """A queue entry that cannot be read stops the build with one line naming the folder."""
        (self.dataDir / "queue" / "0abc.msg").mkdir(parents=True)
        e = self.assertRaises(StartupError, buildService, self.config, FakeReactor())
        self.assertEqual(
            str(e),
            f"queue: cannot load {self.dataDir / 'queue'}: Is a directory "
            f"({self.dataDir / 'queue' / '0abc.msg'})",
        )

    def test_queueNotAFolder(self) -> None:
        """A data_dir/queue that is a regular file stops the build with one line."""
        (self.dataDir / "queue").write_text("not a folder\n")
        e = self.assertRaises(StartupError, buildService, self.config, FakeReactor())
        self.assertTrue(str(e).startswith(f"queue: cannot load {self.dataDir / 'queue'}: "))
        self.assertEqual(len(str(e).splitlines()), 1)

    def test_failedBuildLetsGoOfLock(self) -> None:
        """After a failed build the queue lock is free for the next try."""
        bad = self.dataDir / "queue" / "0abc.msg"
        bad.mkdir(parents=True)
        self.assertRaises(StartupError, buildService, self.config, FakeReactor())
        bad.rmdir()
        top = self.build()
        self.assertEqual(len(listeningPorts(top, "smtp")), 1)

    def test_makeServiceExitsWithOneLine(self) -> None:
        """makeService turns a queue that cannot load into one line on stderr and exit status 1."""
        (self.dataDir / "queue").write_text("not a folder\n")
        config = self.dataDir / "mta.toml"
        config.write_text(f'data_dir = "{self.dataDir}"\ndomains = ["example.com"]\n')
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        options = Options()
        options.parseOptions(["--config", str(config)])
        e = self.assertRaises(SystemExit, tap.makeService, options)
        self.assertEqual(e.code, 1)
        [line] = stderr.getvalue().splitlines()
        self.assertTrue(line.startswith("mta: queue: cannot load "), line)


class RelayBuildTests(SynchronousTestCase):
    """
    L{tap.buildRelay}: how C{[relay]} becomes the relay's client policy.
    """

    def policy(self, smarthost: str) -> ClientPolicy:
        base = testConfig(Path(self.mktemp()).absolute())
        config = replace(base, relay=replace(base.relay, smarthost=smarthost))
        relay = tap.buildRelay(config, FakeReactor(), SynchronousRunner())
        return relay._policy

    def test_smarthostPort465ImplicitTLS(self) -> None:
        """
        A smarthost on port 465 (submissions, RFC 8314) is spoken to over
        implicit TLS; on any other port with STARTTLS, required.
        """
        implicit = self.policy("relay.example.net:465")
        self.assertEqual((implicit.implicitTLS, implicit.tls), (True, "required"))
        starttls = self.policy("relay.example.net:587")
        self.assertEqual((starttls.implicitTLS, starttls.tls), (False, "required"))

    def test_mxDeliveryOpportunistic(self) -> None:
        """
        Without a smarthost, MX hosts get opportunistic STARTTLS, never
        implicit TLS.
        """
        mx = self.policy("")
        self.assertEqual((mx.implicitTLS, mx.tls), (False, "opportunistic"))
