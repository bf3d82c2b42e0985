"""
Tests for L{mta.tls}: the self-signed fallback, loading, the TLS policy
seen by real clients, and certificate reload.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mta.config import Config, ListenConfig, TLSConfig
from mta.errors import ConfigError
from mta.service import ConnectionLimiter, Listener
from mta.tls import TLSContextHolder, ensureSelfSigned, loadServerContext, tlsVersion

# -- certificates for the tests ------------------------------------------------------


def makeKey() -> ec.EllipticCurvePrivateKey:
    """
    @return: a new P-256 key (fast to make).
    """
    return ec.generate_private_key(ec.SECP256R1())


def makeCertificate(
    key: ec.EllipticCurvePrivateKey,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    isCA: bool = False,
    days: int = 30,
) -> x509.Certificate:
    """
    @return: a certificate for C{name}, self-signed unless C{issuer} is given.
    """
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuerName, signingKey = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuerName)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=isCA, path_length=None), True)
        .sign(signingKey, hashes.SHA256())
    )


def pem(*items: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    """
    @return: the PEM encoding of certificates and keys, concatenated.
    """
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    return out


def replaceFile(path: Path, data: bytes) -> None:
    """
    Replace C{path} the way certbot does: a new file, not a rewrite.
    """
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def writePair(folder: Path, name: str = "mail.example.test") -> tuple[Path, Path, bytes]:
    """
    Write a new certificate and key to C{folder/cert.pem} and C{key.pem}.

    @return: both paths and the certificate's DER encoding.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = makeKey()
    certificate = makeCertificate(key, name)
    certPath, keyPath = folder / "cert.pem", folder / "key.pem"
    replaceFile(keyPath, pem(key))
    replaceFile(certPath, pem(certificate))
    return certPath, keyPath, certificate.public_bytes(serialization.Encoding.DER)


def config(dataDir: Path, tls: TLSConfig | None = None) -> Config:
    """
    @return: a minimal configuration.
    """
    return Config(
        hostname="mail.example.test",
        data_dir=dataDir,
        domains=("example.test",),
        listen=ListenConfig(),
        tls=tls or TLSConfig(),
    )


# -- self-signed ---------------------------------------------------------------------


class SelfSignedTests(SynchronousTestCase):
    """
    Tests for L{ensureSelfSigned}.
    """

    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp())

    def test_createsPair(self) -> None:
        """
        The certificate and key are made in C{data_dir/tls}, the key mode 0600.
        """
        certPath, keyPath = ensureSelfSigned(self.dataDir, "mail.example.test")
        self.assertEqual(certPath, self.dataDir / "tls" / "selfsigned.pem")
        self.assertEqual(keyPath, self.dataDir / "tls" / "selfsigned.key")
        self.assertEqual(stat.S_IMODE(keyPath.stat().st_mode), 0o600)
        TLSContextHolder(certPath, keyPath)

    def test_namesHostAndLocalhost(self) -> None:
        """
        The certificate's CN is the hostname; its SAN adds localhost and loopback.
        """
        certPath, _ = ensureSelfSigned(self.dataDir, "mail.example.test")
        certificate = x509.load_pem_x509_certificate(certPath.read_bytes())
        cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.assertEqual(cn[0].value, "mail.example.test")
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(
            san.value.get_values_for_type(x509.DNSName),
            ["mail.example.test", "localhost"],
        )
        self.assertIn(
            "127.0.0.1",
            [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)],
        )
        lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        self.assertGreater(lifetime, datetime.timedelta(days=3000))

    def test_idempotent(self) -> None:
        """
        A second call keeps the existing pair untouched.
        """
        certPath, keyPath = ensureSelfSigned(self.dataDir, "mail.example.test")
        before = (certPath.read_bytes(), keyPath.read_bytes(), certPath.stat().st_ino)
        self.assertEqual(ensureSelfSigned(self.dataDir, "mail.example.test"), (certPath, keyPath))
        after = (certPath.read_bytes(), keyPath.read_bytes(), certPath.stat().st_ino)
        self.assertEqual(before, after)

    def test_expiringPairReplaced(self) -> None:
        """
        A self-signed certificate about to expire is made anew.
        """
        certPath, keyPath = ensureSelfSigned(self.dataDir, "mail.example.test")
        key = makeKey()
        replaceFile(keyPath, pem(key))
        replaceFile(certPath, pem(makeCertificate(key, "old", days=2)))
        ensureSelfSigned(self.dataDir, "mail.example.test")
        certificate = x509.load_pem_x509_certificate(certPath.read_bytes())
        cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.assertEqual(cn[0].value, "mail.example.test")
        TLSContextHolder(certPath, keyPath)

    def test_mismatchedPairReplaced(self) -> None:
        """
        A self-signed key that does not match its certificate is made anew.
        """
        certPath, keyPath = ensureSelfSigned(self.dataDir, "mail.example.test")
        replaceFile(keyPath, pem(makeKey()))
        ensureSelfSigned(self.dataDir, "mail.example.test")
        TLSContextHolder(certPath, keyPath)


# -- loading -------------------------------------------------------------------------


class LoadTests(SynchronousTestCase):
    """
    Tests for L{loadServerContext} and L{TLSContextHolder} loading.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        self.certPath, self.keyPath, self.der = writePair(self.folder)

    def test_configuredFilesUsed(self) -> None:
        """
        With C{[tls]} set, the holder serves those files.
        """
        holder = loadServerContext(
            config(self.folder / "data", TLSConfig(self.certPath, self.keyPath))
        )
        self.assertEqual(holder.certificatePath, self.certPath)
        self.assertFalse((self.folder / "data" / "tls").exists())

    def test_selfSignedWithoutConfiguration(self) -> None:
        """
        Without C{[tls]} files, the self-signed pair in the data dir is used.
        """
        holder = loadServerContext(config(self.folder / "data"))
        self.assertEqual(holder.certificatePath, self.folder / "data" / "tls" / "selfsigned.pem")

    def test_mismatchedKeyNamesPrivateKey(self) -> None:
        """
        A key that does not belong to the certificate is a C{tls.private_key}
        error.
        """
        replaceFile(self.keyPath, pem(makeKey()))
        error = self.assertRaises(ConfigError, TLSContextHolder, self.certPath, self.keyPath)
        self.assertIn("tls.private_key", str(error))
        self.assertIn("does not match", str(error))

    def test_missingCertificateNamesCertificate(self) -> None:
        """
        An unreadable certificate file is a C{tls.certificate} error.
        """
        error = self.assertRaises(
            ConfigError, TLSContextHolder, self.folder / "missing.pem", self.keyPath
        )
        self.assertIn("tls.certificate", str(error))
        self.assertIn("missing.pem", str(error))

    def test_garbageCertificateNamesCertificate(self) -> None:
        """
        A certificate file without PEM is a C{tls.certificate} error.
        """
        replaceFile(self.certPath, b"not a certificate\n")
        error = self.assertRaises(ConfigError, TLSContextHolder, self.certPath, self.keyPath)
        self.assertIn("tls.certificate", str(error))

    def test_garbageKeyNamesPrivateKey(self) -> None:
        """
        A key file without a PEM key is a C{tls.private_key} error.
        """
        replaceFile(self.keyPath, pem(makeCertificate(makeKey(), "x")))
        error = self.assertRaises(ConfigError, TLSContextHolder, self.certPath, self.keyPath)
        self.assertIn("tls.private_key", str(error))

    def test_policyOptions(self) -> None:
        """
        The context refuses compression and renegotiation and allows no
        version below TLS 1.2.
        """
        context = TLSContextHolder(self.certPath, self.keyPath).getContext()
        options = context.set_options(0)
        self.assertTrue(options & SSL.OP_NO_COMPRESSION)
        self.assertTrue(options & SSL.OP_NO_RENEGOTIATION)
        ciphers = SSL.Connection(context, None).get_cipher_list()
        for cipher in ciphers:
            self.assertTrue(cipher.startswith("TLS_") or cipher.startswith("ECDHE-"), cipher)
            self.assertTrue("GCM" in cipher or "CHACHA20" in cipher, cipher)

    def test_reloadUnchanged(self) -> None:
        """
        C{reloadIfChanged} does nothing when the files did not change.
        """
        holder = TLSContextHolder(self.certPath, self.keyPath)
        context = holder.getContext()
        self.assertFalse(holder.reloadIfChanged())
        self.assertIs(holder.getContext(), context)

    def test_reloadChanged(self) -> None:
        """
        C{reloadIfChanged} swaps the context when the files changed.
        """
        holder = TLSContextHolder(self.certPath, self.keyPath)
        context = holder.getContext()
        writePair(self.folder)
        self.assertTrue(holder.reloadIfChanged())
        self.assertIsNot(holder.getContext(), context)
        self.assertFalse(holder.reloadIfChanged())

    def test_reloadHalfWrittenKeepsOld(self) -> None:
        """
        A new certificate whose key is not there yet keeps the old context
        until the key arrives.
        """
        holder = TLSContextHolder(self.certPath, self.keyPath)
        context = holder.getContext()
        key = makeKey()
        replaceFile(self.certPath, pem(makeCertificate(key, "new.example.test")))
        self.assertFalse(holder.reloadIfChanged())
        self.assertIs(holder.getContext(), context)
        self.assertIn("tls.private_key", holder.lastError or "")
        replaceFile(self.keyPath, pem(key))
        self.assertTrue(holder.reloadIfChanged())
        self.assertIsNone(holder.lastError)

    def test_reloadMissingFileKeepsOld(self) -> None:
        """
        A vanished certificate file keeps the old context in use.
        """
        holder = TLSContextHolder(self.certPath, self.keyPath)
        self.certPath.unlink()
        self.assertFalse(holder.reloadIfChanged())
        self.assertIn("cert.pem", holder.lastError or "")

    def test_tlsVersionPlaintext(self) -> None:
        """
        C{tlsVersion} of a plaintext transport is the empty string.
        """
        self.assertEqual(tlsVersion(StringTransport()), "")
        self.assertEqual(tlsVersion(None), "")


# -- real handshakes -----------------------------------------------------------------


class VersionReporter(Protocol):
    """
    Answers each line with the TLS version its transport reports.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        if data.startswith(b"STARTTLS"):
            self.transport.write(b"go\n")
            self.transport.startTLS(self.factory.tls)  # type: ignore[attr-defined]
            return
        self.transport.write(tlsVersion(self.transport).encode("ascii") + b"\n")


def readLine(sock: Any) -> bytes:
    """
    Read up to a newline from a blocking socket (plain, C{ssl} or pyOpenSSL).
    """
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(100)
        if not chunk:
            break
        data += chunk
    return data


def pythonClient(port: int, configure: Callable[[ssl.SSLContext], None]) -> dict[str, Any]:
    """
    Handshake with Python's C{ssl} (in a thread) and describe the session.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    configure(context)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"version?\n")
        return {
            "version": tls.version(),
            "serverSays": readLine(tls).strip().decode("ascii"),
            "cipher": tls.cipher(),
            "compression": tls.compression(),
            "certificate": tls.getpeercert(binary_form=True),
        }


def pyOpenSSLClient(port: int, renegotiate: bool = False) -> dict[str, Any]:
    """
    Handshake at TLS 1.2 with pyOpenSSL (in a thread), optionally trying
    to renegotiate.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        # pyOpenSSL wants a blocking socket; time out in the kernel instead.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
        connection = SSL.Connection(context, raw)
        connection.set_connect_state()
        connection.do_handshake()
        chain = connection.get_peer_cert_chain(as_cryptography=True) or []
        if renegotiate:
            connection.renegotiate()
            connection.do_handshake()
            connection.send(b"version?\n")
            readLine(connection)
        return {"chain": chain}


def startTLSClient(port: int) -> str:
    """
    Speak plaintext, ask for STARTTLS, then handshake (in a thread).

    @return: the TLS version the server reports after the upgrade.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"version?\n")
        assert readLine(raw) == b"\n"
        raw.sendall(b"STARTTLS\n")
        assert readLine(raw) == b"go\n"
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"version?\n")
            return readLine(tls).strip().decode("ascii")


def oldProtocol(version: ssl.TLSVersion) -> Callable[[ssl.SSLContext], None]:
    """
    @return: a client configuration offering only C{version}, with
        OpenSSL's security level lowered so the client will offer it at all.
    """

    def configure(context: ssl.SSLContext) -> None:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = version
        context.maximum_version = version

    return configure


def tls12With(ciphers: str) -> Callable[[ssl.SSLContext], None]:
    """
    @return: a TLS 1.2 client configuration offering only C{ciphers}.
    """

    def configure(context: ssl.SSLContext) -> None:
        context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
        context.maximum_version = ssl.TLSVersion.TLSv1_2

    return configure


class HandshakeTests(TestCase):
    """
    Real clients against an implicit-TLS L{Listener} on 127.0.0.1.
    """

    @inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def, override]
        self.folder = Path(self.mktemp())
        self.certPath, self.keyPath, self.der = writePair(self.folder)
        self.holder = TLSContextHolder(self.certPath, self.keyPath)
        self.port = yield self.listen(tls=True)

    @inlineCallbacks
    def listen(self, tls: bool, limited: bool = False):  # type: ignore[no-untyped-def]
        reporters = Factory.forProtocol(VersionReporter)
        reporters.tls = self.holder  # type: ignore[attr-defined]
        factory: IProtocolFactory = reporters
        if limited:
            factory = ConnectionLimiter(factory, reactor, b"no\n", 10, 10)
        listener = Listener(
            "tcp:0:interface=127.0.0.1", factory, reactor, self.holder if tls else None
        )
        listener.startService()
        self.addCleanup(listener.stopService)
        port = yield listener.whenListening()
        return port.getHost().port

    def connect(self, configure: Callable[[ssl.SSLContext], None]) -> Deferred[Any]:
        return deferToThread(pythonClient, self.port, configure)

    @inlineCallbacks
    def test_tls13(self):  # type: ignore[no-untyped-def]
        """
        A TLS 1.3 client connects, without compression, and C{tlsVersion}
        says so.
        """

        def configure(context: ssl.SSLContext) -> None:
            context.minimum_version = ssl.TLSVersion.TLSv1_3

        session = yield self.connect(configure)
        self.assertEqual(session["version"], "TLSv1.3")
        self.assertEqual(session["serverSays"], "TLSv1.3")
        self.assertIsNone(session["compression"])
        self.assertEqual(session["certificate"], self.der)

    @inlineCallbacks
    def test_tls12(self):  # type: ignore[no-untyped-def]
        """
        A TLS 1.2 client connects with a forward-secret AEAD suite.
        """

        def configure(context: ssl.SSLContext) -> None:
            context.maximum_version = ssl.TLSVersion.TLSv1_2

        session = yield self.connect(configure)
        self.assertEqual(session["version"], "TLSv1.2")
        self.assertEqual(session["serverSays"], "TLSv1.2")
        self.assertIsNone(session["compression"])
        name = session["cipher"][0]
        self.assertTrue(name.startswith("ECDHE-"), name)
        self.assertTrue("GCM" in name or "CHACHA20" in name, name)

    @inlineCallbacks
    def test_tls11Refused(self):  # type: ignore[no-untyped-def]
        """
        A TLS 1.1 client is refused with a protocol-version alert.
        """
        error = yield self.assertFailure(
            self.connect(oldProtocol(ssl.TLSVersion.TLSv1_1)), ssl.SSLError
        )
        self.assertIn("PROTOCOL_VERSION", error.reason)

    @inlineCallbacks
    def test_tls10Refused(self):  # type: ignore[no-untyped-def]
        """
        A TLS 1.0 client is refused with a protocol-version alert.
        """
        error = yield self.assertFailure(
            self.connect(oldProtocol(ssl.TLSVersion.TLSv1)), ssl.SSLError
        )
        self.assertIn("PROTOCOL_VERSION", error.reason)

    @inlineCallbacks
    def test_weakCiphersRefused(self):  # type: ignore[no-untyped-def]
        """
        TLS 1.2 clients offering only RSA key exchange, CBC, 3DES or
        anonymous suites are refused by the server.
        """
        for ciphers in ("AES128-SHA", "ECDHE-RSA-AES128-SHA", "DES-CBC3-SHA", "aNULL"):
            try:
                tls12With(ciphers)(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
            except ssl.SSLError:
                # This client's OpenSSL cannot even offer it.
                continue
            error = yield self.assertFailure(self.connect(tls12With(ciphers)), ssl.SSLError)
            self.assertIn("HANDSHAKE_FAILURE", error.reason, ciphers)

    @inlineCallbacks
    def test_renegotiationRefused(self):  # type: ignore[no-untyped-def]
        """
        A TLS 1.2 client asking to renegotiate is refused.
        """
        error = yield self.assertFailure(deferToThread(pyOpenSSLClient, self.port, True), SSL.Error)
        self.assertIn("no renegotiation", str(error))

    @inlineCallbacks
    def test_fullChainSent(self):  # type: ignore[no-untyped-def]
        """
        Every certificate in the PEM file reaches the client.
        """
        caKey, leafKey = makeKey(), makeKey()
        ca = makeCertificate(caKey, "Test CA", isCA=True)
        leaf = makeCertificate(leafKey, "mail.example.test", issuer=(ca, caKey))
        replaceFile(self.keyPath, pem(leafKey))
        replaceFile(self.certPath, pem(leaf, ca))
        self.assertTrue(self.holder.reloadIfChanged())
        session = yield deferToThread(pyOpenSSLClient, self.port)
        self.assertEqual(session["chain"], [leaf, ca])

    @inlineCallbacks
    def test_reloadServesNewCertificate(self):  # type: ignore[no-untyped-def]
        """
        After a renewal and C{reloadIfChanged}, new connections get the new
        certificate.
        """
        session = yield self.connect(lambda context: None)
        self.assertEqual(session["certificate"], self.der)
        _, _, newDer = writePair(self.folder)
        self.assertTrue(self.holder.reloadIfChanged())
        session = yield self.connect(lambda context: None)
        self.assertEqual(session["certificate"], newDer)

    @inlineCallbacks
    def test_startTLSThroughLimiter(self):  # type: ignore[no-untyped-def]
        """
        C{transport.startTLS(holder)} upgrades a plaintext connection, also
        behind a L{ConnectionLimiter}, and C{tlsVersion} follows.
        """
        port = yield self.listen(tls=False, limited=True)
        version = yield deferToThread(startTLSClient, port)
        self.assertEqual(version, "TLSv1.3")
