# -*- test-case-name: tests.e2e.test_smtphostile -*-
"""
Hostile SMTP input end to end: raw sockets against the real service tree
on 127.0.0.1, for what only a real server shows (socket buffers, the
TLS layer, the queue and the Maildir).  The session-level cases live in
C{tests/test_smtphostile.py} and the transcript corpus; idle floods, a
1 MB command line and random garbage in C{tests/e2e/test_hostile.py}.
"""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mta.config import LimitsConfig
from mta.service import ConnectionLimiter
from mta.tap import listeningPorts
from tests.e2e.harness import RunningServer, startServer, testConfig, waitFor
from tests.e2e.test_mail import PASSWORD, insecureContext

ALICE = "alice@example.com"
BOB = "bob@example.com"
_REPLY_END = re.compile(rb"^\d{3} .*\r\n", re.MULTILINE)


def connect(port: int) -> socket.socket:
    """
    @return: a socket connected to 127.0.0.1:C{port}, past the banner.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    banner = readReply(s)
    assert banner.startswith(b"220 "), banner
    return s


def readReply(s: socket.socket | ssl.SSLSocket) -> bytes:
    """
    Read one whole reply (all its lines), byte by byte so that nothing
    after it is taken from the socket.
    """
    data = b""
    while not _REPLY_END.search(data):
        byte = s.recv(1)
        if not byte:
            raise AssertionError(f"connection closed after {data!r}")
        data += byte
    return data


def readAll(s: socket.socket) -> bytes:
    """
    @return: everything until the server closes the connection.
    """
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def replyCodes(data: bytes) -> list[bytes]:
    """
    @return: the code of each reply in C{data} (one per final line).
    """
    return [line[:3] for line in data.split(b"\r\n") if line[3:4] == b" "]


class HostileSMTPTests(TestCase):
    """
    A hostile client gets the protocol's answers, smuggles nothing in, and
    never keeps the server from serving others.
    """

    timeout = 120
    server: RunningServer

    @inlineCallbacks
    def start(self, **limits: Any) -> Any:
        """
        Start a server with C{limits} changed, and users alice and bob.
        """
        config = testConfig(
            Path(self.mktemp()).absolute(), limits=replace(LimitsConfig(), **limits)
        )
        self.server = yield startServer(self, config)
        yield deferToThread(self.server.addUser, ALICE, PASSWORD)
        yield deferToThread(self.server.addUser, BOB, PASSWORD)

    def sendmail(self, port: int, rcpt: str, body: bytes) -> Any:
        """
        Send a normal message with smtplib, in a thread.
        """

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                return c.sendmail("x@remote.test", [rcpt], body)

        return deferToThread(send)

    @inlineCallbacks
    def test_tenThousandRecipientsInOneWrite(self) -> Any:
        """10,000 pipelined RCPTs in one write: 100 accepted, the rest 452 4.5.3, one delivery; another client is served while that session is open."""
        yield self.start(commands=20000)
        port = self.server.ports["smtp"]
        rcpts = b"".join(b"RCPT TO:<alice+%d@example.com>\r\n" % i for i in range(10000))
        flood = (
            b"EHLO flood.test\r\nMAIL FROM:<x@remote.test>\r\n"
            + rcpts
            + b"DATA\r\nSubject: flood\r\n\r\nflood\r\n.\r\n"
        )
        answered, served = threading.Event(), threading.Event()

        def abuse() -> bytes:
            s = connect(port)
            try:
                s.sendall(flood)
                data = b""
                while len(replyCodes(data)) < 10004:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                # Hold the session open while another client is served.
                answered.set()
                served.wait(30)
                s.sendall(b"QUIT\r\n")
                return data + readAll(s)
            finally:
                answered.set()
                s.close()

        def meanwhile() -> Any:
            answered.wait(30)
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                    return c.sendmail("x@remote.test", [BOB], b"Subject: meanwhile\r\n\r\nok\r\n")
            finally:
                served.set()

        answers, _ = yield gatherResults([deferToThread(abuse), deferToThread(meanwhile)])
        codes = replyCodes(answers)
        self.assertEqual(codes[:2], [b"250", b"250"])
        self.assertEqual(codes[2:102], [b"250"] * 100)
        self.assertEqual(codes[102:10002], [b"452"] * 9900)
        self.assertEqual(codes[10002:], [b"354", b"250", b"221"])
        self.assertIn(b"\r\n452 4.5.3 ", answers)
        [stored] = yield self.arrivedFor(ALICE, 1)
        self.assertIn(b"\r\n\r\nflood\r\n", stored)
        yield self.arrivedFor(BOB, 1)

    def arrivedFor(self, address: str, count: int) -> Any:
        """
        @return: a Deferred firing with C{address}'s messages once there
            are C{count}.
        """
        d = waitFor(lambda: len(self.server.delivered(address)) >= count)
        return d.addCallback(lambda _: self.server.delivered(address))

    @inlineCallbacks
    def test_smugglingThroughData(self) -> Any:
        """Every bare-CR/LF fake end of DATA gets 554 5.6.0: neither the carrier nor the smuggled message is delivered."""
        yield self.start()
        port = self.server.ports["smtp"]
        fakeEnds = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n", b"\r.\n"]

        def smuggle() -> list[bytes]:
            s = connect(port)
            answers = []
            try:
                s.sendall(b"EHLO attacker.test\r\n")
                readReply(s)
                for end in fakeEnds:
                    s.sendall(
                        b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"
                    )
                    for _ in range(3):
                        readReply(s)
                    s.sendall(
                        b"Subject: carrier\r\n\r\nhello"
                        + end
                        + b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<bob@example.com>\r\n"
                        b"DATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
                    )
                    answers.append(readReply(s))
                # A proper message in the same session marks the end: once
                # it is delivered, anything smuggled would have been too.
                s.sendall(
                    b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
                    b"Subject: marker\r\n\r\nmarker\r\n.\r\nQUIT\r\n"
                )
                answers.append(readAll(s))
            finally:
                s.close()
            return answers

        answers = yield deferToThread(smuggle)
        for end, answer in zip(fakeEnds, answers, strict=False):
            self.assertTrue(answer.startswith(b"554 5.6.0 "), (end, answer))
        self.assertEqual(replyCodes(answers[-1]), [b"250", b"250", b"354", b"250", b"221"])
        [marker] = yield self.arrivedFor(BOB, 1)
        self.assertIn(b"\r\n\r\nmarker\r\n", marker)
        yield waitFor(lambda: not self.server.queue.items)
        self.assertEqual(self.server.delivered(ALICE), [])
        self.assertEqual(len(self.server.delivered(BOB)), 1)

    @inlineCallbacks
    def test_pipelinedAfterStartTLS(self) -> Any:
        """MAIL sent in plaintext behind STARTTLS is never answered: after the handshake the session starts clean."""
        yield self.start()
        port = self.server.ports["smtp"]

        def inject() -> tuple[bytes, bytes, bytes]:
            s = connect(port)
            try:
                s.sendall(b"EHLO attacker.test\r\n")
                readReply(s)
                s.sendall(b"STARTTLS\r\nMAIL FROM:<x@remote.test>\r\n")
                go = readReply(s)
                # Anything more in plaintext here would break the handshake.
                tls = insecureContext().wrap_socket(s, server_hostname="mx.example.com")
                tls.sendall(b"RCPT TO:<alice@example.com>\r\n")
                rcpt = readReply(tls)
                tls.sendall(b"EHLO attacker.test\r\nMAIL FROM:<x@remote.test>\r\n")
                readReply(tls)
                mail = readReply(tls)
                tls.close()
            finally:
                s.close()
            return go, rcpt, mail

        go, rcpt, mail = yield deferToThread(inject)
        self.assertEqual(go, b"220 2.0.0 Ready to start TLS\r\n")
        # Had the injected MAIL been taken, RCPT would be accepted.
        self.assertTrue(rcpt.startswith(b"503 5.5.1 "), rcpt)
        self.assertTrue(mail.startswith(b"250 2.1.0 "), mail)

    @inlineCallbacks
    def test_controlCharactersInAddresses(self) -> Any:
        """Control characters in a path (CR, NUL, DEL, ESC) get 501 5.1.7 or 5.1.3, never 250; the session goes on."""
        yield self.start()
        port = self.server.ports["smtp"]
        senders = [
            b'MAIL FROM:<"a\rX-Injected: 1"@remote.test>',
            b'MAIL FROM:<"a\x00b"@remote.test>',
            b"MAIL FROM:<a\x7fb@remote.test>",
            b"MAIL FROM:<a\x1bb@remote.test>",
        ]

        def talk() -> tuple[list[bytes], bytes, bytes]:
            s = connect(port)
            try:
                s.sendall(b"EHLO attacker.test\r\n")
                readReply(s)
                answers = []
                for line in senders:
                    s.sendall(line + b"\r\n")
                    answers.append(readReply(s))
                s.sendall(b"MAIL FROM:<x@remote.test>\r\n")
                readReply(s)
                s.sendall(b'RCPT TO:<"alice\rX: 1"@example.com>\r\n')
                rcpt = readReply(s)
                s.sendall(b"NOOP\r\n")
                return answers, rcpt, readReply(s)
            finally:
                s.close()

        answers, rcpt, noop = yield deferToThread(talk)
        for line, answer in zip(senders, answers, strict=True):
            self.assertTrue(answer.startswith(b"501 5.1.7 "), (line, answer))
        self.assertTrue(rcpt.startswith(b"501 5.1.3 "), rcpt)
        self.assertTrue(noop.startswith(b"250 "), noop)

    @inlineCallbacks
    def test_megabyteLineInData(self) -> Any:
        """A 1 MB line inside DATA is content: it is delivered byte for byte."""
        yield self.start()
        line = bytes(range(33, 127)) * (1024 * 1024 // 94)
        body = b"Subject: long line\r\n\r\n" + line + b"\r\nend\r\n"
        yield self.sendmail(self.server.ports["smtp"], ALICE, body)
        [stored] = yield self.arrivedFor(ALICE, 1)
        self.assertTrue(stored.endswith(b"\r\n" + body))

    @inlineCallbacks
    def test_smugglingThroughBdat(self) -> Any:
        """CRLF.CRLF and a whole second transaction inside BDAT chunks (one chunk, split at the boundary, or with a fake BDAT) are text of the one message: alice gets each verbatim, bob nothing."""
        yield self.start()
        port = self.server.ports["smtp"]
        smuggled = (
            b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.com>\r\n"
            b"DATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
        )
        carrier = b"Subject: carrier\r\n\r\nhello\r\n.\r\n"
        fakeBdat = (
            b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.com>\r\nBDAT 6 LAST\r\nevil\r\n"
        )
        split = carrier.replace(b"carrier", b"split")
        variants = [[carrier + smuggled], [split, smuggled], [carrier, fakeBdat]]

        def smuggle() -> bytes:
            s = connect(port)
            try:
                stream = b"EHLO attacker.test\r\n"
                for chunks in variants:
                    stream += b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.com>\r\n"
                    for n, chunk in enumerate(chunks, 1):
                        last = b" LAST" if n == len(chunks) else b""
                        stream += b"BDAT %d%s\r\n" % (len(chunk), last) + chunk
                s.sendall(stream + b"QUIT\r\n")
                return readAll(s)
            finally:
                s.close()

        answers = yield deferToThread(smuggle)
        # EHLO, then MAIL, RCPT and each chunk of every variant, then QUIT.
        accepted = sum(2 + len(chunks) for chunks in variants)
        self.assertEqual(replyCodes(answers), [b"250"] * (1 + accepted) + [b"221"])
        stored = yield self.arrivedFor(ALICE, len(variants))
        yield waitFor(lambda: not self.server.queue.items)
        for message in stored:
            self.assertTrue(message.startswith(b"Return-Path: <x@remote.test>\r\n"), message)
        # Maildir names need not sort in arrival order: match each variant.
        for chunks in variants:
            text = b"\r\n" + b"".join(chunks)
            self.assertEqual(len([m for m in stored if m.endswith(text)]), 1, (text, stored))
        self.assertEqual(len(self.server.delivered(ALICE)), len(variants))
        self.assertEqual(self.server.delivered(BOB), [])

    @inlineCallbacks
    def test_hugeBdatThenDisconnect(self) -> Any:
        """BDAT announcing 2 GB (past the size limit) or 20 MB (under it), 1 MB sent, then a hang-up: another client is served meanwhile and nothing is stored."""
        yield self.start()
        port = self.server.ports["smtp"]
        junk = (b"x" * 1000 + b"\r\n.\r\nMAIL FROM:<evil@remote.test>\r\n") * 1000
        sending, served = threading.Event(), threading.Event()

        def abuse(size: int) -> None:
            s = connect(port)
            try:
                s.sendall(b"EHLO attacker.test\r\nMAIL FROM:<x@remote.test>\r\n")
                s.sendall(b"RCPT TO:<alice@example.com>\r\n")
                for _ in range(3):
                    assert readReply(s).startswith(b"250"), size
                s.sendall(b"BDAT %d LAST\r\n" % size + junk)
                sending.set()
                # Mid-chunk: wait until someone else was served, then vanish.
                served.wait(30)
            finally:
                sending.set()
                s.close()

        def meanwhile() -> Any:
            sending.wait(30)
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                    return c.sendmail("x@remote.test", [BOB], b"Subject: meanwhile\r\n\r\nok\r\n")
            finally:
                served.set()

        yield gatherResults([deferToThread(abuse, 2 * 1024**3), deferToThread(meanwhile)])
        sending.clear()
        served.clear()
        yield gatherResults([deferToThread(abuse, 20 * 1024**2), deferToThread(meanwhile)])
        stored = yield self.arrivedFor(BOB, 2)
        self.assertTrue(all(m.endswith(b"\r\n\r\nok\r\n") for m in stored))
        yield waitFor(lambda: not self.server.queue.items)
        self.assertEqual(self.server.delivered(ALICE), [])
        queued = [p for p in (self.server.config.data_dir / "queue").iterdir() if p.is_file()]
        self.assertEqual([p for p in queued if p.stat().st_size > 1024 * 1024], [])
        # Both hung-up sessions are gone from the server too.
        limiter = listeningPorts(self.server.top, "smtp")[0].factory
        assert isinstance(limiter, ConnectionLimiter)
        yield waitFor(lambda: limiter.connectionsFrom("127.0.0.1") == 0)

    @inlineCallbacks
    def test_authBeforeTLSOnSubmission(self) -> Any:
        """On submission from 127.0.0.1, before STARTTLS: EHLO lists no AUTH, AUTH PLAIN and LOGIN and MAIL get 530 5.7.0; after STARTTLS AUTH is offered."""
        yield self.start()
        port = self.server.ports["submission"]
        token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())

        def talk() -> tuple[bytes, list[bytes], bytes]:
            s = connect(port)
            try:
                s.sendall(b"EHLO attacker.test\r\n")
                plain = readReply(s)
                answers = []
                for command in (
                    b"AUTH PLAIN " + token,
                    b"AUTH LOGIN",
                    b"MAIL FROM:<" + ALICE.encode() + b">",
                ):
                    s.sendall(command + b"\r\n")
                    answers.append(readReply(s))
                s.sendall(b"STARTTLS\r\n")
                readReply(s)
                tls = insecureContext().wrap_socket(s, server_hostname="mx.example.com")
                tls.sendall(b"EHLO attacker.test\r\n")
                encrypted = readReply(tls)
                tls.close()
                return plain, answers, encrypted
            finally:
                s.close()

        plain, answers, encrypted = yield deferToThread(talk)
        self.assertIn(b"250-STARTTLS\r\n", plain)
        self.assertNotIn(b"AUTH", plain)
        for answer in answers:
            self.assertTrue(answer.startswith(b"530 5.7.0 "), answers)
        self.assertIn(b"AUTH PLAIN LOGIN", encrypted)
