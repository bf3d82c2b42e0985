"""
DKIM interoperability end to end, with signers and verifiers that are not
the project's: Perl's Mail::DKIM (Debian's libmail-dkim-perl, run as a
subprocess) and dkimpy called directly.

  - Mail signed by Mail::DKIM and by dkimpy, sent to the real tree's MX
    from an untrusted client (127.0.0.1 is not trusted here), is delivered
    with dkim=pass (and dmarc=pass on that signature alone);
  - the tree's own signatures on submitted mail verify under Mail::DKIM
    and dkimpy;
  - after relay from one tree to another, the receiving tree says
    dkim=pass and dmarc=pass for the sender's domain, and Mail::DKIM
    agrees on its copy.

Every record (keys, SPF, DMARC, MX) is served by a real DNS server on
loopback (L{mta.testing.dnsserver}); Mail::DKIM is pointed at it through
C{Mail::DKIM::DNS::resolver}, so it never asks the system's resolver.
The Perl tests are skipped when Mail::DKIM is not installed.
"""

from __future__ import annotations

import shutil
import smtplib
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import dkim
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from mta.config import DNSConfig, RelayConfig
from mta.dkimkeys import DKIMKey, KeyStore, splitTXT
from mta.testing.dnsserver import DNSServer
from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.e2e.test_mail import PASSWORD, submitMessage
from tests.test_dkimverify import ed25519Key, rsaKey, sign

#: Seconds any Perl run may take.
PERL_TIMEOUT = 30

#: Signs the message on stdin (relaxed/relaxed, rsa-sha256) with the PEM
#: key in ARGV[0] as domain ARGV[1], selector ARGV[2]; prints the
#: DKIM-Signature field.
PERL_SIGN = r"""
use strict; use warnings;
use Mail::DKIM::Signer; use Mail::DKIM::TextWrap;
my ($keyfile, $domain, $selector) = @ARGV;
my $signer = Mail::DKIM::Signer->new(
    Algorithm => 'rsa-sha256', Method => 'relaxed/relaxed', Domain => $domain,
    Selector => $selector, KeyFile => $keyfile,
    Headers => 'from:to:subject:date:message-id');
binmode STDIN;
while (my $line = <STDIN>) { $line =~ s/\015?\012\z//; $signer->PRINT("$line\015\012"); }
$signer->CLOSE;
print $signer->signature->as_string, "\015\012";
"""

#: Verifies the message on stdin, its key lookups going to the DNS server
#: on 127.0.0.1 port ARGV[0] only; prints one line per signature:
#: domain, selector, algorithm, result, detail.
PERL_VERIFY = r"""
use strict; use warnings;
use Net::DNS::Resolver; use Mail::DKIM::DNS; use Mail::DKIM::Verifier;
my ($port) = @ARGV;
my $res = Net::DNS::Resolver->new(
    nameservers => ['127.0.0.1'], port => $port, recurse => 1,
    defnames => 0, dnsrch => 0, searchlist => [],
    udp_timeout => 5, tcp_timeout => 5, retry => 1, retrans => 1);
$res->nameservers('127.0.0.1');
$res->port($port);
Mail::DKIM::DNS::resolver($res);
my $verifier = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) { $line =~ s/\015?\012\z//; $verifier->PRINT("$line\015\012"); }
$verifier->CLOSE;
foreach my $sig ($verifier->signatures) {
    printf "%s %s %s %s %s\n", $sig->domain, $sig->selector, $sig->algorithm,
        $sig->result, $sig->result_detail // '';
}
"""


def perlDKIM() -> str | None:
    """
    @return: why Perl's Mail::DKIM cannot be used, or L{None} when it can.
    """
    perl = shutil.which("perl")
    if perl is None:
        return "perl is not installed"
    try:
        done = subprocess.run(
            [perl, "-MMail::DKIM::Signer", "-MMail::DKIM::Verifier", "-MNet::DNS", "-e", "1"],
            capture_output=True,
            timeout=PERL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "perl -MMail::DKIM timed out"
    if done.returncode != 0:
        return "Perl Mail::DKIM is not installed (apt-get install libmail-dkim-perl)"
    return None


def needPerl() -> None:
    """
    @raise SkipTest: without Mail::DKIM.
    """
    why = perlDKIM()
    if why is not None:
        raise SkipTest(why)


def perl(script: str, *args: str, stdin: bytes) -> str:
    """
    Run a Perl script (blocking; from a thread), within L{PERL_TIMEOUT}.

    @return: its output.
    """
    done = subprocess.run(
        ["perl", "-e", script, *args],
        input=stdin,
        capture_output=True,
        timeout=PERL_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"perl failed ({done.returncode}): {done.stderr.decode()}")
    return done.stdout.decode()


def perlSign(message: bytes, pem: bytes, keyFile: Path, domain: str, selector: str) -> bytes:
    """
    @return: C{message} with Mail::DKIM's signature on top (blocking).
    """
    keyFile.write_bytes(pem)
    keyFile.chmod(0o600)
    field = perl(PERL_SIGN, str(keyFile), domain, selector, stdin=message)
    return field.encode() + message


def perlVerify(message: bytes, port: int) -> list[tuple[str, str, str, str]]:
    """
    @return: C{(domain, selector, algorithm, result)} per signature, as
        Mail::DKIM sees them (blocking).
    """
    out = perl(PERL_VERIFY, str(port), stdin=message)
    rows = []
    for line in out.splitlines():
        domain, selector, algorithm, result, *_ = line.split(" ")
        rows.append((domain, selector, algorithm, result))
    return rows


def keyZone(keys: list[DKIMKey]) -> dict[str, Any]:
    """
    @return: zone entries publishing C{keys}, long records split.
    """
    return {k.recordName: {"TXT": [tuple(splitTXT(k.publicRecord()))]} for k in keys}


def dkimpyVerify(message: bytes, records: dict[str, bytes]) -> list[tuple[bytes, bool]]:
    """
    @return: each signature's C{a=} and whether dkimpy verifies it, its
        keys taken from C{records} (name to key record) only.
    """

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip("."), b"")

    d = dkim.DKIM(message)
    values = [v for n, v in d.headers if n.lower() == b"dkim-signature"]
    return [
        (dkim.util.parse_tag_value(v)[b"a"], bool(d.verify(idx=i, dnsfunc=dnsfunc)))
        for i, v in enumerate(values)
    ]


def headerOf(message: bytes, authservId: str) -> str:
    """
    @return: the Authentication-Results field of C{authservId}, unfolded.
    """
    parsed = dkim.DKIM(message)
    for name, value in parsed.headers:
        if name.lower() == b"authentication-results":
            text = " ".join(value.decode().split())
            if text.startswith(f"{authservId};"):
                return text
    raise AssertionError(f"no Authentication-Results of {authservId}")


def folder(server: RunningServer, address: str, name: str = "INBOX") -> list[bytes]:
    base = server.maildir(address, name)
    files = [p for sub in ("new", "cur") if (base / sub).exists() for p in (base / sub).iterdir()]
    return [p.read_bytes() for p in sorted(files, key=lambda p: p.name)]


def message(fromAddress: str, to: str, subject: str) -> bytes:
    return (
        f"From: Alice <{fromAddress}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@interop.test>\r\n"
        f"\r\nHello.\r\nA line with  two spaces and a trailing tab\t\r\n\r\n"
    ).encode()


class InboundInteropTests(TestCase):
    """
    Messages signed by Mail::DKIM and by dkimpy, verified by the tree.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        self.perlPem, perlRecord = rsaKey(2048)
        self.pyPem, pyRecord = rsaKey(1024)
        self.edSeed, edRecord = ed25519Key()
        self.dns = DNSServer(
            {
                "example.org": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
                "perl._domainkey.example.org": {"TXT": [tuple(splitTXT(perlRecord.decode()))]},
                "py._domainkey.example.org": {"TXT": [pyRecord.decode()]},
                "ed._domainkey.example.org": {"TXT": [edRecord.decode()]},
                "_dmarc.example.org": {"TXT": ["v=DMARC1; p=reject"]},
            }
        )
        self.dns.listen(cast(Any, reactor))
        self.addCleanup(self.dns.stop)
        config = testConfig(
            Path(self.mktemp()).absolute(),
            dns=DNSConfig(nameservers=(self.dns.nameserver,)),
            relay=RelayConfig(trusted_networks=()),
        )
        self.server: RunningServer = yield startServer(self, config)
        self.server.addUser("bob@example.com", PASSWORD)

    def send(self, data: bytes) -> Any:
        """
        Send C{data} to Bob on the MX port from a thread, with a MAIL FROM
        whose domain has no SPF record: DMARC can pass on DKIM only.
        """

        def blocking() -> None:
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=30) as client:
                client.ehlo("client.example.org")
                client.sendmail("bounce@lists.other.test", ["bob@example.com"], data)

        return deferToThread(blocking)

    @inlineCallbacks
    def deliveredHeader(self) -> Any:
        yield waitFor(lambda: bool(folder(self.server, "bob@example.com")))
        [delivered] = folder(self.server, "bob@example.com")
        return headerOf(delivered, "mx.example.com")

    @inlineCallbacks
    def test_perlSigned(self) -> Any:
        """
        A message signed by Mail::DKIM (rsa-sha256, 2048 bits, relaxed) is
        delivered with dkim=pass, and DMARC passes on that signature.
        """
        needPerl()
        keyFile = Path(self.mktemp())
        keyFile.parent.mkdir(parents=True, exist_ok=True)
        data = message("alice@example.org", "bob@example.com", "perl")
        signed = yield deferToThread(perlSign, data, self.perlPem, keyFile, "example.org", "perl")
        self.assertTrue(signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;"))
        yield self.send(signed)
        header = yield self.deliveredHeader()
        self.assertIn("dkim=pass header.d=example.org header.s=perl header.a=rsa-sha256", header)
        self.assertIn(
            "dmarc=pass (p=reject dis=none; aligned DKIM pass) header.from=example.org", header
        )
        self.assertIn(("perl._domainkey.example.org", "TXT"), self.dns.queries)

    @inlineCallbacks
    def test_dkimpySigned(self) -> Any:
        """
        A message signed by dkimpy twice (rsa-sha256 and ed25519-sha256)
        gets dkim=pass for each signature.
        """
        data = message("alice@example.org", "bob@example.com", "dkimpy")
        signed = sign(data, self.pyPem, domain="example.org", selector="py")
        signed = sign(
            signed, self.edSeed, domain="example.org", selector="ed", algorithm=b"ed25519-sha256"
        )
        yield self.send(signed)
        header = yield self.deliveredHeader()
        self.assertIn("dkim=pass header.d=example.org header.s=ed header.a=ed25519-sha256", header)
        self.assertIn("dkim=pass header.d=example.org header.s=py header.a=rsa-sha256", header)
        self.assertIn("dmarc=pass (p=reject dis=none; aligned DKIM pass)", header)

    @inlineCallbacks
    def test_perlSignedTampered(self) -> Any:
        """
        Control: Mail::DKIM's signature over a body changed afterwards
        fails, and p=reject refuses the message with 550 5.7.1.
        """
        needPerl()
        keyFile = Path(self.mktemp())
        keyFile.parent.mkdir(parents=True, exist_ok=True)
        data = message("alice@example.org", "bob@example.com", "tampered")
        signed = yield deferToThread(perlSign, data, self.perlPem, keyFile, "example.org", "perl")
        try:
            yield self.send(signed.replace(b"Hello.", b"Hullo."))
        except smtplib.SMTPDataError as e:
            self.assertEqual((e.smtp_code, cast(bytes, e.smtp_error)[:5]), (550, b"5.7.1"))
        else:
            self.fail("the tampered message was accepted")


class OutboundInteropTests(TestCase):
    """
    The tree's own signatures, verified by Mail::DKIM and dkimpy.
    """

    timeout = 60

    @inlineCallbacks
    def test_submittedSignatureVerifies(self) -> Any:
        """
        A message alice submits is delivered to bob signed with the
        store's RSA and Ed25519 keys; Mail::DKIM (RSA only: Debian's has
        no Ed25519) and dkimpy (both) verify them against the test DNS.
        """
        dataDir = Path(self.mktemp()).absolute()
        store = KeyStore(dataDir)
        keys = [
            store.generate("example.com", "s1", "rsa"),
            store.generate("example.com", "e1", "ed25519"),
        ]
        self.dns = DNSServer(keyZone(keys))
        self.dns.listen(cast(Any, reactor))
        self.addCleanup(self.dns.stop)
        config = testConfig(dataDir, dns=DNSConfig(nameservers=(self.dns.nameserver,)))
        server: RunningServer = yield startServer(self, config)
        for user in ("alice@example.com", "bob@example.com"):
            yield deferToThread(server.addUser, user, PASSWORD)

        yield submitMessage(
            server.ports["submission"],
            ["bob@example.com"],
            message("alice@example.com", "bob@example.com", "outbound"),
        )
        yield waitFor(lambda: bool(server.delivered("bob@example.com")))
        [delivered] = server.delivered("bob@example.com")
        records = {k.recordName: k.publicRecord().encode() for k in keys}
        self.assertEqual(
            dkimpyVerify(delivered, records), [(b"rsa-sha256", True), (b"ed25519-sha256", True)]
        )
        needPerl()
        rows = yield deferToThread(perlVerify, delivered, self.dns.port)
        self.assertIn(("example.com", "s1", "rsa-sha256", "pass"), rows)
        # Only Mail::DKIM asked: the server signs without looking its key up.
        self.assertIn(("s1._domainkey.example.com", "TXT"), self.dns.queries)
        # Control: the same copy with its body changed fails under Mail::DKIM.
        tampered = delivered.replace(b"Hello.", b"Hullo.")
        rows = yield deferToThread(perlVerify, tampered, self.dns.port)
        self.assertIn(("example.com", "s1", "rsa-sha256", "fail"), rows)


class RelayInteropTests(TestCase):
    """
    A (example.com) signs alice's mail and relays it to B (b.test), whose
    checks are on for 127.0.0.1.
    """

    timeout = 60

    @inlineCallbacks
    def test_signedThroughRelay(self) -> Any:
        """
        B's Authentication-Results says dkim=pass and dmarc=pass for
        example.com; Mail::DKIM verifies A's signature on B's copy.
        """
        aDir = Path(self.mktemp()).absolute()
        [key] = [KeyStore(aDir).generate("example.com", "s1", "rsa")]
        nameservers, b = yield startCheckingPeer(self, [key])
        aConfig = testConfig(
            aDir,
            dns=nameservers,
            relay=replace(RelayConfig(), outbound_port=b.ports["smtp"], retry_schedule=(1.0,)),
        )
        a: RunningServer = yield startServer(self, aConfig)
        a.addUser("alice@example.com", PASSWORD)

        yield submitMessage(
            a.ports["submission"],
            ["bob@b.test"],
            message("alice@example.com", "bob@b.test", "relayed"),
        )
        yield waitFor(lambda: bool(b.delivered("bob@b.test")), timeout=20)
        [delivered] = b.delivered("bob@b.test")
        header = headerOf(delivered, "mx.b.test")
        self.assertIn("spf=pass", header)
        self.assertIn("smtp.mailfrom=alice@example.com", header)
        self.assertIn("dkim=pass header.d=example.com header.s=s1 header.a=rsa-sha256", header)
        self.assertIn(
            "dmarc=pass (p=reject dis=none; aligned DKIM pass) header.from=example.com", header
        )
        needPerl()
        rows = yield deferToThread(perlVerify, delivered, self.dns.port)
        self.assertEqual(rows, [("example.com", "s1", "rsa-sha256", "pass")])


@inlineCallbacks
def startCheckingPeer(case: TestCase, keys: list[DKIMKey]) -> Any:
    """
    Start the test DNS server (C{keys}' records, b.test's MX at 127.0.0.1,
    example.com's SPF for 127.0.0.1 and DMARC p=reject with strict DKIM
    alignment) and instance B for b.test, with its checks on for every
    client (nothing trusted) and user bob@b.test.

    @return: a Deferred firing with C{(nameservers, B)}; the DNS server is
        C{case.dns}.
    """
    dns = DNSServer(
        {
            **keyZone(keys),
            "b.test": {"MX": [(10, "mx.b.test")]},
            "mx.b.test": {"A": ["127.0.0.1"]},
            "example.com": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
            "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject; adkim=s"]},
        }
    )
    case.dns = dns  # type: ignore[attr-defined]
    dns.listen(cast(Any, reactor))
    case.addCleanup(dns.stop)
    nameservers = DNSConfig(nameservers=(dns.nameserver,))
    bConfig = replace(
        testConfig(
            Path(case.mktemp()).absolute(), dns=nameservers, relay=RelayConfig(trusted_networks=())
        ),
        hostname="mx.b.test",
        domains=("b.test",),
    )
    b: RunningServer = yield startServer(case, bConfig)
    yield deferToThread(b.addUser, "bob@b.test", PASSWORD)
    return nameservers, b
