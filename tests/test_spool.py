"""
Tests for L{mta.queue.spool}: durable storage of queued messages.
"""

from __future__ import annotations

import json
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mta.envelope import Address, Envelope, Recipient
from mta.interfaces import ISpool
from mta.queue.spool import Spool, newQueueId
from mta.threads import SynchronousRunner


def makeEnvelope(queueId: str = "Q1") -> Envelope:
    alice = Address.parse("alice@example.com")
    return Envelope(
        queueId=queueId,
        sender=Address.parse("s@remote.test"),
        recipients=(Recipient(alice, Address.parse("alice+x@example.com")),),
        arrival=1000.0,
        clientAddress="192.0.2.1",
    )


class SpoolTests(SynchronousTestCase):
    """
    L{Spool}.
    """

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.spool = Spool(self.path, SynchronousRunner())

    def test_interface(self) -> None:
        """Spool provides ISpool."""
        self.assertTrue(verifyObject(ISpool, self.spool))

    def test_storeAndLoad(self) -> None:
        """A stored message loads back with the same envelope and bytes."""
        envelope = makeEnvelope()
        self.successResultOf(self.spool.store(envelope, b"hello\r\n"))
        [loaded] = self.successResultOf(self.spool.load())
        self.assertEqual(loaded, envelope)
        self.assertEqual(Path(self.spool.messagePath("Q1")).read_bytes(), b"hello\r\n")

    def test_envelopeIsReadableJSON(self) -> None:
        """The envelope on disk is JSON a human can read."""
        self.successResultOf(self.spool.store(makeEnvelope(), b"x"))
        data = json.loads((self.path / "Q1.env").read_text())
        self.assertEqual(data["recipients"][0]["original"], "alice+x@example.com")

    def test_messageWithoutEnvelopeIsSwept(self) -> None:
        """A message file whose envelope was never committed is deleted at load."""
        (self.path / "Q9.msg").write_bytes(b"half")
        (self.path / "Q8.tmp").write_bytes(b"{")
        self.assertEqual(self.successResultOf(self.spool.load()), [])
        self.assertEqual(sorted(p.name for p in self.path.iterdir()), [])

    def test_unreadableEnvelopeKeptAside(self) -> None:
        """A corrupt envelope is renamed .bad, not delivered and not deleted."""
        (self.path / "Q7.msg").write_bytes(b"x")
        (self.path / "Q7.env").write_bytes(b"not json")
        self.assertEqual(self.successResultOf(self.spool.load()), [])
        self.assertTrue((self.path / "Q7.bad").exists())
        self.flushLoggedErrors()

    def test_updateAndRemove(self) -> None:
        """update replaces the envelope; remove deletes both files."""
        envelope = makeEnvelope()
        self.successResultOf(self.spool.store(envelope, b"x"))
        changed = envelope.__class__(**{**envelope.__dict__, "nextAttempt": 99.0})
        self.successResultOf(self.spool.update(changed))
        self.assertEqual(self.successResultOf(self.spool.load())[0].nextAttempt, 99.0)
        self.successResultOf(self.spool.remove("Q1"))
        self.assertEqual(list(self.path.iterdir()), [])

    def test_queueIdsUniqueAndSortable(self) -> None:
        """Queue ids are unique and sort in creation order."""
        ids = [newQueueId() for _ in range(2000)]
        self.assertEqual(len(set(ids)), 2000)
        self.assertEqual([i[:10] for i in ids], sorted(i[:10] for i in ids))
