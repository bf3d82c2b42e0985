# -*- test-case-name: tests.test_checkworkers -*-
"""
Check worker processes: the inbound SPF, DKIM and DMARC checks run in a
few child processes, as milters and policy services do for other MTAs, so
that their Python work uses another CPU instead of taking the server's
GIL (measured: bench/README.md, "check worker processes").

L{CheckWorkers} is a service: it starts C{processes} children
(C{python -m mta.policy.checkworker}) with the service tree and stops them
with it.  L{CheckWorkers.check} sends a job (the envelope facts and the
message, in a frame of L{mta.policy.frames}) to the child with the fewest
jobs in hand and fires with the L{CheckOutcome}.  A child's DNS questions
come back here and are asked of the server's one resolver
(L{mta.dns}), so C{[dns] nameservers} and the TTL cache hold; each answer
goes back with how long that cache keeps it.

A child that dies is started again (after L{RESTART_DELAY} when it died
young); the jobs it had fail with L{WorkerLost}, which
L{mta.policy.authresults.MailAuthentication} turns into a temporary
failure where a check is enforced, never a pass.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import mta
from mta.config import ChecksConfig
from mta.dns import DNSNameError, DNSTemporaryError
from mta.interfaces import IDNSResolver
from mta.policy.authresults import CheckJob, CheckOutcome
from mta.policy.frames import KINDS, FrameError, FrameReader, encodeAnswer, encodeFrame

_log = Logger(namespace="mta.checkworkers")

#: Child processes: one per CPU the checks may use besides the server's.
PROCESSES = 1

#: Threads per child: a job may wait seconds on DNS, others go on meanwhile.
THREADS = 8

#: A child that dies sooner than this after its start is started again
#: only after L{RESTART_DELAY} (so a broken installation does not spin).
MIN_UPTIME = 5.0
RESTART_DELAY = 1.0

#: Seconds a child may take to exit after its input is closed before it
#: is killed.
STOP_TIMEOUT = 5.0


class WorkerLost(Exception):
    """
    The job's worker process died (or none was running) before it answered.
    """


class WorkerJobError(Exception):
    """
    The job broke in the worker (a bug); the message is its traceback.
    """


class _Worker(ProcessProtocol):
    """
    One child process: the jobs it has in hand, its DNS questions.
    """

    def __init__(self, owner: CheckWorkers, started: float) -> None:
        self._owner = owner
        self.started = started
        self.jobs: dict[int, Deferred[CheckOutcome]] = {}
        self.ended: Deferred[None] = Deferred()
        self.alive = True
        self._reader = FrameReader()
        self._errors = b""

    def connectionMade(self) -> None:
        self.send(self._owner.startFrame())

    def send(self, obj: dict[str, Any], payload: bytes = b"") -> None:
        transport: IProcessTransport | None = self.transport
        if self.alive and transport is not None:
            transport.write(encodeFrame(obj, payload))

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 2:
            self._errors += data
            *lines, self._errors = self._errors.split(b"\n")
            for line in lines:
                _log.warn("check worker: {line}", line=line.decode("utf-8", "replace"))
            return
        try:
            frames = self._reader.feed(data)
        except FrameError as e:
            _log.error("check worker: {e}; stopping it", e=e)
            self.kill()
            return
        for frame, _ in frames:
            op = frame.get("op")
            if op == "dns":
                self._owner.answerLookup(self, frame)
            elif op in ("done", "failed"):
                d = self.jobs.pop(int(frame["id"]), None)
                if d is None:
                    continue
                if op == "done":
                    d.callback(_outcome(frame))
                else:
                    d.errback(WorkerJobError(str(frame.get("error", ""))))

    def kill(self) -> None:
        """
        End the process now (its jobs then fail with L{WorkerLost}).
        """
        transport: IProcessTransport | None = self.transport
        if self.alive and transport is not None:
            with contextlib.suppress(OSError, ProcessExitedAlready):
                transport.signalProcess("KILL")

    def processEnded(self, reason: Failure) -> None:
        self.alive = False
        jobs, self.jobs = self.jobs, {}
        self._owner.workerEnded(self, reason)
        for d in jobs.values():
            d.errback(WorkerLost(f"check worker ended: {reason.value}"))
        self.ended.callback(None)


def _outcome(frame: dict[str, Any]) -> CheckOutcome:
    refusal = frame.get("refusal")
    return CheckOutcome(
        refusal=(int(refusal[0]), str(refusal[1])) if refusal else None,
        header=frame.get("header"),
        junk=bool(frame.get("junk")),
        strip=bool(frame.get("strip")),
        line=str(frame.get("line", "")),
        broken=tuple(str(b) for b in frame.get("broken", ())),
    )


class CheckWorkers(Service):
    """
    Runs L{mta.policy.authresults.Checker} in child processes; an
    L{mta.policy.authresults.ChecksRunner}.

    @ivar workers: the live children (for tests).
    """

    def __init__(
        self,
        reactor: Any,
        resolver: IDNSResolver,
        hostname: str,
        config: ChecksConfig,
        processes: int = PROCESSES,
        threads: int = THREADS,
    ) -> None:
        """
        @param reactor: spawns the children and times restarts.
        @param resolver: answers the children's lookups.
        @param hostname: our host name (the authserv-id).
        @param config: C{[checks]}.
        @param processes: how many children.
        @param threads: jobs one child runs at once.
        """
        self._reactor = reactor
        self._resolver = resolver
        self._hostname = hostname
        self._config = config
        self._processes = max(1, processes)
        self._threads = max(1, threads)
        self._next = 0
        self._restarts: list[IDelayedCall] = []
        self.workers: list[_Worker] = []

    def startFrame(self) -> dict[str, Any]:
        """
        @return: the first frame a child gets: what to check.
        """
        c = self._config
        return {
            "op": "start",
            "hostname": self._hostname,
            "spf": c.spf,
            "dkim": c.dkim,
            "dmarc": c.dmarc,
            "threads": self._threads,
        }

    def startService(self) -> None:
        """
        Start the children; none when C{[checks]} turns everything off
        (then no job ever comes).
        """
        super().startService()
        c = self._config
        if c.spf == c.dkim == c.dmarc == "off":
            return
        for _ in range(self._processes):
            self._spawn()

    def _spawn(self) -> None:
        worker = _Worker(self, self._reactor.seconds())
        root = str(Path(mta.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "mta.policy.checkworker"]
        self._reactor.spawnProcess(
            worker, sys.executable, argv, env=env, childFDs={0: "w", 1: "r", 2: "r"}
        )
        self.workers.append(worker)

    def check(self, job: CheckJob) -> Deferred[CheckOutcome]:
        """
        See L{mta.policy.authresults.ChecksRunner.check}.
        """
        live = [w for w in self.workers if w.alive]
        if not self.running or not live:
            return fail(WorkerLost("no check worker running"))
        worker = min(live, key=lambda w: len(w.jobs))
        self._next += 1
        d: Deferred[CheckOutcome] = Deferred()
        worker.jobs[self._next] = d
        frame = {
            "op": "job",
            "id": self._next,
            "ip": job.ip,
            "local": job.sender.local,
            "domain": job.sender.domain,
            "helo": job.helo,
            "draw": job.draw,
        }
        worker.send(frame, job.data)
        return d

    def answerLookup(self, worker: _Worker, frame: dict[str, Any]) -> None:
        """
        Ask the resolver what a child asked; send it the answer.
        """
        kind = str(frame.get("kind"))
        args = [str(a) for a in frame.get("args", ())]
        reply: dict[str, Any] = {"op": "dns", "id": frame.get("id"), "kind": kind, "args": args}
        if kind not in KINDS or not args:
            worker.send({**reply, "error": "temp", "reason": f"unknown lookup {kind}"})
            return

        def answered(answer: Any) -> None:
            ttl = self._cachedFor(kind, args)
            worker.send({**reply, "ok": encodeAnswer(kind, answer), "ttl": ttl})

        def failed(reason: Failure) -> None:
            if reason.check(DNSNameError):
                ttl = self._cachedFor(kind, args)
                worker.send({**reply, "error": "name", "reason": "NXDOMAIN", "ttl": ttl})
                return
            if reason.check(DNSTemporaryError):
                why = str(getattr(reason.value, "reason", reason.value))
            else:
                _log.failure("check worker lookup {kind} {args}", reason, kind=kind, args=args)
                why = "lookup failed"
            worker.send({**reply, "error": "temp", "reason": why})

        lookup = getattr(self._resolver, f"lookup{kind}")
        maybeDeferred(lookup, *args).addCallbacks(answered, failed)

    def _cachedFor(self, kind: str, args: list[str]) -> float:
        """
        @return: how long the resolver's cache keeps this answer (see
            L{mta.dns.Resolver.cachedFor}); 0, so the child keeps nothing,
            for a resolver without a cache.
        """
        cachedFor = getattr(self._resolver, "cachedFor", None)
        return 0.0 if cachedFor is None else float(cachedFor(kind, *args))

    def workerEnded(self, worker: _Worker, reason: Failure) -> None:
        """
        A child ended: forget it, and start another unless stopping.
        """
        if worker in self.workers:
            self.workers.remove(worker)
        if not self.running:
            return
        _log.error("check worker ended ({why}); starting another", why=reason.value)
        young = self._reactor.seconds() - worker.started < MIN_UPTIME
        if not young:
            self._spawn()
            return

        def restart() -> None:
            self._restarts.remove(call)
            if self.running:
                self._spawn()

        call = self._reactor.callLater(RESTART_DELAY, restart)
        self._restarts.append(call)

    def stopService(self) -> Deferred[None]:
        """
        Close every child's input (it finishes and exits), kill those
        that take longer than L{STOP_TIMEOUT}; fires when all are gone.
        """
        if not self.running:
            return succeed(None)
        super().stopService()
        for call in self._restarts:
            call.cancel()
        self._restarts = []
        ends = []
        for worker in list(self.workers):
            if not worker.alive:
                continue
            assert worker.transport is not None
            worker.transport.closeStdin()
            killer = self._reactor.callLater(STOP_TIMEOUT, worker.kill)
            ends.append(worker.ended.addCallback(_cancel, killer))
        return DeferredList(ends).addCallback(lambda _: None)


def _cancel(_: None, call: IDelayedCall) -> None:
    if call.active():
        call.cancel()


__all__ = ["PROCESSES", "THREADS", "CheckWorkers", "WorkerJobError", "WorkerLost"]
