"""
End to end: a real C{twistd -n mta} whose queue cannot be loaded stops
with one clear line and a non-zero exit status, having opened no listener.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.e2e.serverprocess import CONFIG_HEAD, environment, twistdArgv

CONFIG = (
    CONFIG_HEAD
    + """\
smtp = ["tcp:0:interface=127.0.0.1"]
pop3 = ["tcp:0:interface=127.0.0.1"]
"""
)


class QueueLoadFailureTests(TestCase):
    """
    The queue is loaded before anything listens, and a failure is fatal.
    """

    timeout = 120

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).absolute()
        (self.base / "data").mkdir(parents=True)
        self.config = self.base / "mta.toml"
        self.config.write_text(CONFIG)
        self.log = self.base / "mta.log"

    def twistd(self) -> subprocess.CompletedProcess[str]:
        """
        Run C{twistd -n mta --config ...} to its end (blocking).
        """
        argv = twistdArgv(self.config, self.log)
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=environment(),
            cwd=self.base,
            timeout=60,
            check=False,
        )

    def assertStoppedWithOneLine(self, result: subprocess.CompletedProcess[str]) -> None:
        """
        Exit status 1, one C{mta: queue: cannot load ...} line on stderr,
        and no listener ever opened.
        """
        queueDir = self.base / "data" / "queue"
        self.assertEqual(result.returncode, 1, result.stderr)
        [line] = result.stderr.splitlines()
        self.assertTrue(line.startswith(f"mta: queue: cannot load {queueDir}: "), line)
        log = self.log.read_text() if self.log.exists() else ""
        self.assertNotIn("listening", log)

    def test_queueIsAFile(self) -> Any:
        """A data_dir/queue that is a regular file stops the start."""
        (self.base / "data" / "queue").write_text("not a folder\n")
        return deferToThread(self.twistd).addCallback(self.assertStoppedWithOneLine)

    def test_queueEntryUnreadable(self) -> Any:
        """A queue entry that cannot be read (a folder named like a message) stops the start."""
        (self.base / "data" / "queue" / "0dZKKYNNfv0007nh.msg").mkdir(parents=True)
        return deferToThread(self.twistd).addCallback(self.assertStoppedWithOneLine)
