# -*- test-case-name: tests.test_spool -*-
"""
The durable queue on disk: step "accept" of the lifecycle.

Each queued message is one file in C{data_dir/queue}, C{<id>.msg}::

    mta-queue 1 envelope=<n> message=<m>     one header line
    { ... }                                  the envelope: n bytes of JSON
                                             a newline
    Received: ...                            the message: m bytes, CRLF

so C{head} or a pager shows who it is from and for.  L{Spool.store} writes
the file, fdatasyncs it and fsyncs the folder; only then does its Deferred
fire and the server say 250, so a crash at any moment loses nothing that
was accepted.  Concurrent stores are batched (L{CommitLoop}): all files
of a batch are written before any is synced.  One file per message means
one create, one sync and one unlink per message, which is what the disk
work of accepting mail costs.

The envelope changes after a failed attempt (recipient states, next
attempt); the new one is written atomically (temporary file, fsync,
rename) beside the message as C{<id>.env}, and wins over the one inside.

Queue files are recycled.  A delivered message's file is not deleted but
renamed C{<n>.spare} (up to L{MAX_SPARES} of them, each at most
L{MAX_SPARE_SIZE}), and the next message is written over a spare, synced,
and only then renamed C{<id>.msg}; so a name ending in C{.msg} always
holds a whole message, and a crash midway leaves at worst a spare with
mixed contents, which is only ever overwritten.  Accepting mail then
allocates no inode and frees no blocks: on ext4, creating a file scans past
every recently deleted inode of its block group (without a journal), and
freeing blocks costs a discard on SSD-backed mounts; the queue churns
through a file per message, so both costs grew with the load.  A spare
holds an old message until it is reused; it is as private as the queue
(mode 0600 in a 0700 folder).

At start-up a C{.msg} shorter than its header says was never acknowledged
(the crash came before its sync) and is deleted, as are C{.tmp} files and a
C{.env} whose message is gone; a file whose header or envelope does not
parse is set aside as C{.bad}: never delivered, never silently deleted.

All file work runs on an L{IBlockingRunner}; nothing here blocks the reactor.
Implements L{ISpool}.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mta.envelope import Envelope
from mta.fileutil import fsyncDirectory, writeAll
from mta.interfaces import IBlockingRunner, ISpool
from mta.message import MessageBody
from mta.threads import SERIAL_SYNC, CommitLoop, ParallelSync

_log = Logger(namespace="mta.queue")

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
_counter = itertools.count()
_counterLock = threading.Lock()


def _encode(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, len(_ALPHABET))
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def newQueueId() -> str:
    """
    Make a queue id: sortable by time, unique within this host, 16
    characters from an alphabet without vowels (so ids never spell words).
    """
    with _counterLock:
        n = next(_counter)
    micros = time.time_ns() // 1000
    return _encode(micros, 10) + _encode((n << 16) | secrets.randbits(16), 6)


def _writeFile(path: Path | str, *parts: bytes, create: bool = True) -> int:
    """
    Create C{path} holding C{parts} one after the other, not yet synced.

    @param create: if false, C{path} exists and is overwritten in place
        (and cut to the new length).
    @return: the open descriptor, for L{_syncAndClose}.
    """
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        size = sum(map(len, parts))
        if size <= _JOIN_BELOW:
            # One write for a small message is cheaper than one per part.
            parts = (b"".join(parts),)
        for part in parts:
            writeAll(fd, part)
        if not create:
            os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _syncAndClose(fd: int) -> None:
    try:
        # fdatasync flushes the data and the size, all a new file needs.
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _writeSynced(path: Path, data: bytes) -> None:
    _syncAndClose(_writeFile(path, data))


#: At most this many delivered queue files are kept for reuse.
MAX_SPARES = 128
#: Larger queue files are deleted, not kept for reuse.
MAX_SPARE_SIZE = 256 * 1024

#: Parts shorter than this together are joined before being written.
_JOIN_BELOW = 256 * 1024

#: The first line of a queue file; the format's version is the number.
_MAGIC = b"mta-queue 1 "
#: A header line is never longer than this.
_MAX_HEADER = 128


def _encodeEnvelope(envelope: Envelope) -> bytes:
    return json.dumps(envelope.toJSON(), indent=1).encode()


def queueFileHead(envelope: Envelope, size: int) -> bytes:
    """
    @param size: the length of the message that will follow.
    @return: what a queue file holds before the message: header line,
        envelope, newline.
    """
    encoded = _encodeEnvelope(envelope)
    line = _MAGIC + b"envelope=%d message=%d\n" % (len(encoded), size)
    return line + encoded + b"\n"


class QueueFileError(ValueError):
    """
    A queue file that cannot be read.

    @ivar complete: whether the file is as long as its header says: if
        not, it was being written when the system stopped.
    """

    def __init__(self, message: str, complete: bool = True) -> None:
        super().__init__(message)
        self.complete = complete


def readQueueFile(path: Path) -> tuple[Envelope, MessageBody]:
    """
    Read a queue file's envelope and locate its message (blocking).

    @raise QueueFileError: unreadable header or envelope, or a file cut short.
    @raise FileNotFoundError: no such file.
    """
    with open(path, "rb") as f:
        line = f.readline(_MAX_HEADER)
        words = line.split()
        try:
            if not line.startswith(_MAGIC) or len(words) != 4:
                raise ValueError("not a queue file")
            envelopeSize = int(words[2].removeprefix(b"envelope="))
            messageSize = int(words[3].removeprefix(b"message="))
        except ValueError:
            raise QueueFileError(f"{path.name}: bad header line {line[:60]!r}") from None
        offset = len(line) + envelopeSize + 1
        fileSize = os.fstat(f.fileno()).st_size
        if fileSize != offset + messageSize:
            raise QueueFileError(
                f"{path.name}: {fileSize} bytes, the header says {offset + messageSize}",
                complete=fileSize > offset + messageSize,
            )
        try:
            envelope = Envelope.fromJSON(json.loads(f.read(envelopeSize)))
        except (ValueError, KeyError, TypeError) as e:
            raise QueueFileError(f"{path.name}: bad envelope: {e}") from None
    return envelope, MessageBody(str(path), offset, messageSize)


class _Removal(NamedTuple):
    """
    A message to take out of the queue.
    """

    queueId: str
    reusable: bool


@implementer(ISpool)
class Spool:
    """
    The queue folder: durable storage of messages and envelopes.

    @ivar path: the folder, C{data_dir/queue}.
    """

    def __init__(
        self,
        path: Path,
        runner: IBlockingRunner,
        sync: ParallelSync = SERIAL_SYNC,
        callFromThread: Callable[..., object] | None = None,
    ) -> None:
        """
        @param sync: runs the data syncs of a batch.
        @param callFromThread: the reactor's, when C{runner} runs work on
            other threads (see L{CommitLoop}).
        """
        self.path = path
        self._runner = runner
        self._sync = sync
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Where each known message's bytes start and how many there are.
        self._bodies: dict[str, tuple[int, int]] = {}
        # Queue files to reuse; only the serial batcher's thread (or
        # loadSync, before it starts) touches this.
        self._spares: list[str] = []
        # Every change to the queue folder goes through this one serial
        # loop: when a batch's data syncs are done, nothing else has touched
        # the folder since, so the folder's own fsync that follows costs no
        # second commit.
        self._changes: CommitLoop[tuple[Envelope, bytes, bytes] | _Removal, None] = CommitLoop(
            runner, self.changeManySync, callFromThread
        )

    def messagePath(self, queueId: str) -> Path:
        """
        @return: the path of the queue file of C{queueId}.
        """
        return self.path / f"{queueId}.msg"

    def envelopePath(self, queueId: str) -> Path:
        """
        @return: the path of the updated envelope of C{queueId}, if any.
        """
        return self.path / f"{queueId}.env"

    def body(self, queueId: str) -> MessageBody:
        """
        Locate a stored message; see L{ISpool.body}.

        @raise KeyError: not stored or loaded by this spool.
        """
        offset, size = self._bodies[queueId]
        return MessageBody(str(self.messagePath(queueId)), offset, size)

    def store(self, envelope: Envelope, data: bytes) -> Deferred[None]:
        """
        Write message and envelope durably; see L{ISpool.store}.
        """
        head = queueFileHead(envelope, len(data))
        d = self._changes.submit((envelope, head, data))
        queueId = envelope.queueId

        def stored(_: None) -> None:
            self._bodies[queueId] = (len(head), len(data))

        return d.addCallback(stored)

    def storeSync(self, envelope: Envelope, data: bytes) -> None:
        """
        Store one message (blocking).
        """
        [result] = self.storeManySync([(envelope, queueFileHead(envelope, len(data)), data)])
        if result is not None:
            raise result

    def storeManySync(
        self, items: list[tuple[Envelope, bytes, bytes]]
    ) -> list[BaseException | None]:
        """
        The blocking body of L{store}, for a batch of messages: write every
        file, then sync them all, then sync the folder once, which makes
        the new names durable.

        @param items: C{(envelope, queueFileHead, message)} per message.
        @return: per message, C{None} or the error that kept it out.
        """
        results: list[BaseException | None] = [None] * len(items)
        written: list[tuple[int, int, str | None]] = []
        for i, (envelope, head, data) in enumerate(items):
            try:
                written.append((i, *self._writeOne(envelope.queueId, head, data)))
            except OSError as e:
                results[i] = e
        # fdatasync flushes the data and the size, all a queue file needs.
        errors = self._sync.syncAll([fd for _, fd, _ in written], os.fdatasync)
        for (i, fd, spare), error in zip(written, errors, strict=True):
            try:
                os.close(fd)
                if error is not None:
                    raise error
                if spare is not None:
                    os.rename(spare, self.messagePath(items[i][0].queueId))
            except OSError as e:
                results[i] = e
                if spare is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(spare)
        try:
            fsyncDirectory(self.path)
        except OSError as e:
            return [e] * len(items)
        return results

    def _writeOne(self, queueId: str, head: bytes, data: bytes) -> tuple[int, str | None]:
        """
        Write one queue file, over a spare when there is one, not synced.

        @return: the descriptor and the spare's path (to be renamed once
            synced), or C{None} for a file created under its final name
            (written in place: nobody trusts it before the batch's syncs,
            and one cut short is swept at start-up, see L{load}).
        """
        while self._spares:
            spare = self._spares.pop()
            try:
                return _writeFile(spare, head, data, create=False), spare
            except FileNotFoundError:
                continue
        return _writeFile(self.messagePath(queueId), head, data), None

    def _commitEnvelope(self, envelope: Envelope) -> None:
        final = self.envelopePath(envelope.queueId)
        tmp = final.with_suffix(".tmp")
        _writeSynced(tmp, _encodeEnvelope(envelope))
        os.rename(tmp, final)
        fsyncDirectory(self.path)

    def update(self, envelope: Envelope) -> Deferred[None]:
        """
        Replace the envelope atomically; see L{ISpool.update}.
        """
        return self._runner.run(self._commitEnvelope, envelope)

    def remove(self, queueId: str) -> Deferred[None]:
        """
        Delete message and envelope; see L{ISpool.remove}.
        """
        _, size = self._bodies.pop(queueId, (0, MAX_SPARE_SIZE + 1))
        return self._changes.submit(_Removal(queueId, size <= MAX_SPARE_SIZE))

    def changeManySync(
        self, changes: list[tuple[Envelope, bytes, bytes] | _Removal]
    ) -> list[BaseException | None]:
        """
        The blocking body of L{store} and L{remove}, for a batch: removals
        first (they need no sync: a removal lost in a crash means the
        message is delivered again, which at-least-once allows), then the
        stores, see L{storeManySync}.
        """
        results: list[BaseException | None] = [None] * len(changes)
        stores = []
        for i, change in enumerate(changes):
            if isinstance(change, _Removal):
                try:
                    self.removeSync(change.queueId, change.reusable)
                except OSError as e:
                    results[i] = e
            else:
                stores.append((i, change))
        if stores:
            stored = self.storeManySync([change for _, change in stores])
            for (i, _), result in zip(stores, stored, strict=True):
                results[i] = result
        return results

    def removeSync(self, queueId: str, reusable: bool = False) -> None:
        """
        Remove one message (blocking).  The message goes first: should we
        crash in between, the envelope left alone is swept at start-up.

        @param reusable: whether the queue file is small enough to be kept
            as a spare (if there is room for one).
        """
        with contextlib.suppress(FileNotFoundError):
            self._keepOrDelete(str(self.messagePath(queueId)), reusable)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.envelopePath(queueId))

    def _keepOrDelete(self, path: str, reusable: bool = True) -> None:
        """
        Keep the file C{path} as a spare, if there is room, else delete it.
        Spares are named after the message they last held, so names never
        collide.
        """
        if reusable and len(self._spares) < MAX_SPARES:
            spare = path.removesuffix(".msg").removesuffix(".spare") + ".spare"
            if spare != path:
                os.rename(path, spare)
            self._spares.append(spare)
        else:
            os.unlink(path)

    def load(self) -> Deferred[list[Envelope]]:
        """
        Read every committed message's envelope; see L{ISpool.load}.
        """
        return self._runner.run(self.loadSync)

    def loadSync(self) -> list[Envelope]:
        """
        The blocking body of L{load}: read envelopes, sweep leftovers.
        Only the server may call this, and only before it accepts mail.
        """
        names = set(os.listdir(self.path))
        envelopes = []
        for name in sorted(names):
            stem, _, suffix = name.rpartition(".")
            if suffix == "tmp" or (suffix == "env" and f"{stem}.msg" not in names):
                # A half-made update, or what a removal left.
                os.unlink(self.path / name)
            elif suffix == "spare":
                self._keepOrDelete(str(self.path / name))
            elif suffix == "msg":
                envelope = self._loadOne(stem, f"{stem}.env" in names)
                if envelope is not None:
                    envelopes.append(envelope)
        return envelopes

    def _loadOne(self, queueId: str, updated: bool) -> Envelope | None:
        path = self.messagePath(queueId)
        try:
            envelope, body = readQueueFile(path)
            if updated:
                envelope = self._readUpdate(queueId)
        except QueueFileError as e:
            if not e.complete:
                _log.info("queue: id={id} never acknowledged, removed: {e}", id=queueId, e=e)
                os.unlink(path)
                return None
            # Keep the file for a human; never deliver what we cannot read.
            _log.error("queue: id={id} unreadable, kept aside as .bad: {e}", id=queueId, e=e)
            os.rename(path, self.path / f"{queueId}.bad")
            return None
        self._bodies[queueId] = (body.offset, body.size)
        return envelope

    def _readUpdate(self, queueId: str) -> Envelope:
        try:
            return Envelope.fromJSON(json.loads(self.envelopePath(queueId).read_bytes()))
        except (ValueError, KeyError, TypeError) as e:
            raise QueueFileError(f"{queueId}.env: bad envelope: {e}") from None

    def envelopesSync(self) -> list[Envelope]:
        """
        Read every committed envelope without changing anything (blocking;
        safe while a server runs, for C{mta queue list}).
        """
        envelopes = []
        for name in sorted(os.listdir(self.path)):
            if name.endswith(".msg"):
                try:
                    envelopes.append(self.readEnvelope(name[:-4]))
                except (KeyError, ValueError):
                    continue
        return envelopes

    def readEnvelope(self, queueId: str) -> Envelope:
        """
        Read one envelope, the updated one if there is one (blocking; for
        C{mta queue show}).

        @raise KeyError: no such message in the queue.
        @raise QueueFileError: it cannot be read.
        """
        return self.readSync(queueId)[0]

    def readSync(self, queueId: str) -> tuple[Envelope, MessageBody]:
        """
        Read one message's envelope and locate its bytes (blocking).

        @raise KeyError: no such message in the queue.
        @raise QueueFileError: it cannot be read.
        """
        try:
            envelope, body = readQueueFile(self.messagePath(queueId))
            with contextlib.suppress(FileNotFoundError):
                envelope = self._readUpdate(queueId)
        except FileNotFoundError:
            raise KeyError(queueId) from None
        return envelope, body
