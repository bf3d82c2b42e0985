# -*- test-case-name: tests.test_imapserver -*-
"""
One IMAP session's view of its selected mailbox: sequence numbers, the
flags it has told the client about, its C{\\Recent} messages, and the
untagged responses that bring the client in step with the store.

The store (L{mta.store.imapstore.IMAPMailbox}) is shared by every session;
this view is the session's own snapshot.  Sequence numbers are positions in
L{SelectedFolder.uids}, which changes only when the client is told (an
C{EXISTS} for new messages, an C{EXPUNGE} or C{VANISHED} for removed ones),
as RFC 3501 section 7.4.1 requires.  L{SelectedFolder.reconcile} compares
the snapshot with the store's message list and renders those responses.

Pure code: no I/O, no Deferreds; the server feeds it what the store says.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mta.imap import wire
from mta.imap.syntax import SequenceSet
from mta.store.indexformat import MessageInfo

#: The flags a client may set; keywords are allowed too (C{\\*}).
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")

#: C{(m, _AFTER)} sorts after every C{(m, n)}.
_AFTER = math.inf

#: Rendered FLAGS lists a view keeps (one per combination of flags).
_FLAG_LISTS = 256


def _inSpans(spans: Sequence[tuple[int, int]], number: int) -> bool:
    """
    @param spans: disjoint ascending inclusive C{(low, high)} ranges.
    @return: whether C{number} is in one of them.
    """
    i = bisect.bisect_right(spans, (number, _AFTER)) - 1
    return i >= 0 and spans[i][0] <= number <= spans[i][1]


@dataclass
class Updates:
    """
    The untagged responses one reconciliation produced, and what they did.

    @ivar lines: the rendered responses, in order.
    @ivar newMessages: UIDs added to the view.
    @ivar withheld: UIDs gone from the store whose EXPUNGE was held back
        (not allowed during FETCH, STORE and SEARCH by sequence number).
    """

    lines: list[bytes] = field(default_factory=list)
    newMessages: list[int] = field(default_factory=list)
    withheld: list[int] = field(default_factory=list)


class SelectedFolder:
    """
    The selected mailbox as the client knows it.

    @ivar name: the store's name of the folder (modified UTF-7).
    @ivar readOnly: EXAMINE (or a read-only SELECT): no flag changes, no
        C{\\Seen} from FETCH, no EXPUNGE on CLOSE.
    @ivar uidValidity: the folder's UIDVALIDITY.
    @ivar uids: the UIDs the client knows, ascending; sequence number
        C{n} is C{uids[n - 1]}.
    @ivar infos: what the client was last told about each UID.
    @ivar recent: the UIDs that are C{\\Recent} in this session.
    @ivar highestModseq: the HIGHESTMODSEQ the client was last told of.
    """

    def __init__(
        self,
        name: str,
        readOnly: bool,
        uidValidity: int,
        messages: Iterable[MessageInfo],
        recent: Iterable[int],
        highestModseq: int,
    ) -> None:
        self.name = name
        self.readOnly = readOnly
        self.uidValidity = uidValidity
        self.infos = {m.uid: m for m in messages}
        self.uids = sorted(self.infos)
        self.recent = {uid for uid in recent if uid in self.infos}
        self.highestModseq = highestModseq
        self._byModseq = sorted((m.modseq, m.uid) for m in self.infos.values())
        self._flagLists: dict[tuple[frozenset[str], bool], bytes] = {}

    # -- numbers ----------------------------------------------------------------------

    @property
    def exists(self) -> int:
        """
        The number of messages the client knows of.
        """
        return len(self.uids)

    def sequenceOf(self, uid: int) -> int | None:
        """
        @return: the sequence number of C{uid}, or C{None} if unknown.
        """
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def resolve(self, messages: SequenceSet, byUid: bool) -> list[int]:
        """
        Turn a sequence set into the UIDs it names, ascending.

        By sequence number, C{*} is the last message; numbers past it are
        ignored here (the server answers C{BAD} for them first, see
        L{outOfRange}).  By UID, C{*} is the largest UID, and a range
        always names the last message even when it starts above it
        (RFC 3501 section 6.4.8: C{UID FETCH n:*}).
        """
        if not self.uids:
            return []
        chosen: list[int] = []
        if not byUid:
            # The spans are disjoint and ascending: slices, not numbers.
            for low, high in messages.resolve(len(self.uids)):
                chosen.extend(self.uids[low - 1 : high])
            return chosen
        for low, high in messages.resolve(self.uids[-1]):
            start = bisect.bisect_left(self.uids, low)
            end = bisect.bisect_right(self.uids, high)
            chosen.extend(self.uids[start:end])
        return chosen

    def changedSince(self, modseq: int, messages: SequenceSet, byUid: bool) -> list[int]:
        """
        The messages of a set whose mod-sequence is above C{modseq}
        (C{CHANGEDSINCE}, RFC 7162 section 3.1.4), as the client was last
        told of them.

        The view keeps its messages ordered by mod-sequence, so this costs
        in proportion to the changed messages, not to the mailbox.

        @return: their UIDs, ascending.
        """
        if not self.uids:
            return []
        first = bisect.bisect_right(self._byModseq, (modseq, _AFTER))
        changed = sorted(uid for _, uid in self._byModseq[first:])
        if byUid:
            spans = messages.resolve(self.uids[-1])
            return [uid for uid in changed if _inSpans(spans, uid)]
        spans = messages.resolve(len(self.uids))
        return [uid for uid in changed if _inSpans(spans, self.sequenceOf(uid) or 0)]

    def outOfRange(self, messages: SequenceSet) -> bool:
        """
        @return: whether a sequence-number set names a message that does
            not exist (C{BAD}, RFC 9051 section 6.4.5 wording).
        """
        for first, last in messages.ranges:
            for n in (first, last):
                if n is not None and n > len(self.uids):
                    return True
        return not self.uids and bool(messages.ranges)

    # -- flags -------------------------------------------------------------------------

    def flagsOf(self, uid: int) -> tuple[str, ...]:
        """
        @return: the flags to report for C{uid}, C{\\Recent} included.
        """
        flags = sorted(self.infos[uid].flags)
        if uid in self.recent:
            flags.append("\\Recent")
        return tuple(flags)

    def flagList(self, uid: int) -> bytes:
        """
        @return: the rendered FLAGS list of C{uid}, e.g. C{(\\Seen)};
            rendered once per combination of flags (most messages share a
            few).
        """
        key = (self.infos[uid].flags, uid in self.recent)
        text = self._flagLists.get(key)
        if text is None:
            if len(self._flagLists) >= _FLAG_LISTS:
                self._flagLists.clear()
            text = self._flagLists[key] = wire.flagList(self.flagsOf(uid))
        return text

    def flagsItem(self, uid: int) -> wire.Atom:
        """
        @return: the FLAGS value of C{uid}, ready to encode.
        """
        return wire.Atom(self.flagList(uid).decode("ascii"))

    def keywords(self) -> list[str]:
        """
        @return: the keywords used by any message, sorted.
        """
        # Messages share a few flag sets (the index makes one per info
        # part): look into each distinct set once.
        distinct = {m.flags for m in self.infos.values()}
        return sorted({f for flags in distinct for f in flags if not f.startswith("\\")})

    def update(self, info: MessageInfo) -> None:
        """
        Record what the client is being told about a message now.
        """
        old = self.infos.get(info.uid)
        if old is not None:
            if info.internalDate is None and old.internalDate is not None:
                info = info._replace(internalDate=old.internalDate)  # read since
            self.infos[info.uid] = info
            self.highestModseq = max(self.highestModseq, info.modseq)
            if old.modseq != info.modseq:
                self._forgetModseq(old)
                bisect.insort(self._byModseq, (info.modseq, info.uid))

    def undated(self, uids: Iterable[int]) -> list[int]:
        """
        @return: those of C{uids} in the view whose internal date the
            index had not read when the view got them.
        """
        infos = self.infos
        return [u for u in uids if (m := infos.get(u)) is not None and m.internalDate is None]

    def learnDates(self, dates: dict[int, float]) -> None:
        """
        Record internal dates the index has read since the view got its
        messages.
        """
        for uid, date in dates.items():
            info = self.infos.get(uid)
            if info is not None and info.internalDate is None:
                self.infos[uid] = info._replace(internalDate=date)

    def _forgetModseq(self, info: MessageInfo) -> None:
        """
        Take a message out of the mod-sequence order.
        """
        i = bisect.bisect_left(self._byModseq, (info.modseq, info.uid))
        if i < len(self._byModseq) and self._byModseq[i] == (info.modseq, info.uid):
            del self._byModseq[i]

    # -- removing and adding -------------------------------------------------------

    def expunge(self, uids: Iterable[int], vanished: bool) -> list[bytes]:
        """
        Drop messages from the view.

        @param vanished: say C{VANISHED} (QRESYNC enabled) instead of one
            C{EXPUNGE} per message.
        @return: the untagged responses to send.
        """
        gone = sorted(uid for uid in set(uids) if uid in self.infos)
        if not gone:
            return []
        lines: list[bytes] = []
        if vanished:
            lines.append(wire.untagged(wire.Atom("VANISHED"), wire.Atom(wire.sequenceSet(gone))))
        # Highest first: each EXPUNGE renumbers only the messages after it,
        # so the numbers computed here stay right.
        for uid in reversed(gone):
            number = self.sequenceOf(uid)
            assert number is not None
            if not vanished:
                lines.append(wire.untagged(number, wire.Atom("EXPUNGE")))
            del self.uids[number - 1]
            self._forgetModseq(self.infos.pop(uid))
            self.recent.discard(uid)
        return lines

    def reconcile(
        self,
        current: Sequence[MessageInfo],
        allowExpunge: bool,
        vanished: bool,
        condstore: bool,
    ) -> Updates:
        """
        Compare the view with the store's message list and render the
        responses that bring the client in step.

        @param current: every message in the folder now, by UID.
        @param allowExpunge: whether EXPUNGE may be sent now; if not, the
            removed messages stay in the view (their flags are not
            reported) and are listed in L{Updates.withheld}.
        @param vanished: QRESYNC is enabled: C{VANISHED} instead of EXPUNGE.
        @param condstore: CONDSTORE is enabled: FETCH carries C{MODSEQ}.
        """
        updates = Updates()
        live = {m.uid: m for m in current}
        gone = [uid for uid in self.uids if uid not in live]
        if gone and allowExpunge:
            updates.lines += self.expunge(gone, vanished)
        else:
            updates.withheld = gone
        for uid in self.uids:
            info = live.get(uid)
            if info is None or info.flags == self.infos[uid].flags:
                continue
            self.update(info)
            updates.lines.append(self.flagsFetch(uid, condstore))
        last = self.uids[-1] if self.uids else 0
        fresh = [m for m in current if m.uid > last]
        if fresh:
            for info in fresh:
                self.infos[info.uid] = info
                self.uids.append(info.uid)
                bisect.insort(self._byModseq, (info.modseq, info.uid))
            updates.newMessages = [m.uid for m in fresh]
            updates.lines.append(wire.untagged(self.exists, wire.Atom("EXISTS")))
        return updates

    def addRecent(self, uids: Iterable[int]) -> list[bytes]:
        """
        Mark messages C{\\Recent} for this session.

        @return: the C{RECENT} response, or nothing when none were new.
        """
        before = len(self.recent)
        self.recent |= set(uids) & set(self.infos)
        if len(self.recent) == before:
            return []
        return [wire.untagged(len(self.recent), wire.Atom("RECENT"))]

    def flagsFetch(self, uid: int, condstore: bool, withUid: bool = True) -> bytes:
        """
        @return: C{* n FETCH (FLAGS (...) UID u [MODSEQ (m)])} for C{uid}.
        """
        number = self.sequenceOf(uid)
        assert number is not None
        items: list[tuple[str, wire.Value]] = [("FLAGS", self.flagsItem(uid))]
        if withUid:
            items.append(("UID", uid))
        if condstore:
            items.append(("MODSEQ", (self.infos[uid].modseq,)))
        return wire.fetchResponse(number, items)


__all__ = ["SYSTEM_FLAGS", "SelectedFolder", "Updates"]
