# -*- test-case-name: tests.test_appending -*-
"""
Writing an APPENDed message into a Maildir folder's C{tmp/}: the first
step of IMAP APPEND's way into the store, before the index adopts the file
into C{cur/} (L{mta.store.index.FolderIndex.appendFile}).

L{TemporaryMessage} is the blocking file: created under a fresh unique
name, written, fsync'd and closed, or discarded.  L{MessageSpool} drives
one on an L{IBlockingRunner} as a large literal arrives, so that the
message is never held in memory whole: chunks queue on the reactor thread,
one write job at a time takes everything queued, and while more than
C{highWater} bytes wait, the spool says it is C{behind} so the protocol
stops reading from the client.  A disconnect or a refused command aborts
the spool, which removes the file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from mta.fileutil import writeAll
from mta.interfaces import IBlockingRunner
from mta.store.indexformat import FILE_MODE, INFO, MessageInfo, fsyncFile, infoFor, uniqueBase

_log = Logger(namespace="mta.store.appending")
_T = TypeVar("_T")

#: Bytes a spool queues before it asks the protocol to stop reading.
HIGH_WATER = 1024 * 1024


class TemporaryMessage:
    """
    A message being written in a folder's C{tmp/} (blocking methods).

    @ivar path: the file.
    @ivar size: the size it is meant to have.
    @ivar written: what has been written so far.
    """

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self.size = size
        self.written = 0
        self._fd: int | None = fd

    @classmethod
    def create(cls, tmpDirectory: Path, size: int) -> TemporaryMessage:
        """
        Create an empty file under a fresh unique name in C{tmpDirectory}.

        @param size: the message's size, which its name records (C{,S=}).
        """
        path = tmpDirectory / uniqueBase(size)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        return cls(path, os.open(path, flags, FILE_MODE), size)

    def write(self, chunks: Iterable[bytes]) -> None:
        """
        Append C{chunks} to the file.
        """
        assert self._fd is not None, "written after finish or discard"
        for chunk in chunks:
            writeAll(self._fd, chunk)
            self.written += len(chunk)

    def finish(self) -> None:
        """
        fsync and close the file, which must now hold C{size} bytes.

        @raise ValueError: it holds some other number of bytes.
        """
        assert self._fd is not None, "finished twice or after discard"
        if self.written != self.size:
            raise ValueError(f"{self.path}: {self.written} bytes written, {self.size} expected")
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def handOver(self, adopt: Callable[[Path, int], _T]) -> _T:
        """
        Give the finished file to C{adopt(path, size)}, which moves it into
        the folder (blocking); if that fails, the file is removed.
        """
        try:
            return adopt(self.path, self.size)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """
        Close the file if it is open and remove it (it may be gone already).
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self.path.unlink(missing_ok=True)


def writeTemporary(tmpDirectory: Path, chunks: Iterable[bytes], size: int) -> Path:
    """
    Write a whole message into C{tmpDirectory} at once, fsync'd (blocking);
    nothing is left behind if that fails.

    @return: the file's path.
    """
    temporary = TemporaryMessage.create(tmpDirectory, size)
    try:
        temporary.write(chunks)
        temporary.finish()
    except BaseException:
        temporary.discard()
        raise
    return temporary.path


def placeFile(
    folder: Path, entry: MessageInfo, dest: Path, destLetters: Sequence[str], move: bool
) -> Path | None:
    """
    Put a message of C{folder} into the folder C{dest} under a fresh base
    name (IMAP COPY and MOVE, before C{dest}'s index adopts it): a move
    renames it straight into C{dest}'s C{cur/} (never through C{tmp/},
    where a crash would hide it), with an info part for C{dest}'s keyword
    letters; a copy hard links it (else copies and fsyncs it) into
    C{dest}'s C{tmp/}.  Blocking.

    @return: where it is, or C{None} if it is gone.
    """
    source = folder / entry.sub / entry.name
    base = uniqueBase(entry.size)
    try:
        if move:
            info = infoFor(entry.flags, entry.name.partition(INFO)[2], destLetters)
            target = dest / "cur" / (base + INFO + info)
            os.rename(source, target)
            return target
        target = dest / "tmp" / base
        try:
            os.link(source, target)
        except FileNotFoundError:
            raise
        except OSError:
            shutil.copy2(source, target)  # with its mtime: the internal date
            fsyncFile(target)
    except FileNotFoundError:
        return None
    return target


class MessageSpool:
    """
    A message literal written to a L{TemporaryMessage} as it arrives; see
    the module docstring.  Every method is called on the reactor thread.

    @ivar behind: whether more than C{highWater} bytes wait to be written;
        the protocol stops reading from its client meanwhile.
    """

    def __init__(
        self,
        runner: IBlockingRunner,
        create: Callable[[], TemporaryMessage],
        flowChanged: Callable[[], None],
        highWater: int = HIGH_WATER,
    ) -> None:
        """
        @param create: makes the file (blocking; run on C{runner}); it may
            raise, as L{mta.store.imapstore.NoSuchFolder}, and the spool
            then drops what arrives and L{finish} fails with that.
        @param flowChanged: called when C{behind} changes.
        """
        self._runner = runner
        self._flowChanged = flowChanged
        self._highWater = highWater
        self._queue: list[bytes] = []
        self._queued = 0
        self._temporary: TemporaryMessage | None = None
        self._failure: Failure | None = None
        self._aborted = False
        self._working = True
        self._idle: list[Deferred[None]] = []
        self.behind = False
        runner.run(create).addCallbacks(self._created, self._failed)

    @property
    def queued(self) -> int:
        """
        The bytes received and not yet handed to a write job.
        """
        return self._queued

    def write(self, data: bytes) -> None:
        """
        Queue C{data} for the file.
        """
        if self._failure is not None or self._aborted:
            return
        self._queue.append(data)
        self._queued += len(data)
        self._next()
        self._setBehind(self._queued > self._highWater)

    def finish(self) -> Deferred[TemporaryMessage]:
        """
        Once everything queued is written: fsync and close the file.

        @return: the file, whole and durable in C{tmp/}; or the failure to
            create or write it (the file is then removed).
        """
        assert not self._aborted, "finish after abort"

        def finishing(_: None) -> Deferred[TemporaryMessage]:
            if self._failure is not None:
                self._discard()
                return fail(self._failure)
            temporary = self._temporary
            assert temporary is not None

            def failed(failure: Failure) -> Failure:
                self._runner.run(temporary.discard).addErrback(self._logDiscard)
                return failure

            d = self._runner.run(temporary.finish)
            return d.addCallbacks(lambda _: temporary, failed)

        return self._whenIdle().addCallback(finishing)

    def abort(self) -> Deferred[None]:
        """
        Drop the message: what is queued, and the file once the write in
        progress (if any) is over.

        @return: fires when the file is gone.
        """
        self._aborted = True
        self._queue, self._queued = [], 0
        self._setBehind(False)
        return self._whenIdle().addCallback(lambda _: self._discard())

    def _discard(self) -> Deferred[None]:
        temporary, self._temporary = self._temporary, None
        if temporary is None:
            return succeed(None)
        return self._runner.run(temporary.discard).addErrback(self._logDiscard)

    @staticmethod
    def _logDiscard(failure: Failure) -> None:
        _log.failure("imap: removing a partial APPEND failed", failure)

    def _setBehind(self, behind: bool) -> None:
        if behind != self.behind:
            self.behind = behind
            self._flowChanged()

    def _created(self, temporary: TemporaryMessage) -> None:
        self._temporary = temporary
        self._written(None)

    def _failed(self, failure: Failure) -> None:
        if self._failure is None:
            self._failure = failure
        self._working = False
        self._queue, self._queued = [], 0
        self._setBehind(False)
        self._next()

    def _written(self, _: None) -> None:
        self._working = False
        self._next()
        self._setBehind(self._queued > self._highWater)

    def _next(self) -> None:
        """
        Start the next write job, or wake those waiting for the spool to
        be idle.
        """
        if self._working:
            return
        if self._queue and self._failure is None and not self._aborted:
            temporary = self._temporary
            assert temporary is not None
            chunks, self._queue, self._queued = self._queue, [], 0
            self._working = True
            self._runner.run(temporary.write, chunks).addCallbacks(self._written, self._failed)
            return
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)

    def _whenIdle(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        self._next()
        return d


__all__ = ["HIGH_WATER", "MessageSpool", "TemporaryMessage", "placeFile", "writeTemporary"]
