# -*- test-case-name: tests.test_policy -*-
"""
The authenticated sender's rate limit, as an L{IPolicyCheck}.

A stolen password must not turn the server into a spam cannon: each
authenticated user may start at most C{[limits] messages_per_hour}
messages (MAIL commands) in any sliding hour; past it MAIL gets
C{451 4.7.1} until the oldest of them is an hour old.  Like Postfix's
anvil, counts live in memory and start afresh on a restart.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.interfaces import IReactorTime

from mta.envelope import Address
from mta.errors import Reply
from mta.policy.base import ACCEPT, PolicyCheck, Session, Verdict, refuse

S451_RATE = Reply(451, "4.7.1 Error: too many messages from this user, try again later")

#: The window the limit applies to.
WINDOW = 3600.0


class SenderRateLimit(PolicyCheck):
    """
    Counts the messages each authenticated user starts in the last hour.
    """

    def __init__(self, clock: IReactorTime, perHour: int) -> None:
        """
        @param clock: the time source.
        @param perHour: most messages per user in any hour.
        """
        self._clock = clock
        self._perHour = perHour
        self._starts: dict[str, deque[float]] = {}

    def checkSender(self, session: Session, sender: Address) -> Verdict:
        """
        Count one message for the authenticated user, or refuse it.
        """
        user = session.authUser
        if not user:
            return ACCEPT
        now = self._clock.seconds()
        starts = self._starts.setdefault(user, deque())
        while starts and starts[0] <= now - WINDOW:
            starts.popleft()
        if len(starts) >= self._perHour:
            return refuse(S451_RATE)
        starts.append(now)
        self._forgetIdle(now)
        return ACCEPT

    def _forgetIdle(self, now: float) -> None:
        # Keep memory bounded by the users active in the last hour.
        if len(self._starts) > 1000:
            for user in [u for u, s in self._starts.items() if not s or s[-1] <= now - WINDOW]:
                del self._starts[user]
