# -*- test-case-name: tests.test_envelope -*-
"""
Addresses and envelopes: frozen values, no I/O.

An L{Envelope} is what SMTP's MAIL and RCPT commands say about a message;
the queue stores it as JSON next to the message bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

# Quoted local parts are accepted as they are written; we only need to split
# at the last "@" and keep the domain comparable.
_DOMAIN = re.compile(r"^(\[[0-9A-Fa-f:.IPv]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)$")


class AddressError(ValueError):
    """
    The text is not a usable mailbox address.
    """


@dataclass(frozen=True, order=True)
class Address:
    """
    A mailbox address C{local@domain}; the domain is kept lower case.

    The null address C{<>} has an empty local part and domain.
    """

    local: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> Address:
        """
        Parse C{local@domain} (without angle brackets).

        @raise AddressError: the text is not an address.
        """
        if text == "":
            return NULL_ADDRESS
        local, at, domain = text.rpartition("@")
        if not at or not local or not domain or len(text) > 320:
            raise AddressError(f"not an address: {text!r}")
        if len(local) > 64 or (
            any(c in local for c in " \t\r\n<>")
            and not (local.startswith('"') and local.endswith('"'))
        ):
            raise AddressError(f"bad local part: {local!r}")
        domain = domain.lower().rstrip(".")
        if not _DOMAIN.match(domain) or ".." in domain:
            raise AddressError(f"bad domain: {domain!r}")
        return cls(local, domain)

    @property
    def isNull(self) -> bool:
        """
        @return: C{True} for the null sender C{<>}.
        """
        return not self.local and not self.domain

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}" if not self.isNull else ""

    def canonical(self) -> str:
        """
        @return: the address in the form user names are stored in: the local
            part as written, the domain lower case.  Local parts compare
            case-insensitively in our directory, so this lower-cases them too.
        """
        return str(self).lower()


NULL_ADDRESS = Address("", "")


@dataclass(frozen=True)
class Recipient:
    """
    One recipient of a queued message and its delivery state.

    @ivar address: where to deliver (after alias expansion).
    @ivar original: the RCPT TO address the client gave (ORCPT).
    @ivar state: C{"pending"}, C{"delivered"} or C{"failed"}.
    @ivar attempts: how many delivery attempts were made.
    @ivar lastError: the reply of the last failed attempt, as text.
    """

    address: Address
    original: Address
    state: str = "pending"
    attempts: int = 0
    lastError: str = ""

    def withOutcome(self, state: str, error: str = "") -> Recipient:
        """
        @return: a copy after one more attempt ending in C{state}.
        """
        return replace(self, state=state, attempts=self.attempts + 1, lastError=error)


@dataclass(frozen=True)
class Envelope:
    """
    The SMTP envelope of one message and where it came from.

    @ivar queueId: the queue id, shown in logs and C{mta queue list}.
    @ivar sender: the MAIL FROM address (maybe null).
    @ivar recipients: one L{Recipient} per destination.
    @ivar arrival: POSIX time the message was accepted.
    @ivar nextAttempt: POSIX time of the next delivery attempt.
    @ivar client: the remote IP address, the HELO name and the user that
        authenticated, for logs and bounces.
    """

    queueId: str
    sender: Address
    recipients: tuple[Recipient, ...]
    arrival: float
    nextAttempt: float = 0.0
    clientAddress: str = ""
    heloName: str = ""
    authUser: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def pending(self) -> tuple[Recipient, ...]:
        """
        @return: the recipients still to be delivered.
        """
        return tuple(r for r in self.recipients if r.state == "pending")

    def toJSON(self) -> dict[str, Any]:
        """
        @return: a JSON-serialisable dict, the on-disk form.
        """
        return {
            "version": 1,
            "id": self.queueId,
            "sender": str(self.sender),
            "arrival": self.arrival,
            "next_attempt": self.nextAttempt,
            "client_address": self.clientAddress,
            "helo": self.heloName,
            "auth_user": self.authUser,
            "recipients": [
                {
                    "address": str(r.address),
                    "original": str(r.original),
                    "state": r.state,
                    "attempts": r.attempts,
                    "last_error": r.lastError,
                }
                for r in self.recipients
            ],
            "extra": self.extra,
        }

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> Envelope:
        """
        Rebuild an envelope from L{toJSON}'s form.

        @raise ValueError: the data is not an envelope.
        """
        try:
            return cls(
                queueId=data["id"],
                sender=Address.parse(data["sender"]),
                recipients=tuple(
                    Recipient(
                        address=Address.parse(r["address"]),
                        original=Address.parse(r["original"]),
                        state=r["state"],
                        attempts=int(r["attempts"]),
                        lastError=r["last_error"],
                    )
                    for r in data["recipients"]
                ),
                arrival=float(data["arrival"]),
                nextAttempt=float(data["next_attempt"]),
                clientAddress=data.get("client_address", ""),
                heloName=data.get("helo", ""),
                authUser=data.get("auth_user", ""),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, AddressError) as e:
            raise ValueError(f"bad envelope: {e}") from e
