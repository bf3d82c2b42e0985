# -*- test-case-name: tests.test_dkimsign -*-
"""
DKIM signing of outbound mail (RFC 6376, RFC 8463), as an L{IPolicyCheck}.

At end of data, mail from authenticated users and from trusted networks
(never mail from the internet on the MX listener) is signed when the
domain of its C{From} header (of the envelope sender when it has no
C{From}) has a key in the L{KeyStore}: one C{DKIM-Signature} per signing
key (so RSA and Ed25519 keys of a domain dual-sign), relaxed/relaxed, and
C{From}, C{To}, C{Subject} and C{Date} over-signed (listed once more than
they occur) so that none can be added in transit.  The check runs last in
the chain: the signature is the header added on top, under the trace
header only.

Keys are read on the L{IBlockingRunner}, once, and again when a file under
C{data_dir/dkim} changes (looked at, at most once per C{reloadInterval});
signing (dkimpy) runs there too.  A failure never loses the message: it
is logged, and the message accepted unsigned.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dkim
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mta.config import IPNetwork
from mta.dkimkeys import DKIMKey, KeyStore, normalizeDomain
from mta.envelope import Envelope
from mta.interfaces import IBlockingRunner
from mta.policy.base import ACCEPT, PolicyCheck, Session, Verdict
from mta.policy.dkimcanon import install as _installDKIMCanon
from mta.policy.dkimcrypto import install as _installDKIMCrypto
from mta.policy.sender import fromAddresses, headerBlock
from mta.protocol import parseIP

_log = Logger(namespace="mta.dkim")

# dkimpy's RSA on OpenSSL, its canonicalisation without needless regular
# expressions (see mta.policy.dkimcrypto and mta.policy.dkimcanon).
_installDKIMCrypto()
_installDKIMCanon()

#: The header fields signed when present, in this order (RFC 6376 5.4.1);
#: any C{List-*} field present is signed as well.
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-language",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
)

#: Fields listed once more than they occur, so that one more (or, when
#: absent, a first one) added later breaks the signature (RFC 6376 8.15).
OVERSIGNED_HEADERS: frozenset[str] = frozenset({"from", "to", "subject", "date"})

#: dkimpy's name for each key algorithm's signature algorithm.
_SIGNATURE_ALGORITHM = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}

_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


def headerNames(data: bytes) -> list[str]:
    """
    @return: the names of the header fields of C{data}, lower case, in
        order (continuation lines are not fields).
    """
    return [m.group(1).decode("ascii").lower() for m in _FIELD_NAME.finditer(headerBlock(data))]


def includeHeaders(present: Sequence[str], signed: Sequence[str] = SIGNED_HEADERS) -> list[bytes]:
    """
    Choose the C{h=} list.

    @param present: the message's field names, lower case (L{headerNames}).
    @param signed: the names to sign when present.
    @return: each name of C{signed} once per occurrence (once more for an
        over-signed name, so also once when it is absent), then every
        C{List-*} field not named in C{signed}.
    """
    counts: dict[str, int] = {}
    for name in present:
        counts[name] = counts.get(name, 0) + 1
    names = list(dict.fromkeys(n.lower() for n in signed))
    names += sorted({n for n in counts if n.startswith("list-") and n not in names})
    out: list[bytes] = []
    for name in names:
        times = counts.get(name, 0) + (1 if name in OVERSIGNED_HEADERS else 0)
        out += [name.encode("ascii")] * times
    return out


def signingDomain(envelope: Envelope, data: bytes) -> str | None:
    """
    @return: the domain whose key signs the message: the domain of its
        (first) C{From} address, or of the envelope sender when there is
        no C{From}; C{None} when there is none, or it cannot be read.
    """
    addresses = fromAddresses(data)
    if addresses is None:
        return None
    if addresses:
        local, at, domain = addresses[0].rpartition("@")
        if not (local and at):
            return None
    elif not envelope.sender.isNull:
        domain = envelope.sender.domain
    else:
        return None
    try:
        return normalizeDomain(domain)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Key:
    """
    A signing key, read: its L{DKIMKey} and the secret C{dkim.sign} takes.
    """

    key: DKIMKey
    secret: bytes


class LoadedKeys:
    """
    The signing keys of every domain, read once and re-read when the key
    files change.  L{refresh} blocks (run it on the runner); the rest is
    answered from memory, from any thread.

    @ivar problems: one line per key file that could not be read at the
        last load.
    """

    def __init__(
        self,
        store: KeyStore,
        reloadInterval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param reloadInterval: look at the files at most this often.
        """
        self.store = store
        self._interval = reloadInterval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._checkedAt: float | None = None
        self._seen: tuple[tuple[str, int, int, int], ...] | None = None
        self._byDomain: dict[str, tuple[_Key, ...]] = {}
        self.problems: list[str] = []

    def fresh(self) -> bool:
        """
        @return: whether the files were looked at within the interval.
        """
        checked = self._checkedAt
        return checked is not None and self._monotonic() - checked < self._interval

    def hasKeys(self, domain: str) -> bool:
        """
        @return: whether C{domain} had a signing key at the last look.
        """
        return domain in self._byDomain

    def keysFor(self, domain: str) -> tuple[_Key, ...]:
        """
        @return: C{domain}'s signing keys as last loaded.
        """
        return self._byDomain.get(domain, ())

    def _fingerprint(self) -> tuple[tuple[str, int, int, int], ...]:
        """
        @return: every key file with its inode, size and modification time.
        """
        stats = []
        onDisk = self.store.keys()
        for key in onDisk:
            try:
                st = key.path.stat()
            except OSError:
                continue
            stats.append((str(key.path), st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stats)

    def refresh(self) -> bool:
        """
        Re-read the keys if the interval has passed and a file changed
        (blocking).

        @return: whether the keys were (re)loaded.
        """
        with self._lock:
            if self.fresh():
                return False
            seen = self._fingerprint()
            self._checkedAt = self._monotonic()
            if seen == self._seen:
                return False
            byDomain: dict[str, tuple[_Key, ...]] = {}
            problems = []
            onDisk = self.store.keys()
            for domain in sorted({k.domain for k in onDisk}):
                loaded = []
                for key in self.store.signingKeys(domain):
                    try:
                        loaded.append(_Key(key, key.signingSecret()))
                    except (OSError, ValueError, TypeError) as e:
                        problems.append(f"{key.path}: cannot be used: {e}")
                if loaded:
                    byDomain[domain] = tuple(loaded)
            self._byDomain = byDomain
            self._seen = seen
            self.problems = problems
            return True


@dataclass(frozen=True)
class _Signed:
    """
    What signing on the runner gives back to the reactor thread: the
    headers, and what went wrong (logged there).
    """

    headers: tuple[str, ...]
    selectors: tuple[str, ...]
    errors: tuple[str, ...]
    reloaded: bool
    problems: tuple[str, ...]


class DKIMSigner(PolicyCheck):
    """
    Signs submitted and trusted mail at end of data.
    """

    def __init__(
        self,
        keys: LoadedKeys,
        runner: IBlockingRunner,
        trustedNetworks: Iterable[IPNetwork],
        headers: Sequence[str] = SIGNED_HEADERS,
    ) -> None:
        """
        @param keys: the signing keys.
        @param runner: where keys are read and messages signed.
        @param trustedNetworks: clients whose mail is signed without AUTH.
        @param headers: the fields to sign when present (C{[dkim] headers}).
        """
        self._keys = keys
        self._runner = runner
        self._networks = tuple(trustedNetworks)
        self._headers = tuple(headers)

    def _mayBeSigned(self, session: Session) -> bool:
        """
        @return: whether the client's mail is ours to sign: an
            authenticated user's, or a trusted network's.
        """
        if session.authUser:
            return True
        ip = parseIP(session.peer)
        return ip is not None and any(ip in net for net in self._networks)

    def checkMessage(
        self, session: Session, envelope: Envelope, data: bytes
    ) -> Verdict | Deferred[Verdict]:
        """
        Sign the message if it is ours and its domain has a key.
        """
        if not self._mayBeSigned(session):
            return ACCEPT
        domain = signingDomain(envelope, data)
        if domain is None:
            return ACCEPT
        if self._keys.fresh() and not self._keys.hasKeys(domain):
            return ACCEPT
        d = self._runner.run(self._sign, domain, data)
        return d.addCallbacks(
            self._signed, self._failed, callbackArgs=(envelope, domain), errbackArgs=(envelope,)
        )

    def _sign(self, domain: str, data: bytes) -> _Signed:
        """
        Reload the keys if they changed, then sign with each of
        C{domain}'s (blocking; on the runner).
        """
        reloaded = self._keys.refresh()
        headers, selectors, errors = [], [], []
        include = includeHeaders(headerNames(data), self._headers)
        for loaded in self._keys.keysFor(domain):
            key = loaded.key
            try:
                signature = dkim.sign(
                    data,
                    key.selector.encode("ascii"),
                    key.domain.encode("ascii"),
                    loaded.secret,
                    canonicalize=(b"relaxed", b"relaxed"),
                    signature_algorithm=_SIGNATURE_ALGORITHM[key.algorithm],
                    include_headers=include,
                )
            except Exception as e:
                errors.append(f"{key.selector}: {e}")
                continue
            headers.append(signature.decode("ascii").removesuffix("\r\n"))
            selectors.append(key.selector)
        return _Signed(
            tuple(headers),
            tuple(selectors),
            tuple(errors),
            reloaded,
            tuple(self._keys.problems) if reloaded else (),
        )

    def _signed(self, result: _Signed, envelope: Envelope, domain: str) -> Verdict:
        """
        Log what happened on the runner (on the reactor thread) and add
        the signatures.
        """
        for problem in result.problems:
            _log.warn("dkim: {problem}", problem=problem)
        if result.reloaded:
            _log.info("dkim: signing keys loaded from {path}", path=str(self._keys.store.path))
        for error in result.errors:
            _log.warn(
                "dkim: id={id} d={domain} signing failed, sent unsigned by that key: {error}",
                id=envelope.queueId,
                domain=domain,
                error=error,
            )
        if not result.headers:
            return ACCEPT
        _log.info(
            "dkim: id={id} signed d={domain} s={selectors}",
            id=envelope.queueId,
            domain=domain,
            selectors=",".join(result.selectors),
        )
        return Verdict(headers=result.headers)

    def _failed(self, failure: Failure, envelope: Envelope) -> Verdict:
        """
        Signing broke: the message goes out unsigned rather than not at all.
        """
        _log.failure("dkim: id={id} not signed", failure, id=envelope.queueId)
        return ACCEPT


__all__ = [
    "OVERSIGNED_HEADERS",
    "SIGNED_HEADERS",
    "DKIMSigner",
    "LoadedKeys",
    "headerNames",
    "includeHeaders",
    "signingDomain",
]
