# -*- test-case-name: tests.test_smtpserver -*-
"""
Who may relay: the "no open relay" rule's one input, the trusted networks.

Mail to a non-local domain is accepted only from an authenticated user
(the SMTP server checks that) or from an address in C{[relay]
trusted_networks}.
"""

from __future__ import annotations

from collections.abc import Iterable

from mta.config import IPNetwork
from mta.protocol import parseIP


class RelayPolicy:
    """
    Answers whether a client address is trusted to relay.
    """

    def __init__(self, trustedNetworks: Iterable[IPNetwork]) -> None:
        self._networks = tuple(trustedNetworks)

    def isTrusted(self, host: str) -> bool:
        """
        @return: whether C{host} (an IP address string) is in a trusted
            network.  Anything unparsable is untrusted.
        """
        ip = parseIP(host)
        return ip is not None and any(ip in net for net in self._networks)
