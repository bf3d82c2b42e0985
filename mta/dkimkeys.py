# -*- test-case-name: tests.test_dkimkeys -*-
"""
The DKIM key store: the private keys outbound mail is signed with.

Layout under C{data_dir/dkim/} (folders 0700, keys 0600)::

    dkim/
      example.com/
        s202607.rsa.pem        PKCS#1 PEM, RSA-2048
        e202607.ed25519.pem    PKCS#8 PEM, Ed25519 (RFC 8463)

One folder per domain (lower case, A-labels), one file per selector named
C{SELECTOR.ALGORITHM.pem}.  Other files are ignored.  A selector is used
once per domain, whatever its algorithm (the DNS name is the same).

The default selector is dated: C{s} (RSA) or C{e} (Ed25519) followed by
the year and month, e.g. C{s202607}; rotating within the same month needs
C{--selector}.

Which keys sign: per domain, the newest key (by file modification time)
of each algorithm, so a domain with an RSA and an Ed25519 key is
dual-signed, and a new RSA key takes over from the old one (which may then
be deleted once the new record is published and the old mail delivered).

Everything here blocks (file I/O, key generation): the server calls it on
its L{mta.interfaces.IBlockingRunner}, the admin command directly.
"""

from __future__ import annotations

import base64
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

#: The algorithms a key may have (the C{k=} tag of its record).
ALGORITHMS = ("rsa", "ed25519")

#: RSA key size for new keys (RFC 8301: at least 1024, 2048 recommended).
RSA_BITS = 2048

#: The longest character-string in a DNS TXT record (RFC 1035 3.3).
TXT_STRING_MAX = 255

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_SELECTOR = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$|^{_LABEL}$")
_KEYFILE = re.compile(r"^(?P<selector>[^/]+)\.(?P<algorithm>rsa|ed25519)\.pem$")


def normalizeDomain(domain: str) -> str:
    """
    @return: C{domain} lower case, without a trailing dot, as A-labels.
    @raise ValueError: not a domain name.
    """
    name = domain.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{domain!r} is not a domain name") from None
    if len(name) > 253 or not _DOMAIN.match(name):
        raise ValueError(f"{domain!r} is not a domain name")
    return name


def checkSelector(selector: str) -> str:
    """
    @return: C{selector}, lower case.
    @raise ValueError: not usable as a selector (one or more DNS labels).
    """
    name = selector.strip().lower()
    if len(name) > 63 * 2 or not _SELECTOR.match(name):
        raise ValueError(f"{selector!r} is not a valid selector (letters, digits, '-', '.')")
    return name


def defaultSelector(algorithm: str = "rsa", now: float | None = None) -> str:
    """
    @return: the dated default selector: C{s} (RSA) or C{e} (Ed25519),
        then the year and month (UTC) of C{now}, e.g. C{s202607}.
    """
    stamp = time.strftime("%Y%m", time.gmtime(time.time() if now is None else now))
    return ("e" if algorithm == "ed25519" else "s") + stamp


@dataclass(frozen=True)
class DKIMKey:
    """
    One private key on disk.

    @ivar domain: the signing domain (C{d=}), lower case, A-labels.
    @ivar selector: the selector (C{s=}).
    @ivar algorithm: C{"rsa"} or C{"ed25519"}.
    @ivar path: the PEM file, mode 0600.
    """

    domain: str
    selector: str
    algorithm: str
    path: Path

    @property
    def recordName(self) -> str:
        """
        @return: where the public record is published,
            C{SELECTOR._domainkey.DOMAIN}, without the trailing dot.
        """
        return f"{self.selector}._domainkey.{self.domain}"

    def privateKey(self) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
        """
        Read the key file (blocking).

        @raise ValueError: the file is not a key of this key's algorithm.
        @raise OSError: the file cannot be read.
        """
        key = serialization.load_pem_private_key(self.path.read_bytes(), password=None)
        wanted = rsa.RSAPrivateKey if self.algorithm == "rsa" else ed25519.Ed25519PrivateKey
        if not isinstance(key, wanted):
            raise ValueError(f"{self.path}: not an {self.algorithm} private key")
        return key

    def signingSecret(self) -> bytes:
        """
        Read the key file (blocking).

        @return: the key as C{dkim.sign} takes it: the PEM for RSA, the
            base64 of the 32-byte private key for Ed25519.
        """
        key = self.privateKey()
        if isinstance(key, ed25519.Ed25519PrivateKey):
            raw = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            return base64.b64encode(raw)
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def publicKey(self) -> str:
        """
        Read the key file (blocking).

        @return: the C{p=} value: base64 of the DER SubjectPublicKeyInfo
            for RSA, of the raw 32-byte public key for Ed25519 (RFC 8463).
        """
        public = self.privateKey().public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            der = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            der = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return base64.b64encode(der).decode("ascii")

    def publicRecord(self) -> str:
        """
        Read the key file (blocking).

        @return: the TXT record to publish, e.g. C{v=DKIM1; k=rsa; p=MIIB...}.
        """
        return f"v=DKIM1; k={self.algorithm}; p={self.publicKey()}"

    def zoneLine(self) -> str:
        """
        Read the key file (blocking).

        @return: the zone-file line to publish, its text split into
            strings of at most 255 characters:
            C{S._domainkey.DOMAIN. IN TXT "v=DKIM1; k=rsa; " "p=..."}.
        """
        strings = [f"v=DKIM1; k={self.algorithm}; ", *splitTXT(f"p={self.publicKey()}")]
        quoted = " ".join(f'"{s}"' for s in strings)
        return f"{self.recordName}. IN TXT {quoted}"


def splitTXT(text: str, size: int = TXT_STRING_MAX) -> list[str]:
    """
    @return: C{text} cut into strings of at most C{size} characters, which
        a TXT record joins back together (RFC 7208 3.3, RFC 6376 3.6.2.2).
    """
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class KeyStore:
    """
    The keys under C{dataDir/dkim/}; every method reads the disk (blocking).

    @ivar path: the C{dkim} folder.
    """

    def __init__(self, dataDir: Path) -> None:
        """
        @param dataDir: the server's C{data_dir}.
        """
        self.path = Path(dataDir) / "dkim"

    def keys(self) -> list[DKIMKey]:
        """
        @return: every key, sorted by domain and selector.
        """
        found: list[DKIMKey] = []
        try:
            domains = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []
        for domain in domains:
            folder = self.path / domain
            if domain.startswith(".") or not folder.is_dir():
                continue
            found.extend(self._keysIn(domain, folder))
        return sorted(found, key=lambda k: (k.domain, k.selector))

    def _keysIn(self, domain: str, folder: Path) -> list[DKIMKey]:
        """
        @return: the keys in one domain's folder (none if it is gone).
        """
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        keys = []
        for name in names:
            m = _KEYFILE.match(name)
            if m is None or not _SELECTOR.match(m.group("selector")):
                continue
            keys.append(DKIMKey(domain, m.group("selector"), m.group("algorithm"), folder / name))
        return keys

    def keysFor(self, domain: str) -> list[DKIMKey]:
        """
        @return: the keys of C{domain}, sorted by selector.
        """
        try:
            name = normalizeDomain(domain)
        except ValueError:
            return []
        return sorted(self._keysIn(name, self.path / name), key=lambda k: k.selector)

    def signingKeys(self, domain: str) -> list[DKIMKey]:
        """
        @return: the keys that sign C{domain}'s mail: the newest of each
            algorithm (by modification time, then selector), RSA first.
        """
        newest: dict[str, tuple[int, str, DKIMKey]] = {}
        for key in self.keysFor(domain):
            try:
                mtime = key.path.stat().st_mtime_ns
            except OSError:
                continue
            rank = (mtime, key.selector, key)
            if key.algorithm not in newest or rank[:2] > newest[key.algorithm][:2]:
                newest[key.algorithm] = rank
        return [newest[a][2] for a in ALGORITHMS if a in newest]

    def generate(self, domain: str, selector: str, algorithm: str = "rsa") -> DKIMKey:
        """
        Make a new key and write it, mode 0600 (folders 0700).

        @param algorithm: C{"rsa"} (2048 bits) or C{"ed25519"}.
        @raise ValueError: bad domain, selector or algorithm, or C{domain}
            already has a key with C{selector}.
        """
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r} (use rsa or ed25519)")
        name = normalizeDomain(domain)
        selector = checkSelector(selector)
        if any(k.selector == selector for k in self.keysFor(name)):
            raise ValueError(
                f"{name} already has a key with selector {selector} (choose another with --selector)"
            )
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        if algorithm == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
            pemFormat = serialization.PrivateFormat.TraditionalOpenSSL
        else:
            key = ed25519.Ed25519PrivateKey.generate()
            pemFormat = serialization.PrivateFormat.PKCS8
        pem = key.private_bytes(serialization.Encoding.PEM, pemFormat, serialization.NoEncryption())
        folder = self.path / name
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        owner = _owner(self.path.parent)
        for d in (self.path, folder):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
            if owner is not None:
                os.chown(d, *owner)
        path = folder / f"{selector}.{algorithm}.pem"
        _writeNew(path, pem, owner)
        return DKIMKey(name, selector, algorithm, path)


def _owner(dataDir: Path) -> tuple[int, int] | None:
    """
    @return: the owner of C{dataDir} when we are root and it is not, so
        that keys made by C{mta dkim keygen} run as root stay readable by
        the server's own user; else C{None} (leave ownership alone).
    """
    if os.geteuid() != 0:
        return None
    st = dataDir.stat()
    return (st.st_uid, st.st_gid) if st.st_uid != 0 else None


def _writeNew(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """
    Write C{data} to a new file C{path}, mode 0600, durably; never replace
    an existing file, and never leave a partial one under C{path}.

    @param owner: the uid and gid to give the file, or C{None}.
    @raise ValueError: C{path} exists.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ValueError(f"{path} exists") from None
    finally:
        tmp.unlink(missing_ok=True)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


__all__ = [
    "ALGORITHMS",
    "DKIMKey",
    "KeyStore",
    "checkSelector",
    "defaultSelector",
    "normalizeDomain",
    "splitTXT",
]
