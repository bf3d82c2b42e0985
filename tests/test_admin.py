"""
Tests for L{mta.admin}: the C{mta} command.
"""

from __future__ import annotations

import datetime
import getpass
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from mta import admin, auth
from mta.admin import main
from mta.auth import verifyPassword
from mta.directory.files import FileDirectory
from mta.envelope import Address
from mta.queue.control import ControlError, ControlRequests
from mta.queue.describe import describeMessage
from mta.queue.spool import Spool
from mta.threads import SynchronousRunner
from tests.test_spool import makeEnvelope
from tests.test_tls import makeKey, pem

CONFIG = """\
hostname = "mail.example.com"
data_dir = "data"
domains = ["example.com", "example.org"]
"""

# Real argon2id with the cheapest parameters: verifyPassword accepts any,
# and the production cost (a good fraction of a second) would make this
# module slow.  test_realHash runs the production hasher once.
_cheapHasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class AdminTestCase(SynchronousTestCase):
    """
    Runs L{main} against a config in a temporary folder, capturing stdin,
    stdout and stderr.
    """

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir()
        self.config = self.base / "mta.toml"
        self.config.write_text(CONFIG)
        self.dataDir = self.base / "data"
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.patch(getpass, "getpass", self.noPrompt)
        self.realHashPassword = auth.hashPassword
        self.patch(auth, "hashPassword", _cheapHasher.hash)

    def noPrompt(self, prompt: str = "") -> str:
        """
        Fail: this test must not prompt.
        """
        raise AssertionError(f"unexpected prompt {prompt!r}")

    def run_(self, *argv: str, stdin: str = "") -> int:
        """
        Run C{mta --config <ours> argv...} with C{stdin}.
        """
        self.patch(sys, "stdin", io.StringIO(stdin))
        return main(["--config", str(self.config), *argv])

    def addUser(self, address: str, password: str = "s3cret pass") -> int:
        """
        Run C{mta user add address --password-stdin}.
        """
        return self.run_("user", "add", address, "--password-stdin", stdin=password + "\n")

    def directory(self) -> FileDirectory:
        """
        @return: a fresh view of the directory the commands changed.
        """
        return FileDirectory(self.dataDir, ["example.com", "example.org"])

    def assertFailed(self, status: int, line: str) -> None:
        """
        Assert exit status 1 and exactly C{line} on stderr, nothing on stdout.
        """
        self.assertEqual((status, self.stderr.getvalue()), (1, line + "\n"))
        self.assertEqual(self.stdout.getvalue(), "")


class UserCommandTests(AdminTestCase):
    """
    C{mta user add|passwd|del|list}.
    """

    def test_addWithPasswordStdin(self) -> None:
        """
        C{user add --password-stdin} stores an argon2id hash of the first
        line (only the newline stripped) and prints nothing.
        """
        self.assertEqual(self.addUser("Alice@Example.com", " s3cret pass "), 0)
        stored = self.directory().passwordHash("alice@example.com")
        assert stored is not None
        self.assertTrue(stored.startswith("$argon2id$"))
        self.assertTrue(verifyPassword(stored, " s3cret pass "))
        self.assertEqual((self.stdout.getvalue(), self.stderr.getvalue()), ("", ""))

    def test_realHash(self) -> None:
        """
        C{user add} hashes with L{mta.auth.hashPassword}.
        """
        self.patch(auth, "hashPassword", self.realHashPassword)
        self.addUser("alice@example.com", "pw")
        stored = self.directory().passwordHash("alice@example.com")
        assert stored is not None
        self.assertTrue(stored.startswith("$argon2id$"))
        self.assertNotIn("m=8,", stored)

    def test_addCreatesMailFolders(self) -> None:
        """
        C{user add} creates INBOX and the special folders.
        """
        self.addUser("alice@example.com")
        home = self.dataDir / "mail" / "example.com" / "alice"
        for folder in ["", ".Sent", ".Drafts", ".Trash", ".Junk"]:
            self.assertTrue((home / folder / "cur").is_dir(), folder)

    def test_addInteractive(self) -> None:
        """
        Without C{--password-stdin} the password is asked twice.
        """
        prompts: list[str] = []

        def fakeGetpass(prompt: str = "") -> str:
            prompts.append(prompt)
            return "typed twice"

        self.patch(getpass, "getpass", fakeGetpass)
        self.assertEqual(self.run_("user", "add", "bob@example.com"), 0)
        self.assertEqual(len(prompts), 2)
        stored = self.directory().passwordHash("bob@example.com")
        assert stored is not None
        self.assertTrue(verifyPassword(stored, "typed twice"))

    def test_addMismatchedPasswords(self) -> None:
        """
        Two different entries fail and create nothing.
        """
        answers: Iterator[str] = iter(["one", "two"])
        self.patch(getpass, "getpass", lambda prompt="": next(answers))
        status = self.run_("user", "add", "bob@example.com")
        self.assertFailed(status, "mta: passwords do not match")
        self.assertEqual(self.directory().users(), [])
        self.assertFalse((self.dataDir / "mail").exists())

    def test_addEmptyPassword(self) -> None:
        """
        An empty password is refused.
        """
        status = self.run_("user", "add", "bob@example.com", "--password-stdin", stdin="\n")
        self.assertFailed(status, "mta: empty password")

    def test_addExisting(self) -> None:
        """
        Adding an existing user fails before asking for a password.
        """
        self.addUser("alice@example.com")
        status = self.run_("user", "add", "ALICE@example.com")
        self.assertFailed(status, "mta: user alice@example.com exists")

    def test_addNonLocal(self) -> None:
        """
        A user outside the local domains is refused before any prompt.
        """
        status = self.run_("user", "add", "x@remote.net")
        self.assertFailed(status, "mta: remote.net is not a local domain")

    def test_addNotAnAddress(self) -> None:
        """
        Text that is not an address is refused with one line.
        """
        status = self.run_("user", "add", "alice")
        self.assertFailed(status, "mta: not an address: 'alice'")

    def test_passwd(self) -> None:
        """
        C{user passwd} replaces the password.
        """
        self.addUser("alice@example.com", "old")
        status = self.run_("user", "passwd", "alice@example.com", "--password-stdin", stdin="new\n")
        self.assertEqual(status, 0)
        stored = self.directory().passwordHash("alice@example.com")
        assert stored is not None
        self.assertTrue(verifyPassword(stored, "new"))
        self.assertFalse(verifyPassword(stored, "old"))

    def test_passwdUnknown(self) -> None:
        """
        C{user passwd} of nobody fails before any prompt.
        """
        status = self.run_("user", "passwd", "carol@example.com")
        self.assertFailed(status, "mta: no such user carol@example.com")

    def test_delAndList(self) -> None:
        """
        C{user list} prints one address per line; C{user del} removes one.
        """
        self.addUser("bob@example.org")
        self.addUser("alice@example.com")
        self.assertEqual(self.run_("user", "del", "bob@example.org"), 0)
        self.assertEqual(self.run_("user", "list"), 0)
        self.assertEqual(self.stdout.getvalue(), "alice@example.com\n")

    def test_delUnknown(self) -> None:
        """
        C{user del} of nobody fails.
        """
        status = self.run_("user", "del", "carol@example.com")
        self.assertFailed(status, "mta: no such user carol@example.com")

    def test_runningDirectorySeesAdd(self) -> None:
        """
        A directory loaded before C{mta user add} sees the user after
        L{FileDirectory.reloadIfChanged}, as the running server does.
        """
        running = self.directory()
        self.addUser("alice@example.com")
        self.assertFalse(running.isUser(Address.parse("alice@example.com")))
        self.assertTrue(running.reloadIfChanged())
        self.assertTrue(running.isUser(Address.parse("alice@example.com")))

    def test_defaultConfigUsesMtaData(self) -> None:
        """
        Without C{--config} the embedded default is used: data in
        C{./mta-data}, domain C{localhost}.
        """
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self.base)
        self.patch(sys, "stdin", io.StringIO("pw\n"))
        status = main(["user", "add", "root@localhost", "--password-stdin"])
        self.assertEqual(status, 0)
        self.assertIn("root@localhost:", (self.base / "mta-data" / "users").read_text())


class RunningServerTests(AdminTestCase):
    """
    With a server running on the data dir, C{user} and C{alias} changes
    return only once it has loaded them.
    """

    def setUp(self) -> None:
        super().setUp()
        self.lock = ControlRequests(self.dataDir / "queue").holdLock()
        self.addCleanup(self.lock.close)
        self.server = FileDirectory(self.dataDir, ["example.com", "example.org"], True)
        self.sleeps: list[float] = []
        self.patch(admin, "_sleep", self.serverSleep)

    def serverSleep(self, seconds: float) -> None:
        """
        While the command sleeps the server reloads, as its inotify
        watcher would.
        """
        self.sleeps.append(seconds)
        self.server.reloadIfChanged()

    def test_userAddWaitsForServer(self) -> None:
        """
        When C{user add} returns, the running server knows the new user.
        """
        self.assertEqual(self.addUser("alice@example.com"), 0)
        self.assertNotEqual(self.sleeps, [])
        self.assertIsNotNone(self.server.passwordHash("alice@example.com"))
        self.assertEqual(self.stderr.getvalue(), "")

    def test_everyChangeWaits(self) -> None:
        """
        C{user passwd}, C{user del}, C{alias add} and C{alias del} each
        return with the server up to date.
        """
        self.addUser("alice@example.com", "old")
        old = self.server.passwordHash("alice@example.com")
        self.run_("user", "passwd", "alice@example.com", "--password-stdin", stdin="new\n")
        self.assertNotEqual(self.server.passwordHash("alice@example.com"), old)
        self.run_("alias", "add", "team@example.com", "alice@example.com")
        self.assertIsNotNone(self.server.resolve(Address.parse("team@example.com")))
        self.run_("alias", "del", "team@example.com")
        self.assertIsNone(self.server.resolve(Address.parse("team@example.com")))
        self.run_("user", "del", "alice@example.com")
        self.assertIsNone(self.server.passwordHash("alice@example.com"))
        self.assertEqual(self.stderr.getvalue(), "")

    def test_silentServerWarns(self) -> None:
        """
        A server that does not confirm within the timeout gets one warning
        line; the change is made and the status is 0.
        """
        now = [0.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds

        self.patch(admin, "_sleep", sleep)
        self.patch(admin, "_monotonic", lambda: now[0])
        self.assertEqual(self.addUser("alice@example.com"), 0)
        self.assertGreaterEqual(now[0], admin.LOAD_TIMEOUT)
        self.assertEqual(
            self.stderr.getvalue(),
            "mta: warning: saved, but the running server did not confirm loading "
            "the change within 5 seconds (see its log)\n",
        )
        self.assertIn("alice@example.com", self.directory().users())

    def test_noServerNoWait(self) -> None:
        """
        Without a server holding the queue lock, nothing is waited for.
        """
        self.lock.close()
        self.assertEqual(self.addUser("alice@example.com"), 0)
        self.assertEqual(self.sleeps, [])


class AliasCommandTests(AdminTestCase):
    """
    C{mta alias add|del|list}.
    """

    def test_addListDel(self) -> None:
        """
        Aliases are added (targets merged), listed and deleted.
        """
        self.addUser("alice@example.com")
        self.assertEqual(self.run_("alias", "add", "team@example.com", "alice@example.com"), 0)
        self.assertEqual(self.run_("alias", "add", "team@example.com", "x@remote.net"), 0)
        self.assertEqual(self.run_("alias", "add", "postmaster@example.org", "team@example.com"), 0)
        self.assertEqual(self.run_("alias", "list"), 0)
        self.assertEqual(
            self.stdout.getvalue(),
            "postmaster@example.org: team@example.com\n"
            "team@example.com: alice@example.com, x@remote.net\n",
        )
        self.assertEqual(self.run_("alias", "del", "postmaster@example.org"), 0)
        resolved = self.directory().resolve(Address.parse("team@example.com"))
        self.assertEqual(len(resolved or ()), 2)

    def test_addToNobody(self) -> None:
        """
        An alias to a local address that is nobody is refused.
        """
        status = self.run_("alias", "add", "team@example.com", "carol@example.com")
        self.assertFailed(status, "mta: no such user or alias carol@example.com")

    def test_addOverUser(self) -> None:
        """
        An alias cannot take a user's address.
        """
        self.addUser("alice@example.com")
        status = self.run_("alias", "add", "alice@example.com", "x@remote.net")
        self.assertFailed(
            status, "mta: alice@example.com is a user; an alias cannot have its address"
        )

    def test_addWithoutTargets(self) -> None:
        """
        C{alias add} needs a target: a usage error, exit 1, one line.
        """
        status = self.run_("alias", "add", "team@example.com")
        self.assertEqual(status, 1)
        self.assertEqual(len(self.stderr.getvalue().splitlines()), 1)
        self.assertIn("TARGET", self.stderr.getvalue())

    def test_delUnknown(self) -> None:
        """
        Deleting a missing alias fails.
        """
        status = self.run_("alias", "del", "team@example.com")
        self.assertFailed(status, "mta: no such alias team@example.com")


class QueueCommandTests(AdminTestCase):
    """
    C{mta queue ...} with no server running: it reads and changes the
    queue folder directly.
    """

    def setUp(self) -> None:
        super().setUp()
        self.spool = Spool(self.dataDir / "queue", SynchronousRunner())
        self.spool.storeSync(
            makeEnvelope("Q1"), b"Subject: hello\r\nFrom: s@remote.test\r\n\r\nsecret body\r\n"
        )

    def clearOutput(self) -> None:
        """
        Forget what was printed so far.
        """
        for stream in (self.stdout, self.stderr):
            stream.seek(0)
            stream.truncate()

    def test_listShowDelete(self) -> None:
        """list names the message, show prints its envelope, timeline and headers (never the body), delete removes its file."""
        self.assertEqual(self.run_("queue", "list"), 0)
        [line] = self.stdout.getvalue().splitlines()
        self.assertTrue(line.startswith("Q1 "), line)
        self.assertIn(" 52 <s@remote.test> <alice@example.com>(pending; 0 attempts, next ", line)
        self.clearOutput()
        self.assertEqual(self.run_("queue", "show", "Q1"), 0)
        shown = self.stdout.getvalue()
        self.assertIn("recipient <alice@example.com> (RCPT TO <alice+x@example.com>)", shown)
        self.assertIn("next attempt: ", shown)
        self.assertIn("headers:\n  Subject: hello\n  From: s@remote.test\n", shown)
        self.assertNotIn("secret body", shown)
        self.clearOutput()
        self.assertEqual(self.run_("queue", "delete", "Q1"), 0)
        self.assertEqual(self.stdout.getvalue(), "Q1: deleted\n")
        self.assertFalse((self.dataDir / "queue" / "Q1.msg").exists())
        self.clearOutput()
        self.assertFailed(self.run_("queue", "show", "Q1"), "mta: Q1: no such message in the queue")

    def test_json(self) -> None:
        """list --json and show --json print what json.loads reads back: the envelope's fields and more."""
        self.assertEqual(self.run_("queue", "list", "--json"), 0)
        [message] = json.loads(self.stdout.getvalue())
        self.assertEqual((message["id"], message["size"], message["held"]), ("Q1", 52, False))
        self.clearOutput()
        self.assertEqual(self.run_("queue", "show", "Q1", "--json"), 0)
        message = json.loads(self.stdout.getvalue())
        self.assertEqual(message["recipients"][0]["original"], "alice+x@example.com")
        self.assertEqual(message["headers"], "Subject: hello\r\nFrom: s@remote.test\r\n")

    def test_actionsNeedServer(self) -> None:
        """flush, hold, release and bounce say no server is running and exit 1."""
        for argv in (["flush"], ["hold", "Q1"], ["release", "Q1"], ["bounce", "Q1"]):
            self.clearOutput()
            self.assertFailed(
                self.run_("queue", *argv),
                f"mta: no server is running: queue {argv[0]} needs one "
                "(queued mail is tried when it starts)",
            )


class RunningQueueCommandTests(AdminTestCase):
    """
    C{mta queue ...} with a server holding the queue lock: every command
    is one request on the control socket (here answered by a stand-in).
    """

    def setUp(self) -> None:
        super().setUp()
        self.lock = ControlRequests(self.dataDir / "queue").holdLock()
        self.addCleanup(self.lock.close)
        self.requests: list[tuple[str, str | None]] = []
        self.answers: dict[str, object] = {}
        self.realRequest = ControlRequests.request

        def answer(control: ControlRequests, command: str, queueId: str | None = None) -> object:
            # As the server would: from self.answers, else "no such id".
            self.requests.append((command, queueId))
            if command not in self.answers:
                raise ControlError(f"{queueId}: no such message in the queue")
            return self.answers[command]

        self.patch(ControlRequests, "request", answer)

    def test_actionPrintsReply(self) -> None:
        """hold, release, bounce, flush and delete print the server's one-line answer."""
        for command in ("hold", "release", "bounce", "flush", "delete"):
            self.answers[command] = f"Q1: {command} done"
            self.assertEqual(self.run_("queue", command, "Q1"), 0)
        self.assertEqual(
            self.stdout.getvalue().splitlines(),
            [f"Q1: {c} done" for c in ("hold", "release", "bounce", "flush", "delete")],
        )
        self.assertEqual([q for _, q in self.requests], ["Q1"] * 5)

    def test_refusedExitsOne(self) -> None:
        """An answer that says no ends in one line on stderr and exit 1."""
        self.assertFailed(self.run_("queue", "hold", "Q9"), "mta: Q9: no such message in the queue")

    def test_listFromServer(self) -> None:
        """list renders what the server describes, not the files."""
        self.answers["list"] = [describeMessage(makeEnvelope("Q7"), 99, 1000.0, (60.0,), 3600.0)]
        self.assertEqual(self.run_("queue", "list"), 0)
        self.assertTrue(self.stdout.getvalue().startswith("Q7 "), self.stdout.getvalue())
        self.assertEqual(self.requests, [("list", None)])

    def test_socketMissing(self) -> None:
        """A server that holds the lock but does not answer on the socket gets one error line."""
        self.patch(ControlRequests, "request", self.realRequest)
        self.assertEqual(self.run_("queue", "list"), 1)
        self.assertIn("cannot reach the running server", self.stderr.getvalue())


class CheckAndUsageTests(AdminTestCase):
    """
    C{mta check}, usage errors and what is never printed.
    """

    def test_checkGood(self) -> None:
        """
        A valid config prints C{ok: <source>} and exits 0.
        """
        self.assertEqual(self.run_("check"), 0)
        self.assertEqual(self.stdout.getvalue(), f"ok: {self.config}\n")
        self.assertEqual(self.stderr.getvalue(), "")

    def test_checkBadKey(self) -> None:
        """
        An unknown key fails with one line naming it.
        """
        self.config.write_text(CONFIG + '[listen]\nsmtpp = ["tcp:25"]\n')
        status = self.run_("check")
        self.assertFailed(status, "mta: config: listen.smtpp: unknown key")

    def test_checkBadValue(self) -> None:
        """
        A bad value fails with one line naming its key.
        """
        self.config.write_text(CONFIG.replace('"example.org"', "42"))
        status = self.run_("check")
        self.assertEqual(status, 1)
        self.assertIn("domains", self.stderr.getvalue())
        self.assertEqual(len(self.stderr.getvalue().splitlines()), 1)

    def test_checkMissingFile(self) -> None:
        """
        A config file that is not there fails with one line.
        """
        self.config.unlink()
        status = self.run_("check")
        self.assertEqual(status, 1)
        self.assertIn("cannot read", self.stderr.getvalue())

    def test_checkMalformedUsersFile(self) -> None:
        """
        C{check} also fails on a malformed line in the users file.
        """
        self.dataDir.mkdir()
        (self.dataDir / "users").write_text("nonsense\n")
        status = self.run_("check")
        users = self.dataDir / "users"
        self.assertFailed(status, f"mta: {users} line 1: expected 'address:hash'")

    def test_checkBadListener(self) -> None:
        """
        A listener description Twisted cannot parse fails C{check}, naming
        the key.
        """
        self.config.write_text(CONFIG + '[listen]\nsmtp = ["tcp:abc"]\n')
        status = self.run_("check")
        self.assertEqual(status, 1)
        self.assertTrue(self.stderr.getvalue().startswith("mta: config: listen.smtp: "))
        self.assertEqual(len(self.stderr.getvalue().splitlines()), 1)

    def test_checkSystemdListener(self) -> None:
        """
        A systemd listener passes C{check} on a machine that passed no
        sockets.
        """
        self.config.write_text(CONFIG + '[listen]\nsmtp = ["systemd:domain=INET:index=0"]\n')
        self.assertEqual(self.run_("check"), 0)

    def writeTLS(
        self,
        notBefore: datetime.timedelta = -datetime.timedelta(days=1),
        notAfter: datetime.timedelta = datetime.timedelta(days=30),
        otherKey: bool = False,
    ) -> tuple[Path, Path]:
        """
        Write a certificate valid from now + C{notBefore} to now +
        C{notAfter}, and a key (its own, or another with C{otherKey}), and
        point the config's C{[tls]} at them.
        """
        key = makeKey()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.com")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + notBefore)
            .not_valid_after(now + notAfter)
            .sign(key, hashes.SHA256())
        )
        certPath, keyPath = self.base / "cert.pem", self.base / "key.pem"
        certPath.write_bytes(pem(certificate))
        keyPath.write_bytes(pem(makeKey() if otherKey else key))
        self.config.write_text(
            CONFIG + f'[tls]\ncertificate = "{certPath}"\nprivate_key = "{keyPath}"\n'
        )
        return certPath, keyPath

    def test_checkGoodTLS(self) -> None:
        """
        A readable, matching, valid certificate and key pass C{check}.
        """
        self.writeTLS()
        self.assertEqual(self.run_("check"), 0)

    def test_checkMissingCertificate(self) -> None:
        """
        A certificate file that is not there fails C{check} with one line.
        """
        certPath, _ = self.writeTLS()
        certPath.unlink()
        status = self.run_("check")
        self.assertFailed(
            status,
            f"mta: config: tls.certificate: cannot read {certPath}: No such file or directory",
        )

    def test_checkUnreadableKey(self) -> None:
        """
        A key file that is not a PEM key fails C{check} with one line.
        """
        _, keyPath = self.writeTLS()
        keyPath.write_text("not a key\n")
        status = self.run_("check")
        self.assertFailed(
            status, f"mta: config: tls.private_key: {keyPath} holds no unencrypted PEM private key"
        )

    def test_checkMismatchedKey(self) -> None:
        """
        A key that does not belong to the certificate fails C{check}.
        """
        certPath, keyPath = self.writeTLS(otherKey=True)
        status = self.run_("check")
        self.assertFailed(
            status,
            f"mta: config: tls.private_key: {keyPath} does not match the certificate in {certPath}",
        )

    def test_checkExpiredCertificate(self) -> None:
        """
        An expired certificate fails C{check} with one line saying so.
        """
        certPath, _ = self.writeTLS(
            notBefore=-datetime.timedelta(days=90), notAfter=-datetime.timedelta(days=1)
        )
        status = self.run_("check")
        self.assertEqual(status, 1)
        self.assertTrue(
            self.stderr.getvalue().startswith(
                f"mta: config: tls.certificate: {certPath} expired on "
            )
        )
        self.assertEqual(len(self.stderr.getvalue().splitlines()), 1)

    def test_checkNotYetValidCertificate(self) -> None:
        """
        A certificate whose validity starts in the future fails C{check}.
        """
        certPath, _ = self.writeTLS(notBefore=datetime.timedelta(days=2))
        status = self.run_("check")
        self.assertEqual(status, 1)
        self.assertTrue(
            self.stderr.getvalue().startswith(
                f"mta: config: tls.certificate: {certPath} is not valid before "
            )
        )

    def test_noCommand(self) -> None:
        """
        No command is a usage error: exit 1, one line.
        """
        self.assertEqual(main([]), 1)
        self.assertEqual(len(self.stderr.getvalue().splitlines()), 1)
        self.assertTrue(self.stderr.getvalue().startswith("mta: "))

    def test_unknownCommand(self) -> None:
        """
        An unknown command is a usage error naming it.
        """
        self.assertEqual(self.run_("frobnicate"), 1)
        self.assertIn("frobnicate", self.stderr.getvalue())
        self.assertEqual(len(self.stderr.getvalue().splitlines()), 1)

    def test_help(self) -> None:
        """
        C{--help} prints the commands and exits 0.
        """
        self.assertEqual(main(["--help"]), 0)
        for command in ["user", "alias", "check"]:
            self.assertIn(command, self.stdout.getvalue())

    def test_secretsNeverPrinted(self) -> None:
        """
        Neither passwords nor hashes appear in any output.
        """
        self.addUser("alice@example.com", "topsecret")
        self.addUser("alice@example.com", "topsecret")
        self.run_("user", "list")
        self.run_("alias", "list")
        self.run_("check")
        output = self.stdout.getvalue() + self.stderr.getvalue()
        self.assertNotIn("topsecret", output)
        self.assertNotIn("argon2", output)
