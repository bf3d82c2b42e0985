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

A domain's key record is evaluated (parsed, its RSA or Ed25519 key built)
once and kept, with the record, for as long as the resolver keeps the
TXT answer it came from (L{PublicKeys}): with the caches cold, as in a
busy server, looking a key up and evaluating it was about a fifth of the
inbound check.  The signature itself is verified for every message.
"""

from __future__ import annotations

import binascii
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dkim
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads

from mta.dns import DNSNameError, DNSTemporaryError, blockingTXT, keptFor
from mta.interfaces import IBlockingRunner, IDNSResolver
from mta.policy.dkimcanon import install as _installDKIMCanon
from mta.policy.dkimcrypto import install as _installDKIMCrypto
from mta.ttlcache import TTLCache

# dkimpy's RSA on OpenSSL, its canonicalisation without needless regular
# expressions (see mta.policy.dkimcrypto and mta.policy.dkimcanon).
_installDKIMCrypto()
_installDKIMCanon()

#: Shortest RSA key accepted (RFC 8301 section 3.2: 1024 bits at least).
MIN_RSA_BITS = 1024

#: Evaluated keys kept at most by L{PublicKeys}.
KEYS_KEPT = 1024

#: dkimpy's own key loading, as it was before this module replaced it.
DKIMPY_LOAD_PK_FROM_DNS = dkim.load_pk_from_dns


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
    @ivar keys: where evaluated keys are kept, or L{None}.
    """

    def __init__(self, txt: Callable[[str], list[bytes]], keys: PublicKeys | None = None) -> None:
        self._txt = txt
        self.keys = keys
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


class PublicKeys:
    """
    Evaluated DKIM keys, each kept with its record as long as the
    resolver keeps the TXT answer it came from (never one from a TTL-0
    answer, a failed lookup or a record dkimpy cannot use).  Safe on
    several threads.
    """

    def __init__(
        self,
        resolver: IDNSResolver,
        size: int = KEYS_KEPT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param resolver: the resolver the key lookups go to: how long it
            keeps an answer is how long its key is kept.
        @param size: most keys kept, least recently used dropped first.
        @param clock: seconds, for how long a key is kept.
        """
        self._resolver = resolver
        self._kept: TTLCache[bytes, tuple[bytes | None, Any]] = TTLCache(clock, size)

    def load(self, fetcher: _KeyFetcher, name: bytes, timeout: float) -> Any:
        """
        dkimpy's C{load_pk_from_dns} through C{fetcher}, or what it gave
        for C{name} while its answer is still cached.

        @return: dkimpy's C{(pk, keysize, ktag, seqtlsrpt)}.
        @raise dkim.KeyFormatError: as dkimpy's.
        """
        kept = self._kept.get(name)
        if kept is not None:
            fetcher.found, evaluated = kept.value
            return evaluated
        evaluated = dkim.evaluate_pk(name, fetcher(name, timeout=timeout))
        text = name.decode("ascii", "replace").rstrip(".")
        left = keptFor(self._resolver, [("TXT", (text,))])
        if left is not None:
            self._kept.put(name, left, (fetcher.found, evaluated))
        return evaluated

    def __len__(self) -> int:
        return len(self._kept)


def _loadPublicKey(name: bytes, dnsfunc: Any = dkim.get_txt, timeout: float = 5) -> Any:
    """
    dkimpy's C{load_pk_from_dns}, through L{PublicKeys} when the lookup
    is a L{_KeyFetcher} that has them.
    """
    if isinstance(dnsfunc, _KeyFetcher) and dnsfunc.keys is not None:
        return dnsfunc.keys.load(dnsfunc, name, timeout)
    return DKIMPY_LOAD_PK_FROM_DNS(name, dnsfunc, timeout)


dkim.load_pk_from_dns = _loadPublicKey


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


def verifyMessage(
    message: bytes, txt: Callable[[str], list[bytes]], keys: PublicKeys | None = None
) -> list[DKIMResult]:
    """
    Verify every DKIM-Signature of C{message}, blocking: on a worker thread
    only.

    @param txt: looks up TXT records (see L{mta.dns.blockingTXT}); raises
        L{DNSNameError} or L{DNSTemporaryError}.
    @param keys: where evaluated keys are kept, or L{None} to evaluate
        every key again.
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
        fetcher = _KeyFetcher(txt, keys)
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


__all__ = [
    "DKIMPY_LOAD_PK_FROM_DNS",
    "KEYS_KEPT",
    "MIN_RSA_BITS",
    "DKIMResult",
    "DKIMVerifier",
    "PublicKeys",
    "verifyMessage",
]
