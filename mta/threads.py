# -*- test-case-name: tests.test_threads -*-
"""
The bounded thread pool every blocking call goes through.

fsync, file copies, directory reloads and argon2 hashing run here so the
reactor thread only parses and dispatches.  L{BlockingRunner} is a service:
the pool starts and stops with the service tree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from mta.interfaces import IBlockingRunner

_T = TypeVar("_T")


@implementer(IBlockingRunner)
class BlockingRunner(Service):
    """
    An L{IBlockingRunner} on a private, bounded L{ThreadPool}.

    @ivar pool: the thread pool; started by C{startService}.
    """

    def __init__(self, reactor: IReactorFromThreads, maxThreads: int, name: str = "io") -> None:
        self._reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=maxThreads, name=f"mta-{name}")

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()

    def run(self, f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        """
        Call C{f} on the pool; see L{IBlockingRunner.run}.
        """
        return deferToThreadPool(self._reactor, self.pool, f, *args, **kwargs)


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
