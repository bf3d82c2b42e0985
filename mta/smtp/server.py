# -*- test-case-name: tests.test_smtpserver -*-
"""
The ESMTP server: step "receive" of the lifecycle.

One protocol serves three listeners (L{Mode}): C{smtp} (MX: mail from the
internet, local recipients or trusted relay), C{submission} (STARTTLS,
then AUTH before MAIL) and C{submissions} (the same over implicit TLS).
It is built on L{mta.protocol.LineCommandProtocol}: handlers return a
L{Reply} or a Deferred of one.

What may pass is decided elsewhere: every step is put to an
L{IPolicyCheck} (relay access, rate limits, sender ownership, later
SPF/DKIM/DMARC), addresses are expanded by the L{IUserDirectory}, logins
go to an L{ILoginService}, and the message goes to an L{IMessageSink};
250 is sent only when the sink says it is on disk.

The message arrives by DATA or by BDAT chunks (RFC 3030), both read in
bulk, not line by line.  DATA ends only at C{CRLF.CRLF}, searched for in
the raw stream; a bare CR or LF anywhere in a message gets it refused,
which closes the SMTP-smuggling family of attacks.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IOpenSSLContextFactory, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from mta.auth import LoginRefused
from mta.config import LimitsConfig
from mta.envelope import Address, Envelope, Recipient
from mta.errors import Reply
from mta.interfaces import ILoginService, IMessageSink, IPolicyCheck, IUserDirectory
from mta.logs import logLine
from mta.policy.base import Session, Verdict, stripHeaderFields
from mta.protocol import LineCommandProtocol
from mta.sasl import (
    MECHANISMS,
    Challenge,
    SaslCancelled,
    SaslError,
    SaslRefused,
    startExchange,
)
from mta.smtp import replies as R
from mta.smtp.data import ChunkReader, DotReader, checkMessage, missingHeaders, traceHeaders
from mta.smtp.params import (
    MailParams,
    ParamError,
    RcptParams,
    parseMailParams,
    parsePath,
    parseRcptParams,
)
from mta.tls import tlsDescription, tlsVersion

_log = Logger(namespace="mta.smtp")
_R = TypeVar("_R")


#: BDAT's arguments: a size and maybe LAST (RFC 3030).
_BDAT = re.compile(rb"^(\d{1,18})(?: +(LAST))? *$", re.IGNORECASE)


#: C{TO:<Postmaster>} without a domain.
_BARE_POSTMASTER = re.compile(r"^(\s*TO\s*:)\s*<postmaster>(?=\s|$)", re.IGNORECASE)


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

    @ivar params: what MAIL's parameters asked for (SMTPUTF8, BODY, DSN
        RET/ENVID, REQUIRETLS).
    @ivar chunks: the message so far when it comes by BDAT, else C{None}.
    """

    queueId: str
    sender: Address
    params: MailParams
    recipients: list[Recipient] = field(default_factory=list)
    rcptCount: int = 0
    chunks: bytearray | None = None


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
        policy: IPolicyCheck,
        limits: LimitsConfig,
        clock: IReactorTime,
        login: ILoginService | None = None,
        tls: IOpenSSLContextFactory | None = None,
    ) -> None:
        """
        @param mode: which listener this is for.
        @param hostname: for the banner, EHLO and Received headers.
        @param directory: expands recipients.
        @param sink: takes accepted messages.
        @param policy: asked at every step.
        @param limits: the C{[limits]} section.
        @param clock: the time source (idle timer, dates).
        @param login: checks AUTH credentials; C{None} offers no AUTH.
        @param tls: the server's TLS context; C{None} offers no STARTTLS.
        """
        self.mode = mode
        self.hostname = hostname
        self.directory = directory
        self.sink = sink
        self.policy = policy
        self.limits = limits
        self.clock = clock
        self.login = login
        self.tls = tls

    def buildProtocol(self, addr: IAddress | None) -> SMTPServer:
        """
        @return: a new session.
        """
        return SMTPServer(self)


def _then(
    answer: Verdict | Deferred[Verdict], f: Callable[..., _R], *args: Any
) -> _R | Deferred[_R]:
    """
    Call C{f(verdict, *args)} now when the policy answered at once, else
    when its Deferred fires (most checks answer at once: no Deferred per
    command on the fast path).
    """
    if isinstance(answer, Deferred):
        return answer.addCallback(f, *args)
    return f(answer, *args)


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
        b"BDAT": "do_BDAT",
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
        self._sasl: Callable[[bytes], Reply | Deferred[Any] | None] | None = None

    # -- base hooks -------------------------------------------------------------------

    def renderReply(self, reply: Reply) -> bytes:
        return reply.toBytes()

    def connectionMade(self) -> None:
        super().connectionMade()
        # The banner waits for the connection check (a blocklist lookup may
        # take a while); input meanwhile is held, as for any pending reply.
        self.handleResult(_then(self.factory.policy.checkConnection(self.session()), self._greet))

    def _greet(self, verdict: Verdict) -> Reply | None:
        if verdict.reply is not None:
            self._logReject(None, None, verdict.reply)
            self.closeWith(verdict.reply)
            return None
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

    def session(self) -> Session:
        """
        @return: what a policy check knows of this session, now.
        """
        return Session(
            peer=self.peer,
            listener=self.factory.mode.value,
            tls=self.tlsActive,
            heloName=self.heloName or "",
            authUser=self.authUser,
        )

    def _authOffered(self) -> bool:
        # RFC 8314 and Postfix's smtpd_tls_auth_only: passwords only under
        # TLS on submission, whatever the client's address.
        return (
            self.factory.login is not None and self.factory.mode is not Mode.MX and self.tlsActive
        )

    def _resetTransaction(self) -> None:
        self.transaction = None

    def _heloName(self, args: bytes) -> str | None:
        """
        @return: the name an EHLO/HELO gives, or C{None} when there is none
            or it holds a control character (it goes into the Received
            header and the logs, which nothing a client sends may split).
        """
        text = self._text(args)
        if not text:
            return None
        name = text.split()[0]
        if any(unicodedata.category(c) == "Cc" for c in name):
            return None
        return name

    def _text(self, args: bytes) -> str | None:
        # UTF-8 for SMTPUTF8 addresses; the address parser refuses anything
        # non-ASCII that the transaction did not announce.
        try:
            return args.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None

    # -- greeting commands ------------------------------------------------------------------

    def do_EHLO(self, args: bytes) -> Reply | Deferred[Reply | None] | None:
        name = self._heloName(args)
        if name is None:
            return self.protocolError(R.S501_HELO)
        self.heloName, self.esmtp = name, True
        self._resetTransaction()
        return _then(
            self.factory.policy.checkHelo(self.session(), self.heloName), self._ehloChecked
        )

    def _ehloChecked(self, verdict: Verdict) -> Reply | None:
        if verdict.reply is not None:
            self.heloName = None
            return self.protocolError(verdict.reply)
        return Reply(250, "\n".join(self.extensions()))

    def extensions(self) -> list[str]:
        """
        @return: the EHLO reply's lines: our name, then the extensions
            this session may use now.
        """
        lines = [
            self.factory.hostname,
            "PIPELINING",
            f"SIZE {self.factory.limits.message_size}",
        ]
        if self.factory.tls is not None and not self.tlsActive:
            lines.append("STARTTLS")
        if self._authOffered():
            lines.append("AUTH " + " ".join(MECHANISMS))
        lines += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]
        if self.tlsActive:
            # RFC 8689 4.1: only offered on a session under TLS.
            lines.append("REQUIRETLS")
        return lines

    def do_HELO(self, args: bytes) -> Reply | Deferred[Reply | None] | None:
        name = self._heloName(args)
        if name is None:
            return self.protocolError(R.S501_HELO_SYNTAX)
        self.heloName, self.esmtp = name, False
        self._resetTransaction()
        return _then(
            self.factory.policy.checkHelo(self.session(), self.heloName), self._heloChecked
        )

    def _heloChecked(self, verdict: Verdict) -> Reply | None:
        if verdict.reply is not None:
            self.heloName = None
            return self.protocolError(verdict.reply)
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
        if self.factory.login is None or self.factory.mode is Mode.MX:
            return self.protocolError(R.S500_UNKNOWN)
        if not self.tlsActive:
            return self.protocolError(R.S530_TLS_FIRST)
        if self.heloName is None:
            return self.protocolError(R.S503_HELO_FIRST)
        if self.authUser:
            return self.protocolError(R.S503_ALREADY_AUTH)
        if self.transaction is not None:
            return self.protocolError(R.S503_AUTH_IN_MAIL)
        mechanism, _, initial = args.strip().partition(b" ")
        exchange = startExchange(mechanism)
        if exchange is None:
            return self.protocolError(R.S504_MECHANISM)
        try:
            step = exchange.start(initial or None)
        except SaslRefused:
            return R.S535_AUTH_FAILED
        except SaslError:
            return self.protocolError(R.S501_AUTH_SYNTAX)
        return self._saslStep(exchange, step)

    def _saslStep(self, exchange: Any, step: Any) -> Reply | Deferred[Reply | None] | None:
        if isinstance(step, Challenge):
            self._sasl = lambda line: self._saslResponse(exchange, line)
            return Reply(334, step.data.decode("ascii"))
        return self._login(step.user, step.password)

    def _saslResponse(self, exchange: Any, line: bytes) -> Reply | Deferred[Reply | None] | None:
        try:
            step = exchange.respond(line)
        except SaslCancelled:
            return R.S501_AUTH_CANCELLED
        except SaslRefused:
            return R.S535_AUTH_FAILED
        except SaslError:
            return self.protocolError(R.S501_AUTH_SYNTAX)
        return self._saslStep(exchange, step)

    def _login(self, user: str, password: str) -> Deferred[Reply | None]:
        assert self.factory.login is not None
        d = self.factory.login.login(user, password, self.peer, "smtp")
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
        if not self.tlsActive:
            return R.S530_TLS_FIRST
        if not self.authUser:
            return R.S530_AUTH_FIRST
        return None

    def do_MAIL(self, args: bytes) -> Reply | Deferred[Reply | None] | None:
        refusal = self._mayStartMail()
        if refusal is not None:
            return self.protocolError(refusal)
        text = self._text(args)
        if text is None:
            return self.protocolError(R.S501_SENDER_SYNTAX)
        try:
            sender, raw = parsePath(text, "FROM")
            params = parseMailParams(raw, maxSize=self.factory.limits.message_size)
        except ParamError as e:
            return self._paramError(e)
        if sender.isUTF8 and not params.smtputf8:
            return self.protocolError(R.S553_NEEDS_SMTPUTF8)
        if params.requireTLS and not self.tlsActive:
            return self.protocolError(R.S530_REQUIRETLS)
        answer = self.factory.policy.checkSender(self.session(), sender)
        return _then(answer, self._senderChecked, sender, params)

    def _paramError(self, e: ParamError) -> Reply | None:
        # Syntax errors count towards the error limit; a refusal by size
        # or policy is an answer, not a client error.
        if e.reply.code in (500, 501, 555):
            return self.protocolError(e.reply)
        return e.reply

    def _senderChecked(self, verdict: Verdict, sender: Address, params: MailParams) -> Reply:
        if verdict.reply is not None:
            self._logReject(sender, None, verdict.reply)
            return verdict.reply
        self.transaction = Transaction(self.factory.sink.newQueueId(), sender, params)
        return R.S250_SENDER_OK

    def do_RCPT(self, args: bytes) -> Reply | Deferred[Reply | None] | None:
        t = self.transaction
        if t is None:
            return self.protocolError(R.S503_MAIL_FIRST)
        text = self._text(args)
        if text is None:
            return self.protocolError(R.S501_RCPT_SYNTAX)
        # RFC 5321 4.5.1: the bare <Postmaster> (any case, maybe with
        # parameters) is the postmaster of this server.
        domain = sorted(self.factory.directory.domains)[0]
        text = _BARE_POSTMASTER.sub(rf"\1<postmaster@{domain}>", text, count=1)
        try:
            # Without SMTPUTF8 nothing non-ASCII may pass, parameters included.
            rcpt, raw = parsePath(text, "TO", utf8=t.params.smtputf8)
            params = parseRcptParams(raw)
        except ParamError as e:
            return self._paramError(e)
        if rcpt.isNull:
            return self.protocolError(R.S501_RCPT_SYNTAX)
        if rcpt.isUTF8 and not t.params.smtputf8:
            return self.protocolError(R.S553_NEEDS_SMTPUTF8)
        if t.rcptCount >= self.factory.limits.recipients:
            return R.S452_TOO_MANY_RCPTS
        answer = self.factory.policy.checkRecipient(self.session(), t.sender, rcpt)
        return _then(answer, self._recipientChecked, t, rcpt, params)

    def _recipientChecked(
        self, verdict: Verdict, t: Transaction, rcpt: Address, params: RcptParams
    ) -> Reply | None:
        targets = None
        if verdict.reply is None:
            targets = self.factory.directory.resolve(rcpt)
        if targets is None:
            refusal = verdict.reply or R.S550_NO_USER
            self._logReject(t.sender, rcpt, refusal)
            return self.protocolError(refusal) if refusal.isPermanent else refusal
        t.rcptCount += 1
        known = {r.address for r in t.recipients}
        orcpt = f"{params.orcpt[0]};{params.orcpt[1]}" if params.orcpt else ""
        for target in targets:
            if target not in known:
                known.add(target)
                t.recipients.append(Recipient(target, rcpt, notify=params.notify, orcpt=orcpt))
        return R.S250_RCPT_OK

    def _mayStartData(self, chunked: bool) -> Reply | None:
        t = self.transaction
        if t is None:
            return R.S503_MAIL_FIRST
        if not t.recipients:
            return R.S554_NO_RECIPIENTS
        if not chunked and t.chunks is not None:
            return R.S503_DATA_AFTER_BDAT
        return None

    def do_DATA(self, args: bytes) -> Reply | None:
        refusal = self._mayStartData(chunked=False)
        if refusal is not None:
            return self.protocolError(refusal)
        self.setBulkMode(DotReader(self.factory.limits.message_size, self._messageReceived))
        return R.S354_DATA

    # -- BDAT (RFC 3030) ------------------------------------------------------------------------

    def do_BDAT(self, args: bytes) -> Reply | Deferred[Reply] | None:
        m = _BDAT.match(args.strip())
        if m is None:
            # Without a size we cannot tell where the chunk ends: whatever
            # follows could be taken for commands.  Give up on the session.
            self.closeWith(R.S501_BDAT_SYNTAX)
            return None
        size, last = int(m.group(1)), m.group(2) is not None
        refusal = self._mayStartData(chunked=True)
        if refusal is not None:
            # The chunk is read and dropped all the same (RFC 3030 3).
            return self._readChunk(size, None, lambda: self.protocolError(refusal))
        t = self.transaction
        assert t is not None
        if t.chunks is None:
            t.chunks = bytearray()
        if len(t.chunks) + size > self.factory.limits.message_size:
            self._resetTransaction()
            self._logTransaction(t, len(t.chunks) + size, R.S552_TOO_BIG)
            return self._readChunk(size, None, lambda: R.S552_TOO_BIG)
        return self._readChunk(size, t.chunks, lambda: self._chunkDone(t, size, last))

    def _readChunk(
        self, size: int, into: bytearray | None, done: Callable[[], Any]
    ) -> Reply | Deferred[Reply] | None:
        """
        Take the next C{size} bytes of input as a BDAT chunk (appended to
        C{into}, or dropped), then answer C{done()}.
        """
        if size == 0:
            result: Reply | Deferred[Reply] | None = done()
            return result
        self.setBulkMode(ChunkReader(size, into, done))
        return None

    def _chunkDone(self, t: Transaction, size: int, last: bool) -> Reply | Deferred[Reply] | None:
        if not last:
            return Reply(250, f"2.0.0 {size} octets received")
        assert t.chunks is not None
        body = bytes(t.chunks)
        if body and not body.endswith(b"\r\n"):
            # RFC 3030 leaves the last line end to the client; a stored
            # message always ends with one.
            body += b"\r\n"
        return self._messageReceived(body, False)

    # -- the message --------------------------------------------------------------------------

    def _messageReceived(self, body: bytes, tooBig: bool) -> Reply | Deferred[Reply] | None:
        t = self.transaction
        assert t is not None
        self._resetTransaction()
        refusal = checkMessage(body, self.factory.limits.message_size, tooBig)
        if refusal is not None:
            self._logTransaction(t, len(body), refusal)
            return refusal
        if self.factory.mode is not Mode.MX:
            now = self.clock.seconds()
            host = self.factory.hostname
            body = missingHeaders(body, queueId=t.queueId, host=host, now=now) + body
        p = t.params
        envelope = Envelope(
            queueId=t.queueId,
            sender=t.sender,
            recipients=tuple(t.recipients),
            arrival=self.clock.seconds(),
            clientAddress=self.peer,
            heloName=self.heloName or "",
            authUser=self.authUser,
            smtputf8=p.smtputf8,
            bodyType=p.body or "",
            requireTLS=p.requireTLS,
            dsnRet=p.ret or "",
            dsnEnvid=p.envid or "",
        )
        answer = self.factory.policy.checkMessage(self.session(), envelope, body)
        if isinstance(answer, Deferred):
            return answer.addCallback(self._messageChecked, t, envelope, body)
        return self._messageChecked(answer, t, envelope, body)

    def _messageChecked(
        self, verdict: Verdict, t: Transaction, envelope: Envelope, body: bytes
    ) -> Deferred[Reply]:
        if verdict.reply is not None:
            self._logTransaction(t, len(body), verdict.reply, verdict.logNote)
            return succeed(verdict.reply)
        if verdict.stripHeaders:
            # Forged Authentication-Results claiming to be ours (RFC 8601 5).
            body = stripHeaderFields(body, verdict.stripHeaders)
        added = "".join(f"{h}\r\n" for h in verdict.headers).encode("utf-8", "surrogateescape")
        data = self._traceHeaders(t) + added + body
        if verdict.junk:
            # A check (DMARC p=quarantine) wants it kept out of the inbox.
            envelope = replace(envelope, extra={**envelope.extra, "junk": True})
        d = self.factory.sink.enqueue(envelope, data)
        replied = d.addCallbacks(
            lambda qid: Reply(250, f"2.0.0 Ok: queued as {qid}"),
            self._enqueueFailed,
            errbackArgs=(t,),
        )
        logged: Deferred[Reply] = replied.addCallback(
            self._logQueued, t, len(data), verdict.logNote
        )
        return logged

    def _protocolName(self, t: Transaction) -> str:
        """
        @return: the Received header's C{with} word (RFC 3848, RFC 6531).
        """
        if not self.esmtp:
            return "SMTP"
        name = "UTF8SMTP" if t.params.smtputf8 else "ESMTP"
        if self.tlsActive:
            name += "S"
        if self.authUser:
            name += "A"
        return name

    def _traceHeaders(self, t: Transaction) -> bytes:
        return traceHeaders(
            heloName=self.heloName or "",
            peer=self.peer,
            tls=tlsDescription(self.transport) if self.tlsActive else "",
            host=self.factory.hostname,
            protocol=self._protocolName(t),
            queueId=t.queueId,
            forAddress=str(t.recipients[0].original) if t.rcptCount == 1 else "",
            now=self.clock.seconds(),
        )

    def _enqueueFailed(self, failure: Failure, t: Transaction) -> Reply:
        _log.failure("smtp: id={id} queue write failed", failure, id=t.queueId)
        return R.S451_QUEUE

    # -- logging --------------------------------------------------------------------------------

    def _logQueued(self, reply: Reply, t: Transaction, size: int, note: str) -> Reply:
        self._logTransaction(t, size, reply, note)
        return reply

    def _logTransaction(self, t: Transaction, size: int, reply: Reply, note: str = "") -> None:
        """
        The transaction's one log line; C{note} (the checks' words, such as
        their SPF, DKIM and DMARC results) goes before the result, which
        is last because its text has spaces.
        """
        logLine(
            _log,
            "smtp: id={id} from=<{sender}> to={to} ip={ip} helo={helo} tls={tls} "
            "auth={auth} size={size} {note}result={result}",
            id=t.queueId,
            sender=t.sender,
            to=",".join(f"<{r.address}>" for r in t.recipients),
            ip=self.peer,
            helo=self.heloName,
            tls=tlsVersion(self.transport) if self.tlsActive else "none",
            auth=self.authUser or "-",
            size=size,
            note=f"{note} " if note else "",
            result=str(reply),
        )

    def _logReject(self, sender: Address | None, rcpt: Address | None, reply: Reply) -> None:
        logLine(
            _log,
            "smtp: reject from=<{sender}> to=<{to}> ip={ip} helo={helo} auth={auth} result={result}",
            sender=sender if sender is not None else "",
            to=rcpt if rcpt is not None else "",
            ip=self.peer,
            helo=self.heloName,
            auth=self.authUser or "-",
            result=str(reply),
        )
