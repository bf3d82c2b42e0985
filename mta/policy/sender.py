# -*- test-case-name: tests.test_policy -*-
"""
Authenticated users send only as themselves, as an L{IPolicyCheck}.

On submission, the envelope sender (C{553 5.7.1} at MAIL) and every
address in the header C{From} (C{550 5.7.1} at end of data) must be the
user's own address, one of its plus-addresses, or an alias that leads to
it (L{IUserDirectory.mayUseSender}), like Postfix's
C{reject_sender_login_mismatch} and its header check.  Unauthenticated
sessions (MX, trusted networks) are not this check's business.
"""

from __future__ import annotations

import email.utils
import re

from mta.envelope import Address, AddressError, Envelope
from mta.errors import Reply
from mta.interfaces import IUserDirectory
from mta.policy.base import ACCEPT, PolicyCheck, Session, Verdict, refuse

S553_NOT_OWNER = Reply(553, "5.7.1 Sender address rejected: not owned by user")
S550_FROM_NOT_OWNER = Reply(550, "5.7.1 From header address not owned by user")
S550_BAD_FROM = Reply(550, "5.7.1 From header has no usable address")

_FROM = re.compile(rb"^from[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE)

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
#: The usual From: one plain address, alone or in angle brackets after a
#: display name of plain words (no quotes, comments, encoded words or
#: groups), which C{email.utils.getaddresses} would read as the address
#: itself; anything else goes to C{getaddresses}.
_SIMPLE_FROM = re.compile(
    rf"[ \t]*(?:(?:[A-Za-z0-9]+(?:[ \t]+[A-Za-z0-9]+)*[ \t]*)?<({_ADDR})>|({_ADDR}))[ \t]*"
)


def headerBlock(data: bytes) -> bytes:
    """
    @return: the header section of a message (up to its empty line).
    """
    end = data.find(b"\r\n\r\n")
    return data[: end + 2] if end >= 0 else data


def fromAddresses(data: bytes) -> list[str] | None:
    """
    @return: the addresses of every C{From} header of a message (unfolded,
        decoded as UTF-8): C{[]} when there is no From header, C{None}
        when there is one but no address can be read from it.
    """
    values = _FROM.findall(headerBlock(data))
    if not values:
        return []
    texts = [v.replace(b"\r\n", b"").decode("utf-8", "replace") for v in values]
    simple = [_SIMPLE_FROM.fullmatch(text) for text in texts]
    if all(simple):
        return [m.group(1) or m.group(2) for m in simple if m]
    pairs = email.utils.getaddresses(texts)
    addresses = [addr for _, addr in pairs if addr]
    return addresses or None


class SenderOwnership(PolicyCheck):
    """
    Refuses envelope senders and From addresses the user does not own.
    """

    def __init__(self, directory: IUserDirectory) -> None:
        """
        @param directory: knows which addresses lead to which user.
        """
        self._directory = directory

    def _owns(self, user: str, address: Address) -> bool:
        return self._directory.mayUseSender(user, address)

    def checkSender(self, session: Session, sender: Address) -> Verdict:
        """
        Refuse MAIL FROM an address the authenticated user does not own.
        """
        if not session.authUser or sender.isNull or self._owns(session.authUser, sender):
            return ACCEPT
        return refuse(S553_NOT_OWNER)

    def checkMessage(self, session: Session, envelope: Envelope, data: bytes) -> Verdict:
        """
        Refuse a submitted message whose From the user does not own.
        """
        if not session.authUser:
            return ACCEPT
        addresses = fromAddresses(data)
        if addresses is None:
            return refuse(S550_BAD_FROM)
        for text in addresses:
            try:
                address = Address.parse(text, utf8=True)
            except AddressError:
                return refuse(S550_FROM_NOT_OWNER)
            if not self._owns(session.authUser, address):
                return refuse(S550_FROM_NOT_OWNER)
        return ACCEPT
