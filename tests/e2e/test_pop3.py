"""
End to end: mail sent with smtplib is read back byte-exact with poplib,
over STLS and implicit TLS, and POP3 deletions show in the Maildir.
"""

from __future__ import annotations

import poplib
import smtplib
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.e2e.harness import RunningServer, startServer, waitFor
from tests.e2e.test_mail import PASSWORD, insecureContext

EIGHT_BIT = b"Subject: 8bit\r\n\r\ncaf\xc3\xa9 \xff\xfe\x80\r\n\xe2\x82\xac euro\r\n"
DOTS = b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\n...three\r\nend.\r\n"
LINE = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
LARGE = b"Subject: large\r\n\r\n" + LINE * (5 * 1024 * 1024 // len(LINE))


class POP3EndToEndTests(TestCase):
    """
    SMTP in, POP3 out, through the real service tree.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        self.server: RunningServer = yield startServer(self)
        yield deferToThread(self.server.addUser, "bob@example.com", PASSWORD)
        for body in (EIGHT_BIT, DOTS, LARGE):
            yield deferToThread(self.send, body)
        yield waitFor(lambda: len(self.server.delivered("bob@example.com")) == 3, 30)

    def send(self, body: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=30) as c:
            c.sendmail("x@remote.test", ["bob@example.com"], body)

    def retrieveAll(self, client: poplib.POP3) -> list[bytes]:
        client.user("bob@example.com")
        client.pass_(PASSWORD)
        count, _ = client.stat()
        messages = []
        for n in range(1, count + 1):
            _, lines, _ = client.retr(n)
            messages.append(b"\r\n".join(lines) + b"\r\n")
        return messages

    def assertByteExact(self, messages: list[bytes]) -> None:
        bodies = {b"8bit": EIGHT_BIT, b"dots": DOTS, b"large": LARGE}
        self.assertEqual(len(messages), 3)
        for message in messages:
            subject = message.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
            # Our trace headers come first, then the message exactly as sent.
            self.assertTrue(message.endswith(b"\r\n" + bodies[subject]), subject)

    @inlineCallbacks
    def test_stlsRetrieveByteExact(self) -> Any:
        """poplib over STLS gets 8-bit, dot-leading and 5 MB messages back byte-exact."""

        def run() -> list[bytes]:
            client = poplib.POP3("127.0.0.1", self.server.ports["pop3"], timeout=60)
            client.stls(insecureContext())
            try:
                return self.retrieveAll(client)
            finally:
                client.quit()

        self.assertByteExact((yield deferToThread(run)))

    @inlineCallbacks
    def test_implicitTLSAndDeleteAtQuit(self) -> Any:
        """Over POP3S, DELE removes the message from the Maildir only at QUIT; UIDs are stable."""

        def run() -> tuple[list[bytes], list[bytes], int]:
            client = poplib.POP3_SSL(
                "127.0.0.1", self.server.ports["pop3s"], timeout=60, context=insecureContext()
            )
            messages = self.retrieveAll(client)
            uids = client.uidl()[1]
            client.dele(1)
            before = len(self.server.delivered("bob@example.com"))
            client.quit()
            return messages, uids, before

        messages, uids, before = yield deferToThread(run)
        self.assertByteExact(messages)
        self.assertEqual(before, 3)
        self.assertEqual(len(self.server.delivered("bob@example.com")), 2)

        def again() -> list[bytes]:
            client = poplib.POP3_SSL(
                "127.0.0.1", self.server.ports["pop3s"], timeout=60, context=insecureContext()
            )
            client.user("bob@example.com")
            client.pass_(PASSWORD)
            try:
                return client.uidl()[1]
            finally:
                client.quit()

        later = yield deferToThread(again)
        self.assertEqual([u.split()[1] for u in later], [u.split()[1] for u in uids[1:]])
