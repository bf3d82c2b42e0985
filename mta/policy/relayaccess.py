# -*- test-case-name: tests.test_policy -*-
"""
Who may relay: the "no open relay" rule, as an L{IPolicyCheck}.

Mail to a non-local domain is accepted at RCPT only from an
authenticated user or from an address in C{[relay] trusted_networks};
anyone else gets C{554 5.7.1}.
"""

from __future__ import annotations

from collections.abc import Iterable

from mta.config import IPNetwork
from mta.envelope import Address
from mta.errors import Reply
from mta.interfaces import IUserDirectory
from mta.policy.base import ACCEPT, PolicyCheck, Session, Verdict, refuse
from mta.protocol import parseIP

S554_NO_RELAY = Reply(554, "5.7.1 Relay access denied")


class RelayAccess(PolicyCheck):
    """
    Refuses non-local recipients from clients that may not relay.
    """

    def __init__(self, directory: IUserDirectory, trustedNetworks: Iterable[IPNetwork]) -> None:
        """
        @param directory: says which domains are local.
        @param trustedNetworks: client networks that may relay without AUTH.
        """
        self._directory = directory
        self._networks = tuple(trustedNetworks)

    def isTrusted(self, host: str) -> bool:
        """
        @return: whether C{host} (an IP address string) is in a trusted
            network.  Anything unparsable is untrusted.
        """
        ip = parseIP(host)
        return ip is not None and any(ip in net for net in self._networks)

    def checkRecipient(self, session: Session, sender: Address, recipient: Address) -> Verdict:
        """
        Refuse a non-local C{recipient} unless the client may relay.
        """
        if self._directory.isLocalDomain(recipient.domain):
            return ACCEPT
        if session.authUser or self.isTrusted(session.peer):
            return ACCEPT
        return refuse(S554_NO_RELAY)
