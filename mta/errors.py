# -*- test-case-name: tests.test_smtpserver -*-
"""
Replies and configuration errors.

A L{Reply} is what a peer sees: protocols send them, and delivery targets
report each recipient's outcome as one (4xx: try again later; 5xx: give
up).  A L{ConfigError} stops the start with one line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True)
class Reply:
    """
    One SMTP reply: a three-digit code and text lines.

    The enhanced status code (RFC 3463), where there is one, starts the text.

    @ivar remote: for a reply a remote server gave during relay, that
        server as C{"mx.example.com[192.0.2.1]"} (for DSNs' Remote-MTA and
        the queue's timeline); C{""} for answers of our own.
    @ivar detail: how the answer came about, for C{mta queue show}: the
        hosts chosen and why, those that failed, the TLS outcome.
        Neither C{remote} nor C{detail} takes part in comparisons.
    """

    code: int
    text: str = ""
    remote: str = field(default="", compare=False)
    detail: str = field(default="", compare=False)

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


class ConfigError(Exception):
    """
    The configuration is not usable; the message names the key.
    """
