# -*- test-case-name: tests.test_smtpclient -*-
"""
TLS for the outbound SMTP client: the client context, SNI, and the
certificate check whose outcome is recorded rather than enforced.

Opportunistic STARTTLS (RFC 3207, RFC 7435) must not refuse a peer for a
certificate it cannot check, yet the relay wants to know and log whether
it could.  So the handshake accepts any certificate, OpenSSL's chain
verification errors are collected by the verify callback, and once the
handshake is done the certificate is matched against the MX host name
with C{service_identity}.  The result is a L{TLSOutcome}; the client
decides from the policy whether an unverified peer is good enough.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from os import PathLike, fspath
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from mta.tls import CIPHERS

#: OpenSSL's X509_V_ERR_* codes (include/openssl/x509_vfy.h) that a mail
#: peer's certificate commonly fails with, for the outcome's reason.
_VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    23: "certificate revoked",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}


@dataclass(frozen=True)
class TLSOutcome:
    """
    What came of TLS on one connection: for the logs, the Received trail
    and C{mta queue show}.

    @ivar version: the protocol, e.g. C{"TLSv1.3"}; C{""} when the session
        was not encrypted.
    @ivar cipher: the cipher suite's OpenSSL name, or C{""}.
    @ivar verified: the certificate chain is valid against the trust roots
        and the certificate names the host.
    @ivar reason: C{""}, or why the certificate is not verified, or why
        the session has no TLS.
    """

    version: str = ""
    cipher: str = ""
    verified: bool = False
    reason: str = ""

    def __str__(self) -> str:
        if not self.version:
            return f"none ({self.reason})" if self.reason else "none"
        state = "verified" if self.verified else f"unverified: {self.reason}"
        return f"{self.version} {self.cipher} {state}"


def _addTrusted(store: crypto.X509Store, item: Any) -> None:
    """
    Add one trust root to C{store}.

    @param item: a C{cryptography} certificate, a Twisted
        L{ssl.Certificate}, a pyOpenSSL C{X509} or PEM bytes (maybe
        several certificates).
    @raise TypeError: it is none of those.
    """
    if isinstance(item, bytes):
        for certificate in x509.load_pem_x509_certificates(item):
            store.add_cert(crypto.X509.from_cryptography(certificate))
    elif isinstance(item, x509.Certificate):
        store.add_cert(crypto.X509.from_cryptography(item))
    elif isinstance(item, ssl.Certificate):
        store.add_cert(item.original)
    elif isinstance(item, crypto.X509):
        store.add_cert(item)
    else:
        raise TypeError(f"not a trust root: {item!r}")


def clientContext(trustRoots: Any = None) -> SSL.Context:
    """
    Build the context outbound connections use: TLS 1.2 and later, the
    server's cipher list, no compression, and every peer certificate
    accepted at handshake time (see L{ClientTLS}).

    @param trustRoots: C{None} for the platform's trust store; a PEM file
        path (C{str} or path-like); or a certificate (C{cryptography}
        C{x509.Certificate}, Twisted L{ssl.Certificate}, pyOpenSSL
        C{X509}, PEM C{bytes}) or a sequence of them.
    @return: the context.
    @raise TypeError: C{trustRoots} is none of those.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    context.set_cipher_list(CIPHERS.encode("ascii"))
    if trustRoots is None:
        context.set_default_verify_paths()
    elif isinstance(trustRoots, str | PathLike):
        context.load_verify_locations(fspath(trustRoots))
    else:
        items = (
            trustRoots
            if isinstance(trustRoots, Sequence) and not isinstance(trustRoots, bytes)
            else [trustRoots]
        )
        store = context.get_cert_store()
        assert store is not None
        for item in items:
            _addTrusted(store, item)
    return context


def _isIPLiteral(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLS:
    """
    Makes the one TLS client connection of one SMTP session, and judges
    its peer's certificate afterwards.

    @ivar serverName: the host name the certificate must name (the MX
        name), also sent as SNI.
    @ivar connection: the pyOpenSSL connection once made.
    @ivar chainErrors: the chain verification errors OpenSSL reported.
    """

    def __init__(self, serverName: str, context: SSL.Context) -> None:
        """
        @param serverName: the MX host name (or an IP literal).
        @param context: from L{clientContext}; may be shared.
        """
        self.serverName = serverName
        self._context = context
        self.connection: SSL.Connection | None = None
        self.chainErrors: list[str] = []

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """
        @return: a client connection sending SNI and collecting (not
            enforcing) certificate errors.
        """
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_verify(SSL.VERIFY_PEER, self._verify)
        if not _isIPLiteral(self.serverName):
            # A name IDNA cannot encode cannot match a certificate either;
            # the check after the handshake will say so.
            with suppress(UnicodeError):
                connection.set_tlsext_host_name(self.serverName.encode("idna"))
        connection.set_connect_state()
        self.connection = connection
        return connection

    def _verify(
        self, connection: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
    ) -> bool:
        """
        OpenSSL's verify callback: note the error and let the handshake go
        on (whether that is good enough is the policy's call).
        """
        if not ok:
            text = _VERIFY_ERRORS.get(errno, f"verify error {errno}")
            self.chainErrors.append(f"{text} (depth {depth})")
        return True

    def outcome(self) -> TLSOutcome:
        """
        @return: the session's version and cipher and whether the peer's
            certificate is verified: chain valid and the name matching
            (C{service_identity}, RFC 6125).
        """
        connection = self.connection
        if connection is None or connection.get_cipher_name() is None:
            return TLSOutcome(reason="no TLS session")
        version = connection.get_protocol_version_name()
        cipher = connection.get_cipher_name() or ""
        problems = list(dict.fromkeys(self.chainErrors))
        certificate = connection.get_peer_certificate(as_cryptography=True)
        if certificate is None:
            problems.append("no certificate")
        else:
            nameProblem = self._checkName(certificate)
            if nameProblem:
                problems.append(nameProblem)
        if problems:
            return TLSOutcome(version, cipher, False, "certificate: " + "; ".join(problems))
        return TLSOutcome(version, cipher, True, "")

    def _checkName(self, certificate: x509.Certificate) -> str:
        """
        @return: C{""} when C{certificate} names L{serverName}, else why not.
        """
        try:
            if _isIPLiteral(self.serverName):
                verify_certificate_ip_address(certificate, self.serverName)
            else:
                verify_certificate_hostname(certificate, self.serverName)
        except VerificationError:
            return f"hostname mismatch (does not name {self.serverName})"
        except CertificateError as e:
            return f"unusable certificate names ({e})"
        return ""
