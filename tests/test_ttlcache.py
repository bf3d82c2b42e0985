"""
Tests for L{mta.ttlcache}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mta.ttlcache import TTLCache


class TTLCacheTests(SynchronousTestCase):
    """
    L{TTLCache} keeps each value for its seconds and at most C{size} of them.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.cache: TTLCache[str, int] = TTLCache(self.clock.seconds, 3)

    def test_keptForItsSeconds(self) -> None:
        """
        A value is there until its seconds have passed, then gone; the
        entry says when it expires.
        """
        self.assertIsNone(self.cache.get("a"))
        self.clock.advance(5)
        self.cache.put("a", 10, 1)
        kept = self.cache.get("a")
        assert kept is not None
        self.assertEqual((kept.value, kept.expires), (1, 15))
        self.clock.advance(9.5)
        self.assertIsNotNone(self.cache.get("a"))
        self.clock.advance(0.5)
        self.assertIsNone(self.cache.get("a"))
        self.assertEqual(len(self.cache), 0)

    def test_nothingForNoTime(self) -> None:
        """
        A value given no time, or a cache of size 0, keeps nothing.
        """
        self.cache.put("a", 0, 1)
        self.cache.put("b", -1, 2)
        self.assertEqual(len(self.cache), 0)
        empty: TTLCache[str, int] = TTLCache(self.clock.seconds, 0)
        empty.put("a", 10, 1)
        self.assertIsNone(empty.get("a"))

    def test_leastRecentlyUsedDropped(self) -> None:
        """
        Past C{size}, the value least recently put or got goes first.
        """
        for i, key in enumerate("abc"):
            self.cache.put(key, 60, i)
        self.cache.get("a")
        self.cache.put("d", 60, 3)
        self.assertEqual(
            [k for k in "abcd" if self.cache.get(k) is not None],
            ["a", "c", "d"],
        )

    def test_replaced(self) -> None:
        """
        Putting a key again replaces its value and its time.
        """
        self.cache.put("a", 10, 1)
        self.cache.put("a", 100, 2)
        self.clock.advance(50)
        kept = self.cache.get("a")
        self.assertEqual(kept.value if kept else None, 2)

    def test_now(self) -> None:
        """
        L{TTLCache.now} is its clock's time.
        """
        self.clock.advance(42)
        self.assertEqual(self.cache.now(), 42)
