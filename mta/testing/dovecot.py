"""
A private Dovecot IMAP server for tests: Debian's C{dovecot-imapd}, run in
the foreground with its whole configuration, state and logs in a temporary
directory, listening on 127.0.0.1 only, without TLS, and killed when the
test is done::

    server = PrivateDovecot(Path(case.mktemp()), f"maildir:{root}/%d/%n")
    server.prepareMailDir(root / "example.com" / "alice", Path.cwd())
    server.addUser("alice@example.com", "secret")
    server.start()          # blocking; raises DovecotFailed with its log
    case.addCleanup(server.stop)
    imaplib.IMAP4("127.0.0.1", server.port)

Dovecot refuses to run mail processes as root, so when the test runs as
root the users' mail is owned by C{nobody} (the helper makes the mail
directories it is told about theirs: see L{PrivateDovecot.prepareMailDir});
as another user, Dovecot runs entirely as that user.

Blocking calls only: run them in set-up or from a thread.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: Where Debian installs the master binary (not always on a user's PATH).
_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
#: Where Debian installs the services (C{imap}, C{imap-login}...).
_LIBEXEC = "/usr/lib/dovecot"


class DovecotFailed(RuntimeError):
    """
    Dovecot did not start; the message holds its log.
    """


def dovecotBinary() -> str | None:
    """
    @return: the path of the C{dovecot} master binary, or C{None} when it
        is not installed (with its C{imap} service).
    """
    if not (Path(_LIBEXEC) / "imap").exists():
        return None
    found = shutil.which("dovecot")
    candidates = [found] if found else []
    candidates += [c for c in _CANDIDATES if os.access(c, os.X_OK)]
    return candidates[0] if candidates else None


def dovecotVersion(binary: str) -> str:
    """
    @return: what C{dovecot --version} says, such as C{2.3.19.1 (9b53102964)}.
    """
    done = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def freePort() -> int:
    """
    @return: a TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mailOwner() -> tuple[int, int, str, str]:
    """
    @return: C{(uid, gid, login user, internal user)} for the Dovecot
        processes: root's users are Debian's (C{dovenull}, C{dovecot})
        with mail owned by C{nobody}; anyone else's are that user.
    """
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return me.pw_uid, me.pw_gid, me.pw_name, me.pw_name
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid, "dovenull", "dovecot"


class PrivateDovecot:
    """
    One Dovecot instance.

    @ivar directory: holds C{dovecot.conf}, C{dovecot.log} and
        C{dovecot.stderr}, read by root only.  What Dovecot's unprivileged
        processes read (C{passwd}), its state, the users' homes and its
        sockets are in a short-named directory in C{/tmp} (a socket path
        has at most 107 bytes), removed by L{stop}.
    @ivar mailLocation: Dovecot's C{mail_location} (C{%d} the domain, C{%n}
        the local part of the login name).
    @ivar port: the IMAP port on 127.0.0.1 (chosen on L{start}).
    """

    def __init__(self, directory: Path, mailLocation: str, binary: str | None = None) -> None:
        self.directory = directory.absolute()
        self.mailLocation = mailLocation
        self.binary = binary or dovecotBinary() or "dovecot"
        self.port = 0
        self._users: list[tuple[str, str]] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._private = Path()
        self.uid, self.gid, self._loginUser, self._internalUser = _mailOwner()

    @property
    def log(self) -> Path:
        return self.directory / "dovecot.log"

    def addUser(self, address: str, password: str) -> None:
        """
        Let C{address} log in with C{password} (before L{start}).
        """
        if ":" in address + password or "\n" in address + password:
            raise ValueError("no colon or newline in a passwd-file entry")
        self._users.append((address, password))

    def prepareMailDir(self, path: Path, within: Path) -> None:
        """
        Create C{path} (and its missing parents) for the mail user, who
        creates what is below it, and let that user reach it: each of its
        existing ancestors below C{within} gets C{o+x} (trial's temporary
        directories are C{0700}).
        """
        missing: list[Path] = []
        for parent in [path, *path.parents]:
            if parent.exists():
                break
            missing.append(parent)
        path.mkdir(parents=True, exist_ok=True)
        for made in missing:
            os.chown(made, self.uid, self.gid)
            made.chmod(0o755)
        within = within.absolute()
        for parent in path.parents:
            if parent == within or within not in parent.parents:
                break
            if parent not in missing:
                parent.chmod(parent.stat().st_mode | 0o001)

    def config(self) -> str:
        """
        @return: the text of C{dovecot.conf}.
        """
        d, p = self.directory, self._private
        return f"""\
# A private Dovecot for tests (mta.testing.dovecot): loopback, no TLS.
protocols = imap
listen = 127.0.0.1
base_dir = {p}/run
state_dir = {p}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {self._loginUser}
default_internal_user = {self._internalUser}
first_valid_uid = 1
mail_location = {self.mailLocation}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {p}/passwd
}}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={p}/home/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""

    def start(self, timeout: float = 10.0) -> None:
        """
        Write the configuration and run C{dovecot -F}; return once it
        greets on its port.

        @raise DovecotFailed: it exited, or did not greet within
            C{timeout} seconds (it is stopped then).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self._private = Path(tempfile.mkdtemp(prefix="dovecot-"))
        self._private.chmod(0o755)
        home = self._private / "home"
        home.mkdir()
        os.chown(home, self.uid, self.gid)
        passwd = "".join(f"{a}:{{PLAIN}}{p}::::::\n" for a, p in self._users)
        (self._private / "passwd").write_text(passwd)
        self.port = freePort()
        conf = self.directory / "dovecot.conf"
        conf.write_text(self.config())
        with open(self.directory / "dovecot.stderr", "wb") as stderr:
            self._process = subprocess.Popen(
                [self.binary, "-F", "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        process = self._process
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                self.stop()
                raise DovecotFailed(f"dovecot exited {process.returncode}:\n{self.logText()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise DovecotFailed(f"dovecot did not greet in {timeout} s:\n{self.logText()}")
            time.sleep(0.05)

    def logText(self) -> str:
        parts = []
        for name in ("dovecot.stderr", "dovecot.log"):
            with contextlib.suppress(FileNotFoundError):
                parts.append((self.directory / name).read_text("utf-8", "replace"))
        return "\n".join(parts)

    def stop(self, timeout: float = 5.0) -> None:
        """
        Stop Dovecot and every process it started (its own process group):
        SIGTERM, then SIGKILL after C{timeout} seconds.  Idempotent.
        """
        process, self._process = self._process, None
        if process is None:
            return
        try:
            self._kill(process, timeout)
        finally:
            shutil.rmtree(self._private, ignore_errors=True)

    def _kill(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        # Children that outlive the master (they exit on their own once it
        # is gone; a stuck one is killed).
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


__all__ = ["DovecotFailed", "PrivateDovecot", "dovecotBinary", "dovecotVersion", "freePort"]
