# -*- test-case-name: tests.test_spool -*-
"""
The durable queue on disk: step "accept" of the lifecycle.

Each queued message is two files in C{data_dir/queue}::

    <id>.msg   the raw message (Received header included), CRLF line ends
    <id>.env   its envelope as JSON (readable with any pager)

L{Spool.store} writes message and envelope, fdatasyncs both and fsyncs
the folder; only then does its Deferred fire and the server say 250, so a
crash at any moment loses nothing that was accepted.  Concurrent stores are
batched (L{BatchingRunner}): all files of a batch are written before any is
synced, so one journal commit covers them all.  At start-up a C{.msg}
without its C{.env} was never acknowledged and is deleted; an envelope that
does not parse (a crash mid-write, so also never acknowledged) is set aside
as C{.bad}, never delivered and never silently deleted.  Later envelope
changes are atomic: temporary file, fsync, rename.

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
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mta.envelope import Envelope
from mta.fileutil import fsyncDirectory, writeAll
from mta.interfaces import IBlockingRunner, ISpool
from mta.threads import BatchingRunner

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


def _writeFile(path: Path, data: bytes) -> int:
    """
    Create C{path} holding C{data}, not yet synced.

    @return: the open descriptor, for L{_syncAndClose}.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        writeAll(fd, data)
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


@implementer(ISpool)
class Spool:
    """
    The queue folder: durable storage of messages and envelopes.

    @ivar path: the folder, C{data_dir/queue}.
    """

    def __init__(self, path: Path, runner: IBlockingRunner) -> None:
        self.path = path
        self._runner = runner
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Every change to the queue folder goes through this one serial
        # batcher: when a batch's data sync has committed the journal,
        # nothing else has touched the folder since, so the folder's own
        # fsync that follows costs no second commit.
        self._changes: BatchingRunner[tuple[Envelope, bytes] | str, None] = BatchingRunner(
            runner, self.changeManySync, maxBatch=256, concurrency=1
        )

    def messagePath(self, queueId: str) -> str:
        """
        @return: the path of the raw message of C{queueId}.
        """
        return str(self.path / f"{queueId}.msg")

    def envelopePath(self, queueId: str) -> Path:
        """
        @return: the path of the JSON envelope of C{queueId}.
        """
        return self.path / f"{queueId}.env"

    def store(self, envelope: Envelope, data: bytes) -> Deferred[None]:
        """
        Write message and envelope durably; see L{ISpool.store}.
        """
        return self._changes.submit((envelope, data))

    def storeSync(self, envelope: Envelope, data: bytes) -> None:
        """
        Store one message (blocking).
        """
        [result] = self.storeManySync([(envelope, data)])
        if result is not None:
            raise result

    def storeManySync(self, items: list[tuple[Envelope, bytes]]) -> list[BaseException | None]:
        """
        The blocking body of L{store}, for a batch of messages: write every
        file, then sync them all (one journal commit covers the batch), then
        sync the folder once, which makes the new names durable.

        @return: per message, C{None} or the error that kept it out.
        """
        results: list[BaseException | None] = [None] * len(items)
        written: list[tuple[int, int, int]] = []
        for i, (envelope, data) in enumerate(items):
            try:
                written.append((i, *self._writeBoth(envelope, data)))
            except OSError as e:
                results[i] = e
        for i, msgFd, envFd in written:
            for fd in (msgFd, envFd):
                try:
                    _syncAndClose(fd)
                except OSError as e:
                    results[i] = e
        try:
            fsyncDirectory(self.path)
        except OSError as e:
            return [e] * len(items)
        return results

    def _writeBoth(self, envelope: Envelope, data: bytes) -> tuple[int, int]:
        msgFd = _writeFile(Path(self.messagePath(envelope.queueId)), data)
        try:
            # Written in place: nobody trusts it before the batch's syncs,
            # and a half-written one is set aside at start-up (see load).
            path = self.envelopePath(envelope.queueId)
            return msgFd, _writeFile(path, json.dumps(envelope.toJSON(), indent=1).encode())
        except BaseException:
            os.close(msgFd)
            raise

    def _commitEnvelope(self, envelope: Envelope) -> None:
        final = self.envelopePath(envelope.queueId)
        tmp = final.with_suffix(".tmp")
        _writeSynced(tmp, json.dumps(envelope.toJSON(), indent=1).encode())
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
        return self._changes.submit(queueId)

    def changeManySync(
        self, changes: list[tuple[Envelope, bytes] | str]
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
            if isinstance(change, str):
                try:
                    self.removeSync(change)
                except OSError as e:
                    results[i] = e
            else:
                stores.append((i, change))
        if stores:
            stored = self.storeManySync([change for _, change in stores])
            for (i, _), result in zip(stores, stored, strict=True):
                results[i] = result
        return results

    def removeSync(self, queueId: str) -> None:
        """
        Remove one message (blocking).  The envelope goes first: should we
        crash in between, the orphaned message file is swept at start-up.
        """
        for path in (self.envelopePath(queueId), Path(self.messagePath(queueId))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def load(self) -> Deferred[list[Envelope]]:
        """
        Read every committed envelope; see L{ISpool.load}.
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
            if suffix == "tmp" or (suffix == "msg" and f"{stem}.env" not in names):
                # Never acknowledged: the envelope is the commit point.
                os.unlink(self.path / name)
                continue
            if suffix != "env":
                continue
            envelope = self._loadEnvelope(stem, names)
            if envelope is not None:
                envelopes.append(envelope)
        return envelopes

    def envelopesSync(self) -> list[Envelope]:
        """
        Read every committed envelope without changing anything (blocking;
        safe while a server runs, for C{mta queue list}).
        """
        envelopes = []
        for name in sorted(os.listdir(self.path)):
            if name.endswith(".env"):
                try:
                    envelopes.append(self.readEnvelope(name[:-4]))
                except (KeyError, ValueError):
                    continue
        return envelopes

    def _loadEnvelope(self, queueId: str, names: set[str]) -> Envelope | None:
        if f"{queueId}.msg" not in names:
            _log.error("queue: id={id} envelope without message, removed", id=queueId)
            os.unlink(self.envelopePath(queueId))
            return None
        try:
            return Envelope.fromJSON(json.loads(self.envelopePath(queueId).read_bytes()))
        except (ValueError, OSError) as e:
            # Keep the files for a human; never deliver what we cannot read.
            _log.error("queue: id={id} unreadable envelope kept aside: {e}", id=queueId, e=e)
            os.rename(self.envelopePath(queueId), self.path / f"{queueId}.bad")
            return None

    def readEnvelope(self, queueId: str) -> Envelope:
        """
        Read one envelope (blocking; for C{mta queue show}).

        @raise KeyError: no such message in the queue.
        """
        try:
            data = self.envelopePath(queueId).read_bytes()
        except FileNotFoundError:
            raise KeyError(queueId) from None
        return Envelope.fromJSON(json.loads(data))
