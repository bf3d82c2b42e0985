# -*- test-case-name: tests.test_smtpserver -*-
"""
Failures that carry the reply a peer should see.

A L{TemporaryFailure} means "try again later" (4xx); a L{PermanentFailure}
means "give up" (5xx).  Delivery targets report per-recipient outcomes with
them; the SMTP server turns them into replies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Reply:
    """
    One SMTP reply: a three-digit code and text lines.

    The enhanced status code (RFC 3463), where there is one, starts the text.
    """

    code: int
    text: str = ""

    @property
    def isPermanent(self) -> bool:
        """
        @return: C{True} for a 5xx reply.
        """
        return self.code >= 500

    @property
    def isTemporary(self) -> bool:
        """
        @return: C{True} for a 4xx reply.
        """
        return 400 <= self.code < 500

    def lines(self) -> list[str]:
        """
        @return: the text split into lines (at least one).
        """
        return self.text.split("\n") if self.text else [""]

    def toBytes(self) -> bytes:
        """
        Render the reply for the wire, multi-line replies with C{NNN-}.

        @return: the reply, each line ending in CRLF.
        """
        return self._wire

    @cached_property
    def _wire(self) -> bytes:
        # Most replies are module-level constants sent over and over:
        # render each once.
        parts = self.lines()
        last = len(parts) - 1
        out = []
        for i, line in enumerate(parts):
            sep = " " if i == last else "-"
            out.append(f"{self.code}{sep}{line}".rstrip(" ") + "\r\n")
        return "".join(out).encode("utf-8", "replace")

    def __str__(self) -> str:
        return f"{self.code} {self.text}".replace("\n", " / ")


class DeliveryFailure(Exception):
    """
    A recipient could not be delivered; C{reply} says why.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class TemporaryFailure(DeliveryFailure):
    """
    Delivery failed for now; the queue retries on its schedule.
    """


class PermanentFailure(DeliveryFailure):
    """
    Delivery failed for good; the message bounces for this recipient.
    """


class ConfigError(Exception):
    """
    The configuration is not usable; the message names the key.
    """
