"""
Runs mta as a real C{twistd} subprocess, for tests that must kill it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from mta.store.maildir import folderDirectory, mailRootOf, userDirectory

REPO = Path(__file__).resolve().parents[2]

#: The start of every subprocess test's config, up to its C{[listen]}
#: lines: domain example.com, data in C{data/} beside the file, and DNS
#: at a nameserver that is not there, so no lookup leaves the machine.
CONFIG_HEAD = """\
hostname = "mx.example.com"
data_dir = "data"
domains = ["example.com"]
[dns]
nameservers = ["127.0.0.1:9"]
[listen]
"""


def twistdArgv(config: Path, log: Path) -> list[str]:
    """
    @return: the command line of C{twistd -n mta --config CONFIG}, logging
        to C{log}, from this checkout.
    """
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        f"--logfile={log}",
        "mta",
        "--config",
        str(config),
    ]


_LISTENING = re.compile(r"mta: listening: (\S+) on \S+:(\d+)")


def environment() -> dict[str, str]:
    """
    @return: an environment in which the subprocess imports this tree.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def runAdmin(config: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """
    Run the C{mta} admin command (blocking).
    """
    return subprocess.run(
        [sys.executable, "-m", "mta", "--config", str(config), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment(),
        timeout=60,
        check=False,
    )


def newInstance(base: Path, config: str, user: str, password: str) -> tuple[Path, Path]:
    """
    Make a server's directory: C{base} (created), its C{mta.toml} holding
    C{config}, and C{user} added with the real C{mta user add} (blocking).

    @return: the config file and the INBOX Maildir of C{user}.
    @raise RuntimeError: the command failed.
    """
    base.mkdir()
    path = base / "mta.toml"
    path.write_text(config)
    result = runAdmin(path, "user", "add", user, "--password-stdin", stdin=password + "\n")
    if result.returncode != 0:
        raise RuntimeError(f"mta user add failed: {result.stderr}")
    inbox = folderDirectory(userDirectory(mailRootOf(base / "data"), user), "INBOX")
    return path, inbox


class ServerProcess:
    """
    C{twistd -n mta --config PATH} in a subprocess.

    @ivar ports: listener name (C{smtp:0}) to bound port, read from the log.
    """

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 30.0) -> None:
        """
        Start and wait until every listener has logged its port (blocking).
        """
        self.log.write_text("")
        argv = twistdArgv(self.config, self.log)
        self.process = subprocess.Popen(argv, env=environment(), cwd=self.config.parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ports = {
                m.group(1): int(m.group(2)) for m in _LISTENING.finditer(self.log.read_text())
            }
            if self._expected() <= set(self.ports):
                return
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mta exited with {self.process.returncode}: {self.log.read_text()[-2000:]}"
                )
            time.sleep(0.05)
        raise RuntimeError("mta did not start listening in time")

    def _expected(self) -> set[str]:
        """
        @return: the listener names (C{smtp:0}, ...) the config asks for.
        """
        with self.config.open("rb") as f:
            listen = tomllib.load(f).get("listen", {})
        return {
            f"{name}:{i}" for name, descriptions in listen.items() for i in range(len(descriptions))
        }

    def kill(self) -> None:
        """
        SIGKILL: no clean-up of any kind.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """
        SIGTERM and wait.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
