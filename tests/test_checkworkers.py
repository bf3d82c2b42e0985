"""
Tests for L{mta.policy.workers} (the check worker processes as the server
runs them), L{mta.policy.checkworker} (the child's side) and
L{mta.policy.frames}.
"""

from __future__ import annotations

import os
import signal
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mta.config import ChecksConfig
from mta.dns import DNSNameError, DNSTemporaryError, MXRecord
from mta.envelope import Address
from mta.policy.authresults import CheckJob
from mta.policy.checkworker import ServerLookups
from mta.policy.frames import FrameError, FrameReader, decodeAnswer, encodeAnswer, encodeFrame
from mta.policy.workers import CheckWorkers, WorkerLost
from mta.testing.fakes import FakeResolver
from tests.test_dkimverify import MESSAGE, rsaKey, sign

reactor = cast(Any, _reactor)
CLIENT = "192.0.2.10"


class FrameTests(SynchronousTestCase):
    """
    L{encodeFrame} and L{FrameReader}.
    """

    def test_roundTrip(self) -> None:
        """
        Frames come out as they went in, however the stream is cut.
        """
        stream = encodeFrame({"op": "job", "id": 1}, b"\x00\xffdata\r\n") + encodeFrame({"a": [1]})
        for step in (1, 3, 7, len(stream)):
            reader = FrameReader()
            frames = []
            for i in range(0, len(stream), step):
                frames += reader.feed(stream[i : i + step])
            self.assertEqual(
                frames, [({"op": "job", "id": 1}, b"\x00\xffdata\r\n"), ({"a": [1]}, b"")]
            )

    def test_broken(self) -> None:
        """
        Lengths that make no sense, or a head that is no JSON object, are
        L{FrameError}.
        """
        self.assertRaises(FrameError, FrameReader().feed, b"\xff\xff\xff\xff\x00\x00\x00\x01")
        self.assertRaises(FrameError, FrameReader().feed, b"\x00\x00\x00\x05\x00\x00\x00\x01x")
        self.assertRaises(FrameError, FrameReader().feed, b"\x00\x00\x00\x06\x00\x00\x00\x02[]")

    def test_answers(self) -> None:
        """
        DNS answers survive their JSON shape, TXT byte for byte.
        """
        txt = [b"v=spf1 \xe9 -all", b""]
        self.assertEqual(decodeAnswer("TXT", encodeAnswer("TXT", txt)), txt)
        mx = [MXRecord(10, "mx.example.test"), MXRecord(0, "")]
        self.assertEqual(decodeAnswer("MX", encodeAnswer("MX", mx)), mx)
        self.assertEqual(decodeAnswer("PTR", encodeAnswer("PTR", ["a.test"])), ["a.test"])


class ServerLookupsTests(SynchronousTestCase):
    """
    The child's lookups: sent to the server, answers kept as long as the
    server said.
    """

    def setUp(self) -> None:
        self.now = 100.0
        self.sent: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []
        self.lookups = ServerLookups(self.send, lambda: self.now)

    def send(self, frame: dict[str, Any]) -> None:
        self.sent.append(frame)
        # The server answers before the asking thread waits.
        self.lookups.answered({**frame, **self.answers.pop(0)})

    def test_keptForTTL(self) -> None:
        """
        An answer with a TTL is reused until the TTL runs out.
        """
        self.answers = [{"ok": ["v=spf1 -all"], "ttl": 30}, {"ok": ["v=spf1 +all"], "ttl": 0}]
        self.assertEqual(self.lookups("TXT", "a.test"), [b"v=spf1 -all"])
        self.now += 29
        self.assertEqual(self.lookups("TXT", "a.test"), [b"v=spf1 -all"])
        self.assertEqual(len(self.sent), 1)
        self.now += 2
        self.assertEqual(self.lookups("TXT", "a.test"), [b"v=spf1 +all"])
        self.assertEqual(len(self.sent), 2)

    def test_errors(self) -> None:
        """
        NXDOMAIN is L{DNSNameError} (kept for its TTL); a temporary
        failure is L{DNSTemporaryError} and never kept.
        """
        self.answers = [
            {"error": "name", "reason": "NXDOMAIN", "ttl": 60},
            {"error": "temp", "reason": "SERVFAIL"},
            {"error": "temp", "reason": "SERVFAIL"},
        ]
        self.assertRaises(DNSNameError, self.lookups, "TXT", "gone.test")
        self.assertRaises(DNSNameError, self.lookups, "TXT", "gone.test")
        self.assertRaises(DNSTemporaryError, self.lookups, "MX", "b.test")
        self.assertRaises(DNSTemporaryError, self.lookups, "MX", "b.test")
        self.assertEqual(len(self.sent), 3)

    def test_closed(self) -> None:
        """
        Once the server is gone, lookups not in the cache fail for now.
        """
        self.lookups.close()
        self.assertRaises(DNSTemporaryError, self.lookups, "TXT", "a.test")
        self.assertEqual(self.sent, [])


class CachingResolver(FakeResolver):
    """
    A L{FakeResolver} whose answers the server's cache keeps 300 s.
    """

    def cachedFor(self, kind: str, name: str, *args: str) -> float:
        return 300.0


class CheckWorkersTests(TestCase):
    """
    L{CheckWorkers}: real child processes, their DNS through the server's
    resolver.
    """

    def setUp(self) -> None:
        self.resolver = CachingResolver()
        self.private, record = rsaKey()
        self.resolver.txt["s1._domainkey.example.test"] = [record]
        self.resolver.txt["example.test"] = [b"v=spf1 ip4:192.0.2.10 -all"]
        self.resolver.txt["_dmarc.example.test"] = [b"v=DMARC1; p=reject"]
        self.workers = CheckWorkers(reactor, self.resolver, "mx.our.test", ChecksConfig(), 1, 2)
        self.workers.startService()
        self.addCleanup(self.workers.stopService)

    def job(self, data: bytes | None = None, ip: str = CLIENT) -> CheckJob:
        data = sign(MESSAGE, self.private) if data is None else data
        return CheckJob(ip, Address("bounce", "example.test"), "h.test", data, 0.5)

    async def test_checkThroughParentDNS(self) -> None:
        """
        A job is checked in the child; its lookups are asked of the
        server's resolver once, then answered from the child's copy for
        as long as the resolver's cache keeps them.
        """
        outcome = await self.workers.check(self.job())
        assert outcome.header is not None
        self.assertIn("spf=pass", outcome.header)
        self.assertIn("dkim=pass header.d=example.test", outcome.header)
        self.assertIn("dmarc=pass", outcome.header)
        self.assertEqual(len(self.resolver.queries), 3)
        again = await self.workers.check(self.job())
        self.assertEqual(again.header, outcome.header)
        self.assertEqual(len(self.resolver.queries), 3)

    async def test_refusal(self) -> None:
        """
        A refusal comes back as its code and text.
        """
        tampered = sign(MESSAGE, self.private).replace(b"Hello", b"Bye")
        outcome = await self.workers.check(self.job(tampered, ip="203.0.113.5"))
        assert outcome.refusal is not None
        self.assertEqual(outcome.refusal[0], 550)
        self.assertIn("DMARC policy is reject", outcome.refusal[1])

    async def test_restartAfterDeath(self) -> None:
        """
        A child that dies takes its in-flight jobs with it (they fail with
        L{WorkerLost}, never pass) and another child takes over.
        """
        hanging: Deferred[list[bytes]] = Deferred()
        asked: list[str] = []

        def hang(name: str) -> Deferred[list[bytes]]:
            asked.append(name)
            return hanging

        answer = self.resolver.lookupTXT
        self.patch(self.resolver, "lookupTXT", hang)
        [worker] = self.workers.workers
        worker.started -= 60  # not a child that died young: restarted at once
        d = self.workers.check(self.job())
        for _ in range(400):
            if asked:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertTrue(asked)
        assert worker.transport is not None and worker.transport.pid is not None
        os.kill(worker.transport.pid, signal.SIGKILL)
        failure = await self.assertFailure(d, WorkerLost)
        self.assertIn("ended", str(failure))
        [replacement] = self.workers.workers
        self.assertIsNot(replacement, worker)
        self.assertTrue(replacement.alive)
        hanging.callback([])  # answered too late: the dead child gets nothing
        self.patch(self.resolver, "lookupTXT", answer)
        outcome = await self.workers.check(self.job())
        assert outcome.header is not None
        self.assertIn("dkim=pass", outcome.header)

    async def test_stop(self) -> None:
        """
        Stopping closes the children's input; they exit, the service's
        Deferred fires, and later jobs fail with L{WorkerLost}.
        """
        [worker] = self.workers.workers
        await self.workers.stopService()
        self.assertFalse(worker.alive)
        self.assertEqual(self.workers.workers, [])
        await self.assertFailure(self.workers.check(self.job()), WorkerLost)
