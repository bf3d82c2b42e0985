"""
Accepted means safe: SIGKILL a real server during a burst of deliveries,
restart it, and find every message that got a 250 in the Maildir.
"""

from __future__ import annotations

import smtplib
import threading
import time
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mta.store.maildir import folderDirectory, mailRootOf, userDirectory
from tests.e2e.serverprocess import CONFIG_HEAD, ServerProcess, runAdmin

CONFIG = (
    CONFIG_HEAD
    + """\
smtp = ["tcp:0:interface=127.0.0.1"]
"""
)


def subjects(maildir: Path) -> list[str]:
    """
    @return: the C{Subject: burst-N} values found in a Maildir's new/ and cur/.
    """
    found = []
    for sub in ("new", "cur"):
        for p in (maildir / sub).iterdir() if (maildir / sub).exists() else []:
            for line in p.read_bytes().split(b"\r\n"):
                if line.startswith(b"Subject: burst-"):
                    found.append(line[9:].decode())
    return found


class CrashTests(TestCase):
    """
    kill -9 at any moment loses nothing accepted.
    """

    timeout = 180

    def test_sigkillLosesNothingAccepted(self) -> Any:
        """Every message acknowledged with 250 before a SIGKILL is delivered after restart."""
        return deferToThread(self._crashAndRecover)

    def _crashAndRecover(self) -> None:
        base = Path(self.mktemp()).absolute()
        base.mkdir()
        config = base / "mta.toml"
        config.write_text(CONFIG)
        result = runAdmin(
            config, "user", "add", "alice@example.com", "--password-stdin", stdin="pw\n"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        server = ServerProcess(config, base / "mta.log")
        server.start()
        self.addCleanup(server.stop)
        accepted = self._burst(server.ports["smtp:0"], server)
        self.assertGreater(len(accepted), 20, "the burst should have had time to get going")
        server.start()
        maildir = folderDirectory(
            userDirectory(mailRootOf(base / "data"), "alice@example.com"), "INBOX"
        )
        deadline = time.monotonic() + 60
        while not set(accepted) <= set(subjects(maildir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        missing = set(accepted) - set(subjects(maildir))
        self.assertEqual(
            missing, set(), f"{len(missing)} of {len(accepted)} accepted messages lost"
        )

    def _burst(self, port: int, server: ServerProcess) -> list[str]:
        """
        Send from 8 threads; SIGKILL the server once 40 messages are
        accepted, while the others are mid-transaction.

        @return: the subjects of the messages that got a 250.
        """
        accepted: list[str] = []
        lock = threading.Lock()
        killed = threading.Event()

        def sender(n: int) -> None:
            i = 0
            while not killed.is_set():
                subject = f"burst-{n}-{i}"
                i += 1
                try:
                    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
                        c.sendmail(
                            "x@remote.test",
                            ["alice@example.com"],
                            f"Subject: {subject}\r\n\r\n{'x' * 2000}\r\n".encode(),
                        )
                except (OSError, smtplib.SMTPException):
                    continue
                with lock:
                    accepted.append(subject)
                    if len(accepted) >= 40 and not killed.is_set():
                        server.kill()
                        killed.set()

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return accepted
