"""
Tests for L{mta.policy.dkimverify}: messages signed here by dkimpy called
directly, with keys made in the test, verified through a L{FakeResolver}.
"""

from __future__ import annotations

import base64
from typing import Any, cast

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mta.dns import NEGATIVE_TTL, Resolver, blockingTXT
from mta.policy import dkimverify
from mta.policy.dkimverify import DKIMResult, DKIMVerifier, PublicKeys, verifyMessage
from mta.testing.fakes import AtOnceReactor, FakeResolver, TXTUpstream
from mta.threads import BlockingRunner

#: The global reactor, as the interfaces the checks ask for.
reactor = cast(Any, _reactor)

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@our.test\r\n"
    b"Subject: hello\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)


def rsaKey(bits: int = 1024) -> tuple[bytes, bytes]:
    """
    @return: a new RSA private key (PEM) and its DKIM key record.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def ed25519Key() -> tuple[bytes, bytes]:
    """
    @return: a new Ed25519 private key (as dkimpy wants it: the base64
        seed) and its DKIM key record (RFC 8463).
    """
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(seed), b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)


def sign(
    message: bytes,
    private: bytes,
    domain: str = "example.test",
    selector: str = "s1",
    algorithm: bytes = b"rsa-sha256",
) -> bytes:
    """
    @return: C{message} with a DKIM-Signature of dkimpy's on top.
    """
    header = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        private,
        signature_algorithm=algorithm,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return cast(bytes, header) + message


class VerifyTests(TestCase):
    """
    L{DKIMVerifier.verify} over a L{FakeResolver}.
    """

    def setUp(self) -> None:
        self.resolver = FakeResolver()
        runner = BlockingRunner(reactor, 2, name="dkim-test")
        runner.startService()
        self.addCleanup(runner.stopService)
        self.verifier = DKIMVerifier(self.resolver, reactor, runner)
        self.rsaPrivate, rsaRecord = rsaKey()
        self.resolver.txt["s1._domainkey.example.test"] = [rsaRecord]

    async def verify(self, message: bytes) -> list[DKIMResult]:
        return await self.verifier.verify(message)

    async def test_rsaPass(self) -> None:
        """
        An rsa-sha256 signature over the message with a published key passes.
        """
        [result] = await self.verify(sign(MESSAGE, self.rsaPrivate))
        self.assertEqual(
            (result.result, result.domain, result.selector, result.algorithm),
            ("pass", "example.test", "s1", "rsa-sha256"),
        )
        self.assertIn(("TXT", "s1._domainkey.example.test"), self.resolver.queries)

    async def test_ed25519Pass(self) -> None:
        """
        An ed25519-sha256 signature (RFC 8463) passes.
        """
        private, record = ed25519Key()
        self.resolver.txt["ed._domainkey.example.test"] = [record]
        signed = sign(MESSAGE, private, selector="ed", algorithm=b"ed25519-sha256")
        [result] = await self.verify(signed)
        self.assertEqual((result.result, result.algorithm), ("pass", "ed25519-sha256"))

    async def test_dualSigned(self) -> None:
        """
        Every signature is verified: one result each, top first.
        """
        private, record = ed25519Key()
        self.resolver.txt["ed._domainkey.example.test"] = [record]
        signed = sign(MESSAGE, self.rsaPrivate)
        signed = sign(signed, private, selector="ed", algorithm=b"ed25519-sha256")
        results = await self.verify(signed)
        self.assertEqual(
            [(r.result, r.selector) for r in results], [("pass", "ed"), ("pass", "s1")]
        )

    async def test_bodyTampered(self) -> None:
        """
        A body changed after signing fails.
        """
        signed = sign(MESSAGE, self.rsaPrivate).replace(b"Hello Bob.", b"Hello Eve.")
        [result] = await self.verify(signed)
        self.assertEqual(result.result, "fail")
        self.assertIn("body hash", result.reason)

    async def test_headerTampered(self) -> None:
        """
        A signed header changed after signing fails.
        """
        signed = sign(MESSAGE, self.rsaPrivate).replace(b"Subject: hello", b"Subject: pay")
        [result] = await self.verify(signed)
        self.assertEqual((result.result, result.reason), ("fail", "signature did not verify"))

    async def test_ed25519Tampered(self) -> None:
        """
        An ed25519 signature over a changed header fails.
        """
        private, record = ed25519Key()
        self.resolver.txt["ed._domainkey.example.test"] = [record]
        signed = sign(MESSAGE, private, selector="ed", algorithm=b"ed25519-sha256")
        [result] = await self.verify(signed.replace(b"Subject: hello", b"Subject: pay"))
        self.assertEqual(result.result, "fail")

    async def test_wrongKey(self) -> None:
        """
        A signature made with another key than the published one fails.
        """
        other, _ = rsaKey()
        [result] = await self.verify(sign(MESSAGE, other))
        self.assertEqual(result.result, "fail")

    async def test_missingKey(self) -> None:
        """
        No key record at the selector is a permerror (RFC 6376 section
        6.1.2: no key for signature).
        """
        [result] = await self.verify(sign(MESSAGE, self.rsaPrivate, selector="gone"))
        self.assertEqual((result.result, result.reason), ("permerror", "no key for signature"))

    async def test_revokedKey(self) -> None:
        """
        A key record with an empty p= (revoked) is a permerror.
        """
        self.resolver.txt["s1._domainkey.example.test"] = [b"v=DKIM1; k=rsa; p="]
        [result] = await self.verify(sign(MESSAGE, self.rsaPrivate))
        self.assertEqual(result.result, "permerror")

    async def test_dnsFailure(self) -> None:
        """
        A key lookup that fails for now is a temperror.
        """
        self.resolver.failing.add("s1._domainkey.example.test")
        [result] = await self.verify(sign(MESSAGE, self.rsaPrivate))
        self.assertEqual((result.result, result.domain), ("temperror", "example.test"))

    async def test_malformedSignature(self) -> None:
        """
        A DKIM-Signature without its required tags is a permerror.
        """
        [result] = await self.verify(b"DKIM-Signature: v=1; a=rsa-sha256; d=x.test\r\n" + MESSAGE)
        self.assertEqual(result.result, "permerror")

    async def test_unsigned(self) -> None:
        """
        A message without signatures gets the single result none.
        """
        self.assertEqual([r.result for r in await self.verify(MESSAGE)], ["none"])


class PublicKeysTests(SynchronousTestCase):
    """
    L{PublicKeys}: a key record is evaluated once and kept as long as the
    resolver keeps its TXT answer; the signature is verified every time.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.upstream = TXTUpstream()
        self.resolver = Resolver(self.clock, upstream=cast(Any, self.upstream))
        self.keys = PublicKeys(self.resolver, clock=self.clock.seconds)
        self.private, record = rsaKey()
        self.publish(record)

    def publish(self, record: bytes, ttl: int = 300) -> None:
        self.upstream.txt["s1._domainkey.example.test"] = (record.decode(), ttl)

    def verify(self, message: bytes) -> list[DKIMResult]:
        return verifyMessage(
            message,
            lambda name: blockingTXT(self.resolver, AtOnceReactor(), name),
            self.keys,
        )

    def test_keptWhileCached(self) -> None:
        """
        Within the TTL a second message's key needs no lookup and its
        signature is still checked (a changed body fails); after it, the
        record is read again and a new key counts.
        """
        signed = sign(MESSAGE, self.private)
        self.assertEqual(self.verify(signed)[0].result, "pass")
        self.assertEqual((self.upstream.queries, len(self.keys)), (1, 1))
        self.assertEqual(self.verify(signed)[0].result, "pass")
        tampered = signed.replace(b"Hello Bob.", b"Hello Eve.")
        self.assertEqual(self.verify(tampered)[0].result, "fail")
        self.assertEqual(self.upstream.queries, 1)
        other, record = rsaKey()
        self.publish(record)
        self.clock.advance(300)
        self.assertEqual(self.verify(signed)[0].result, "fail")
        self.assertEqual(self.upstream.queries, 2)
        self.assertEqual(self.verify(sign(MESSAGE, other))[0].result, "pass")

    def test_wrongKeyKept(self) -> None:
        """
        A usable key that does not match gives C{fail} from the kept key
        as from a fresh one (the record is kept with it).
        """
        _, record = rsaKey()
        self.publish(record)
        signed = sign(MESSAGE, self.private)
        first, second = self.verify(signed)[0], self.verify(signed)[0]
        self.assertEqual((first.result, first.reason), ("fail", "signature did not verify"))
        self.assertEqual(second, first)
        self.assertEqual(self.upstream.queries, 1)

    def test_unusableNotKept(self) -> None:
        """
        No key, a key dkimpy cannot use, or an answer the resolver does
        not keep (TTL 0) keeps nothing.
        """
        signed = sign(MESSAGE, self.private)
        del self.upstream.txt["s1._domainkey.example.test"]
        self.assertEqual(self.verify(signed)[0].result, "permerror")
        self.assertEqual(len(self.keys), 0)
        self.publish(b"v=DKIM1; k=rsa; p=notakey")
        self.clock.advance(NEGATIVE_TTL)
        self.assertEqual(self.verify(signed)[0].result, "permerror")
        self.assertEqual(len(self.keys), 0)
        _, record = rsaKey()
        self.publish(record, ttl=0)
        self.clock.advance(300)
        self.verify(signed)
        self.assertEqual(len(self.keys), 0)

    def test_dkimpyOwnLookups(self) -> None:
        """
        dkimpy's key loading with a lookup of its own (not ours) still
        evaluates the record it is given.
        """
        _, record = rsaKey()
        _pk, keysize, ktag, _ = dkim.load_pk_from_dns(
            b"s1._domainkey.x.test.", lambda n, timeout: record
        )
        self.assertEqual((keysize, ktag), (1024, b"rsa"))
        self.assertIs(dkim.load_pk_from_dns, dkimverify._loadPublicKey)
