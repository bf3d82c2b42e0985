# -*- test-case-name: tests.test_smtpclient -*-
"""
The outbound SMTP client's values and pure functions: the connection
policy and timeouts, the message of one transaction, the failure of a
session, the reply parser, and the encodings the client needs (EHLO
keywords, line ends, dot-stuffing, ORCPT).

Nothing here does I/O; L{mta.smtp.client} is the protocol built on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mta.envelope import Address, Envelope, Recipient
from mta.errors import Reply
from mta.smtp.clienttls import TLSOutcome
from mta.smtp.params import utf8AddressEncode, xtextEncode


@dataclass(frozen=True)
class Timeouts:
    """
    How long to wait, in seconds, at each step (RFC 5321 section 4.5.3.2
    for the ones it names).

    @ivar connect: the TCP connection.
    @ivar greeting: the 220 banner (and an implicit TLS handshake).
    @ivar helo: the EHLO/HELO reply.
    @ivar starttls: the STARTTLS reply, then the handshake.
    @ivar auth: each AUTH reply.
    @ivar mail: the MAIL reply.
    @ivar rcpt: each RCPT reply.
    @ivar dataInit: the 354 reply to DATA.
    @ivar dataBlock: sending the message (added to L{dataFinal} for the
        final reply, as the whole message is handed to the transport at
        once).
    @ivar dataFinal: the reply after the final dot or the last BDAT chunk.
    @ivar rset: the RSET reply.
    @ivar quit: the QUIT reply.
    @ivar idle: how long a connection waits unused for another
        transaction before the client says QUIT.
    """

    connect: float = 30.0
    greeting: float = 300.0
    helo: float = 300.0
    starttls: float = 300.0
    auth: float = 300.0
    mail: float = 300.0
    rcpt: float = 300.0
    dataInit: float = 120.0
    dataBlock: float = 180.0
    dataFinal: float = 600.0
    rset: float = 300.0
    quit: float = 60.0
    idle: float = 300.0


#: The values of L{ClientPolicy.tls}.
TLS_MODES = ("opportunistic", "required", "verify", "none")


@dataclass(frozen=True)
class ClientPolicy:
    """
    How a connection is to be made.

    @ivar hostname: our EHLO name.
    @ivar tls: C{"opportunistic"} (STARTTLS whenever offered, the
        certificate checked and recorded in L{SMTPClient.tlsOutcome}, but
        delivery goes on unverified); C{"required"} (no STARTTLS or a
        failed handshake is a temporary failure); C{"verify"} (a verified
        certificate is also required); C{"none"} (never STARTTLS: the retry
        in plaintext after a failed handshake).
    @ivar trustRoots: see L{mta.smtp.clienttls.clientContext}: C{None}
        for the platform's store, a PEM path, or certificates.
    @ivar auth: (user, password) for a smarthost; sent (AUTH PLAIN, else
        LOGIN) only once TLS is up.
    @ivar implicitTLS: TLS from the first byte (port 465).
    @ivar timeouts: see L{Timeouts}.
    """

    hostname: str
    tls: str = "opportunistic"
    trustRoots: Any = None
    auth: tuple[str, str] | None = None
    implicitTLS: bool = False
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __post_init__(self) -> None:
        if self.tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {TLS_MODES}, not {self.tls!r}")


@dataclass(frozen=True)
class OutboundMessage:
    """
    One message for one transaction.

    @ivar data: the whole message with CRLF line ends, not dot-stuffed.
    @ivar smtputf8: the message was received with SMTPUTF8 (RFC 6531).
    @ivar bodyType: the BODY it was received with (C{"7BIT"},
        C{"8BITMIME"} or C{""}).
    @ivar requireTLS: REQUIRETLS (RFC 8689).
    @ivar dsnRet: DSN RET (C{"FULL"}, C{"HDRS"} or C{""}).
    @ivar dsnEnvid: DSN ENVID, decoded, or C{""}.
    """

    sender: Address
    recipients: tuple[Recipient, ...]
    data: bytes
    smtputf8: bool = False
    bodyType: str = ""
    requireTLS: bool = False
    dsnRet: str = ""
    dsnEnvid: str = ""

    @classmethod
    def fromEnvelope(
        cls, envelope: Envelope, recipients: tuple[Recipient, ...], data: bytes
    ) -> OutboundMessage:
        """
        @param recipients: the ones this transaction is for (those of one
            destination, within the peer's limit).
        @return: the message with C{envelope}'s sender and parameters.
        """
        return cls(
            sender=envelope.sender,
            recipients=recipients,
            data=data,
            smtputf8=envelope.smtputf8,
            bodyType=envelope.bodyType,
            requireTLS=envelope.requireTLS,
            dsnRet=envelope.dsnRet,
            dsnEnvid=envelope.dsnEnvid,
        )


class ConnectionFailed(Exception):
    """
    The session could not be brought to the point where mail can flow.

    @ivar reply: what to record for every recipient: the peer's own reply
        (a refusing greeting, HELO) or one made here, C{421} with an
        enhanced code (4.4.1 no connection, 4.4.2 timeout or lost
        connection, 4.7.4 TLS required but not offered, 4.7.5 TLS
        handshake failed or certificate not verified, 4.7.8 AUTH refused).
    @ivar retryWithoutTLS: the STARTTLS handshake failed under the
        opportunistic policy: a new connection with C{tls="none"} may
        succeed.
    """

    def __init__(self, reply: Reply, retryWithoutTLS: bool = False) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.retryWithoutTLS = retryWithoutTLS

    @property
    def permanent(self) -> bool:
        """
        @return: whether the reply is a 5xx (only a peer's own refusal is).
        """
        return self.reply.isPermanent


class ProtocolError(Exception):
    """
    The peer sent something that is not an SMTP reply.
    """


_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class ReplyParser:
    """
    Splits the peer's bytes into L{Reply}s, one at a time, so that a
    caller can drop what follows a reply (after STARTTLS's 220).

    Lines may end in CRLF or LF.  Text is decoded as UTF-8 (errors
    replaced) with control characters made C{?}, so that a reply can go
    into a log line or a bounce as it is.

    @cvar maxLineLength: the longest line taken (RFC 5321 says 512).
    @cvar maxReplyBytes: the most bytes of one (multi-line) reply.
    """

    maxLineLength = 4096
    maxReplyBytes = 64 * 1024

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._code = b""
        self._lines: list[str] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        """
        Add received bytes.
        """
        self._buffer += data

    def discard(self) -> None:
        """
        Forget everything received and not yet returned.
        """
        self._buffer.clear()
        self._code, self._lines, self._size = b"", [], 0

    def next(self) -> Reply | None:
        """
        @return: the next complete reply, or C{None} until there is one.
        @raise ProtocolError: a line is not a reply line, a continuation
            has another code, or a line or reply is too long.
        """
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.maxLineLength:
                    raise ProtocolError("reply line too long")
                return None
            if end + 1 > self.maxLineLength:
                raise ProtocolError("reply line too long")
            line = bytes(self._buffer[:end]).removesuffix(b"\r")
            del self._buffer[: end + 1]
            self._size += end + 1
            if self._size > self.maxReplyBytes:
                raise ProtocolError("reply too long")
            match = _REPLY_LINE.fullmatch(line)
            if match is None:
                raise ProtocolError(f"not a reply line: {_clean(line[:80])!r}")
            code, sep, text = match.group(1, 2, 3)
            if self._code and code != self._code:
                raise ProtocolError("reply code changed within a reply")
            self._code = code
            self._lines.append(_clean(text or b""))
            if sep != b"-":
                reply = Reply(int(code), "\n".join(self._lines))
                self._code, self._lines, self._size = b"", [], 0
                return reply


def _clean(raw: bytes) -> str:
    """
    @return: C{raw} as text safe for one log line.
    """
    return _CONTROL.sub("?", raw.decode("utf-8", "replace"))


def parseExtensions(reply: Reply) -> dict[str, str]:
    """
    @return: the EHLO reply's keywords (upper case) and their parameters;
        C{AUTH=LOGIN} (an old form) counts as C{AUTH LOGIN}.
    """
    extensions: dict[str, str] = {}
    for line in reply.lines()[1:]:
        keyword, _, params = line.strip().partition(" ")
        keyword, eq, rest = keyword.partition("=")
        if eq and keyword.upper() != "AUTH":
            continue
        keyword, params = keyword.upper(), " ".join(filter(None, [rest, params.strip()]))
        if keyword in extensions and keyword == "AUTH":
            params = f"{extensions[keyword]} {params}".strip()
        extensions[keyword] = params
    return extensions


_BARE_LINE_END = re.compile(rb"\r\n|\r|\n")


def canonicalLineEnds(data: bytes) -> bytes:
    """
    @return: C{data} with every bare CR or LF made CRLF, and ending in CRLF
        (unless empty): never send a peer a line end it might read
        differently from us (SMTP smuggling).
    """
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        data = _BARE_LINE_END.sub(b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def dotStuff(data: bytes) -> bytes:
    """
    @param data: a message with CRLF line ends, ending in CRLF.
    @return: the DATA form (RFC 5321 4.5.2): every line starting with a
        dot gets another, and C{.CRLF} ends it.
    """
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


def _ok(reply: Reply) -> bool:
    return 200 <= reply.code < 300


def encodeOrcpt(orcpt: str) -> str:
    """
    @param orcpt: a decoded ORCPT, C{"addr-type;address"}.
    @return: its RCPT parameter value: xtext, or the RFC 6533
        C{utf-8-addr-xtext} form for type C{utf-8} or a non-ASCII address.
    """
    addrType, _, address = orcpt.partition(";")
    if addrType.lower() == "utf-8" or not address.isascii():
        return "utf-8;" + utf8AddressEncode(address)
    return f"{addrType};{xtextEncode(address)}"


def _headerSection(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[:end]


def needsUTF8(message: OutboundMessage) -> bool:
    """
    @return: whether C{message} can travel only with SMTPUTF8: a UTF-8
        address, or a message received with SMTPUTF8 whose header section
        is not ASCII.
    """
    addresses = [message.sender] + [r.address for r in message.recipients]
    if any(a.isUTF8 for a in addresses):
        return True
    return message.smtputf8 and not _headerSection(message.data).isascii()


def refusalFor(
    message: OutboundMessage, extensions: dict[str, str], tls: TLSOutcome, serverName: str
) -> Reply | None:
    """
    Decide whether a peer can take C{message} as it is; the client never
    converts a message to suit a peer.

    @param extensions: the peer's EHLO keywords.
    @param tls: the session's TLS outcome.
    @return: the permanent reply for every recipient (C{550 5.7.10}
        REQUIRETLS without verified TLS or the extension, C{553 5.6.7}
        SMTPUTF8 needed, C{554 5.6.3} 8-bit data without 8BITMIME,
        C{552 5.3.4} bigger than SIZE), or C{None}.
    """
    if message.requireTLS:
        why = ""
        if not tls.version:
            why = "the session is not under TLS"
        elif not tls.verified:
            why = tls.reason
        elif "REQUIRETLS" not in extensions:
            why = f"{serverName} does not offer REQUIRETLS"
        if why:
            return Reply(550, f"5.7.10 REQUIRETLS not possible: {why}")
    if needsUTF8(message) and "SMTPUTF8" not in extensions:
        return Reply(553, f"5.6.7 {serverName} does not support SMTPUTF8, which the message needs")
    if not message.data.isascii() and "8BITMIME" not in extensions:
        return Reply(
            554, f"5.6.3 {serverName} does not support 8BITMIME: cannot convert 8-bit data"
        )
    limit = sizeLimit(extensions)
    if limit and len(message.data) > limit:
        return Reply(
            552, f"5.3.4 message size {len(message.data)} exceeds {serverName}'s limit of {limit}"
        )
    return None


def mailCommand(message: OutboundMessage, extensions: dict[str, str]) -> bytes:
    """
    @return: the MAIL command (no line end) with the parameters the peer
        offers and the message asks for: SIZE, BODY, SMTPUTF8, REQUIRETLS,
        and DSN's RET and ENVID (xtext).
    """
    params = []
    if "SIZE" in extensions:
        params.append(f"SIZE={len(message.data)}")
    if "8BITMIME" in extensions:
        if message.bodyType == "8BITMIME" or not message.data.isascii():
            params.append("BODY=8BITMIME")
        elif message.bodyType == "7BIT":
            params.append("BODY=7BIT")
    if "SMTPUTF8" in extensions and (message.smtputf8 or needsUTF8(message)):
        params.append("SMTPUTF8")
    if message.requireTLS:
        params.append("REQUIRETLS")
    if "DSN" in extensions:
        if message.dsnRet:
            params.append(f"RET={message.dsnRet}")
        if message.dsnEnvid:
            params.append(f"ENVID={xtextEncode(message.dsnEnvid)}")
    return " ".join([f"MAIL FROM:<{message.sender}>", *params]).encode("utf-8")


def rcptCommand(recipient: Recipient, extensions: dict[str, str]) -> bytes:
    """
    @return: the RCPT command (no line end), with DSN's NOTIFY and ORCPT
        when the peer offers DSN.
    """
    params = []
    if "DSN" in extensions:
        if recipient.notify:
            params.append("NOTIFY=" + ",".join(recipient.notify))
        if recipient.orcpt:
            params.append("ORCPT=" + encodeOrcpt(recipient.orcpt))
    return " ".join([f"RCPT TO:<{recipient.address}>", *params]).encode("utf-8")


def bdatCommand(chunk: bytes, last: bool) -> bytes:
    """
    @return: the BDAT command for C{chunk} followed by the chunk.
    """
    return f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode("ascii") + chunk


def sizeLimit(extensions: dict[str, str]) -> int:
    """
    @return: the peer's SIZE limit, 0 when none is given (RFC 1870).
    """
    value = extensions.get("SIZE", "")
    return int(value) if value.isdigit() else 0
