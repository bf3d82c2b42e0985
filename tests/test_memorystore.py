# -*- test-case-name: tests.test_memorystore -*-
"""
Tests for L{mta.store.memory}, the in-memory test double of the Maildir store.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mta.interfaces import IMailbox, IMessageStore
from mta.message import MessageBody
from mta.store.memory import MemoryStore

BODY = b"Subject: hi\r\n\r\n.dot\r\n\xe9\x00\r\n"


class MemoryStoreTests(SynchronousTestCase):
    """
    Tests for L{MemoryStore} and L{MemoryMailbox}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.spool = Path(self.mktemp())
        self.spool.mkdir()

    def deliver(
        self, body: bytes = BODY, prefix: bytes = b"", user: str = "alice@example.com"
    ) -> str:
        """
        Write C{body} to a file, deliver it, advance the clock; return the uid.
        """
        path = self.spool / f"m{self.clock.seconds()}"
        path.write_bytes(body)
        uid = self.successResultOf(
            self.store.deliver(user, MessageBody.fromFile(str(path)), prefix)
        )
        self.clock.advance(1)
        return uid

    def test_interfaces(self) -> None:
        """
        The store and its mailboxes provide their interfaces.
        """
        self.assertTrue(verifyObject(IMessageStore, self.store))
        mailbox = self.successResultOf(self.store.openMailbox("alice@example.com"))
        self.assertTrue(verifyObject(IMailbox, mailbox))

    def test_deliverIsByteExact(self) -> None:
        """
        The stored message is the prefix then the file's bytes, unchanged.
        """
        self.deliver(BODY, prefix=b"Received: x\r\n")
        self.assertEqual(self.store.messages("alice@example.com"), [b"Received: x\r\n" + BODY])

    def test_createUserMakesFolders(self) -> None:
        """
        A user gets INBOX, Sent, Drafts, Trash and Junk.
        """
        self.successResultOf(self.store.createUser("Alice@Example.com"))
        self.assertEqual(
            self.store.folders("alice@example.com"),
            ["Drafts", "INBOX", "Junk", "Sent", "Trash"],
        )

    def test_addressesCaseInsensitive(self) -> None:
        """
        Delivery to a mixed-case address reaches the lower-case mailbox.
        """
        self.deliver(user="ALICE@example.COM")
        self.assertEqual(len(self.store.messages("alice@example.com")), 1)

    def test_unsafeNamesRefused(self) -> None:
        """
        Names the Maildir store refuses are refused here too, in the Deferred.
        """
        path = self.spool / "m"
        path.write_bytes(BODY)
        self.failureResultOf(
            self.store.deliver("../x@y", MessageBody.fromFile(str(path)), b""), ValueError
        )
        self.failureResultOf(self.store.openMailbox("a@b", "../x"), ValueError)
        self.failureResultOf(self.store.createUser("alice"), ValueError)

    def test_missingFileFails(self) -> None:
        """
        Delivering a file that does not exist fails with L{OSError}.
        """
        d = self.store.deliver("a@b", MessageBody(str(self.spool / "nope"), 0, 1), b"")
        self.failureResultOf(d, OSError)

    def test_listReadDelete(self) -> None:
        """
        Listing is oldest first with exact sizes; read and delete work by uid.
        """
        first = self.deliver(b"one\r\n")
        second = self.deliver(b"two!\r\n")
        mailbox = self.successResultOf(self.store.openMailbox("alice@example.com"))
        listing = self.successResultOf(mailbox.listMessages())
        self.assertEqual(
            [(m.uid, m.size, m.internalDate) for m in listing],
            [(first, 5, 0.0), (second, 6, 1.0)],
        )
        self.assertEqual(self.successResultOf(mailbox.readMessage(second)), b"two!\r\n")
        self.successResultOf(mailbox.deleteMessages([first, "nope"]))
        self.assertEqual(self.store.messages("alice@example.com"), [b"two!\r\n"])
        self.failureResultOf(mailbox.readMessage(first), KeyError)

    def test_uidsNeverReused(self) -> None:
        """
        A uid freed by deletion is not given to a later message.
        """
        first = self.deliver()
        mailbox = self.successResultOf(self.store.openMailbox("alice@example.com"))
        self.successResultOf(mailbox.deleteMessages([first]))
        self.assertNotEqual(self.deliver(), first)

    def test_mailboxSeesLaterDeliveries(self) -> None:
        """
        An open mailbox lists messages delivered after it was opened.
        """
        mailbox = self.successResultOf(self.store.openMailbox("alice@example.com"))
        uid = self.deliver()
        listing = self.successResultOf(mailbox.listMessages())
        self.assertEqual([m.uid for m in listing], [uid])

    def test_folders(self) -> None:
        """
        Delivery to a folder stays in that folder; INBOX is case-insensitive.
        """
        path = self.spool / "m"
        path.write_bytes(BODY)
        self.successResultOf(
            self.store.deliver("a@b", MessageBody.fromFile(str(path)), b"", "Sent")
        )
        self.assertEqual(self.store.messages("a@b", "Sent"), [BODY])
        self.assertEqual(self.store.messages("a@b", "inbox"), [])
        self.assertEqual(self.store.messages("nobody@b"), [])

    def test_wallClockByDefault(self) -> None:
        """
        Without a clock, the internal date is the wall-clock time.
        """
        store = MemoryStore()
        path = self.spool / "m"
        path.write_bytes(BODY)
        self.successResultOf(store.deliver("a@b", MessageBody.fromFile(str(path)), b""))
        mailbox = self.successResultOf(store.openMailbox("a@b"))
        listing = self.successResultOf(mailbox.listMessages())
        self.assertGreater(listing[0].internalDate, 1_600_000_000)
