# -*- test-case-name: tests.test_threads -*-
"""
The bounded thread pool every blocking call goes through.

fsync, file copies, directory reloads and argon2 hashing run here so the
reactor thread only parses and dispatches.  L{BlockingRunner} is a service:
the pool starts and stops with the service tree.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mta.interfaces import IBlockingRunner

_T = TypeVar("_T")

_log = Logger(namespace="mta.threads")


#: One call for a L{BlockingRunner} thread: the function, its arguments and
#: the Deferred its result goes to.
_Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Deferred[Any]]


@implementer(IBlockingRunner)
class BlockingRunner(Service):
    """
    An L{IBlockingRunner} on a private, bounded set of threads fed by one
    C{queue.SimpleQueue}.

    Each call is a tuple put on the queue; an idle thread takes it, runs
    it and hands the result to the reactor thread with C{callFromThread}.
    That is all Twisted's C{ThreadPool} does for us here, at less than half
    its CPU per call (about 23 against 51 us, in-process).  The threads
    start with the service and are joined when it stops, after the calls
    already queued.

    A I{draining} runner's thread takes every call waiting on the queue
    at once, runs them one after another and hands all their results
    back with one C{callFromThread}.  That is for many short calls that
    never wait (the inbound checks of messages whose DNS answers are all
    cached): under load its one thread is still busy when the next call
    comes, so no thread is woken for it, no second thread contends for
    the GIL and the reactor is woken once per batch, not per call.  On
    a 2-CPU VM each of those wake-ups costs about 20 us of CPU and cold
    caches on both sides (C{bench/README.md}).  A call that may wait
    (disk, DNS) belongs on a runner that does not drain: every call
    drained with it would wait too.

    @ivar threads: the worker threads while the service runs.
    """

    def __init__(
        self, reactor: IReactorFromThreads, maxThreads: int, name: str = "io", drain: bool = False
    ) -> None:
        """
        @param drain: take every waiting call at once (see above).
        """
        self._reactor = reactor
        self._size = max(1, maxThreads)
        self._name = name
        self._drain = drain
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []

    def startService(self) -> None:
        super().startService()
        work = self._workDraining if self._drain else self._work
        for i in range(self._size):
            thread = threading.Thread(target=work, name=f"mta-{self._name}-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stopService(self) -> None:
        # A tree stopped twice (a test's clean-up after an explicit stop)
        # must not stop the threads twice.
        if not self.running:
            return
        super().stopService()
        for _ in self.threads:
            self._queue.put(None)
        for thread in self.threads:
            thread.join()
        self.threads = []

    def _work(self) -> None:
        """
        One worker thread: run calls until told to stop (L{None}).
        """
        get = self._queue.get
        callFromThread = self._reactor.callFromThread
        while True:
            call = get()
            if call is None:
                return
            callFromThread(*_outcome(call))
            del call

    def _workDraining(self) -> None:
        """
        One worker thread of a draining runner: run every waiting call,
        hand their results back at once, until told to stop (L{None}).
        """
        get = self._queue.get
        getWaiting = self._queue.get_nowait
        callFromThread = self._reactor.callFromThread
        stops = 0
        while not stops:
            calls = [get()]
            while True:
                try:
                    calls.append(getWaiting())
                except queue.Empty:
                    break
            outcomes: list[tuple[Callable[[Any], object], Any]] = []
            for call in calls:
                if call is None:
                    stops += 1
                else:
                    outcomes.append(_outcome(call))
            if outcomes:
                callFromThread(_fireAll, outcomes)
            del calls, outcomes, call
        # Another thread's stop, drained with ours: give it back.
        for _ in range(stops - 1):
            self._queue.put(None)

    def run(self, f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        """
        Call C{f} on one of the threads; see L{IBlockingRunner.run}.
        """
        d: Deferred[_T] = Deferred()
        self._queue.put((f, args, kwargs, d))
        return d


def _outcome(call: _Call) -> tuple[Callable[[Any], object], Any]:
    """
    Run one call of a L{BlockingRunner}.

    @return: how to fire its Deferred, and with what.
    """
    f, args, kwargs, d = call
    try:
        return (d.callback, f(*args, **kwargs))
    except BaseException:
        return (d.errback, Failure())


def _fireAll(outcomes: list[tuple[Callable[[Any], object], Any]]) -> None:
    """
    Fire the Deferreds of a draining runner's batch, in order (on the
    reactor thread).
    """
    for fire, outcome in outcomes:
        fire(outcome)


@implementer(IBlockingRunner)
class SynchronousRunner:
    """
    An L{IBlockingRunner} that calls C{f} at once, on the calling thread.

    For unit tests only: it keeps them deterministic and reactor-free.
    """

    def run(self, f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        """
        Call C{f} now; see L{IBlockingRunner.run}.
        """
        try:
            return succeed(f(*args, **kwargs))
        except BaseException:
            return fail()


class ParallelSync(Service):
    """
    Runs the fsyncs of one batch side by side.

    A batch (see L{BatchingRunner}) writes all its files first; syncing
    them one after another costs one full round trip to the disk per file,
    while syncs issued together share the device's queue (and, on a
    journalled file system, its commits).  The batch's worker thread waits
    here for all of them, so the reactor thread never does.

    @ivar threads: how many syncs may run at once; below 2, they run one
        by one on the calling thread.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        # An ordinary pool: its threads start on first use.  (A home-made
        # pool of plain threads on a SimpleQueue was measured against it
        # and gained nothing beyond the noise: bench/README.md.)
        self._pool = ThreadPoolExecutor(max(threads, 1), thread_name_prefix="mta-sync")

    def syncAll(
        self,
        fds: Sequence[int],
        sync: Callable[[int], None] = os.fsync,
        directories: Sequence[int] = (),
    ) -> list[OSError | None]:
        """
        Call C{sync} on every descriptor, and C{os.fsync} on every directory
        descriptor, all at once, and wait for them (blocking; on a worker
        thread).

        @return: per descriptor, then per directory, C{None} or the error
            its sync raised.
        """
        return waitForCallback(lambda then: self.syncAllThen(fds, sync, directories, then))

    def syncAllThen(
        self,
        fds: Sequence[int],
        sync: Callable[[int], None],
        directories: Sequence[int],
        then: Callable[[list[OSError | None]], None],
    ) -> None:
        """
        Like L{syncAll}, but return at once and call C{then} with the errors
        once every sync is done: on the sync thread that finished last (or
        on the calling thread, for a single sync or a serial pool).
        C{then} must not raise; it is how a caller starts its next batch
        while this one's syncs are still running.
        """
        calls = [(sync, fd) for fd in fds] + [(os.fsync, fd) for fd in directories]
        if len(calls) < 2 or self.threads < 2:
            then([_syncOne(call) for call in calls])
            return
        errors: list[OSError | None] = [None] * len(calls)
        remaining = [len(calls)]
        lock = threading.Lock()

        def run(i: int) -> None:
            errors[i] = _syncOne(calls[i])
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            try:
                then(errors)
            except BaseException:
                # The pool would keep the error in a future nobody reads.
                _log.failure("sync thread: callback failed")

        for i in range(len(calls)):
            self._pool.submit(run, i)

    def stopService(self) -> None:
        super().stopService()
        self._pool.shutdown(wait=False)


#: Syncs one by one, on the calling thread (unit tests, admin command).
SERIAL_SYNC = ParallelSync(1)


def waitForCallback(start: Callable[[Callable[[_T], None]], None]) -> _T:
    """
    Call C{start} with a callback and block until that callback has been
    called, from any thread (a worker thread or the admin command only).

    @return: what the callback was given.
    """
    box: list[_T] = []
    finished = threading.Event()

    def callback(result: _T) -> None:
        box.append(result)
        finished.set()

    start(callback)
    finished.wait()
    return box[0]


def _syncOne(call: tuple[Callable[[int], None], int]) -> OSError | None:
    sync, fd = call
    try:
        sync(fd)
    except OSError as e:
        return e
    return None


_Item = TypeVar("_Item")


def _handOut(
    results: list[_T | BaseException] | Failure, batch: list[tuple[_Item, Deferred[_T]]]
) -> None:
    """
    Fire each item's Deferred with its result, its error, or the failure of
    the whole batch.
    """
    for i, (_, d) in enumerate(batch):
        if isinstance(results, Failure):
            d.errback(results)
        elif isinstance(results[i], BaseException):
            d.errback(Failure(results[i]))
        else:
            d.callback(results[i])  # type: ignore[arg-type]


class BatchingRunner(Generic[_Item, _T]):
    """
    Group commit: items submitted while a batch is running wait for the
    next batch, and each batch is one call on the thread pool.

    Durable writes gain most: a batch writes all its files first and syncs
    them after, so one journal commit covers the whole batch instead of one
    per file (the idea behind "let concurrent messages share an fsync").

    @ivar process: the blocking function given a list of items; it returns
        one result per item, an exception instance for an item that failed.
    """

    def __init__(
        self,
        runner: IBlockingRunner,
        process: Callable[[list[_Item]], list[_T | BaseException]],
        maxBatch: int = 64,
        concurrency: int = 2,
        linger: float = 0.0,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param linger: how long a batch may wait for company before it
            starts (where latency matters less than commits per second);
            needs C{clock}.
        """
        self._runner = runner
        self._linger = linger
        self._clock = clock
        self._lingering: IDelayedCall | None = None
        self.process = process
        self._maxBatch = maxBatch
        self._concurrency = concurrency
        self._running = 0
        self._pending: list[tuple[_Item, Deferred[_T]]] = []

    def submit(self, item: _Item) -> Deferred[_T]:
        """
        Add C{item} to the next batch.

        @return: a Deferred firing with the item's result.
        """
        d: Deferred[_T] = Deferred()
        self._pending.append((item, d))
        self._startBatch()
        return d

    def _startBatch(self) -> None:
        if self._running >= self._concurrency or not self._pending:
            return
        if self._linger and self._clock is not None and len(self._pending) < self._maxBatch:
            if self._lingering is None:
                self._lingering = self._clock.callLater(self._linger, self._lingered)
            return
        self._runBatch()

    def _lingered(self) -> None:
        self._lingering = None
        if self._running < self._concurrency and self._pending:
            self._runBatch()

    def _runBatch(self) -> None:
        batch = self._pending[: self._maxBatch]
        del self._pending[: self._maxBatch]
        self._running += 1
        d = self._runner.run(self.process, [item for item, _ in batch])
        d.addBoth(self._finished, batch)

    def _finished(
        self, results: list[_T | BaseException] | Failure, batch: list[tuple[_Item, Deferred[_T]]]
    ) -> None:
        self._running -= 1
        if self._lingering is not None and self._lingering.active():
            self._lingering.cancel()
        self._lingering = None
        _handOut(results, batch)
        self._startBatch()


#: How a L{CommitLoop}'s process hands over a batch's results, from any thread.
Deliver = Callable[[list[_T | BaseException]], None]


class CommitLoop(Generic[_Item, _T]):
    """
    Pipelined group commit on one worker thread.

    Items submitted while a batch is being written wait for the next one.
    C{process} is given a batch and a C{deliver} callable: it does the
    batch's serial part (writing files) on the loop's thread, starts what
    may overlap (the syncs, see L{ParallelSync.syncAllThen}) and returns;
    whoever finishes the batch calls C{deliver} with one result per item,
    from any thread.  The loop meanwhile writes the next batch, so one
    batch's writes overlap the last one's syncs, and no batch waits for a
    round trip through the reactor.  This is what the queue's writes, on
    which every "250 Ok" waits, go through.

    C{process} either raises (before calling C{deliver}) or calls
    C{deliver} exactly once.
    """

    def __init__(
        self,
        runner: IBlockingRunner,
        process: Callable[[list[_Item], Deliver[_T]], None],
        callFromThread: Callable[..., object] | None = None,
        maxBatch: int = 256,
    ) -> None:
        """
        @param callFromThread: runs a function on the reactor thread, such
            as C{reactor.callFromThread}; C{None} calls it at once, for a
            runner that runs on the calling thread (L{SynchronousRunner}).
        """
        self._runner = runner
        self.process = process
        self._callFromThread = callFromThread
        self._maxBatch = maxBatch
        self._lock = threading.Lock()
        self._pending: list[tuple[_Item, Deferred[_T]]] = []
        self._running = False

    def submit(self, item: _Item) -> Deferred[_T]:
        """
        Add C{item} to the next batch (on the reactor thread).

        @return: a Deferred firing with the item's result.
        """
        d: Deferred[_T] = Deferred()
        with self._lock:
            self._pending.append((item, d))
            if self._running:
                return d
            self._running = True
        self._runner.run(self._loop).addErrback(self._crashed)
        return d

    def _loop(self) -> None:
        while True:
            with self._lock:
                batch = self._pending[: self._maxBatch]
                del self._pending[: self._maxBatch]
                if not batch:
                    self._running = False
                    return

            def deliver(
                results: list[_T | BaseException] | Failure,
                batch: list[tuple[_Item, Deferred[_T]]] = batch,
            ) -> None:
                if self._callFromThread is None:
                    _handOut(results, batch)
                else:
                    self._callFromThread(_handOut, results, batch)

            try:
                self.process([item for item, _ in batch], deliver)
            except BaseException:
                deliver(Failure())

    def _crashed(self, failure: Failure) -> None:
        # Only if the runner itself failed: hand the error to everyone.
        with self._lock:
            batch, self._pending = self._pending, []
            self._running = False
        _handOut(failure, batch)
