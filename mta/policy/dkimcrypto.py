# -*- test-case-name: tests.test_dkimcrypto -*-
"""
dkimpy's RSA arithmetic on OpenSSL.

dkimpy (1.1) parses, canonicalises and hashes well, but does its RSA in
pure Python: a modular exponentiation with Python integers and byte-by-byte
integer/byte-string conversions.  Measured in-process on a 2 KB message
signed with a 2048-bit key, that arithmetic was about 60 % of
C{dkim.verify} (0.71 -> 0.41 ms a message once it ran on OpenSSL), and an
RSA signature (a private-key operation, in Python) took milliseconds.
Every inbound message is verified and every outbound one signed, so this
module gives dkimpy the two RSASSA-PKCS1-v1_5 primitives (RFC 8017 section
8.2) it calls, done by C{cryptography} (a core dependency), with the same
contract:

  - L{rsassaVerify} takes the hash object, the signature and the public
    key as dkimpy parsed it (C{modulus}, C{publicExponent}), answers
    L{True} or L{False}, and raises C{DigestTooLargeError} where dkimpy's
    does (a modulus too short for the DigestInfo);
  - L{rsassaSign} takes the hash object and the private key as dkimpy
    parsed it and returns the same bytes dkimpy's would (PKCS#1 v1.5
    signatures are deterministic), raising C{DigestTooLargeError} likewise.

Everything else stays dkimpy's: the tag parsing, canonicalisation, header
selection, hashing and key-record evaluation.  L{install} puts the two
functions where C{dkim.DKIM} looks them up (the names its module imported
from C{dkim.crypto}); the tests check both give dkimpy's own answers.
Keys are kept, by their numbers, in small LRU caches: building an OpenSSL
key costs more than the verification.

dkimpy also parses the key again for every message, with its own
pure-Python ASN.1 reader: the public key of each C{DKIM-Signature} from
its DNS record (about 15 % of a verification, in-process), the private key
from its PEM for every signature made.  L{install} wraps both parsers
(C{parse_public_key}, C{parse_pem_private_key}) in small LRU caches keyed
by the key's bytes, handing out read-only mappings: the same bytes always
parse to the same numbers, and a record that changes is new bytes.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping
from typing import Any

import dkim
import dkim.crypto
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

#: The length of each hash's DER DigestInfo prefix (RFC 8017 section 9.2,
#: note 1): the prefix and the digest must fit the modulus with 11 bytes
#: of padding to spare.
_DIGEST_INFO_PREFIX: dict[str, tuple[hashes.HashAlgorithm, int]] = {
    "sha1": (hashes.SHA1(), 15),
    "sha256": (hashes.SHA256(), 19),
}


def _algorithm(hash: Any, modulus: int) -> hashes.HashAlgorithm:
    """
    @return: the C{cryptography} algorithm of C{hash} (a hashlib object, or
        dkimpy's C{HashThrough} around one).
    @raise dkim.crypto.DigestTooLargeError: the DigestInfo does not fit
        the modulus, as dkimpy's C{EMSA_PKCS1_v1_5_encode} raises it.
    """
    algorithm, prefix = _DIGEST_INFO_PREFIX[hash.name.lower()]
    if prefix + algorithm.digest_size + 11 > (modulus.bit_length() + 7) // 8:
        raise dkim.crypto.DigestTooLargeError()
    return algorithm


@functools.lru_cache(maxsize=256)
def _publicKey(modulus: int, exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


@functools.lru_cache(maxsize=64)
def _privateKey(
    modulus: int,
    publicExponent: int,
    privateExponent: int,
    prime1: int,
    prime2: int,
    exponent1: int,
    exponent2: int,
    coefficient: int,
) -> rsa.RSAPrivateKey:
    numbers = rsa.RSAPrivateNumbers(
        p=prime1,
        q=prime2,
        d=privateExponent,
        dmp1=exponent1,
        dmq1=exponent2,
        iqmp=coefficient,
        public_numbers=rsa.RSAPublicNumbers(publicExponent, modulus),
    )
    return numbers.private_key()


def rsassaVerify(hash: Any, signature: bytes, publicKey: Mapping[str, int]) -> bool:
    """
    RSASSA-PKCS1-v1_5 verification, as C{dkim.crypto.RSASSA_PKCS1_v1_5_verify}.

    @param hash: the hash of the signed data (not yet finalised).
    @param signature: the signature, as decoded from C{b=}.
    @param publicKey: C{modulus} and C{publicExponent}.
    @return: whether C{signature} is that of C{hash} under C{publicKey}.
    """
    modulus = publicKey["modulus"]
    algorithm = _algorithm(hash, modulus)
    try:
        key = _publicKey(modulus, publicKey["publicExponent"])
    except ValueError:
        # OpenSSL refuses the numbers (an even or tiny exponent, say):
        # no signature can be shown to be made with such a key.
        return False
    try:
        key.verify(bytes(signature), hash.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))
    except InvalidSignature:
        return False
    return True


def rsassaSign(hash: Any, privateKey: Mapping[str, int]) -> bytes:
    """
    RSASSA-PKCS1-v1_5 signing, as C{dkim.crypto.RSASSA_PKCS1_v1_5_sign}.

    @param hash: the hash of the data to sign (not yet finalised).
    @param privateKey: the key as C{dkim.crypto.parse_pem_private_key}
        returns it.
    @return: the signature, as long as the modulus.
    """
    algorithm = _algorithm(hash, privateKey["modulus"])
    key = _privateKey(
        privateKey["modulus"],
        privateKey["publicExponent"],
        privateKey["privateExponent"],
        privateKey["prime1"],
        privateKey["prime2"],
        privateKey["exponent1"],
        privateKey["exponent2"],
        privateKey["coefficient"],
    )
    return key.sign(hash.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))


@functools.lru_cache(maxsize=256)
def parsePublicKey(data: bytes) -> Mapping[str, int]:
    """
    C{dkim.crypto.parse_public_key}, remembered.

    @param data: the DER of a DKIM key record's C{p=}.
    @return: its C{modulus} and C{publicExponent}, read-only.
    @raise dkim.crypto.UnparsableKeyError: as dkimpy's (never remembered).
    """
    return types.MappingProxyType(dkim.crypto.parse_public_key(data))


@functools.lru_cache(maxsize=64)
def parsePrivateKey(data: bytes) -> Mapping[str, int]:
    """
    C{dkim.crypto.parse_pem_private_key}, remembered.

    @param data: a PEM private key.
    @return: its numbers, read-only.
    @raise dkim.crypto.UnparsableKeyError: as dkimpy's (never remembered).
    """
    return types.MappingProxyType(dkim.crypto.parse_pem_private_key(data))


def install() -> None:
    """
    Have dkimpy's signing and verification use L{rsassaSign},
    L{rsassaVerify}, L{parsePublicKey} and L{parsePrivateKey}.  Idempotent.
    """
    dkim.RSASSA_PKCS1_v1_5_verify = rsassaVerify
    dkim.RSASSA_PKCS1_v1_5_sign = rsassaSign
    dkim.parse_public_key = parsePublicKey
    dkim.parse_pem_private_key = parsePrivateKey


__all__ = ["install", "parsePrivateKey", "parsePublicKey", "rsassaSign", "rsassaVerify"]
