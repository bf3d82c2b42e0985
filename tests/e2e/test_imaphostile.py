# -*- test-case-name: tests.e2e.test_imaphostile -*-
"""
Hostile IMAP input end to end: raw sockets against the real service tree
on 127.0.0.1 (plaintext, which loopback allows, or implicit TLS), for what
only a real server shows: literals cut by a disconnect, oversized lines
and literals, deep nesting, garbage and 8-bit bytes, the autologout.
The parser's own cases live in C{tests/test_imapparser.py}.  After each
abuse the Maildir holds nothing partial and a fresh client is served.
"""

from __future__ import annotations

import base64
import random
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mta.config import LimitsConfig, loadConfig
from tests.e2e.harness import RunningServer, startServer, testConfig
from tests.e2e.test_mail import PASSWORD, insecureContext

USER = "erin@example.com"
LOGIN = f'L LOGIN {USER} "{PASSWORD}"\r\n'.encode()
#: The APPEND limit of these tests' servers ([limits] message_size).
MESSAGE_SIZE = 200_000
MESSAGE = b"From: x@remote.test\r\nSubject: whole\r\n\r\n" + b"body line\r\n" * 100


def connect(port: int, tls: bool = False) -> socket.socket:
    """
    @return: a socket to 127.0.0.1:C{port}, past the greeting.
    """
    s: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=20)
    if tls:
        s = insecureContext().wrap_socket(s)
    greeting = readLine(s)
    assert greeting.startswith(b"* OK "), greeting
    return s


def readLine(s: socket.socket) -> bytes:
    """
    Read one line, byte by byte so that nothing after it is taken.

    @raise AssertionError: the server closed the connection first.
    """
    data = b""
    while not data.endswith(b"\n"):
        byte = s.recv(1)
        if not byte:
            raise AssertionError(f"connection closed after {data!r}")
        data += byte
    return data


def readUntil(s: socket.socket, tag: bytes) -> list[bytes]:
    """
    @return: the lines up to and including the one tagged C{tag}.
    """
    lines = [readLine(s)]
    while not lines[-1].startswith(tag + b" "):
        lines.append(readLine(s))
    return lines


def readAll(s: socket.socket) -> bytes:
    """
    @return: everything until the server closes the connection.
    """
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def login(port: int, tls: bool = False) -> socket.socket:
    """
    @return: a socket logged in as erin (plaintext from loopback is allowed).
    """
    s = connect(port, tls)
    s.sendall(LOGIN)
    answer = readUntil(s, b"L")[-1]
    assert answer.startswith(b"L OK "), answer
    return s


class HostileIMAPTests(TestCase):
    """
    A hostile IMAP client gets the protocol's answers, stores nothing
    partial, and never keeps the server from serving others.
    """

    timeout = 60
    server: RunningServer

    @inlineCallbacks
    def setUp(self) -> Any:
        limits = replace(LimitsConfig(), message_size=MESSAGE_SIZE)
        config = testConfig(Path(self.mktemp()).absolute(), limits=limits)
        self.server = yield startServer(self, config)
        yield deferToThread(self.server.addUser, USER, PASSWORD)

    @property
    def port(self) -> int:
        return self.server.ports["imap"]

    def mailFiles(self) -> dict[str, list[str]]:
        """
        @return: the names of the files in INBOX's cur, new and tmp.
        """
        base = self.server.maildir(USER)
        return {
            sub: sorted(p.name for p in (base / sub).iterdir()) for sub in ("cur", "new", "tmp")
        }

    def served(self) -> list[bytes]:
        """
        A fresh client logs in over implicit TLS, APPENDs a whole message
        and asks for the INBOX's STATUS.

        @return: the STATUS lines.
        """
        s = login(self.server.ports["imaps"], tls=True)
        try:
            s.sendall(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
            appended = readUntil(s, b"a")[-1]
            assert appended.startswith(b"a OK [APPENDUID "), appended
            s.sendall(b"s STATUS INBOX (MESSAGES)\r\n")
            return readUntil(s, b"s")
        finally:
            s.close()

    def assertOnlyTheWholeMessage(self) -> None:
        """
        After L{served}: INBOX holds its one message, nothing in tmp.
        """
        files = self.mailFiles()
        self.assertEqual(files["tmp"], [])
        [name] = files["cur"] + files["new"]
        self.assertEqual(
            (self.server.maildir(USER) / ("cur" if files["cur"] else "new") / name).read_bytes(),
            MESSAGE,
        )

    @inlineCallbacks
    def test_literalCutByDisconnect(self) -> Any:
        """APPENDs cut mid-literal ({n} and {n+}), one whose literal is whole but whose line never ends, and a LOGIN literal left open store nothing; a session watching INBOX sees only the next whole message."""

        def abuse() -> list[bytes]:
            watcher = login(self.port)
            watcher.sendall(b"w SELECT INBOX\r\n")
            readUntil(watcher, b"w")
            half = MESSAGE[: len(MESSAGE) // 2]
            cuts = [
                b"a APPEND INBOX {%d}\r\n" % len(MESSAGE),
                b"a APPEND INBOX (\\Seen) {%d+}\r\n%s" % (len(MESSAGE), half),
                b"a APPEND INBOX {%d+}\r\n%s" % (len(MESSAGE), MESSAGE),
            ]
            for cut in cuts:
                s = login(self.port)
                s.sendall(cut)
                if cut.endswith(b"}\r\n"):
                    self.assertEqual(readLine(s)[:1], b"+")
                    s.sendall(half)
                s.close()
            s = connect(self.port)
            s.sendall(b"x LOGIN {5}\r\n")
            self.assertEqual(readLine(s)[:1], b"+")
            s.sendall(b"er")
            s.close()
            status = self.served()
            watcher.sendall(b"n NOOP\r\n")
            heard = readUntil(watcher, b"n")
            watcher.close()
            return status + heard

        lines = yield deferToThread(abuse)
        self.assertIn(b"* STATUS INBOX (MESSAGES 1)\r\n", lines)
        self.assertIn(b"* 1 EXISTS\r\n", lines)
        self.assertNotIn(b"* 2 EXISTS\r\n", lines)
        self.assertOnlyTheWholeMessage()

    @inlineCallbacks
    def test_hundredKilobyteLine(self) -> Any:
        """A 100 KB line gets BAD [TOOBIG] and the session goes on; one ending in {n+} gets BAD [TOOBIG] and the close."""

        def abuse() -> tuple[list[bytes], bytes]:
            s = login(self.port)
            s.sendall(b"a SELECT " + b"x" * 100_000 + b"\r\nb NOOP\r\n")
            kept = readUntil(s, b"a") + readUntil(s, b"b")
            s.close()
            s = login(self.port)
            s.sendall(b"c APPEND INBOX " + b"x" * 100_000 + b" {10+}\r\n0123456789\r\nd NOOP\r\n")
            closed = readAll(s)
            s.close()
            return kept, closed

        kept, closed = yield deferToThread(abuse)
        self.assertRegex(kept[0], rb"^a BAD \[TOOBIG\] ")
        self.assertRegex(kept[-1], rb"^b OK ")
        self.assertRegex(closed, rb"BAD \[TOOBIG\] [^\r\n]*\r\n\* BYE [^\r\n]*\r\n\Z")
        self.assertNotIn(b"d OK", closed)
        self.assertIn(b"(MESSAGES 1)", b"".join((yield deferToThread(self.served))))
        self.assertOnlyTheWholeMessage()

    @inlineCallbacks
    def test_longLineForContinuation(self) -> Any:
        """A 100 KB line where IDLE wants DONE or AUTHENTICATE a response ends that command with its own tag's BAD [TOOBIG]; the session goes on."""

        def abuse() -> tuple[list[bytes], list[bytes]]:
            s = login(self.port)
            s.sendall(b"w SELECT INBOX\r\ni IDLE\r\n")
            readUntil(s, b"w")
            assert readLine(s).startswith(b"+ ")
            s.sendall(b"x" * 100_000 + b"\r\nn NOOP\r\n")
            idle = readUntil(s, b"i") + readUntil(s, b"n")
            s.close()
            s = connect(self.port)
            s.sendall(b"p AUTHENTICATE PLAIN\r\n")
            assert readLine(s).startswith(b"+")
            s.sendall(b"x" * 100_000 + b"\r\n" + LOGIN)
            auth = readUntil(s, b"p") + readUntil(s, b"L")
            s.close()
            return idle, auth

        idle, auth = yield deferToThread(abuse)
        self.assertEqual(len(idle), 2, idle)
        self.assertRegex(idle[0], rb"^i BAD \[TOOBIG\] ")
        self.assertRegex(idle[1], rb"^n OK ")
        self.assertEqual(len(auth), 2, auth)
        self.assertRegex(auth[0], rb"^p BAD \[TOOBIG\] ")
        self.assertRegex(auth[1], rb"^L OK ")

    @inlineCallbacks
    def test_commandsPipelinedAfterStarttls(self) -> Any:
        """Plaintext pipelined after STARTTLS is dropped, never run as if sent under TLS (CVE-2011-0411)."""

        def abuse() -> tuple[bytes, bytes]:
            s = connect(self.port)
            s.sendall(b"s STARTTLS\r\n" + LOGIN + b"x SELECT INBOX\r\n")
            started = readLine(s)
            t = insecureContext().wrap_socket(s)
            t.sendall(b"y NOOP\r\nz LOGOUT\r\n")
            after = readAll(t)
            t.close()
            return started, after

        started, after = yield deferToThread(abuse)
        self.assertRegex(started, rb"^s OK ")
        self.assertRegex(after, rb"^y OK [^\r\n]*\r\n\* BYE [^\r\n]*\r\nz OK [^\r\n]*\r\n\Z")

    @inlineCallbacks
    def test_deepNesting(self) -> Any:
        """10,000 nested parentheses in SEARCH, FETCH and APPEND flags get BAD, and the session goes on."""

        def abuse() -> list[bytes]:
            s = login(self.port)
            s.sendall(b"w SELECT INBOX\r\n")
            readUntil(s, b"w")
            deep = b"(" * 10_000
            shut = b")" * 10_000
            s.sendall(
                b"a SEARCH " + deep + b"ALL" + shut + b"\r\n"
                b"b FETCH 1 " + deep + b"FLAGS" + shut + b"\r\n"
                b"c APPEND INBOX " + deep + shut + b" {5+}\r\nhello\r\n"
                b"d SEARCH " + b"NOT " * 10_000 + b"ALL\r\n"
                b"e NOOP\r\n"
            )
            lines = [readUntil(s, tag)[-1] for tag in (b"a", b"b", b"c", b"d", b"e")]
            s.close()
            return lines

        lines = yield deferToThread(abuse)
        for line, tag in zip(lines, (b"a", b"b", b"c", b"d"), strict=False):
            self.assertTrue(line.startswith(tag + b" BAD "), line)
        self.assertTrue(lines[-1].startswith(b"e OK "), lines[-1])
        self.assertEqual(self.mailFiles(), {"cur": [], "new": [], "tmp": []})

    @inlineCallbacks
    def test_garbageAndEightBit(self) -> Any:
        """Garbage bytes and 8-bit bytes in tags, atoms and mailbox names get BAD, before and after login; plaintext bytes on the TLS port are dropped; others are served."""
        rng = random.Random(9)
        garbage = bytes(b for b in rng.randbytes(20_000) if b not in b"{}")
        eightBit = [
            b"a\xff NOOP\r\n",
            b"a SELECT IN\xe9BOX\r\n",
            b"a STATUS INBOX (MESS\xc3\xa9GES)\r\n",
            b"a FETCH 1 (FL\x80GS)\r\n",
            b'a LIST "" \xff*\r\n',
        ]

        def abuse() -> tuple[bytes, bytes, list[bytes], bytes]:
            s = connect(self.port)
            s.sendall(garbage + b"\r\nz NOOP\r\n")
            beforeLogin = b"".join(readUntil(s, b"z"))
            s.sendall(LOGIN)
            afterGarbage = readUntil(s, b"L")[-1]
            s.sendall(b"w SELECT INBOX\r\n" + garbage + b"\r\ny NOOP\r\n")
            afterGarbage += readUntil(s, b"y")[-1]
            answers = []
            for line in eightBit:
                s.sendall(line + b"z NOOP\r\n")
                answers.append(b"".join(readUntil(s, b"z")))
            s.close()
            raw = socket.create_connection(("127.0.0.1", self.server.ports["imaps"]), timeout=20)
            raw.sendall(garbage[:4096] + LOGIN)
            onTLSPort = readAll(raw)
            raw.close()
            return beforeLogin, afterGarbage, answers, onTLSPort

        beforeLogin, afterGarbage, answers, onTLSPort = yield deferToThread(abuse)
        self.assertIn(b"BAD", beforeLogin)
        self.assertRegex(beforeLogin, rb"z OK [^\r\n]*\r\n\Z")
        self.assertNotIn(b"* BYE", beforeLogin)
        self.assertRegex(afterGarbage, rb"^L OK [^\r\n]*\r\ny OK ")
        for line, answer in zip(eightBit, answers, strict=True):
            self.assertRegex(answer, rb"^(\*|a) BAD ", line)
            self.assertRegex(answer, rb"\r\nz OK [^\r\n]*\r\n\Z", line)
        self.assertNotIn(b"OK", onTLSPort)
        self.assertIn(b"(MESSAGES 1)", b"".join((yield deferToThread(self.served))))
        self.assertOnlyTheWholeMessage()

    @inlineCallbacks
    def test_literalPastTheLimit(self) -> Any:
        """A literal past its limit (APPEND's before login: the ordinary one): NO [TOOBIG] instead of "+" for {n} (the session goes on), BAD [TOOBIG] and the close for {n+}; nothing is stored."""

        def abuse() -> tuple[list[bytes], bytes, bytes]:
            s = login(self.port)
            s.sendall(b"a APPEND INBOX {%d}\r\n" % (MESSAGE_SIZE + 1))
            refused = [readLine(s)]
            s.sendall(b"b LOGOUT\r\n")
            refused += readUntil(s, b"b")
            s.close()
            s = connect(self.port)
            s.sendall(b"c LOGIN {100000}\r\n")
            loginRefused = [readLine(s)]
            # Before login, APPEND's literal is held to the ordinary limit:
            # no megabytes buffered for a command that cannot run.
            s.sendall(b"u APPEND INBOX {%d}\r\n" % (MESSAGE_SIZE // 2))
            loginRefused.append(readLine(s))
            s.close()
            s = login(self.port)
            s.sendall(b"d APPEND INBOX {%d+}\r\n" % (MESSAGE_SIZE + 1) + b"x" * 65536)
            closed = readAll(s)
            s.close()
            return refused, loginRefused, closed

        refused, loginRefused, closed = yield deferToThread(abuse)
        self.assertRegex(refused[0], rb"^a NO \[TOOBIG\] ")
        self.assertRegex(refused[-1], rb"^b OK ")
        self.assertRegex(loginRefused[0], rb"^c NO \[TOOBIG\] ")
        self.assertRegex(loginRefused[1], rb"^u NO \[TOOBIG\] ")
        self.assertRegex(closed, rb"^d BAD \[TOOBIG\] [^\r\n]*\r\n\* BYE [^\r\n]*\r\n\Z")
        self.assertEqual(self.mailFiles(), {"cur": [], "new": [], "tmp": []})

    @inlineCallbacks
    def test_plaintextLoginFromLoopback(self) -> Any:
        """Before TLS, from loopback: CAPABILITY offers AUTH=PLAIN without LOGINDISABLED, and both LOGIN and AUTHENTICATE PLAIN work."""

        def run() -> tuple[bytes, bytes, bytes]:
            s = connect(self.port)
            s.sendall(b"c CAPABILITY\r\n")
            capabilities = b"".join(readUntil(s, b"c"))
            s.sendall(LOGIN)
            loggedIn = readUntil(s, b"L")[-1]
            s.close()
            s = connect(self.port)
            plain = b"\0" + USER.encode() + b"\0" + PASSWORD.encode()
            s.sendall(b"p AUTHENTICATE PLAIN " + base64.b64encode(plain) + b"\r\n")
            authenticated = readUntil(s, b"p")[-1]
            s.close()
            return capabilities, loggedIn, authenticated

        capabilities, loggedIn, authenticated = yield deferToThread(run)
        self.assertIn(b" AUTH=PLAIN", capabilities)
        self.assertIn(b" STARTTLS", capabilities)
        self.assertNotIn(b"LOGINDISABLED", capabilities)
        self.assertTrue(loggedIn.startswith(b"L OK "), loggedIn)
        self.assertTrue(authenticated.startswith(b"p OK "), authenticated)


class AutologoutTests(TestCase):
    """
    The autologout timer ([limits] imap_idle) ends idle sessions with BYE.
    """

    timeout = 60

    @inlineCallbacks
    def test_idleSessionsLoggedOut(self) -> Any:
        """With imap_idle = "2s" in the config: an idle logged-in session, one never logged in, one quiet mid-literal and one in IDLE all get * BYE and the close; a busy one is kept."""
        top = Path(self.mktemp()).absolute()
        top.mkdir(parents=True)
        (top / "mta.toml").write_text(
            'domains = ["example.com"]\n[limits]\nimap_idle = "2s"\nconnections_per_ip = 5\n'
        )
        limits = loadConfig(top / "mta.toml").limits
        config = testConfig(top / "data", limits=limits)
        server: RunningServer = yield startServer(self, config)
        yield deferToThread(server.addUser, USER, PASSWORD)
        port = server.ports["imap"]

        def idle(s: socket.socket) -> tuple[bytes, float]:
            started = time.monotonic()
            data = readAll(s)
            s.close()
            return data, time.monotonic() - started

        def busy() -> bytes:
            s = login(port)
            try:
                for i in range(5):
                    time.sleep(0.8)
                    s.sendall(b"n%d NOOP\r\n" % i)
                    readUntil(s, b"n%d" % i)
                s.sendall(b"o LOGOUT\r\n")
                return readAll(s)
            finally:
                s.close()

        def idling() -> socket.socket:
            s = login(port)
            s.sendall(b"w SELECT INBOX\r\ni IDLE\r\n")
            readUntil(s, b"w")
            assert readLine(s).startswith(b"+ ")
            return s

        def halfCommand() -> socket.socket:
            s = login(port)
            s.sendall(b"a APPEND INBOX {10}\r\n")
            assert readLine(s).startswith(b"+")
            s.sendall(b"01234")
            return s

        results = yield gatherResults(
            [
                deferToThread(lambda: idle(login(port))),
                deferToThread(lambda: idle(connect(port))),
                deferToThread(lambda: idle(halfCommand())),
                deferToThread(lambda: idle(idling())),
                deferToThread(busy),
            ]
        )
        for data, elapsed in results[:4]:
            self.assertRegex(data, rb"^\* BYE [^\r\n]*\r\n\Z")
            self.assertGreater(elapsed, 1.0)
            self.assertLess(elapsed, 10.0)
        self.assertRegex(results[4], rb"^\* BYE [^\r\n]*\r\no OK ")


class ConnectionLimitTests(TestCase):
    """
    One address cannot hold more than C{[limits] connections_per_ip}.
    """

    timeout = 60

    @inlineCallbacks
    def test_perAddressLimit(self) -> Any:
        """With connections_per_ip = 3 the fourth IMAP connection gets * BYE and the close; once one closes, a new one is served."""
        limits = replace(LimitsConfig(), connections_per_ip=3)
        config = testConfig(Path(self.mktemp()).absolute(), limits=limits)
        server: RunningServer = yield startServer(self, config)
        yield deferToThread(server.addUser, USER, PASSWORD)
        port = server.ports["imap"]

        def run() -> tuple[bytes, bytes]:
            held = [login(port) for _ in range(3)]
            try:
                extra = socket.create_connection(("127.0.0.1", port), timeout=20)
                refused = readAll(extra)
                extra.close()
                held.pop().close()
                deadline = time.monotonic() + 10
                while True:
                    s = socket.create_connection(("127.0.0.1", port), timeout=20)
                    greeting = readLine(s) if time.monotonic() < deadline else b""
                    if not greeting.startswith(b"* BYE"):
                        break
                    s.close()
                    time.sleep(0.05)
                s.sendall(LOGIN)
                served = readUntil(s, b"L")[-1]
                s.close()
                return refused, served
            finally:
                for s in held:
                    s.close()

        refused, served = yield deferToThread(run)
        self.assertRegex(refused, rb"^\* BYE [^\r\n]*\r\n\Z")
        self.assertTrue(served.startswith(b"L OK "), served)

    @inlineCallbacks
    def test_perUserLimit(self) -> Any:
        """With imap_connections_per_user = 2, logged in once on imap and once on imaps, a third LOGIN is NO [LIMIT] and the connection stays; after a LOGOUT the same connection logs in."""
        limits = replace(LimitsConfig(), imap_connections_per_user=2)
        config = testConfig(Path(self.mktemp()).absolute(), limits=limits)
        server: RunningServer = yield startServer(self, config)
        yield deferToThread(server.addUser, USER, PASSWORD)

        def run() -> tuple[bytes, bytes, bytes]:
            held = [login(server.ports["imap"]), login(server.ports["imaps"], tls=True)]
            extra = connect(server.ports["imap"])
            try:
                extra.sendall(LOGIN)
                refused = readUntil(extra, b"L")[-1]
                extra.sendall(b"C CAPABILITY\r\n")
                capability = b"".join(readUntil(extra, b"C"))
                held[1].sendall(b"Z LOGOUT\r\n")
                readUntil(held[1], b"Z")
                extra.sendall(LOGIN)
                served = readUntil(extra, b"L")[-1]
                return refused, capability, served
            finally:
                for s in [*held, extra]:
                    s.close()

        refused, capability, served = yield deferToThread(run)
        self.assertEqual(refused, b"L NO [LIMIT] Too many connections for this user\r\n")
        self.assertIn(b"AUTH=PLAIN", capability)
        self.assertTrue(served.startswith(b"L OK "), served)
