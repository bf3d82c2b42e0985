# -*- test-case-name: tests.test_policy -*-
"""
The policy seam: what a check sees (L{Session}), what it answers
(L{Verdict}), and L{PolicyChain}, the one L{IPolicyCheck} the SMTP server
talks to.

Step "check" of the lifecycle: C{smtp.server} receives, the chain asks
every check in order (relay access, sender rate, sender ownership, and
later SPF/DKIM/DMARC), the first refusal wins, and the headers that
accepting checks add at end of data are put on top of the message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mta.envelope import Address, Envelope
from mta.errors import Reply
from mta.interfaces import IPolicyCheck


@dataclass(frozen=True)
class Session:
    """
    What a check knows about the SMTP session asking.

    @ivar peer: the client's IP address.
    @ivar listener: C{"smtp"}, C{"submission"} or C{"submissions"}.
    @ivar tls: whether the session is under TLS.
    @ivar heloName: what the client said in EHLO/HELO (C{""} before).
    @ivar authUser: the authenticated user's address, or C{""}.
    """

    peer: str
    listener: str
    tls: bool = False
    heloName: str = ""
    authUser: str = ""


@dataclass(frozen=True)
class Verdict:
    """
    A check's answer.

    @ivar reply: C{None} to accept; else the reply that refuses the step.
    @ivar headers: at end of data, header lines (without line end) to add
        on top of the message when it is accepted.
    @ivar junk: at end of data, deliver the accepted message to local
        recipients' Junk folder rather than their INBOX (DMARC
        p=quarantine).
    @ivar stripHeaders: at end of data, C{(name, first word)} pairs: the
        header fields of the message called C{name} whose value starts
        with that word (case aside) are removed before it is queued
        (forged C{Authentication-Results} claiming our authserv-id,
        RFC 8601 section 5).  See L{stripHeaderFields}.
    @ivar logNote: at end of data, C{key=value} words the check adds to
        the transaction's one log line (e.g. its SPF, DKIM and DMARC
        results), whether the message is accepted or refused.
    """

    reply: Reply | None = None
    headers: tuple[str, ...] = ()
    junk: bool = False
    stripHeaders: tuple[tuple[str, str], ...] = ()
    logNote: str = ""

    @property
    def accepted(self) -> bool:
        """
        @return: whether the step may go on.
        """
        return self.reply is None


_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:[ \t]*(?:\r\n[ \t]+)?(\([^)]*\)\s*)?([^\s;(]*)")


def stripHeaderFields(data: bytes, strip: Iterable[tuple[str, str]]) -> bytes:
    """
    Remove header fields from the head of a message.

    @param data: the message (CRLF line ends).
    @param strip: C{(name, first word)} pairs: a field goes when its name
        is C{name} and the first word of its value (after an optional
        comment) is C{first word}, both compared without regard to case.
    @return: C{data} without those fields (folded lines and all).
    """
    wanted = {(n.lower(), w.lower()) for n, w in strip}
    if not wanted:
        return data
    end = data.find(b"\r\n\r\n")
    head, rest = (data[: end + 2], data[end + 2 :]) if end >= 0 else (data, b"")
    kept: list[bytes] = []
    dropping = False
    for line in head.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        m = _FIELD.match(line)
        key = (m.group(1), m.group(3)) if m else (b"", b"")
        name, word = (k.decode("ascii", "replace").lower() for k in key)
        dropping = (name, word) in wanted
        if not dropping:
            kept.append(line)
    return b"".join(line + b"\r\n" for line in kept) + rest


#: The answer of a check that has nothing against a step.
ACCEPT = Verdict()


def refuse(reply: Reply) -> Verdict:
    """
    @return: a verdict refusing the step with C{reply}.
    """
    return Verdict(reply)


@implementer(IPolicyCheck)
class PolicyCheck:
    """
    A base for checks: every step accepted; a check overrides the steps it
    cares about.
    """

    def checkConnection(self, session: Session) -> Verdict | Deferred[Verdict]:
        """
        See L{IPolicyCheck.checkConnection}.
        """
        return ACCEPT

    def checkHelo(self, session: Session, name: str) -> Verdict | Deferred[Verdict]:
        """
        See L{IPolicyCheck.checkHelo}.
        """
        return ACCEPT

    def checkSender(self, session: Session, sender: Address) -> Verdict | Deferred[Verdict]:
        """
        See L{IPolicyCheck.checkSender}.
        """
        return ACCEPT

    def checkRecipient(
        self, session: Session, sender: Address, recipient: Address
    ) -> Verdict | Deferred[Verdict]:
        """
        See L{IPolicyCheck.checkRecipient}.
        """
        return ACCEPT

    def checkMessage(
        self, session: Session, envelope: Envelope, data: bytes
    ) -> Verdict | Deferred[Verdict]:
        """
        See L{IPolicyCheck.checkMessage}.
        """
        return ACCEPT


Ask = Callable[[IPolicyCheck], "Verdict | Deferred[Verdict]"]


@implementer(IPolicyCheck)
class PolicyChain:
    """
    Asks checks in order: the first refusal is the answer; headers of
    accepting checks are gathered in order.  While every check answers at
    once, so does the chain (no Deferred per command on the fast path).
    """

    def __init__(self, checks: Iterable[IPolicyCheck] = ()) -> None:
        """
        @param checks: the checks, asked in this order.
        """
        self.checks: Sequence[IPolicyCheck] = tuple(checks)

    def _ask(self, ask: Ask) -> Verdict | Deferred[Verdict]:
        return _askFrom(list(self.checks), ask)

    def checkConnection(self, session: Session) -> Verdict | Deferred[Verdict]:
        """
        See L{IPolicyCheck.checkConnection}.
        """
        return self._ask(lambda c: c.checkConnection(session))

    def checkHelo(self, session: Session, name: str) -> Verdict | Deferred[Verdict]:
        """
        See L{IPolicyCheck.checkHelo}.
        """
        return self._ask(lambda c: c.checkHelo(session, name))

    def checkSender(self, session: Session, sender: Address) -> Verdict | Deferred[Verdict]:
        """
        See L{IPolicyCheck.checkSender}.
        """
        return self._ask(lambda c: c.checkSender(session, sender))

    def checkRecipient(
        self, session: Session, sender: Address, recipient: Address
    ) -> Verdict | Deferred[Verdict]:
        """
        See L{IPolicyCheck.checkRecipient}.
        """
        return self._ask(lambda c: c.checkRecipient(session, sender, recipient))

    def checkMessage(
        self, session: Session, envelope: Envelope, data: bytes
    ) -> Verdict | Deferred[Verdict]:
        """
        See L{IPolicyCheck.checkMessage}.
        """
        return self._ask(lambda c: c.checkMessage(session, envelope, data))


def _askFrom(
    checks: list[IPolicyCheck], ask: Ask, sofar: Verdict = ACCEPT
) -> Verdict | Deferred[Verdict]:
    """
    Ask C{checks} in turn from the first, synchronously while answers are
    ready, carrying what the accepting ones gathered so far (headers, the
    junk wish, fields to strip, log notes).
    """
    while checks:
        answer = ask(checks.pop(0))
        if isinstance(answer, Deferred):
            return answer.addCallback(_continue, checks, ask, sofar)
        if not answer.accepted:
            return _merged(sofar, answer)
        sofar = _merged(sofar, answer)
    return sofar


def _continue(
    answer: Verdict, checks: list[IPolicyCheck], ask: Ask, sofar: Verdict
) -> Verdict | Deferred[Verdict]:
    if not answer.accepted:
        return _merged(sofar, answer)
    return _askFrom(checks, ask, _merged(sofar, answer))


def _merged(sofar: Verdict, answer: Verdict) -> Verdict:
    """
    @return: C{answer} with what the earlier checks gathered: their
        headers, junk wish and fields to strip when it accepts, their log
        notes either way.
    """
    if sofar is ACCEPT:
        return answer
    note = (
        f"{sofar.logNote} {answer.logNote}"
        if sofar.logNote and answer.logNote
        else (sofar.logNote or answer.logNote)
    )
    if not answer.accepted:
        return Verdict(answer.reply, logNote=note)
    return Verdict(
        None,
        sofar.headers + answer.headers,
        sofar.junk or answer.junk,
        sofar.stripHeaders + answer.stripHeaders,
        note,
    )


__all__ = [
    "ACCEPT",
    "PolicyChain",
    "PolicyCheck",
    "Session",
    "Verdict",
    "refuse",
    "stripHeaderFields",
]
