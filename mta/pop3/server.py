# -*- test-case-name: tests.test_pop3 -*-
"""
The POP3 server: the reading end of the lifecycle for POP3 clients.

RFC 1939 (the protocol), RFC 2449 (CAPA, response codes), RFC 5034 (SASL
PLAIN via AUTH) and RFC 2595 (STLS), built on the shared
L{LineCommandProtocol}.  A session moves through the states of RFC 1939:
AUTHORIZATION (USER/PASS, AUTH, STLS) -> TRANSACTION (STAT, LIST, UIDL,
RETR, TOP, DELE, RSET, NOOP) -> UPDATE (QUIT removes what DELE marked).

Collaborators come from L{POP3Factory}: the L{ILoginService} checks
logins (and throttles guessing), an L{IMessageStore} holds the mail.  The
message list is a snapshot taken at login, so message numbers stay fixed
for the session; a message another session removed meanwhile answers
C{-ERR no such message}.  Deletions happen only at QUIT: a dropped
connection, an idle timeout or a refused command leaves the mailbox
untouched.

Choices the RFCs leave open:

  - Command lines may be up to C{max(limits.line_length, 512)} octets.
    RFC 2449 asks clients to keep to 255, but SASL responses and long
    passwords legitimately exceed it; being liberal costs nothing.
  - A session may send C{limits.commands} commands plus five per message
    in its snapshot (LIST, UIDL, TOP, RETR and DELE each), so a client
    draining a big mailbox is never cut off half-way.
  - After C{limits.pop3_idle} seconds without input the server says
    C{-ERR Disconnected for inactivity} and closes, without entering
    UPDATE (RFC 1939 section 3 allows the close without a reply; the line
    tells a human reading a transcript what happened).
  - Passwords (USER/PASS and AUTH PLAIN) are accepted only under TLS or
    from loopback; elsewhere CAPA does not offer them and they answer
    C{-ERR [AUTH]}.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLContextFactory,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mta.auth import (
    LoginFailed,
    LoginRefused,
    decodePlain,
    plaintextAllowed,
)
from mta.config import LimitsConfig
from mta.interfaces import ILoginService, IMailbox, IMessageStore, StoredMessage
from mta.logs import logLine
from mta.pop3.replies import (
    CONTINUE,
    ERR_ALREADY_DELETED,
    ERR_AUTH_FAILED,
    ERR_BAD_STATE,
    ERR_BLOCKED,
    ERR_INTERNAL,
    ERR_LINE_TOO_LONG,
    ERR_MAILBOX,
    ERR_MECHANISM,
    ERR_NO_SUCH_MESSAGE,
    ERR_NO_USER,
    ERR_PLAINTEXT,
    ERR_SASL_CANCELLED,
    ERR_SASL_MALFORMED,
    ERR_SYNTAX,
    ERR_TIMEOUT,
    ERR_TLS_ACTIVE,
    ERR_TLS_UNAVAILABLE,
    ERR_TOO_MANY_COMMANDS,
    ERR_TOO_MANY_ERRORS,
    ERR_UNKNOWN,
    ERR_UPDATE,
    OK,
    POP3Reply,
    byteStuff,
    topOfMessage,
)
from mta.protocol import LineCommandProtocol
from mta.tls import tlsVersion

_log = Logger()


_MAX_NUMBER_DIGITS = 9


def _number(arg: bytes) -> int | None:
    """
    @return: a non-negative decimal argument, or C{None}.
    """
    if not arg.isdigit() or len(arg) > _MAX_NUMBER_DIGITS:
        return None
    return int(arg)


# -- factory and protocol -----------------------------------------------------


class POP3Factory(Factory):
    """
    Builds L{POP3Server}s and holds what they share.

    @ivar authenticator: checks logins.
    @ivar store: every user's mail.
    @ivar tls: the server TLS context for STLS, or C{None} for no STLS.
    @ivar hostname: for the greeting.
    @ivar limits: the C{[limits]} section.
    @ivar clock: the time source for idle timeouts.
    """

    def __init__(
        self,
        authenticator: ILoginService,
        store: IMessageStore,
        tls: IOpenSSLContextFactory | None,
        hostname: str,
        limits: LimitsConfig,
        clock: IReactorTime,
    ) -> None:
        self.authenticator = authenticator
        self.store = store
        self.tls = tls
        self.hostname = hostname
        self.limits = limits
        self.clock = clock

    def buildProtocol(self, addr: IAddress | None) -> POP3Server:
        """
        @return: a new session.
        """
        return POP3Server(self)


class State(enum.Enum):
    """
    The session states of RFC 1939.
    """

    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"


@implementer(IPushProducer)
class POP3Server(LineCommandProtocol[POP3Reply]):
    """
    One POP3 session.

    It is also, briefly, a push producer on its transport: after writing a
    message it waits until the transport has sent it before reading the
    next command, so a client that pipelines RETRs without reading cannot
    make the server buffer its whole mailbox.

    @ivar state: where in RFC 1939's session the client is.
    @ivar user: the logged-in address, or C{""}.
    """

    commands = {
        b"CAPA": "do_CAPA",
        b"USER": "do_USER",
        b"PASS": "do_PASS",
        b"AUTH": "do_AUTH",
        b"STLS": "do_STLS",
        b"STAT": "do_STAT",
        b"LIST": "do_LIST",
        b"UIDL": "do_UIDL",
        b"RETR": "do_RETR",
        b"TOP": "do_TOP",
        b"DELE": "do_DELE",
        b"RSET": "do_RSET",
        b"NOOP": "do_NOOP",
        b"QUIT": "do_QUIT",
    }

    def __init__(self, factory: POP3Factory) -> None:
        super().__init__(factory.clock)
        self.factory = factory
        limits = factory.limits
        self.maxLineLength = max(limits.line_length, 512)
        self.maxCommands = limits.commands
        self.maxErrors = limits.errors
        self.idleTimeout = limits.pop3_idle
        self.state = State.AUTHORIZATION
        self.user = ""
        self._pendingUser: str | None = None
        self._sasl = False
        self._authFailures = 0
        self._mailbox: IMailbox | None = None
        self._messages: list[StoredMessage] = []
        self._deleted: set[int] = set()
        self._retrieved = 0
        self._removed = 0
        self._end = "drop"
        self._writePaused = False
        self._readingPaused = False
        self._drained: Deferred[None] | None = None

    # -- base hooks ----------------------------------------------------------------

    def renderReply(self, reply: POP3Reply) -> bytes:
        """
        @return: C{reply} as bytes.
        """
        return reply.toBytes()

    def greeting(self) -> POP3Reply:
        """
        @return: the banner; no software name or version.
        """
        return POP3Reply(True, f"{self.factory.hostname} POP3 ready")

    def unknownCommand(self, verb: bytes, args: bytes) -> POP3Reply | None:
        """
        Count and refuse an unknown verb.
        """
        return self.protocolError(ERR_UNKNOWN)

    def lineTooLong(self) -> POP3Reply:
        """
        @return: the answer to an over-long line.
        """
        return ERR_LINE_TOO_LONG

    def tooManyCommands(self) -> POP3Reply:
        """
        @return: the last words to a command flood.
        """
        self._end = "commands"
        return ERR_TOO_MANY_COMMANDS

    def tooManyErrors(self) -> POP3Reply:
        """
        @return: the last words to an error flood.
        """
        self._end = "errors"
        return ERR_TOO_MANY_ERRORS

    def timedOut(self) -> POP3Reply:
        """
        @return: the last words to an idle client (nothing is deleted).
        """
        self._end = "timeout"
        return ERR_TIMEOUT

    def internalError(self, failure: Failure) -> POP3Reply:
        """
        @return: the answer when a handler failed unexpectedly.
        """
        return ERR_INTERNAL

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Log the end of a logged-in session; release a pending write wait.
        """
        super().connectionLost(reason)
        self._releaseDrain()
        if self.user:
            logLine(
                _log,
                "pop3: user={user} ip={ip} tls={tls} retr={retr} dele={dele} end={end}",
                user=self.user,
                ip=self.peer or "-",
                tls=(tlsVersion(self.transport) or "yes") if self.tlsActive else "none",
                retr=self._retrieved,
                dele=self._removed,
                end=self._end,
            )

    def closeWith(self, reply: POP3Reply | None) -> None:
        """
        Send C{reply} and close, first letting go of the transport as a
        producer (a transport does not close while one is registered).
        """
        drained = self._detachDrain()
        # Read again before closing, even though the base ignores input
        # from now on: a TLS transport must read to see its close through.
        self._resumeReading()
        super().closeWith(reply)
        # Only now, with the base disconnecting, may the waiting command
        # finish: no pipelined command runs after the last words.
        if drained is not None:
            drained.callback(None)

    def lineReceived(self, line: bytes) -> None:
        """
        Take a line as a SASL response while AUTH waits for one, else as a
        command.
        """
        if not self._sasl:
            super().lineReceived(line)
            return
        self._sasl = False
        self.commandCount += 1
        try:
            result = self._saslPlain(line)
        except Exception:
            _log.failure("SASL step failed")
            result = self.internalError(Failure())
        self.handleResult(result)

    def handleResult(self, result: POP3Reply | Deferred[Any] | None) -> None:
        """
        Send a handler's result.  A Deferred that has fired already is
        unwrapped first (nested callbacks would otherwise recurse once per
        pipelined command); while one is pending the transport stops
        reading, so a client cannot pile up input meanwhile.
        """
        if isinstance(result, Deferred):
            result = self._settle(result)
        super().handleResult(result)

    def _settle(self, d: Deferred[Any]) -> POP3Reply | Deferred[Any] | None:
        outcome: list[Any] = []
        later: Deferred[Any] = Deferred()
        synchronous = True

        def route(value: Any) -> None:
            if synchronous:
                outcome.append(value)
            elif isinstance(value, Failure):
                later.errback(value)
            else:
                later.callback(value)

        d.addBoth(route)
        synchronous = False
        if outcome:
            value = outcome[0]
            if isinstance(value, Failure):
                _log.failure("command handler failed", value)
                return self.internalError(value)
            return value  # type: ignore[no-any-return]
        self._pauseReading()
        return later.addBoth(self._resumeReading)

    def _pauseReading(self) -> None:
        if self.transport is not None and not self._readingPaused:
            self._readingPaused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def _resumeReading(self, value: Any = None) -> Any:
        if self.transport is not None and self._readingPaused:
            self._readingPaused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]
        return value

    # -- writing big responses -----------------------------------------------------

    def _sendBody(self, reply: POP3Reply) -> Deferred[None] | None:
        """
        Send a (possibly large) multi-line reply, then wait until the
        transport has sent it before the next command is read.
        """
        transport = self.transport
        if transport is None or self.disconnecting:
            return None
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._writePaused = False
        self.sendReply(reply)
        if not self._writePaused:
            transport.unregisterProducer()  # type: ignore[attr-defined]
            return None
        self._drained = Deferred()
        return self._drained

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full (L{IPushProducer}).
        """
        self._writePaused = True

    def resumeProducing(self) -> None:
        """
        The transport has sent what it had (L{IPushProducer}).
        """
        self._writePaused = False
        self._releaseDrain()

    def stopProducing(self) -> None:
        """
        The connection is going away (L{IPushProducer}).
        """
        self._releaseDrain()

    def _detachDrain(self) -> Deferred[None] | None:
        """
        Stop waiting for the transport to drain.

        @return: the Deferred the waiting command holds, not yet fired.
        """
        drained, self._drained = self._drained, None
        if drained is not None and self.transport is not None:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]
        return drained

    def _releaseDrain(self) -> None:
        drained = self._detachDrain()
        if drained is not None:
            drained.callback(None)

    # -- helpers -------------------------------------------------------------------

    @property
    def plaintextOk(self) -> bool:
        """
        Whether passwords may be sent on this connection (TLS or loopback).
        """
        return plaintextAllowed(self.tlsActive, self.peer)

    def _badState(self) -> POP3Reply | None:
        return self.protocolError(ERR_BAD_STATE)

    def _index(self, arg: bytes) -> int | None:
        """
        @return: the 0-based index of live message number C{arg}, or
            C{None} when there is no such (undeleted) message.
        """
        number = _number(arg.strip())
        if number is None or not 1 <= number <= len(self._messages):
            return None
        if number - 1 in self._deleted:
            return None
        return number - 1

    def _live(self) -> list[tuple[int, StoredMessage]]:
        """
        @return: the undeleted messages with their 1-based numbers.
        """
        return [(i + 1, m) for i, m in enumerate(self._messages) if i not in self._deleted]

    # -- AUTHORIZATION state -------------------------------------------------------

    def do_CAPA(self, args: bytes) -> POP3Reply:
        """
        List the capabilities (RFC 2449) valid in the current state.
        """
        caps = ["CAPA", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self.plaintextOk:
                caps += ["USER", "SASL PLAIN"]
            if self.factory.tls is not None and not self.tlsActive:
                caps.append("STLS")
        body = "".join(f"{c}\r\n" for c in caps).encode("ascii")
        return POP3Reply(True, "Capability list follows", body)

    def do_USER(self, args: bytes) -> POP3Reply | None:
        """
        Remember the user name for PASS.
        """
        if self.state is not State.AUTHORIZATION:
            return self._badState()
        if not self.plaintextOk:
            return self.protocolError(ERR_PLAINTEXT)
        name = args.strip()
        if not name:
            return self.protocolError(ERR_SYNTAX)
        self._pendingUser = name.decode("utf-8", "surrogateescape")
        return POP3Reply(True, "Send your password")

    def do_PASS(self, args: bytes) -> POP3Reply | Deferred[Any] | None:
        """
        Log in with the user name from USER; the whole rest of the line is
        the password (RFC 1939 allows spaces in it).
        """
        if self.state is not State.AUTHORIZATION:
            return self._badState()
        if not self.plaintextOk:
            return self.protocolError(ERR_PLAINTEXT)
        user, self._pendingUser = self._pendingUser, None
        if user is None:
            return self.protocolError(ERR_NO_USER)
        return self._login(user, args.decode("utf-8", "surrogateescape"))

    def do_AUTH(self, args: bytes) -> POP3Reply | Deferred[Any] | None:
        """
        SASL authentication (RFC 5034): PLAIN, with an initial response or
        after a C{+ } continuation.  Bare C{AUTH} lists the mechanisms, as
        older clients expect.
        """
        if self.state is not State.AUTHORIZATION:
            return self._badState()
        mechanism, _, initial = args.strip().partition(b" ")
        if not mechanism:
            return POP3Reply(True, "", b"PLAIN\r\n" if self.plaintextOk else b"")
        if mechanism.upper() != b"PLAIN":
            return self.protocolError(ERR_MECHANISM)
        if not self.plaintextOk:
            return self.protocolError(ERR_PLAINTEXT)
        if initial.strip():
            return self._saslPlain(initial)
        self._sasl = True
        return CONTINUE

    def _saslPlain(self, response: bytes) -> POP3Reply | Deferred[Any] | None:
        """
        Finish AUTH PLAIN with the client's response (C{*} cancels).
        """
        if response.strip() == b"*":
            return ERR_SASL_CANCELLED
        try:
            _, user, password = decodePlain(response)
        except ValueError:
            return self.protocolError(ERR_SASL_MALFORMED)
        return self._login(user, password)

    def do_STLS(self, args: bytes) -> POP3Reply | None:
        """
        Start TLS (RFC 2595).  Everything received before the handshake
        and every bit of earlier state is dropped.
        """
        if args.strip():
            return self.protocolError(ERR_SYNTAX)
        if self.state is not State.AUTHORIZATION:
            return self._badState()
        if self.tlsActive:
            return self.protocolError(ERR_TLS_ACTIVE)
        if self.factory.tls is None or self.transport is None:
            return self.protocolError(ERR_TLS_UNAVAILABLE)
        self.sendReply(POP3Reply(True, "Begin TLS negotiation"))
        # Anything pipelined after STLS arrived in plaintext: drop it
        # (CVE-2011-0411), and forget what the client said before.
        self.discardInput()
        self.transport.startTLS(self.factory.tls)  # type: ignore[attr-defined]
        self.tlsActive = True
        self._pendingUser = None
        self._sasl = False
        return None

    # -- logging in ----------------------------------------------------------------

    def _login(self, user: str, password: str) -> Deferred[Any]:
        """
        Check the credentials, then open the mailbox and take its snapshot.
        """
        d = self.factory.authenticator.login(user, password, self.peer, "pop3")
        result: Deferred[Any] = d.addCallbacks(self._authenticated, self._loginFailed)
        return result

    def _loginFailed(self, failure: Failure) -> POP3Reply | None:
        if failure.check(LoginRefused):
            self._end = "blocked"
            self.closeWith(ERR_BLOCKED)
            return None
        failure.trap(LoginFailed)
        self._authFailures += 1
        if self._authFailures >= self.factory.limits.auth_failures:
            self._end = "auth-failures"
            self.closeWith(ERR_AUTH_FAILED)
            return None
        return ERR_AUTH_FAILED

    def _authenticated(self, address: str) -> Deferred[Any]:
        d = self.factory.store.openMailbox(address)
        d.addCallback(self._opened, address)
        result: Deferred[Any] = d.addErrback(self._openFailed, address)
        return result

    def _opened(self, mailbox: IMailbox, address: str) -> Deferred[Any]:
        d = mailbox.listMessages()
        return d.addCallback(self._listed, mailbox, address)

    def _listed(
        self, messages: list[StoredMessage], mailbox: IMailbox, address: str
    ) -> POP3Reply | None:
        if self.disconnecting:
            return None
        self.state = State.TRANSACTION
        self.user = address
        self._mailbox = mailbox
        self._messages = list(messages)
        # Every message may take a LIST, UIDL, TOP, RETR and DELE.
        self.maxCommands = self.factory.limits.commands + 5 * len(messages)
        total = sum(m.size for m in messages)
        return POP3Reply(True, f"Logged in, {len(messages)} messages ({total} octets)")

    def _openFailed(self, failure: Failure, address: str) -> POP3Reply:
        _log.failure("pop3: cannot open mailbox of {user}", failure, user=address)
        return ERR_MAILBOX

    # -- TRANSACTION state ---------------------------------------------------------

    def do_STAT(self, args: bytes) -> POP3Reply | None:
        """
        Count and size the undeleted messages.
        """
        if self.state is not State.TRANSACTION:
            return self._badState()
        live = self._live()
        return POP3Reply(True, f"{len(live)} {sum(m.size for _, m in live)}")

    def do_LIST(self, args: bytes) -> POP3Reply | None:
        """
        Give the size of one message, or of each undeleted one.
        """
        return self._listing(args, lambda m: str(m.size))

    def do_UIDL(self, args: bytes) -> POP3Reply | None:
        """
        Give the unique id of one message, or of each undeleted one.
        """
        return self._listing(args, lambda m: m.uid)

    def _listing(self, args: bytes, value: Callable[[StoredMessage], str]) -> POP3Reply | None:
        if self.state is not State.TRANSACTION:
            return self._badState()
        if args.strip():
            index = self._index(args)
            if index is None:
                return self.protocolError(ERR_NO_SUCH_MESSAGE)
            return POP3Reply(True, f"{index + 1} {value(self._messages[index])}")
        live = self._live()
        body = "".join(f"{n} {value(m)}\r\n" for n, m in live).encode("ascii", "replace")
        return POP3Reply(True, f"{len(live)} messages", body)

    def do_RETR(self, args: bytes) -> POP3Reply | Deferred[None] | None:
        """
        Send one whole message.
        """
        if self.state is not State.TRANSACTION:
            return self._badState()
        index = self._index(args)
        if index is None:
            return self.protocolError(ERR_NO_SUCH_MESSAGE)
        return self._read(index, None)

    def do_TOP(self, args: bytes) -> POP3Reply | Deferred[None] | None:
        """
        Send a message's headers and its first lines.
        """
        if self.state is not State.TRANSACTION:
            return self._badState()
        number, _, lines = args.strip().partition(b" ")
        count = _number(lines.strip())
        if count is None:
            return self.protocolError(ERR_SYNTAX)
        index = self._index(number)
        if index is None:
            return self.protocolError(ERR_NO_SUCH_MESSAGE)
        return self._read(index, count)

    def _read(self, index: int, lines: int | None) -> Deferred[Any]:
        """
        Read message C{index} and send it whole, or its top C{lines}.
        """
        assert self._mailbox is not None
        d = self._mailbox.readMessage(self._messages[index].uid)
        return d.addCallbacks(self._send, self._vanished, callbackArgs=(lines,))

    def _send(self, data: bytes, lines: int | None) -> Deferred[None] | None:
        if lines is None:
            self._retrieved += 1
            return self._sendBody(POP3Reply(True, f"{len(data)} octets", data))
        return self._sendBody(POP3Reply(True, "", topOfMessage(data, lines)))

    def _vanished(self, failure: Failure) -> POP3Reply:
        # Another session (POP3 or IMAP) removed it since our snapshot.
        failure.trap(KeyError, FileNotFoundError)
        return ERR_NO_SUCH_MESSAGE

    def do_DELE(self, args: bytes) -> POP3Reply | None:
        """
        Mark a message for deletion at QUIT.
        """
        if self.state is not State.TRANSACTION:
            return self._badState()
        number = _number(args.strip())
        if number is not None and number - 1 in self._deleted:
            return self.protocolError(ERR_ALREADY_DELETED)
        index = self._index(args)
        if index is None:
            return self.protocolError(ERR_NO_SUCH_MESSAGE)
        self._deleted.add(index)
        return POP3Reply(True, f"message {index + 1} deleted")

    def do_RSET(self, args: bytes) -> POP3Reply | None:
        """
        Unmark every message marked for deletion.
        """
        if self.state is not State.TRANSACTION:
            return self._badState()
        self._deleted.clear()
        return POP3Reply(True, f"{len(self._messages)} messages")

    def do_NOOP(self, args: bytes) -> POP3Reply | None:
        """
        Do nothing, successfully.
        """
        if self.state is not State.TRANSACTION:
            return self._badState()
        return OK

    # -- QUIT and UPDATE -----------------------------------------------------------

    def do_QUIT(self, args: bytes) -> Deferred[None] | None:
        """
        End the session; after a login, first remove the marked messages.
        """
        self._end = "quit"
        if self.state is not State.TRANSACTION or self._mailbox is None:
            self.closeWith(POP3Reply(True, f"{self.factory.hostname} signing off"))
            return None
        self.state = State.UPDATE
        uids = [self._messages[i].uid for i in sorted(self._deleted)]
        d = self._mailbox.deleteMessages(uids) if uids else succeed(None)
        return d.addCallbacks(self._updated, self._updateFailed, callbackArgs=(uids,))

    def _updated(self, _: None, uids: list[str]) -> None:
        self._removed = len(uids)
        left = len(self._messages) - len(uids)
        self.closeWith(POP3Reply(True, f"Logging out, {left} messages left"))

    def _updateFailed(self, failure: Failure) -> None:
        _log.failure("pop3: deleting messages of {user} failed", failure, user=self.user)
        self._end = "update-failed"
        self.closeWith(ERR_UPDATE)


__all__ = [
    "POP3Factory",
    "POP3Reply",
    "POP3Server",
    "State",
    "byteStuff",
    "topOfMessage",
]
