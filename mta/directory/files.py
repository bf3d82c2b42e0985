# -*- test-case-name: tests.test_directory -*-
"""
The user directory kept in two hand-editable text files under C{data_dir}.

C{data_dir/users} holds one C{address:argon2id-hash} line per user (mode
0600); C{data_dir/aliases} one C{alias@domain: target, target} line per
alias.  Blank lines and lines starting with C{#} are ignored and kept.

L{FileDirectory} implements L{IUserDirectory} with the rules of
L{mta.directory.memory.BaseDirectory}.  Lookups never touch the disk:
L{FileDirectory.reloadIfChanged}, always on a worker thread, re-reads the
files when their stat changed and swaps the new tables in with one
assignment.  A malformed line is logged and skipped there, never fatal.
The server calls it before every password check, whenever inotify says a
file was replaced (L{DirectoryWatcher}, on Linux) and once a second
anyway (for hand edits, and where there is no inotify).

A change made with the admin command is in effect by the time the command
returns: after every load the server writes the stamps of the files it
loaded to C{data_dir/.directory.loaded}, and the command, when a server
runs on the same data dir, waits until that file shows the files as it
left them (L{waitUntilLoaded}).

The admin command changes the files through L{FileDirectory.addUser} and
friends: read, check, change and write happen under an exclusive
C{flock} on C{data_dir/.directory.lock}, and each file is replaced
atomically (temporary file, fsync, rename, fsync of the folder), so the
server only ever reads a whole old or a whole new file.  Changes are
refused while a file holds a malformed line: the command never writes one
and never silently drops one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from twisted.application.service import Service
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from mta.directory.memory import (
    BaseDirectory,
    DirectoryTables,
    checkPasswordHash,
    parsePlainAddress,
)
from mta.envelope import Address
from mta.fileutil import exclusiveLock, fsyncDirectory
from mta.interfaces import IBlockingRunner

_V = TypeVar("_V")

_log = Logger(namespace="mta.directory")

_FileStamp = tuple[int, int, int, int]
"""What tells us a file changed: mtime_ns, ctime_ns, size and inode."""

_Stamps = tuple[_FileStamp | None, _FileStamp | None]
"""The stamps of the users and the aliases file."""

#: The file in C{data_dir} where a running server says which versions of
#: the users and aliases files it has loaded.
LOADED_NAME = ".directory.loaded"

#: The files a server reloads, by name in C{data_dir}.
DIRECTORY_FILES = ("users", "aliases")

_USERS_HEADER = (
    "# mta users: one 'address:argon2id-hash' per line.",
    "# Change it with 'mta user add|passwd|del'; the server sees changes at once.",
)
_ALIASES_HEADER = (
    "# mta aliases: one 'alias@domain: target, target' per line.",
    "# Targets are local users, other aliases or remote addresses.",
)


@dataclass(frozen=True)
class _Parsed(Generic[_V]):
    """
    One directory file as read.

    @ivar lines: the raw lines, kept so a rewrite preserves comments.
    @ivar keys: per line, the entry it holds, or C{None} (comment, blank
        or malformed).
    @ivar entries: the well-formed entries, first one wins.
    @ivar problems: one line per malformed line, naming file and line.
    """

    lines: tuple[str, ...]
    keys: tuple[str | None, ...]
    entries: dict[str, _V]
    problems: tuple[str, ...]


def _parseUserLine(text: str) -> tuple[str, str]:
    """
    Parse C{address:hash}.  The reasons never quote the line: it holds a
    hash.

    @raise ValueError: malformed.
    """
    address, colon, hashed = text.partition(":")
    if not colon:
        raise ValueError("expected 'address:hash'")
    try:
        key = parsePlainAddress(address).canonical()
    except ValueError:
        raise ValueError("bad address before ':'") from None
    checkPasswordHash(hashed.strip())
    return key, hashed.strip()


def _parseAliasLine(text: str) -> tuple[str, tuple[Address, ...]]:
    """
    Parse C{alias@domain: target, target}.

    @raise ValueError: malformed.
    """
    alias, colon, rest = text.partition(":")
    if not colon:
        raise ValueError("expected 'alias: target, target'")
    targets = tuple(parsePlainAddress(t) for t in rest.split(","))
    return parsePlainAddress(alias).canonical(), targets


def _formatUser(key: str, hashed: str) -> str:
    """
    @return: the users-file line for one user.
    """
    return f"{key}:{hashed}"


def _formatAlias(key: str, targets: tuple[Address, ...]) -> str:
    """
    @return: the aliases-file line for one alias.
    """
    return f"{key}: {', '.join(str(t) for t in targets)}"


def _parseText(path: Path, text: str, parseLine: Callable[[str], tuple[str, _V]]) -> _Parsed[_V]:
    """
    Split a directory file into entries, keeping every raw line.
    """
    lines = tuple(text.splitlines())
    keys: list[str | None] = []
    entries: dict[str, _V] = {}
    problems: list[str] = []
    for number, line in enumerate(lines, 1):
        key, value, why = _parseOne(line, parseLine)
        if key is not None and key in entries:
            key, why = None, f"{key} is listed twice"
        if why:
            problems.append(f"{path} line {number}: {why}")
        elif key is not None and value is not None:
            entries[key] = value
        keys.append(key)
    return _Parsed(lines, tuple(keys), entries, tuple(problems))


def _parseOne(
    line: str, parseLine: Callable[[str], tuple[str, _V]]
) -> tuple[str | None, _V | None, str]:
    """
    @return: key, value and C{""} for an entry; C{None, None, ""} for a
        comment or blank line; C{None, None, reason} for a malformed line.
    """
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None, None, ""
    try:
        key, value = parseLine(stripped)
    except ValueError as e:
        return None, None, str(e)
    return key, value, ""


def _readFile(path: Path, parseLine: Callable[[str], tuple[str, _V]]) -> _Parsed[_V]:
    """
    Read and parse one file; a missing file is an empty one.

    @raise OSError: it cannot be read.
    @raise UnicodeDecodeError: it is not UTF-8.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    return _parseText(path, text, parseLine)


def _render(
    parsed: _Parsed[_V],
    entries: Mapping[str, _V],
    formatLine: Callable[[str, _V], str],
    header: tuple[str, ...],
) -> str:
    """
    Write C{entries} back in the shape of C{parsed}: comments and blank
    lines stay, changed entries stay where they were, new ones go last.
    """
    out = [] if parsed.lines else list(header)
    for line, key in zip(parsed.lines, parsed.keys, strict=True):
        if key is None:
            out.append(line)
        elif key in entries:
            out.append(formatLine(key, entries[key]))
    known = set(parsed.keys)
    out.extend(formatLine(k, v) for k, v in entries.items() if k not in known)
    return "".join(line + "\n" for line in out)


def _stamp(path: Path) -> _FileStamp | None:
    """
    @return: what changes when C{path} is edited, or C{None} when missing.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _writeAtomically(path: Path, text: str, mode: int) -> None:
    """
    Replace C{path} with C{text} so that readers see the old or the new
    file, never a part, even across a crash.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsyncDirectory(path.parent)


def currentStamps(dataDir: Path) -> _Stamps:
    """
    @return: the stamps of C{dataDir}'s users and aliases files as they are
        now (blocking).
    @raise OSError: a file cannot be looked at.
    """
    return (_stamp(dataDir / "users"), _stamp(dataDir / "aliases"))


def _encodeStamps(stamps: _Stamps) -> str:
    return json.dumps([list(s) if s is not None else None for s in stamps])


def loadedStamps(dataDir: Path) -> _Stamps | None:
    """
    @return: the stamps a running server last said it loaded, or C{None}
        when it has said nothing readable.
    """
    try:
        raw = json.loads((dataDir / LOADED_NAME).read_text(encoding="ascii"))
        users, aliases = (tuple(int(n) for n in s) if s is not None else None for s in raw)
    except (OSError, ValueError, TypeError):
        return None
    return (users, aliases)  # type: ignore[return-value]


def waitUntilLoaded(
    dataDir: Path,
    timeout: float,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """
    Wait until the server running on C{dataDir} has loaded the users and
    aliases files as they are now (blocking; for the admin command).

    @param timeout: how long to wait, in seconds.
    @param sleep: waits between two looks (tests pass a fake).
    @param clock: tells the time for the deadline (tests pass a fake).
    @return: whether the server caught up in time.
    """
    deadline = clock() + timeout
    while True:
        try:
            if loadedStamps(dataDir) == currentStamps(dataDir):
                return True
        except OSError:
            pass
        if clock() >= deadline:
            return False
        sleep(0.01)


def _writeLoaded(dataDir: Path, stamps: _Stamps) -> None:
    """
    Replace C{data_dir/.directory.loaded} with C{stamps}: atomically, so
    the admin command never reads a part, but without fsync, as it only
    speaks of this process's memory.
    """
    path = dataDir / LOADED_NAME
    fd, tmp = tempfile.mkstemp(dir=dataDir, prefix=f"{LOADED_NAME}.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(_encodeStamps(stamps) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class FileDirectory(BaseDirectory):
    """
    An L{IUserDirectory} backed by C{data_dir/users} and C{data_dir/aliases}.

    @ivar dataDir: the folder holding the files.
    @ivar usersPath: the users file.
    @ivar aliasesPath: the aliases file.
    @ivar problems: the malformed lines found by the last reload, one
        message each (file and line, never a hash).
    """

    def __init__(self, dataDir: Path, domains: Iterable[str], acknowledge: bool = False) -> None:
        """
        Read the files now (blocking), logging and skipping bad lines.

        @param dataDir: the folder; need not exist yet.
        @param domains: the local domains, the primary one first.
        @param acknowledge: whether to write C{data_dir/.directory.loaded}
            after every load; only the running server does.
        """
        super().__init__(domains)
        self.dataDir = Path(dataDir)
        self.usersPath = self.dataDir / "users"
        self.aliasesPath = self.dataDir / "aliases"
        self.problems: tuple[str, ...] = ()
        self._acknowledge = acknowledge
        self._stamps: _Stamps | None = None
        self._loaded: _Stamps | None = None
        self._acknowledged: _Stamps | None = None
        self._reloading = threading.Lock()
        self.reloadIfChanged()

    def reloadIfChanged(self) -> bool:
        """
        Re-read the files if their stat changed (blocking: run it on a
        thread pool).  An unreadable file keeps the previous state.

        A call made while another thread reloads waits for it and then
        looks again: a login checked right after a change must never see
        the tables from before it.

        @return: whether new tables were swapped in.
        """
        with self._reloading:
            changed = self._reload()
            if self._acknowledge and self._loaded != self._acknowledged:
                self._sayLoaded()
            return changed

    def _sayLoaded(self) -> None:
        """
        Tell the admin command which files are loaded; a failure is logged
        (the command then warns that the server did not confirm).
        """
        assert self._loaded is not None
        try:
            _writeLoaded(self.dataDir, self._loaded)
        except OSError as e:
            _log.error("directory: cannot write {path}: {why}", path=LOADED_NAME, why=e)
            return
        self._acknowledged = self._loaded

    def _reload(self) -> bool:
        """
        The body of L{reloadIfChanged}, run by one thread at a time.
        """
        try:
            stamps = currentStamps(self.dataDir)
        except OSError as e:
            return self._cannotRead(e)
        if stamps == self._stamps:
            return False
        # Remember the stamps even if reading fails, to log that once; a
        # fix (even a chmod, through ctime) changes them again.
        self._stamps = stamps
        try:
            users = _readFile(self.usersPath, _parseUserLine)
            aliases = _readFile(self.aliasesPath, _parseAliasLine)
        except (OSError, UnicodeError) as e:
            return self._cannotRead(e)
        self.problems = users.problems + aliases.problems
        for problem in self.problems:
            _log.warn("directory: {problem}; line ignored", problem=problem)
        self._tables = DirectoryTables(
            users=self._localOnly(users.entries),
            aliases=self._localOnly(aliases.entries),
        )
        self._loaded = stamps
        return True

    def _cannotRead(self, why: Exception) -> bool:
        """
        Log that the files cannot be read; the previous tables stay.

        @return: C{False}: nothing was reloaded.
        """
        _log.error("directory: cannot read {dir}: {why}", dir=self.dataDir, why=why)
        return False

    def _localOnly(self, entries: dict[str, _V]) -> dict[str, _V]:
        """
        @return: the entries in local domains; the others are logged.
        """
        kept = {}
        for key, value in entries.items():
            if self.isLocalDomain(key.rpartition("@")[2]):
                kept[key] = value
            else:
                _log.warn("directory: {key} is not in a local domain; ignored", key=key)
        return kept

    def _change(self, change: Callable[[DirectoryTables], DirectoryTables]) -> None:
        """
        Read both files under the lock, apply C{change}, write back what
        changed, then reload.

        @raise ValueError: a file has a malformed line, or C{change} refused.
        @raise OSError: the files cannot be read or written.
        """
        self.dataDir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with exclusiveLock(self.dataDir / ".directory.lock"):
            users = _readFile(self.usersPath, _parseUserLine)
            aliases = _readFile(self.aliasesPath, _parseAliasLine)
            for problem in users.problems + aliases.problems:
                raise ValueError(f"{problem}; fix that line first")
            old = DirectoryTables(users=users.entries, aliases=aliases.entries)
            new = change(old)
            if new.users != old.users:
                text = _render(users, new.users, _formatUser, _USERS_HEADER)
                _writeAtomically(self.usersPath, text, 0o600)
            if new.aliases != old.aliases:
                text = _render(aliases, new.aliases, _formatAlias, _ALIASES_HEADER)
                _writeAtomically(self.aliasesPath, text, 0o644)
        self.reloadIfChanged()


class DirectoryWatcher(Service):
    """
    Reloads a L{FileDirectory} as soon as inotify says one of its files
    was written or replaced, so the admin command's wait is a matter of
    milliseconds.  Where inotify is missing (not Linux, or no watches
    left) it says so once and does nothing: the server's one-second timer
    still reloads.

    Events arrive on the reactor thread; the reload itself runs on the
    runner, one at a time, with a burst of events making at most one more.
    """

    def __init__(self, directory: FileDirectory, runner: IBlockingRunner, reactor: Any) -> None:
        """
        @param directory: what to reload.
        @param runner: where the reload runs, off the reactor thread.
        @param reactor: the reactor the inotify descriptor is read by.
        """
        self._directory = directory
        self._runner = runner
        self._reactor = reactor
        self._notifier: Any = None
        self._running = False
        self._again = False

    def startService(self) -> None:
        """
        Watch C{data_dir} for the users and aliases files changing.
        """
        super().startService()
        try:
            from twisted.internet import inotify

            notifier = inotify.INotify(self._reactor)
            notifier.startReading()
        except Exception as e:
            _log.info("directory: no inotify ({why}); changes are seen within a second", why=e)
            return
        mask = (
            inotify.IN_CLOSE_WRITE
            | inotify.IN_MOVED_TO
            | inotify.IN_MOVED_FROM
            | inotify.IN_DELETE
            | inotify.IN_ATTRIB
        )
        try:
            notifier.watch(FilePath(str(self._directory.dataDir)), mask, callbacks=[self._event])
        except Exception as e:
            notifier.loseConnection()
            _log.info("directory: cannot watch {dir} ({why})", dir=self._directory.dataDir, why=e)
            return
        self._notifier = notifier

    def stopService(self) -> None:
        """
        Stop watching.
        """
        super().stopService()
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None

    def _event(self, ignored: object, path: FilePath[Any], mask: int) -> None:
        name = path.basename()
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if name in DIRECTORY_FILES:
            self.reload()

    def reload(self) -> None:
        """
        Reload on the runner now, or once the reload under way is done.
        """
        if self._running:
            self._again = True
            return
        self._running = True
        self._again = False
        d = self._runner.run(self._directory.reloadIfChanged)
        d.addErrback(lambda f: _log.failure("directory: reload failed", f))
        d.addBoth(self._reloaded)

    def _reloaded(self, ignored: object) -> None:
        self._running = False
        if self._again:
            self.reload()
