# -*- test-case-name: tests.e2e.test_smtpextensions -*-
"""
The ESMTP extensions and submission rules end to end, with clients nobody
here wrote (Python's C{smtplib} and C{ssl}) against the real tree on
127.0.0.1: SMTPUTF8 to a user made with the real C{mta user add},
DSN parameters kept in the queue (seen with C{mta queue show}), BDAT over
STARTTLS, REQUIRETLS, the header-From check and the per-user rate limit.

The session-level details are in the transcript corpus
(C{tests/transcripts/bdat-*.txt}, C{dsn*.txt}, C{smtputf8*.txt}, ...).
"""

from __future__ import annotations

import json
import smtplib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mta.config import LimitsConfig
from mta.store.maildir import folderDirectory, mailRootOf, userDirectory
from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.e2e.serverprocess import CONFIG_HEAD, ServerProcess, runAdmin
from tests.e2e.test_mail import PASSWORD, insecureContext
from tests.e2e.test_smtphostile import connect, readReply, replyCodes

ALICE = "alice@example.com"
BOB = "bob@example.com"
JUERGEN = "jürgen@example.com"
JOERG = "jörg@bücher.example"

CONFIG = (
    CONFIG_HEAD
    + """\
smtp = ["tcp:0:interface=127.0.0.1"]
"""
)


def waitUntil(condition: Any, timeout: float = 10.0) -> None:
    """
    Poll C{condition} from a thread (the server is another process).

    @raise AssertionError: it stayed false for C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def inbox(dataDir: Path, address: str) -> list[bytes]:
    """
    @return: the messages in C{address}'s INBOX under C{dataDir}.
    """
    base = folderDirectory(userDirectory(mailRootOf(dataDir), address), "INBOX")
    return [p.read_bytes() for p in sorted((base / "new").glob("*"))]


class TwistdExtensionTests(TestCase):
    """
    SMTPUTF8 and DSN against C{twistd mta} in a subprocess, with the real
    admin command and the real log file.
    """

    timeout = 60

    def setUp(self) -> None:
        base = Path(self.mktemp()).absolute()
        base.mkdir()
        self.config = base / "mta.toml"
        self.config.write_text(CONFIG)
        self.dataDir = base / "data"
        self.log = base / "mta.log"
        self.server = ServerProcess(self.config, self.log)
        self.server.start()
        self.addCleanup(self.server.stop)
        self.port = self.server.ports["smtp:0"]

    def admin(self, *argv: str, stdin: str = "") -> str:
        """
        Run C{mta --config ... argv}; insist it succeeded quietly.

        @return: its output.
        """
        result = runAdmin(self.config, *argv, stdin=stdin)
        self.assertEqual((result.returncode, result.stderr), (0, ""), argv)
        return result.stdout

    def test_smtputf8ToUTF8User(self) -> Any:
        """smtplib with SMTPUTF8 from jörg@bücher.example to jürgen@, made by mta user add: delivered to jürgen's Maildir, logged in readable UTF-8."""
        return deferToThread(self._smtputf8)

    def _smtputf8(self) -> None:
        self.admin("user", "add", JUERGEN, "--password-stdin", stdin="grüße 1\n")
        body = "Subject: grüße\r\nFrom: Jörg <jörg@bücher.example>\r\n\r\nhallo\r\n".encode()
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            refused = c.sendmail(JOERG, [JUERGEN], body, mail_options=["SMTPUTF8"])
        self.assertEqual(refused, {})
        waitUntil(lambda: len(inbox(self.dataDir, JUERGEN)) == 1)
        maildir = self.dataDir / "mail" / "example.com" / "jürgen" / "new"
        [stored] = [p.read_bytes() for p in maildir.iterdir()]
        self.assertTrue(stored.startswith(f"Return-Path: <{JOERG}>\r\n".encode()), stored[:200])
        self.assertIn(f"Delivered-To: {JUERGEN}\r\n".encode(), stored)
        self.assertIn(b" with UTF8SMTP id ", stored)
        self.assertTrue(stored.endswith(b"\r\n" + body))
        wanted = f"from=<{JOERG}> to=<{JUERGEN}> ip=127.0.0.1".encode()
        waitUntil(lambda: wanted in self.log.read_bytes())
        [line] = [x for x in self.log.read_bytes().splitlines() if b" smtp: id=" in x]
        self.assertIn(b"result=250 ", line)
        self.assertNotIn(b"\\x", line)
        self.assertNotIn(b"xn--", line)

    def test_dsnParametersKeptInQueue(self) -> Any:
        """smtplib with RET, ENVID, NOTIFY and ORCPT to a relay recipient: mta queue show lists them in the queued envelope."""
        return deferToThread(self._dsn)

    def _dsn(self) -> None:
        remote = "someone@remote.test"
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            refused = c.sendmail(
                "x@remote.test",
                [remote],
                b"Subject: dsn\r\n\r\nplease tell me\r\n",
                mail_options=["RET=HDRS", "ENVID=env+2B42"],
                rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Someone@remote.test"],
            )
        self.assertEqual(refused, {})
        # No DNS answers in tests: the relay recipient stays queued.
        waitUntil(lambda: "pending" in self.admin("queue", "list"))
        [line] = self.admin("queue", "list").splitlines()
        queueId = line.split()[0]
        envelope = json.loads(self.admin("queue", "show", "--json", queueId))
        self.assertEqual((envelope["dsn_ret"], envelope["dsn_envid"]), ("HDRS", "env+42"))
        [rcpt] = envelope["recipients"]
        self.assertEqual(rcpt["address"], remote)
        self.assertEqual(rcpt["notify"], ["SUCCESS", "FAILURE"])
        self.assertEqual(rcpt["orcpt"], "RFC822;Someone@remote.test")
        self.assertIn("Subject: dsn", envelope["headers"])


class ExtensionTests(TestCase):
    """
    BDAT, REQUIRETLS and the header-From check on the in-process tree.
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

    @inlineCallbacks
    def test_bdatOverStartTLS(self) -> Any:
        """A raw client over STARTTLS (python ssl) pipelines three BDAT chunks and BDAT 0 LAST: the Maildir copy is the chunks byte for byte."""
        parts = [
            b"Subject: chunked\r\nFrom: x@remote.test\r\n\r\n",
            b"line one\r\n.\r\n..dots stay\r\nbare words \xc3\xa9 8-bit",
            b"\r\nlast line\r\n",
        ]
        message = b"".join(parts)

        def talk() -> tuple[bytes, bytes, str]:
            s = connect(self.server.ports["smtp"])
            try:
                s.sendall(b"EHLO client.test\r\n")
                readReply(s)
                s.sendall(b"STARTTLS\r\n")
                readReply(s)
                tls = insecureContext().wrap_socket(s, server_hostname="mx.example.com")
                tls.sendall(b"EHLO client.test\r\n")
                ehlo = readReply(tls)
                pipelined = b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.com>\r\n"
                for part in parts:
                    pipelined += b"BDAT %d\r\n" % len(part) + part
                tls.sendall(pipelined + b"BDAT 0 LAST\r\nQUIT\r\n")
                answers = b"".join(readReply(tls) for _ in range(7))
                return ehlo, answers, str(tls.version())
            finally:
                s.close()

        ehlo, answers, version = yield deferToThread(talk)
        self.assertIn(b"250-CHUNKING\r\n", ehlo)
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(replyCodes(answers), [b"250"] * 6 + [b"221"])
        self.assertIn(b"\r\n250 2.0.0 %d octets received\r\n" % len(parts[1]), answers)
        [stored] = yield self.arrived(ALICE)
        self.assertIn(b" with ESMTPS id ", stored)
        self.assertTrue(stored.endswith(b"\r\n" + message), stored[-200:])

    @inlineCallbacks
    def test_requireTLS(self) -> Any:
        """smtplib with REQUIRETLS: accepted and delivered over STARTTLS, 530 5.7.10 in plaintext."""
        port = self.server.ports["smtp"]

        def send() -> tuple[int, bytes | str] | None:
            refused = None
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                c.ehlo("client.test")
                assert not c.has_extn("requiretls"), c.esmtp_features
                try:
                    c.sendmail("x@remote.test", [BOB], b"Subject: p\r\n\r\np\r\n", ["REQUIRETLS"])
                except smtplib.SMTPSenderRefused as e:
                    refused = (e.smtp_code, e.smtp_error)
                c.starttls(context=insecureContext())
                c.ehlo("client.test")
                assert c.has_extn("requiretls"), c.esmtp_features
                c.sendmail(
                    "x@remote.test", [ALICE], b"Subject: t\r\n\r\nunder TLS\r\n", ["REQUIRETLS"]
                )
            return refused

        refused = yield deferToThread(send)
        self.assertIsNotNone(refused, "REQUIRETLS accepted in plaintext")
        code, error = refused
        self.assertEqual(code, 530)
        self.assertTrue(error.startswith(b"5.7.10 "), error)
        [stored] = yield self.arrived(ALICE)
        self.assertTrue(stored.endswith(b"\r\n\r\nunder TLS\r\n"))
        self.assertEqual(self.server.delivered(BOB), [])

    @inlineCallbacks
    def test_submissionForeignFromRefused(self) -> Any:
        """Submission under STARTTLS and login: a From header naming bob gets 550 5.7.1 (SMTPDataError) and is not delivered; alice's own From then is."""
        port = self.server.ports["submission"]

        def send() -> tuple[int, bytes | str] | None:
            answer = None
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                c.starttls(context=insecureContext())
                c.login(ALICE, PASSWORD)
                forged = b"From: Bob <bob@example.com>\r\nSubject: forged\r\n\r\nforged\r\n"
                try:
                    c.sendmail(ALICE, [BOB], forged)
                except smtplib.SMTPDataError as e:
                    answer = (e.smtp_code, e.smtp_error)
                # The marker: once it is in, the forged one would be too.
                own = b"From: Alice <alice@example.com>\r\nSubject: own\r\n\r\nmarker\r\n"
                c.sendmail(ALICE, [BOB], own)
            return answer

        answer = yield deferToThread(send)
        self.assertIsNotNone(answer, "the forged From was accepted")
        code, error = answer
        self.assertEqual(code, 550)
        self.assertTrue(error.startswith(b"5.7.1 From header"), error)
        [stored] = yield self.arrived(BOB)
        self.assertIn(b"\r\n\r\nmarker\r\n", stored)
        yield waitFor(lambda: not self.server.queue.items)
        self.assertEqual(len(self.server.delivered(BOB)), 1)


class RateLimitTests(TestCase):
    """
    C{[limits] messages_per_hour} on a real tree.
    """

    timeout = 60

    @inlineCallbacks
    def test_fourthMessageDeferred(self) -> Any:
        """With messages_per_hour = 3, alice's 4th message gets 451 4.7.1 at MAIL while bob still sends."""
        config = testConfig(
            Path(self.mktemp()).absolute(),
            limits=replace(LimitsConfig(), messages_per_hour=3),
        )
        server = yield startServer(self, config)
        yield deferToThread(server.addUser, ALICE, PASSWORD)
        yield deferToThread(server.addUser, BOB, PASSWORD)
        port = server.ports["submission"]

        def send() -> tuple[int, bytes | str] | None:
            refused = None
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                c.starttls(context=insecureContext())
                c.login(ALICE, PASSWORD)
                for n in range(3):
                    c.sendmail(ALICE, [BOB], b"Subject: %d\r\n\r\nok\r\n" % n)
                try:
                    c.sendmail(ALICE, [BOB], b"Subject: 4\r\n\r\none too many\r\n")
                except smtplib.SMTPSenderRefused as e:
                    refused = (e.smtp_code, e.smtp_error)
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                c.starttls(context=insecureContext())
                c.login(BOB, PASSWORD)
                c.sendmail(BOB, [ALICE], b"Subject: bob\r\n\r\nstill fine\r\n")
            return refused

        refused = yield deferToThread(send)
        self.assertIsNotNone(refused, "the 4th message was accepted")
        code, error = refused
        self.assertEqual(code, 451)
        self.assertTrue(error.startswith(b"4.7.1 "), error)
        yield waitFor(lambda: len(server.delivered(ALICE)) == 1 and not server.queue.items)
        self.assertEqual(len(server.delivered(BOB)), 3)
        self.assertNotIn(b"one too many", b"".join(server.delivered(BOB)))
