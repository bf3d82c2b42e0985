"""
End to end: internal dates of messages another tool put into a Maildir.
The index reads them (the files' mtimes) only when a client first asks
for one; FETCH INTERNALDATE, SEARCH BEFORE/SINCE and SORT (ARRIVAL) then
see the right dates, and a date once reported does not change when
another tool touches the file, across a restart of the service too.
"""

from __future__ import annotations

import imaplib
import os
import re
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.e2e.harness import RunningServer, startServer, testConfig
from tests.e2e.test_mail import PASSWORD

USER = "erin@example.com"

#: Base name (its arrival time says 2023) to the file's mtime.
FILES = {
    "1700000001.M1P1.elsewhere,S=24": 1_500_000_000,  # 2017-07-14
    "1700000002.M2P2.elsewhere,S=24": 1_300_000_000,  # 2011-03-13
    "1700000003.M3P3.elsewhere,S=24": 1_400_000_000,  # 2014-05-13
}


def fetchDates(client: imaplib.IMAP4) -> dict[int, str]:
    typ, data = client.uid("FETCH", "1:*", "(INTERNALDATE)")
    assert typ == "OK", data
    out: dict[int, str] = {}
    for line in data:
        assert isinstance(line, bytes), line
        found = re.search(
            rb'UID (\d+) INTERNALDATE "([^"]+)"|INTERNALDATE "([^"]+)" UID (\d+)', line
        )
        assert found, line
        uid = found.group(1) or found.group(4)
        out[int(uid)] = (found.group(2) or found.group(3)).decode()
    return out


class InternalDateEndToEndTests(TestCase):
    """
    Messages put into the Maildir by another tool, through the real tree.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        self.config = testConfig(Path(self.mktemp()).absolute())
        self.server: RunningServer = yield startServer(self, self.config)
        yield deferToThread(self.server.addUser, USER, PASSWORD)
        self.inbox = self.server.maildir(USER)
        for base, mtime in FILES.items():
            path = self.inbox / "new" / base
            path.write_bytes(b"Subject: x\r\n\r\nbody 24\r\n")
            os.utime(path, (mtime, mtime))

    def login(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.server.ports["imap"], timeout=30)
        client.login(USER, PASSWORD)
        return client

    def touchAll(self) -> None:
        for sub in ("new", "cur"):
            for path in (self.inbox / sub).iterdir():
                os.utime(path, (1_000_000_000, 1_000_000_000))

    @inlineCallbacks
    def test_datesAskedFor(self) -> Any:
        """FETCH INTERNALDATE, SEARCH SINCE/BEFORE and SORT (ARRIVAL) use the files' mtimes; once reported, a date survives a touch of the file and a restart."""

        def first() -> dict[str, Any]:
            c = self.login()
            c.select("INBOX")
            out: dict[str, Any] = {
                "search": c.uid("SEARCH", "SINCE", "1-Jan-2012", "BEFORE", "1-Jan-2015"),
                "sort": c.uid("SORT", "(ARRIVAL)", "UTF-8", "ALL"),
                "dates": fetchDates(c),
            }
            c.logout()
            self.touchAll()
            c = self.login()
            c.select("INBOX")
            out["touched"] = fetchDates(c)
            c.logout()
            return out

        out = yield deferToThread(first)
        self.assertEqual(out["search"], ("OK", [b"3"]))
        self.assertEqual(out["sort"], ("OK", [b"2 3 1"]))
        self.assertEqual(
            out["dates"],
            {
                1: "14-Jul-2017 02:40:00 +0000",
                2: "13-Mar-2011 07:06:40 +0000",
                3: "13-May-2014 16:53:20 +0000",
            },
        )
        self.assertEqual(out["touched"], out["dates"])
        yield self.server.top.stopService()
        self.server = yield startServer(self, self.config)

        def again() -> dict[int, str]:
            c = self.login()
            c.select("INBOX")
            try:
                return fetchDates(c)
            finally:
                c.logout()

        self.assertEqual((yield deferToThread(again)), out["dates"])

    @inlineCallbacks
    def test_dateOfAppendKept(self) -> Any:
        """A date given at APPEND is the INTERNALDATE, though another tool touches the file."""

        def run() -> dict[int, str]:
            c = self.login()
            typ, _ = c.append(
                "INBOX", None, '"02-Jan-2020 03:04:05 +0000"', b"Subject: a\r\n\r\nhi\r\n"
            )
            assert typ == "OK"
            self.touchAll()
            c.select("INBOX")
            try:
                return fetchDates(c)
            finally:
                c.logout()

        dates = yield deferToThread(run)
        self.assertEqual(dates[4], "02-Jan-2020 03:04:05 +0000")
        self.assertEqual(dates[1], "09-Sep-2001 01:46:40 +0000")  # not asked before the touch
