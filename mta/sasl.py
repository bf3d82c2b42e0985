# -*- test-case-name: tests.test_sasl -*-
"""
SASL exchanges (RFC 4422) for the password mechanisms PLAIN (RFC 4616)
and LOGIN, apart from any protocol.

A protocol starts an exchange with L{startExchange} and feeds it the
client's base64 lines; each step answers either the next challenge to send
(base64, ready for the wire) or the L{Credentials} to check.  SMTP's AUTH,
POP3's AUTH and IMAP's AUTHENTICATE differ only in how they frame these
lines, so the mechanisms, the LOGIN prompts and the cancel rule (a lone
C{*}) live here once.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from mta.auth import AuthorizationRefused, decodeBase64, decodePlain

#: The mechanisms offered, in the order they are advertised.
MECHANISMS = ("PLAIN", "LOGIN")

#: SASL LOGIN (draft-murchison-sasl-login) prompts, already base64.
LOGIN_USERNAME_PROMPT = base64.b64encode(b"Username:")
LOGIN_PASSWORD_PROMPT = base64.b64encode(b"Password:")


class SaslError(ValueError):
    """
    The client's response cannot be decoded (not base64, wrong shape).
    """


class SaslRefused(Exception):
    """
    The response asks for something not offered (acting as another
    user); answered like a failed login, without checking a password.
    """


class SaslCancelled(Exception):
    """
    The client cancelled the exchange with C{*}.
    """


@dataclass(frozen=True)
class Credentials:
    """
    What an exchange ends with: the user name and password to check.
    """

    user: str
    password: str


@dataclass(frozen=True)
class Challenge:
    """
    The next server challenge, base64 (empty for PLAIN's empty challenge).
    """

    data: bytes


Step = Challenge | Credentials


class _Exchange:
    """
    One exchange in progress; L{respond} takes each client line.
    """

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self._user: str | None = None

    def start(self, initial: bytes | None) -> Step:
        """
        Begin, with the initial response sent with the command, if any.

        @raise SaslError: the initial response does not decode.
        @raise SaslRefused: it asks to act as another user.
        """
        if initial is None:
            if self.mechanism == "PLAIN":
                return Challenge(b"")
            return Challenge(LOGIN_USERNAME_PROMPT)
        return self._take(initial)

    def respond(self, line: bytes) -> Step:
        """
        Take the client's answer to the last challenge.

        @raise SaslCancelled: the client sent C{*}.
        @raise SaslError: the answer does not decode.
        @raise SaslRefused: it asks to act as another user.
        """
        if line.strip() == b"*":
            raise SaslCancelled()
        return self._take(line)

    def _take(self, response: bytes) -> Step:
        if self.mechanism == "PLAIN":
            try:
                _, user, password = decodePlain(response)
            except AuthorizationRefused as e:
                raise SaslRefused(str(e)) from None
            except ValueError as e:
                raise SaslError(str(e)) from None
            return Credentials(user, password)
        text = _decodeText(response)
        if self._user is None:
            self._user = text
            return Challenge(LOGIN_PASSWORD_PROMPT)
        return Credentials(self._user, text)


def _decodeText(response: bytes) -> str:
    try:
        return decodeBase64(response).decode("utf-8")
    except ValueError as e:
        raise SaslError(str(e)) from None


def startExchange(mechanism: str | bytes) -> _Exchange | None:
    """
    @param mechanism: the name the client asked for, any letter case.
    @return: a new exchange, or C{None} for a mechanism we do not offer.
    """
    if isinstance(mechanism, bytes):
        mechanism = mechanism.decode("ascii", "replace")
    name = mechanism.upper()
    return _Exchange(name) if name in MECHANISMS else None


__all__ = [
    "LOGIN_PASSWORD_PROMPT",
    "LOGIN_USERNAME_PROMPT",
    "MECHANISMS",
    "Challenge",
    "Credentials",
    "SaslCancelled",
    "SaslError",
    "SaslRefused",
    "startExchange",
]
