# -*- test-case-name: tests.test_message -*-
"""
The bytes of a queued message, as the delivery steps see them.

The queue keeps each message in a file together with its envelope, so a
message is a slice of that file: L{MessageBody} names the slice.  Right
after the message was accepted its bytes are still in memory; the queue
hands them along for the first delivery attempt, so the common case
(delivered at once) never reads the queue file back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

#: Reads from the queue file go in chunks of this size.
CHUNK = 64 * 1024


@dataclass(frozen=True)
class MessageBody:
    """
    A message's bytes: C{size} bytes at C{offset} in the file C{path}.

    @ivar data: the same bytes in memory, when the queue still has them;
        readers use them instead of the file.
    """

    path: str
    offset: int
    size: int
    data: bytes | None = None

    @classmethod
    def fromFile(cls, path: str) -> MessageBody:
        """
        @return: the body that is the whole file C{path} (blocking: stats it).
        """
        return cls(path, 0, os.stat(path).st_size)

    def chunksSync(self, chunk: int = CHUNK) -> Iterator[bytes]:
        """
        Yield the bytes in pieces of at most C{chunk} (blocking).

        @raise ValueError: the file is shorter than the body it should hold.
        """
        if self.data is not None:
            for start in range(0, len(self.data), chunk):
                yield self.data[start : start + chunk]
            return
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            position, end = self.offset, self.offset + self.size
            while position < end:
                piece = os.pread(fd, min(chunk, end - position), position)
                if not piece:
                    raise ValueError(f"{self.path}: ends before the message does")
                position += len(piece)
                yield piece
        finally:
            os.close(fd)

    def readSync(self, limit: int | None = None) -> bytes:
        """
        @param limit: read at most this many bytes.
        @return: the bytes (blocking).
        """
        if self.data is not None:
            return self.data if limit is None else self.data[:limit]
        if limit is not None and limit < self.size:
            return MessageBody(self.path, self.offset, limit).readSync()
        return b"".join(self.chunksSync())


__all__ = ["CHUNK", "MessageBody"]
