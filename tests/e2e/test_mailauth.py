"""
End to end: SPF, DKIM and DMARC of inbound mail by the real service tree,
with the records served by a real DNS server on loopback.
"""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mta.config import DNSConfig, RelayConfig
from mta.testing.dnsserver import DNSServer
from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.test_dkimverify import rsaKey, sign

BOB = "bob@example.com"


def message(fromAddress: str, subject: str) -> bytes:
    """
    @return: a message from C{fromAddress} to Bob.
    """
    return (
        f"From: {fromAddress}\r\nTo: {BOB}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@e2e.test>\r\n\r\nHello Bob.\r\n"
    ).encode()


def folder(server: RunningServer, name: str) -> list[bytes]:
    """
    @return: the messages in Bob's folder C{name}.
    """
    base = server.maildir(BOB, name)
    return [
        p.read_bytes()
        for sub in ("new", "cur")
        if (base / sub).exists()
        for p in (base / sub).iterdir()
    ]


class InboundAuthenticationTests(TestCase):
    """
    Mail from a client outside the trusted networks on the MX listener.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        private, record = rsaKey()
        self.private = private
        self.dns = DNSServer(
            {
                "example.org": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
                "s1._domainkey.example.org": {"TXT": [record.decode()]},
                "_dmarc.example.org": {"TXT": ["v=DMARC1; p=reject; rua=mailto:agg@example.org"]},
                "_dmarc.bank.test": {"TXT": ["v=DMARC1; p=reject"]},
                "_dmarc.shop.test": {"TXT": ["v=DMARC1; p=quarantine"]},
            }
        )
        self.dns.listen(cast(Any, reactor))
        self.addCleanup(self.dns.stop)
        config = testConfig(
            Path(self.mktemp()).absolute(),
            dns=DNSConfig(nameservers=(self.dns.nameserver,)),
            # Loopback is not trusted here, so the checks apply to it.
            relay=RelayConfig(trusted_networks=()),
        )
        self.server = yield startServer(self, config)
        self.server.addUser(BOB, "secret")

    def send(self, data: bytes, sender: str = "alice@example.org") -> Any:
        """
        Send C{data} to Bob on the MX port with smtplib, from a thread.
        """

        def blocking() -> None:
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=30) as client:
                client.ehlo("client.example.org")
                client.sendmail(sender, [BOB], data)

        return deferToThread(blocking)

    @inlineCallbacks
    def test_alignedSignedPasses(self) -> Any:
        """
        A signed message from an aligned domain is delivered with dmarc=pass
        in our Authentication-Results, and a forged one claiming our name is gone.
        """
        forged = b"Authentication-Results: mx.example.com; dmarc=pass header.from=x\r\n"
        signed = sign(message("alice@example.org", "signed"), self.private, domain="example.org")
        yield self.send(forged + signed)
        yield waitFor(lambda: bool(folder(self.server, "INBOX")))
        [delivered] = folder(self.server, "INBOX")
        self.assertEqual(delivered.count(b"Authentication-Results:"), 1)
        self.assertIn(b"Authentication-Results: mx.example.com;\r\n\tspf=pass", delivered)
        self.assertIn(b"dkim=pass header.d=example.org header.s=s1", delivered)
        self.assertIn(b"dmarc=pass (p=reject dis=none rua=mailto:agg@example.org;", delivered)
        self.assertIn(("_dmarc.example.org", "TXT"), self.dns.queries)

    @inlineCallbacks
    def test_forgedFromRejected(self) -> Any:
        """
        A From of a p=reject domain without an aligned pass gets 550 5.7.1.
        """
        try:
            yield self.send(message("ceo@bank.test", "forged"))
        except smtplib.SMTPDataError as e:
            self.assertEqual(e.smtp_code, 550)
            self.assertTrue(
                cast(bytes, e.smtp_error).startswith(b"5.7.1 Message rejected: bank.test DMARC")
            )
        else:
            self.fail("the forged message was accepted")
        self.assertEqual(folder(self.server, "INBOX"), [])

    @inlineCallbacks
    def test_quarantineToJunk(self) -> Any:
        """
        A p=quarantine failure is accepted and lands in Junk.
        """
        yield self.send(message("news@shop.test", "offer"))
        yield waitFor(lambda: bool(folder(self.server, "Junk")))
        [junk] = folder(self.server, "Junk")
        self.assertIn(b"dmarc=fail (p=quarantine dis=quarantine;", junk)
        self.assertEqual(folder(self.server, "INBOX"), [])
