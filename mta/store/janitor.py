# -*- test-case-name: tests.test_janitor -*-
"""
Removing what a crash leaves in the Maildirs' C{tmp/} directories.

A message is written into a folder's C{tmp/} and renamed into C{new/} or
C{cur/} once it is durable (local delivery, IMAP APPEND).  A kill -9 or a
power cut between the two leaves the half-written file behind: nothing
accepted is lost (it was never acknowledged), but the file takes space
for ever.  The Maildir convention (D. J. Bernstein's maildir(5); Dovecot's
C{maildir_tmp_cleanup}) is to delete a file in C{tmp/} that has not been
touched for 36 hours: no writer keeps one open that long.

L{TmpCleaner} does that for every folder under the mail root, when the
server starts and every L{INTERVAL} seconds after, on the store's thread
pool (it walks directories and unlinks files: never on the reactor).
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mta.interfaces import IBlockingRunner

_log = Logger(namespace="mta.store")

#: A file in C{tmp/} untouched for this long is a crash's leftover.
MAX_AGE = 36 * 3600.0

#: How often the mail root is swept, in seconds (as Dovecot: 8 hours).
INTERVAL = 8 * 3600.0


def _tmpDirectories(mailRoot: Path) -> list[str]:
    """
    @return: the C{tmp/} directory of every user's INBOX and folders:
        C{<root>/<domain>/<local>/tmp} and C{<root>/<domain>/<local>/.<folder>/tmp}.
    """
    found = []
    for domain in _subdirectories(str(mailRoot)):
        for user in _subdirectories(domain):
            found.append(os.path.join(user, "tmp"))
            found.extend(
                os.path.join(folder, "tmp")
                for folder in _subdirectories(user)
                if os.path.basename(folder).startswith(".")
            )
    return found


def _subdirectories(path: str) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def removeStaleTemporaries(mailRoot: Path, now: float, maxAge: float = MAX_AGE) -> list[str]:
    """
    Delete every regular file in a Maildir C{tmp/} under C{mailRoot} whose
    last change (the later of its mtime and ctime) is C{maxAge} seconds or
    more before C{now}.  Blocking.

    @return: the paths removed.
    """
    removed = []
    for tmp in _tmpDirectories(mailRoot):
        try:
            entries = list(os.scandir(tmp))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                if now - max(st.st_mtime, st.st_ctime) < maxAge:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                # Renamed into the folder, or removed, meanwhile.
                continue
            removed.append(entry.path)
    return removed


class TmpCleaner(Service):
    """
    Sweep the Maildirs' C{tmp/} directories at start-up and every
    L{INTERVAL} seconds (see the module docstring).
    """

    def __init__(
        self,
        mailRoot: Path,
        runner: IBlockingRunner,
        clock: IReactorTime,
        interval: float = INTERVAL,
    ) -> None:
        self._mailRoot = mailRoot
        self._runner = runner
        self._clock = clock
        self._interval = interval
        self._loop: LoopingCall | None = None
        self._sweeping: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.sweep)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        # A sweep under way finishes on its thread; wait for it.
        sweeping = self._sweeping
        return sweeping if sweeping is not None and not sweeping.called else None

    def sweep(self) -> Deferred[None]:
        """
        Remove the stale temporaries once, on the runner.

        @return: a Deferred that fires when done (never with a failure:
            a sweep that breaks is logged, and the next one tries again).
        """
        found = self._runner.run(removeStaleTemporaries, self._mailRoot, self._clock.seconds())
        d = self._sweeping = found.addCallbacks(self._swept, self._failed)
        return d

    def _swept(self, removed: list[str]) -> None:
        for path in removed:
            _log.info("store: removed {path}, left in tmp/ for over 36 hours", path=path)

    def _failed(self, reason: Failure) -> None:
        _log.failure("store: sweeping the Maildirs' tmp/ failed", reason)


__all__ = ["INTERVAL", "MAX_AGE", "TmpCleaner", "removeStaleTemporaries"]
