"""
Hostile input to the SMTP server: smuggling, bare line ends, giant lines,
garbage.  Each case ends with the session (or a fresh one) still working.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.test_smtpserver import SMTPTestMixin

START = b"EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"


class SmugglingTests(SMTPTestMixin, SynchronousTestCase):
    """
    Only CRLF.CRLF ends DATA; anything else that looks like an end is
    content, and a message holding bare CR or LF is refused whole.
    """

    def smuggle(self, fakeEnd: bytes) -> list[bytes]:
        self.send(START)
        payload = (
            b"Subject: first\r\n\r\nhello"
            + fakeEnd
            + b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
            + b"Subject: smuggled\r\n\r\nevil\r\n.\r\n"
        )
        return self.codes(payload)

    def assertRefusedWhole(self, fakeEnd: bytes) -> None:
        codes = self.smuggle(fakeEnd)
        self.assertEqual(codes, [b"554"], fakeEnd)
        self.assertEqual(self.sink.messages, [])
        # The session goes on normally afterwards.
        self.assertEqual(self.codes(b"NOOP\r\n"), [b"250"])

    def test_lfDotLf(self) -> None:
        """<LF>.<LF> does not end DATA."""
        self.assertRefusedWhole(b"\n.\n")

    def test_lfDotCrLf(self) -> None:
        """<LF>.<CR><LF> does not end DATA."""
        self.assertRefusedWhole(b"\n.\r\n")

    def test_crLfDotLf(self) -> None:
        """<CR><LF>.<LF> does not end DATA."""
        self.assertRefusedWhole(b"\r\n.\n")

    def test_crDotCr(self) -> None:
        """<CR>.<CR> does not end DATA."""
        self.assertRefusedWhole(b"\r.\r")

    def test_crLfDotCr(self) -> None:
        """<CR><LF>.<CR> does not end DATA."""
        self.assertRefusedWhole(b"\r\n.\r")

    def test_bareLfInHeader(self) -> None:
        """A bare LF anywhere in the message refuses it."""
        self.send(START)
        self.assertEqual(self.codes(b"Subject: a\nX: b\r\n\r\nbody\r\n.\r\n"), [b"554"])
        self.assertEqual(self.sink.messages, [])

    def test_pipelinedAfterDataIsCommands(self) -> None:
        """Commands pipelined after a proper end are commands, not content."""
        self.send(START)
        codes = self.codes(b"body\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nQUIT\r\n")
        self.assertEqual(codes, [b"250", b"250", b"250", b"221"])
        self.assertEqual(len(self.sink.messages), 1)


class GiantAndGarbageTests(SMTPTestMixin, SynchronousTestCase):
    """
    Over-long lines and binary garbage get errors, not crashes.
    """

    def test_megabyteCommandLine(self) -> None:
        """A 1 MB command line gets one 500 5.5.2, and the session works after."""
        codes = self.codes(b"MAIL FROM:<" + b"a" * (1024 * 1024) + b">\r\n")
        self.assertEqual(codes, [b"500"])
        self.assertEqual(self.codes(b"EHLO c\r\n")[-1:], [b"250"])

    def test_megabyteWithoutNewline(self) -> None:
        """1 MB with no line end at all is answered once and dropped as it comes."""
        for _ in range(16):
            self.proto.dataReceived(b"x" * 65536)
        self.assertEqual(self.transport.value().count(b"500 5.5.2"), 1)
        self.assertLess(len(self.proto._buffer), 70000)

    def test_megabyteLineInData(self) -> None:
        """A 1 MB line inside DATA is content, within the size limit."""
        self.factory.limits = self.limits.__class__(message_size=2 * 1024 * 1024)
        self.connect()
        self.send(START)
        self.assertEqual(self.codes(b"x" * (1024 * 1024) + b"\r\n.\r\n"), [b"250"])

    def test_garbageClosesAfterErrors(self) -> None:
        """Random bytes draw 5xx replies and, past the error limit, 421 and a hang-up."""
        rng = os.urandom(4096).replace(b"\n", b"\r\n")
        self.proto.dataReceived(rng + b"\r\n" * 10)
        out = self.transport.value()
        self.assertTrue(self.transport.disconnecting)
        self.assertIn(b"421 4.7.0", out)

    def test_nulInCommand(self) -> None:
        """A NUL byte in a command is an unknown command, not a crash."""
        self.assertEqual(self.codes(b"EH\x00LO c\r\n"), [b"500"])

    def test_nonAsciiArguments(self) -> None:
        """Non-ASCII bytes in MAIL get a syntax error."""
        self.send(b"EHLO c\r\n")
        self.assertEqual(self.codes(b"MAIL FROM:<\xff\xfe@x.test>\r\n"), [b"501"])

    def test_commandFlood(self) -> None:
        """Past the command limit the server says 421 and hangs up."""
        self.proto.dataReceived(b"NOOP\r\n" * 60)
        self.assertIn(b"421 4.7.0 mx.example.com Error: too many commands", self.transport.value())
        self.assertTrue(self.transport.disconnecting)

    def test_starttlsDropsPipelinedInput(self) -> None:
        """Commands pipelined behind STARTTLS are discarded (no plaintext injection)."""

        class FakeTLS:
            pass

        self.factory.tls = FakeTLS()  # type: ignore[assignment]
        started: list[object] = []
        self.transport.startTLS = started.append  # type: ignore[attr-defined]
        out = self.send(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<x@remote.test>\r\n")
        self.assertEqual(out[-1], b"220 2.0.0 Ready to start TLS")
        self.assertEqual(len(started), 1)
        self.assertEqual(self.codes(b"MAIL FROM:<x@remote.test>\r\n"), [b"503"])


class PendingInputTests(SMTPTestMixin, SynchronousTestCase):
    """
    Input piling up while the server waits for the disk is bounded.
    """

    def test_readingPausedWhileWaiting(self) -> None:
        """Past maxPendingInput the transport stops reading until the 250."""
        self.sink.hold = True
        self.send(START + b"x\r\n.\r\n")
        self.proto.dataReceived(b"NOOP\r\n" * 50000)
        self.assertEqual(self.transport.producerState, "paused")
        self.sink.held[0].callback("Q1")
        self.assertEqual(self.transport.producerState, "producing")
