# -*- test-case-name: tests.test_imapserver -*-
"""
The IMAP server: the reading end of the lifecycle for IMAP clients.

A thin protocol over the pure parser (L{mta.imap.parser.CommandReader}):
bytes go into the reader, and events come out one at a time, so that a
command's handler (which may wait on the store) finishes before the next
command is even parsed; while one waits, the transport stops reading.
Handlers live in L{mta.imap.mailboxes} and L{mta.imap.messages}; this
module holds the connection's life: greeting, CAPABILITY, STARTTLS,
LOGIN and AUTHENTICATE (PLAIN, LOGIN, SASL-IR), IDLE, ENABLE, ID,
NAMESPACE, NOOP, LOGOUT, the autologout timer and the refusals.

Rules the RFCs leave open, as Dovecot does them:

  - Passwords only under TLS or from loopback: elsewhere CAPABILITY says
    C{LOGINDISABLED}, and LOGIN and AUTHENTICATE answer C{NO
    [PRIVACYREQUIRED]}.
  - After C{limits.auth_failures} failed logins the connection is closed;
    a throttled address gets C{NO [UNAVAILABLE]} and the close at once.
  - A user logged in C{limits.imap_connections_per_user} times (from any
    address, over imap and imaps together) is refused one more with
    C{NO [LIMIT]} (RFC 5530) after the password checked out, so nobody
    without it learns or takes a slot.  The connection stays open and
    unauthenticated: the client may say so, retry later, or LOGOUT,
    rather than reconnect at once in a loop as some do after a close.
    A slot is freed at LOGOUT, the autologout or a drop.
  - The autologout timer is C{limits.imap_idle} (30 minutes) once logged
    in, at most five minutes before; any input re-arms it, and IDLE
    clients re-issue IDLE within it as RFC 2177 asks.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IOpenSSLContextFactory,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mta.auth import LoginFailed, LoginRefused, plaintextAllowed
from mta.config import LimitsConfig
from mta.imap import wire
from mta.imap.commands import NO_ARGUMENTS, Authenticate, Command, Enable, Login
from mta.imap.mailboxes import MailboxCommands
from mta.imap.messages import MessageCommands
from mta.imap.parser import (
    CommandError,
    CommandReader,
    ContinuationLine,
    ContinuationRequest,
    Limits,
    LiteralChunk,
    LiteralStarted,
    ReaderEvent,
)
from mta.imap.session import IMAPFactoryBase, Result, State, UserConnections, storeName
from mta.interfaces import ILoginService
from mta.protocol import ReadPausing, peerHost
from mta.sasl import (
    Challenge,
    Credentials,
    SaslCancelled,
    SaslError,
    SaslRefused,
    _Exchange,
    startExchange,
)
from mta.store.imapstore import BadFolderName, FolderExists, IMAPStore, NoSuchFolder

_log = Logger(namespace="mta.imap")

#: Offered to every client.
BASE_CAPABILITIES = ("IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE")
#: Offered once logged in.
SESSION_CAPABILITIES = (
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "CHILDREN",
    "SPECIAL-USE",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "ESEARCH",
    "SORT",
    "CONDSTORE",
    "QRESYNC",
)
#: What ENABLE can turn on.
ENABLEABLE = frozenset({"CONDSTORE", "QRESYNC"})
#: The autologout before login.
PREAUTH_IDLE = 300.0
#: RFC 5530: an implementation limit, here logged-in sessions per user.
LIMIT = wire.ResponseCode("LIMIT")
#: APPEND literals past this size go to the folder's tmp/ as they arrive;
#: smaller ones (most mail) are held and written in one job instead of the
#: spool's four: 10 KB APPENDs ran faster so in 8 of 8 paired runs, while
#: streaming 100 KB ones was no slower (bench/README.md).  The same as any
#: other literal's limit: once logged in, no literal past 64 KB is held.
STREAM_APPENDS_OVER = 64 * 1024

_ANY = frozenset(State) - {State.LOGOUT}
_NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
_AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})

#: Command name: (handler method, states it is allowed in, EXPUNGE allowed after it).
COMMANDS: dict[str, tuple[str, frozenset[State]]] = {
    "CAPABILITY": ("cmd_CAPABILITY", _ANY),
    "NOOP": ("cmd_NOOP", _ANY),
    "LOGOUT": ("cmd_LOGOUT", _ANY),
    "ID": ("cmd_ID", _ANY),
    "STARTTLS": ("cmd_STARTTLS", _NOT_AUTHENTICATED),
    "LOGIN": ("cmd_LOGIN", _NOT_AUTHENTICATED),
    "AUTHENTICATE": ("cmd_AUTHENTICATE", _NOT_AUTHENTICATED),
    "ENABLE": ("cmd_ENABLE", _AUTHENTICATED),
    "NAMESPACE": ("cmd_NAMESPACE", _AUTHENTICATED),
    "IDLE": ("cmd_IDLE", _AUTHENTICATED),
    "SELECT": ("cmd_SELECT", _AUTHENTICATED),
    "EXAMINE": ("cmd_EXAMINE", _AUTHENTICATED),
    "CREATE": ("cmd_CREATE", _AUTHENTICATED),
    "DELETE": ("cmd_DELETE", _AUTHENTICATED),
    "RENAME": ("cmd_RENAME", _AUTHENTICATED),
    "SUBSCRIBE": ("cmd_SUBSCRIBE", _AUTHENTICATED),
    "UNSUBSCRIBE": ("cmd_UNSUBSCRIBE", _AUTHENTICATED),
    "LIST": ("cmd_LIST", _AUTHENTICATED),
    "LSUB": ("cmd_LSUB", _AUTHENTICATED),
    "STATUS": ("cmd_STATUS", _AUTHENTICATED),
    "APPEND": ("cmd_APPEND", _AUTHENTICATED),
    "CHECK": ("cmd_CHECK", _SELECTED),
    "CLOSE": ("cmd_CLOSE", _SELECTED),
    "UNSELECT": ("cmd_UNSELECT", _SELECTED),
    "EXPUNGE": ("cmd_EXPUNGE", _SELECTED),
    "SEARCH": ("cmd_SEARCH", _SELECTED),
    "SORT": ("cmd_SORT", _SELECTED),
    "FETCH": ("cmd_FETCH", _SELECTED),
    "STORE": ("cmd_STORE", _SELECTED),
    "COPY": ("cmd_COPY", _SELECTED),
    "MOVE": ("cmd_MOVE", _SELECTED),
}
#: Commands after which EXPUNGE may not be sent unless given as UID commands.
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH", "SORT"})


class IMAPFactory(IMAPFactoryBase):
    """
    Builds L{IMAPServer}s and holds what they share.
    """

    def __init__(
        self,
        authenticator: ILoginService,
        store: IMAPStore,
        tls: IOpenSSLContextFactory | None,
        hostname: str,
        limits: LimitsConfig,
        clock: IReactorTime,
    ) -> None:
        """
        @param authenticator: checks logins, with the shared throttle.
        @param store: every user's folders.
        @param tls: the TLS context for STARTTLS, or C{None} for none.
        @param hostname: for the greeting.
        @param limits: the C{[limits]} section.
        @param clock: for the autologout timer.
        """
        self.authenticator = authenticator
        self.store = store
        self.tls = tls
        self.hostname = hostname
        self.limits = limits
        self.clock = clock
        self.idleTimeout = limits.imap_idle
        self.userConnections = UserConnections(limits.imap_connections_per_user)

    def buildProtocol(self, addr: IAddress | None) -> IMAPServer:
        """
        @return: a new session.
        """
        return IMAPServer(self)


@implementer(IPushProducer)
class IMAPServer(ReadPausing, MailboxCommands, MessageCommands):
    """
    One IMAP connection; see the module docstring.
    """

    def __init__(self, factory: IMAPFactory) -> None:
        self.factory = factory
        self.initSession()
        self.peer = ""
        self.tlsActive = False
        self.reader = CommandReader(self._limits())
        self._busy = False
        self._pumping = False
        self._readPaused = False
        self._timer: IDelayedCall | None = None
        self._authFailures = 0
        self._counted = False
        self._idleTag = ""
        self._sasl: tuple[str, _Exchange] | None = None
        self._writePaused = False
        self._drained: Deferred[None] | None = None
        self._producing = False

    def _limits(self) -> Limits:
        if self.state is State.NOT_AUTHENTICATED:
            # APPEND cannot run before login: its literal gets no more room
            # than any other, so no one buffers megabytes unauthenticated.
            return Limits(maxAppendSize=Limits().maxLiteralSize)
        return Limits(
            maxAppendSize=self.factory.limits.message_size, streamAppendOver=STREAM_APPENDS_OVER
        )

    # -- connection --------------------------------------------------------------------

    def connectionMade(self) -> None:
        """
        Greet the client with the capabilities.
        """
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        assert self.transport is not None
        self.peer = peerHost(self.transport.getPeer())
        self.tlsActive = ISSLTransport.providedBy(self.transport)
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._producing = True
        self._armTimer()
        text = f"{self.factory.hostname} IMAP ready"
        self.write(wire.untaggedStatus("OK", text, wire.capabilityCode(self.capabilities())))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Forget the session: listeners, timer, anything half-received.
        """
        self.disconnecting = True
        self._releaseUser()
        self.deselect()
        self.reader.connectionLost()
        self._dropSpool()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._releaseDrain()

    def _armTimer(self) -> None:
        timeout = self.factory.idleTimeout
        if self.state is State.NOT_AUTHENTICATED:
            timeout = min(timeout, PREAUTH_IDLE)
        if self._timer is not None and self._timer.active():
            self._timer.reset(timeout)
        elif not self.disconnecting:
            self._timer = self.factory.clock.callLater(timeout, self._timedOut)

    def _timedOut(self) -> None:
        self._timer = None
        self.closeWith(wire.untaggedStatus("BYE", "Autologout; idle for too long"))

    def closeWith(self, data: bytes) -> None:
        """
        Send C{data} and close once it is written.
        """
        self.write(data)
        self.disconnecting = True
        self.state = State.LOGOUT
        self._releaseUser()
        self.deselect()
        self._releaseDrain()
        if self.transport is not None:
            if self._producing:
                self._producing = False
                self.transport.unregisterProducer()  # type: ignore[attr-defined]
            self._resumeReading()
            self.transport.loseConnection()

    # -- writing: IPushProducer for the transport's buffer --------------------------------

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: big responses wait.
        """
        self._writePaused = True

    def resumeProducing(self) -> None:
        """
        The transport has sent what it had.
        """
        self._writePaused = False
        self._releaseDrain()

    def stopProducing(self) -> None:
        """
        The connection is going away.
        """
        self._releaseDrain()

    def _releaseDrain(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None:
            drained.callback(None)

    # -- reading ------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """
        Feed the reader and handle what it frames.
        """
        if self.disconnecting:
            return
        self._armTimer()
        self.reader.feed(data)
        self._pump()

    def _pump(self) -> None:
        if self._pumping:
            return  # a command finished synchronously: the loop below goes on
        self._pumping = True
        try:
            while not self._busy and not self.disconnecting:
                event = self.reader.next()
                if event is None:
                    if self.reader.closed:
                        self.closeWith(wire.untaggedStatus("BYE", "Input out of step"))
                    return
                self._event(event)
        finally:
            self._pumping = False

    def _event(self, event: ReaderEvent) -> None:
        if isinstance(event, LiteralChunk):
            assert self.appendSpool is not None
            self.appendSpool.write(event.data)
        elif isinstance(event, LiteralStarted):
            self._startSpool(event)
        elif isinstance(event, ContinuationRequest):
            self.write(wire.continuation())
        elif isinstance(event, ContinuationLine):
            self._line(event.line)
        elif isinstance(event, CommandError):
            self._dropSpool()
            self._refused(event)
        else:
            self._command(event)
            self._dropSpool()  # cmd_APPEND took it, unless the command was refused

    def _startSpool(self, event: LiteralStarted) -> None:
        """
        An APPEND literal is streamed: write it into the folder's C{tmp/}
        as it arrives; C{cmd_APPEND} adds it, a disconnect drops it.
        """
        name = storeName(event.append.mailbox)
        spool = self.factory.store.spoolMessage(self.user, name, event.size, self._updateReading)
        self.appendSpool = spool
        if event.synchronising:
            self.write(wire.continuation())

    def _dropSpool(self) -> None:
        spool, self.appendSpool = self.appendSpool, None
        if spool is not None:
            spool.abort()

    def _updateReading(self) -> None:
        """
        Read from the client unless a command is under way or the APPEND
        literal being written is behind.
        """
        spool = self.appendSpool
        if self._busy or (spool is not None and spool.behind):
            self._pauseReading()
        else:
            self._resumeReading()

    def _refused(self, error: CommandError) -> None:
        code = wire.ResponseCode(error.code) if error.code else None
        waiting = ("IDLE", self._idleTag) if self.idling else None
        if self._sasl is not None:
            waiting = ("AUTHENTICATE", self._sasl[0])
        if waiting is not None:
            # The raw line IDLE or AUTHENTICATE was waiting for was refused
            # (too long): it ends that command, under the command's tag.
            name, tag = waiting
            self.idling, self._idleTag, self._sasl = False, "", None
            line = wire.tagged(tag, error.status, error.message, code)
            if error.closeConnection:
                self.write(line)
                self.closeWith(wire.untaggedStatus("BYE", "Input out of step"))
            else:
                self._finish(Command(tag, name, False, NO_ARGUMENTS), line)
            return
        if error.tag == "*":
            self.write(wire.untaggedStatus(error.status, error.message, code))
        else:
            self.write(wire.tagged(error.tag, error.status, error.message, code))
        if error.closeConnection:
            self.closeWith(wire.untaggedStatus("BYE", "Input out of step"))

    def _command(self, command: Command) -> None:
        entry = COMMANDS.get(command.name)
        if entry is None:
            self.write(wire.tagged(command.tag, "BAD", "Command not supported"))
            return
        method, states = entry
        if self.state not in states:
            self.write(wire.tagged(command.tag, "BAD", f"{command.name} not allowed now"))
            return
        try:
            result: Result = getattr(self, method)(command)
        except Exception:
            result = self._failed(Failure(), command)
        self._finish(command, result)

    def _finish(self, command: Command, result: Result) -> None:
        """
        Send the pending updates, then the tagged line; hold further
        commands until then.
        """
        self._busy = True
        d: Deferred[bytes] = result if isinstance(result, Deferred) else Deferred()
        if not isinstance(result, Deferred):
            d.callback(result)
        d.addErrback(self._failed, command)
        allowExpunge = command.uid or command.name not in _NO_EXPUNGE

        def flushThen(line: bytes) -> Deferred[bytes]:
            return self.flush(allowExpunge).addCallback(lambda _: line)

        d.addCallback(flushThen)
        d.addErrback(self._failed, command)
        d.addCallback(self._done)
        if self._busy:
            self._pauseReading()

    def _done(self, line: bytes) -> None:
        self._busy = False
        self._updateReading()
        self.write(line)
        if not self.disconnecting:
            self._pump()

    def _failed(self, failure: Failure, command: Command) -> bytes:
        """
        Answer a handler's failure: store refusals as C{NO} with their
        code, anything else logged and C{NO [SERVERBUG]}.
        """
        if failure.check(NoSuchFolder):
            return self.no(command, "Mailbox does not exist", wire.NONEXISTENT)
        if failure.check(FolderExists):
            return self.no(command, "Mailbox already exists", wire.ALREADYEXISTS)
        if failure.check(BadFolderName):
            return self.no(command, "Invalid mailbox name", wire.CANNOT)
        _log.failure("imap: {command} failed", failure, command=command.name)
        return self.no(command, "Internal error", wire.ResponseCode("SERVERBUG"))

    def _line(self, line: bytes) -> None:
        """
        A raw line: IDLE's DONE or an AUTHENTICATE response.
        """
        if self.idling:
            self.idling = False
            tag, self._idleTag = self._idleTag, ""
            command = Command(tag, "IDLE", False, NO_ARGUMENTS)
            if line.strip().upper() != b"DONE":
                self._finish(command, self.bad(command, "Expected DONE"))
            else:
                self._finish(command, self.ok(command, "IDLE terminated"))
        elif self._sasl is not None:
            tag, exchange = self._sasl
            self._sasl = None
            command = Command(tag, "AUTHENTICATE", False, NO_ARGUMENTS)
            self._finish(command, self._saslStep(command, lambda: exchange.respond(line), exchange))

    # -- any state ----------------------------------------------------------------------

    def capabilities(self) -> list[str]:
        """
        @return: the capabilities for the session as it is now.
        """
        caps = list(BASE_CAPABILITIES)
        if self.state is State.NOT_AUTHENTICATED:
            if self.factory.tls is not None and not self.tlsActive:
                caps.append("STARTTLS")
            if plaintextAllowed(self.tlsActive, self.peer):
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")
        else:
            caps += SESSION_CAPABILITIES
        return caps

    def cmd_CAPABILITY(self, command: Command) -> bytes:
        """
        List the capabilities.
        """
        self.write(wire.untagged(*[wire.Atom(c) for c in ["CAPABILITY", *self.capabilities()]]))
        return self.ok(command)

    def cmd_NOOP(self, command: Command) -> Result:
        """
        Do nothing; in the selected state, look for changes first.
        """
        if self.mailbox is None:
            return self.ok(command)

        def synced(result: object) -> bytes:
            if result:
                self.markDirty()
            return self.ok(command)

        return self.mailbox.sync(self.changed).addCallback(synced)

    def cmd_LOGOUT(self, command: Command) -> bytes:
        """
        Say goodbye and close.
        """
        self.write(wire.untaggedStatus("BYE", "Logging out"))
        self.write(self.ok(command))
        self.closeWith(b"")
        return b""

    def cmd_ID(self, command: Command) -> bytes:
        """
        RFC 2971: a name, never a version.
        """
        self.write(b'* ID ("name" "mta")\r\n')
        return self.ok(command)

    # -- not authenticated ---------------------------------------------------------------

    def cmd_STARTTLS(self, command: Command) -> bytes:
        """
        Start TLS; anything the client pipelined after it is dropped.
        """
        if self.tlsActive or self.factory.tls is None or self.transport is None:
            return self.bad(command, "TLS not available")
        self.write(self.ok(command, "Begin TLS negotiation now"))
        # Pipelined plaintext after STARTTLS must never count as sent
        # under TLS (CVE-2011-0411): a fresh reader drops it.
        self.reader = CommandReader(self._limits())
        self.transport.startTLS(self.factory.tls)  # type: ignore[attr-defined]
        self.tlsActive = True
        return b""

    def cmd_LOGIN(self, command: Command) -> Result:
        """
        LOGIN user password, under TLS or from loopback.
        """
        args = command.arguments
        assert isinstance(args, Login)
        if not plaintextAllowed(self.tlsActive, self.peer):
            return self.no(command, "Plaintext login disallowed without TLS", wire.PRIVACYREQUIRED)
        return self._login(command, args.username, args.password)

    def cmd_AUTHENTICATE(self, command: Command) -> Result:
        """
        AUTHENTICATE PLAIN or LOGIN, with or without an initial response.
        """
        args = command.arguments
        assert isinstance(args, Authenticate)
        if not plaintextAllowed(self.tlsActive, self.peer):
            return self.no(command, "Plaintext login disallowed without TLS", wire.PRIVACYREQUIRED)
        exchange = startExchange(args.mechanism)
        if exchange is None:
            return self.no(command, "Unsupported authentication mechanism")
        initial = args.initialResponse
        encoded = None if initial is None else base64.b64encode(initial)
        return self._saslStep(command, lambda: exchange.start(encoded), exchange)

    def _saslStep(self, command: Command, step: Callable[[], Any], exchange: _Exchange) -> Result:
        try:
            answer = step()
        except SaslCancelled:
            return self.bad(command, "Authentication cancelled")
        except SaslError:
            return self.bad(command, "Invalid SASL response")
        except SaslRefused:
            return self._loginFailed(Failure(LoginFailed()), command)
        if isinstance(answer, Challenge):
            self.write(b"+ " + answer.data + b"\r\n")
            self._sasl = (command.tag, exchange)
            self.reader.expectLine()
            return b""
        assert isinstance(answer, Credentials)
        return self._login(command, answer.user, answer.password)

    def _login(self, command: Command, user: str, password: str) -> Deferred[bytes]:
        d = self.factory.authenticator.login(user, password, self.peer, "imap")
        return d.addCallbacks(
            self._loggedIn, self._loginFailed, callbackArgs=(command,), errbackArgs=(command,)
        )

    def _loggedIn(self, address: str, command: Command) -> bytes:
        if self.disconnecting:
            return b""
        if not self.factory.userConnections.acquire(address):
            _log.info(
                "imap: login of {user} from {peer} refused: {count} sessions already",
                user=address,
                peer=self.peer,
                count=self.factory.userConnections.count(address),
            )
            return self.no(command, "Too many connections for this user", LIMIT)
        self._counted = True
        self.state = State.AUTHENTICATED
        self.user = address
        self.reader.limits = self._limits()
        self._armTimer()
        return self.ok(command, "Logged in", wire.capabilityCode(self.capabilities()))

    def _releaseUser(self) -> None:
        """
        Free this session's slot in the per-user count, once.
        """
        if self._counted:
            self._counted = False
            self.factory.userConnections.release(self.user)

    def _loginFailed(self, failure: Failure, command: Command) -> bytes:
        if failure.check(LoginRefused):
            self.write(self.no(command, "Too many failed logins, try later", wire.UNAVAILABLE))
            self.closeWith(wire.untaggedStatus("BYE", "Too many failed logins"))
            return b""
        failure.trap(LoginFailed)
        self._authFailures += 1
        line = self.no(command, "Authentication failed", wire.AUTHENTICATIONFAILED)
        if self._authFailures >= self.factory.limits.auth_failures:
            self.write(line)
            self.closeWith(wire.untaggedStatus("BYE", "Too many failed logins"))
            return b""
        return line

    # -- authenticated -------------------------------------------------------------------

    def cmd_ENABLE(self, command: Command) -> bytes:
        """
        Turn on CONDSTORE and QRESYNC (RFC 5161); others are ignored.
        """
        args = command.arguments
        assert isinstance(args, Enable)
        enabled = [c for c in args.capabilities if c in ENABLEABLE]
        if "QRESYNC" in enabled:
            self.qresync = True
            self.condstore = True
        if "CONDSTORE" in enabled:
            self.condstore = True
        self.write(wire.untagged(*[wire.Atom(c) for c in ["ENABLED", *dict.fromkeys(enabled)]]))
        return self.ok(command)

    def cmd_NAMESPACE(self, command: Command) -> bytes:
        """
        One personal namespace, C{""} with separator C{.} (RFC 2342).
        """
        self.write(b'* NAMESPACE (("" ".")) NIL NIL\r\n')
        return self.ok(command)

    def cmd_IDLE(self, command: Command) -> Result:
        """
        Wait for DONE, sending updates as they happen (RFC 2177).
        """

        def idling(_: object) -> bytes:
            self.idling = True
            self._idleTag = command.tag
            self.write(wire.continuation("idling"))
            self.reader.expectLine()
            return b""

        if self.mailbox is None:
            return idling(None)
        return (
            self.mailbox.sync(self.changed)
            .addCallback(lambda result: self.markDirty() if result else None)
            .addCallback(lambda _: self.flush(True))
            .addCallback(idling)
        )


__all__ = ["BASE_CAPABILITIES", "COMMANDS", "SESSION_CAPABILITIES", "IMAPFactory", "IMAPServer"]
