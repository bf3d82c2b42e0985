# -*- test-case-name: tests.test_spool -*-
"""
Small blocking file helpers shared by the spool, the Maildir store, the
directory files and the TLS key files.  Call them on a worker thread (or in
the admin command), never on the reactor thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def writeAll(fd: int, data: bytes | memoryview) -> None:
    """
    Write all of C{data} to C{fd}, however short the kernel's writes.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def openDirectory(path: Path | str) -> int:
    """
    @return: a read-only descriptor of the directory C{path}, to fsync.
    """
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def fsyncDirectory(path: Path | str) -> None:
    """
    fsync a directory, so that entries created or renamed in it are durable.
    """
    fd = openDirectory(path)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusiveLock(path: Path) -> Iterator[None]:
    """
    Hold an exclusive C{flock} on C{path} (created if missing) for the
    duration of the block, so two processes never interleave a
    read-modify-write.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
