"""
Tests for SMTP AUTH in L{mta.smtp.server}: PLAIN and LOGIN over
StringTransport with a fake login service (L{mta.testing.fakes.FakeLogin}).
"""

from __future__ import annotations

import base64

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from mta.sasl import LOGIN_PASSWORD_PROMPT, LOGIN_USERNAME_PROMPT
from mta.smtp.server import Mode
from mta.testing.fakes import FakeLogin
from tests.test_smtpserver import SMTPTestMixin, TLSTransport


def b64(data: bytes) -> bytes:
    """
    @return: C{data} in base64.
    """
    return base64.b64encode(data)


PLAIN_OK = b64(b"\0alice@example.com\0secret")
PLAIN_BAD = b64(b"\0alice@example.com\0wrong")


class SMTPAuthTests(SMTPTestMixin, SynchronousTestCase):
    """
    AUTH on the submission listener, after STARTTLS.
    """

    mode = Mode.SUBMISSION

    def setUp(self) -> None:
        super().setUp()
        self.login = FakeLogin({"alice@example.com": "secret"})
        self.factory.login = self.login
        self.factory.tls = object()  # type: ignore[assignment]
        self.connect()
        self.startTLS()

    def startTLS(self) -> None:
        """
        Say STARTTLS and EHLO again, as a client does.
        """
        self.send(b"EHLO c\r\n")
        self.assertEqual(self.codes(b"STARTTLS\r\n"), [b"220"])
        self.send(b"EHLO c\r\n")

    def test_authOfferedAfterTLS(self) -> None:
        """Under TLS, EHLO offers AUTH PLAIN LOGIN."""
        self.assertIn(b"250-AUTH PLAIN LOGIN", self.send(b"EHLO c\r\n"))

    def test_plainWithInitialResponse(self) -> None:
        """AUTH PLAIN with the credentials on the command line logs in."""
        self.assertEqual(
            self.send(b"AUTH PLAIN " + PLAIN_OK + b"\r\n"),
            [b"235 2.7.0 Authentication successful"],
        )
        self.assertEqual(
            self.login.attempts, [("alice@example.com", "secret", "192.0.2.7", "smtp")]
        )
        self.assertEqual(self.codes(b"MAIL FROM:<alice@example.com>\r\n"), [b"250"])

    def test_plainWithoutInitialResponse(self) -> None:
        """AUTH PLAIN alone gets an empty 334 challenge, then the credentials."""
        self.assertEqual(self.send(b"AUTH PLAIN\r\n"), [b"334"])
        self.assertEqual(self.codes(PLAIN_OK + b"\r\n"), [b"235"])

    def test_login(self) -> None:
        """AUTH LOGIN asks for user name and password with the shared prompts."""
        self.assertEqual(self.send(b"AUTH LOGIN\r\n"), [b"334 " + LOGIN_USERNAME_PROMPT])
        self.assertEqual(
            self.send(b64(b"alice@example.com") + b"\r\n"), [b"334 " + LOGIN_PASSWORD_PROMPT]
        )
        self.assertEqual(self.codes(b64(b"secret") + b"\r\n"), [b"235"])

    def test_loginWithInitialResponse(self) -> None:
        """AUTH LOGIN with the user name on the command line asks for the password."""
        self.assertEqual(
            self.send(b"AUTH LOGIN " + b64(b"alice@example.com") + b"\r\n"),
            [b"334 " + LOGIN_PASSWORD_PROMPT],
        )
        self.assertEqual(self.codes(b64(b"secret") + b"\r\n"), [b"235"])

    def test_cancel(self) -> None:
        """A lone '*' cancels the exchange with 501 and nothing is checked."""
        self.send(b"AUTH LOGIN\r\n")
        self.assertEqual(self.send(b"*\r\n"), [b"501 5.7.0 Authentication cancelled"])
        self.send(b"AUTH PLAIN\r\n")
        self.assertEqual(self.codes(b"*\r\n"), [b"501"])
        self.assertEqual(self.login.attempts, [])

    def test_badBase64(self) -> None:
        """A response that is not base64 gets 501 5.5.2, without a login attempt."""
        self.assertEqual(self.send(b"AUTH PLAIN %%%\r\n"), [b"501 5.5.2 Cannot decode response"])
        self.send(b"AUTH LOGIN\r\n")
        self.assertEqual(self.codes(b"!!\r\n"), [b"501"])
        self.assertEqual(self.login.attempts, [])

    def test_badCredentials(self) -> None:
        """A wrong password gets 535 5.7.8, and MAIL still needs AUTH."""
        self.assertEqual(
            self.send(b"AUTH PLAIN " + PLAIN_BAD + b"\r\n"),
            [b"535 5.7.8 Error: authentication failed"],
        )
        self.assertEqual(self.codes(b"MAIL FROM:<alice@example.com>\r\n"), [b"530"])

    def test_tooManyFailuresCloses(self) -> None:
        """After auth_failures wrong passwords the connection closes with 421."""
        for _ in range(self.limits.auth_failures - 1):
            self.assertEqual(self.codes(b"AUTH PLAIN " + PLAIN_BAD + b"\r\n"), [b"535"])
        self.assertEqual(self.codes(b"AUTH PLAIN " + PLAIN_BAD + b"\r\n"), [b"421"])
        self.assertTrue(self.transport.disconnecting)

    def test_blockedAddress(self) -> None:
        """A blocked client address is told 454 and disconnected."""
        self.login.blocked.add("192.0.2.7")
        self.assertEqual(self.codes(b"AUTH PLAIN " + PLAIN_OK + b"\r\n"), [b"454"])
        self.assertTrue(self.transport.disconnecting)

    def test_otherAuthorizationIdentity(self) -> None:
        """PLAIN asking to act as another user gets 535 5.7.8, and no password is checked."""
        response = b64(b"bob@example.com\0alice@example.com\0secret")
        self.assertEqual(
            self.send(b"AUTH PLAIN " + response + b"\r\n"),
            [b"535 5.7.8 Error: authentication failed"],
        )
        self.assertEqual(self.login.attempts, [])

    def test_unknownMechanism(self) -> None:
        """A mechanism we do not offer gets 504."""
        self.assertEqual(self.codes(b"AUTH CRAM-MD5\r\n"), [b"504"])

    def test_authTwice(self) -> None:
        """A second AUTH after success gets 503."""
        self.send(b"AUTH PLAIN " + PLAIN_OK + b"\r\n")
        self.assertEqual(self.codes(b"AUTH PLAIN " + PLAIN_OK + b"\r\n"), [b"503"])

    def test_authNeedsEhlo(self) -> None:
        """AUTH before EHLO (after STARTTLS reset it) gets 503."""
        self.connect()
        self.send(b"EHLO c\r\nSTARTTLS\r\n")
        self.assertEqual(self.codes(b"AUTH PLAIN " + PLAIN_OK + b"\r\n"), [b"503"])

    def test_starttlsForgetsLogin(self) -> None:
        """STARTTLS on a session is refused once TLS is on; state never carries over."""
        self.send(b"AUTH PLAIN " + PLAIN_OK + b"\r\n")
        self.assertEqual(self.codes(b"STARTTLS\r\n"), [b"503"])


class SMTPAuthBeforeTLSTests(SMTPTestMixin, SynchronousTestCase):
    """
    Without TLS, submission neither offers nor accepts AUTH, from any
    address, loopback included (RFC 8314).
    """

    mode = Mode.SUBMISSION

    def setUp(self) -> None:
        super().setUp()
        self.login = FakeLogin({"alice@example.com": "secret"})
        self.factory.login = self.login

    def test_loopbackGetsNoAuthBeforeTLS(self) -> None:
        """EHLO from 127.0.0.1 before STARTTLS offers no AUTH; AUTH gets 530 5.7.0."""
        self.peer = IPv4Address("TCP", "127.0.0.1", 40000)
        self.connect()
        self.assertNotIn(b"AUTH", b"".join(self.send(b"EHLO c\r\n")))
        self.assertEqual(
            self.send(b"AUTH PLAIN " + PLAIN_OK + b"\r\n"),
            [b"530 5.7.0 Must issue a STARTTLS command first"],
        )
        self.assertEqual(self.login.attempts, [])

    def test_loopbackMailNeedsTLS(self) -> None:
        """MAIL from loopback before STARTTLS gets 530 5.7.0 too."""
        self.peer = IPv4Address("TCP", "127.0.0.1", 40000)
        self.connect()
        self.send(b"EHLO c\r\n")
        self.assertEqual(self.codes(b"MAIL FROM:<alice@example.com>\r\n"), [b"530"])

    def test_noAuthOnMX(self) -> None:
        """The MX listener answers AUTH as an unknown command, even under TLS."""
        self.factory.mode = Mode.MX
        self.connect()
        self.proto.tlsActive = True
        self.send(b"EHLO c\r\n")
        self.assertEqual(self.codes(b"AUTH PLAIN " + PLAIN_OK + b"\r\n"), [b"500"])


__all__ = ["SMTPAuthBeforeTLSTests", "SMTPAuthTests", "TLSTransport"]
