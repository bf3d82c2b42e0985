# -*- test-case-name: tests.test_pop3 -*-
"""
POP3's replies (RFC 1939, with RFC 2449 response codes) and the framing
of a message on the wire (byte-stuffing, TOP), apart from the protocol in
L{mta.pop3.server}.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class POP3Reply:
    """
    One POP3 response.

    @ivar ok: C{+OK} or C{-ERR}.
    @ivar text: the rest of the status line (a response code first, if any).
    @ivar body: for a multi-line response, its content with CRLF line ends,
        not yet dot-stuffed; L{toBytes} stuffs and terminates it.
    @ivar continuation: a SASL challenge line (C{+ text}) instead.
    """

    ok: bool
    text: str = ""
    body: bytes | None = None
    continuation: bool = False

    def toBytes(self) -> bytes:
        """
        @return: the response as sent on the wire.
        """
        status = "+" if self.continuation else "+OK" if self.ok else "-ERR"
        text = self.text.replace("\r", " ").replace("\n", " ")
        line = f"{status} {text}" if text or self.continuation else status
        head = line.encode("utf-8", "replace") + b"\r\n"
        if self.body is None:
            return head
        return head + byteStuff(self.body)


def byteStuff(data: bytes) -> bytes:
    """
    Frame a multi-line response body (RFC 1939 section 3).

    Every line starting with C{.} gets another C{.}, a last line lacking
    its line end gets CRLF, and C{.CRLF} ends the response.  Done over the
    whole buffer at once, not per line.  Lines are split at LF, so a dot
    after a bare LF is stuffed too: no stored byte sequence can end the
    response early, whichever line ends a client honours.

    @param data: the content, CRLF line ends, any 8-bit bytes.
    @return: the framed body.
    """
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\n.", b"\n..")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def topOfMessage(data: bytes, lines: int) -> bytes:
    """
    The headers, the blank line and the first C{lines} body lines of a
    message (the TOP command).

    @param data: the message, CRLF line ends.
    """
    if data.startswith(b"\r\n"):
        headerEnd = 2
    else:
        found = data.find(b"\r\n\r\n")
        if found < 0:
            return data
        headerEnd = found + 4
    end = headerEnd
    for _ in range(lines):
        nextEnd = data.find(b"\r\n", end)
        if nextEnd < 0:
            return data
        end = nextEnd + 2
    return data[:end]


OK = POP3Reply(True)
CONTINUE = POP3Reply(True, "", continuation=True)
ERR_UNKNOWN = POP3Reply(False, "Unknown command")
ERR_SYNTAX = POP3Reply(False, "Syntax error")
ERR_BAD_STATE = POP3Reply(False, "Command not valid in this state")
ERR_NO_SUCH_MESSAGE = POP3Reply(False, "no such message")
ERR_ALREADY_DELETED = POP3Reply(False, "message already deleted")
ERR_NO_USER = POP3Reply(False, "No USER given")
ERR_AUTH_FAILED = POP3Reply(False, "[AUTH] Authentication failed")
ERR_PLAINTEXT = POP3Reply(
    False, "[AUTH] Plaintext authentication disallowed on non-secure connections"
)
ERR_BLOCKED = POP3Reply(False, "[SYS/TEMP] Too many failed logins, try again later")
ERR_MECHANISM = POP3Reply(False, "Unsupported authentication mechanism")
ERR_SASL_CANCELLED = POP3Reply(False, "Authentication cancelled")
ERR_SASL_MALFORMED = POP3Reply(False, "Invalid SASL response")
ERR_TLS_ACTIVE = POP3Reply(False, "TLS already active")
ERR_TLS_UNAVAILABLE = POP3Reply(False, "STLS not available")
ERR_MAILBOX = POP3Reply(False, "[SYS/TEMP] Mailbox unavailable, try again later")
ERR_UPDATE = POP3Reply(False, "[SYS/TEMP] Some deleted messages not removed")
ERR_LINE_TOO_LONG = POP3Reply(False, "Line too long")
ERR_TOO_MANY_COMMANDS = POP3Reply(False, "Too many commands")
ERR_TOO_MANY_ERRORS = POP3Reply(False, "Too many errors")
ERR_TIMEOUT = POP3Reply(False, "Disconnected for inactivity")
ERR_INTERNAL = POP3Reply(False, "[SYS/TEMP] Internal error")
