# -*- test-case-name: tests.test_imapstore -*-
"""
The mailbox model the IMAP server works on: one user's folders over
Maildir++ and their L{FolderIndex}es, every call returning a Deferred
(the index's blocking work runs on an L{IBlockingRunner}), and in-process
change notifications between sessions.

Folder names: C{INBOX} (any case) is the user's Maildir itself; every
other folder C{A} is the Maildir++ directory C{.A} inside it, and the
hierarchy separator is C{.}, as in Maildir++ and Dovecot's default
Maildir layout: C{Work.Projects} is C{.Work.Projects}.  Names are kept as
the IMAP client sends them (modified UTF-7, which is also what Dovecot
writes on disk), so an adopted Dovecot Maildir keeps its folder names.
A name with an empty level, C{/}, NUL, or a level starting with C{.} is
refused.  C{Sent}, C{Drafts}, C{Trash} and C{Junk} carry their RFC 6154
SPECIAL-USE attributes.

Notifications: every L{IMAPMailbox} of one folder shares one
L{FolderIndex} and one list of listeners.  A session that changes the
folder (flags, expunge, append, copy or move into it) has every other
listener called with the L{SyncResult} on the reactor thread; local
delivery and POP3 deletions reach the same listeners through
L{IMAPStore.notifyChanged} (L{MaildirStore.onChange}), which re-syncs the
folder once however many deliveries arrive meanwhile.  The IMAP server
turns them into untagged EXISTS, EXPUNGE and FETCH.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from mta.fileutil import fsyncDirectory
from mta.interfaces import IBlockingRunner
from mta.message import MessageBody
from mta.store.appending import MessageSpool, TemporaryMessage
from mta.store.index import FolderIndex
from mta.store.indexformat import FlagMode, FolderStatus, MessageInfo, SyncResult, writeDurably
from mta.store.maildir import (
    DEFAULT_FOLDERS,
    INBOX,
    _createFolders,
    folderDirectory,
    userDirectory,
)

_T = TypeVar("_T")
_log = Logger(namespace="mta.store.imapstore")

SEPARATOR = "."
SUBSCRIPTIONS = "subscriptions"

#: RFC 6154 attributes of the folders every user has.
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}

#: Called with what changed in a folder a session has selected.
Listener = Callable[[SyncResult], None]


class NoSuchFolder(KeyError):
    """
    The folder does not exist (IMAP C{NO [NONEXISTENT]}).
    """


class FolderExists(ValueError):
    """
    The folder already exists (IMAP C{NO [ALREADYEXISTS]}).
    """


class BadFolderName(ValueError):
    """
    The name cannot be a folder (IMAP C{NO [CANNOT]}).
    """


@dataclass(frozen=True)
class FolderInfo:
    """
    One line of LIST.

    @ivar name: the IMAP name.
    @ivar attributes: C{\\HasChildren} or C{\\HasNoChildren}, a special use,
        C{\\Noselect} for a level that only has children.
    """

    name: str
    attributes: tuple[str, ...]


@dataclass(frozen=True)
class Selection:
    """
    A folder as SELECT sees it.

    @ivar messages: every message, by ascending UID (sequence number i+1).
    @ivar recent: the UIDs that are \\Recent for this session.
    """

    uidValidity: int
    uidNext: int
    highestModseq: int
    messages: tuple[MessageInfo, ...]
    recent: frozenset[int]


def checkFolderName(name: str) -> str:
    """
    @return: C{name}, with C{INBOX} in any case made C{INBOX}.
    @raise BadFolderName: the name cannot map to a Maildir++ folder.
    """
    if name.upper() == INBOX:
        return INBOX
    levels = name.split(SEPARATOR)
    if any(not level or level[0] == "." for level in levels) or "/" in name or "\0" in name:
        raise BadFolderName(name)
    return name


class _Folder:
    """
    What every session of one folder shares: its index and listeners.
    """

    def __init__(self, index: FolderIndex) -> None:
        self.index = index
        self.listeners: list[Listener] = []
        self.syncing = False
        self.again = False


class IMAPMailbox:
    """
    One open folder of one user, as an IMAP session uses it.

    @ivar name: the folder's IMAP name.
    """

    def __init__(self, store: IMAPStore, user: str, name: str, folder: _Folder) -> None:
        self._store = store
        self._user = user
        self.name = name
        self._folder = folder

    def _run(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        return self._store._runner.run(f, *args)

    def _changed(self, result: SyncResult, origin: Listener | None) -> SyncResult:
        self._store._notify(self._folder, result, origin)
        return result

    def addListener(self, listener: Listener) -> None:
        """
        Have C{listener} called with every change another session or a
        delivery makes to this folder, until L{removeListener}.
        """
        self._folder.listeners.append(listener)

    def removeListener(self, listener: Listener) -> None:
        """
        Stop calling C{listener}; unknown listeners are ignored.
        """
        if listener in self._folder.listeners:
            self._folder.listeners.remove(listener)

    def select(self, origin: Listener | None = None) -> Deferred[Selection]:
        """
        Sync the folder, take its \\Recent messages, and snapshot it.
        """
        index = self._folder.index

        def selecting() -> tuple[SyncResult, Selection]:
            result = index.sync(takeNew=True)
            recent = frozenset(index.claimRecent())
            messages, uidValidity, uidNext, highestModseq = index.selection()
            selection = Selection(uidValidity, uidNext, highestModseq, tuple(messages), recent)
            return result, selection

        def selected(done: tuple[SyncResult, Selection]) -> Selection:
            self._changed(done[0], origin)
            return done[1]

        return self._run(selecting).addCallback(selected)

    def sync(self, origin: Listener | None = None) -> Deferred[SyncResult]:
        """
        Bring the index in step with the files (IMAP NOOP, CHECK).

        @return: what changed; other listeners hear of it too.
        """
        d = self._run(self._folder.index.sync, True)
        return d.addCallback(self._changed, origin)

    def claimRecent(self) -> Deferred[list[int]]:
        """
        @return: the UIDs that became \\Recent for the caller.
        """
        return self._run(self._folder.index.claimRecent)

    def messages(self) -> Deferred[list[MessageInfo]]:
        """
        @return: every message, by ascending UID, as of the last sync.
        """
        return self._run(self._folder.index.messages)

    def internalDates(self, uids: Sequence[int]) -> Deferred[dict[int, float]]:
        """
        @return: UID to internal date for each of C{uids} still here (the
            index reads the dates it has not read yet from the files).
        """
        return self._run(self._folder.index.internalDates, list(uids))

    def status(self) -> Deferred[FolderStatus]:
        """
        @return: the STATUS counts, as of the last sync.
        """
        return self._run(self._folder.index.status)

    def setFlags(
        self,
        uids: Iterable[int],
        mode: FlagMode,
        flags: Iterable[str],
        unchangedSince: int | None = None,
        origin: Listener | None = None,
    ) -> Deferred[tuple[list[MessageInfo], list[int]]]:
        """
        IMAP STORE; see L{FolderIndex.setFlags}.

        @return: C{(changed messages, UIDs that failed UNCHANGEDSINCE)}.
        """

        def stored(
            done: tuple[list[MessageInfo], list[int]],
        ) -> tuple[list[MessageInfo], list[int]]:
            changed = tuple(m.uid for m in done[0])
            modseq = max((m.modseq for m in done[0]), default=0)
            self._changed(SyncResult(changed=changed, highestModseq=modseq), origin)
            return done

        index = self._folder.index
        d = self._run(index.setFlags, list(uids), mode, list(flags), unchangedSince)
        return d.addCallback(stored)

    def expunge(self, uids: Iterable[int], origin: Listener | None = None) -> Deferred[list[int]]:
        """
        Remove messages for good.

        @return: the UIDs expunged.
        """

        def expunged(done: list[int]) -> list[int]:
            modseq = self._folder.index.highestModseq
            self._changed(SyncResult(expunged=tuple(done), highestModseq=modseq), origin)
            return done

        return self._run(self._folder.index.expunge, list(uids)).addCallback(expunged)

    def append(
        self,
        data: bytes | MessageBody | MessageSpool,
        flags: Iterable[str] = (),
        internalDate: float | None = None,
    ) -> Deferred[tuple[int, int]]:
        """
        IMAP APPEND of C{data}, or of the message a L{MessageSpool} (see
        L{IMAPStore.spoolMessage}) streamed to this folder's C{tmp/}: once
        it is whole and fsync'd, into C{cur/} and the index.

        @return: C{(UIDVALIDITY, UID)}, for UIDPLUS's APPENDUID.
        """
        index, flagList = self._folder.index, list(flags)

        def appended(uid: int) -> tuple[int, int]:
            self._changed(SyncResult(added=(uid,), highestModseq=index.highestModseq), None)
            return index.uidValidity, uid

        def adopt(path: Path, size: int) -> int:
            return index.appendFile(path, size, flagList, internalDate)

        if isinstance(data, MessageSpool):
            d = data.finish().addCallback(lambda tmp: self._run(tmp.handOver, adopt))
        else:
            d = self._run(index.append, data, flagList, internalDate)
        return d.addCallback(appended)

    def copy(self, uids: Iterable[int], destination: str) -> Deferred[tuple[int, dict[int, int]]]:
        """
        IMAP COPY.

        @return: C{(destination's UIDVALIDITY, source UID to new UID)}.
        @raise NoSuchFolder: (in the Deferred) no such destination.
        """
        return self._transfer(uids, destination, move=False, origin=None)

    def move(
        self, uids: Iterable[int], destination: str, origin: Listener | None = None
    ) -> Deferred[tuple[int, dict[int, int]]]:
        """
        IMAP MOVE: like L{copy}, and the messages leave this folder.
        """
        return self._transfer(uids, destination, move=True, origin=origin)

    def _transfer(
        self, uids: Iterable[int], destination: str, move: bool, origin: Listener | None
    ) -> Deferred[tuple[int, dict[int, int]]]:
        def moved(
            target: tuple[_Folder, dict[int, int]],
        ) -> tuple[int, dict[int, int]]:
            folder, mapping = target
            added = tuple(sorted(mapping.values()))
            self._store._notify(folder, SyncResult(added=added), None)
            if move:
                gone = tuple(sorted(mapping))
                self._changed(SyncResult(expunged=gone), origin)
            return folder.index.uidValidity, mapping

        chosen = list(uids)

        def run(folder: _Folder) -> tuple[_Folder, dict[int, int]]:
            source = self._folder.index
            op = source.move if move else source.copy
            return folder, op(chosen, folder.index)

        def start(folder: _Folder) -> Deferred[tuple[_Folder, dict[int, int]]]:
            return self._run(run, folder)

        return self._store._existing(self._user, destination).addCallback(start).addCallback(moved)

    def changedSince(self, modseq: int) -> Deferred[list[MessageInfo]]:
        """
        @return: messages whose MODSEQ is above C{modseq} (CHANGEDSINCE).
        """
        return self._run(self._folder.index.changedSince, modseq)

    def vanishedSince(self, modseq: int) -> Deferred[list[tuple[int, int]]]:
        """
        @return: UID ranges expunged after C{modseq} (QRESYNC VANISHED).
        """
        return self._run(self._folder.index.vanishedSince, modseq)

    def body(self, uid: int) -> Deferred[MessageBody]:
        """
        @return: where message C{uid}'s bytes are, to stream them with
            L{MessageBody.chunksSync} on the runner.
        @raise KeyError: (in the Deferred) no such message.
        """
        return self._run(self._folder.index.body, uid)

    def read(self, uid: int) -> Deferred[bytes]:
        """
        @return: the whole of message C{uid} (for small messages).
        """
        index = self._folder.index

        def reading() -> bytes:
            for _ in range(3):
                try:
                    return withCRLF(index.body(uid).readSync())
                except FileNotFoundError:
                    index.sync()  # renamed by another session meanwhile
            raise KeyError(uid)

        return self._run(reading)

    def readMany(self, uids: Sequence[int]) -> Deferred[dict[int, bytes]]:
        """
        Read several messages in one trip to the runner: a FETCH or SEARCH
        over a large mailbox would otherwise pay a thread hand-off (two
        wake-ups) per message, which was most of its time.

        @param uids: the messages, in the order wanted; the caller keeps
            the batch small (see L{batches}).
        @return: each message's bytes by UID; one expunged meanwhile is
            left out.
        """
        return self.scan(uids, _keep)

    def scan(
        self, uids: Sequence[int], using: Callable[[int, bytes], _T]
    ) -> Deferred[dict[int, _T]]:
        """
        Read several messages in one trip to the runner, as L{readMany},
        and call C{using(uid, raw)} on each there, on the runner's thread:
        a SEARCH matches a batch on a worker thread, so the reactor thread
        stays free for other sessions, and only the answers come back.

        @param using: must not touch state the reactor thread changes.
        @return: C{using}'s answer by UID; a message expunged meanwhile is
            left out.
        """
        index = self._folder.index

        def readOne(uid: int) -> bytes | None:
            for _ in range(3):
                try:
                    return withCRLF(index.body(uid).readSync())
                except FileNotFoundError:
                    index.sync()  # renamed by another session meanwhile
                except KeyError:
                    return None
            return None

        def reading() -> dict[int, _T]:
            found = {}
            for uid in uids:
                data = readOne(uid)
                if data is not None:
                    found[uid] = using(uid, data)
            return found

        return self._run(reading)


def _keep(uid: int, raw: bytes) -> bytes:
    return raw


#: A batch read for FETCH or SEARCH holds at most this many bytes ...
BATCH_BYTES = 1024 * 1024
#: ... and at most this many messages.
BATCH_MESSAGES = 64


def batches(uids: Sequence[int], sizeOf: Callable[[int], int]) -> Iterator[list[int]]:
    """
    Cut C{uids} into batches for L{IMAPMailbox.readMany}: at most
    L{BATCH_MESSAGES} messages and about L{BATCH_BYTES} bytes each (a
    bigger message goes alone), so memory stays bounded however large the
    mailbox.
    """
    batch: list[int] = []
    total = 0
    for uid in uids:
        size = sizeOf(uid)
        if batch and (len(batch) >= BATCH_MESSAGES or total + size > BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch


def withCRLF(data: bytes) -> bytes:
    """
    @return: C{data} with CRLF line ends: a file written by another server
        (Dovecot stores bare LF) is served as IMAP requires (RFC 3501 2.2).
        Files that already have CRs are served as they are.
    """
    if b"\r" in data or b"\n" not in data:
        return data
    return data.replace(b"\n", b"\r\n")


def parseSubscriptions(text: str) -> list[str]:
    """
    Read a C{subscriptions} file: ours (a name per line) or Dovecot 2.3's
    (C{V<TAB>2}, an empty line, then a name per line with TAB between
    hierarchy levels).

    @return: the subscribed folder names, in our C{.}-separated form.
    """
    lines = text.split("\n")
    if lines and lines[0].startswith("V\t"):
        lines = lines[1:]
        return [line.replace("\t", ".") for line in lines if line]
    return [line for line in lines if line]


class IMAPStore:
    """
    Every user's folders, for IMAP; see the module docstring.

    @ivar mailRoot: the same root as the L{MaildirStore}'s.
    """

    def __init__(
        self, mailRoot: Path, runner: IBlockingRunner, clock: Callable[[], float] = time.time
    ) -> None:
        self.mailRoot = mailRoot
        self._runner = runner
        self._clock = clock
        self._folders: dict[Path, _Folder] = {}

    # Sharing and notifying.

    def _folder(self, path: Path) -> _Folder:
        folder = self._folders.get(path)
        if folder is None:
            folder = self._folders[path] = _Folder(FolderIndex(path, self._clock))
        return folder

    def _path(self, user: str, name: str) -> Path:
        return folderDirectory(userDirectory(self.mailRoot, user), checkFolderName(name))

    def _existing(self, user: str, name: str) -> Deferred[_Folder]:
        try:
            path = self._path(user, name)
        except ValueError as e:
            return fail(NoSuchFolder(str(e)))

        return self._runner.run(self._check, name, path)

    def _check(self, name: str, path: Path) -> _Folder:
        """
        @return: the folder at C{path} (blocking; INBOX is made if missing).
        @raise NoSuchFolder: it does not exist.
        """
        if name.upper() == INBOX:
            _createFolders(path)
        elif not (path / "cur").is_dir():
            raise NoSuchFolder(name)
        return self._folder(path)

    def _notify(self, folder: _Folder, result: SyncResult, origin: Listener | None) -> None:
        if not result:
            return
        for listener in list(folder.listeners):
            if listener != origin:  # == : bound methods are made afresh
                try:
                    listener(result)
                except Exception:
                    _log.failure("IMAP change listener failed")

    def notifyChanged(self, user: str, folder: str = INBOX) -> None:
        """
        Something outside IMAP (local delivery, POP3) changed C{folder}:
        sync it and tell its listeners.  Call on the reactor thread; a
        folder nobody has selected costs nothing.
        """
        try:
            path = self._path(user, folder)
        except ValueError:
            return
        shared = self._folders.get(path)
        if shared is None or not shared.listeners:
            return
        if shared.syncing:
            shared.again = True
            return
        shared.syncing = True

        def synced(result: SyncResult) -> None:
            self._notify(shared, result, None)

        def finished(_: object) -> None:
            shared.syncing = False
            if shared.again:
                shared.again = False
                self.notifyChanged(user, folder)

        d = self._runner.run(shared.index.sync, True)
        d.addCallback(synced)
        d.addErrback(lambda f: _log.failure("IMAP sync after a change failed", f))
        d.addBoth(finished)

    # Folders.

    def spoolMessage(
        self, user: str, name: str, size: int, flowChanged: Callable[[], None]
    ) -> MessageSpool:
        """
        Start writing a message of C{size} bytes for folder C{name} into
        its C{tmp/} as it arrives; L{IMAPMailbox.append} adds it.

        @param flowChanged: called when the spool's C{behind} changes.
        @return: the spool; if there is no such folder, it drops what it
            is given and its C{finish} fails with L{NoSuchFolder}.
        """

        def create() -> TemporaryMessage:
            try:
                path = self._path(user, name)
            except ValueError as e:
                raise NoSuchFolder(str(e)) from None
            return TemporaryMessage.create(self._check(name, path).index.folder / "tmp", size)

        return MessageSpool(self._runner, create, flowChanged)

    def openFolder(self, user: str, name: str) -> Deferred[IMAPMailbox]:
        """
        @return: the folder, to select or examine.
        @raise NoSuchFolder: (in the Deferred) no such folder.
        """
        canonical = INBOX if name.upper() == INBOX else name
        d = self._existing(user, name)
        return d.addCallback(lambda folder: IMAPMailbox(self, user, canonical, folder))

    def status(self, user: str, name: str) -> Deferred[FolderStatus]:
        """
        @return: the folder's STATUS counts, after a sync (which leaves
            C{new/} alone: STATUS selects nothing).
        """

        def counting(folder: _Folder) -> tuple[_Folder, SyncResult, FolderStatus]:
            result = folder.index.sync()
            return folder, result, folder.index.status()

        def counted(done: tuple[_Folder, SyncResult, FolderStatus]) -> FolderStatus:
            self._notify(done[0], done[1], None)
            return done[2]

        def run(folder: _Folder) -> Deferred[tuple[_Folder, SyncResult, FolderStatus]]:
            return self._runner.run(counting, folder)

        return self._existing(user, name).addCallback(run).addCallback(counted)

    def listFolders(self, user: str) -> Deferred[list[FolderInfo]]:
        """
        @return: every folder, INBOX first then by name, with LIST
            attributes.
        """
        return self._runner.run(self._listSync, user)

    def _listSync(self, user: str) -> list[FolderInfo]:
        userDir = userDirectory(self.mailRoot, user)
        _createFolders(userDir)
        names: set[str] = set()
        with os.scandir(userDir) as entries:
            for entry in entries:
                name = entry.name[1:]
                visible = entry.name.startswith(".") and name and name[0] != "."
                if visible and os.path.isdir(os.path.join(entry.path, "cur")):
                    names.add(name)
        parents = {
            name.rsplit(SEPARATOR, i)[0]
            for name in names
            for i in range(1, name.count(SEPARATOR) + 1)
        }
        result = [FolderInfo(INBOX, (self._children(INBOX, names),))]
        for name in sorted(names | parents):
            attributes = [self._children(name, names | parents)]
            if name not in names:
                attributes.insert(0, "\\Noselect")
            if name in SPECIAL_USE:
                attributes.append(SPECIAL_USE[name])
            result.append(FolderInfo(name, tuple(attributes)))
        return result

    @staticmethod
    def _children(name: str, names: set[str]) -> str:
        prefix = name + SEPARATOR
        has = any(other.startswith(prefix) for other in names)
        return "\\HasChildren" if has else "\\HasNoChildren"

    def createFolder(self, user: str, name: str) -> Deferred[None]:
        """
        Create a folder (and its missing parents).

        @raise FolderExists: (in the Deferred) it exists already.
        @raise BadFolderName: (in the Deferred) the name cannot be one.
        """

        def create() -> None:
            canonical = checkFolderName(name)
            userDir = userDirectory(self.mailRoot, user)
            if canonical == INBOX or (self._path(user, canonical) / "cur").is_dir():
                raise FolderExists(name)
            levels = canonical.split(SEPARATOR)
            for i in range(1, len(levels) + 1):
                _createFolders(userDir, SEPARATOR.join(levels[:i]))

        return self._runner.run(create)

    def deleteFolder(self, user: str, name: str) -> Deferred[None]:
        """
        Delete a folder and its messages (not its children, which stay,
        as in Maildir++).  The directory is first renamed out of sight, so
        a crash leaves it whole or gone.

        @raise BadFolderName: (in the Deferred) for INBOX.
        @raise NoSuchFolder: (in the Deferred) no such folder.
        """

        def delete() -> None:
            path = self._path(user, name)
            if name.upper() == INBOX:
                raise BadFolderName(name)
            if not (path / "cur").is_dir():
                raise NoSuchFolder(name)
            self._forget(path)
            doomed = path.with_name(f"..deleted-{uuid.uuid4().hex}")
            os.rename(path, doomed)
            fsyncDirectory(path.parent)
            shutil.rmtree(doomed, ignore_errors=True)

        return self._runner.run(delete)

    def _forget(self, path: Path) -> None:
        folder = self._folders.pop(path, None)
        if folder is not None:
            folder.index.close()

    def renameFolder(self, user: str, old: str, new: str) -> Deferred[None]:
        """
        IMAP RENAME: the folder and its children get the new name; INBOX
        stays, and its messages move into the new folder.

        @raise NoSuchFolder: (in the Deferred) no folder C{old}.
        @raise FolderExists: (in the Deferred) C{new} exists.
        """

        def rename() -> None:
            source, target = self._path(user, old), self._path(user, new)
            if checkFolderName(new) == INBOX or (target / "cur").is_dir():
                raise FolderExists(new)
            if not (source / "cur").is_dir():
                raise NoSuchFolder(old)
            userDir = userDirectory(self.mailRoot, user)
            levels = new.split(SEPARATOR)
            for i in range(1, len(levels)):
                _createFolders(userDir, SEPARATOR.join(levels[:i]))
            if old.upper() == INBOX:
                _createFolders(userDir, new)
                inbox = self._folder(source).index
                inbox.move([m.uid for m in inbox.messages()], self._folder(target).index)
                return
            prefix = "." + old + SEPARATOR
            children = [p for p in userDir.iterdir() if p.name.startswith(prefix)]
            for path in [source, *children]:
                self._forget(path)
                os.rename(path, userDir / ("." + new + path.name[len(old) + 1 :]))
            fsyncDirectory(userDir)

        return self._runner.run(rename)

    # Subscriptions: one name per line in the user's C{subscriptions}.

    def subscriptions(self, user: str) -> Deferred[list[str]]:
        """
        @return: the subscribed names, in the order subscribed.
        """
        return self._runner.run(self._readSubscriptions, user)

    def _readSubscriptions(self, user: str) -> list[str]:
        path = userDirectory(self.mailRoot, user) / SUBSCRIPTIONS
        try:
            text = path.read_text("utf-8", "surrogateescape")
        except FileNotFoundError:
            return [INBOX, *DEFAULT_FOLDERS]
        return parseSubscriptions(text)

    def subscribe(self, user: str, name: str) -> Deferred[None]:
        """
        Add C{name} to the subscriptions (it need not exist).
        """
        return self._runner.run(self._changeSubscriptions, user, name, True)

    def unsubscribe(self, user: str, name: str) -> Deferred[None]:
        """
        Remove C{name} from the subscriptions.
        """
        return self._runner.run(self._changeSubscriptions, user, name, False)

    def _changeSubscriptions(self, user: str, name: str, add: bool) -> None:
        name = checkFolderName(name)
        _createFolders(userDirectory(self.mailRoot, user))
        names = [n for n in self._readSubscriptions(user) if n != name]
        if add:
            names.append(name)
        path = userDirectory(self.mailRoot, user) / SUBSCRIPTIONS
        writeDurably(path, "".join(n + "\n" for n in names).encode("utf-8", "surrogateescape"))


__all__ = [
    "SEPARATOR",
    "SPECIAL_USE",
    "BadFolderName",
    "FolderExists",
    "FolderInfo",
    "IMAPMailbox",
    "IMAPStore",
    "Listener",
    "NoSuchFolder",
    "Selection",
    "checkFolderName",
]
