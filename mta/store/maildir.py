# -*- test-case-name: tests.test_maildir -*-
"""
The Maildir++ message store: the last step of local delivery, and what
POP3 (and later IMAP) read.  Implements L{IMessageStore} and L{IMailbox}.

Layout: user C{alice@example.com} lives in C{<mailRoot>/example.com/alice/},
where C{mailRoot} is C{<data_dir>/mail}.  That directory is the INBOX maildir
(C{cur/ new/ tmp/}); the Maildir++ folders C{.Sent}, C{.Drafts}, C{.Trash} and
C{.Junk} sit inside it, each a maildir with an empty C{maildirfolder} file.
Every directory is made mode 0700.

Delivery is the classic safe Maildir sequence: write C{tmp/<unique>}, fsync
it, rename it to C{new/<unique>,S=<size>}, fsync C{new/}.  A crash at any
point leaves either nothing visible or the whole message; at worst a stray
file in C{tmp/}.  Unique names follow the Maildir spec,
C{<sec>.M<usec>P<pid>Q<counter>.<host>}, plus the Maildir++ C{,S=} size so a
listing needs no C{stat} per message.  A message's uid is its base name (the
part before C{:2,}): it stays the same when a reader moves the file from
C{new/} to C{cur/} or changes its flags, and is never reused.

All file I/O runs on an L{IBlockingRunner}, never on the reactor thread.

Design note for IMAP: numeric UIDs, UIDVALIDITY and MODSEQ need state that a
bare maildir does not hold.  They will live in a per-mailbox index file beside
the maildir (as Dovecot's C{dovecot-uidlist} does), mapping these base-name
uids to IMAP UIDs and modification sequences; this module's uids stay the
stable key that index is built on.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from mta.fileutil import fsyncDirectory, writeAll
from mta.interfaces import IBlockingRunner, IMailbox, IMessageStore
from mta.message import MessageBody
from mta.store.base import StoredMessage
from mta.threads import SERIAL_SYNC, BatchingRunner, ParallelSync

INBOX = "INBOX"

#: The Maildir++ folders every user has from creation, besides INBOX.
DEFAULT_FOLDERS = ("Sent", "Drafts", "Trash", "Junk")

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_SUBDIRS = ("cur", "new", "tmp")
_INFO_SEPARATOR = ":2,"

# Maildir names need a counter unique within the process, not per store:
# two stores over the same root in one process must not collide either.
_counter = itertools.count(1)
_counterLock = threading.Lock()


def mailRootOf(dataDir: Path) -> Path:
    """
    @return: the root of every user's mail under the server's C{data_dir}.
    """
    return dataDir / "mail"


def _checkName(name: str, what: str) -> None:
    """
    Refuse a path component that could escape its directory.

    @raise ValueError: C{name} is empty, contains C{/}, C{..} or NUL, or
        starts with C{.}.
    """
    if not name or "/" in name or "\0" in name or ".." in name or name[0] == ".":
        raise ValueError(f"unsafe {what} for the mail store: {name!r}")


def userDirectory(mailRoot: Path, address: str) -> Path:
    """
    Map an address to its INBOX maildir.

    @param address: C{local@domain}; compared case-insensitively.
    @return: C{<mailRoot>/<domain>/<local>}, lower case.
    @raise ValueError: the address has no C{@} or a part that could escape
        the mail root.
    """
    local, at, domain = address.lower().rpartition("@")
    if not at:
        raise ValueError(f"not an address: {address!r}")
    _checkName(local, "local part")
    _checkName(domain, "domain")
    return mailRoot / domain / local


def folderDirectory(userDir: Path, folder: str) -> Path:
    """
    Map a folder name to its maildir inside a user's directory.

    @param folder: C{INBOX} (any case) or a Maildir++ folder name such as
        C{Sent}; C{.} separates levels, as in Maildir++.
    @raise ValueError: the name could escape the user's directory.
    """
    if folder.upper() == INBOX:
        return userDir
    _checkName(folder, "folder name")
    return userDir / ("." + folder)


def _mkdir(path: Path) -> bool:
    """
    Make one directory, mode 0700.

    @return: whether it was created (C{False}: it already existed).
    """
    try:
        os.mkdir(path, _DIR_MODE)
    except FileExistsError:
        return False
    return True


def _makeMaildir(path: Path, isFolder: bool) -> set[Path]:
    """
    Make one maildir (and its C{maildirfolder} marker for a folder).

    @return: the directories whose entries changed and need an fsync.
    """
    changed: set[Path] = set()
    if _mkdir(path):
        changed.add(path.parent)
    for sub in _SUBDIRS:
        if _mkdir(path / sub):
            changed.add(path)
    if isFolder:
        marker = path / "maildirfolder"
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE))
        except FileExistsError:
            pass
        else:
            changed.add(path)
    return changed


def _makeParents(path: Path) -> set[Path]:
    """
    Make C{path} and any missing ancestors, each mode 0700.

    @return: the directories whose entries changed.
    """
    changed: set[Path] = set()
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        if _mkdir(directory):
            changed.add(directory.parent)
    return changed


def _createFolders(userDir: Path, extra: str | None = None) -> None:
    """
    Make a user's INBOX and default folders (and C{extra}), durably.

    Idempotent; only directories that changed are fsync'd, so a second call
    costs a few C{mkdir}s that fail with C{EEXIST}.
    """
    changed = _makeParents(userDir.parent)
    changed |= _makeMaildir(userDir, isFolder=False)
    folders = list(DEFAULT_FOLDERS)
    if extra is not None and extra.upper() != INBOX and extra not in folders:
        folders.append(extra)
    for folder in folders:
        changed |= _makeMaildir(folderDirectory(userDir, folder), isFolder=True)
    for directory in changed:
        fsyncDirectory(directory)


def createUserFolders(dataDir: Path, address: str) -> None:
    """
    Create a user's store: INBOX plus C{Sent}, C{Drafts}, C{Trash} and
    C{Junk}.  Synchronous and idempotent; used by C{mta user add}.

    @param dataDir: the server's C{data_dir}.
    @raise ValueError: the address could escape the mail root.
    """
    _createFolders(userDirectory(mailRootOf(dataDir), address))


def _unlinkQuietly(path: str) -> bool:
    """
    Remove C{path}, ignoring a file that is already gone.

    @return: whether a file was removed.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _hostPart() -> str:
    """
    @return: this host's name, with the characters the Maildir spec forbids
        in it (C{/}, C{:}) and the Maildir++ field separator C{,} escaped.
    """
    host = socket.gethostname() or "localhost"
    return host.replace("/", r"\057").replace(":", r"\072").replace(",", r"\054")


def _copyInto(fd: int, prefix: bytes, body: MessageBody) -> int:
    """
    Write C{prefix} then C{body} to C{fd}, in 64 KiB chunks.

    The prefix goes out with the first chunk, so a small message costs a
    single C{write}.

    @return: the number of bytes written.
    """
    total = 0
    for chunk in body.chunksSync():
        if prefix:
            chunk, prefix = prefix + chunk, b""
        writeAll(fd, chunk)
        total += len(chunk)
    if prefix:
        writeAll(fd, prefix)
        total += len(prefix)
    return total


def _parseName(name: str) -> tuple[str, int | None, float | None]:
    """
    Split a maildir file name into its uid, C{,S=} size and name time.

    @return: C{(uid, size, seconds)}; size and time are C{None} when the
        name does not carry them.
    """
    uid = name.split(_INFO_SEPARATOR, 1)[0]
    size = None
    for field in uid.split(",")[1:]:
        if field.startswith("S=") and field[2:].isdigit():
            size = int(field[2:])
    head, _, rest = uid.partition(".")
    when: float | None = None
    if head.isdigit():
        when = float(head)
        if rest.startswith("M"):
            digits = rest[1:].split("P", 1)[0]
            if digits.isdigit() and len(digits) <= 6:
                when += int(digits) / 1e6
    return uid, size, when


def _scanEntries(folderDir: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """
    Yield C{(uid, entry)} for every message file in C{new/}, then C{cur/}.

    C{new/} is read first: a message another reader moves to C{cur/}
    meanwhile is then seen in C{cur/} rather than missed.  A missing
    directory reads as empty.
    """
    for sub in ("new", "cur"):
        try:
            with os.scandir(folderDir / sub) as entries:
                for entry in entries:
                    if not entry.name.startswith("."):
                        yield entry.name.split(_INFO_SEPARATOR, 1)[0], entry
        except FileNotFoundError:
            continue


@implementer(IMailbox)
class MaildirMailbox:
    """
    One maildir folder of one user, as L{IMailbox}.

    @ivar path: the folder's maildir (holding C{cur/ new/ tmp/}).
    """

    def __init__(
        self, path: Path, runner: IBlockingRunner, onDelete: Callable[[], None] | None = None
    ) -> None:
        """
        @param onDelete: called on the reactor thread after a deletion (the
            IMAP store then tells its sessions).
        """
        self.path = path
        self._runner = runner
        self._onDelete = onDelete
        # uid -> current path, refreshed by every listing; a message that
        # moved since is found again by _locate.
        self._index: dict[str, str] = {}

    def listMessages(self) -> Deferred[list[StoredMessage]]:
        """
        See L{IMailbox.listMessages}: scans C{new/} and C{cur/}.
        """
        return self._runner.run(self._list)

    def readMessage(self, uid: str) -> Deferred[bytes]:
        """
        See L{IMailbox.readMessage}.
        """
        return self._runner.run(self._read, uid)

    def deleteMessages(self, uids: Sequence[str]) -> Deferred[None]:
        """
        See L{IMailbox.deleteMessages}.
        """
        d = self._runner.run(self._delete, list(uids))
        if self._onDelete is not None:
            onDelete = self._onDelete
            d.addBoth(lambda result: (onDelete(), result)[1])
        return d

    def _list(self) -> list[StoredMessage]:
        """
        Scan the maildir (blocking).
        """
        index: dict[str, str] = {}
        found: list[tuple[float, str, StoredMessage]] = []
        for uid, entry in _scanEntries(self.path):
            if uid in index:
                continue
            _, size, when = _parseName(entry.name)
            if size is None or when is None:
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                size = st.st_size if size is None else size
                when = st.st_mtime if when is None else when
            index[uid] = entry.path
            found.append((when, uid, StoredMessage(uid, size, when)))
        found.sort(key=lambda item: (item[0], item[1]))
        self._index = index
        return [message for _, _, message in found]

    def _rescan(self, uids: set[str]) -> dict[str, str]:
        """
        Find where C{uids} are now, with one fresh scan, and remember it.

        @return: the paths of those found; missing uids are left out.
        """
        paths: dict[str, str] = {}
        for uid, entry in _scanEntries(self.path):
            if uid in uids:
                paths[uid] = self._index[uid] = entry.path
        return paths

    def _read(self, uid: str) -> bytes:
        """
        Read one message (blocking), following it if it moved.

        The path from the last listing is tried first; a message another
        reader renamed since (C{new/} to C{cur/}, or new flags) is found
        again by a rescan.

        @raise KeyError: no such message.
        """
        path = self._index.get(uid)
        for _ in range(3):
            if path is not None:
                try:
                    with open(path, "rb") as f:
                        return f.read()
                except FileNotFoundError:
                    pass
            path = self._rescan({uid}).get(uid)
            if path is None:
                break
        raise KeyError(uid)

    def _delete(self, uids: list[str]) -> None:
        """
        Unlink messages (blocking); fsync the directories that changed.
        """
        changed: set[str] = set()
        moved: set[str] = set()
        for uid in uids:
            path = self._index.pop(uid, None)
            if path is None or not _unlinkQuietly(path):
                moved.add(uid)
            else:
                changed.add(os.path.dirname(path))
        if moved:
            for uid, path in self._rescan(moved).items():
                if _unlinkQuietly(path):
                    changed.add(os.path.dirname(path))
                self._index.pop(uid, None)
        for directory in changed:
            fsyncDirectory(Path(directory))


@implementer(IMessageStore)
class MaildirStore:
    """
    Every user's mail as Maildir++ under one root; see the module docstring.

    @ivar mailRoot: the root, C{<data_dir>/mail}.
    @ivar onChange: called as C{onChange(user, folder)} on the reactor
        thread after a delivery into a folder or a deletion from it, so
        that the IMAP store can tell the sessions that have it selected;
        C{None} for nobody.
    """

    onChange: Callable[[str, str], None] | None = None

    def __init__(
        self,
        mailRoot: Path,
        runner: IBlockingRunner,
        clock: IReactorTime | None = None,
        linger: float = 0.0,
        sync: ParallelSync = SERIAL_SYNC,
    ) -> None:
        """
        @param sync: runs the fsyncs of a batch of deliveries.
        """
        self.mailRoot = mailRoot
        self._runner = runner
        self._sync = sync
        self._host = _hostPart()
        self._pid = os.getpid()
        # Folders known to exist; deliver does not consult it (it creates on
        # ENOENT), openMailbox does, to skip the mkdir calls.
        self._known: set[Path] = set()
        # Nobody waits on a delivery but the queue: letting a batch gather
        # company for C{linger} seconds means fewer commits, which leaves
        # the disk to the spool, whose commits clients do wait on.  Two
        # batches may run at once, so one's files are created and written
        # while the other's are being synced.
        self._deliveries: BatchingRunner[tuple[str, MessageBody, bytes, str], str] = BatchingRunner(
            runner, self.deliverManySync, concurrency=2, linger=linger, clock=clock
        )

    def createUser(self, user: str) -> Deferred[None]:
        """
        See L{IMessageStore.createUser}.
        """
        return self._runner.run(self._ensureFolder, user, INBOX).addCallback(lambda _: None)

    def deliver(
        self, user: str, body: MessageBody, prefix: bytes, folder: str = INBOX
    ) -> Deferred[str]:
        """
        See L{IMessageStore.deliver}.

        @return: the new message's uid, once it is fsync'd into C{new/}.
        @raise ValueError: (in the Deferred) unsafe address or folder name.
        """
        d = self._deliveries.submit((user, body, prefix, folder))
        if self.onChange is not None:
            onChange = self.onChange

            def delivered(uid: str) -> str:
                onChange(user, folder)
                return uid

            d.addCallback(delivered)
        return d

    def openMailbox(self, user: str, folder: str = INBOX) -> Deferred[IMailbox]:
        """
        See L{IMessageStore.openMailbox}: the folder is created when missing.

        @raise ValueError: (in the Deferred) unsafe address or folder name.
        """

        def opened(path: Path) -> IMailbox:
            onChange = self.onChange
            if onChange is None:
                return MaildirMailbox(path, self._runner)
            return MaildirMailbox(path, self._runner, lambda: onChange(user, folder))

        return self._runner.run(self._ensureFolder, user, folder).addCallback(opened)

    def _ensureFolder(self, user: str, folder: str) -> Path:
        """
        Make sure the user's store and C{folder} exist (blocking).

        @return: the folder's maildir.
        """
        userDir = userDirectory(self.mailRoot, user)
        path = folderDirectory(userDir, folder)
        if path not in self._known:
            _createFolders(userDir, folder)
            self._known.add(path)
        return path

    def _uniqueName(self) -> str:
        """
        @return: a fresh Maildir unique name, C{<sec>.M<usec>P<pid>Q<n>.<host>}.
        """
        with _counterLock:
            count = next(_counter)
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        return f"{seconds}.M{nanos // 1000}P{self._pid}Q{count}.{self._host}"

    def _openTemporary(self, folderDir: Path) -> tuple[int, str, str]:
        """
        Create a new, empty file in C{tmp/}.

        @return: C{(fd, unique name, tmp path)}.
        @raise FileNotFoundError: the folder does not exist.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        while True:
            name = self._uniqueName()
            tmpPath = os.path.join(folderDir, "tmp", name)
            try:
                return os.open(tmpPath, flags, _FILE_MODE), name, tmpPath
            except FileExistsError:
                # Only if the clock went back within this pid; take another.
                continue

    def deliverManySync(
        self, items: list[tuple[str, MessageBody, bytes, str]]
    ) -> list[str | BaseException]:
        """
        The blocking half of L{deliver}, for a batch: write every message
        into C{tmp/}, then fsync them all (one journal commit covers the
        batch), then rename each into C{new/}, then fsync each C{new/}
        folder once.

        @param items: C{(user, body, prefix, folder)} per delivery.
        @return: per delivery, the uid or the error.
        """
        results: list[str | BaseException] = []
        written: list[tuple[int, int, str, str, str, int]] = []
        for i, item in enumerate(items):
            try:
                fd, name, tmpPath, folderDir, size = self._writeTemporary(*item)
                written.append((i, fd, name, tmpPath, folderDir, size))
                results.append("")
            except (OSError, ValueError) as e:
                results.append(e)
        newDirs: dict[str, list[int]] = {}
        errors = self._sync.syncAll([fd for _, fd, _, _, _, _ in written])
        for (i, fd, name, tmpPath, folderDir, size), error in zip(written, errors, strict=True):
            try:
                os.close(fd)
                if error is not None:
                    raise error
                uid = f"{name},S={size}"
                newDir = os.path.join(folderDir, "new")
                os.rename(tmpPath, os.path.join(newDir, uid))
                results[i] = uid
                newDirs.setdefault(newDir, []).append(i)
            except OSError as e:
                _unlinkQuietly(tmpPath)
                results[i] = e
        for newDir, indexes in newDirs.items():
            try:
                fsyncDirectory(Path(newDir))
            except OSError as e:
                for i in indexes:
                    results[i] = e
        return results

    def _writeTemporary(
        self, user: str, body: MessageBody, prefix: bytes, folder: str
    ) -> tuple[int, str, str, str, int]:
        """
        Create the message in C{tmp/}, not yet synced.

        @return: C{(fd, unique name, tmp path, folder path, size)}.
        """
        userDir = userDirectory(self.mailRoot, user)
        folderDir = folderDirectory(userDir, folder)
        try:
            fd, name, tmpPath = self._openTemporary(folderDir)
        except FileNotFoundError:
            _createFolders(userDir, folder)
            self._known.add(folderDir)
            fd, name, tmpPath = self._openTemporary(folderDir)
        try:
            size = _copyInto(fd, prefix, body)
        except BaseException:
            os.close(fd)
            _unlinkQuietly(tmpPath)
            raise
        return fd, name, tmpPath, str(folderDir), size


__all__ = [
    "DEFAULT_FOLDERS",
    "INBOX",
    "MaildirMailbox",
    "MaildirStore",
    "createUserFolders",
    "folderDirectory",
    "mailRootOf",
    "userDirectory",
]
