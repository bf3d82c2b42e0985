"""
Tests for L{mta.message}: a message's bytes in a queue file or in memory.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mta.message import MessageBody


class MessageBodyTests(SynchronousTestCase):
    """
    L{MessageBody}.
    """

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.write_bytes(b"header\n" + b"0123456789" * 10 + b"trailer")

    def test_sliceOfFile(self) -> None:
        """
        A body is exactly C{size} bytes at C{offset}, read in chunks.
        """
        body = MessageBody(str(self.path), 7, 100)
        self.assertEqual(body.readSync(), b"0123456789" * 10)
        self.assertEqual(list(body.chunksSync(30))[-1], b"0123456789")
        self.assertEqual(len(list(body.chunksSync(30))), 4)
        self.assertEqual(body.readSync(limit=12), b"012345678901")

    def test_inMemoryWins(self) -> None:
        """
        Bytes held in memory are used instead of the file.
        """
        body = MessageBody("/nonexistent", 0, 5, data=b"hello")
        self.assertEqual(body.readSync(), b"hello")
        self.assertEqual(body.readSync(limit=2), b"he")
        self.assertEqual(list(body.chunksSync(2)), [b"he", b"ll", b"o"])

    def test_fileCutShort(self) -> None:
        """
        A file that ends before the body does is an error, not a short read.
        """
        body = MessageBody(str(self.path), 100, 50)
        self.assertRaises(ValueError, body.readSync)

    def test_fromFile(self) -> None:
        """
        fromFile names a whole file.
        """
        self.assertEqual(MessageBody.fromFile(str(self.path)).readSync(), self.path.read_bytes())
