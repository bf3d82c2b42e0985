"""
End to end: DKIM signing by the real service tree, checked by dkimpy.
"""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import dkim
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mta.config import DKIMConfig, RelayConfig
from mta.dkimkeys import DKIMKey, KeyStore
from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.e2e.test_mail import PASSWORD, submitMessage

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: signed\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)


def verifyAll(message: bytes, keys: list[DKIMKey]) -> list[tuple[bytes, bool]]:
    """
    @return: each DKIM-Signature of C{message}, top first, as its C{a=}
        tag and whether it verifies against the public records of C{keys}.
    """
    records = {f"{k.recordName}.".encode(): k.publicRecord().encode() for k in keys}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name, b"")

    d = dkim.DKIM(message)
    signatures = [v for name, v in d.headers if name.lower() == b"dkim-signature"]
    results = []
    for i, value in enumerate(signatures):
        tags = dkim.util.parse_tag_value(value)
        results.append((tags[b"a"], bool(d.verify(idx=i, dnsfunc=dnsfunc))))
    return results


class SigningTests(TestCase):
    """
    A user submits mail; the copy delivered carries signatures that verify.
    """

    timeout = 60

    @inlineCallbacks
    def start(self, **changes: Any) -> Any:
        """
        Start a server for example.com with users alice and bob.
        """
        config = testConfig(Path(self.mktemp()).absolute(), **changes)
        self.server: RunningServer = yield startServer(self, config)
        for user in ("alice@example.com", "bob@example.com"):
            yield deferToThread(self.server.addUser, user, PASSWORD)
        self.store = KeyStore(config.data_dir)

    def submit(self, message: bytes = MESSAGE) -> Any:
        """
        Send C{message} as alice through submission with STARTTLS and AUTH.
        """

        return submitMessage(self.server.ports["submission"], ["bob@example.com"], message)

    @inlineCallbacks
    def delivered(self, count: int = 1) -> Any:
        """
        @return: bob's INBOX once it holds C{count} messages.
        """
        yield waitFor(lambda: len(self.server.delivered("bob@example.com")) >= count)
        return self.server.delivered("bob@example.com")

    @inlineCallbacks
    def test_dualSignedSubmission(self) -> Any:
        """With an RSA and an Ed25519 key, the delivered copy has two signatures that verify."""
        yield self.start()
        keys = [
            self.store.generate("example.com", "s1", "rsa"),
            self.store.generate("example.com", "e1", "ed25519"),
        ]
        yield self.submit()
        [message] = yield self.delivered()
        self.assertEqual(
            verifyAll(message, keys), [(b"rsa-sha256", True), (b"ed25519-sha256", True)]
        )
        # Added before signing, so covered: the submission's Date and Message-ID.
        first = next(v for n, v in dkim.DKIM(message).headers if n.lower() == b"dkim-signature")
        tags = dkim.util.parse_tag_value(first)
        self.assertIn(b"message-id", tags[b"h"])
        self.assertIn(b"date", tags[b"h"])

    @inlineCallbacks
    def test_keyAddedWhileRunning(self) -> Any:
        """A key made by mta dkim keygen's store while the server runs signs the next message."""
        yield self.start()
        yield self.submit()
        [first] = yield self.delivered()
        self.assertNotIn(b"DKIM-Signature", first)
        key = self.store.generate("example.com", "e1", "ed25519")
        # The store is looked at no more than once a second.
        yield deferLater(reactor, 1.1, lambda: None)
        yield self.submit()
        messages = yield self.delivered(2)
        self.assertEqual(verifyAll(messages[1], [key]), [(b"ed25519-sha256", True)])

    def sendMX(self) -> Any:
        """
        Send L{MESSAGE} without AUTH to the MX listener.
        """

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=30) as c:
                c.sendmail("alice@example.com", ["bob@example.com"], MESSAGE)

        return deferToThread(send)

    @inlineCallbacks
    def test_trustedNetworkSigned(self) -> Any:
        """Mail from a trusted network (loopback, by default) is signed without AUTH."""
        yield self.start()
        key = self.store.generate("example.com", "e1", "ed25519")
        yield self.sendMX()
        [message] = yield self.delivered()
        self.assertEqual(verifyAll(message, [key]), [(b"ed25519-sha256", True)])

    @inlineCallbacks
    def test_untrustedMXNotSigned(self) -> Any:
        """Unauthenticated mail on the MX listener from an untrusted client is not signed."""
        yield self.start(relay=RelayConfig(trusted_networks=()))
        self.store.generate("example.com", "e1", "ed25519")
        yield self.sendMX()
        [message] = yield self.delivered()
        self.assertNotIn(b"DKIM-Signature", message)

    @inlineCallbacks
    def test_signingOff(self) -> Any:
        """With [dkim] sign = false nothing is signed."""
        yield self.start(dkim=DKIMConfig(sign=False))
        self.store.generate("example.com", "e1", "ed25519")
        yield self.submit()
        [message] = yield self.delivered()
        self.assertNotIn(b"DKIM-Signature", message)
