# -*- test-case-name: tests.test_spool -*-
"""
The durable queue on disk: step "accept" of the lifecycle.

Each queued message is one file in C{data_dir/queue}, C{<id>.msg}::

    mta-queue 1 id=<id> envelope=<n> message=<m> crc32=<c>   a header line
    { ... }                                  the envelope: n bytes of JSON
                                             a newline
    Received: ...                            the message: m bytes, CRLF

so C{head} or a pager shows who it is from and for; C{c} is the CRC-32 of
envelope and message, in hex.  L{Spool.store} writes the file under its
final name, then fdatasyncs it and fsyncs the folder, both at once; only
when both are done does its Deferred fire and the server say 250, so a
crash at any moment loses nothing that was accepted.  Concurrent stores
are batched (L{CommitLoop}): all files of a batch are written before any
is synced, the batch waits for one round of syncs, not two, and the next
batch is written while this one's syncs run.

A file is named C{.msg} before it is synced, so a crash can leave a
C{.msg} that is cut short or holds bytes that never reached the disk;
the length and the CRC (and the header's id) tell these apart from a
whole message, and none of them was ever acknowledged.

The envelope changes after a failed attempt (recipient states, next
attempt); the new one is written atomically (temporary file, fsync,
rename) beside the message as C{<id>.env}, and wins over the one inside.

A delivered message's files are deleted.  (Queue files used to be
recycled, a delivered message's file kept as a C{.spare} and the next
message written over it, to spare ext4 the cost of creating a file; an
interleaved A/B showed no gain beyond the noise, see bench/README.md.)

At start-up every C{.msg} is checked whole.  One that is shorter than its
header says, fails its CRC or names another id in its header was never
acknowledged (the crash came before its syncs): it is deleted.  C{.tmp}
files, C{.spare} files (left by versions that recycled queue files) and
a C{.env} whose message is gone are deleted.  A file whose header does
not parse, or whose envelope does not parse although its CRC holds, is
set aside as C{.bad}: never delivered, never silently deleted.

All file work runs on an L{IBlockingRunner}; nothing here blocks the reactor.
Implements L{ISpool}.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mta.envelope import Envelope
from mta.fileutil import fsyncDirectory, openDirectory, writeAll
from mta.interfaces import IBlockingRunner, ISpool
from mta.message import MessageBody
from mta.threads import SERIAL_SYNC, CommitLoop, ParallelSync, waitForCallback

_log = Logger(namespace="mta.queue")

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
_counter = itertools.count()
_counterLock = threading.Lock()
# Seeded from os.urandom once: the random part only keeps ids of two
# processes apart, so it need not cost a getrandom() call per message.
_random = random.Random()


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
    return _encode(micros, 10) + _encode((n << 16) | _random.getrandbits(16), 6)


def _writeFile(path: Path | str, *parts: bytes) -> int:
    """
    Create C{path} holding C{parts} one after the other, not yet synced.

    @return: the open descriptor, for L{_syncAndClose}.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if sum(map(len, parts)) <= _JOIN_BELOW:
            # One write for a small message is cheaper than one per part.
            parts = (b"".join(parts),)
        for part in parts:
            writeAll(fd, part)
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


#: Parts shorter than this together are joined before being written.
_JOIN_BELOW = 256 * 1024

#: The first line of a queue file; the format's version is the number.
_MAGIC = b"mta-queue 1 "
#: A header line is never longer than this.
_MAX_HEADER = 128


def _encodeEnvelope(envelope: Envelope) -> bytes:
    # Compact, on one line: the C encoder (indenting takes the slow one).
    return json.dumps(envelope.toJSON(), separators=(",", ":")).encode()


def queueFileHead(envelope: Envelope, data: bytes) -> bytes:
    """
    @param data: the message that will follow.
    @return: what a queue file holds before the message: header line,
        envelope, newline.
    """
    encoded = _encodeEnvelope(envelope) + b"\n"
    crc = zlib.crc32(data, zlib.crc32(encoded))
    line = _MAGIC + b"id=%s envelope=%d message=%d crc32=%08x\n" % (
        envelope.queueId.encode(),
        len(encoded) - 1,
        len(data),
        crc,
    )
    return line + encoded


class QueueFileError(ValueError):
    """
    A queue file that cannot be read.

    @ivar complete: whether the file could be a whole message: if not (cut
        short, failing its CRC, or holding another id's message), it was
        being written when the system stopped, and never acknowledged.
    """

    def __init__(self, message: str, complete: bool = True) -> None:
        super().__init__(message)
        self.complete = complete


def readQueueFile(path: Path, verify: bool = False) -> tuple[Envelope, MessageBody]:
    """
    Read a queue file's envelope and locate its message (blocking).

    @param verify: also check the header's id against the file's name and
        the CRC of everything after the header (reading the whole file),
        as start-up does.
    @raise QueueFileError: unreadable header or envelope, or a file that is
        not a whole message.
    @raise FileNotFoundError: no such file.
    """
    with open(path, "rb") as f:
        line = f.readline(_MAX_HEADER)
        fields = dict(word.partition(b"=")[::2] for word in line.split()[2:])
        try:
            if not line.startswith(_MAGIC) or len(fields) != 4:
                raise ValueError("not a queue file")
            queueId = fields[b"id"].decode("ascii")
            envelopeSize = int(fields[b"envelope"])
            messageSize = int(fields[b"message"])
            crc = int(fields[b"crc32"], 16)
        except (ValueError, KeyError):
            raise QueueFileError(f"{path.name}: bad header line {line[:60]!r}") from None
        offset = len(line) + envelopeSize + 1
        fileSize = os.fstat(f.fileno()).st_size
        if fileSize < offset + messageSize:
            raise QueueFileError(
                f"{path.name}: {fileSize} bytes, the header says {offset + messageSize}",
                complete=False,
            )
        if verify:
            if queueId != path.name.rpartition(".")[0]:
                raise QueueFileError(f"{path.name}: holds message {queueId}", complete=False)
            actual = 0
            for chunk in iter(lambda: f.read(min(65536, offset + messageSize - f.tell())), b""):
                actual = zlib.crc32(chunk, actual)
            if actual != crc:
                raise QueueFileError(f"{path.name}: CRC mismatch", complete=False)
            f.seek(len(line))
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
    #: Whether an updated envelope may lie beside it.
    updated: bool


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
        # Messages with an updated envelope beside them.
        self._updated: set[str] = set()
        # Every change to the queue folder goes through this one serial
        # loop: when a batch's data syncs are done, nothing else has touched
        # the folder since, so the folder's own fsync that follows costs no
        # second commit.
        self._changes: CommitLoop[tuple[Envelope, bytes] | _Removal, int | None] = CommitLoop(
            runner, self.changeMany, callFromThread
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
        d = self._changes.submit((envelope, data))
        queueId = envelope.queueId

        def stored(offset: int | None) -> None:
            assert offset is not None
            self._bodies[queueId] = (offset, len(data))

        return d.addCallback(stored)

    def storeSync(self, envelope: Envelope, data: bytes) -> None:
        """
        Store one message (blocking).
        """
        [result] = self.storeManySync([(envelope, data)])
        if isinstance(result, BaseException):
            raise result
        self._bodies[envelope.queueId] = (result, len(data))

    def storeManySync(self, items: list[tuple[Envelope, bytes]]) -> list[int | BaseException]:
        """
        Store messages and wait for their syncs (blocking); see L{storeMany}.
        """
        return waitForCallback(lambda deliver: self.storeMany(items, deliver))

    def storeMany(
        self,
        items: list[tuple[Envelope, bytes]],
        deliver: Callable[[list[int | BaseException]], None],
    ) -> None:
        """
        The blocking body of L{store}, for a batch of messages: write every
        file under its final name, then start the syncs of them all and of
        the folder, at once, and return; C{deliver} gets the results when
        the syncs are done, from the thread that finished them.

        @param items: C{(envelope, message)} per message.
        @param deliver: called with, per message, where its message starts
            in its file, or the error that kept it out.
        """
        results: list[int | BaseException] = []
        written: list[tuple[int, int]] = []
        for i, (envelope, data) in enumerate(items):
            head = queueFileHead(envelope, data)
            try:
                written.append((i, _writeFile(self.messagePath(envelope.queueId), head, data)))
                results.append(len(head))
            except OSError as e:
                results.append(e)
        try:
            folder = openDirectory(self.path)
        except OSError as e:
            for _, fd in written:
                os.close(fd)
            deliver([e] * len(items))
            return

        def synced(errors: list[OSError | None]) -> None:
            os.close(folder)
            *fileErrors, folderError = errors
            for (i, fd), error in zip(written, fileErrors, strict=True):
                os.close(fd)
                if error is not None:
                    results[i] = error
                    with contextlib.suppress(OSError):
                        os.unlink(self.messagePath(items[i][0].queueId))
            deliver(results if folderError is None else [folderError] * len(items))

        # fdatasync flushes the data and the size, all a queue file needs.
        self._sync.syncAllThen([fd for _, fd in written], os.fdatasync, [folder], synced)

    def _commitEnvelope(self, envelope: Envelope) -> None:
        self._updated.add(envelope.queueId)
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
        self._bodies.pop(queueId, None)
        removal = _Removal(queueId, queueId in self._updated)
        self._updated.discard(queueId)
        return self._changes.submit(removal).addCallback(lambda _: None)

    def changeMany(
        self,
        changes: list[tuple[Envelope, bytes] | _Removal],
        deliver: Callable[[list[int | BaseException | None]], None],
    ) -> None:
        """
        The blocking body of L{store} and L{remove}, for a batch: removals
        first (they need no sync: a removal lost in a crash means the
        message is delivered again, which at-least-once allows), then the
        stores, see L{storeMany}; C{deliver} gets the results.
        """
        results: list[int | BaseException | None] = [None] * len(changes)
        stores = []
        for i, change in enumerate(changes):
            if isinstance(change, _Removal):
                try:
                    self.removeSync(change.queueId, change.updated)
                except OSError as e:
                    results[i] = e
            else:
                stores.append((i, change))
        if not stores:
            deliver(results)
            return

        def stored(storeResults: list[int | BaseException]) -> None:
            for (i, _), result in zip(stores, storeResults, strict=True):
                results[i] = result
            deliver(results)

        self.storeMany([change for _, change in stores], stored)

    def removeSync(self, queueId: str, updated: bool = True) -> None:
        """
        Remove one message (blocking).  The message goes first: should we
        crash in between, the envelope left alone is swept at start-up.

        @param updated: whether an updated envelope may lie beside it.
        """
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.messagePath(queueId))
        if updated:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.envelopePath(queueId))

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
            if suffix in ("tmp", "spare") or (suffix == "env" and f"{stem}.msg" not in names):
                # A half-made update, what a removal left, or a queue file
                # kept for reuse by an older version.
                os.unlink(self.path / name)
            elif suffix == "msg":
                envelope = self._loadOne(stem, f"{stem}.env" in names)
                if f"{stem}.env" in names:
                    self._updated.add(stem)
                if envelope is not None:
                    envelopes.append(envelope)
        return envelopes

    def _loadOne(self, queueId: str, updated: bool) -> Envelope | None:
        path = self.messagePath(queueId)
        try:
            envelope, body = readQueueFile(path, verify=True)
            if updated:
                envelope = self._readUpdate(queueId)
        except QueueFileError as e:
            if not e.complete:
                _log.info("queue: id={id} never acknowledged, removed: {e}", id=queueId, e=e)
                os.unlink(path)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.envelopePath(queueId))
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
