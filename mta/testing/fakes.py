"""
Test doubles shipped with mta (like C{treq.testing}): deterministic,
reactor-free stand-ins for the seams in L{mta.interfaces}.
"""

from __future__ import annotations

import itertools

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from mta.auth import LoginFailed, LoginRefused
from mta.envelope import Envelope
from mta.interfaces import ILoginService, IMessageSink


@implementer(IMessageSink)
class RecordingSink:
    """
    An L{IMessageSink} that keeps what it is given in memory.

    @ivar messages: (envelope, data) pairs, in order.
    @ivar failWith: when set, C{enqueue} fails with it.
    @ivar hold: when set, C{enqueue} returns this unfired Deferred's
        successors instead (to test "no 250 before the fsync").
    """

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, bytes]] = []
        self.failWith: Exception | None = None
        self.held: list[Deferred[str]] = []
        self.hold = False
        self._ids = itertools.count(1)

    def newQueueId(self) -> str:
        """
        @return: C{Q1}, C{Q2}, ...
        """
        return f"Q{next(self._ids)}"

    def enqueue(self, envelope: Envelope, data: bytes) -> Deferred[str]:
        """
        Record the message; see L{IMessageSink.enqueue}.
        """
        if self.failWith is not None:
            return fail(self.failWith)
        self.messages.append((envelope, data))
        if self.hold:
            d: Deferred[str] = Deferred()
            self.held.append(d)
            return d
        return succeed(envelope.queueId)


@implementer(ILoginService)
class FakeLogin:
    """
    An L{ILoginService} with passwords in a dict, answering at once.

    @ivar attempts: C{(user, password, peer, protocol)} per call, in order.
    @ivar blocked: peers whose logins are refused unchecked.
    """

    def __init__(self, passwords: dict[str, str]) -> None:
        """
        @param passwords: user address to password.
        """
        self.passwords = passwords
        self.attempts: list[tuple[str, str, str, str]] = []
        self.blocked: set[str] = set()

    def login(self, username: str, password: str, peer: str, protocol: str = "-") -> Deferred[str]:
        """
        See L{ILoginService.login}.
        """
        self.attempts.append((username, password, peer, protocol))
        if peer in self.blocked:
            return fail(LoginRefused("blocked"))
        user = username.lower()
        if self.passwords.get(user) != password:
            return fail(LoginFailed("Authentication failed"))
        return succeed(user)
