# -*- test-case-name: tests.test_imapserver -*-
"""
IMAP commands about mailboxes as a whole: SELECT and EXAMINE (with
CONDSTORE and QRESYNC, RFC 7162), CREATE, DELETE, RENAME, SUBSCRIBE,
UNSUBSCRIBE, LIST (RFC 3501, with RFC 5258's selection and return
options, RFC 5819's STATUS, RFC 6154's special uses and RFC 3348's
children), LSUB, STATUS and APPEND (UIDPLUS's APPENDUID, RFC 4315).

Mixed into the server protocol; each handler returns the tagged line.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable
from datetime import datetime
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from mta.imap import wire
from mta.imap.commands import (
    Append,
    Command,
    Create,
    ListMailboxes,
    Mailbox,
    Rename,
    Select,
    Status,
)
from mta.imap.parser import StreamedLiteral
from mta.imap.selected import SYSTEM_FLAGS, SelectedFolder
from mta.imap.session import Session, clientName, storeName
from mta.store.appending import MessageSpool
from mta.store.imapstore import SEPARATOR, FolderInfo, NoSuchFolder
from mta.store.indexformat import FolderStatus

_SEPARATOR_VALUE = wire.string(SEPARATOR)


def patternRegex(pattern: str) -> re.Pattern[str]:
    """
    @return: a regex for a LIST pattern: C{*} matches anything, C{%}
        anything but the separator; C{INBOX} matches in any case.
    """
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "%":
            parts.append("[^" + re.escape(SEPARATOR) + "]*")
        else:
            parts.append(re.escape(ch))
    text = "".join(parts)
    if pattern[:5].upper() == "INBOX":
        text = "(?i:INBOX)" + "".join(parts[5:])
    return re.compile(text, re.DOTALL)


def statusItems(status: FolderStatus, items: Iterable[str], appendLimit: int) -> list[wire.Value]:
    """
    @return: the C{(NAME value ...)} list of a STATUS response.
    """
    values = {
        "MESSAGES": status.messages,
        "RECENT": status.recent,
        "UIDNEXT": status.uidNext,
        "UIDVALIDITY": status.uidValidity,
        "UNSEEN": status.unseen,
        "HIGHESTMODSEQ": status.highestModseq,
        "SIZE": status.size,
        "APPENDLIMIT": appendLimit,
    }
    out: list[wire.Value] = []
    for item in items:
        if item in values:
            out += [wire.Atom(item), values[item]]
    return out


class MailboxCommands(Session):
    """
    The mailbox commands of the authenticated and selected states.

    @ivar appendSpool: the APPEND literal being streamed to disk, if any.
    """

    appendSpool: MessageSpool | None = None

    # -- SELECT / EXAMINE ---------------------------------------------------------------

    @inlineCallbacks
    def cmd_SELECT(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        SELECT or EXAMINE a mailbox: snapshot it and tell the client its
        flags, counts and UIDs.
        """
        args = command.arguments
        assert isinstance(args, Select)
        if args.qresync is not None and not self.qresync:
            return self.bad(command, "QRESYNC is not enabled")
        readOnly = command.name == "EXAMINE"
        if self.selected is not None:
            self.deselect()
            if self.condstore:
                self.write(wire.untaggedStatus("OK", "Previous mailbox closed", wire.CLOSED))
        if args.condstore:
            self.condstore = True
        try:
            mailbox = yield self.factory.store.openFolder(self.user, storeName(args.mailbox))
        except NoSuchFolder:
            return self.no(command, "Mailbox does not exist", wire.NONEXISTENT)
        selection = yield mailbox.select(self.changed)
        view = SelectedFolder(
            mailbox.name,
            readOnly,
            selection.uidValidity,
            selection.messages,
            selection.recent,
            selection.highestModseq,
        )
        self.select(view, mailbox)
        self.write(self._selectResponses(view, selection.uidNext))
        if args.qresync is not None and args.qresync.uidValidity == view.uidValidity:
            yield self._resync(args.qresync.modseq, args.qresync.knownUids)
        code = wire.READ_ONLY if readOnly else wire.READ_WRITE
        return self.ok(command, f"{command.name} completed", code)

    cmd_EXAMINE = cmd_SELECT

    def _selectResponses(self, view: SelectedFolder, uidNext: int) -> bytes:
        """
        The untagged responses of a successful SELECT (RFC 3501 6.3.1).
        """
        flags = [*SYSTEM_FLAGS, *view.keywords()]
        permanent = [] if view.readOnly else [*flags, "\\*"]
        lines = [
            wire.untagged(wire.Atom("FLAGS"), wire.Atom(wire.flagList(flags).decode("ascii"))),
            wire.untaggedStatus("OK", "Flags permitted", wire.permanentFlags(permanent)),
            wire.untagged(view.exists, wire.Atom("EXISTS")),
            wire.untagged(len(view.recent), wire.Atom("RECENT")),
        ]
        unseen = next(
            (i + 1 for i, u in enumerate(view.uids) if "\\Seen" not in view.infos[u].flags), None
        )
        if unseen is not None:
            lines.append(wire.untaggedStatus("OK", "First unseen", wire.unseen(unseen)))
        lines += [
            wire.untaggedStatus("OK", "UIDs valid", wire.uidValidity(view.uidValidity)),
            wire.untaggedStatus("OK", "Predicted next UID", wire.uidNext(uidNext)),
            wire.untaggedStatus("OK", "Highest", wire.highestModSeq(view.highestModseq)),
        ]
        return b"".join(lines)

    @inlineCallbacks
    def _resync(self, modseq: int, known: Any) -> Generator[Deferred[Any], Any, None]:
        """
        QRESYNC: tell what vanished and what changed since C{modseq}.
        """
        view, mailbox = self.selected, self.mailbox
        assert view is not None and mailbox is not None
        ranges = yield mailbox.vanishedSince(modseq)
        if known is not None and ranges:
            ranges = intersect(ranges, known.resolve(ranges[-1][1]))
        if ranges:
            text = ",".join(str(a) if a == b else f"{a}:{b}" for a, b in ranges)
            self.write(b"* VANISHED (EARLIER) " + text.encode("ascii") + b"\r\n")
        changed = yield mailbox.changedSince(modseq)
        self.write(b"".join(view.flagsFetch(m.uid, True) for m in changed if m.uid in view.infos))

    # -- CREATE / DELETE / RENAME / SUBSCRIBE ------------------------------------------

    @inlineCallbacks
    def cmd_CREATE(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Create a mailbox (a trailing separator is dropped, RFC 3501 6.3.3).
        """
        args = command.arguments
        assert isinstance(args, Create)
        if args.specialUse:
            return self.no(command, "Special uses are fixed", wire.ResponseCode("USEATTR"))
        name = storeName(args.mailbox).rstrip(SEPARATOR)
        yield self.factory.store.createFolder(self.user, name)
        return self.ok(command)

    @inlineCallbacks
    def cmd_DELETE(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Delete a mailbox and its messages.
        """
        args = command.arguments
        assert isinstance(args, Mailbox)
        yield self.factory.store.deleteFolder(self.user, storeName(args.mailbox))
        return self.ok(command)

    @inlineCallbacks
    def cmd_RENAME(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Rename a mailbox and its children (INBOX: move its messages).
        """
        args = command.arguments
        assert isinstance(args, Rename)
        source, target = storeName(args.source), storeName(args.destination)
        yield self.factory.store.renameFolder(self.user, source, target)
        return self.ok(command)

    @inlineCallbacks
    def cmd_SUBSCRIBE(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Add a name to the subscriptions.
        """
        args = command.arguments
        assert isinstance(args, Mailbox)
        yield self.factory.store.subscribe(self.user, storeName(args.mailbox))
        return self.ok(command)

    @inlineCallbacks
    def cmd_UNSUBSCRIBE(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Remove a name from the subscriptions.
        """
        args = command.arguments
        assert isinstance(args, Mailbox)
        yield self.factory.store.unsubscribe(self.user, storeName(args.mailbox))
        return self.ok(command)

    # -- LIST / LSUB / STATUS ------------------------------------------------------------

    @inlineCallbacks
    def cmd_LIST(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        LIST and LSUB, basic and extended.
        """
        args = command.arguments
        assert isinstance(args, ListMailboxes)
        word = command.name
        if len(args.patterns) == 1 and args.patterns[0] == "" and word == "LIST":
            self.write(b"* LIST (\\Noselect) " + _SEPARATOR_VALUE + b' ""\r\n')
            return self.ok(command)
        reference = storeName(args.reference) if args.reference else ""
        regexes = [patternRegex(reference + storeName(p)) for p in args.patterns]
        folders = yield self.factory.store.listFolders(self.user)
        subscribed = set((yield self.factory.store.subscriptions(self.user)))
        onlySubscribed = word == "LSUB" or "SUBSCRIBED" in args.selection
        wantSubscribed = "SUBSCRIBED" in args.returns or "SUBSCRIBED" in args.selection
        recursive = "RECURSIVEMATCH" in args.selection and "SUBSCRIBED" in args.selection
        considered = folders if recursive else self._listed(folders, subscribed, onlySubscribed)
        for folder in considered:
            if not any(r.fullmatch(folder.name) for r in regexes):
                continue
            if "SPECIAL-USE" in args.selection and not _specialUse(folder):
                continue
            # RFC 5258 section 3.5: with RECURSIVEMATCH, a parent that is
            # not subscribed itself is listed for its subscribed children.
            childInfo = recursive and any(n.startswith(folder.name + SEPARATOR) for n in subscribed)
            if recursive and folder.name not in subscribed and not childInfo:
                continue
            attributes = list(folder.attributes)
            if recursive and folder.name not in subscribed:
                attributes = []
            if word == "LSUB":
                attributes = [a for a in attributes if a == "\\Noselect"]
            elif wantSubscribed and folder.name in subscribed:
                attributes.append("\\Subscribed")
            extra = b' ("CHILDINFO" ("SUBSCRIBED"))' if childInfo else b""
            self.write(
                b"* %s %s %s %s%s\r\n"
                % (
                    word.encode(),
                    wire.flagList(attributes),
                    _SEPARATOR_VALUE,
                    clientName(folder.name),
                    extra,
                )
            )
            if (
                args.statusItems
                and "\\Noselect" not in attributes
                and "\\NonExistent" not in attributes
            ):
                yield self._status(folder.name, args.statusItems)
        return self.ok(command)

    cmd_LSUB = cmd_LIST

    @staticmethod
    def _listed(
        folders: list[FolderInfo], subscribed: set[str], onlySubscribed: bool
    ) -> list[FolderInfo]:
        """
        @return: the folders LIST considers: all, or the subscribed ones
            (a subscribed name that does not exist is C{\\NonExistent}).
        """
        if not onlySubscribed:
            return folders
        names = {f.name for f in folders}
        kept = [f for f in folders if f.name in subscribed]
        kept += [FolderInfo(n, ("\\NonExistent",)) for n in sorted(subscribed - names)]
        return kept

    @inlineCallbacks
    def _status(self, name: str, items: tuple[str, ...]) -> Generator[Deferred[Any], Any, None]:
        """
        Write C{* STATUS name (...)}.
        """
        status = yield self.factory.store.status(self.user, name)
        values = statusItems(status, items, self.factory.limits.message_size)
        if "DELETED" in items:
            mailbox = yield self.factory.store.openFolder(self.user, name)
            messages = yield mailbox.messages()
            values += [wire.Atom("DELETED"), sum(1 for m in messages if "\\Deleted" in m.flags)]
        self.write(b"* STATUS " + clientName(name) + b" " + wire.encode(values) + b"\r\n")

    @inlineCallbacks
    def cmd_STATUS(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Report a mailbox's counts.
        """
        args = command.arguments
        assert isinstance(args, Status)
        try:
            yield self._status(storeName(args.mailbox), args.items)
        except NoSuchFolder:
            return self.no(command, "Mailbox does not exist", wire.NONEXISTENT)
        return self.ok(command)

    # -- APPEND ---------------------------------------------------------------------------

    @inlineCallbacks
    def cmd_APPEND(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Add a message to a mailbox, with flags and a date; an empty one is
        refused, as Dovecot does (a zero-byte file is no message).  A large
        message arrived in C{appendSpool} (see L{mta.imap.parser}), already
        in the folder's C{tmp/}; the OK comes once it is in C{cur/}, fsync'd.
        """
        args = command.arguments
        assert isinstance(args, Append)
        spool, self.appendSpool = self.appendSpool, None
        streamed = isinstance(args.message, StreamedLiteral)
        assert streamed == (spool is not None), "a streamed literal has its spool"
        if not args.message and spool is None:
            return self.no(command, "Can't save a zero byte message")
        try:
            mailbox = yield self.factory.store.openFolder(self.user, storeName(args.mailbox))
        except NoSuchFolder:
            if spool is not None:
                spool.abort()
            return self.no(command, "Mailbox does not exist", wire.TRYCREATE)
        flags = [f for f in args.flags if f.lower() != "\\recent"]
        when = args.internalDate.timestamp() if isinstance(args.internalDate, datetime) else None
        validity, uid = yield mailbox.append(args.message if spool is None else spool, flags, when)
        return self.ok(command, "APPEND completed", wire.appendUid(validity, [uid]))


def intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """
    @return: the intersection of two sorted lists of disjoint inclusive ranges.
    """
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        low, high = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if low <= high:
            out.append((low, high))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _specialUse(folder: FolderInfo) -> bool:
    """
    @return: whether a folder has an RFC 6154 special use.
    """
    return any(
        a in ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\All", "\\Archive", "\\Flagged")
        for a in folder.attributes
    )


__all__ = ["MailboxCommands", "patternRegex", "statusItems"]
