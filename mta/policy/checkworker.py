# -*- test-case-name: tests.test_checkworkers -*-
"""
A check worker process: C{python -m mta.policy.checkworker}, started by
L{mta.policy.workers.CheckWorkers}, never by hand.

It reads frames (L{mta.policy.frames}) on its standard input and writes
frames to the descriptor that was its standard output (standard output
itself then goes to standard error, so a library that prints cannot
break the stream).  The first frame says what to check (C{start}: our
host name and C{[checks]}); then come C{job}s (a message and its
envelope facts), each run by L{mta.policy.authresults.Checker} on one of
a few threads (a job may wait on DNS) and answered with C{done} (the
outcome) or C{failed} (a traceback).

Every DNS lookup is a C{dns} frame to the server, which asks its resolver
(L{mta.dns}: C{[dns] nameservers}, its TTL cache) and answers with the
records and how long its cache keeps them; the worker keeps an answer
that long and no longer, so a domain's records cost one round trip per
TTL, not one per message.  End of input means stop: lookups still
waiting fail for now and the process exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mta.config import ChecksConfig
from mta.dns import DNSNameError, DNSTemporaryError
from mta.envelope import Address
from mta.policy.authresults import Checker, CheckJob
from mta.policy.frames import FrameReader, decodeAnswer, encodeFrame

#: Seconds a lookup waits for the server before failing for now (the
#: server's resolver gives up well before: see L{mta.dns.DEFAULT_TIMEOUT}).
LOOKUP_TIMEOUT = 60.0

#: Answers kept at most; past it, expired ones go, then all.
CACHE_SIZE = 10_000


class _Waiting:
    """
    A lookup sent to the server, waiting for its answer.
    """

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: tuple[str, Any] = ("temp", "no answer")


class ServerLookups:
    """
    Blocking lookups through the server's resolver, with a cache that
    keeps each answer as long as the server's does.

    @ivar asked: lookups sent to the server (for tests).
    """

    def __init__(self, send: Any, clock: Any = time.monotonic) -> None:
        """
        @param send: writes a frame to the server.
        @param clock: seconds, for the cache.
        """
        self._send = send
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: dict[int, _Waiting] = {}
        self._next = 0
        self._cache: dict[tuple[str, tuple[str, ...]], tuple[float, tuple[str, Any]]] = {}
        self._closed = False
        self.asked = 0

    def __call__(self, kind: str, *args: str) -> Any:
        """
        C{lookup<kind>(*args)} of the server's resolver, blocking.

        @raise DNSNameError: NXDOMAIN.
        @raise DNSTemporaryError: no answer now.
        """
        key = (kind, args)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return self._result(kind, args, cached[1])
            if self._closed:
                raise DNSTemporaryError(args[0] if args else "", kind, "worker stopping")
            self._next += 1
            ident = self._next
            waiting = self._waiting[ident] = _Waiting()
            self.asked += 1
        self._send({"op": "dns", "id": ident, "kind": kind, "args": list(args)})
        if not waiting.done.wait(LOOKUP_TIMEOUT):
            with self._lock:
                self._waiting.pop(ident, None)
            raise DNSTemporaryError(args[0] if args else "", kind, "timed out")
        return self._result(kind, args, waiting.answer)

    def _result(self, kind: str, args: tuple[str, ...], answer: tuple[str, Any]) -> Any:
        what, value = answer
        if what == "ok":
            return decodeAnswer(kind, value)
        name = args[0] if args else ""
        if what == "name":
            raise DNSNameError(name, kind, str(value))
        raise DNSTemporaryError(name, kind, str(value))

    def answered(self, frame: dict[str, Any]) -> None:
        """
        The server's answer to one of our lookups: wake its thread, and
        keep it as long as the server said.
        """
        with self._lock:
            waiting = self._waiting.pop(int(frame["id"]), None)
            if "error" in frame:
                answer: tuple[str, Any] = (str(frame["error"]), frame.get("reason", ""))
            else:
                answer = ("ok", frame["ok"])
            ttl = float(frame.get("ttl", 0))
            if ttl > 0 and waiting is not None:
                if len(self._cache) >= CACHE_SIZE:
                    self._evict()
                key = (str(frame["kind"]), tuple(str(a) for a in frame["args"]))
                self._cache[key] = (self._clock() + ttl, answer)
        if waiting is not None:
            waiting.answer = answer
            waiting.done.set()

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, (expires, _) in self._cache.items() if expires <= now]:
            del self._cache[key]
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()

    def close(self) -> None:
        """
        The server is gone: every lookup waiting fails for now, and so
        does every later one not in the cache.
        """
        with self._lock:
            self._closed = True
            waiting = list(self._waiting.values())
            self._waiting.clear()
        for w in waiting:
            w.answer = ("temp", "worker stopping")
            w.done.set()


def _outcomeFrame(ident: int, checker: Checker, job: CheckJob, lookups: ServerLookups) -> Any:
    try:
        outcome = checker.check(job, lookups)
    except BaseException:
        return {"op": "failed", "id": ident, "error": traceback.format_exc()}
    return {
        "op": "done",
        "id": ident,
        "refusal": list(outcome.refusal) if outcome.refusal else None,
        "header": outcome.header,
        "junk": outcome.junk,
        "strip": outcome.strip,
        "line": outcome.line,
        "broken": list(outcome.broken),
    }


def serve(inFd: int, outFd: int) -> None:
    """
    Read frames from C{inFd} and answer on C{outFd} until end of input.
    """
    writeLock = threading.Lock()

    def send(obj: dict[str, Any]) -> None:
        data = memoryview(encodeFrame(obj))
        with writeLock:
            while data:
                data = data[os.write(outFd, data) :]

    reader = FrameReader()
    lookups = ServerLookups(send)
    checker: Checker | None = None
    pool: ThreadPoolExecutor | None = None

    def run(ident: int, job: CheckJob) -> None:
        assert checker is not None
        # An OSError: the server is gone; we stop at end of input.
        with contextlib.suppress(OSError):
            send(_outcomeFrame(ident, checker, job, lookups))

    try:
        while True:
            chunk = os.read(inFd, 1 << 16)
            if not chunk:
                break
            for frame, payload in reader.feed(chunk):
                op = frame.get("op")
                if op == "dns":
                    lookups.answered(frame)
                elif op == "job" and checker is not None and pool is not None:
                    job = CheckJob(
                        frame["ip"],
                        Address(frame["local"], frame["domain"]),
                        frame["helo"],
                        payload,
                        float(frame["draw"]),
                    )
                    pool.submit(run, int(frame["id"]), job)
                elif op == "start":
                    config = ChecksConfig(frame["spf"], frame["dkim"], frame["dmarc"])
                    checker = Checker(frame["hostname"], config)
                    pool = ThreadPoolExecutor(int(frame["threads"]), "mta-checkworker")
    finally:
        lookups.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def main() -> None:
    """
    Run as C{python -m mta.policy.checkworker}.
    """
    # The server decides when we stop (it closes our input); a Ctrl-C
    # meant for it must not kill us mid-job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    outFd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(0, outFd)


if __name__ == "__main__":
    main()
