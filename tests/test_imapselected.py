"""
Tests for L{mta.imap.selected}: the session's view of its selected
mailbox, in particular C{CHANGEDSINCE} from the view's mod-sequence order
and the rendered FLAGS lists it keeps.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mta.imap.selected import SelectedFolder
from mta.imap.syntax import SequenceSet, parseSequenceSet
from mta.store.indexformat import MessageInfo


def info(uid: int, modseq: int, *flags: str) -> MessageInfo:
    """
    @return: a message of the index with C{flags}.
    """
    return MessageInfo(uid, frozenset(flags), modseq, 1e9, 100, f"m{uid}")


def folder(messages: list[MessageInfo], recent: tuple[int, ...] = ()) -> SelectedFolder:
    """
    @return: a read-write view of C{messages}.
    """
    highest = max((m.modseq for m in messages), default=1)
    return SelectedFolder("INBOX", False, 7, messages, recent, highest)


def bruteChangedSince(
    view: SelectedFolder, modseq: int, messages: SequenceSet, byUid: bool
) -> list[int]:
    """
    CHANGEDSINCE the obvious way: the whole set, then each message's modseq.
    """
    return [u for u in view.resolve(messages, byUid) if view.infos[u].modseq > modseq]


class ChangedSinceTests(SynchronousTestCase):
    """
    L{SelectedFolder.changedSince}.
    """

    def test_byUid(self) -> None:
        """
        By UID, only the messages of the set above the mod-sequence, ascending.
        """
        view = folder([info(1, 5), info(3, 9), info(4, 2), info(8, 7), info(9, 12)])
        self.assertEqual(view.changedSince(5, parseSequenceSet(b"1:*"), True), [3, 8, 9])
        self.assertEqual(view.changedSince(5, parseSequenceSet(b"4:8"), True), [8])
        self.assertEqual(view.changedSince(12, parseSequenceSet(b"1:*"), True), [])
        self.assertEqual(view.changedSince(1, parseSequenceSet(b"2,9"), True), [9])
        # UID n:* names the last message even when n is above it.
        self.assertEqual(view.changedSince(1, parseSequenceSet(b"100:*"), True), [9])

    def test_bySequenceNumber(self) -> None:
        """
        By sequence number, the set names positions in the view.
        """
        view = folder([info(10, 5), info(20, 9), info(30, 2), info(40, 7)])
        self.assertEqual(view.changedSince(4, parseSequenceSet(b"2:3"), False), [20])
        self.assertEqual(view.changedSince(4, parseSequenceSet(b"*"), False), [40])
        self.assertEqual(view.changedSince(0, parseSequenceSet(b"1,3"), False), [10, 30])

    def test_emptyView(self) -> None:
        """
        An empty mailbox has no changes.
        """
        self.assertEqual(folder([]).changedSince(0, parseSequenceSet(b"1:*"), True), [])

    def test_followsUpdates(self) -> None:
        """
        A flag change the client is told of moves the message up the order;
        an expunged message leaves it; a new one joins it.
        """
        view = folder([info(1, 3), info(2, 4), info(3, 5)])
        everything = parseSequenceSet(b"1:*")
        view.update(info(1, 8, "\\Seen"))
        self.assertEqual(view.changedSince(5, everything, True), [1])
        view.expunge([1], vanished=False)
        self.assertEqual(view.changedSince(0, everything, True), [2, 3])
        current = [info(2, 4), info(3, 5), info(4, 9)]
        view.reconcile(current, allowExpunge=True, vanished=False, condstore=True)
        self.assertEqual(view.changedSince(4, everything, True), [3, 4])
        self.assertEqual(view.changedSince(4, parseSequenceSet(b"3"), False), [4])

    @given(
        st.lists(st.integers(1, 40), unique=True, max_size=25),
        st.lists(st.integers(1, 30), min_size=25, max_size=25),
        st.lists(st.tuples(st.integers(0, 40), st.integers(1, 60)), max_size=8),
        st.lists(st.integers(1, 40), max_size=6),
        st.integers(0, 60),
        st.lists(
            st.tuples(
                st.one_of(st.none(), st.integers(1, 45)), st.one_of(st.none(), st.integers(1, 45))
            ),
            min_size=1,
            max_size=4,
        ),
        st.booleans(),
    )
    def test_agreesWithResolving(
        self,
        uids: list[int],
        modseqs: list[int],
        changes: list[tuple[int, int]],
        gone: list[int],
        since: int,
        ranges: list[tuple[int | None, int | None]],
        byUid: bool,
    ) -> None:
        """
        After any flag changes and expunges, the answer is the one of
        resolving the whole set and looking at every message's modseq.
        """
        view = folder([info(u, m) for u, m in zip(uids, modseqs, strict=False)])
        for index, modseq in changes:
            if uids:
                uid = uids[index % len(uids)]
                if uid in view.infos:
                    view.update(info(uid, modseq, *view.infos[uid].flags))
        view.expunge(gone, vanished=True)
        messages = SequenceSet(tuple(ranges))
        self.assertEqual(
            view.changedSince(since, messages, byUid),
            bruteChangedSince(view, since, messages, byUid),
        )


class FlagListTests(SynchronousTestCase):
    """
    L{SelectedFolder.flagList} and L{SelectedFolder.flagsItem}.
    """

    def test_rendered(self) -> None:
        """
        The list is sorted, with C{\\Recent} last for a recent message.
        """
        view = folder([info(1, 1, "\\Seen", "$Junk"), info(2, 1, "\\Seen", "$Junk")], (2,))
        self.assertEqual(view.flagList(1), b"($Junk \\Seen)")
        self.assertEqual(view.flagList(2), b"($Junk \\Seen \\Recent)")
        self.assertEqual(view.flagsItem(2).text, "($Junk \\Seen \\Recent)")

    def test_followsChanges(self) -> None:
        """
        After an update, the new flags are reported, not a kept rendering.
        """
        view = folder([info(1, 1, "\\Seen"), info(2, 1, "\\Seen")])
        self.assertEqual(view.flagList(1), b"(\\Seen)")
        view.update(info(1, 2, "\\Seen", "\\Flagged"))
        self.assertEqual(view.flagList(1), b"(\\Flagged \\Seen)")
        self.assertEqual(view.flagList(2), b"(\\Seen)")
        view.addRecent([2])
        self.assertEqual(view.flagList(2), b"(\\Seen \\Recent)")

    def test_manyCombinations(self) -> None:
        """
        More combinations than the view keeps renderings of are all right.
        """
        view = folder([info(u, 1, f"k{u}") for u in range(1, 600)])
        for uid in (1, 300, 599, 1):
            self.assertEqual(view.flagList(uid), b"(k%d)" % uid)
