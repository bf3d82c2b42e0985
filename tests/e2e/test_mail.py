"""
End to end: the real service tree on loopback, driven by clients nobody
here wrote (smtplib, swaks, poplib).
"""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e.harness import RunningServer, startServer, waitFor

PASSWORD = "correct horse battery staple"


def insecureContext() -> ssl.SSLContext:
    """
    A client TLS context that accepts the self-signed test certificate.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def submitMessage(
    port: int,
    recipients: Sequence[str],
    data: bytes,
    sender: str = "alice@example.com",
    **options: Any,
) -> Any:
    """
    Send C{data} from C{sender} through the submission port C{port} as a
    mail client does: STARTTLS, AUTH as C{sender} with L{PASSWORD}, then
    the mail; in a thread, since smtplib blocks.

    @param options: for C{sendmail} (C{mail_options}, C{rcpt_options}).
    @return: a L{Deferred} firing with C{sendmail}'s refused recipients.
    """

    def send() -> Any:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
            c.starttls(context=insecureContext())
            c.login(sender, PASSWORD)
            return c.sendmail(sender, list(recipients), data, **options)

    return deferToThread(send)


class SMTPEndToEndTests(TestCase):
    """
    Mail in over SMTP and submission, out into the Maildir.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        self.server: RunningServer = yield startServer(self)
        yield deferToThread(self.server.addUser, "alice@example.com", PASSWORD)

    def sendmail(self, port: int, sender: str, rcpts: list[str], message: bytes) -> Any:
        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                return client.sendmail(sender, rcpts, message)

        return deferToThread(send)

    @inlineCallbacks
    def test_smtplibToMaildir(self) -> Any:
        """A message sent with smtplib lands in the Maildir byte-exact, 8-bit and dots included."""
        body = (
            b"Subject: test\r\nFrom: x@remote.test\r\n\r\n"
            b".leading dot\r\n..two dots\r\n.\r\n"
            b"caf\xc3\xa9 8-bit \xff\xfe\r\n"
        )
        yield self.sendmail(self.server.ports["smtp"], "x@remote.test", ["alice@example.com"], body)
        yield waitFor(lambda: len(self.server.delivered("alice@example.com")) == 1)
        [stored] = self.server.delivered("alice@example.com")
        self.assertTrue(
            stored.startswith(
                b"Return-Path: <x@remote.test>\r\nDelivered-To: alice@example.com\r\nReceived: "
            )
        )
        self.assertTrue(stored.endswith(b"\r\n" + body))
        yield waitFor(lambda: not self.server.queue.items)

    @inlineCallbacks
    def test_largeMessage(self) -> Any:
        """A 5 MB message arrives intact."""
        line = b"0123456789" * 7 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * (5 * 1024 * 1024 // len(line))
        yield self.sendmail(self.server.ports["smtp"], "x@remote.test", ["alice@example.com"], body)
        yield waitFor(lambda: len(self.server.delivered("alice@example.com")) == 1)
        self.assertTrue(self.server.delivered("alice@example.com")[0].endswith(b"\r\n" + body))

    @inlineCallbacks
    def test_replyCodes(self) -> Any:
        """Unknown users get 550 5.1.1 and relaying 554 5.7.1 from a real client."""

        def talk() -> tuple[Any, Any]:
            with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=30) as c:
                c.ehlo("client.test")
                c.mail("x@remote.test")
                return c.rcpt("nobody@example.com"), c.rcpt("postmaster@example.com")

        unknown, postmaster = yield deferToThread(talk)
        self.assertEqual(unknown[0], 550)
        self.assertIn(b"5.1.1", unknown[1])
        self.assertEqual(postmaster[0], 250)

    @inlineCallbacks
    def test_submissionWithStartTLSAndAuth(self) -> Any:
        """Submission: STARTTLS, AUTH PLAIN, then mail to a local user."""

        yield submitMessage(
            self.server.ports["submission"], ["alice@example.com"], b"Subject: s\r\n\r\nhi\r\n"
        )
        yield waitFor(lambda: len(self.server.delivered("alice@example.com")) == 1)
        stored = self.server.delivered("alice@example.com")[0]
        self.assertIn(b"with ESMTPSA", stored)
        self.assertIn(b"Message-ID: <", stored)

    @inlineCallbacks
    def test_submissionsWrongPassword(self) -> Any:
        """Implicit TLS submission refuses a wrong password with 535."""

        def submit() -> Any:
            with smtplib.SMTP_SSL(
                "127.0.0.1",
                self.server.ports["submissions"],
                timeout=30,
                context=insecureContext(),
            ) as c:
                c.login("alice@example.com", "wrong")

        f = yield self.assertFailure(deferToThread(submit), smtplib.SMTPAuthenticationError)
        self.assertEqual(f.smtp_code, 535)

    @inlineCallbacks
    def test_swaks(self) -> Any:
        """swaks, a real SMTP client, delivers through STARTTLS and AUTH LOGIN."""
        if shutil.which("swaks") is None:
            raise SkipTest("swaks is not installed (apt-get install swaks)")
        argv = [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(self.server.ports["submission"]),
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "alice@example.com",
            "--auth-password",
            PASSWORD,
            "--from",
            "alice@example.com",
            "--to",
            "alice@example.com",
            "--body",
            "from swaks",
            "--timeout",
            "20",
        ]
        result = yield deferToThread(subprocess.run, argv, capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout.decode(errors="replace")[-2000:])
        yield waitFor(lambda: len(self.server.delivered("alice@example.com")) == 1)
        self.assertIn(b"from swaks", self.server.delivered("alice@example.com")[0])


class QueueCommandTests(TestCase):
    """
    C{mta queue list|show|flush|delete} against a running server.
    """

    timeout = 60

    @inlineCallbacks
    def test_listAndDeleteWhileRunning(self) -> Any:
        """A waiting message is listed with its state, then deleted by the running server."""
        from mta.admin import main

        server: RunningServer = yield startServer(self)
        config = server.config.data_dir / "mta.toml"
        config.write_text(
            f'hostname = "mx.example.com"\ndata_dir = "{server.config.data_dir}"\n'
            'domains = ["example.com"]\n'
        )
        yield self.sendmailTo(server, ["far@remote.test"])
        yield waitFor(lambda: len(server.queue.items) == 1)
        [queueId] = list(server.queue.items)
        envelopeFile = server.config.data_dir / "queue" / f"{queueId}.env"
        # The CLI reads the disk: wait for the first attempt's outcome there
        # (the envelope updated after an attempt is written beside the message).
        yield waitFor(lambda: envelopeFile.exists() and "4.4.3" in envelopeFile.read_text())
        out = yield deferToThread(self.runMain, main, ["--config", str(config), "queue", "list"])
        self.assertIn(queueId, out[1])
        self.assertIn("<far@remote.test>(pending: 451 4.4.3", out[1])
        out = yield deferToThread(
            self.runMain, main, ["--config", str(config), "queue", "delete", queueId]
        )
        self.assertEqual(out[0], 0, out)
        self.assertEqual(server.queue.items, {})
        queueDir = server.config.data_dir / "queue"
        self.assertEqual(list(queueDir.glob(f"{queueId}.msg")), [])
        self.assertEqual(list(queueDir.glob(f"{queueId}.env")), [])

    def sendmailTo(self, server: RunningServer, rcpts: list[str]) -> Any:
        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as c:
                return c.sendmail("x@example.com", rcpts, b"Subject: q\r\n\r\nq\r\n")

        return deferToThread(send)

    @staticmethod
    def runMain(main: Any, argv: list[str]) -> tuple[int, str]:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(argv)
        return code, out.getvalue()
