"""
A private Postfix relay for tests: Debian's C{postfix}, started with
C{postfix -c CONF start} from a configuration, queue and log of its own in
a temporary directory, listening on 127.0.0.1 only, relaying whatever
127.0.0.0/8 sends it and delivering nothing locally::

    relay = PrivatePostfix(Path(case.mktemp()), {"b.test": f"smtp:[127.0.0.1]:{port}"})
    relay.start()           # blocking; raises PostfixFailed with its log
    case.addCleanup(relay.stop)
    smtplib.SMTP("127.0.0.1", relay.port)

The next hop of each destination comes from C{transport_maps} (or from
C{relayhost}), with the host in brackets so that Postfix looks nothing up
in DNS; its own system resolver is never asked.  No STARTTLS is offered
(C{smtpd_tls_security_level = none}); it uses STARTTLS opportunistically
towards the next hop (C{smtp_tls_security_level = may}, no certificate
checks).

Postfix must be installed (C{postfix} package) and started by root; when
it cannot be, L{needPostfix} raises L{SkipTest}.

Blocking calls only: run them in set-up or from a thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

from twisted.trial.unittest import SkipTest

from mta.testing.dovecot import freePort

#: Where Debian installs the administration command (not always on PATH).
_CANDIDATES = ("/usr/sbin/postfix", "/usr/local/sbin/postfix")
#: Where Debian installs the daemons (C{master}, C{smtpd}, C{smtp}...).
_DAEMONS = "/usr/lib/postfix/sbin"
#: Seconds one C{postfix} command may take.
COMMAND_TIMEOUT = 30


class PostfixFailed(RuntimeError):
    """
    Postfix did not start; the message holds its output and log.
    """


def postfixBinary() -> str | None:
    """
    @return: the path of the C{postfix} command, or C{None} when Postfix
        (with its daemons) is not installed.
    """
    if not (Path(_DAEMONS) / "master").exists():
        return None
    found = shutil.which("postfix")
    candidates = [found] if found else []
    candidates += [c for c in _CANDIDATES if os.access(c, os.X_OK)]
    return candidates[0] if candidates else None


def needPostfix() -> str:
    """
    @return: the C{postfix} command.
    @raise SkipTest: Postfix is not installed, or this is not root.
    """
    binary = postfixBinary()
    if binary is None:
        raise SkipTest("Postfix is not installed (apt-get install postfix)")
    if os.geteuid() != 0:
        raise SkipTest("a private Postfix must be started by root")
    return binary


class PrivatePostfix:
    """
    One Postfix instance, relay only.

    @ivar directory: where the log and the configuration are copied when
        the instance stops (for a failed test's post-mortem).  The live
        instance is in a short-named directory in C{/tmp} (Postfix's
        sockets are below its queue directory, and a socket path has at
        most 107 bytes), removed by L{stop}.
    @ivar transports: C{transport_maps} entries: domain to next hop, such
        as C{smtp:[127.0.0.1]:2525}.
    @ivar relayhost: C{relayhost}, the next hop of other destinations
        (empty: none, so that they would need DNS).
    @ivar hostname: C{myhostname}, in Postfix's greeting and C{Received}.
    @ivar port: the smtpd port on 127.0.0.1 (chosen on L{start}).
    """

    def __init__(
        self,
        directory: Path,
        transports: Mapping[str, str],
        relayhost: str = "",
        hostname: str = "postfix.relay.test",
        binary: str | None = None,
    ) -> None:
        self.directory = directory.absolute()
        self.transports = dict(transports)
        self.relayhost = relayhost
        self.hostname = hostname
        self.binary = binary or postfixBinary() or "postfix"
        self.port = 0
        self.base = Path()
        self._started = False

    @property
    def conf(self) -> Path:
        return self.base / "etc"

    @property
    def queue(self) -> Path:
        return self.base / "queue"

    @property
    def log(self) -> Path:
        return self.base / "postfix.log"

    def mainCf(self) -> str:
        """
        @return: the text of C{main.cf}.
        """
        b = self.base
        return textwrap.dedent(
            f"""\
            # A private Postfix for tests (mta.testing.postfix): loopback, relay only.
            compatibility_level = 3.6
            queue_directory = {b}/queue
            data_directory = {b}/data
            command_directory = /usr/sbin
            daemon_directory = {_DAEMONS}
            meta_directory = /etc/postfix
            shlib_directory = /usr/lib/postfix
            mail_owner = postfix
            setgid_group = postdrop
            maillog_file = {b}/postfix.log
            maillog_file_prefixes = {b}

            myhostname = {self.hostname}
            mydomain = relay.test
            myorigin = $myhostname
            inet_interfaces = 127.0.0.1
            inet_protocols = ipv4
            smtpd_banner = $myhostname ESMTP Postfix

            # Relay only: nothing is local, 127.0.0.0/8 may relay anywhere,
            # the next hop comes from the transport table (or relayhost),
            # bracketed so that no MX or A lookup is made.
            mydestination =
            local_recipient_maps =
            local_transport = error:no local delivery
            alias_maps =
            alias_database =
            relay_domains =
            mynetworks = 127.0.0.0/8
            relayhost = {self.relayhost}
            transport_maps = texthash:{b}/etc/transport
            smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
            smtpd_recipient_restrictions =
            smtpd_client_restrictions =
            smtpd_helo_restrictions =
            smtpd_sender_restrictions =
            smtpd_peername_lookup = no
            smtp_host_lookup = native
            append_dot_mydomain = no
            biff = no
            smtputf8_enable = no

            # TLS: none offered; opportunistic towards the next hop.
            smtpd_tls_security_level = none
            smtp_tls_security_level = may
            smtp_tls_loglevel = 1

            # A test wants its message at once, and a refusal as a refusal.
            queue_run_delay = 1s
            minimal_backoff_time = 1s
            maximal_backoff_time = 2s
            smtp_connect_timeout = 5s
            smtp_helo_timeout = 10s
            """
        )

    def masterCf(self) -> str:
        """
        @return: the text of C{master.cf}.
        """
        return textwrap.dedent(
            f"""\
            # service type  private unpriv  chroot  wakeup  maxproc command
            127.0.0.1:{self.port} inet n  -       n       -       -       smtpd
            pickup    unix  n       -       n       60      1       pickup
            cleanup   unix  n       -       n       -       0       cleanup
            qmgr      unix  n       -       n       300     1       qmgr
            tlsmgr    unix  -       -       n       1000?   1       tlsmgr
            rewrite   unix  -       -       n       -       -       trivial-rewrite
            bounce    unix  -       -       n       -       0       bounce
            defer     unix  -       -       n       -       0       bounce
            trace     unix  -       -       n       -       0       bounce
            verify    unix  -       -       n       -       1       verify
            flush     unix  n       -       n       1000?   0       flush
            proxymap  unix  -       -       n       -       -       proxymap
            proxywrite unix -       -       n       -       1       proxymap
            smtp      unix  -       -       n       -       -       smtp
            relay     unix  -       -       n       -       -       smtp
            showq     unix  n       -       n       -       -       showq
            error     unix  -       -       n       -       -       error
            retry     unix  -       -       n       -       -       error
            discard   unix  -       -       n       -       -       discard
            anvil     unix  -       -       n       -       1       anvil
            scache    unix  -       -       n       -       1       scache
            postlog   unix-dgram n  -       n       -       1       postlogd
            """
        )

    def _postfix(
        self, *args: str, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "-c", str(self.conf), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _must(self, *args: str) -> None:
        try:
            done = self._postfix(*args)
        except subprocess.TimeoutExpired:
            self.stop()
            raise PostfixFailed(f"postfix {' '.join(args)} timed out:\n{self.logText()}") from None
        if done.returncode != 0:
            self.stop()
            raise PostfixFailed(
                f"postfix {' '.join(args)} failed ({done.returncode}): {done.stdout.strip()}\n"
                f"{self.logText()}"
            )

    def start(self, timeout: float = 20.0) -> None:
        """
        Write the configuration, check it and start Postfix; return once
        its smtpd greets on L{port}.

        @raise SkipTest: Postfix is not installed or this is not root.
        @raise PostfixFailed: it did not start or greet within C{timeout}
            seconds (what was started is stopped then).
        """
        needPostfix()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.base = Path(tempfile.mkdtemp(prefix="postfix-"))
        self.base.chmod(0o755)
        for sub in ("etc", "queue", "data"):
            (self.base / sub).mkdir()
        self.port = freePort()
        (self.conf / "main.cf").write_text(self.mainCf())
        (self.conf / "master.cf").write_text(self.masterCf())
        (self.conf / "transport").write_text(
            "".join(f"{domain} {nexthop}\n" for domain, nexthop in self.transports.items())
        )
        self._started = True
        self._must("set-permissions")
        self._must("check")
        self._must("start")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"220"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PostfixFailed(f"postfix did not greet in {timeout} s:\n{self.logText()}")
            time.sleep(0.05)

    def logText(self) -> str:
        """
        @return: the instance's log so far (or as kept by L{stop}).
        """
        for log in (self.log, self.directory / "postfix.log"):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                return log.read_text("utf-8", "replace")
        return ""

    def queued(self) -> list[str]:
        """
        @return: the queue files not yet delivered (any queue).
        """
        return [
            name
            for sub in ("maildrop", "incoming", "active", "deferred", "hold")
            for _, _, files in os.walk(self.queue / sub)
            for name in files
        ]

    def _masterPid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """
        C{postfix stop}; if the master is still there after C{timeout}
        seconds, SIGKILL to it and its process group (its daemons).  The
        log and configuration are copied to L{directory}, the instance
        removed.  Idempotent.
        """
        if not self._started:
            return
        self._started = False
        try:
            self._stop(timeout)
        finally:
            for name in ("postfix.log", "etc"):
                source = self.base / name
                with contextlib.suppress(OSError):
                    if source.is_dir():
                        shutil.copytree(source, self.directory / name, dirs_exist_ok=True)
                    elif source.exists():
                        shutil.copy(source, self.directory / name)
            shutil.rmtree(self.base, ignore_errors=True)

    def _stop(self, timeout: float) -> None:
        pid = self._masterPid()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._postfix("stop", timeout=timeout)
        if pid is None:
            return
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        # The master is a session leader (setsid): its daemons are in its
        # process group.  They exit on their own once it is gone; one still
        # there after a few seconds is killed.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """
    @return: whether process C{pid} exists and is not a zombie.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    return True


__all__ = ["PostfixFailed", "PrivatePostfix", "needPostfix", "postfixBinary"]
