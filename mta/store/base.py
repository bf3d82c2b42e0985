# -*- test-case-name: tests.test_maildir -*-
"""
Values shared by the message store backends.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoredMessage:
    """
    One message in a mailbox.

    @ivar uid: stable unique id within the mailbox (POP3 UIDL); never reused.
    @ivar size: exact size in octets, as POP3 LIST reports it.
    @ivar internalDate: POSIX time of delivery.
    """

    uid: str
    size: int
    internalDate: float
