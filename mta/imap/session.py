# -*- test-case-name: tests.test_imapserver -*-
"""
What every IMAP command handler shares: the session's state, its one way
to write to the client, and the untagged updates of the selected mailbox.

L{Session} is the base of the server protocol (L{mta.imap.server}) and of
the command groups mixed into it (L{mta.imap.mailboxes},
L{mta.imap.messages}).  A handler takes the parsed L{Command} and returns
the tagged completion line (or a Deferred of it); the protocol sends the
pending untagged updates first (L{Session.flush}), then that line.

Updates: the store calls L{Session.changed} when another session, a local
delivery or POP3 changed the selected folder.  The session only notes it;
at the end of the next command (or at once while IDLE) L{Session.flush}
asks the store for the folder's messages and lets the L{SelectedFolder}
render EXISTS, RECENT, EXPUNGE (or VANISHED) and FETCH FLAGS.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Generator
from typing import Any, TypeAlias

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IOpenSSLContextFactory, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from mta.config import LimitsConfig
from mta.imap import wire
from mta.imap.commands import Command
from mta.imap.selected import SelectedFolder
from mta.imap.syntax import decodeModifiedUTF7
from mta.interfaces import ILoginService
from mta.store.imapstore import IMAPMailbox, IMAPStore
from mta.store.indexformat import SyncResult

_log = Logger(namespace="mta.imap")

#: A handler's answer: the tagged completion line, now or later.
Result: TypeAlias = "bytes | Deferred[bytes]"


class State(enum.Enum):
    """
    The connection states of RFC 3501 section 3.
    """

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


def storeName(name: str) -> str:
    """
    @return: the store's form of a mailbox name the parser decoded: modified
        UTF-7 text, as Dovecot also keeps it on disk.
    """
    return "INBOX" if name.upper() == "INBOX" else wire.encodeModifiedUTF7(name).decode("ascii")


def clientName(name: str) -> bytes:
    """
    @return: a store folder name as an astring for a response.
    """
    try:
        return wire.mailbox(decodeModifiedUTF7(name.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return wire.astring(name)


class UserConnections:
    """
    How many logged-in sessions each user has, capped at C{maximum}.

    One registry is shared by every listener whose sessions count against
    it (the imap and imaps listeners share one factory, and so one
    registry), so the cap is per user across addresses and ports.

    @ivar maximum: most logged-in sessions of one user.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._counts: Counter[str] = Counter()

    def acquire(self, user: str) -> bool:
        """
        Count one more session of C{user}, unless that would pass the cap.

        @return: whether it was counted; if so, L{release} it later.
        """
        if self._counts[user] >= self.maximum:
            return False
        self._counts[user] += 1
        return True

    def release(self, user: str) -> None:
        """
        One session of C{user} that L{acquire} counted has ended.
        """
        self._counts[user] -= 1
        if self._counts[user] <= 0:
            del self._counts[user]

    def count(self, user: str) -> int:
        """
        @return: how many logged-in sessions C{user} has.
        """
        return self._counts[user]


class IMAPFactoryBase(Factory["Session"]):
    """
    What the sessions of one server share (see L{mta.imap.server.IMAPFactory}).
    """

    authenticator: ILoginService
    store: IMAPStore
    tls: IOpenSSLContextFactory | None
    hostname: str
    limits: LimitsConfig
    clock: IReactorTime
    idleTimeout: float
    userConnections: UserConnections


class Session(Protocol):
    """
    The state and output of one IMAP connection.

    @ivar state: where in RFC 3501's states the session is.
    @ivar user: the logged-in address, or C{""}.
    @ivar selected: the selected mailbox's view, or C{None}.
    @ivar mailbox: the selected mailbox in the store, or C{None}.
    @ivar condstore: CONDSTORE is enabled (RFC 7162 section 3.1).
    @ivar qresync: QRESYNC is enabled (RFC 7162 section 3.2).
    @ivar idling: an IDLE command is in progress.
    """

    factory: IMAPFactoryBase
    state: State
    user: str
    selected: SelectedFolder | None
    mailbox: IMAPMailbox | None
    condstore: bool
    qresync: bool
    idling: bool
    disconnecting: bool

    def initSession(self) -> None:
        """
        Set the session's starting state.
        """
        self.state = State.NOT_AUTHENTICATED
        self.user = ""
        self.selected = None
        self.mailbox = None
        self.condstore = False
        self.qresync = False
        self.idling = False
        self.disconnecting = False
        self._dirty = False
        self._flushing: Deferred[None] | None = None

    # -- output --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """
        Send bytes to the client, unless the connection is closing.
        """
        if data and not self.disconnecting and self.transport is not None:
            self.transport.write(data)

    @staticmethod
    def ok(
        command: Command, text: str | None = None, code: wire.ResponseCode | None = None
    ) -> bytes:
        """
        @return: C{<tag> OK [code] <NAME> completed}.
        """
        name = ("UID " if command.uid else "") + command.name
        return wire.tagged(command.tag, "OK", text or f"{name} completed", code)

    @staticmethod
    def no(command: Command, text: str, code: wire.ResponseCode | None = None) -> bytes:
        """
        @return: C{<tag> NO [code] text}.
        """
        return wire.tagged(command.tag, "NO", text, code)

    @staticmethod
    def bad(command: Command, text: str) -> bytes:
        """
        @return: C{<tag> BAD text}.
        """
        return wire.tagged(command.tag, "BAD", text)

    # -- the selected mailbox ------------------------------------------------------------

    def select(self, view: SelectedFolder, mailbox: IMAPMailbox) -> None:
        """
        Make C{mailbox} the selected one, listening for its changes.
        """
        self.deselect()
        self.selected = view
        self.mailbox = mailbox
        self.state = State.SELECTED
        self._dirty = False
        mailbox.addListener(self.changed)

    def deselect(self) -> None:
        """
        Leave the selected state (CLOSE, UNSELECT, another SELECT, logout).
        """
        if self.mailbox is not None:
            self.mailbox.removeListener(self.changed)
        self.selected = None
        self.mailbox = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    def changed(self, result: SyncResult) -> None:
        """
        The store says the selected folder changed: tell the client at the
        end of the next command, or now while IDLE.
        """
        self._dirty = True
        if self.idling:
            self.flush(True).addErrback(lambda f: _log.failure("IMAP update failed", f))

    def markDirty(self) -> None:
        """
        Have the next L{flush} ask the store (after a sync of our own).
        """
        self._dirty = True

    def flush(self, allowExpunge: bool) -> Deferred[None]:
        """
        Send the selected folder's pending updates.

        @param allowExpunge: EXPUNGE may be sent (not during FETCH, STORE
            and SEARCH by sequence number, RFC 3501 section 7.4.1).
        @return: a Deferred that fires once they are written; flushes
            never overlap.
        """
        if self._flushing is not None:
            after: Deferred[None] = Deferred()

            def again(_: object) -> None:
                self.flush(allowExpunge).chainDeferred(after)

            self._flushing.addBoth(again)
            return after
        d = self._flushOnce(allowExpunge)
        self._flushing = d

        def done(result: object) -> object:
            self._flushing = None
            return result

        return d.addBoth(done)

    @inlineCallbacks
    def _flushOnce(self, allowExpunge: bool) -> Generator[Deferred[Any], Any, None]:
        while self._dirty and self.selected is not None and self.mailbox is not None:
            self._dirty = False
            view, mailbox = self.selected, self.mailbox
            current = yield mailbox.messages()
            if self.selected is not view:
                return
            updates = view.reconcile(current, allowExpunge, self.qresync, self.condstore)
            lines = updates.lines
            if updates.newMessages:
                recent = yield mailbox.claimRecent()
                if self.selected is not view:
                    return
                lines += view.addRecent(recent)
            self.write(b"".join(lines))
            if updates.withheld:
                self._dirty = True
                return


__all__ = [
    "IMAPFactoryBase",
    "Result",
    "Session",
    "State",
    "UserConnections",
    "clientName",
    "storeName",
]
