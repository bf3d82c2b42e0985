"""
Hostile clients against the real server: hundreds of idle connections,
a 1 MB line, garbage; afterwards a fresh client is still served.
"""

from __future__ import annotations

import os
import smtplib
import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.e2e.harness import RunningServer, startServer, waitFor
from tests.e2e.test_mail import PASSWORD


def connectFrom(source: str, port: int) -> socket.socket:
    """
    Connect to 127.0.0.1:port from the loopback address C{source}.
    """
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


class HostileClientTests(TestCase):
    """
    A misbehaving client never takes the server down or hurts others.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        self.server: RunningServer = yield startServer(self)
        yield deferToThread(self.server.addUser, "alice@example.com", PASSWORD)

    def freshClientWorks(self) -> None:
        with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=30) as c:
            c.sendmail("x@remote.test", ["alice@example.com"], b"Subject: after\r\n\r\nok\r\n")

    @inlineCallbacks
    def test_hundredsOfIdleConnections(self) -> Any:
        """300 idle connections from six addresses; the 51st from one address is refused; others are served."""
        port = self.server.ports["smtp"]

        def flood() -> tuple[list[socket.socket], bytes]:
            held = []
            for i in range(300):
                s = connectFrom(f"127.0.0.{2 + i // 50}", port)
                held.append(s)
                assert s.recv(100).startswith(b"220")
            extra = connectFrom("127.0.0.2", port)
            held.append(extra)
            return held, extra.recv(100)

        held, refusal = yield deferToThread(flood)
        try:
            self.assertTrue(refusal.startswith(b"421 4.7.0"), refusal)
            yield deferToThread(self.freshClientWorks)
        finally:
            for s in held:
                s.close()
        yield waitFor(lambda: len(self.server.delivered("alice@example.com")) == 1)

    @inlineCallbacks
    def test_giantLineAndGarbage(self) -> Any:
        """A 1 MB line and 64 KB of random bytes get errors; the server then serves a fresh client."""
        port = self.server.ports["smtp"]

        def abuse() -> tuple[bytes, bytes]:
            s = connectFrom("127.0.0.1", port)
            s.recv(100)
            s.sendall(b"EHLO " + b"a" * (1024 * 1024) + b"\r\n")
            first = s.recv(200)
            g = connectFrom("127.0.0.1", port)
            g.recv(100)
            try:
                g.sendall(os.urandom(65536))
                tail = b""
                while chunk := g.recv(4096):
                    tail += chunk
            except OSError:
                tail = b"(reset)"
            s.close()
            g.close()
            return first, tail

        first, tail = yield deferToThread(abuse)
        self.assertTrue(first.startswith(b"500 5.5.2"), first[:100])
        self.assertTrue(b"421" in tail or tail == b"(reset)", tail[-200:])
        yield deferToThread(self.freshClientWorks)
        yield waitFor(lambda: len(self.server.delivered("alice@example.com")) == 1)
