"""
Tests for L{mta.logs}.
"""

from __future__ import annotations

from typing import cast

from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from mta.logs import logLine


class LogLineTests(SynchronousTestCase):
    """
    L{logLine} emits the finished text as the event's format.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, object]] = []
        self.log = Logger(namespace="mta.test", observer=cast(ILogObserver, self.events.append))

    def test_text(self) -> None:
        """
        The event's text is the template filled with the fields, format
        specs included; it is an info event and keeps the fields.
        """
        logLine(self.log, "delivery: id={id} delay={delay:.2f}s", id="Q1", delay=0.125)
        [event] = self.events
        self.assertEqual(formatEvent(event), "delivery: id=Q1 delay=0.12s")
        self.assertIs(event["log_level"], LogLevel.info)
        self.assertEqual(event["id"], "Q1")

    def test_braces(self) -> None:
        """
        Braces in a value (an address may hold them) come out as they are,
        not as format fields.
        """
        logLine(self.log, "smtp: from=<{sender}>", sender="{odd}}@example.com")
        [event] = self.events
        self.assertEqual(formatEvent(event), "smtp: from=<{odd}}@example.com>")
