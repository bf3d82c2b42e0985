# -*- test-case-name: tests.e2e.test_smtpclients -*-
"""
End to end with SMTP clients nobody here wrote: swaks and C{openssl
s_client}, against the real service tree on 127.0.0.1 ephemeral ports,
through STARTTLS, implicit TLS, AUTH PLAIN and LOGIN, and PIPELINING, with
each message checked in the Maildir.

Each test skips itself when its client is not installed (C{apt-get install
swaks}; openssl comes with the system).
"""

from __future__ import annotations

import base64
import os
import re
import selectors
import shutil
import subprocess
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e.harness import RunningServer, startServer, waitFor
from tests.e2e.test_mail import PASSWORD

ALICE = "alice@example.com"
BOB = "bob@example.com"
#: The TLS versions the server may negotiate (SPEC: TLS 1.2 and 1.3 only).
GOOD_TLS = ("TLSv1.2", "TLSv1.3")


def need(program: str) -> str:
    """
    @return: the path of C{program}.
    @raise SkipTest: it is not installed.
    """
    path = shutil.which(program)
    if path is None:
        raise SkipTest(f"{program} is not installed (apt-get install {program})")
    return path


def swaks(port: int, *args: str) -> tuple[int, str]:
    """
    Run swaks against 127.0.0.1:C{port} (blocking: call it in a thread).

    @return: its exit status and its transcript (stdout and stderr).
    """
    argv = [need("swaks"), "--server", "127.0.0.1", "--port", str(port), "--timeout", "20"]
    result = subprocess.run([*argv, *args], capture_output=True, timeout=60, check=False)
    return result.returncode, (result.stdout + result.stderr).decode("utf-8", "replace")


def swaksTLSVersion(transcript: str) -> str:
    """
    @return: the protocol from swaks' C{=== TLS started with cipher
        TLSv1.3:...} line, or C{""}.
    """
    m = re.search(r"TLS started with cipher (TLSv[0-9.]+)", transcript)
    return m.group(1) if m else ""


class SClient:
    """
    Drives C{openssl s_client -starttls smtp} one command at a time, like a
    person at a terminal (blocking: use it from a thread).

    @ivar output: everything s_client printed so far: its session report
        and the server's replies.
    """

    def __init__(self, port: int) -> None:
        argv = [
            need("openssl"),
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-starttls",
            "smtp",
            "-name",
            "client.test",
            "-crlf",
            "-ign_eof",
            "-nocommands",
        ]
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        self._stdout = self.process.stdout
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self.output = ""
        self._unread = ""

    def send(self, line: str) -> None:
        """
        Type one line (s_client turns the LF into CRLF).
        """
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def _readLine(self, deadline: float) -> str:
        while "\n" not in self._unread:
            if not self._selector.select(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"s_client said nothing in time; so far:\n{self.output}")
            chunk = os.read(self._stdout.fileno(), 65536).decode("utf-8", "replace")
            if not chunk:
                raise AssertionError(f"s_client ended; it said:\n{self.output}")
            self.output += chunk
            self._unread += chunk
        line, _, self._unread = self._unread.partition("\n")
        return line.rstrip("\r")

    def reply(self, timeout: float = 20.0) -> str:
        """
        @return: the server's next complete reply's last line (other
            s_client output is skipped).
        """
        deadline = time.monotonic() + timeout
        while True:
            line = self._readLine(deadline)
            if re.match(r"^\d{3} ", line):
                return line

    def synchronise(self) -> None:
        """
        Wait until TLS is up and the server answers.  s_client prints the
        last line of the EHLO reply it read before STARTTLS with the
        server's first reply under TLS: skip to the answer to a C{NOOP},
        which nothing before it can look like.
        """
        self.send("NOOP")
        while not self.reply().startswith("250 2.0.0"):
            pass

    def tlsVersion(self) -> str:
        """
        @return: the protocol s_client reports negotiating, or C{""}.
        """
        m = re.search(r"^(?:New, |\s*Protocol\s*: )(TLSv[0-9.]+)", self.output, re.MULTILINE)
        return m.group(1) if m else ""

    def close(self) -> int:
        """
        Close s_client's input and wait for it to end (the server hangs up
        after QUIT); kill it if it does not.

        @return: its exit status.
        """
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.output += self._stdout.read().decode("utf-8", "replace")
        self._selector.close()
        self._stdout.close()
        return code


class ClientTestsMixin:
    """
    A running server with two users, and how to wait for their mail.
    """

    timeout = 60
    server: RunningServer

    @inlineCallbacks
    def setUp(self) -> Any:
        self.server = yield startServer(self)
        yield deferToThread(self.server.addUser, ALICE, PASSWORD)
        yield deferToThread(self.server.addUser, BOB, PASSWORD)

    def arrived(self, address: str, count: int = 1) -> Any:
        """
        @return: a Deferred firing with C{address}'s messages once there
            are C{count}.
        """
        d = waitFor(lambda: len(self.server.delivered(address)) >= count)
        return d.addCallback(lambda _: self.server.delivered(address))


class SwaksTests(ClientTestsMixin, TestCase):
    """
    swaks through every submission path and pipelined to the MX.
    """

    @inlineCallbacks
    def submit(self, service: str, mechanism: str, *tlsArgs: str) -> Any:
        """
        Send one message with swaks as alice to bob; check it arrived and
        that TLS 1.2 or 1.3 was used.
        """
        need("swaks")
        body = f"swaks {service} {mechanism}"
        code, transcript = yield deferToThread(
            swaks,
            self.server.ports[service],
            *tlsArgs,
            "--auth",
            mechanism,
            "--auth-user",
            ALICE,
            "--auth-password",
            PASSWORD,
            "--from",
            ALICE,
            "--to",
            BOB,
            "--body",
            body,
        )
        self.assertEqual(code, 0, transcript[-3000:])
        self.assertIn(swaksTLSVersion(transcript), GOOD_TLS, transcript[:3000])
        self.assertRegex(transcript, r"<~  235 ")
        [stored] = yield self.arrived(BOB)
        self.assertIn(body.encode("ascii"), stored)
        self.assertIn(b" with ESMTPSA id ", stored)

    def test_submissionStartTLSPlain(self) -> Any:
        """swaks on submission: STARTTLS, AUTH PLAIN, and the message reaches bob's Maildir."""
        return self.submit("submission", "PLAIN", "--tls")

    def test_submissionsPlain(self) -> Any:
        """swaks on submissions (implicit TLS): AUTH PLAIN, and the message reaches bob."""
        return self.submit("submissions", "PLAIN", "--tls-on-connect")

    def test_submissionsLogin(self) -> Any:
        """swaks on submissions (implicit TLS): AUTH LOGIN, and the message reaches bob."""
        return self.submit("submissions", "LOGIN", "--tls-on-connect")

    @inlineCallbacks
    def test_submissionAuthOnlyAfterStartTLS(self) -> Any:
        """On submission, the EHLO before STARTTLS lists no AUTH, even from loopback; the one after does."""
        need("swaks")
        code, transcript = yield deferToThread(
            swaks, self.server.ports["submission"], "--tls", "--quit-after", "HELO"
        )
        self.assertEqual(code, 0, transcript)
        plain, _, encrypted = transcript.partition("-> STARTTLS")
        self.assertRegex(plain, r"<-  250[- ]STARTTLS")
        self.assertNotRegex(plain, r"<-  250[- ]AUTH")
        self.assertRegex(encrypted, r"<~  250[- ]AUTH PLAIN LOGIN")

    @inlineCallbacks
    def test_pipelineToMX(self) -> Any:
        """swaks --pipeline to the MX with several recipients: one session, each recipient gets it."""
        need("swaks")
        code, transcript = yield deferToThread(
            swaks,
            self.server.ports["smtp"],
            "--pipeline",
            "--from",
            "x@remote.test",
            "--to",
            f"{ALICE},{BOB},postmaster@example.com,nobody@example.com",
            "--body",
            "pipelined",
        )
        # One recipient refused (swaks marks it <**), the others accepted.
        self.assertEqual(code, 0, transcript)
        self.assertRegex(transcript, r"<\*\* +550 5\.1\.1")
        self.assertIn("250 2.0.0 Ok: queued as", transcript)
        # Pipelined: the client sent every RCPT before reading a reply.
        self.assertRegex(transcript, r"(?s)-> RCPT TO:<nobody@example\.com>.*<-  250 2\.1\.0")
        for user in (ALICE, BOB):
            [stored] = yield self.arrived(user)
            self.assertIn(b"pipelined", stored)
        postmaster = self.server.maildir("postmaster@example.com")
        self.assertEqual(len(list((postmaster / "new").iterdir())), 1)


class OpenSSLClientTests(ClientTestsMixin, TestCase):
    """
    A short dialog typed into C{openssl s_client -starttls smtp}.
    """

    @inlineCallbacks
    def dialog(self, port: int, auth: bool) -> Any:
        """
        Send one message to bob over STARTTLS with s_client.

        @return: (s_client's output, the TLS version it reports).
        """
        need("openssl")

        def talk() -> tuple[str, str]:
            client = SClient(port)
            try:
                client.synchronise()
                steps: list[tuple[str, str]] = [("EHLO client.test", "250")]
                if auth:
                    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
                    steps.append((f"AUTH PLAIN {token}", "235"))
                steps += [
                    (f"MAIL FROM:<{ALICE if auth else 'x@remote.test'}>", "250"),
                    (f"RCPT TO:<{BOB}>", "250"),
                    ("DATA", "354"),
                    ("Subject: s_client\n\nfrom openssl s_client\n.", "250"),
                    ("QUIT", "221"),
                ]
                for command, code in steps:
                    client.send(command)
                    got = client.reply()
                    assert got.startswith(code), f"{command!r} got {got!r}\n{client.output}"
            finally:
                client.close()
            return client.output, client.tlsVersion()

        output, version = yield deferToThread(talk)
        self.assertIn(version, GOOD_TLS, output)
        [stored] = yield self.arrived(BOB)
        self.assertIn(b"from openssl s_client", stored)
        return stored

    @inlineCallbacks
    def test_mx(self) -> Any:
        """openssl s_client -starttls smtp to the MX: TLS 1.2+, and mail reaches bob as ESMTPS."""
        stored = yield self.dialog(self.server.ports["smtp"], auth=False)
        self.assertIn(b" with ESMTPS id ", stored)

    @inlineCallbacks
    def test_submission(self) -> Any:
        """openssl s_client -starttls smtp to submission, AUTH PLAIN: mail reaches bob as ESMTPSA."""
        stored = yield self.dialog(self.server.ports["submission"], auth=True)
        self.assertIn(b" with ESMTPSA id ", stored)
