"""
The tree's DKIM signature survives relay through a real Postfix (issue 11
item 6): A (example.com) signs what alice submits and sends it to b.test's
MX, which is a private Postfix (L{mta.testing.postfix}); Postfix relays it
on to B (b.test), whose checks are on for 127.0.0.1.

    alice --submission--> A --MX of b.test--> Postfix --transport_maps--> B

A finds the MX through the test DNS server (L{mta.testing.dnsserver}):
b.test's MX is mx.b.test, whose A is 127.0.0.1, and A's outbound_port is
Postfix's smtpd port.  Postfix needs no DNS: its transport table sends
b.test to C{smtp:[127.0.0.1]:<B's port>}.  B looks A's key, SPF and DMARC
up in the same DNS server.  B's copy is checked three ways: B's own
Authentication-Results, dkimpy called directly, and Perl's Mail::DKIM
(when installed) with its DNS pointed at the test server only.

Skipped without Postfix or when not root (Postfix must be started by root).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import dkim
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mta.config import RelayConfig
from mta.dkimkeys import KeyStore
from mta.testing.postfix import PrivatePostfix, needPostfix
from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.e2e.test_dkiminterop import (
    dkimpyVerify,
    headerOf,
    message,
    perlDKIM,
    perlVerify,
    startCheckingPeer,
)
from tests.e2e.test_mail import PASSWORD, submitMessage

#: Postfix's myhostname: what its Received field says it is.
POSTFIX_HOST = "relay.postfix.test"


def receivedFields(data: bytes) -> list[str]:
    """
    @return: the message's Received fields, unfolded, top first.
    """
    return [
        " ".join(value.decode().split())
        for name, value in dkim.DKIM(data).headers
        if name.lower() == b"received"
    ]


class PostfixPeerTests(TestCase):
    """
    A -> Postfix -> B, with A's DKIM signature checked on B's copy.
    """

    timeout = 60

    @inlineCallbacks
    def test_signatureSurvivesPostfix(self) -> Any:
        """
        B's copy came through Postfix (its Received field is there, between
        B's and A's), B says dkim=pass and dmarc=pass for example.com, and
        dkimpy and Mail::DKIM verify A's signature on it.
        """
        needPostfix()
        aDir = Path(self.mktemp()).absolute()
        store = KeyStore(aDir)
        keys = [store.generate("example.com", "s1", "rsa")]
        # B sees Postfix's address, 127.0.0.1, for example.com's mail: the
        # zone's SPF allows it.
        nameservers, b = yield startCheckingPeer(self, keys)

        relay = PrivatePostfix(
            Path(self.mktemp()),
            {"b.test": f"smtp:[127.0.0.1]:{b.ports['smtp']}"},
            hostname=POSTFIX_HOST,
        )
        self.addCleanup(deferToThread, relay.stop)
        yield deferToThread(relay.start)

        aConfig = testConfig(
            aDir,
            dns=nameservers,
            relay=replace(RelayConfig(), outbound_port=relay.port, retry_schedule=(1.0,)),
        )
        a: RunningServer = yield startServer(self, aConfig)
        yield deferToThread(a.addUser, "alice@example.com", PASSWORD)

        yield submitMessage(
            a.ports["submission"],
            ["bob@b.test"],
            message("alice@example.com", "bob@b.test", "via-postfix"),
        )
        try:
            yield waitFor(lambda: bool(b.delivered("bob@b.test")), timeout=20)
        except AssertionError:
            self.fail(f"nothing delivered to B; Postfix's log:\n{relay.logText()}")
        [delivered] = b.delivered("bob@b.test")

        # It went A -> Postfix -> B: Postfix's Received (from A, by
        # Postfix) sits below B's, and Postfix says it handed it to B.
        received = receivedFields(delivered)
        byPostfix = [i for i, r in enumerate(received) if f" by {POSTFIX_HOST} (Postfix)" in r]
        self.assertEqual(len(byPostfix), 1, received)
        self.assertGreater(byPostfix[0], 0, received)
        self.assertIn("from mx.example.com", received[byPostfix[0]])
        self.assertIn(f"from {POSTFIX_HOST}", received[byPostfix[0] - 1])
        self.assertIn("by mx.b.test", received[byPostfix[0] - 1])
        log = relay.logText()
        self.assertIn(f"relay=127.0.0.1[127.0.0.1]:{b.ports['smtp']}", log)
        self.assertIn("status=sent", log)
        self.assertEqual(relay.queued(), [])

        header = headerOf(delivered, "mx.b.test")
        self.assertIn("spf=pass", header)
        self.assertIn("smtp.mailfrom=alice@example.com", header)
        self.assertIn("dkim=pass header.d=example.com header.s=s1 header.a=rsa-sha256", header)
        self.assertIn(
            "dmarc=pass (p=reject dis=none; aligned DKIM pass) header.from=example.com", header
        )

        # Independent verifiers, on exactly the bytes B delivered.
        records = {k.recordName: k.publicRecord().encode() for k in keys}
        self.assertEqual(dkimpyVerify(delivered, records), [(b"rsa-sha256", True)])

        def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
            return records.get(name.decode().rstrip("."), b"")

        self.assertTrue(dkim.verify(delivered, dnsfunc=dnsfunc))
        # Control: the same copy with its body changed does not verify.
        tampered = delivered.replace(b"Hello.", b"Hullo.")
        self.assertNotEqual(tampered, delivered)
        self.assertFalse(dkim.verify(tampered, dnsfunc=dnsfunc))
        if perlDKIM() is None:
            rows = yield deferToThread(perlVerify, delivered, self.dns.port)
            self.assertEqual(rows, [("example.com", "s1", "rsa-sha256", "pass")])
            rows = yield deferToThread(perlVerify, tampered, self.dns.port)
            self.assertEqual(rows, [("example.com", "s1", "rsa-sha256", "fail")])
