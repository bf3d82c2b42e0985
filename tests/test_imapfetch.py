"""
Tests for L{mta.imap.fetch}: a FETCH command's items prepared once
(L{FetchPlan}) and rendered for each message.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mta.imap import wire
from mta.imap.fetch import FetchPlan, MessageData
from mta.imap.message import Section, section
from mta.imap.query import BodySection, FetchAttribute

RAW = (
    b"From: c@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\none\r\n"
    b"--b\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--b--\r\n"
)


def message(raw: bytes | None = RAW) -> MessageData:
    """
    @return: UID 42 with C{\\Seen}, modseq 9.
    """
    return MessageData(42, b"(\\Seen)", 0.0, len(RAW), 9, raw)


class FetchPlanTests(SynchronousTestCase):
    """
    L{FetchPlan}.
    """

    def test_simpleItems(self) -> None:
        """
        Items without content render from the index's figures, in the order asked.
        """
        plan = FetchPlan(
            [FetchAttribute("RFC822.SIZE"), FetchAttribute("FLAGS"), FetchAttribute("UID")],
            withUid=False,
            withModseq=False,
            withFlags=False,
        )
        self.assertEqual(
            plan.render(3, message(None)),
            b"* 3 FETCH (RFC822.SIZE %d FLAGS (\\Seen) UID 42)\r\n" % len(RAW),
        )

    def test_addedItems(self) -> None:
        """
        UID, MODSEQ and FLAGS are added after the items asked when wanted
        and not asked, and each name appears once.
        """
        plan = FetchPlan(
            [FetchAttribute("FLAGS"), FetchAttribute("FLAGS")],
            withUid=True,
            withModseq=True,
            withFlags=True,
        )
        self.assertEqual(
            plan.render(1, message(None)), b"* 1 FETCH (FLAGS (\\Seen) UID 42 MODSEQ (9))\r\n"
        )
        plan = FetchPlan(
            [FetchAttribute("UID"), FetchAttribute("INTERNALDATE")],
            withUid=True,
            withModseq=False,
            withFlags=True,
        )
        self.assertEqual(
            plan.render(1, message(None)),
            b'* 1 FETCH (UID 42 INTERNALDATE "01-Jan-1970 00:00:00 +0000" FLAGS (\\Seen))\r\n',
        )

    def test_sections(self) -> None:
        """
        Sections are literals named without C{.PEEK}, with their origin;
        the same section asked twice is sent once.
        """
        header = BodySection(peek=True, specifier="HEADER")
        part = BodySection(part=(2,), partial=(3, 4))
        plan = FetchPlan([header, part, header], withUid=False, withModseq=False, withFlags=False)
        head = section(RAW, Section(text=b"HEADER"))
        self.assertEqual(
            plan.render(5, message()),
            b"* 5 FETCH (BODY[HEADER] " + wire.literal(head) + b" BODY[2]<3> {4}\r\ntwo<)\r\n",
        )

    def test_structureItems(self) -> None:
        """
        ENVELOPE, BODYSTRUCTURE and the RFC822 items render from the bytes.
        """
        plan = FetchPlan(
            [
                FetchAttribute("ENVELOPE"),
                FetchAttribute("BODYSTRUCTURE"),
                FetchAttribute("RFC822.TEXT"),
                FetchAttribute("RFC822.HEADER"),
                FetchAttribute("RFC822"),
            ],
            withUid=False,
            withModseq=False,
            withFlags=False,
        )
        rendered = plan.render(1, message())
        self.assertIn(b'ENVELOPE (NIL "parts" ', rendered)
        self.assertIn(b'BODYSTRUCTURE (("text" "plain"', rendered)
        body = RAW[RAW.index(b"\r\n\r\n") + 4 :]
        self.assertIn(b"RFC822.TEXT " + wire.literal(body) + b" ", rendered)
        self.assertIn(b"RFC822.HEADER " + wire.literal(RAW[: len(RAW) - len(body)]), rendered)
        self.assertTrue(rendered.endswith(b"RFC822 " + wire.literal(RAW) + b")\r\n"))
