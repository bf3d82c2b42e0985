# -*- test-case-name: tests.test_directory -*-
"""
The user directory kept in two hand-editable text files under C{data_dir}.

C{data_dir/users} holds one C{address:argon2id-hash} line per user (mode
0600); C{data_dir/aliases} one C{alias@domain: target, target} line per
alias.  Blank lines and lines starting with C{#} are ignored and kept.

L{FileDirectory} implements L{IUserDirectory} with the rules of
L{mta.directory.memory.BaseDirectory}.  Lookups never touch the disk: the
server calls L{FileDirectory.reloadIfChanged} on its thread pool every
second, which re-reads the files when their stat changed and swaps the new
tables in with one assignment.  A malformed line is logged and skipped
there, never fatal.

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
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from twisted.logger import Logger

from mta.directory.memory import (
    BaseDirectory,
    DirectoryTables,
    checkPasswordHash,
    parsePlainAddress,
)
from mta.envelope import Address
from mta.fileutil import exclusiveLock, fsyncDirectory

_V = TypeVar("_V")

_log = Logger(namespace="mta.directory")

_FileStamp = tuple[int, int, int, int]
"""What tells us a file changed: mtime_ns, ctime_ns, size and inode."""

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


class FileDirectory(BaseDirectory):
    """
    An L{IUserDirectory} backed by C{data_dir/users} and C{data_dir/aliases}.

    @ivar dataDir: the folder holding the files.
    @ivar usersPath: the users file.
    @ivar aliasesPath: the aliases file.
    @ivar problems: the malformed lines found by the last reload, one
        message each (file and line, never a hash).
    """

    def __init__(self, dataDir: Path, domains: Iterable[str]) -> None:
        """
        Read the files now (blocking), logging and skipping bad lines.

        @param dataDir: the folder; need not exist yet.
        @param domains: the local domains, the primary one first.
        """
        super().__init__(domains)
        self.dataDir = Path(dataDir)
        self.usersPath = self.dataDir / "users"
        self.aliasesPath = self.dataDir / "aliases"
        self.problems: tuple[str, ...] = ()
        self._stamps: tuple[_FileStamp | None, _FileStamp | None] | None = None
        self._reloading = threading.Lock()
        self.reloadIfChanged()

    def reloadIfChanged(self) -> bool:
        """
        Re-read the files if their stat changed (blocking: run it on a
        thread pool).  An unreadable file keeps the previous state.

        @return: whether new tables were swapped in.
        """
        if not self._reloading.acquire(blocking=False):
            return False  # another thread is at it right now
        try:
            return self._reload()
        finally:
            self._reloading.release()

    def _reload(self) -> bool:
        """
        The body of L{reloadIfChanged}, run by one thread at a time.
        """
        try:
            stamps = (_stamp(self.usersPath), _stamp(self.aliasesPath))
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
