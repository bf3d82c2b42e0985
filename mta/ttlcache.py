# -*- test-case-name: tests.test_ttlcache -*-
"""
A bounded cache whose entries expire: DNS answers by their TTL
(L{mta.dns.Resolver}), and results computed from DNS answers for as long
as those answers are cached (L{mta.policy.spf.SPFResults},
L{mta.policy.dmarc.DMARCEvaluator}).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


@dataclass(frozen=True)
class Kept(Generic[_V]):
    """
    A value in a L{TTLCache}.

    @ivar expires: when it stops being used, on the cache's clock.
    @ivar value: what was kept.
    """

    expires: float
    value: _V


class TTLCache(Generic[_K, _V]):
    """
    At most C{size} values, each kept for the seconds it was given, the
    least recently used dropped first when full.

    Safe to use from several threads (the reactor thread and worker
    threads): every operation holds one lock, briefly.
    """

    def __init__(self, clock: Callable[[], float], size: int) -> None:
        """
        @param clock: the time, in seconds.
        @param size: most values kept; 0 keeps none.
        """
        self._clock = clock
        self._size = size
        self._entries: OrderedDict[_K, Kept[_V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K) -> Kept[_V] | None:
        """
        @return: the live entry for C{key}, or L{None}.
        """
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key: _K, ttl: float, value: _V) -> None:
        """
        Keep C{value} for C{ttl} seconds (not at all when C{ttl <= 0}).
        """
        if ttl <= 0 or self._size <= 0:
            return
        entry = Kept(self._clock() + ttl, value)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def now(self) -> float:
        """
        @return: the time on the cache's clock.
        """
        return self._clock()

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["Kept", "TTLCache"]
