"""
Crash safety of the relay: SIGKILL a real C{twistd} server while a
relay transaction is in flight, restart it, and find the mail owed
delivered once more and the mail already delivered not sent again.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mta.testing.dnsserver import DNSServer
from mta.testing.smtppeer import PeerSession, ScriptReply, SMTPPeer
from tests.e2e.serverprocess import ServerProcess

CONFIG = """\
hostname = "mx.example.com"
data_dir = "data"
domains = ["example.com"]
[dns]
nameservers = ["{nameserver}"]
[listen]
smtp = ["tcp:0:interface=127.0.0.1"]
[relay]
outbound_port = {port}
retry_schedule = ["1s"]
"""

FIRST = "TO:<first@peer.test>"
SECOND = "TO:<second@peer.test>"


def waitUntil(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """
    Poll C{condition} (blocking, in a thread) every 50 ms.

    @return: whether it came true within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def queued(queue: Path) -> list[str]:
    """
    @return: the names of the queue files that hold messages (not the lock
        or a recycled C{.spare} file).
    """
    return [p.name for p in queue.iterdir() if "." not in p.name]


class RelayCrashTests(TestCase):
    """
    kill -9 during a relay transaction loses nothing and repeats nothing done.
    """

    timeout = 90

    @inlineCallbacks
    def test_sigkillDuringRelayTransaction(self) -> Any:
        """After a SIGKILL while the peer holds DATA's reply, the restarted server delivers the owed recipient and never resends the one already delivered."""
        dns = DNSServer(
            {"peer.test": {"MX": [(10, "mx.peer.test")]}, "mx.peer.test": {"A": ["127.0.0.1"]}}
        )
        dns.listen(reactor)
        self.addCleanup(dns.stop)
        self.held: list[Deferred[str]] = []
        self.secondTries = 0
        peer = SMTPPeer(hostname="mx.peer.test", script=self.script)
        port = yield Deferred.fromCoroutine(peer.listen(reactor))
        self.addCleanup(peer.stop)
        base = Path(self.mktemp()).absolute()
        base.mkdir()
        config = base / "mta.toml"
        config.write_text(CONFIG.format(nameserver=dns.nameserver, port=port))
        server = ServerProcess(config, base / "mta.log")
        # Stopped from a thread: its relay says QUIT to the peer, which
        # needs this reactor running to answer.
        self.addCleanup(deferToThread, server.stop)
        yield deferToThread(self.crashAndRecover, server, peer, base / "data" / "queue")

    def script(self, session: PeerSession, verb: str, arg: str) -> ScriptReply:
        """
        C{second@} is refused once with 451; the first message sent for it
        alone has its end-of-data reply held (never given).
        """
        if verb == "RCPT" and "second@" in arg:
            self.secondTries += 1
            return "451 4.2.0 busy, try later" if self.secondTries == 1 else None
        if verb == "." and self.secondTries == 2 and not self.held:
            held: Deferred[str] = Deferred()
            self.held.append(held)
            return held
        return None

    def crashAndRecover(self, server: ServerProcess, peer: SMTPPeer, queue: Path) -> None:
        """
        The blocking part: submit, kill while held, restart, check.
        """
        server.start()
        with smtplib.SMTP("127.0.0.1", server.ports["smtp:0"], timeout=30) as c:
            c.sendmail(
                "app@example.com",
                ["first@peer.test", "second@peer.test"],
                b"Subject: crash\r\n\r\nx\r\n",
            )
        self.assertTrue(waitUntil(lambda: bool(self.held)), "the retry never reached DATA")
        self.assertEqual([t.rcpts for t in peer.accepted], [[FIRST]])
        server.kill()
        self.assertTrue(waitUntil(lambda: peer.lost == peer.connections), "connection not lost")
        server.start()
        self.assertTrue(
            waitUntil(lambda: len(peer.accepted) == 2), f"not delivered: {peer.commands}"
        )
        self.assertTrue(
            waitUntil(lambda: not queued(queue)),
            f"still queued: {queued(queue)}",
        )
        # One more retry period: nothing else may arrive.
        time.sleep(1.2)
        self.assertEqual([t.rcpts for t in peer.accepted], [[FIRST], [SECOND]])
