"""
Tests for L{mta.threads}: the blocking runners, group commit and
parallel syncs.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mta.testing.fakes import HeldRunner
from mta.threads import BatchingRunner, CommitLoop, Deliver, ParallelSync, SynchronousRunner


class BatchingRunnerTests(SynchronousTestCase):
    """
    L{BatchingRunner}.
    """

    def test_itemsWaitingShareABatch(self) -> None:
        """
        Items submitted while a batch runs go together in the next one, and
        each gets its own result or error.
        """
        runner = HeldRunner()
        batches: list[list[int]] = []

        def process(items: list[int]) -> list[int | BaseException]:
            batches.append(items)
            return [ValueError(i) if i == 3 else i * 10 for i in items]

        batching: BatchingRunner[int, int] = BatchingRunner(runner, process, concurrency=1)
        first = batching.submit(1)
        rest = [batching.submit(i) for i in (2, 3, 4)]
        runner.runOne()
        self.assertEqual(self.successResultOf(first), 10)
        runner.runOne()
        self.assertEqual(batches, [[1], [2, 3, 4]])
        self.assertEqual(self.successResultOf(rest[0]), 20)
        self.failureResultOf(rest[1], ValueError)
        self.assertEqual(self.successResultOf(rest[2]), 40)

    def test_linger(self) -> None:
        """
        With a linger, a batch waits that long for company before it starts.
        """
        clock = Clock()
        batches: list[list[int]] = []

        def process(items: list[int]) -> list[int | BaseException]:
            batches.append(items)
            return list(items)

        batching: BatchingRunner[int, int] = BatchingRunner(
            SynchronousRunner(), process, linger=0.5, clock=clock
        )
        d1, d2 = batching.submit(1), batching.submit(2)
        self.assertNoResult(d1)
        clock.advance(0.5)
        self.assertEqual(batches, [[1, 2]])
        self.assertEqual(self.successResultOf(d2), 2)


class CommitLoopTests(SynchronousTestCase):
    """
    L{CommitLoop}.
    """

    def test_keepsGoingOnTheWorker(self) -> None:
        """
        Items submitted while a batch runs are taken by the same worker call
        as soon as that batch is done; results reach the reactor through
        C{callFromThread}, one call per batch.
        """
        runner = HeldRunner()
        batches: list[list[int]] = []
        handedOver: list[object] = []
        rest: list[Deferred[int]] = []

        def process(items: list[int], deliver: Deliver[int]) -> None:
            batches.append(items)
            if len(batches) == 1:
                # Arrivals while the first batch is being written.
                rest.extend(loop.submit(i) for i in (2, 3))
            deliver([KeyError(i) if i == 3 else -i for i in items])

        def callFromThread(f: Callable[..., object], *args: object) -> None:
            handedOver.append(f)
            f(*args)

        loop: CommitLoop[int, int] = CommitLoop(runner, process, callFromThread)
        first = loop.submit(1)
        runner.runOne()
        self.assertEqual(runner.calls, [])
        self.assertEqual(batches, [[1], [2, 3]])
        self.assertEqual(len(handedOver), 2)
        self.assertEqual(self.successResultOf(first), -1)
        self.assertEqual(self.successResultOf(rest[0]), -2)
        self.failureResultOf(rest[1], KeyError)
        # Idle again: the next item starts a new worker call.
        d = loop.submit(4)
        self.assertEqual(len(runner.calls), 1)
        runner.runOne()
        self.assertEqual(self.successResultOf(d), -4)

    def test_processRaising(self) -> None:
        """
        If the batch function raises, every item of the batch fails with it
        and the loop goes on.
        """
        calls: list[list[int]] = []

        def process(items: list[int], deliver: Deliver[int]) -> None:
            calls.append(items)
            if len(calls) == 1:
                raise OSError("disk gone")
            deliver(list(items))

        loop: CommitLoop[int, int] = CommitLoop(SynchronousRunner(), process)
        self.failureResultOf(loop.submit(1), OSError)
        self.assertEqual(self.successResultOf(loop.submit(2)), 2)

    def test_pipelined(self) -> None:
        """
        The loop takes the next batch as soon as C{process} returns, before
        the last batch's results are in; each batch's results reach its own
        items whenever they come, in any order.
        """
        runner = HeldRunner()
        delivers: list[Deliver[int]] = []
        batches: list[list[int]] = []
        rest: list[Deferred[int]] = []

        def process(items: list[int], deliver: Deliver[int]) -> None:
            batches.append(items)
            delivers.append(deliver)
            if len(batches) == 1:
                rest.extend(loop.submit(i) for i in (2, 3))

        loop: CommitLoop[int, int] = CommitLoop(runner, process, lambda f, *a: f(*a))
        first = loop.submit(1)
        runner.runOne()
        self.assertEqual(batches, [[1], [2, 3]])
        self.assertNoResult(first)
        delivers[1]([20, 30])
        self.assertEqual([self.successResultOf(d) for d in rest], [20, 30])
        self.assertNoResult(first)
        delivers[0]([10])
        self.assertEqual(self.successResultOf(first), 10)


class ParallelSyncTests(SynchronousTestCase):
    """
    L{ParallelSync}.
    """

    def fds(self, n: int) -> list[int]:
        path = self.mktemp()
        os.mkdir(path)
        fds = [os.open(os.path.join(path, str(i)), os.O_CREAT | os.O_WRONLY) for i in range(n)]
        for fd in fds:
            self.addCleanup(os.close, fd)
        return fds

    def test_syncsRunSideBySide(self) -> None:
        """
        With several threads, the syncs of a batch run at the same time (all
        of them are under way before any returns), and the service stops
        its threads.
        """
        sync = ParallelSync(4)
        sync.startService()
        self.addCleanup(sync.stopService)
        barrier = threading.Barrier(4, timeout=10)
        synced: list[int] = []

        def slowSync(fd: int) -> None:
            barrier.wait()
            synced.append(fd)

        fds = self.fds(4)
        self.assertEqual(sync.syncAll(fds, slowSync), [None] * 4)
        self.assertEqual(sorted(synced), sorted(fds))

    def test_errorsPerDescriptor(self) -> None:
        """
        A failed sync is reported for its descriptor only.
        """
        fds = self.fds(3)
        for threads in (1, 3):
            results = ParallelSync(threads).syncAll([fds[0], 999_999, fds[2]])
            self.assertIsNone(results[0])
            self.assertIsInstance(results[1], OSError)
            self.assertIsNone(results[2])

    def test_syncAllThen(self) -> None:
        """
        syncAllThen returns while the syncs are under way and calls back once,
        with the errors of the files and then of the directories, when the
        last of them is done.
        """
        sync = ParallelSync(3)
        self.addCleanup(sync.stopService)
        go = threading.Event()
        called: list[list[OSError | None]] = []
        done = threading.Event()

        def heldSync(fd: int) -> None:
            go.wait(10)

        def then(errors: list[OSError | None]) -> None:
            called.append(errors)
            done.set()

        folder = os.open(self.mktemp().rpartition(os.sep)[0] or ".", os.O_RDONLY)
        self.addCleanup(os.close, folder)
        sync.syncAllThen(self.fds(2), heldSync, [folder, 999_999], then)
        self.assertEqual(called, [])
        go.set()
        self.assertTrue(done.wait(10))
        [errors] = called
        self.assertEqual(errors[:3], [None, None, None])
        self.assertIsInstance(errors[3], OSError)

    def test_failingCallbackLogged(self) -> None:
        """
        A C{then} that raises, against its contract, is logged rather than
        lost in the pool's future.
        """
        sync = ParallelSync(2)
        self.addCleanup(sync.stopService)
        called = threading.Event()

        def then(errors: list[OSError | None]) -> None:
            called.set()
            raise RuntimeError("broken callback")

        sync.syncAllThen(self.fds(2), os.fsync, [], then)
        self.assertTrue(called.wait(10))
        sync.stopService()
        for _ in range(1000):
            if self.flushLoggedErrors(RuntimeError):
                break
            threading.Event().wait(0.01)
        else:
            self.fail("the callback's error was not logged")


class _ThreadCalls:
    """
    An C{IReactorFromThreads} that keeps what worker threads hand back, for
    the test's thread to run.
    """

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[tuple[Callable[..., object], tuple[object, ...]]]
        self.calls = queue.SimpleQueue()

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self.calls.put((f, args))

    def runOne(self) -> None:
        f, args = self.calls.get(timeout=10)
        f(*args)


class RunnerStopTests(SynchronousTestCase):
    """
    L{BlockingRunner} stops cleanly, also when asked twice.
    """

    def test_stopTwice(self) -> None:
        """A second stopService does nothing."""
        from mta.threads import BlockingRunner

        runner = BlockingRunner(_ThreadCalls(), 1)  # type: ignore[arg-type]
        runner.startService()
        runner.stopService()
        runner.stopService()
        self.assertFalse(runner.running)


class BlockingRunnerTests(SynchronousTestCase):
    """
    L{BlockingRunner} runs calls on its own threads and hands each result
    back through C{callFromThread}.
    """

    def setUp(self) -> None:
        from mta.threads import BlockingRunner

        self.reactor = _ThreadCalls()
        self.runner = BlockingRunner(self.reactor, 3, name="t")  # type: ignore[arg-type]
        self.runner.startService()
        self.addCleanup(self.runner.stopService)

    def test_resultOnTheCallersSide(self) -> None:
        """
        The call runs on a worker thread; its Deferred fires only when the
        reactor runs what the worker handed back.
        """
        d = self.runner.run(lambda a, b=0: (threading.get_ident(), a + b), 2, b=3)
        self.assertNoResult(d)
        self.reactor.runOne()
        ident, value = self.successResultOf(d)
        self.assertEqual(value, 5)
        self.assertNotEqual(ident, threading.get_ident())
        self.assertEqual(len(self.runner.threads), 3)
        self.assertTrue(all(t.name.startswith("mta-t-") for t in self.runner.threads))

    def test_error(self) -> None:
        """
        An exception in the call fails its Deferred with that exception.
        """

        def boom() -> None:
            raise ValueError("no")

        d = self.runner.run(boom)
        self.reactor.runOne()
        self.assertEqual(str(self.failureResultOf(d, ValueError).value), "no")

    def test_callsRunTogether(self) -> None:
        """
        Calls waiting on each other run on different threads at once, up
        to the number of threads.
        """
        barrier = threading.Barrier(3, timeout=10)
        ds = [self.runner.run(barrier.wait) for _ in range(3)]
        for _ in ds:
            self.reactor.runOne()
        self.assertEqual(sorted(self.successResultOf(d) for d in ds), [0, 1, 2])

    def test_stopRunsWhatIsQueued(self) -> None:
        """
        Stopping joins the threads after the calls already queued, and
        leaves none running.
        """
        release = threading.Event()
        ds = [self.runner.run(release.wait, 10) for _ in range(5)]
        release.set()
        self.runner.stopService()
        self.assertEqual(self.runner.threads, [])
        for _ in ds:
            self.reactor.runOne()
        self.assertEqual([self.successResultOf(d) for d in ds], [True] * 5)


class DrainingRunnerTests(SynchronousTestCase):
    """
    A draining L{BlockingRunner}: a thread takes every waiting call at
    once and hands all their results back with one C{callFromThread}.
    """

    def setUp(self) -> None:
        from mta.threads import BlockingRunner

        self.reactor = _ThreadCalls()
        self.runner = BlockingRunner(self.reactor, 1, name="d", drain=True)  # type: ignore[arg-type]
        self.runner.startService()
        self.addCleanup(self.runner.stopService)

    def hold(self) -> threading.Event:
        """
        Keep the thread busy until the returned event is set, so that the
        calls made meanwhile wait on the queue; the held call's own
        result is handed back first.
        """
        release = threading.Event()
        started = threading.Event()

        def held() -> None:
            started.set()
            release.wait(10)

        d = self.runner.run(held)
        self.assertTrue(started.wait(10))
        self.addCleanup(lambda: self.successResultOf(d))
        return release

    def test_waitingCallsHandedBackAtOnce(self) -> None:
        """
        Calls that waited while the thread was busy run one after another
        on it, in order, and their results come back with one
        C{callFromThread}: one run of the reactor fires them all.
        """
        release = self.hold()
        order: list[int] = []

        def call(i: int) -> tuple[int, int]:
            order.append(i)
            return i, threading.get_ident()

        ds = [self.runner.run(call, i) for i in range(5)]
        release.set()
        self.reactor.runOne()  # the held call
        for d in ds:
            self.assertNoResult(d)
        self.reactor.runOne()
        results = [self.successResultOf(d) for d in ds]
        self.assertEqual([i for i, _ in results], [0, 1, 2, 3, 4])
        self.assertEqual(order, [0, 1, 2, 3, 4])
        self.assertEqual(len({ident for _, ident in results}), 1)
        self.assertNotEqual(results[0][1], threading.get_ident())

    def test_errorsStayWithTheirCall(self) -> None:
        """
        A call that raises fails its own Deferred; the others drained
        with it still get their results.
        """
        release = self.hold()

        def boom() -> None:
            raise ValueError("no")

        first = self.runner.run(lambda: 1)
        broken = self.runner.run(boom)
        last = self.runner.run(lambda: 3)
        release.set()
        self.reactor.runOne()
        self.reactor.runOne()
        self.assertEqual(self.successResultOf(first), 1)
        self.assertEqual(str(self.failureResultOf(broken, ValueError).value), "no")
        self.assertEqual(self.successResultOf(last), 3)

    def test_stopWithSeveralThreads(self) -> None:
        """
        With several draining threads, one that drains the others' stop
        signals with its own gives them back: stopping joins every thread.
        """
        from mta.threads import BlockingRunner

        runner = BlockingRunner(_ThreadCalls(), 3, name="d3", drain=True)  # type: ignore[arg-type]
        runner.startService()
        threads = list(runner.threads)
        release = threading.Event()

        def held(started: threading.Event) -> None:
            started.set()
            release.wait(10)

        for _ in threads:
            # One at a time: the next goes to a thread still idle.
            started = threading.Event()
            runner.run(held, started)
            self.assertTrue(started.wait(10))
        # Every thread is busy when the stop signals are queued: the first
        # one free drains them all.
        stopper = threading.Thread(target=runner.stopService, daemon=True)
        stopper.start()
        threading.Timer(0.1, release.set).start()
        stopper.join(10)
        self.assertFalse(stopper.is_alive())
        self.assertFalse(any(t.is_alive() for t in threads))
