# -*- test-case-name: tests.test_smtpserver -*-
"""
Reading a message off an SMTP session, apart from the protocol: DATA's
dot-stuffed stream (L{DotReader}), BDAT's counted chunks (L{ChunkReader}),
the checks every received message passes (L{checkMessage}) and the
headers the server puts on top (L{traceHeaders}).

Both readers are bulk consumers for L{mta.protocol.LineCommandProtocol}:
fed raw input, they answer C{None} while they want more, or how many bytes
they used when their part of the stream is complete.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from typing import Any

from mta.errors import Reply
from mta.smtp import replies as R

_HEADER_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:", re.IGNORECASE | re.MULTILINE)
_HEADER_DATE = re.compile(rb"^date[ \t]*:", re.IGNORECASE | re.MULTILINE)
_HEADER_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)

#: A message with this many Received headers is taken for a mail loop.
MAX_HOPS = 50

#: The last Date-header text made, and the second it is for.
_lastDate: tuple[int, str] = (-1, "")


def headerDate(seconds: float) -> str:
    """
    @return: C{seconds} as an RFC 5322 date in local time, made once per
        second (C{email.utils.formatdate} is slow enough to show up in a
        profile of a busy server).
    """
    global _lastDate
    whole = int(seconds)
    if _lastDate[0] != whole:
        _lastDate = (whole, email.utils.formatdate(whole, localtime=True))
    return _lastDate[1]


def _head(body: bytes) -> bytes:
    end = body.find(b"\r\n\r\n")
    return body[: end + 2] if end >= 0 else body


class DotReader:
    """
    Reads DATA up to C{CRLF.CRLF} and undoes the dot-stuffing.

    The terminator is searched for in the raw stream, a chunk at a time, so
    a message costs one search per chunk and no callback per line.  Past
    C{limit} bytes the rest is read and dropped, keeping only what could
    hold the start of the terminator.

    @ivar tooBig: whether the message went past the limit.
    """

    def __init__(self, limit: int, done: Callable[[bytes, bool], Any]) -> None:
        """
        @param limit: the largest message kept.
        @param done: called with the message and L{tooBig} at the end; its
            result is the bulk consumer's result.
        """
        # Start with a CRLF so that the terminator is always CRLF.CRLF,
        # even for an empty message.
        self._buf = bytearray(b"\r\n")
        self._limit = limit
        self._done = done
        self.tooBig = False

    def __call__(self, chunk: bytes) -> tuple[int, Any] | None:
        buf = self._buf
        start = max(0, len(buf) - 4)
        buf += chunk
        end = buf.find(b"\r\n.\r\n", start)
        if end < 0:
            if len(buf) > self._limit + 2:
                self.tooBig = True
                del buf[:-4]
            return None
        leftover = len(buf) - (end + 5)
        # RFC 5321 4.5.2: remove one leading dot from every line.
        body = bytes(buf[: end + 2]).replace(b"\r\n.", b"\r\n")[2:]
        self._buf = bytearray()
        return len(chunk) - leftover, self._done(body, self.tooBig)


class ChunkReader:
    """
    Reads one BDAT chunk of a known size (RFC 3030), appending it to a
    buffer or dropping it (a refused chunk is read all the same).
    """

    def __init__(self, size: int, into: bytearray | None, done: Callable[[], Any]) -> None:
        """
        @param size: the chunk's size in bytes.
        @param into: where the chunk goes; C{None} to drop it.
        @param done: called once the whole chunk is in; its result is the
            bulk consumer's result.
        """
        self._remaining = size
        self._into = into
        self._done = done

    def __call__(self, data: bytes) -> tuple[int, Any] | None:
        take = min(self._remaining, len(data))
        if self._into is not None:
            self._into += data[:take]
        self._remaining -= take
        if self._remaining:
            return None
        return take, self._done()


def checkMessage(body: bytes, limit: int, tooBig: bool = False) -> Reply | None:
    """
    The checks every received message passes before any policy.

    @return: C{None}, or the refusal: over the size limit, a bare CR or LF
        anywhere (the SMTP-smuggling family), or a mail loop.
    """
    if tooBig or len(body) > limit:
        return R.S552_TOO_BIG
    crlf = body.count(b"\r\n")
    if body.count(b"\n") != crlf or body.count(b"\r") != crlf:
        return R.S554_BARE_NEWLINE
    if len(_HEADER_RECEIVED.findall(_head(body))) >= MAX_HOPS:
        return R.S554_LOOP
    return None


def traceHeaders(
    *,
    heloName: str,
    peer: str,
    tls: str,
    host: str,
    protocol: str,
    queueId: str,
    forAddress: str,
    now: float,
) -> bytes:
    """
    @param tls: the TLS in use (L{mta.tls.tlsDescription}), or C{""}.
    @param protocol: the C{with} word (RFC 3848, RFC 6531).
    @param forAddress: the one recipient to name, or C{""}.
    @return: the Received header.
    """
    using = f" (using {tls})" if tls else ""
    forClause = f"\r\n\tfor <{forAddress}>" if forAddress else ""
    trace = (
        f"Received: from {heloName} ([{peer}]){using}\r\n"
        f"\tby {host} with {protocol} id {queueId}{forClause};\r\n\t{headerDate(now)}\r\n"
    )
    return trace.encode("utf-8", "surrogateescape")


def missingHeaders(body: bytes, *, queueId: str, host: str, now: float) -> bytes:
    """
    @return: a Date and a Message-ID header for a submitted message that
        lacks them (RFC 6409 8); they are added before the policy checks
        run, so that a DKIM signature covers them.
    """
    head = _head(body)
    added = ""
    if not _HEADER_DATE.search(head):
        added += f"Date: {headerDate(now)}\r\n"
    if not _HEADER_MESSAGE_ID.search(head):
        added += f"Message-ID: <{queueId}@{host}>\r\n"
    return added.encode("ascii")
