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
from mta.policy.authresults import InboundChecks
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
    inbound: InboundChecks | None = None,
) -> PolicyChain:
    """
    @param signer: the DKIM signer (L{mta.policy.dkimsign.DKIMSigner}),
        or C{None} to sign nothing.
    @param inbound: what the mail authentication of inbound mail (SPF,
        DKIM, DMARC: L{mta.policy.authresults}) needs, or C{None} to
        check nothing.
    @return: relay access, then the authenticated sender's rate, then
        sender ownership, then mail authentication.  The signer comes
        last, after every check that adds headers.
    """
    relay = RelayAccess(directory, trustedNetworks)
    checks: list[IPolicyCheck] = [
        relay,
        SenderRateLimit(clock, limits.messages_per_hour),
        SenderOwnership(directory),
    ]
    if inbound is not None:
        checks.append(inbound.build(relay.isTrusted))
    if signer is not None:
        checks.append(signer)
    return PolicyChain(checks)
