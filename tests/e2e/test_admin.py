"""
End to end: a change made with the real C{mta user|alias} command is in
effect for a running C{twistd mta} by the time the command returns.
"""

from __future__ import annotations

import poplib
import smtplib
import ssl
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.e2e.serverprocess import CONFIG_HEAD, ServerProcess, runAdmin

CONFIG = (
    CONFIG_HEAD
    + """\
smtp = ["tcp:0:interface=127.0.0.1"]
submission = ["tcp:0:interface=127.0.0.1"]
pop3 = ["tcp:0:interface=127.0.0.1"]
"""
)

#: How many times in a row a fresh user must log in at once.
ROUNDS = 50


def insecureContext() -> ssl.SSLContext:
    """
    A client TLS context that accepts the self-signed certificate.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class AdminChangesInEffectTests(TestCase):
    """
    C{mta user add|del} and C{mta alias add|del} against a real server.
    """

    timeout = 300

    def setUp(self) -> None:
        base = Path(self.mktemp()).absolute()
        base.mkdir()
        self.config = base / "mta.toml"
        self.config.write_text(CONFIG)
        self.server = ServerProcess(self.config, base / "mta.log")
        self.server.start()
        self.addCleanup(self.server.stop)

    def admin(self, *argv: str, stdin: str = "") -> None:
        """
        Run C{mta --config ... argv} and insist it succeeded quietly.
        """
        result = runAdmin(self.config, *argv, stdin=stdin)
        self.assertEqual((result.returncode, result.stderr), (0, ""), argv)

    def popLogin(self, user: str, password: str) -> None:
        """
        Log in over POP3 (plaintext USER/PASS: loopback allowed).

        @raise poplib.error_proto: the login failed.
        """
        client = poplib.POP3("127.0.0.1", self.server.ports["pop3:0"], timeout=30)
        try:
            client.user(user)
            client.pass_(password)
        finally:
            client.quit()

    def smtpLogin(self, user: str, password: str) -> None:
        """
        Log in on the submission port, after STARTTLS.

        @raise smtplib.SMTPAuthenticationError: the login failed.
        """
        with smtplib.SMTP("127.0.0.1", self.server.ports["submission:0"], timeout=30) as c:
            c.starttls(context=insecureContext())
            c.login(user, password)

    def rcpt(self, address: str) -> int:
        """
        @return: the server's reply code to C{RCPT TO:<address>} on the MX port.
        """
        with smtplib.SMTP("127.0.0.1", self.server.ports["smtp:0"], timeout=30) as c:
            c.ehlo("client.example.org")
            c.mail("x@remote.test")
            code, _ = c.rcpt(address)
            return code

    def test_newUserLogsInAtOnce(self) -> Any:
        """
        Fifty times in a row, a user made by C{mta user add} logs in over
        POP3 and SMTP AUTH the moment the command returns.
        """
        return deferToThread(self._addAndLogIn)

    def _addAndLogIn(self) -> None:
        failures = []
        for n in range(ROUNDS):
            user, password = f"user{n}@example.com", f"pw {n}"
            self.admin("user", "add", user, "--password-stdin", stdin=password + "\n")
            try:
                self.popLogin(user, password)
            except poplib.error_proto as e:
                failures.append(f"pop3 {user}: {e!r}")
            try:
                self.smtpLogin(user, password)
            except smtplib.SMTPException as e:
                failures.append(f"smtp {user}: {e!r}")
        self.assertEqual(failures, [])

    def test_deletedUserRefusedAtOnce(self) -> Any:
        """
        Right after C{mta user del} the user's login fails, over both protocols.
        """
        return deferToThread(self._deleteAndLogIn)

    def _deleteAndLogIn(self) -> None:
        self.admin("user", "add", "gone@example.com", "--password-stdin", stdin="pw\n")
        self.popLogin("gone@example.com", "pw")
        self.admin("user", "del", "gone@example.com")
        self.assertRaises(poplib.error_proto, self.popLogin, "gone@example.com", "pw")
        self.assertRaises(smtplib.SMTPAuthenticationError, self.smtpLogin, "gone@example.com", "pw")

    def test_aliasInEffectAtOnce(self) -> Any:
        """
        Right after C{mta alias add} the alias is accepted at RCPT, and
        right after C{mta alias del} it is refused.
        """
        return deferToThread(self._aliasAddAndDel)

    def _aliasAddAndDel(self) -> None:
        self.admin("user", "add", "alice@example.com", "--password-stdin", stdin="pw\n")
        for n in range(5):
            alias = f"team{n}@example.com"
            self.assertEqual(self.rcpt(alias), 550)
            self.admin("alias", "add", alias, "alice@example.com")
            self.assertEqual(self.rcpt(alias), 250)
            self.admin("alias", "del", alias)
            self.assertEqual(self.rcpt(alias), 550)
