# -*- test-case-name: tests.test_imapserver -*-
"""
IMAP commands of the selected state: FETCH, STORE, SEARCH (with ESEARCH,
RFC 4731), SORT (RFC 5256), COPY, MOVE (RFC 6851), EXPUNGE and UID
EXPUNGE (RFC 4315), CHECK, CLOSE and UNSELECT (RFC 3691), with
CONDSTORE's CHANGEDSINCE, UNCHANGEDSINCE and MODSEQ (RFC 7162).

Messages are read through the store one at a time and only when an item
needs their bytes; FETCH writes each message's response before reading the
next and waits while the transport's buffer is full, so a C{1:*} fetch of
a large mailbox holds one message in memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from mta.imap import wire
from mta.imap.commands import Command, Copy, Expunge, Fetch, Search, Sort, Store
from mta.imap.fetch import FetchPlan, MessageData, needsContent, needsDate, setsSeen, toDatetime
from mta.imap.query import And, BodyKey, DateKey, HeaderKey, ModSeqKey, Not, Or, SearchKey
from mta.imap.search import Context, MessageView, matches
from mta.imap.selected import SelectedFolder
from mta.imap.session import Session, storeName
from mta.imap.sort import needsDates, sortMessages
from mta.imap.syntax import SequenceSet
from mta.store.imapstore import IMAPMailbox, NoSuchFolder, batches
from mta.store.indexformat import FlagMode

_MODES: dict[str, FlagMode] = {"SET": "replace", "ADD": "add", "REMOVE": "remove"}


def anyKey(key: SearchKey, test: Callable[[SearchKey], bool]) -> bool:
    """
    @return: whether C{test} holds for a simple key anywhere in C{key}
        (inside AND, OR and NOT).
    """
    if isinstance(key, And):
        return any(anyKey(k, test) for k in key.keys)
    if isinstance(key, Or):
        return anyKey(key.left, test) or anyKey(key.right, test)
    if isinstance(key, Not):
        return anyKey(key.key, test)
    return test(key)


def needsMessage(key: SearchKey) -> bool:
    """
    @return: whether a search key looks inside messages (headers or text).
    """
    return anyKey(
        key,
        lambda k: (
            k.field == "SENT" if isinstance(k, DateKey) else isinstance(k, HeaderKey | BodyKey)
        ),
    )


def usesDates(key: SearchKey) -> bool:
    """
    @return: whether a search key may compare internal dates (C{SENT*}
        too: a message without a Date field is taken at its internal date).
    """
    return anyKey(key, lambda k: isinstance(k, DateKey))


def hasModseq(key: SearchKey) -> bool:
    """
    @return: whether a search key uses MODSEQ (the answer then reports it).
    """
    return anyKey(key, lambda k: isinstance(k, ModSeqKey))


def _noSaved(*sets: SequenceSet | None) -> bool:
    """
    @return: whether none of the sets is C{$} (SEARCHRES is not offered).
    """
    return not any(s is not None and s.saved for s in sets)


def _unread() -> bytes:
    """
    The loader of a L{MessageView} whose bytes are not read here: a key
    that looks inside the message is matched by L{_matchRaw}.
    """
    raise RuntimeError("a message's bytes are read only by _matchRaw")


def _matchRaw(
    views: dict[int, MessageView],
    key: SearchKey,
    context: Context,
    keepFields: bool,
    uid: int,
    raw: bytes,
) -> MessageView | None:
    """
    Match one message of a batch, on the runner's thread.

    @param keepFields: keep the match's header fields (for SORT).
    @return: the message's view when it matches, else C{None}; the view
        keeps nothing derived from the bytes but those fields.
    """
    message = views[uid]
    message._raw = raw
    try:
        if not matches(message, key, context):
            return None
        if keepFields:
            message.fields()
        return message
    finally:
        message._raw = None
        message._structure = None
        message._plain = None
        if not keepFields:
            message._fields = None


class MessageCommands(Session):
    """
    The commands of the selected state.
    """

    _writePaused: bool
    _drained: Deferred[None] | None

    def _view(self) -> tuple[SelectedFolder, IMAPMailbox]:
        assert self.selected is not None and self.mailbox is not None
        return self.selected, self.mailbox

    def _targets(
        self, command: Command, messages: SequenceSet, changedSince: int | None = None
    ) -> list[int] | bytes:
        """
        @param changedSince: only the messages whose mod-sequence is above
            it (C{CHANGEDSINCE}).
        @return: the UIDs a set names, or the BAD line for a bad set.
        """
        view, _ = self._view()
        if not _noSaved(messages):
            return self.bad(command, "SEARCHRES ($) is not supported")
        if not command.uid and view.outOfRange(messages):
            return self.bad(command, "Invalid message sequence number")
        if changedSince is not None:
            return view.changedSince(changedSince, messages, command.uid)
        return view.resolve(messages, command.uid)

    def waitForDrain(self) -> Deferred[None] | None:
        """
        @return: a Deferred firing once the transport has sent what it
            holds, or C{None} when it is not full.
        """
        if not self._writePaused or self.disconnecting:
            return None
        self._drained = Deferred()
        return self._drained

    # -- FETCH ----------------------------------------------------------------------------

    @inlineCallbacks
    def cmd_FETCH(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Send the asked items of each message, one message at a time.
        """
        args = command.arguments
        assert isinstance(args, Fetch)
        view, mailbox = self._view()
        targets = self._targets(command, args.messages, args.changedSince)
        if isinstance(targets, bytes):
            return targets
        withModseq = args.changedSince is not None or any(
            getattr(i, "name", "") == "MODSEQ" for i in args.items
        )
        if withModseq:
            self.condstore = True
        if args.vanished and args.changedSince is not None:
            ranges = yield mailbox.vanishedSince(args.changedSince)
            gone = [(a, b) for a, b in ranges if any(args.messages.contains(u, b) for u in (a, b))]
            if gone:
                text = ",".join(str(a) if a == b else f"{a}:{b}" for a, b in gone)
                self.write(b"* VANISHED (EARLIER) " + text.encode("ascii") + b"\r\n")
        if setsSeen(args.items) and not view.readOnly:
            yield self._markSeen(view, mailbox, targets)
        content = needsContent(args.items)
        reportFlags = setsSeen(args.items) and not view.readOnly
        plan = FetchPlan(args.items, command.uid, self.condstore and withModseq, reportFlags)
        dated = needsDate(args.items)
        if dated:
            yield self._readDates(view, mailbox, targets)
        known = [u for u in targets if u in view.infos]
        for batch in batches(known, lambda u: view.infos[u].size if content else 0):
            if self.selected is not view or self.disconnecting:
                break
            # One trip to the runner for a batch of messages, not one per
            # message (bench/imap_fetch: the hand-offs were most of a large
            # FETCH's time).
            raws: dict[int, bytes] = (yield mailbox.readMany(batch)) if content else {}
            for uid in batch:
                info = view.infos.get(uid)
                if info is None or (content and uid not in raws):
                    continue  # expunged meanwhile; its EXPUNGE comes later
                if dated and info.internalDate is None:
                    continue  # likewise: its file was gone
                number = view.sequenceOf(uid)
                if number is None:
                    continue
                data = MessageData(
                    uid,
                    view.flagList(uid),
                    info.internalDate,
                    info.size,
                    info.modseq,
                    raws.get(uid),
                )
                self.write(plan.render(number, data))
            drained = self.waitForDrain()
            if drained is not None:
                yield drained
        return self.ok(command)

    @inlineCallbacks
    def _readDates(
        self, view: SelectedFolder, mailbox: IMAPMailbox, uids: list[int]
    ) -> Generator[Deferred[Any], Any, None]:
        """
        Have the index read the internal dates the view lacks (in one trip
        to the runner).
        """
        undated = view.undated(uids)
        if undated:
            view.learnDates((yield mailbox.internalDates(undated)))

    @inlineCallbacks
    def _markSeen(
        self, view: SelectedFolder, mailbox: IMAPMailbox, uids: list[int]
    ) -> Generator[Deferred[Any], Any, None]:
        """
        Set C{\\Seen} on the messages that lack it, before their FETCH.
        """
        unseen = [u for u in uids if "\\Seen" not in view.infos[u].flags]
        if not unseen:
            return
        changed, _ = yield mailbox.setFlags(unseen, "add", ["\\Seen"], None, self.changed)
        for info in changed:
            view.update(info)

    # -- STORE ----------------------------------------------------------------------------

    @inlineCallbacks
    def cmd_STORE(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Change flags; report the new ones unless C{.SILENT}.
        """
        args = command.arguments
        assert isinstance(args, Store)
        view, mailbox = self._view()
        targets = self._targets(command, args.messages)
        if isinstance(targets, bytes):
            return targets
        if view.readOnly:
            return self.no(command, "Mailbox is read-only", wire.READ_ONLY)
        if args.unchangedSince is not None:
            self.condstore = True
        flags = [f for f in args.flags if f.lower() != "\\recent"]
        changed, failed = yield mailbox.setFlags(
            targets, _MODES[args.mode], flags, args.unchangedSince, self.changed
        )
        for info in changed:
            view.update(info)
        changedUids = {m.uid for m in changed}
        lines = []
        for uid in targets:
            if uid in failed or uid not in view.infos:
                continue
            if args.silent and not (self.condstore and uid in changedUids):
                continue
            lines.append(view.flagsFetch(uid, self.condstore, withUid=command.uid))
        self.write(b"".join(lines))
        if failed:
            numbers = failed if command.uid else [n for u in failed if (n := view.sequenceOf(u))]
            return self.ok(command, "Conditional STORE failed", wire.modified(numbers))
        return self.ok(command)

    # -- SEARCH and SORT ------------------------------------------------------------------

    @inlineCallbacks
    def _views(
        self, key: SearchKey, keepFields: bool, dated: bool = False
    ) -> Generator[Deferred[Any], Any, list[MessageView]]:
        """
        Match every message against C{key}, reading messages in batches
        only when the key needs them; a batch is read and matched on the
        runner's thread, so a long search keeps the reactor thread free.

        @param keepFields: keep each match's header fields (for SORT).
        @param dated: the caller needs internal dates (SORT by them); the
            key's own need is found here.
        @return: the matching messages.
        """
        view, mailbox = self._view()
        context = Context(view.exists, view.uids[-1] if view.uids else 0)
        content = needsMessage(key) or keepFields
        found: list[MessageView] = []
        numbered = {uid: number for number, uid in enumerate(list(view.uids), 1)}
        dated = dated or usesDates(key)
        if dated:
            yield self._readDates(view, mailbox, list(numbered))
        # A message whose date could not be read was gone (its EXPUNGE
        # comes later).
        known = [
            u
            for u in numbered
            if (m := view.infos.get(u)) is not None and not (dated and m.internalDate is None)
        ]
        for batch in batches(known, lambda u: view.infos[u].size if content else 0):
            views = {u: self._messageView(view, u, numbered[u]) for u in batch if u in view.infos}
            if not content:
                found.extend(m for m in views.values() if matches(m, key, context))
                continue
            using = functools.partial(_matchRaw, views, key, context, keepFields)
            matched: dict[int, MessageView | None] = yield mailbox.scan(list(views), using)
            # One expunged meanwhile is left out; its EXPUNGE comes later.
            found.extend(m for u, m in matched.items() if m is not None and u in view.infos)
        return found

    @staticmethod
    def _messageView(view: SelectedFolder, uid: int, number: int) -> MessageView:
        """
        @return: what a search may know of message C{uid} from the index;
            its bytes are given by L{_matchRaw}.
        """
        info = view.infos[uid]
        return MessageView(
            uid,
            number,
            info.flags,
            None if info.internalDate is None else toDatetime(info.internalDate),
            info.size,
            _unread,
            info.modseq,
            uid in view.recent,
        )

    @inlineCallbacks
    def cmd_SEARCH(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        SEARCH, or ESEARCH when C{RETURN} is given.
        """
        args = command.arguments
        assert isinstance(args, Search)
        if args.returnOptions is not None and "SAVE" in args.returnOptions:
            return self.bad(command, "SEARCHRES (SAVE) is not supported")
        if hasModseq(args.criteria):
            self.condstore = True
        found = yield self._views(args.criteria, False)
        numbers = [m.uid if command.uid else m.sequence for m in found]
        modseq = max((m.modseq for m in found), default=0) if hasModseq(args.criteria) else 0
        if args.returnOptions is None:
            line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
            if modseq:
                line += b" (MODSEQ %d)" % modseq
            self.write(line + b"\r\n")
        else:
            self.write(self._esearch(command, args.returnOptions, numbers, modseq))
        return self.ok(command)

    @staticmethod
    def _esearch(
        command: Command, options: tuple[str, ...], numbers: list[int], modseq: int
    ) -> bytes:
        """
        @return: the C{* ESEARCH} response (RFC 4731).
        """
        parts = [b"* ESEARCH (TAG " + wire.string(command.tag) + b")"]
        if command.uid:
            parts.append(b"UID")
        if numbers:
            if "MIN" in options:
                parts.append(b"MIN %d" % min(numbers))
            if "MAX" in options:
                parts.append(b"MAX %d" % max(numbers))
            if "ALL" in options:
                parts.append(b"ALL " + wire.sequenceSet(numbers).encode("ascii"))
        if "COUNT" in options:
            parts.append(b"COUNT %d" % len(numbers))
        if modseq and numbers:
            parts.append(b"MODSEQ %d" % modseq)
        return b" ".join(parts) + b"\r\n"

    @inlineCallbacks
    def cmd_SORT(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        SORT (RFC 5256): the matches in the order asked.
        """
        args = command.arguments
        assert isinstance(args, Sort)
        found = yield self._views(args.search, True, needsDates(args.criteria))
        ordered = sortMessages(found, args.criteria)
        numbers = [m.uid if command.uid else m.sequence for m in ordered]
        self.write(b"* SORT" + b"".join(b" %d" % n for n in numbers) + b"\r\n")
        return self.ok(command)

    # -- COPY / MOVE ----------------------------------------------------------------------

    @inlineCallbacks
    def cmd_COPY(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        COPY or MOVE messages to another mailbox (COPYUID, RFC 4315).
        """
        args = command.arguments
        assert isinstance(args, Copy)
        view, mailbox = self._view()
        targets = self._targets(command, args.messages)
        if isinstance(targets, bytes):
            return targets
        move = command.name == "MOVE"
        if move and view.readOnly:
            return self.no(command, "Mailbox is read-only", wire.READ_ONLY)
        if not targets:
            return self.ok(command, "No messages")
        destination = storeName(args.mailbox)
        try:
            if move:
                validity, mapping = yield mailbox.move(targets, destination, self.changed)
            else:
                validity, mapping = yield mailbox.copy(targets, destination)
        except NoSuchFolder:
            return self.no(command, "Mailbox does not exist", wire.TRYCREATE)
        sources = sorted(mapping)
        code = wire.copyUid(validity, sources, [mapping[s] for s in sources]) if sources else None
        if not move:
            return self.ok(command, None, code)
        if code is not None:
            self.write(wire.untaggedStatus("OK", "Moved", code))
        self.write(b"".join(view.expunge(sources, self.qresync)))
        return self.ok(command)

    cmd_MOVE = cmd_COPY

    # -- EXPUNGE / CHECK / CLOSE / UNSELECT ----------------------------------------------

    @inlineCallbacks
    def cmd_EXPUNGE(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Remove the C{\\Deleted} messages (of the UID set, for UID EXPUNGE).
        """
        args = command.arguments
        assert isinstance(args, Expunge)
        view, mailbox = self._view()
        if view.readOnly:
            return self.no(command, "Mailbox is read-only", wire.READ_ONLY)
        chosen = None
        if args.messages is not None:
            if not _noSaved(args.messages):
                return self.bad(command, "SEARCHRES ($) is not supported")
            chosen = set(view.resolve(args.messages, True))
        doomed = [
            u
            for u in view.uids
            if "\\Deleted" in view.infos[u].flags and (chosen is None or u in chosen)
        ]
        if doomed:
            gone = yield mailbox.expunge(doomed, self.changed)
            self.write(b"".join(view.expunge(gone, self.qresync)))
        return self.ok(command)

    @inlineCallbacks
    def cmd_CHECK(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Bring the index in step with the files; updates follow.
        """
        _, mailbox = self._view()
        result = yield mailbox.sync(self.changed)
        if result:
            self.markDirty()
        return self.ok(command)

    @inlineCallbacks
    def cmd_CLOSE(self, command: Command) -> Generator[Deferred[Any], Any, bytes]:
        """
        Silently expunge the C{\\Deleted} messages (read-write only) and
        leave the selected state.
        """
        view, mailbox = self._view()
        self.deselect()
        if not view.readOnly:
            doomed = [u for u in view.uids if "\\Deleted" in view.infos[u].flags]
            if doomed:
                yield mailbox.expunge(doomed)
        return self.ok(command)

    def cmd_UNSELECT(self, command: Command) -> bytes:
        """
        Leave the selected state without expunging (RFC 3691).
        """
        self.deselect()
        return self.ok(command)


__all__ = ["MessageCommands", "hasModseq", "needsMessage", "usesDates"]
