# -*- test-case-name: tests.test_transcripts -*-
"""
The transcript corpus (C{tests/transcripts/*.txt}), one test per file, and
tests of the replayer in L{mta.testing.transcript} itself.

To add a case, drop a file in C{tests/transcripts/}; its first comment line
becomes the test's description.  The format is in the module docstring of
L{mta.testing.transcript}.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mta.smtp.server import Mode
from mta.testing.transcript import (
    TranscriptError,
    TranscriptMismatch,
    decodeEscapes,
    loadTranscript,
    parseTranscript,
    replay,
)

TRANSCRIPTS = Path(__file__).parent / "transcripts"


def _corpusTest(path: Path) -> Callable[[SynchronousTestCase], None]:
    """
    @return: a test method replaying the transcript at C{path}.
    """
    transcript = loadTranscript(path)

    def test(self: SynchronousTestCase) -> None:
        replay(loadTranscript(path))

    test.__doc__ = transcript.description
    return test


class TranscriptCorpusTests(SynchronousTestCase):
    """
    Every transcript in C{tests/transcripts} replays as written; the test
    methods are made from the files, so a failure names the file.
    """

    def test_corpusFound(self) -> None:
        """The corpus is where this module looks for it, and not empty."""
        self.assertGreater(len(list(TRANSCRIPTS.glob("*.txt"))), 20)


for _path in sorted(TRANSCRIPTS.glob("*.txt")):
    setattr(
        TranscriptCorpusTests,
        "test_" + re.sub(r"\W", "_", _path.stem),
        _corpusTest(_path),
    )


HAPPY = """\
# A minimal dialog.
< 220
> HELO c
< 250
> MAIL FROM:<>
< 250
"""


class ReplayerTests(SynchronousTestCase):
    """
    The replayer reports the first step that does not hold, by file and
    line, and parses only well-formed transcripts.
    """

    def assertMismatch(self, text: str, where: str) -> str:
        """
        Replay C{text}; assert it fails at C{where} (e.g. C{"t.txt:line 4"}).

        @return: the failure message.
        """
        error = self.assertRaises(TranscriptMismatch, replay, parseTranscript(text, "t.txt"))
        message = str(error)
        self.assertTrue(message.startswith(where + ":"), message)
        return message

    def test_happy(self) -> None:
        """A dialog that matches replays without error."""
        session = replay(parseTranscript(HAPPY, "t.txt"))
        self.assertEqual(session.protocol.heloName, "c")

    def test_wrongCode(self) -> None:
        """A reply with another code fails at that line, quoting what came."""
        message = self.assertMismatch(HAPPY.replace("< 250\n", "< 251\n", 1), "t.txt:line 4")
        self.assertIn("'250 mx.example.com'", message)

    def test_wrongText(self) -> None:
        """A final line whose text does not start as expected fails."""
        self.assertMismatch(HAPPY + "> NOOP\n< 250 2.0.1\n", "t.txt:line 8")

    def test_continuationExpected(self) -> None:
        """C{< 250-X} fails on a single-line reply."""
        self.assertMismatch(HAPPY.replace("< 250\n", "< 250-mx\n", 1), "t.txt:line 4")

    def test_continuationSkipped(self) -> None:
        """C{< 250} takes a whole multi-line reply; a further C{< 250} finds nothing."""
        text = "# EHLO.\n< 220\n> EHLO c\n< 250\n< 250\n"
        message = self.assertMismatch(text, "t.txt:line 5")
        self.assertIn("sent nothing more", message)

    def test_absent(self) -> None:
        """C{<!} fails when the last reply holds the text."""
        text = "# EHLO.\n< 220\n> EHLO c\n< 250\n<! PIPELINING\n"
        self.assertMismatch(text, "t.txt:line 5")

    def test_unexpectedReplyAtEnd(self) -> None:
        """A reply nobody expected fails the transcript at its end."""
        message = self.assertMismatch(HAPPY + "> NOOP\n", "t.txt:end")
        self.assertIn("unexpected reply '250 2.0.0 Ok'", message)

    def test_closeWhileOpen(self) -> None:
        """C{< close} fails while the connection is open."""
        self.assertMismatch(HAPPY + "< close\n", "t.txt:line 7")

    def test_nothingWhenSomething(self) -> None:
        """C{< nothing} fails when a reply is waiting."""
        self.assertMismatch(HAPPY + "> NOOP\n< nothing\n", "t.txt:line 8")

    def test_checks(self) -> None:
        """Queue checks fail when they do not hold."""
        data = HAPPY + "> RCPT TO:<alice@example.com>\n< 250\n> DATA\n< 354\n> x\n> .\n< 250\n"
        replay(
            parseTranscript(
                data + "= queued 1\n= to alice@example.com\n= tail \\r\\nx\\r\\n\n", "t"
            )
        )
        self.assertMismatch(data + "= queued 2\n", "t.txt:line 14")
        self.assertMismatch(data + "= to bob@example.com\n", "t.txt:line 14")
        self.assertMismatch(data + "= from a@b.test\n", "t.txt:line 14")
        self.assertMismatch(data + "= contains nope\n", "t.txt:line 14")
        self.assertMismatch(HAPPY + "= tail x\n", "t.txt:line 7")

    def test_joinedWritesArriveTogether(self) -> None:
        """C{>>} lines go in the same write as the line before: STARTTLS drops them."""
        text = "# TLS.\n< 220\n> EHLO c\n< 250\n> STARTTLS\n>> NOOP\n< 220\n"
        session = replay(parseTranscript(text, "t.txt"))
        self.assertTrue(session.transport.tlsStarted)
        self.assertMismatch(text.replace(">> NOOP", "> NOOP"), "t.txt:end")

    def test_settings(self) -> None:
        """Settings choose the mode, peer, TLS, limits, trust, users and aliases."""
        t = parseTranscript(
            "# x\n# mode: submission\n# peer: ::1\n# tls: yes\n# starttls: no\n"
            "# limits: recipients=7 smtp_idle=1.5\n# trusted: 10.0.0.0/8\n"
            "# user: carol@example.com pw\n# alias: a@example.com carol@example.com\n",
            "t.txt",
        )
        s = t.settings
        self.assertEqual((s.mode, s.peer, s.tls, s.starttls), (Mode.SUBMISSION, "::1", True, False))
        self.assertEqual((s.limits.recipients, s.limits.smtp_idle), (7, 1.5))
        self.assertEqual([str(n) for n in s.trusted], ["10.0.0.0/8"])
        self.assertEqual(s.users["carol@example.com"], "pw")
        self.assertEqual(s.aliases["a@example.com"], ("carol@example.com",))
        self.assertEqual(t.description, "x")

    def test_malformed(self) -> None:
        """Unknown settings, escapes, checks and stray lines are errors naming the line."""
        for text, line in [
            ("# x\n# colour: blue\n", 2),
            ("# x\n# tls: maybe\n", 2),
            ("# x\n# limits: speed=1\n", 2),
            ("# x\n> a\\qb\n", 2),
            ("# x\n> a\\cb\n", 2),
            ("# x\n= weather fine\n", 2),
            ("# x\n~ sleep 1\n", 2),
            ("# x\n< 25\n", 2),
            ("# x\nHELO c\n", 2),
        ]:
            error = self.assertRaises(TranscriptError, parseTranscript, text, "t.txt")
            self.assertTrue(str(error).startswith(f"t.txt:{line}:"), (text, str(error)))
        self.assertRaises(TranscriptError, parseTranscript, "< 220\n", "t.txt")

    def test_escapes(self) -> None:
        """Escapes give any byte; C{\\c} at the end drops the CRLF."""
        self.assertEqual(
            decodeEscapes(r"a\r\n\t\\\x00\xffé"), (b"a\r\n\t\\\x00\xff\xc3\xa9", False)
        )
        self.assertEqual(decodeEscapes(r"a\c"), (b"a", True))
