# -*- test-case-name: tests.test_checkworkers -*-
"""
The framing between the server and its check worker processes
(L{mta.policy.workers}, L{mta.policy.checkworker}): one frame is a 4-byte
big-endian length, then a 4-byte length of a JSON object, the object, and
raw bytes (a message to check; empty for every other frame).

Also the JSON shapes of DNS answers, which cross from the server's
resolver to a worker: TXT records as Latin-1 text (byte for byte), MX
records as C{[preference, exchange]}, addresses and PTR names as text.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from mta.dns import MXRecord

_LENGTHS = struct.Struct(">II")

#: The largest frame accepted (a message at the largest size SMTP takes is
#: far below it); a longer length means the stream is broken.
MAX_FRAME = 256 * 1024 * 1024

#: The lookups a worker may ask for.
KINDS = ("TXT", "MX", "PTR", "Addresses")


class FrameError(Exception):
    """
    The stream does not hold frames: the other side is broken.
    """


def encodeFrame(obj: dict[str, Any], payload: bytes = b"") -> bytes:
    """
    @return: the frame carrying C{obj} and C{payload}.
    """
    head = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return _LENGTHS.pack(len(head) + len(payload) + 4, len(head)) + head + payload


class FrameReader:
    """
    Splits a byte stream into frames, however it arrives.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        """
        @return: the frames C{data} completes, in order, as C{(object,
            payload)}.
        @raise FrameError: the stream is not a stream of frames.
        """
        self._buffer += data
        frames = []
        while len(self._buffer) >= 8:
            total, headLength = _LENGTHS.unpack_from(self._buffer)
            if total > MAX_FRAME or headLength > total - 4:
                raise FrameError(f"bad frame lengths {total}, {headLength}")
            if len(self._buffer) < total + 4:
                break
            head = bytes(self._buffer[8 : 8 + headLength])
            payload = bytes(self._buffer[8 + headLength : 4 + total])
            del self._buffer[: 4 + total]
            try:
                obj = json.loads(head)
            except ValueError as e:
                raise FrameError(f"bad frame: {e}") from None
            if not isinstance(obj, dict):
                raise FrameError("bad frame: not an object")
            frames.append((obj, payload))
        return frames


def encodeAnswer(kind: str, answer: Any) -> Any:
    """
    @return: the JSON shape of the answer of a C{kind} lookup.
    """
    if kind == "TXT":
        return [record.decode("latin-1") for record in answer]
    if kind == "MX":
        return [[mx.preference, mx.exchange] for mx in answer]
    return list(answer)


def decodeAnswer(kind: str, shape: Any) -> Any:
    """
    @return: the answer of a C{kind} lookup from its JSON shape (as the
        resolver's C{lookup<kind>} gives it).
    """
    if kind == "TXT":
        return [text.encode("latin-1") for text in shape]
    if kind == "MX":
        return [MXRecord(int(p), str(e)) for p, e in shape]
    return [str(x) for x in shape]


__all__ = [
    "KINDS",
    "MAX_FRAME",
    "FrameError",
    "FrameReader",
    "decodeAnswer",
    "encodeAnswer",
    "encodeFrame",
]
