"""
Tests for L{mta.policy.dkimsign}: signing outbound mail.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import replace
from pathlib import Path

import dkim
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mta.config import DKIMConfig, LimitsConfig, embeddedDefault, loadConfig
from mta.directory.memory import MemoryDirectory
from mta.dkimkeys import DKIMKey, KeyStore
from mta.envelope import Address, Envelope
from mta.errors import ConfigError
from mta.interfaces import IPolicyCheck
from mta.policy.base import ACCEPT, Session, Verdict
from mta.policy.chain import smtpPolicy
from mta.policy.dkimsign import (
    DKIMSigner,
    LoadedKeys,
    headerNames,
    includeHeaders,
    signingDomain,
)
from mta.tap import buildSigner
from mta.threads import SynchronousRunner

TRUSTED = (ipaddress.ip_network("127.0.0.0/8"),)
ALICE = Session(peer="192.0.2.7", listener="submission", tls=True, authUser="alice@example.com")
LOCALAPP = Session(peer="127.0.0.1", listener="smtp")
INTERNET = Session(peer="192.0.2.7", listener="smtp")

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@remote.test\r\n"
    b"Subject: lunch?\r\n"
    b"Date: Tue, 01 Dec 2026 22:48:15 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"X-Mailer: test\r\n"
    b"\r\n"
    b"at noon?\r\n"
)


def envelope(sender: str = "alice@example.com") -> Envelope:
    """
    @return: an envelope from C{sender} to bob@remote.test.
    """
    return Envelope(
        queueId="0dTESTQUEUEID001",
        sender=Address.parse(sender) if sender else Address("", ""),
        recipients=(),
        arrival=0.0,
    )


def signed(verdict: Verdict, message: bytes = MESSAGE) -> bytes:
    """
    @return: C{message} with the verdict's headers on top, as the SMTP
        server stores it.
    """
    return b"".join(h.encode("ascii") + b"\r\n" for h in verdict.headers) + message


class SignerTestCase(SynchronousTestCase):
    """
    A signer over a key store in a temporary data dir, run synchronously.
    """

    def setUp(self) -> None:
        self.store = KeyStore(Path(self.mktemp()).absolute())
        self.keys = LoadedKeys(self.store, reloadInterval=0)
        self.signer = DKIMSigner(self.keys, SynchronousRunner(), TRUSTED)

    def check(
        self, session: Session = ALICE, message: bytes = MESSAGE, env: Envelope | None = None
    ) -> Verdict:
        """
        @return: the signer's verdict on C{message}, which must be ready.
        """
        answer = self.signer.checkMessage(session, env or envelope(), message)
        if isinstance(answer, Deferred):
            return self.successResultOf(answer)
        return answer

    def verify(self, message: bytes, *keys: DKIMKey) -> list[bool]:
        """
        @return: whether each DKIM-Signature of C{message}, top first,
            verifies against the public records of C{keys}.
        """
        records = {f"{k.recordName}.".encode(): k.publicRecord().encode() for k in keys}

        def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
            return records.get(name, b"")

        d = dkim.DKIM(message)
        count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
        results = []
        for i in range(count):
            try:
                results.append(d.verify(idx=i, dnsfunc=dnsfunc))
            except dkim.ValidationError:
                results.append(False)
        return results


class SigningTests(SignerTestCase):
    """
    What gets signed, and how.
    """

    def test_interface(self) -> None:
        """The signer provides IPolicyCheck."""
        self.assertTrue(verifyObject(IPolicyCheck, self.signer))

    def test_rsa(self) -> None:
        """A submitted message gets an rsa-sha256, relaxed/relaxed signature that verifies."""
        key = self.store.generate("example.com", "s1")
        verdict = self.check()
        self.assertEqual(len(verdict.headers), 1)
        header = verdict.headers[0]
        self.assertTrue(header.startswith("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;"))
        self.assertFalse(header.endswith("\r\n"))
        self.assertNotIn("\n", header.replace("\r\n ", "").replace("\r\n\t", ""))
        self.assertIn(" d=example.com;", header)
        self.assertEqual(self.verify(signed(verdict), key), [True])

    def test_ed25519(self) -> None:
        """An Ed25519 key gives an ed25519-sha256 signature (RFC 8463) that verifies."""
        key = self.store.generate("example.com", "e1", "ed25519")
        verdict = self.check()
        self.assertIn("a=ed25519-sha256;", verdict.headers[0])
        self.assertEqual(self.verify(signed(verdict), key), [True])

    def test_dualSigning(self) -> None:
        """With an RSA and an Ed25519 key, both sign, and both signatures verify."""
        rsaKey = self.store.generate("example.com", "s1")
        edKey = self.store.generate("example.com", "e1", "ed25519")
        verdict = self.check()
        self.assertEqual(len(verdict.headers), 2)
        self.assertIn("a=rsa-sha256", verdict.headers[0])
        self.assertIn("a=ed25519-sha256", verdict.headers[1])
        self.assertEqual(self.verify(signed(verdict), rsaKey, edKey), [True, True])

    def test_rotatedKeyDoesNotSign(self) -> None:
        """Of two RSA keys only the newer signs."""
        old = self.store.generate("example.com", "s1")
        os.utime(old.path, ns=(1_000_000_000, 1_000_000_000))
        self.store.generate("example.com", "s2")
        [header] = self.check().headers
        self.assertIn(" s=s2;", header)

    def test_headerList(self) -> None:
        """The usual fields are signed, From, To, Subject and Date once more than present."""
        self.store.generate("example.com", "e1", "ed25519")
        [header] = self.check().headers
        tags = dkim.util.parse_tag_value(header.split(":", 1)[1].encode())
        signedNames = [n.strip() for n in tags[b"h"].decode().split(":")]
        self.assertEqual(
            signedNames,
            ["from", "from", "to", "to", "subject", "subject", "date", "date", "message-id"],
        )

    def test_oversignedFrom(self) -> None:
        """A second From added after signing breaks the signature."""
        key = self.store.generate("example.com", "e1", "ed25519")
        message = signed(self.check())
        self.assertEqual(self.verify(message, key), [True])
        forged = message.replace(b"To: ", b"From: mallory@evil.test\r\nTo: ", 1)
        self.assertEqual(self.verify(forged, key), [False])

    def test_addedSubjectBreaks(self) -> None:
        """A Subject added to a message that had none breaks the signature (absence is signed)."""
        key = self.store.generate("example.com", "e1", "ed25519")
        message = MESSAGE.replace(b"Subject: lunch?\r\n", b"")
        signedMessage = signed(self.check(message=message), message)
        self.assertEqual(self.verify(signedMessage, key), [True])
        forged = signedMessage.replace(b"To: ", b"Subject: pay now\r\nTo: ", 1)
        self.assertEqual(self.verify(forged, key), [False])

    def test_bodyChangeBreaks(self) -> None:
        """A changed body breaks the signature; re-folded headers do not (relaxed)."""
        key = self.store.generate("example.com", "e1", "ed25519")
        message = signed(self.check())
        self.assertEqual(self.verify(message.replace(b"noon", b"one"), key), [False])
        refolded = message.replace(b"Subject: lunch?", b"Subject:\r\n   lunch?  ")
        self.assertEqual(self.verify(refolded, key), [True])

    def test_trustedNetworkSigned(self) -> None:
        """Mail from a trusted network is signed without AUTH."""
        key = self.store.generate("example.com", "e1", "ed25519")
        verdict = self.check(LOCALAPP)
        self.assertEqual(self.verify(signed(verdict), key), [True])

    def test_internetNotSigned(self) -> None:
        """Unauthenticated mail from the internet on the MX listener is not signed."""
        self.store.generate("example.com", "e1", "ed25519")
        self.assertIs(self.check(INTERNET), ACCEPT)

    def test_domainWithoutKeyNotSigned(self) -> None:
        """A From domain without a key is not signed, even if another domain has one."""
        self.store.generate("example.org", "e1", "ed25519")
        self.assertIs(self.check(), ACCEPT)

    def test_fromDomainDecides(self) -> None:
        """The From header's domain picks the key, not the envelope sender's."""
        self.store.generate("example.org", "e1", "ed25519")
        message = MESSAGE.replace(b"alice@example.com", b"alice@example.org")
        [header] = self.check(message=message).headers
        self.assertIn(" d=example.org;", header)

    def test_envelopeSenderWithoutFrom(self) -> None:
        """With no From header the envelope sender's domain picks the key (dkimpy signs From's absence)."""
        key = self.store.generate("example.com", "e1", "ed25519")
        message = MESSAGE.replace(b"From: Alice <alice@example.com>\r\n", b"")
        verdict = self.check(message=message)
        self.assertEqual(self.verify(signed(verdict, message), key), [True])

    def test_newKeyPickedUp(self) -> None:
        """A key made while the server runs signs the next message; a removed one stops."""
        self.assertIs(self.check(), ACCEPT)
        key = self.store.generate("example.com", "e1", "ed25519")
        self.assertEqual(len(self.check().headers), 1)
        key.path.unlink()
        self.assertIs(self.check(), ACCEPT)

    def test_keysLoadedOnce(self) -> None:
        """Keys are read once and again only when a file changes."""
        self.store.generate("example.com", "e1", "ed25519")
        self.assertTrue(self.keys.refresh())
        self.assertFalse(self.keys.refresh())
        self.store.generate("example.com", "s1")
        self.assertTrue(self.keys.refresh())

    def test_freshCacheAnswersAtOnce(self) -> None:
        """Within the reload interval a domain without a key is answered without the runner."""
        now = [0.0]
        keys = LoadedKeys(self.store, reloadInterval=1.0, monotonic=lambda: now[0])
        runner = _CountingRunner()
        signer = DKIMSigner(keys, runner, TRUSTED)
        self.store.generate("example.org", "e1", "ed25519")
        self.successResultOf(signer.checkMessage(ALICE, envelope(), MESSAGE))  # type: ignore[arg-type]
        self.assertEqual(runner.calls, 1)
        self.assertIs(signer.checkMessage(ALICE, envelope(), MESSAGE), ACCEPT)
        self.assertEqual(runner.calls, 1)
        now[0] = 1.5
        self.successResultOf(signer.checkMessage(ALICE, envelope(), MESSAGE))  # type: ignore[arg-type]
        self.assertEqual(runner.calls, 2)

    def test_badKeyFileSentUnsigned(self) -> None:
        """An unreadable key is logged and the message accepted unsigned by it."""
        key = self.store.generate("example.com", "s1")
        key.path.write_bytes(
            b"-----BEGIN RSA PRIVATE KEY-----\ngarbage\n-----END RSA PRIVATE KEY-----\n"
        )
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.assertIs(self.check(), ACCEPT)
        self.assertTrue(any("cannot be used" in str(e.get("problem", "")) for e in events))

    def test_signingErrorSentUnsigned(self) -> None:
        """A signing failure is logged, never losing the message."""
        self.store.generate("example.com", "e1", "ed25519")

        def broken(*args: object, **kwargs: object) -> bytes:
            raise dkim.DKIMException("boom")

        self.patch(dkim, "sign", broken)
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.assertIs(self.check(), ACCEPT)
        self.assertTrue(any("boom" in str(e.get("error", "")) for e in events))

    def test_runnerFailureSentUnsigned(self) -> None:
        """Even a failure of the runner itself accepts the message unsigned."""
        self.store.generate("example.com", "e1", "ed25519")
        self.patch(self.keys, "refresh", lambda: 1 / 0)
        self.assertIs(self.check(), ACCEPT)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class _CountingRunner(SynchronousRunner):
    """
    A synchronous runner that counts its calls.
    """

    calls = 0

    def run(self, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().run(f, *args, **kwargs)


class HelperTests(SynchronousTestCase):
    """
    Header names, the C{h=} list and the signing domain.
    """

    def test_headerNames(self) -> None:
        """Field names are read from the header section only, continuations skipped."""
        message = b"From: a\r\nSubject: x\r\n y: z\r\nTO : b\r\n\r\nNot: header\r\n"
        self.assertEqual(headerNames(message), ["from", "subject", "to"])

    def test_includeHeaders(self) -> None:
        """Repeated fields are listed per occurrence, over-signed ones once more, List-* added."""
        present = ["received", "from", "cc", "cc", "list-id", "list-foo", "x-other"]
        self.assertEqual(
            includeHeaders(present),
            [b"from", b"from", b"to", b"cc", b"cc", b"subject", b"date", b"list-id", b"list-foo"],
        )
        self.assertEqual(
            includeHeaders(present, ["from", "x-other"]),
            [b"from", b"from", b"x-other", b"list-foo", b"list-id"],
        )

    def test_signingDomain(self) -> None:
        """The first From address's domain, else the envelope sender's; None when neither."""
        self.assertEqual(signingDomain(envelope(), MESSAGE), "example.com")
        self.assertEqual(
            signingDomain(envelope(), b"From: x@B\xc3\xbcCHER.example\r\n\r\n"),
            "xn--bcher-kva.example",
        )
        self.assertEqual(
            signingDomain(envelope("a@example.net"), b"To: x@y\r\n\r\n"), "example.net"
        )
        self.assertIsNone(signingDomain(envelope(""), b"To: x@y\r\n\r\n"))
        self.assertIsNone(signingDomain(envelope(), b"From: nobody\r\n\r\n"))


class ChainTests(SynchronousTestCase):
    """
    The signer in the chain L{smtpPolicy} builds.
    """

    def test_signerLast(self) -> None:
        """The signer is the chain's last check; without one the chain is as before."""
        directory = MemoryDirectory(["example.com"])
        keys = LoadedKeys(KeyStore(Path(self.mktemp())))
        signer = DKIMSigner(keys, SynchronousRunner(), TRUSTED)
        chain = smtpPolicy(directory, TRUSTED, LimitsConfig(), Clock(), signer=signer)
        self.assertIs(chain.checks[-1], signer)
        plain = smtpPolicy(directory, TRUSTED, LimitsConfig(), Clock())
        self.assertEqual(len(plain.checks), len(chain.checks) - 1)


class ConfigTests(SynchronousTestCase):
    """
    The C{[dkim]} section of the config file.
    """

    def load(self, section: str) -> DKIMConfig:
        """
        @return: the C{[dkim]} of a config file with C{section} in it.
        """
        path = Path(self.mktemp())
        path.write_text(f'domains = ["example.com"]\ndata_dir = "d"\n[dkim]\n{section}\n')
        return loadConfig(path).dkim

    def test_defaults(self) -> None:
        """Signing is on with the built-in header list by default."""
        self.assertEqual(self.load(""), DKIMConfig(sign=True, headers=()))

    def test_values(self) -> None:
        """sign and headers are read; names are lower-cased."""
        config = self.load('sign = false\nheaders = ["From", "Subject"]')
        self.assertEqual(config, DKIMConfig(sign=False, headers=("from", "subject")))

    def test_badValues(self) -> None:
        """Bad values stop with one line naming the key."""
        for section, why in [
            ('sign = "yes"', "dkim.sign: expected true or false"),
            ('headers = ["subject"]', "dkim.headers: must include 'from'"),
            ('headers = ["from", "received"]', "dkim.headers: 'received' must not be signed"),
            ('headers = ["from", "a b"]', "dkim.headers: 'a b' is not a header field name"),
            ("selector = 1", "dkim.selector: unknown key"),
        ]:
            e = self.assertRaises(ConfigError, self.load, section)
            self.assertIn(why, str(e))

    def test_signOff(self) -> None:
        """With sign = false the server builds no signer; custom headers reach the signer."""
        base = embeddedDefault(Path(self.mktemp()))
        self.assertIsNone(
            buildSigner(replace(base, dkim=DKIMConfig(sign=False)), SynchronousRunner())
        )
        self.assertIsNotNone(buildSigner(base, SynchronousRunner()))
