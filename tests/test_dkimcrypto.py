"""
Tests for L{mta.policy.dkimcrypto}: OpenSSL's RSA gives dkimpy's answers.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.trial.unittest import SynchronousTestCase

from mta.policy import dkimcrypto

MESSAGE = (
    b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n"
    b"Date: Wed, 02 Dec 2026 00:00:00 +0000\r\n\r\nbody line\r\n"
)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _keyRecord(key: rsa.RSAPrivateKey) -> bytes:
    import base64

    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


class PrimitivesTests(SynchronousTestCase):
    """
    L{dkimcrypto.rsassaSign} and L{dkimcrypto.rsassaVerify} against dkimpy's
    pure-Python primitives, on dkimpy's parsed keys.
    """

    keys: ClassVar[dict[int, rsa.RSAPrivateKey]] = {}

    def key(self, bits: int) -> rsa.RSAPrivateKey:
        if bits not in self.keys:
            self.keys[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        return self.keys[bits]

    def parsed(self, bits: int) -> tuple[dict[str, int], dict[str, int]]:
        private = dkim.crypto.parse_pem_private_key(_pem(self.key(bits)))
        public = {"modulus": private["modulus"], "publicExponent": private["publicExponent"]}
        return private, public

    def test_signSameBytes(self) -> None:
        """
        PKCS#1 v1.5 is deterministic: the signature is byte for byte
        dkimpy's, for SHA-256 and SHA-1, 1024- and 2048-bit keys.
        """
        for bits in (1024, 2048):
            private, _ = self.parsed(bits)
            for name in ("sha256", "sha1"):
                data = f"{bits} {name}".encode()
                ours = dkimcrypto.rsassaSign(hashlib.new(name, data), private)
                theirs = dkim.crypto.RSASSA_PKCS1_v1_5_sign(hashlib.new(name, data), private)
                self.assertEqual(ours, bytes(theirs))

    def test_verifyAgreesWithDkimpy(self) -> None:
        """
        A good signature verifies with both; a changed signature, a changed
        hash, a truncated or over-long signature, and a signature by another
        key, with neither.
        """
        private, public = self.parsed(2048)
        _, otherPublic = self.parsed(1024)
        good = bytes(dkim.crypto.RSASSA_PKCS1_v1_5_sign(hashlib.sha256(b"x"), private))
        flipped = bytes([good[0] ^ 1]) + good[1:]
        cases = [
            (b"x", good, public, True),
            (b"y", good, public, False),
            (b"x", flipped, public, False),
            (b"x", good[1:], public, False),
            (b"x", good + b"\0", public, False),
            (b"x", good, otherPublic, False),
        ]
        for data, signature, key, expected in cases:
            ours = dkimcrypto.rsassaVerify(hashlib.sha256(data), signature, key)
            theirs = dkim.crypto.RSASSA_PKCS1_v1_5_verify(hashlib.sha256(data), signature, key)
            self.assertEqual((ours, theirs), (expected, expected))

    def test_digestTooLarge(self) -> None:
        """
        A modulus too short for the DigestInfo raises dkimpy's
        C{DigestTooLargeError}, signing and verifying, as dkimpy's own do.
        """
        private, _ = self.parsed(1024)
        # A 384-bit modulus: 48 bytes, less than 19 + 32 + 11.
        tiny = {"modulus": (1 << 383) + 1, "publicExponent": 65537}
        for f in (dkimcrypto.rsassaVerify, dkim.crypto.RSASSA_PKCS1_v1_5_verify):
            self.assertRaises(
                dkim.crypto.DigestTooLargeError, f, hashlib.sha256(b"x"), b"\1" * 48, tiny
            )
        small = dict(private, modulus=tiny["modulus"])
        self.assertRaises(
            dkim.crypto.DigestTooLargeError, dkimcrypto.rsassaSign, hashlib.sha256(b"x"), small
        )

    def test_unusableExponent(self) -> None:
        """
        Numbers OpenSSL refuses as a key (an even exponent) verify nothing.
        """
        _, public = self.parsed(1024)
        bad = dict(public, publicExponent=65536)
        self.assertFalse(dkimcrypto.rsassaVerify(hashlib.sha256(b"x"), b"\1" * 128, bad))

    def test_hostileKeyNumbers(self) -> None:
        """
        Key numbers from DNS that OpenSSL will not use (a 1001-bit exponent,
        a 20,000-bit modulus: dkimpy's own arithmetic would grind through
        them) verify nothing.
        """
        _, public = self.parsed(2048)
        hugeExponent = dict(public, publicExponent=(1 << 1000) + 1)
        self.assertFalse(dkimcrypto.rsassaVerify(hashlib.sha256(b"x"), b"\1" * 256, hugeExponent))
        hugeModulus = {"modulus": (1 << 19999) + 1, "publicExponent": 65537}
        self.assertFalse(dkimcrypto.rsassaVerify(hashlib.sha256(b"x"), b"\1" * 2500, hugeModulus))


class KeyParseTests(SynchronousTestCase):
    """
    L{dkimcrypto.parsePublicKey} and L{dkimcrypto.parsePrivateKey}: dkimpy's
    parsers, remembered.
    """

    def setUp(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def test_publicKeySameNumbers(self) -> None:
        """
        The numbers are dkimpy's; the same bytes give the same read-only
        mapping.
        """
        parsed = dkimcrypto.parsePublicKey(self.der)
        self.assertEqual(dict(parsed), dkim.crypto.parse_public_key(self.der))
        self.assertIs(dkimcrypto.parsePublicKey(bytes(self.der)), parsed)
        self.assertNotIsInstance(parsed, dict)
        with self.assertRaises(TypeError):
            parsed["modulus"] = 1  # type: ignore[index]

    def test_privateKeySameNumbers(self) -> None:
        """
        Likewise for a PEM private key.
        """
        pem = _pem(self.key)
        parsed = dkimcrypto.parsePrivateKey(pem)
        self.assertEqual(dict(parsed), dkim.crypto.parse_pem_private_key(pem))
        self.assertIs(dkimcrypto.parsePrivateKey(pem), parsed)

    def test_garbageRaisesEachTime(self) -> None:
        """
        Bytes that are no key raise dkimpy's error, every time.
        """
        for _ in range(2):
            self.assertRaises(
                dkim.crypto.UnparsableKeyError, dkimcrypto.parsePublicKey, b"\x30\x03garbage"
            )
            self.assertRaises(
                dkim.crypto.UnparsableKeyError, dkimcrypto.parsePrivateKey, b"no key here"
            )


class InstalledTests(SynchronousTestCase):
    """
    With L{dkimcrypto.install} in effect (importing the verifier or the
    signer installs it), C{dkim.sign} and C{dkim.verify} use it and keep
    their results.
    """

    def setUp(self) -> None:
        import mta.policy.dkimverify  # noqa: F401  (installs)

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.record = _keyRecord(self.key)

    def dns(self, name: bytes, timeout: float = 5) -> bytes:
        return self.record

    def test_installed(self) -> None:
        """
        dkimpy's module names point at ours.
        """
        dkimcrypto.install()
        self.assertIs(dkim.RSASSA_PKCS1_v1_5_verify, dkimcrypto.rsassaVerify)
        self.assertIs(dkim.RSASSA_PKCS1_v1_5_sign, dkimcrypto.rsassaSign)
        self.assertIs(dkim.parse_public_key, dkimcrypto.parsePublicKey)
        self.assertIs(dkim.parse_pem_private_key, dkimcrypto.parsePrivateKey)

    def test_roundTrip(self) -> None:
        """
        A message signed through dkimpy verifies; changed, it does not.
        """
        signature = dkim.sign(MESSAGE, b"s", b"example.org", _pem(self.key))
        self.assertTrue(dkim.verify(signature + MESSAGE, dnsfunc=self.dns))
        self.assertFalse(dkim.verify(signature + MESSAGE.replace(b"hi", b"ho"), dnsfunc=self.dns))

    def test_pureSignatureVerifies(self) -> None:
        """
        A signature made by dkimpy's pure-Python signer verifies with ours
        in place.
        """
        dkim.RSASSA_PKCS1_v1_5_sign = dkim.crypto.RSASSA_PKCS1_v1_5_sign
        try:
            pure = dkim.sign(MESSAGE, b"s", b"example.org", _pem(self.key))
        finally:
            dkimcrypto.install()
        self.assertTrue(dkim.verify(pure + MESSAGE, dnsfunc=self.dns))
