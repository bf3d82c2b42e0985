# -*- test-case-name: tests.test_smtpserver -*-
"""
The ESMTP server: step "receive" of the lifecycle.

One protocol serves three listeners (L{Mode}): C{smtp} (MX: mail from the
internet, local recipients or trusted relay), C{submission} (STARTTLS, then
AUTH before MAIL) and C{submissions} (the same over implicit TLS).  It is
built on L{mta.protocol.LineCommandProtocol}: handlers return a L{Reply} or
a Deferred of one.  DATA is read in bulk, not line by line: the terminator
C{CRLF.CRLF} is searched for in the raw stream, which is both fast and
immune to SMTP smuggling (a bare LF or bare CR anywhere in a message gets
it refused).  The message goes to an L{IMessageSink}; 250 is sent only
when the sink says it is on disk.
"""

from __future__ import annotations

import base64
import email.utils
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from mta.auth import Authenticator, LoginRefused, decodePlain, plaintextAllowed
from mta.config import LimitsConfig
from mta.envelope import Address, AddressError, Envelope, Recipient
from mta.errors import Reply
from mta.interfaces import IMessageSink, IUserDirectory
from mta.logs import logLine
from mta.policy.relayaccess import RelayPolicy
from mta.protocol import LineCommandProtocol, isLoopback
from mta.smtp import replies as R
from mta.tls import TLSContextHolder, tlsVersion

_log = Logger(namespace="mta.smtp")

_PATH = re.compile(r"^\s*(<[^>]*>|[^\s<>]+)(.*)$")
_HEADER_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:", re.IGNORECASE | re.MULTILINE)
_HEADER_DATE = re.compile(rb"^date[ \t]*:", re.IGNORECASE | re.MULTILINE)
_HEADER_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)
MAX_HOPS = 50

#: One step of a SASL exchange: gets the client's next line.
SaslStep = Callable[[bytes], "Reply | Deferred[Any] | None"]


#: The last Date-header text made, and the second it is for.
_lastDate: tuple[int, str] = (-1, "")


def _headerDate(seconds: float) -> str:
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


class Mode(enum.Enum):
    """
    What a listener is for.
    """

    MX = "smtp"
    SUBMISSION = "submission"
    SUBMISSIONS = "submissions"


@dataclass
class Transaction:
    """
    The state of one MAIL transaction.
    """

    queueId: str
    sender: Address
    recipients: list[Recipient] = field(default_factory=list)
    rcptCount: int = 0


def parsePath(text: str, keyword: str) -> tuple[Address, dict[str, str]]:
    """
    Parse C{FROM:<addr> PARAM=VALUE ...} (or C{TO:...}).

    @return: the address and the ESMTP parameters (names upper case).
    @raise AddressError: bad syntax.
    """
    head, colon, rest = text.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise AddressError("bad syntax")
    m = _PATH.match(rest)
    if not m:
        raise AddressError("bad syntax")
    path, params = m.group(1), m.group(2).split()
    if path.startswith("<"):
        path = path[1:-1]
    if path.startswith("@"):
        # An obsolete source route (<@a,@b:user@c>): ignore the route.
        path = path.partition(":")[2]
    options = {}
    for p in params:
        key, _, value = p.partition("=")
        options[key.upper()] = value
    return Address.parse(path), options


class SMTPFactory(Factory):
    """
    Builds L{SMTPServer}s and holds what they share.
    """

    def __init__(
        self,
        *,
        mode: Mode,
        hostname: str,
        directory: IUserDirectory,
        sink: IMessageSink,
        relayPolicy: RelayPolicy,
        limits: LimitsConfig,
        clock: IReactorTime,
        authenticator: Authenticator | None = None,
        tls: TLSContextHolder | None = None,
    ) -> None:
        self.mode = mode
        self.hostname = hostname
        self.directory = directory
        self.sink = sink
        self.relayPolicy = relayPolicy
        self.limits = limits
        self.clock = clock
        self.authenticator = authenticator
        self.tls = tls

    def buildProtocol(self, addr: IAddress | None) -> SMTPServer:
        return SMTPServer(self)


class SMTPServer(LineCommandProtocol[Reply]):
    """
    One ESMTP session.
    """

    commands = {
        b"EHLO": "do_EHLO",
        b"HELO": "do_HELO",
        b"MAIL": "do_MAIL",
        b"RCPT": "do_RCPT",
        b"DATA": "do_DATA",
        b"RSET": "do_RSET",
        b"NOOP": "do_NOOP",
        b"QUIT": "do_QUIT",
        b"VRFY": "do_VRFY",
        b"EXPN": "do_EXPN",
        b"HELP": "do_HELP",
        b"STARTTLS": "do_STARTTLS",
        b"AUTH": "do_AUTH",
    }

    def __init__(self, factory: SMTPFactory) -> None:
        super().__init__(factory.clock)
        self.factory = factory
        limits = factory.limits
        self.maxLineLength = limits.line_length
        self.maxCommands = limits.commands
        self.maxErrors = limits.errors
        self.idleTimeout = limits.smtp_idle
        self.heloName: str | None = None
        self.esmtp = False
        self.authUser = ""
        self.authFailures = 0
        self.transaction: Transaction | None = None
        self._data = bytearray()
        self._dataTooBig = False
        self._sasl: SaslStep | None = None

    # -- base hooks -------------------------------------------------------------------

    def renderReply(self, reply: Reply) -> bytes:
        return reply.toBytes()

    def greeting(self) -> Reply:
        return Reply(220, f"{self.factory.hostname} ESMTP")

    def _closing(self, template: str) -> Reply:
        return Reply(421, template.format(host=self.factory.hostname))

    def unknownCommand(self, verb: bytes, args: bytes) -> Reply | None:
        return self.protocolError(R.S500_UNKNOWN)

    def lineTooLong(self) -> Reply:
        return R.S500_LINE_TOO_LONG

    def tooManyCommands(self) -> Reply:
        return self._closing(R.S421_TOO_MANY_COMMANDS)

    def tooManyErrors(self) -> Reply:
        return self._closing(R.S421_TOO_MANY_ERRORS)

    def timedOut(self) -> Reply:
        return self._closing(R.S421_TIMEOUT)

    def internalError(self, failure: Failure) -> Reply:
        return R.S451_INTERNAL

    def lineReceived(self, line: bytes) -> None:
        if self._sasl is None:
            super().lineReceived(line)
            return
        step, self._sasl = self._sasl, None
        try:
            result = step(line)
        except Exception:
            result = self.internalError(Failure())
        self.handleResult(result)

    # -- helpers ----------------------------------------------------------------------------

    @property
    def plaintextOk(self) -> bool:
        """
        Whether passwords may be sent on this connection (TLS or loopback).
        """
        return plaintextAllowed(self.tlsActive, self.peer)

    def _authOffered(self) -> bool:
        return (
            self.factory.authenticator is not None
            and self.factory.mode is not Mode.MX
            and self.plaintextOk
        )

    def _resetTransaction(self) -> None:
        self.transaction = None

    def _args(self, args: bytes) -> str | None:
        try:
            return args.decode("ascii").strip()
        except UnicodeDecodeError:
            return None

    # -- greeting commands ------------------------------------------------------------------

    def do_EHLO(self, args: bytes) -> Reply | None:
        name = self._args(args)
        if not name:
            return self.protocolError(R.S501_HELO)
        self.heloName, self.esmtp = name.split()[0], True
        self._resetTransaction()
        lines = [
            self.factory.hostname,
            "PIPELINING",
            f"SIZE {self.factory.limits.message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        if self.factory.tls is not None and not self.tlsActive:
            lines.append("STARTTLS")
        if self._authOffered():
            lines.append("AUTH PLAIN LOGIN")
        return Reply(250, "\n".join(lines))

    def do_HELO(self, args: bytes) -> Reply | None:
        name = self._args(args)
        if not name:
            return self.protocolError(Reply(501, "5.5.4 Syntax: HELO hostname"))
        self.heloName, self.esmtp = name.split()[0], False
        self._resetTransaction()
        return Reply(250, self.factory.hostname)

    def do_NOOP(self, args: bytes) -> Reply:
        return R.S250_OK

    def do_RSET(self, args: bytes) -> Reply:
        self._resetTransaction()
        return R.S250_OK

    def do_QUIT(self, args: bytes) -> None:
        self.closeWith(R.S221_BYE)

    def do_VRFY(self, args: bytes) -> Reply:
        # Answering truthfully would let anyone harvest the user list.
        return R.S252_VRFY

    def do_EXPN(self, args: bytes) -> Reply:
        return R.S502_EXPN

    def do_HELP(self, args: bytes) -> Reply:
        return R.S214_HELP

    # -- STARTTLS -------------------------------------------------------------------------------

    def do_STARTTLS(self, args: bytes) -> Reply | None:
        if args.strip():
            return self.protocolError(R.S501_SYNTAX)
        if self.tlsActive:
            return self.protocolError(R.S503_TLS_ACTIVE)
        if self.factory.tls is None:
            return R.S454_TLS_UNAVAILABLE
        self.sendReply(R.S220_TLS_GO)
        # Anything pipelined after STARTTLS arrived in plaintext: drop it
        # (CVE-2011-0411), and with it every bit of earlier state.
        self.discardInput()
        self.transport.startTLS(self.factory.tls)  # type: ignore[union-attr]
        self.tlsActive = True
        self.heloName, self.esmtp, self.authUser = None, False, ""
        self._resetTransaction()
        return None

    # -- AUTH ---------------------------------------------------------------------------------

    def do_AUTH(self, args: bytes) -> Reply | Deferred[Reply | None] | None:
        if self.factory.authenticator is None or self.factory.mode is Mode.MX:
            return self.protocolError(R.S500_UNKNOWN)
        if not self.plaintextOk:
            return self.protocolError(R.S538_ENCRYPTION)
        if self.heloName is None:
            return self.protocolError(R.S503_HELO_FIRST)
        if self.authUser:
            return self.protocolError(R.S503_ALREADY_AUTH)
        if self.transaction is not None:
            return self.protocolError(R.S503_AUTH_IN_MAIL)
        mechanism, _, initial = args.strip().partition(b" ")
        mechanism = mechanism.upper()
        if mechanism == b"PLAIN":
            if initial:
                return self._plainResponse(initial)
            return self._ask(b"", self._plainResponse)
        if mechanism == b"LOGIN":
            if initial:
                return self._loginUser(initial)
            return self._ask(b"VXNlcm5hbWU6", self._loginUser)
        return self.protocolError(R.S504_MECHANISM)

    def _ask(self, challenge: bytes, step: SaslStep) -> Reply:
        self._sasl = step
        return Reply(334, challenge.decode("ascii"))

    def _plainResponse(self, line: bytes) -> Reply | Deferred[Reply | None] | None:
        if line.strip() == b"*":
            return R.S501_AUTH_CANCELLED
        try:
            _, user, password = decodePlain(line.strip())
        except ValueError:
            return self.protocolError(R.S501_AUTH_SYNTAX)
        return self._login(user, password)

    def _loginUser(self, line: bytes) -> Reply | None:
        if line.strip() == b"*":
            return R.S501_AUTH_CANCELLED
        try:
            user = base64.b64decode(line.strip(), validate=True).decode("utf-8")
        except ValueError:
            return self.protocolError(R.S501_AUTH_SYNTAX)
        self._sasl = lambda line: self._loginPassword(user, line)
        return Reply(334, "UGFzc3dvcmQ6")

    def _loginPassword(self, user: str, line: bytes) -> Reply | Deferred[Reply | None] | None:
        if line.strip() == b"*":
            return R.S501_AUTH_CANCELLED
        try:
            password = base64.b64decode(line.strip(), validate=True).decode("utf-8")
        except ValueError:
            return self.protocolError(R.S501_AUTH_SYNTAX)
        return self._login(user, password)

    def _login(self, user: str, password: str) -> Deferred[Reply | None]:
        assert self.factory.authenticator is not None
        d = self.factory.authenticator.login(user, password, self.peer, "smtp")
        replied: Deferred[Reply | None] = d.addCallbacks(self._loggedIn, self._loginFailed)
        return replied

    def _loggedIn(self, address: str) -> Reply:
        self.authUser = address
        return R.S235_AUTH_OK

    def _loginFailed(self, failure: Failure) -> Reply | None:
        if failure.check(LoginRefused):
            self.closeWith(R.S454_AUTH_BLOCKED)
            return None
        self.authFailures += 1
        if self.authFailures >= self.factory.limits.auth_failures:
            self.closeWith(self._closing(R.S421_AUTH_FAILURES))
            return None
        return R.S535_AUTH_FAILED

    # -- the mail transaction ---------------------------------------------------------------------

    def _mayStartMail(self) -> Reply | None:
        if self.heloName is None:
            return R.S503_HELO_FIRST
        if self.transaction is not None:
            return R.S503_NESTED_MAIL
        if self.factory.mode is Mode.MX:
            return None
        if not self.tlsActive and not isLoopback(self.peer):
            return R.S530_TLS_FIRST
        if not self.authUser:
            return R.S530_AUTH_FIRST
        return None

    def do_MAIL(self, args: bytes) -> Reply | None:
        refusal = self._mayStartMail()
        if refusal is not None:
            return self.protocolError(refusal)
        text = self._args(args)
        try:
            sender, params = parsePath(text or "", "FROM")
        except AddressError:
            return self.protocolError(R.S501_SENDER_SYNTAX)
        problem = self._checkMailParams(params)
        if problem is not None:
            return problem
        owned = sender.isNull or self.factory.directory.mayUseSender(self.authUser, sender)
        if self.authUser and not owned:
            self._logReject(sender, None, R.S553_NOT_OWNER)
            return R.S553_NOT_OWNER
        self.transaction = Transaction(self.factory.sink.newQueueId(), sender)
        return R.S250_SENDER_OK

    def _checkMailParams(self, params: dict[str, str]) -> Reply | None:
        for key, value in params.items():
            if key == "SIZE":
                if not value.isdigit():
                    return self.protocolError(R.S501_SYNTAX)
                if int(value) > self.factory.limits.message_size:
                    return R.S552_TOO_BIG
            elif key == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    return self.protocolError(R.S501_SYNTAX)
            elif key != "AUTH":
                return self.protocolError(R.S555_PARAMETER)
        return None

    def do_RCPT(self, args: bytes) -> Reply | None:
        t = self.transaction
        if t is None:
            return self.protocolError(R.S503_MAIL_FIRST)
        text = self._args(args) or ""
        try:
            if text.upper().replace(" ", "") in ("TO:<POSTMASTER>", "TO:POSTMASTER"):
                rcpt = Address("postmaster", sorted(self.factory.directory.domains)[0])
                params: dict[str, str] = {}
            else:
                rcpt, params = parsePath(text, "TO")
        except AddressError:
            return self.protocolError(R.S501_RCPT_SYNTAX)
        if params or rcpt.isNull:
            return self.protocolError(R.S555_PARAMETER if params else R.S501_RCPT_SYNTAX)
        if t.rcptCount >= self.factory.limits.recipients:
            return R.S452_TOO_MANY_RCPTS
        refusal = self._checkRecipient(rcpt)
        if refusal is not None:
            self._logReject(t.sender, rcpt, refusal)
            return self.protocolError(refusal)
        return R.S250_RCPT_OK

    def _checkRecipient(self, rcpt: Address) -> Reply | None:
        directory = self.factory.directory
        mayRelay = self.authUser or self.factory.relayPolicy.isTrusted(self.peer)
        if not directory.isLocalDomain(rcpt.domain) and not mayRelay:
            return R.S554_NO_RELAY
        targets = directory.resolve(rcpt)
        if targets is None:
            return R.S550_NO_USER
        t = self.transaction
        assert t is not None
        t.rcptCount += 1
        known = {r.address for r in t.recipients}
        for target in targets:
            if target not in known:
                known.add(target)
                t.recipients.append(Recipient(target, rcpt))
        return None

    def do_DATA(self, args: bytes) -> Reply | None:
        if self.transaction is None:
            return self.protocolError(R.S503_MAIL_FIRST)
        if not self.transaction.recipients:
            return self.protocolError(Reply(554, "5.5.1 Error: no valid recipients"))
        self._data = bytearray(b"\r\n")
        self._dataTooBig = False
        self.setBulkMode(self._dataReceived)
        return R.S354_DATA

    # -- DATA in bulk ------------------------------------------------------------------------------

    def _dataReceived(self, chunk: bytes) -> tuple[int, Any] | None:
        """
        Consume raw DATA input; the buffer starts with a CRLF so that the
        terminator is always C{CRLF.CRLF}, even for an empty message.
        """
        buf = self._data
        start = max(0, len(buf) - 4)
        buf += chunk
        end = buf.find(b"\r\n.\r\n", start)
        if end < 0:
            if len(buf) > self.factory.limits.message_size + 2:
                # Keep reading to the end, but keep only what could hold
                # the start of the terminator.
                self._dataTooBig = True
                del buf[:-4]
            return None
        leftover = len(buf) - (end + 5)
        # RFC 5321 4.5.2: remove one leading dot from every line.
        body = bytes(buf[: end + 2]).replace(b"\r\n.", b"\r\n")[2:]
        self._data = bytearray()
        return len(chunk) - leftover, self._messageReceived(body)

    def _messageReceived(self, body: bytes) -> Reply | Deferred[Reply] | None:
        t = self.transaction
        assert t is not None
        self._resetTransaction()
        refusal = self._checkMessage(body)
        if refusal is not None:
            self._logTransaction(t, len(body), refusal)
            return refusal
        data = self._traceHeaders(t, body) + body
        envelope = Envelope(
            queueId=t.queueId,
            sender=t.sender,
            recipients=tuple(t.recipients),
            arrival=self.clock.seconds(),
            clientAddress=self.peer,
            heloName=self.heloName or "",
            authUser=self.authUser,
        )
        d = self.factory.sink.enqueue(envelope, data)
        replied = d.addCallbacks(
            lambda qid: Reply(250, f"2.0.0 Ok: queued as {qid}"),
            self._enqueueFailed,
            errbackArgs=(t,),
        )
        logged: Deferred[Reply] = replied.addCallback(self._logQueued, t, len(data))
        return logged

    def _checkMessage(self, body: bytes) -> Reply | None:
        if self._dataTooBig or len(body) > self.factory.limits.message_size:
            return R.S552_TOO_BIG
        crlf = body.count(b"\r\n")
        if body.count(b"\n") != crlf or body.count(b"\r") != crlf:
            return R.S554_BARE_NEWLINE
        head = body[: body.find(b"\r\n\r\n") + 2]
        if len(_HEADER_RECEIVED.findall(head)) >= MAX_HOPS:
            return R.S554_LOOP
        return None

    def _traceHeaders(self, t: Transaction, body: bytes) -> bytes:
        """
        @return: the Received header, plus Message-ID and Date where a
            submitted message lacks them.
        """
        protocol = "ESMTP" if self.esmtp else "SMTP"
        if self.esmtp and self.tlsActive:
            protocol += "S"
        if self.esmtp and self.authUser:
            protocol += "A"
        tls = tlsVersion(self.transport) if self.tlsActive else ""
        using = f" (using {tls})" if tls else ""
        forClause = f"\r\n\tfor <{t.recipients[0].original}>" if t.rcptCount == 1 else ""
        date = _headerDate(self.clock.seconds())
        host = self.factory.hostname
        trace = (
            f"Received: from {self.heloName} ([{self.peer}]){using}\r\n"
            f"\tby {host} with {protocol} id {t.queueId}{forClause};\r\n\t{date}\r\n"
        )
        if self.factory.mode is not Mode.MX:
            head = body[: body.find(b"\r\n\r\n") + 2] if b"\r\n\r\n" in body else body
            if not _HEADER_DATE.search(head):
                trace += f"Date: {date}\r\n"
            if not _HEADER_MESSAGE_ID.search(head):
                trace += f"Message-ID: <{t.queueId}@{host}>\r\n"
        return trace.encode("utf-8", "surrogateescape")

    def _enqueueFailed(self, failure: Failure, t: Transaction) -> Reply:
        _log.failure("smtp: id={id} queue write failed", failure, id=t.queueId)
        return R.S451_QUEUE

    # -- logging --------------------------------------------------------------------------------

    def _logQueued(self, reply: Reply, t: Transaction, size: int) -> Reply:
        self._logTransaction(t, size, reply)
        return reply

    def _logTransaction(self, t: Transaction, size: int, reply: Reply) -> None:
        logLine(
            _log,
            "smtp: id={id} from=<{sender}> to={to} ip={ip} helo={helo} tls={tls} "
            "auth={auth} size={size} result={result}",
            id=t.queueId,
            sender=t.sender,
            to=",".join(f"<{r.address}>" for r in t.recipients),
            ip=self.peer,
            helo=self.heloName,
            tls=tlsVersion(self.transport) if self.tlsActive else "none",
            auth=self.authUser or "-",
            size=size,
            result=str(reply),
        )

    def _logReject(self, sender: Address, rcpt: Address | None, reply: Reply) -> None:
        logLine(
            _log,
            "smtp: reject from=<{sender}> to=<{to}> ip={ip} helo={helo} auth={auth} result={result}",
            sender=sender,
            to=rcpt if rcpt is not None else "",
            ip=self.peer,
            helo=self.heloName,
            auth=self.authUser or "-",
            result=str(reply),
        )
