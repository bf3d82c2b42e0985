"""
Tests for L{mta.queue.spool}: durable storage of queued messages.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
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
        """
        A stored message loads back with the same envelope, and its body
        names exactly its bytes in the queue file.
        """
        envelope = makeEnvelope()
        self.successResultOf(self.spool.store(envelope, b"hello\r\n"))
        self.assertEqual(self.spool.body("Q1").readSync(), b"hello\r\n")
        reopened = Spool(self.path, SynchronousRunner())
        [loaded] = self.successResultOf(reopened.load())
        self.assertEqual(loaded, envelope)
        body = reopened.body("Q1")
        self.assertEqual((body.size, body.readSync()), (7, b"hello\r\n"))
        self.assertEqual(body.path, str(self.path / "Q1.msg"))

    def test_oneFilePerMessage(self) -> None:
        """
        A queued message is one file: a header line, the envelope as JSON a
        human can read, then the message.
        """
        self.successResultOf(self.spool.store(makeEnvelope(), b"Subject: x\r\n\r\nbody\r\n"))
        self.assertEqual([p.name for p in self.path.iterdir()], ["Q1.msg"])
        raw = (self.path / "Q1.msg").read_bytes()
        header, _, rest = raw.partition(b"\n")
        words = header.split()
        self.assertEqual(words[:3], [b"mta-queue", b"1", b"id=Q1"])
        envelopeSize = int(words[3].removeprefix(b"envelope="))
        self.assertEqual(words[4], b"message=20")
        self.assertEqual(int(words[5].removeprefix(b"crc32="), 16), zlib.crc32(rest))
        data = json.loads(rest[:envelopeSize])
        self.assertEqual(data["recipients"][0]["original"], "alice+x@example.com")
        self.assertEqual(rest[envelopeSize:], b"\nSubject: x\r\n\r\nbody\r\n")

    def test_cutShortIsSwept(self) -> None:
        """
        A queue file shorter than its header says (the system stopped before
        its syncs, so it was never acknowledged) is not loaded but deleted;
        so are temporary files, an updated envelope whose message is gone,
        and a C{.spare} left by a version that recycled queue files.
        """
        self.spool.storeSync(makeEnvelope("Q9"), b"0123456789")
        raw = (self.path / "Q9.msg").read_bytes()
        (self.path / "Q9.msg").write_bytes(raw[:-3])
        (self.path / "Q8.tmp").write_bytes(b"{")
        (self.path / "Q6.env").write_bytes(b"{}")
        (self.path / "Q5.spare").write_bytes(b"an old message")
        self.assertEqual(self.successResultOf(self.spool.load()), [])
        self.assertEqual(list(self.path.iterdir()), [])

    def test_mixedBytesFailCrc(self) -> None:
        """
        A queue file of the right length whose bytes are not all the ones
        written (the system stopped before its sync) fails its CRC and is
        not loaded, nor is its updated envelope kept.
        """
        self.spool.storeSync(makeEnvelope("Q9"), b"0123456789")
        self.successResultOf(self.spool.update(replace(makeEnvelope("Q9"), nextAttempt=5.0)))
        raw = (self.path / "Q9.msg").read_bytes()
        (self.path / "Q9.msg").write_bytes(raw[:-4] + b"\0\0\0\0")
        self.assertEqual(self.successResultOf(Spool(self.path, SynchronousRunner()).load()), [])
        self.assertEqual(list(self.path.iterdir()), [])

    def test_otherMessageUnderNewName(self) -> None:
        """
        A whole queue file whose header names another id is not loaded
        (neither as that message nor as the one its name says) but deleted.
        """
        self.successResultOf(self.spool.store(makeEnvelope("Q1"), b"old\r\n"))
        (self.path / "Q1.msg").rename(self.path / "Q3.msg")
        self.assertEqual(self.successResultOf(Spool(self.path, SynchronousRunner()).load()), [])
        self.assertEqual(list(self.path.iterdir()), [])

    def test_longerButWhole(self) -> None:
        """
        A file longer than its header says is loaded if the bytes the header
        covers pass the CRC: the header, not the file's size, says where the
        message ends.
        """
        self.spool.storeSync(makeEnvelope("Q2"), b"new\r\n")
        with (self.path / "Q2.msg").open("ab") as f:
            f.write(b"rest of an older, longer message")
        reopened = Spool(self.path, SynchronousRunner())
        [loaded] = self.successResultOf(reopened.load())
        self.assertEqual(loaded, makeEnvelope("Q2"))
        self.assertEqual(reopened.body("Q2").readSync(), b"new\r\n")

    def test_unreadableKeptAside(self) -> None:
        """
        A queue file with a bad header or envelope is renamed .bad: not
        delivered and not deleted.
        """
        (self.path / "Q7.msg").write_bytes(b"garbage\nx")
        body = b'{"not": "an envelope"}\nx'
        header = b"mta-queue 1 id=Q5 envelope=%d message=1 crc32=%08x\n" % (
            len(body) - 2,
            zlib.crc32(body),
        )
        (self.path / "Q5.msg").write_bytes(header + body)
        self.assertEqual(self.successResultOf(self.spool.load()), [])
        self.assertEqual(sorted(p.name for p in self.path.iterdir()), ["Q5.bad", "Q7.bad"])
        self.flushLoggedErrors()

    def test_updateAndRemove(self) -> None:
        """
        update writes the new envelope beside the message, and it wins at
        load; remove deletes both files.
        """
        envelope = makeEnvelope()
        self.successResultOf(self.spool.store(envelope, b"x"))
        changed = replace(envelope, nextAttempt=99.0)
        self.successResultOf(self.spool.update(changed))
        self.assertEqual(sorted(p.name for p in self.path.iterdir()), ["Q1.env", "Q1.msg"])
        self.assertEqual(self.spool.readEnvelope("Q1").nextAttempt, 99.0)
        self.assertEqual(self.successResultOf(self.spool.load())[0].nextAttempt, 99.0)
        self.assertEqual(self.spool.body("Q1").readSync(), b"x")
        self.successResultOf(self.spool.remove("Q1"))
        self.assertEqual(list(self.path.iterdir()), [])
        self.assertRaises(KeyError, self.spool.body, "Q1")
        self.assertRaises(KeyError, self.spool.readEnvelope, "Q1")

    def test_envelopesSync(self) -> None:
        """
        envelopesSync reads every message's current envelope, changing nothing.
        """
        self.spool.storeSync(makeEnvelope("Q1"), b"x")
        self.spool.storeSync(makeEnvelope("Q2"), b"y")
        self.successResultOf(self.spool.update(replace(makeEnvelope("Q2"), nextAttempt=5.0)))
        (self.path / "Q3.msg").write_bytes(b"partial")
        envelopes = self.spool.envelopesSync()
        self.assertEqual(
            [(e.queueId, e.nextAttempt) for e in envelopes], [("Q1", 0.0), ("Q2", 5.0)]
        )
        self.assertTrue((self.path / "Q3.msg").exists())

    def test_queueIdsUniqueAndSortable(self) -> None:
        """Queue ids are unique and sort in creation order."""
        ids = [newQueueId() for _ in range(2000)]
        self.assertEqual(len(set(ids)), 2000)
        self.assertEqual([i[:10] for i in ids], sorted(i[:10] for i in ids))
