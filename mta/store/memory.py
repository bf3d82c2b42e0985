# -*- test-case-name: tests.test_memorystore -*-
"""
An in-memory message store: the test double of L{mta.store.maildir}.

Implements L{IMessageStore} and L{IMailbox} with the same semantics as the
Maildir++ store (lower-cased addresses, the same refused names, INBOX plus
Sent, Drafts, Trash and Junk per user, stable never-reused uids, oldest
first), but keeps everything in dicts and answers with already-fired
Deferreds, so unit tests of local delivery, POP3 and IMAP need neither a
disk nor a reactor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from mta.interfaces import IMailbox, IMessageStore
from mta.message import MessageBody
from mta.store.base import StoredMessage
from mta.store.maildir import DEFAULT_FOLDERS, INBOX, folderDirectory, userDirectory

# Names are checked by mapping them under a root that is never touched.
_DUMMY_ROOT = Path("/")


@dataclass(frozen=True)
class _Entry:
    """
    One stored message: its bytes and delivery time.
    """

    data: bytes
    internalDate: float


def _folderKey(user: str, folder: str) -> tuple[str, str]:
    """
    Check names the way the Maildir store does, and normalise them.

    @return: C{(lower-cased address, folder)}, with INBOX in upper case.
    @raise ValueError: an address or folder name the Maildir store refuses.
    """
    # Reuse the Maildir store's checks so both backends refuse the same names.
    folderDirectory(userDirectory(_DUMMY_ROOT, user), folder)
    if folder.upper() == INBOX:
        folder = INBOX
    return user.lower(), folder


@implementer(IMailbox)
class MemoryMailbox:
    """
    One folder of a L{MemoryStore}; it shares the store's dict, so it sees
    deliveries made after it was opened.
    """

    def __init__(self, messages: dict[str, _Entry]) -> None:
        self._messages = messages

    def listMessages(self) -> Deferred[list[StoredMessage]]:
        """
        See L{IMailbox.listMessages}.
        """
        listing = [
            StoredMessage(uid, len(entry.data), entry.internalDate)
            for uid, entry in self._messages.items()
        ]
        # Stable sort: messages delivered in the same clock tick stay in
        # delivery order.
        listing.sort(key=lambda message: message.internalDate)
        return succeed(listing)

    def readMessage(self, uid: str) -> Deferred[bytes]:
        """
        See L{IMailbox.readMessage}.
        """
        entry = self._messages.get(uid)
        if entry is None:
            return fail(KeyError(uid))
        return succeed(entry.data)

    def deleteMessages(self, uids: Sequence[str]) -> Deferred[None]:
        """
        See L{IMailbox.deleteMessages}.
        """
        for uid in uids:
            self._messages.pop(uid, None)
        return succeed(None)


@implementer(IMessageStore)
class MemoryStore:
    """
    Every user's mail in dicts; see the module docstring.

    @param clock: gives the delivery time; the wall clock when C{None}.
    """

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self._clock = clock
        self._folders: dict[tuple[str, str], dict[str, _Entry]] = {}
        self._counter = 0

    def createUser(self, user: str) -> Deferred[None]:
        """
        See L{IMessageStore.createUser}.
        """
        try:
            self._folder(user, INBOX)
        except ValueError:
            return fail()
        return succeed(None)

    def deliver(
        self, user: str, body: MessageBody, prefix: bytes, folder: str = INBOX
    ) -> Deferred[str]:
        """
        See L{IMessageStore.deliver}; reads C{body} synchronously.
        """
        try:
            messages = self._folder(user, folder)
            data = prefix + body.readSync()
        except (ValueError, OSError):
            return fail()
        self._counter += 1
        uid = f"{self._counter}.memory,S={len(data)}"
        messages[uid] = _Entry(data, self._now())
        return succeed(uid)

    def openMailbox(self, user: str, folder: str = INBOX) -> Deferred[IMailbox]:
        """
        See L{IMessageStore.openMailbox}: the folder is created when missing.
        """
        try:
            messages = self._folder(user, folder)
        except ValueError:
            return fail()
        return succeed(MemoryMailbox(messages))

    def messages(self, user: str, folder: str = INBOX) -> list[bytes]:
        """
        For tests: the stored messages' bytes, oldest first.

        @return: an empty list for an unknown user or folder.
        """
        entries = self._folders.get(_folderKey(user, folder), {})
        ordered = sorted(entries.values(), key=lambda entry: entry.internalDate)
        return [entry.data for entry in ordered]

    def folders(self, user: str) -> list[str]:
        """
        For tests: the names of the user's folders that exist, sorted.
        """
        address = user.lower()
        return sorted(name for owner, name in self._folders if owner == address)

    def _folder(self, user: str, folder: str) -> dict[str, _Entry]:
        """
        The folder's messages, creating the user's store and the folder as
        the Maildir store does.

        @raise ValueError: an unsafe address or folder name.
        """
        address, name = _folderKey(user, folder)
        for default in (INBOX, *DEFAULT_FOLDERS, name):
            self._folders.setdefault((address, default), {})
        return self._folders[address, name]

    def _now(self) -> float:
        """
        @return: the current time from the clock, or the wall clock.
        """
        if self._clock is None:
            return time.time()
        return self._clock.seconds()


__all__ = ["MemoryMailbox", "MemoryStore"]
