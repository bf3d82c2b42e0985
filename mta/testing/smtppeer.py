"""
A scriptable fake SMTP server for tests of the relay: a peer whose every
reply a test chooses, which records what it was sent.

It listens on any endpoint (C{tcp:0:interface=127.0.0.1},
C{tcp6:0:interface=\\:\\:1}), offers the EHLO keywords it is given (no
STARTTLS, no BDAT: a plain ESMTP peer) and answers each command with, in
order of precedence: the next canned reply queued for that command in
L{SMTPPeer.replies}, what L{SMTPPeer.script} returns, or a plain success::

    peer = SMTPPeer(extensions=("PIPELINING", "SIZE 1000000"))
    peer.replies["RCPT"] = ["451 4.3.0 try later"]     # first RCPT only
    peer.script = lambda session, verb, arg: (
        "550 5.1.1 no such user" if "nobody" in arg else None)
    port = yield peer.listen(reactor)

Commands are named by their upper-case verb; the reply to the end of
the message (the final dot) is asked for as C{"."}.  A reply may be a
L{Deferred} firing with the text: the session answers nothing more until
it fires (to hold the reply to DATA while a test kills the client).  A
reply is one line (C{"250 2.0.0 ok"}) or several separated by C{"\\n"},
all with the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

#: What a script returns: the reply, a Deferred firing with it, or
#: C{None} for the default.
ScriptReply = str | Deferred[str] | None

DEFAULT_EXTENSIONS = ("PIPELINING", "8BITMIME", "SIZE 10485760", "ENHANCEDSTATUSCODES")


@dataclass
class Transaction:
    """
    One transaction a peer received to its end.

    @ivar session: the number of the connection it came on (from 1).
    @ivar mail: the MAIL command's argument (C{FROM:<a@b> SIZE=10}).
    @ivar rcpts: the arguments of the RCPT commands the peer accepted.
    @ivar data: the message, dot-unstuffed, CRLF line ends.
    @ivar reply: the peer's reply to the final dot.
    """

    session: int
    mail: str
    rcpts: list[str]
    data: bytes
    reply: str

    @property
    def accepted(self) -> bool:
        """
        @return: whether the peer took the message (a 2xx to the final dot).
        """
        return self.reply.startswith("2")


@dataclass
class _State:
    mail: str | None = None
    rcpts: list[str] = field(default_factory=list)
    data: list[bytes] | None = None


class PeerSession(LineReceiver):
    """
    One connection to an L{SMTPPeer}.

    @ivar number: this connection's number (from 1).
    @ivar commands: the command lines received, in order.
    @ivar rcptCount: RCPT commands in the current transaction so far (the
        one being answered included).
    """

    delimiter = b"\r\n"
    MAX_LENGTH = 1024 * 1024

    def __init__(self, peer: SMTPPeer, number: int) -> None:
        self.peer = peer
        self.number = number
        self.commands: list[str] = []
        self.rcptCount = 0
        self._state = _State()
        self._lines: list[bytes] = []
        self._waiting = False
        self._gone = False

    def connectionMade(self) -> None:
        self._answer(self.peer.reply(self, "BANNER", "", f"220 {self.peer.hostname} ESMTP peer"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._gone = True
        self.peer.lost += 1

    def lineReceived(self, line: bytes) -> None:
        self._lines.append(line)
        self._drain()

    def _drain(self) -> None:
        while self._lines and not self._waiting and not self._gone:
            line = self._lines.pop(0)
            if self._state.data is not None:
                self._dataLine(line)
            else:
                self._command(line.decode("utf-8", "replace"))

    def _answer(
        self, reply: str | Deferred[str], then: Callable[[str], None] | None = None
    ) -> None:
        def send(text: str) -> None:
            self._waiting = False
            if then is not None:
                then(text)
            if not self._gone and self.transport is not None:
                code, lines = text[:3], text[4:].split("\n")
                out = [f"{code}-{x}" for x in lines[:-1]] + [f"{code} {lines[-1]}"]
                self.transport.write("".join(f"{x}\r\n" for x in out).encode("utf-8"))
                if code == "221" or code == "421":
                    self.transport.loseConnection()
            self._drain()

        if isinstance(reply, Deferred):
            self._waiting = True
            reply.addCallback(send)
        else:
            send(reply)

    def _command(self, line: str) -> None:
        self.commands.append(line)
        self.peer.commands.append(line)
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        state = self._state
        default = "250 2.0.0 ok"
        then: Callable[[str], None] | None = None
        if verb == "EHLO":
            default = "\n".join([f"250 {self.peer.hostname}", *self.peer.extensions])
            self._state = _State()
        elif verb == "HELO":
            default = f"250 {self.peer.hostname}"
        elif verb == "MAIL":
            self.rcptCount = 0

            def then(text: str) -> None:
                if text.startswith("2"):
                    state.mail, state.rcpts = arg, []

        elif verb == "RCPT":
            self.rcptCount += 1
            if state.mail is None:
                default = "503 5.5.1 MAIL first"

            def then(text: str) -> None:
                if text.startswith("2"):
                    state.rcpts.append(arg)

        elif verb == "DATA":
            default = "354 go ahead" if state.rcpts else "554 5.5.1 no valid recipients"

            def then(text: str) -> None:
                if text.startswith("354"):
                    state.data = []

        elif verb == "RSET":
            self._state = _State()
        elif verb == "QUIT":
            default = "221 2.0.0 bye"
        elif verb not in ("NOOP",):
            default = "502 5.5.2 not implemented"
        self._answer(self.peer.reply(self, verb, arg, default), then)

    def _dataLine(self, line: bytes) -> None:
        state = self._state
        assert state.data is not None
        if line != b".":
            state.data.append(line[1:] if line.startswith(b".") else line)
            return
        data = b"".join(x + b"\r\n" for x in state.data)
        mail, rcpts = state.mail or "", list(state.rcpts)
        self._state = _State()

        def then(text: str) -> None:
            self.peer.transactions.append(Transaction(self.number, mail, rcpts, data, text))

        self._answer(self.peer.reply(self, ".", "", "250 2.0.0 queued"), then)


class _PeerFactory(Factory):
    def __init__(self, peer: SMTPPeer) -> None:
        self.peer = peer

    def buildProtocol(self, addr: Any) -> PeerSession:
        self.peer.connections += 1
        session = PeerSession(self.peer, self.peer.connections)
        self.peer.sessions.append(session)
        return session


class SMTPPeer:
    """
    The fake server; see the module docstring.

    @ivar replies: command verb to replies to give, first to last, before
        the script or the default has a say.
    @ivar script: C{script(session, verb, argument)}: the reply, or
        C{None} for the default.
    @ivar connections: how many connections were made.
    @ivar lost: how many of them have ended.
    @ivar sessions: every connection's L{PeerSession}.
    @ivar commands: every command line received, over all connections.
    @ivar transactions: every transaction that reached its final dot.
    """

    def __init__(
        self,
        hostname: str = "peer.test",
        extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
        script: Callable[[PeerSession, str, str], ScriptReply] | None = None,
    ) -> None:
        self.hostname = hostname
        self.extensions = extensions
        self.script = script
        self.replies: dict[str, list[str | Deferred[str]]] = {}
        self.connections = 0
        self.lost = 0
        self.sessions: list[PeerSession] = []
        self.commands: list[str] = []
        self.transactions: list[Transaction] = []
        self._port: IListeningPort | None = None

    def reply(self, session: PeerSession, verb: str, arg: str, default: str) -> str | Deferred[str]:
        """
        @return: the reply to C{verb}: canned, scripted or C{default}.
        """
        canned = self.replies.get(verb)
        if canned:
            return canned.pop(0)
        if self.script is not None:
            scripted = self.script(session, verb, arg)
            if scripted is not None:
                return scripted
        return default

    @property
    def accepted(self) -> list[Transaction]:
        """
        @return: the transactions whose message the peer took.
        """
        return [t for t in self.transactions if t.accepted]

    async def listen(self, reactor: Any, description: str = "tcp:0:interface=127.0.0.1") -> int:
        """
        Start listening.

        @return: the port number.
        """
        self._port = await serverFromString(reactor, description).listen(_PeerFactory(self))
        address: Any = self._port.getHost()
        return int(address.port)

    def stop(self) -> Deferred[None] | None:
        """
        Stop listening and drop every connection.
        """
        for session in self.sessions:
            if session.transport is not None and not session._gone:
                session.transport.abortConnection()  # type: ignore[attr-defined]
        if self._port is None:
            return None
        d: Deferred[None] | None = self._port.stopListening()
        return d
