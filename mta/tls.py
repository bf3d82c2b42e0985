# -*- test-case-name: tests.test_tls -*-
"""
TLS for every listener: one server context, shared by STARTTLS (SMTP,
IMAP), STLS (POP3) and the implicit-TLS ports (submissions, imaps, pop3s).

The policy is the one SPEC.md promises: TLS 1.2 and 1.3 only, forward
secret AEAD suites only (no NULL, EXPORT, RC4, 3DES, CBC or anonymous
suites), no compression, no client-initiated renegotiation.

The certificate comes from C{[tls] certificate}/C{private_key} (a PEM
chain, e.g. certbot's C{fullchain.pem}, and its key) or, when both are
absent, from a self-signed pair kept in C{data_dir/tls}.  A
L{TLSContextHolder} holds the current context and swaps it when the files
change on disk, so a renewed certificate is used without a restart.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from mta.config import Config
from mta.errors import ConfigError
from mta.fileutil import exclusiveLock

#: TLS 1.2 suites we accept: ECDHE key exchange with an AEAD cipher, in
#: server preference order (Mozilla's "intermediate" profile minus DHE,
#: which needs parameters we do not ship).  TLS 1.3 suites are all AEAD
#: and are left at OpenSSL's default.  The exclusions are redundant with
#: the positive list and are kept as a statement of intent.
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "!aNULL:!eNULL:!EXPORT:!DES:!3DES:!RC4:!MD5:!PSK:!SRP"
)

#: How long a self-signed certificate is valid.
SELF_SIGNED_LIFETIME = datetime.timedelta(days=3650)

#: A self-signed certificate this close to expiry is made anew at start-up.
_RENEW_BEFORE = datetime.timedelta(days=30)

#: The private key types OpenSSL can serve with.
_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
_PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

_log = Logger()


# -- self-signed certificate ---------------------------------------------------


def ensureSelfSigned(dataDir: Path, hostname: str) -> tuple[Path, Path]:
    """
    Make sure C{dataDir/tls/selfsigned.pem} and C{selfsigned.key} exist,
    creating them if missing (or unreadable, or about to expire).

    The key is RSA-2048, which every TLS client still in use can handle;
    the certificate names C{hostname}, C{localhost}, 127.0.0.1 and ::1 and
    is valid for about ten years.  Both files are written atomically and
    the key is mode 0600.  This blocks: call it at start-up, before the
    reactor runs, or on a thread.

    @param dataDir: the server's data directory.
    @param hostname: the server's name, put in the CN and the SAN.
    @return: the paths of the certificate and of the key.
    """
    tlsDir = dataDir / "tls"
    certPath = tlsDir / "selfsigned.pem"
    keyPath = tlsDir / "selfsigned.key"
    tlsDir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Another process (a second server, the admin command) may be doing the
    # same: the lock keeps the key and certificate from two runs apart.
    with exclusiveLock(tlsDir / ".lock"):
        if not _selfSignedUsable(certPath, keyPath):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            certificate = _selfSignedCertificate(key, hostname)
            keyBytes = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _writeAtomically(keyPath, keyBytes, 0o600)
            certBytes = certificate.public_bytes(serialization.Encoding.PEM)
            _writeAtomically(certPath, certBytes, 0o644)
            _log.info("Created a self-signed TLS certificate in {path}", path=str(certPath))
    return certPath, keyPath


def _selfSignedUsable(certPath: Path, keyPath: Path) -> bool:
    """
    @return: whether an existing self-signed pair can be kept: both files
        load, belong together and are not about to expire.
    """
    try:
        chain, _ = _loadPair(certPath, keyPath)
    except ConfigError:
        return False
    left = chain[0].not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return left > _RENEW_BEFORE


def _subjectAltNames(hostname: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for name in dict.fromkeys([hostname, "localhost"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        try:
            names.append(x509.DNSName(name.encode("idna").decode("ascii")))
        except (UnicodeError, ValueError):
            # A name no certificate can carry; localhost and the IPs remain.
            continue
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    names.append(x509.IPAddress(ipaddress.ip_address("::1")))
    return names


def _selfSignedCertificate(key: rsa.RSAPrivateKey, hostname: str) -> x509.Certificate:
    # A CN is at most 64 characters; the SAN, which is what clients check,
    # has the full name either way.
    commonName = hostname if 0 < len(hostname) <= 64 else "localhost"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + SELF_SIGNED_LIFETIME)
        .add_extension(x509.SubjectAlternativeName(_subjectAltNames(hostname)), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(key, hashes.SHA256())
    )


def _writeAtomically(path: Path, data: bytes, mode: int) -> None:
    """
    Write C{data} to C{path} so that readers see the old file or the whole
    new one, never a part: a temporary file, fsync, rename, fsync the
    folder.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dirFd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirFd)
    finally:
        os.close(dirFd)


# -- loading a certificate -----------------------------------------------------------


def _readFile(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"config: {key}: cannot read {path}: {e.strerror}") from None


def _spki(public: PublicKeyTypes) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def serverContext(certificatePath: Path, privateKeyPath: Path) -> SSL.Context:
    """
    Build the server TLS context from a PEM chain and its key.

    The context is built directly rather than through Twisted's
    C{CertificateOptions} because OpenSSL options (here
    C{OP_NO_RENEGOTIATION}) must be set before the first connection is
    made from a context, and C{CertificateOptions} makes one while building
    it.  The settings otherwise match C{CertificateOptions} with
    C{raiseMinimumTo=TLSVersion.TLSv1_2}.

    @param certificatePath: the server certificate followed by any
        intermediates (e.g. certbot's C{fullchain.pem}); the whole chain is
        sent to clients.
    @param privateKeyPath: the unencrypted PEM private key.
    @return: a finished context: every OpenSSL error surfaces here rather
        than on the first connection.
    @raise ConfigError: a file is unreadable or not PEM, or the key does
        not belong to the certificate.  The message names C{tls.certificate}
        or C{tls.private_key}.
    """
    chain, key = _loadPair(certificatePath, privateKeyPath)
    _warnIfExpired(chain[0], certificatePath)
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(
        SSL.OP_NO_COMPRESSION  # CRIME
        | SSL.OP_NO_RENEGOTIATION  # client-initiated renegotiation DoS
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_SINGLE_ECDH_USE
        | SSL.OP_NO_TICKET
    )
    # Idle mail connections are many and long; free their buffers.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.set_cipher_list(CIPHERS.encode("ascii"))
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_verify(SSL.VERIFY_NONE)
    try:
        context.use_certificate(chain[0])
        context.use_privatekey(key)
        for intermediate in chain[1:]:
            context.add_extra_chain_cert(intermediate)
        context.check_privatekey()
    except SSL.Error as e:
        raise ConfigError(f"config: tls.certificate: {certificatePath}: {e}") from None
    return context


def _loadPair(
    certificatePath: Path, privateKeyPath: Path
) -> tuple[list[x509.Certificate], _PrivateKey]:
    """
    Read and check a PEM chain and its key.

    @raise ConfigError: as for L{serverContext}.
    """
    chainBytes = _readFile(certificatePath, "tls.certificate")
    keyBytes = _readFile(privateKeyPath, "tls.private_key")
    try:
        chain = x509.load_pem_x509_certificates(chainBytes)
    except ValueError:
        raise ConfigError(
            f"config: tls.certificate: {certificatePath} holds no PEM certificate"
        ) from None
    try:
        key = serialization.load_pem_private_key(keyBytes, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"config: tls.private_key: {privateKeyPath} holds no unencrypted PEM private key"
        ) from None
    if not isinstance(key, _KEY_TYPES):
        raise ConfigError(
            f"config: tls.private_key: {privateKeyPath}: use an RSA, ECDSA or EdDSA key"
        )
    if _spki(key.public_key()) != _spki(chain[0].public_key()):
        raise ConfigError(
            f"config: tls.private_key: {privateKeyPath} does not match the "
            f"certificate in {certificatePath}"
        )
    return chain, key


def checkCertificateFiles(
    certificatePath: Path,
    privateKeyPath: Path,
    now: datetime.datetime | None = None,
) -> None:
    """
    Check C{[tls]}'s files as C{mta check} does: they load into a server
    context (readable, PEM, the key matching the certificate) and the
    certificate is valid now (blocking).

    @param now: the time to check against; the current time by default.
    @raise ConfigError: one line naming C{tls.certificate} or
        C{tls.private_key} and saying what is wrong.
    """
    serverContext(certificatePath, privateKeyPath)
    chain, _ = _loadPair(certificatePath, privateKeyPath)
    leaf = chain[0]
    now = now or datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        raise ConfigError(
            f"config: tls.certificate: {certificatePath} expired on "
            f"{leaf.not_valid_after_utc.isoformat()}"
        )
    if leaf.not_valid_before_utc > now:
        raise ConfigError(
            f"config: tls.certificate: {certificatePath} is not valid before "
            f"{leaf.not_valid_before_utc.isoformat()}"
        )


def _warnIfExpired(certificate: x509.Certificate, path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc < now:
        _log.warn(
            "TLS certificate {path} expired on {date}",
            path=str(path),
            date=certificate.not_valid_after_utc.isoformat(),
        )


# -- the holder ------------------------------------------------------------------------


def _fileStamp(path: Path, key: str) -> tuple[int, int, int, int]:
    """
    @return: what changes when the file at C{path} is replaced or
        rewritten.  Symlinks are followed, so certbot's C{live/} links
        moving to a new C{archive/} file count as a change.
    @raise ConfigError: the file cannot be found; C{key} names its setting.
    """
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigError(f"config: {key}: cannot read {path}: {e.strerror}") from None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class TLSContextHolder:
    """
    The server's current TLS context, swapped when the certificate or key
    file changes.

    Pass the holder itself wherever Twisted wants TLS server options:
    C{transport.startTLS(holder)},
    C{TLSMemoryBIOFactory(holder, False, factory)}.  Each new TLS
    connection asks it for the current context, so after
    L{reloadIfChanged} new connections use the new certificate while
    established ones keep theirs.

    @ivar certificatePath: the PEM chain in use.
    @ivar privateKeyPath: its key.
    @ivar lastError: why the last reload failed, or C{None}.
    """

    def __init__(self, certificatePath: Path, privateKeyPath: Path) -> None:
        """
        Load the certificate and key (blocking).

        @raise ConfigError: they are unusable; see L{serverContext}.
        """
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
        self.lastError: str | None = None
        # Stamp before reading, so a change during the read is seen later.
        self._stamps = self._currentStamps()
        self._context = serverContext(certificatePath, privateKeyPath)

    def _currentStamps(self) -> tuple[tuple[int, ...], ...]:
        return (
            _fileStamp(self.certificatePath, "tls.certificate"),
            _fileStamp(self.privateKeyPath, "tls.private_key"),
        )

    def getContext(self) -> SSL.Context:
        """
        @return: the current OpenSSL context (L{IOpenSSLContextFactory}).
        """
        return self._context

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        """
        Make the OpenSSL connection for one new TLS connection from the
        current context (L{IOpenSSLServerConnectionCreator}).
        """
        return SSL.Connection(self.getContext(), None)

    def reloadIfChanged(self) -> bool:
        """
        Re-read the certificate and key if either file changed since the
        last load (blocking: run it on a thread).

        A failed reload (e.g. certbot caught between writing the chain and
        the key) is logged once, keeps the old context in use, and is tried
        again on the next call.

        @return: whether a new context is now in use.
        """
        try:
            stamps = self._currentStamps()
            if stamps == self._stamps:
                return False
            context = serverContext(self.certificatePath, self.privateKeyPath)
        except ConfigError as e:
            self._failed(str(e))
            return False
        self._context = context
        self._stamps = stamps
        self.lastError = None
        _log.info("Reloaded TLS certificate {path}", path=str(self.certificatePath))
        return True

    def _failed(self, why: str) -> None:
        if why != self.lastError:
            _log.error("TLS certificate reload failed, keeping the old one: {why}", why=why)
        self.lastError = why


def loadServerContext(config: Config) -> TLSContextHolder:
    """
    Load the server TLS context the configuration asks for: C{[tls]}'s
    certificate and key, or else the self-signed pair in C{data_dir/tls}
    (created on first use).  Blocking; call it at start-up.

    @raise ConfigError: the configured files are unusable.
    """
    certificate, privateKey = config.tls.certificate, config.tls.private_key
    if certificate is None or privateKey is None:
        certificate, privateKey = ensureSelfSigned(config.data_dir, config.hostname)
    return TLSContextHolder(certificate, privateKey)


def _tlsHandle(transport: object) -> SSL.Connection | None:
    """
    @return: the OpenSSL connection under a protocol's transport once its
        handshake has chosen a cipher, else C{None}.
    """
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    try:
        handle = getHandle()
    except Exception:
        return None
    if not isinstance(handle, SSL.Connection) or handle.get_cipher_name() is None:
        return None
    return handle


def tlsVersion(transport: object) -> str:
    """
    Name the TLS version of a connection, for log lines.

    @param transport: a protocol's transport (possibly wrapped).
    @return: e.g. C{"TLSv1.3"}, or C{""} for a plaintext connection or one
        whose handshake has not finished.
    """
    handle = _tlsHandle(transport)
    return "" if handle is None else handle.get_protocol_version_name()


def tlsDescription(transport: object) -> str:
    """
    Describe a connection's TLS for a Received header, as Postfix's
    C{smtpd_tls_received_header} does.

    @param transport: a protocol's transport (possibly wrapped).
    @return: e.g. C{"TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256
        bits)"}, or C{""} for a plaintext connection.
    """
    handle = _tlsHandle(transport)
    if handle is None:
        return ""
    bits = handle.get_cipher_bits()
    return (
        f"{handle.get_protocol_version_name()} with cipher {handle.get_cipher_name()}"
        f" ({bits}/{bits} bits)"
    )
