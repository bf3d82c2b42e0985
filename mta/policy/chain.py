# -*- test-case-name: tests.test_transcripts -*-
"""
The checks every SMTP listener asks, in order: the one place the chain is
put together (L{mta.tap} and the test transcripts both use it).
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.interfaces import IReactorTime

from mta.config import IPNetwork, LimitsConfig
from mta.interfaces import IPolicyCheck, IUserDirectory
from mta.policy.base import PolicyChain
from mta.policy.limits import SenderRateLimit
from mta.policy.relayaccess import RelayAccess
from mta.policy.sender import SenderOwnership


def smtpPolicy(
    directory: IUserDirectory,
    trustedNetworks: Iterable[IPNetwork],
    limits: LimitsConfig,
    clock: IReactorTime,
    signer: IPolicyCheck | None = None,
) -> PolicyChain:
    """
    @param signer: the DKIM signer (L{mta.policy.dkimsign.DKIMSigner}),
        or C{None} to sign nothing.
    @return: relay access, then the authenticated sender's rate, then
        sender ownership; the mail authentication checks will join here.
        The signer comes last, after every check that adds headers.
    """
    checks: list[IPolicyCheck] = [
        RelayAccess(directory, trustedNetworks),
        SenderRateLimit(clock, limits.messages_per_hour),
        SenderOwnership(directory),
    ]
    if signer is not None:
        checks.append(signer)
    return PolicyChain(checks)
