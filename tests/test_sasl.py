"""
Tests for L{mta.sasl}: the PLAIN and LOGIN exchanges apart from any
protocol.
"""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from mta.sasl import (
    LOGIN_PASSWORD_PROMPT,
    LOGIN_USERNAME_PROMPT,
    Challenge,
    Credentials,
    SaslCancelled,
    SaslError,
    SaslRefused,
    startExchange,
)


def b64(data: bytes) -> bytes:
    """
    @return: C{data} in base64.
    """
    return base64.b64encode(data)


class ExchangeTests(SynchronousTestCase):
    """
    L{startExchange} and its steps.
    """

    def test_unknownMechanism(self) -> None:
        """Only PLAIN and LOGIN are offered, in any letter case."""
        self.assertIsNone(startExchange("CRAM-MD5"))
        self.assertIsNotNone(startExchange(b"plain"))
        self.assertIsNotNone(startExchange("Login"))

    def test_plainInitialResponse(self) -> None:
        """PLAIN with an initial response ends at once with the credentials."""
        exchange = startExchange("PLAIN")
        assert exchange is not None
        step = exchange.start(b64(b"\0alice@x\0pw"))
        self.assertEqual(step, Credentials("alice@x", "pw"))

    def test_plainChallenge(self) -> None:
        """PLAIN without an initial response sends an empty challenge first."""
        exchange = startExchange("PLAIN")
        assert exchange is not None
        self.assertEqual(exchange.start(None), Challenge(b""))
        self.assertEqual(
            exchange.respond(b64(b"alice@x\0alice@x\0pw")), Credentials("alice@x", "pw")
        )

    def test_login(self) -> None:
        """LOGIN asks for the user name, then the password, with the shared prompts."""
        exchange = startExchange("LOGIN")
        assert exchange is not None
        self.assertEqual(exchange.start(None), Challenge(LOGIN_USERNAME_PROMPT))
        self.assertEqual(exchange.respond(b64(b"alice@x")), Challenge(LOGIN_PASSWORD_PROMPT))
        self.assertEqual(exchange.respond(b64("pä".encode())), Credentials("alice@x", "pä"))
        self.assertEqual(base64.b64decode(LOGIN_USERNAME_PROMPT), b"Username:")

    def test_cancel(self) -> None:
        """A lone '*' cancels."""
        exchange = startExchange("LOGIN")
        assert exchange is not None
        exchange.start(None)
        self.assertRaises(SaslCancelled, exchange.respond, b"*")

    def test_badResponses(self) -> None:
        """Not base64, or not three PLAIN fields, is a SaslError."""
        exchange = startExchange("PLAIN")
        assert exchange is not None
        self.assertRaises(SaslError, exchange.start, b"%%%")
        self.assertRaises(SaslError, exchange.respond, b64(b"only\0two"))
        login = startExchange("LOGIN")
        assert login is not None
        login.start(None)
        self.assertRaises(SaslError, login.respond, b64(b"\xff\xfe"))

    def test_otherAuthorizationIdentity(self) -> None:
        """PLAIN asking to act as someone else is refused, not a decode error."""
        exchange = startExchange("PLAIN")
        assert exchange is not None
        self.assertRaises(SaslRefused, exchange.start, b64(b"bob@x\0alice@x\0pw"))
