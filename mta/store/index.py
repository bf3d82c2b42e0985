# -*- test-case-name: tests.test_index -*-
"""
The per-folder IMAP index: what a bare Maildir cannot hold (numeric UIDs,
UIDVALIDITY, MODSEQ, keywords), kept beside C{cur/ new/ tmp/}.

Blocking file I/O only: every method runs on an L{IBlockingRunner} (the
asynchronous face is L{mta.store.imapstore}).  One L{FolderIndex} object
per folder per process; a lock makes its methods safe from any thread.

On disk: a snapshot (C{mta-index}) and a journal (C{mta-index.log}); see
L{mta.store.indexformat} for their format.

Crash safety (a C{kill -9} or power loss at any instant):

  - Every change is applied to memory by the same code that replays the
    journal, after its record is written; a change the caller is told
    about (a UID handed out, a flag change answered, an expunge) has had
    its record fsync'd first.  A UID is only ever handed out in an C{A}
    record, and loading takes UIDNEXT past every C{A} record, so a UID
    that anyone saw is never given again.
  - A crash while a record is being appended leaves a torn last line; its
    CRC fails and it is cut off (it was never acknowledged).  A bad line
    with good lines after it, a snapshot whose CRC fails, or a journal
    without a snapshot is damage: the index is rebuilt from the Maildir
    under a new UIDVALIDITY, greater than the old one, so clients drop
    their caches instead of trusting reused UIDs.
  - Files move before their records are written: a flag change renames
    the message (its C{:2,} info), fsyncs the directory, then journals;
    an expunge unlinks, then journals; an append writes C{tmp/}, fsyncs,
    renames into C{cur/}, fsyncs, then journals.  A crash between the two
    leaves a file the next L{FolderIndex.sync} reads correctly (its flags
    from its name, a missing file as expunged, a new file as new).

A plain L{FolderIndex.sync} that finds nothing new writes nothing; one that
does writes its records with a single fsync.  New files get UIDs in the
order of their delivery time, then name.  C{new/} files are moved to
C{cur/} (with an empty C{:2,} info) only by C{sync(takeNew=True)}, which
the IMAP layer asks for when a session has the folder selected, as RFC
3501's \\Recent and the Maildir spec expect; POP3 reads both directories
and keys messages by base name, so it never notices.

Internal dates (the files' mtimes, as Dovecot and Courier have them) are
read when first asked for (L{FolderIndex.internalDates}), not when a file
is indexed, so a folder's first SELECT C{stat}s no file whose name gives
its size and arrival time; a date read is journalled durably before it is
handed out and never changes afterwards, though the file be touched.  A
date given at APPEND is recorded at once.

The system flags travel in the file names (C{D F R S T} for \\Draft
\\Flagged \\Answered \\Seen \\Deleted) so mutt and other Maildir tools
agree; keywords live in the index, and those Dovecot gave a letter (see
L{mta.store.dovecot}) also appear as their letter.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from operator import attrgetter
from pathlib import Path

from mta.fileutil import fsyncDirectory, writeAll
from mta.message import MessageBody
from mta.store.appending import placeFile, writeTemporary
from mta.store.dovecot import readKeywords, readUIDList
from mta.store.indexformat import (
    INDEX,
    INFO,
    JOURNAL,
    ExpungedRanges,
    FlagMode,
    FolderStatus,
    IndexDamaged,
    MessageInfo,
    SyncResult,
    combineFlags,
    crc,
    entryLines,
    flagsAfterRename,
    flagsFromInfo,
    fsyncFile,
    headerValidity,
    infoFor,
    parseRanges,
    uidRanges,
    writeDurably,
)
from mta.store.indexscan import (
    NO_FILES,
    describeFiles,
    describeFolder,
    fileDates,
    messageInfos,
    moveNew,
    plainMessages,
    scanMaildir,
)


class FolderIndex:
    """
    The index of one Maildir folder; see the module docstring.

    Loaded on first use.  Every public method is blocking and
    thread-safe.  The attributes C{uidValidity}, C{uidNext},
    C{highestModseq} and C{firstRecent} are meaningful once a method has
    been called (the load is lazy).

    @ivar folder: the Maildir (holding C{cur/ new/ tmp/}).
    """

    #: The journal is folded into a new snapshot once it is this big and
    #: bigger than the snapshot.
    compactAt = 64 * 1024

    def __init__(self, folder: Path, clock: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self._clock = clock
        self._lock = threading.RLock()
        self._loaded = False
        self._journalFd = -1
        self._journalSize = 0
        self._snapshotSize = 0
        self._reset(0)

    def _reset(self, uidValidity: int) -> None:
        self.uidValidity = uidValidity
        self.uidNext = 1
        self.highestModseq = 1
        self.firstRecent = 1
        self._generation = 0
        self._letters: list[str] = []
        self._entries: dict[int, MessageInfo] = {}
        self._byBase: dict[str, MessageInfo] = {}
        self._vanished = ExpungedRanges()

    # Loading, rebuilding, compacting.

    def _ensureLoaded(self, takeNew: bool = False) -> bool:
        """
        Load the index, or build it if it is missing or damaged.

        @param takeNew: a build moves C{new/} files to C{cur/} first.
        @return: whether it built the index (from the files as they are
            now: a sync within the same locked call has nothing to do).
        """
        if self._loaded:
            return False
        built = False
        snapshot = self._readOrNone(INDEX)
        journal = self._readOrNone(JOURNAL)
        if snapshot is None and journal is None:
            self._create(takeNew)
            built = True
        else:
            oldValidity = max(headerValidity(snapshot), headerValidity(journal))
            try:
                if snapshot is None:
                    raise IndexDamaged("journal without snapshot")
                self._loadSnapshot(snapshot)
                self._replay(journal)
            except (IndexDamaged, ValueError, IndexError, KeyError):
                self._rebuild(oldValidity, takeNew)
                built = True
        self._loaded = True
        return built

    def _readOrNone(self, name: str) -> bytes | None:
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None

    def _create(self, takeNew: bool) -> None:
        """
        Index the folder for the first time, adopting Dovecot's UIDs.
        """
        adopted = readUIDList(self.folder)
        self._reset(int(self._clock()))
        self._letters = readKeywords(self.folder)
        known: dict[str, int] = {}
        if adopted is not None:
            self.uidValidity, self.uidNext = adopted.uidValidity, adopted.uidNext
            known = adopted.uids
        # A folder indexed for the first time: its messages are all new to
        # IMAP, hence \\Recent; an adopted one's were seen by Dovecot.
        self._build(known, adopted is None, takeNew)

    def _rebuild(self, oldValidity: int, takeNew: bool) -> None:
        """
        Index the folder afresh under a new UIDVALIDITY, never an old one.
        """
        adopted = readUIDList(self.folder)
        floor = max(oldValidity, adopted.uidValidity if adopted else 0) + 1
        self._reset(max(int(self._clock()), floor))
        self._letters = readKeywords(self.folder)
        self._build({}, False, takeNew)

    def _build(self, known: dict[str, int], recent: bool, takeNew: bool) -> None:
        """
        Index every file, giving those in C{known} their UID and the others
        new ones in delivery order, then write the snapshot and an empty
        journal.

        @param takeNew: move C{new/} files to C{cur/} first.
        """
        files = describeFolder(self.folder, takeNew)
        bases = enumerate(files.bases) if known else iter(())
        adopted = sorted((known[b], i) for i, b in bases if b in known)  # (UID, index)
        if adopted:
            self.uidNext = max(self.uidNext, adopted[-1][0] + 1)
        fresh = files.inOrder(
            [i for i, b in enumerate(files.bases) if b not in known] if known else None
        )
        uids = [uid for uid, _ in adopted] + list(range(self.uidNext, self.uidNext + len(fresh)))
        infos = messageInfos(uids, files, [i for _, i in adopted] + fresh, self._letters)
        self._entries = dict(zip(uids, infos, strict=True))
        self._byBase = dict(zip(map(attrgetter("base"), infos), infos, strict=True))
        self.uidNext += len(fresh)
        self.firstRecent = 1 if recent else self.uidNext
        n = len(fresh)
        plain = not adopted and files.dates.count(None) == n and files.subs.count("cur") == n
        self._compact(plain)

    def _loadSnapshot(self, data: bytes) -> None:
        body, _, tail = data.rstrip(b"\n").rpartition(b"\n")
        if not tail.startswith(b"C\t") or tail[2:].decode() != crc(body + b"\n"):
            raise IndexDamaged("snapshot checksum")
        lines = body.decode("utf-8", "surrogateescape").split("\n")
        header = lines[0].split("\t")
        if header[:2] != ["mta-index", "1"]:
            raise IndexDamaged("snapshot header")
        values = {f[0]: int(f[1:]) for f in header[2:]}
        self._reset(values["V"])
        self.uidNext, self.highestModseq = values["N"], values["M"]
        self.firstRecent, self._generation = values["R"], values["G"]
        for line in lines[1:]:
            fields = line.split("\t")
            if fields[0] == "K":
                self._letters = fields[1:]
            elif fields[0] == "E":
                self._vanished.add(int(fields[1]), int(fields[2]), int(fields[3]))
            elif fields[0] == "P":
                plain = plainMessages(int(fields[1]), fields[2:], self._letters)
                self._entries.update(zip(map(attrgetter("uid"), plain), plain, strict=True))
                self._byBase.update(zip(map(attrgetter("base"), plain), plain, strict=True))
            else:
                self._apply(fields)
        self._snapshotSize = len(data)

    def _replay(self, journal: bytes | None) -> None:
        """
        Apply the journal's good records; cut off a torn tail.
        """
        path = self.folder / JOURNAL
        if journal is None:
            self._openJournal(fresh=True)
            return
        if not journal.startswith(b"mta-journal\t1\tG"):
            raise IndexDamaged("journal header")
        head, _, rest = journal.partition(b"\n")
        generation = int(head.split(b"\t")[2][1:])
        if generation > self._generation:
            raise IndexDamaged("journal newer than snapshot")
        if generation < self._generation:
            self._openJournal(fresh=True)
            return
        good = len(head) + 1
        lines = rest.split(b"\n")
        for i, line in enumerate(lines):
            if i == len(lines) - 1:
                break  # after the last newline: empty, or torn
            check, _, record = line.partition(b"\t")
            if check.decode("ascii", "replace") != crc(record):
                if i < len(lines) - 2:
                    raise IndexDamaged("bad journal record before good ones")
                break
            self._apply(record.decode("utf-8", "surrogateescape").split("\t"))
            good += len(line) + 1
        if good < len(journal):
            os.truncate(path, good)
            fsyncFile(path)
        self._openJournal(fresh=False)
        self._journalSize = good

    def _openJournal(self, fresh: bool) -> None:
        if self._journalFd >= 0:
            os.close(self._journalFd)
        path = self.folder / JOURNAL
        if fresh:
            header = f"mta-journal\t1\tG{self._generation}\tV{self.uidValidity}\n".encode()
            writeDurably(path, header)
            self._journalSize = len(header)
        self._journalFd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def _compact(self, plain: bool = False) -> None:
        """
        Write the whole state as a new snapshot, then start an empty
        journal of the next generation.

        @param plain: every message is as a first index finds a file whose
            name says its size (in C{cur/}, MODSEQ 1, no internal date,
            the flags its name says) and the UIDs are consecutive: one
            C{P} line holds them all.
        """
        self._generation += 1
        header = "\t".join(
            ("mta-index", "1", f"V{self.uidValidity}", f"N{self.uidNext}",
             f"M{self.highestModseq}", f"R{self.firstRecent}", f"G{self._generation}")
        )  # fmt: skip
        lines = [header, "\t".join(["K", *self._letters])]
        lines += [f"E\t{a}\t{b}\t{m}" for a, b, m in self._vanished.merge(list(self._entries))]
        if plain and self._entries:
            names = map(attrgetter("name"), self._entries.values())
            lines.append("\t".join(["P", str(next(iter(self._entries))), *names]))
        else:
            lines += entryLines(self._entries.values())
        body = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
        data = body + f"C\t{crc(body)}\n".encode()
        writeDurably(self.folder / INDEX, data)
        self._snapshotSize = len(data)
        self._openJournal(fresh=True)

    def close(self) -> None:
        """
        Let go of the journal's descriptor; the next call loads afresh.
        """
        with self._lock:
            if self._journalFd >= 0:
                os.close(self._journalFd)
            self._journalFd = -1
            self._loaded = False

    # The journal.

    def _apply(self, fields: list[str]) -> None:
        """
        Apply one record to memory (live, or replaying the journal).
        """
        kind = fields[0]
        if kind == "A":
            uid, modseq, name = int(fields[1]), int(fields[2]), fields[4]
            flags = frozenset(fields[7].split()) if fields[7] else frozenset()
            date = float(fields[5]) if fields[5] else None
            base = name.split(INFO, 1)[0]
            old = self._byBase.pop(base, None)
            if old is not None:
                self._entries.pop(old.uid, None)
            self._keep(MessageInfo(uid, flags, modseq, date, int(fields[6]), base, fields[3], name))
            self.uidNext = max(self.uidNext, uid + 1)
        elif kind == "F":
            uid, modseq = int(fields[1]), int(fields[2])
            flags = frozenset(fields[5].split()) if fields[5] else frozenset()
            entry = self._entries[uid]
            self._keep(entry._replace(modseq=modseq, sub=fields[3], name=fields[4], flags=flags))
        elif kind == "X":
            modseq = int(fields[1])
            self._forget(parseRanges(fields[2]), modseq)
        elif kind == "R":
            self.firstRecent = max(self.firstRecent, int(fields[1]))
            return
        elif kind == "D":
            dated = self._entries.get(int(fields[1]))
            if dated is not None:
                self._keep(dated._replace(internalDate=float(fields[2])))
            return
        else:
            raise IndexDamaged(f"unknown record {kind!r}")
        self.highestModseq = max(self.highestModseq, modseq)

    def _keep(self, entry: MessageInfo) -> None:
        """
        Make C{entry} its message's (new or changed).
        """
        self._entries[entry.uid] = self._byBase[entry.base] = entry

    def _forget(self, uids: list[int], modseq: int) -> None:
        """
        Drop expunged messages, remembering their UIDs for QRESYNC.
        """
        for uid in uids:
            entry = self._entries.pop(uid, None)
            if entry is not None and self._byBase.get(entry.base) is entry:
                del self._byBase[entry.base]
            self._vanished.add(uid, uid, modseq)

    def _log(self, records: list[list[str]], durable: bool = True) -> None:
        """
        Journal C{records} (fsync'd when C{durable}), then apply them.
        """
        if not records:
            return
        lines = []
        for fields in records:
            record = "\t".join(fields).encode("utf-8", "surrogateescape")
            lines.append(crc(record).encode() + b"\t" + record + b"\n")
        data = b"".join(lines)
        writeAll(self._journalFd, data)
        if durable:
            os.fsync(self._journalFd)
        self._journalSize += len(data)
        for fields in records:
            self._apply(fields)
        if self._journalSize > max(self.compactAt, self._snapshotSize):
            self._compact()

    def _nextModseq(self) -> str:
        return str(self.highestModseq + 1)

    # Reading.

    def messages(self) -> list[MessageInfo]:
        """
        @return: every message, by ascending UID.
        """
        with self._lock:
            self._ensureLoaded()
            return list(self._entries.values())

    def internalDates(self, uids: Iterable[int]) -> dict[int, float]:
        """
        The internal dates of some messages, reading (and journalling,
        durably: a date a client saw never changes) those not read yet
        from their files' mtimes.

        @return: UID to internal date for each of C{uids} still here.
        """
        with self._lock:
            self._ensureLoaded()
            wanted = [self._entries[uid] for uid in set(uids) if uid in self._entries]
            unread = [e for e in wanted if e.internalDate is None]
            dates = fileDates(self.folder, [(e.sub, e.name) for e in unread])
            if None in dates:
                # Renamed by another Maildir tool since the last sync?
                found = scanMaildir(self.folder)
                places = [found.get(e.base, (e.sub, e.name)) for e in unread]
                dates = fileDates(self.folder, places)
            read = zip(unread, dates, strict=True)
            records = [["D", str(e.uid), repr(d)] for e, d in read if d is not None]
            self._log(records)
            dated = [self._entries[e.uid] for e in wanted]
            return {e.uid: e.internalDate for e in dated if e.internalDate is not None}

    def selection(self) -> tuple[list[MessageInfo], int, int, int]:
        """
        @return: what a SELECT shows, at one instant: C{(messages,
            uidValidity, uidNext, highestModseq)}.
        """
        with self._lock:
            messages = self.messages()
            return messages, self.uidValidity, self.uidNext, self.highestModseq

    def status(self) -> FolderStatus:
        """
        @return: the STATUS counts (as of the last sync).
        """
        with self._lock:
            self._ensureLoaded()
            entries = self._entries.values()
            return FolderStatus(
                messages=len(self._entries),
                recent=sum(1 for e in entries if e.uid >= self.firstRecent),
                uidNext=self.uidNext,
                uidValidity=self.uidValidity,
                unseen=sum(1 for e in entries if "\\Seen" not in e.flags),
                highestModseq=self.highestModseq,
                size=sum(e.size for e in entries),
            )

    def body(self, uid: int) -> MessageBody:
        """
        @return: where the message's bytes are (a path and size).  Read it
            promptly: a flag change renames the file.
        @raise KeyError: no such message.
        """
        with self._lock:
            self._ensureLoaded()
            entry = self._entries[uid]
            # The file's own size: a Maildir written by another server may
            # store bare LF line ends, smaller than the size IMAP shows.
            return MessageBody.fromFile(str(self.folder / entry.sub / entry.name))

    def changedSince(self, modseq: int) -> list[MessageInfo]:
        """
        @return: the messages whose MODSEQ is above C{modseq}, by UID.
        """
        with self._lock:
            self._ensureLoaded()
            return [e for e in self._entries.values() if e.modseq > modseq]

    def vanishedSince(self, modseq: int) -> list[tuple[int, int]]:
        """
        @return: ranges C{(first, last)} of UIDs expunged after C{modseq}
            (maybe more: see L{_forget}); no live UID is in any of them.
        """
        with self._lock:
            self._ensureLoaded()
            ranges = self._vanished.merge(list(self._entries))
            return [(a, b) for a, b, m in ranges if m > modseq]

    def claimRecent(self) -> list[int]:
        """
        Take the \\Recent messages for the calling session: no other
        session gets them.

        @return: their UIDs.
        """
        with self._lock:
            self._ensureLoaded()
            recent = [uid for uid in self._entries if uid >= self.firstRecent]
            if self.firstRecent < self.uidNext:
                self._log([["R", str(self.uidNext)]], durable=False)
            return recent

    # Changing.

    def sync(self, takeNew: bool = False) -> SyncResult:
        """
        Bring the index in step with the files: new files get UIDs, gone
        ones are expunged, renamed ones (flags changed by another Maildir
        tool) get their new flags.

        @param takeNew: also move C{new/} files into C{cur/}.
        """
        with self._lock:
            if self._ensureLoaded(takeNew):
                return SyncResult(highestModseq=self.highestModseq)
            found = scanMaildir(self.folder)
            if takeNew:
                found = self._takeNew(found)
            modseq = self._nextModseq()
            records: list[list[str]] = []
            changed: list[int] = []
            gone = [e.uid for b, e in self._byBase.items() if b not in found]
            for base, (sub, name) in found.items():
                entry = self._byBase.get(base)
                if entry is None or (entry.sub == sub and entry.name == name):
                    continue
                flags = flagsAfterRename(entry, name, self._letters)
                if flags != entry.flags:
                    changed.append(entry.uid)
                record = [
                    "F",
                    str(entry.uid),
                    modseq if flags != entry.flags else str(entry.modseq),
                ]
                records.append([*record, sub, name, " ".join(sorted(flags))])
            added = self._addRecords(found, modseq, records)
            if gone:
                records.append(["X", modseq, uidRanges(gone)])
            self._log(records, durable=bool(added or gone or changed))
            return SyncResult(tuple(added), tuple(sorted(gone)), tuple(changed), self.highestModseq)

    def _takeNew(self, found: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
        """
        Move every C{new/} file of a scan to C{cur/}, with an info part
        that says the flags the index has for it, else the one it had.
        """

        def infoOf(base: str, info: str) -> str:
            entry = self._byBase.get(base)
            return infoFor(entry.flags, "", self._letters) if entry else info

        new = [name for sub, name in found.values() if sub == "new"]
        for name in moveNew(self.folder, new, infoOf)[0]:
            found[name.split(INFO, 1)[0]] = ("cur", name)
        return found

    def _addRecords(
        self, found: dict[str, tuple[str, str]], modseq: str, records: list[list[str]]
    ) -> list[int]:
        """
        Add an C{A} record for every file the index does not know, in
        delivery order.

        @return: the UIDs given.
        """
        files = NO_FILES
        for sub in ("new", "cur"):
            names = [n for b, (s, n) in found.items() if s == sub and b not in self._byBase]
            files = files.plus(describeFiles(self.folder, sub, names))
        added: list[int] = []
        for i in files.inOrder():
            uid, date = self.uidNext + len(added), files.dates[i]
            flags = " ".join(sorted(flagsFromInfo(files.infos[i] or "", self._letters)))
            dateText = "" if date is None else repr(date)
            records.append(
                ["A", str(uid), modseq, files.subs[i], files.names[i], dateText,
                 str(files.sizes[i]), flags]
            )  # fmt: skip
            added.append(uid)
        return added

    def setFlags(
        self,
        uids: Iterable[int],
        mode: FlagMode,
        flags: Iterable[str],
        unchangedSince: int | None = None,
    ) -> tuple[list[MessageInfo], list[int]]:
        """
        Change flags (IMAP STORE), renaming the files to match.

        @param unchangedSince: RFC 7162 UNCHANGEDSINCE: leave alone the
            messages whose MODSEQ is above it.
        @return: C{(changed, failed)}: the messages whose flags changed,
            with their new flags and MODSEQ, and the UIDs that failed the
            UNCHANGEDSINCE test.  Unknown UIDs are ignored.
        """
        wanted = frozenset(flags)
        with self._lock:
            self._ensureLoaded()
            modseq = self._nextModseq()
            failed: list[int] = []
            records: list[list[str]] = []
            renamed: set[str] = set()
            for uid in sorted(set(uids)):
                entry = self._entries.get(uid)
                if entry is None:
                    continue
                if unchangedSince is not None and entry.modseq > unchangedSince:
                    failed.append(uid)
                    continue
                new = combineFlags(entry.flags, mode, wanted)
                if new == entry.flags:
                    continue
                place = self._renameFor(entry, new)
                if place is None:
                    continue  # gone meanwhile: the next sync expunges it
                sub, name = place
                if name != entry.name:
                    renamed.add(sub)
                records.append(["F", str(uid), modseq, sub, name, " ".join(sorted(new))])
            for sub in renamed:
                fsyncDirectory(self.folder / sub)
            self._log(records)
            return [self._entries[int(r[1])] for r in records], failed

    def _renameFor(self, entry: MessageInfo, flags: frozenset[str]) -> tuple[str, str] | None:
        """
        Rename a message's file so its info part says C{flags}.

        @return: its C{(sub, name)} now; C{None} if it is gone.
        """
        oldInfo = entry.name.partition(INFO)[2]
        # Leave new/ alone (readers look for flags only in cur/) unless
        # there is something to say.
        if entry.sub == "new" and INFO not in entry.name and not infoFor(flags, "", self._letters):
            return entry.sub, entry.name
        name = entry.base + INFO + infoFor(flags, oldInfo, self._letters)
        sub = "cur"
        if (entry.sub, entry.name) != (sub, name):
            try:
                os.rename(self.folder / entry.sub / entry.name, self.folder / sub / name)
            except FileNotFoundError:
                return None
        return sub, name

    def expunge(self, uids: Iterable[int]) -> list[int]:
        """
        Remove messages for good: unlink, fsync, then journal.

        @return: the UIDs expunged, ascending.
        """
        with self._lock:
            self._ensureLoaded()
            done = sorted(uid for uid in set(uids) if uid in self._entries)
            dirs: set[str] = set()
            for uid in done:
                entry = self._entries[uid]
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.folder / entry.sub / entry.name)
                dirs.add(entry.sub)
            for sub in dirs:
                fsyncDirectory(self.folder / sub)
            if done:
                self._log([["X", self._nextModseq(), uidRanges(done)]])
            return done

    def append(
        self, data: bytes | MessageBody, flags: Iterable[str] = (), date: float | None = None
    ) -> int:
        """
        Add a message (IMAP APPEND): C{tmp/}, fsync, then L{appendFile}; return its UID.
        """
        body = data if isinstance(data, MessageBody) else MessageBody("", 0, len(data), data)
        tmp = writeTemporary(self.folder / "tmp", body.chunksSync(), body.size)
        return self.appendFile(tmp, body.size, flags, date)

    def appendFile(
        self, tmp: Path, size: int, flags: Iterable[str] = (), internalDate: float | None = None
    ) -> int:
        """
        Adopt a message fsync'd in this folder's C{tmp/}: C{cur/}, fsync, journal.

        @param internalDate: set as the file's mtime; now when C{None}.
        @return: its UID.
        """
        if tmp.parent != self.folder / "tmp":
            raise ValueError(f"{tmp} is not in {self.folder}/tmp")
        with self._lock:
            self._ensureLoaded()
            when = self._clock() if internalDate is None else internalDate
            os.utime(tmp, (when, when))
            return self._adopt([(tmp, frozenset(flags), when, size)])[0]

    def _adopt(self, files: list[tuple[Path, frozenset[str], float | None, int]]) -> list[int]:
        """
        Journal files that are synced into this folder (lock held): those
        in C{tmp/} are renamed into C{cur/} first, those already in C{cur/}
        (a move) stay.

        @param files: C{(current path, flags, date, size)} each (the date
            C{None} when not read yet: the file keeps its mtime).
        @return: their UIDs.
        """
        modseq = self._nextModseq()
        records: list[list[str]] = []
        for path, flags, date, size in files:
            name = path.name
            dateText = "" if date is None else repr(date)
            if path.parent.name == "tmp":
                name = name + INFO + infoFor(flags, "", self._letters)
                os.rename(path, self.folder / "cur" / name)
            uid = str(self.uidNext + len(records))
            flagText = " ".join(sorted(flags))
            records.append(["A", uid, modseq, "cur", name, dateText, str(size), flagText])
        if records:
            fsyncDirectory(self.folder / "cur")
            self._log(records)
        return [int(r[1]) for r in records]

    def copy(self, uids: Iterable[int], dest: FolderIndex) -> dict[int, int]:
        """
        Copy messages into another folder (hard links where possible).

        @return: source UID to new UID in C{dest} (UIDPLUS COPYUID).
        """
        return self._transfer(uids, dest, move=False)

    def move(self, uids: Iterable[int], dest: FolderIndex) -> dict[int, int]:
        """
        Move messages into another folder (RFC 6851): rename, then
        journal in C{dest}, then expunge here.

        @return: source UID to new UID in C{dest}.
        """
        return self._transfer(uids, dest, move=True)

    def _transfer(self, uids: Iterable[int], dest: FolderIndex, move: bool) -> dict[int, int]:
        if dest is self:
            raise ValueError("copy or move into the same folder")
        first, second = sorted((self, dest), key=lambda index: str(index.folder))
        with first._lock, second._lock:
            self._ensureLoaded()
            dest._ensureLoaded()
            chosen = sorted(uid for uid in set(uids) if uid in self._entries)
            files: list[tuple[Path, frozenset[str], float | None, int]] = []
            sources: list[int] = []
            for uid in chosen:
                entry = self._entries[uid]
                path = placeFile(self.folder, entry, dest.folder, dest._letters, move)
                if path is not None:
                    files.append((path, entry.flags, entry.internalDate, entry.size))
                    sources.append(uid)
            if move:
                for sub in ("new", "cur"):
                    fsyncDirectory(self.folder / sub)
            given = dest._adopt(files)
            if move:
                self._log([["X", self._nextModseq(), uidRanges(sources)]] if sources else [])
            return dict(zip(sources, given, strict=True))


__all__ = [
    "FlagMode",
    "FolderIndex",
    "FolderStatus",
    "IndexDamaged",
    "MessageInfo",
    "SyncResult",
]
