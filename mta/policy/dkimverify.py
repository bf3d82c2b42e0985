# -*- test-case-name: tests.test_dkimverify -*-
"""
DKIM verification (RFC 6376) of every signature on a message, rsa-sha256
and ed25519-sha256 (RFC 8463) alike.

The verification is dkimpy's.  It hashes, does public-key crypto and looks
keys up synchronously, so it runs on an L{IBlockingRunner} worker thread,
and its C{dnsfunc} is L{mta.dns.blockingTXT}: the key lookups reach the
reactor-side L{mta.interfaces.IDNSResolver}, never dkimpy's own resolver.

Each signature gets one RFC 8601 result:

  - C{pass}: it verifies;
  - C{fail}: it does not (the body hash or the signature does not match);
  - C{permerror}: it cannot ever verify (malformed signature, no key
    published, a key that cannot be used: RFC 6376 section 6.1.2's
    PERMFAIL cases);
  - C{temperror}: the key lookup failed for now (RFC 6376 TEMPFAIL).

A message without signatures gets the single result C{none}.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dkim
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads

from mta.dns import DNSNameError, DNSTemporaryError, blockingTXT
from mta.interfaces import IBlockingRunner, IDNSResolver
from mta.policy.dkimcanon import install as _installDKIMCanon
from mta.policy.dkimcrypto import install as _installDKIMCrypto

# dkimpy's RSA on OpenSSL, its canonicalisation without needless regular
# expressions (see mta.policy.dkimcrypto and mta.policy.dkimcanon).
_installDKIMCrypto()
_installDKIMCanon()

#: Shortest RSA key accepted (RFC 8301 section 3.2: 1024 bits at least).
MIN_RSA_BITS = 1024


@dataclass(frozen=True)
class DKIMResult:
    """
    The outcome for one signature (or C{none} for an unsigned message).

    @ivar result: C{pass}, C{fail}, C{permerror}, C{temperror} or C{none}.
    @ivar domain: the signing domain (C{d=}), C{""} when unknown.
    @ivar selector: the selector (C{s=}), C{""} when unknown.
    @ivar algorithm: the C{a=} tag, e.g. C{rsa-sha256}.
    @ivar b: the first eight characters of the signature (C{header.b},
        RFC 6008), to tell several signatures of one domain apart.
    @ivar reason: why, in words.
    """

    result: str
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    b: str = ""
    reason: str = ""


class _KeyLookupFailed(Exception):
    """
    A key lookup failed for now; raised through dkimpy to the caller.
    """


class _KeyFetcher:
    """
    dkimpy's C{dnsfunc}: fetches keys with C{txt} and remembers what it saw.

    @ivar found: the key record of the last lookup, or L{None} when no
        record was found.
    """

    def __init__(self, txt: Callable[[str], list[bytes]]) -> None:
        self._txt = txt
        self.found: bytes | None = None

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        self.found = None
        try:
            records = self._txt(text.rstrip("."))
        except DNSNameError:
            return b""
        except DNSTemporaryError as e:
            raise _KeyLookupFailed(str(e)) from None
        if not records:
            return b""
        self.found = records[0]
        return records[0]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return "" if value is None else str(value)


def _signatureTags(verifier: Any) -> tuple[str, str, str, str]:
    """
    @return: C{(d, s, a, b)} of the signature C{verifier} last looked at.
    """
    fields: dict[bytes, bytes] = getattr(verifier, "signature_fields", {}) or {}
    b = re.sub(rb"\s+", b"", fields.get(b"b", b""))[:8]
    return (
        _text(fields.get(b"d", b"")).lower(),
        _text(fields.get(b"s", b"")),
        _text(fields.get(b"a", b"")),
        _text(b),
    )


def verifyMessage(message: bytes, txt: Callable[[str], list[bytes]]) -> list[DKIMResult]:
    """
    Verify every DKIM-Signature of C{message}, blocking: on a worker thread
    only.

    @param txt: looks up TXT records (see L{mta.dns.blockingTXT}); raises
        L{DNSNameError} or L{DNSTemporaryError}.
    @return: one result per signature, top first; C{[none]} when there is
        none.
    """
    try:
        verifier = dkim.DKIM(message, minkey=MIN_RSA_BITS)
    except dkim.DKIMException as e:
        return [DKIMResult("permerror", reason=f"message cannot be parsed: {e}")]
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    if count == 0:
        return [DKIMResult("none", reason="message not signed")]
    results = []
    for idx in range(count):
        fetcher = _KeyFetcher(txt)
        verifier.signature_fields = {}
        try:
            ok = verifier.verify(idx=idx, dnsfunc=fetcher)
        except _KeyLookupFailed as e:
            results.append(DKIMResult("temperror", *_signatureTags(verifier), reason=f"{e}"))
            continue
        except dkim.ValidationError as e:
            why = str(e)
            result = "fail" if why.startswith("body hash mismatch") else "permerror"
            if result == "fail":
                why = "body hash did not verify"
            results.append(DKIMResult(result, *_signatureTags(verifier), reason=why))
            continue
        except (dkim.DKIMException, ValueError, TypeError, IndexError, KeyError) as e:
            results.append(DKIMResult("permerror", *_signatureTags(verifier), reason=f"{e}"))
            continue
        tags = _signatureTags(verifier)
        if ok:
            results.append(DKIMResult("pass", *tags))
        elif fetcher.found is None:
            results.append(DKIMResult("permerror", *tags, reason="no key for signature"))
        elif not _usableKey(fetcher.found):
            results.append(DKIMResult("permerror", *tags, reason="key unusable"))
        else:
            results.append(DKIMResult("fail", *tags, reason="signature did not verify"))
    return results


def _usableKey(record: bytes) -> bool:
    """
    @return: whether dkimpy can use the key record C{record}.
    """
    try:
        dkim.evaluate_pk(b"key", record)
    except (dkim.DKIMException, ValueError, TypeError, binascii.Error):
        return False
    return True


class DKIMVerifier:
    """
    Verifies DKIM signatures off the reactor thread.
    """

    def __init__(
        self, resolver: IDNSResolver, reactor: IReactorFromThreads, runner: IBlockingRunner
    ) -> None:
        """
        @param resolver: answers the key lookups (from the reactor thread).
        @param reactor: runs those lookups for the worker thread.
        @param runner: runs dkimpy.
        """
        self._resolver = resolver
        self._reactor = reactor
        self._runner = runner

    def _txt(self, name: str) -> list[bytes]:
        return blockingTXT(self._resolver, self._reactor, name)

    def verify(self, message: bytes) -> Deferred[list[DKIMResult]]:
        """
        @return: the results of L{verifyMessage} for C{message}.
        """
        return self._runner.run(verifyMessage, message, self._txt)


__all__ = ["MIN_RSA_BITS", "DKIMResult", "DKIMVerifier", "verifyMessage"]
