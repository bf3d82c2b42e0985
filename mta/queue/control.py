# -*- test-case-name: tests.test_admin -*-
"""
How C{mta queue flush|delete} reach a running server.

The running server holds an exclusive lock on C{data_dir/queue/.lock}.
The admin command tries that lock: if it gets it, no server runs and it
acts on the spool files itself; if not, it drops a request file into
C{data_dir/queue/control/} and waits for the server, which polls that
folder every second (L{ControlRequests.take}, on the thread pool) and
deletes each request once done.  Either way the spool is only ever changed
by one process at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from pathlib import Path
from typing import IO

from mta.queue.spool import Spool

REQUEST_SUFFIX = ".req"


class ControlRequests:
    """
    The folder of pending requests, seen from either side.
    """

    def __init__(self, queueDir: Path) -> None:
        self.lockPath = queueDir / ".lock"
        self.path = queueDir / "control"

    # -- server side -------------------------------------------------------------

    def holdLock(self) -> IO[bytes]:
        """
        Take the server's lock (blocking; at start-up).

        @return: the open lock file; keep it open while the server runs.
        @raise OSError: another server uses this queue already.
        """
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        f = open(self.lockPath, "ab")  # noqa: SIM115  (held for the process's life)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise OSError(f"{self.lockPath.parent}: another mta server uses this queue") from None
        return f

    def take(self) -> list[tuple[str, list[str]]]:
        """
        Read pending requests (blocking).

        @return: (request file name, words) pairs, oldest first; call
            L{done} with each name once handled.
        """
        try:
            names = sorted(n for n in os.listdir(self.path) if n.endswith(REQUEST_SUFFIX))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            try:
                words = (self.path / name).read_text().split()
            except OSError:
                continue
            found.append((name, words))
        return found

    def done(self, name: str) -> None:
        """
        Remove a handled request (blocking).
        """
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / name)

    # -- admin side ------------------------------------------------------------------

    def serverRunning(self) -> bool:
        """
        @return: whether a server holds the queue lock right now.
        """
        if not self.lockPath.exists():
            return False
        with open(self.lockPath, "ab") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    def submit(self, words: list[str], timeout: float = 10.0) -> bool:
        """
        Hand a request to the running server and wait for it to be done.

        @return: whether the server took it within C{timeout} seconds.
        """
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{time.time_ns()}-{secrets.token_hex(4)}{REQUEST_SUFFIX}"
        tmp = self.path / (name + ".tmp")
        tmp.write_text(" ".join(words) + "\n")
        os.rename(tmp, self.path / name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not (self.path / name).exists():
                return True
            time.sleep(0.05)  # the admin command, never the server
        return False


def describeQueue(spool: Spool, now: float) -> list[str]:
    """
    One line per queued message: id, age, sender, and each recipient with
    its state and last error (blocking; for C{mta queue list}).
    """
    lines = []
    for envelope in sorted(spool.envelopesSync(), key=lambda e: e.arrival):
        age = _age(now - envelope.arrival)
        rcpts = " ".join(
            f"<{r.address}>({r.state}{': ' + r.lastError if r.lastError else ''})"
            for r in envelope.recipients
        )
        lines.append(f"{envelope.queueId} {age} <{envelope.sender}> {rcpts}")
    return lines


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
