# -*- test-case-name: tests.test_control -*-
"""
How C{mta queue ...} reaches a running server: the control socket.

The running server holds an exclusive lock on C{data_dir/queue/.lock}
(L{ControlRequests.holdLock}) and listens on the UNIX socket
C{data_dir/control.sock} (mode 0600, in the 0700 data dir; L{ControlServer}).
The admin command tries the lock: if it gets it, no server runs and it
reads the spool files itself; if not, it connects to the socket
(L{request}), a plain blocking socket with a timeout, no reactor.

The wire protocol is newline-delimited JSON, one object a line: a request
C{{"command": "hold", "id": "0dZKKYNNfv0007nh"}}, answered by
C{{"ok": true, "text": "0dZKKYNNfv0007nh: held", "data": ...}} or
C{{"ok": false, "error": "one line"}}.  Requests on one connection are
answered in order.  C{list} answers with a list of
L{mta.queue.describe.describeMessage} dicts as C{data}, C{show} with one
such dict and its C{headers}.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorUNIX
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from mta.delivery.bounce import readHeaders
from mta.interfaces import IBlockingRunner, ISpool
from mta.queue.scheduler import QueueManager

_log = Logger(namespace="mta.queue")

#: The control socket's name in C{data_dir}.
SOCKET_NAME = "control.sock"

#: The longest socket path C{bind} and C{connect} take as it is
#: (C{sun_path} holds 108 bytes on Linux, 104 elsewhere, with its NUL).
_MAX_SOCKET_PATH = 100

#: The longest request line; requests are a command and a queue id.
MAX_REQUEST = 4096

#: The commands L{QueueCommands} answers, and whether each needs an id.
COMMANDS = {
    "list": False,
    "show": True,
    "flush": False,
    "hold": True,
    "release": True,
    "bounce": True,
    "delete": True,
}


class ControlError(Exception):
    """
    The request cannot be done; the message is the one line to print.
    """


class ControlRequests:
    """
    The queue lock and the control socket, seen from either side.

    @ivar lockPath: the lock file the running server holds.
    @ivar socketPath: the control socket, C{data_dir/control.sock}.
    """

    def __init__(self, queueDir: Path) -> None:
        self.queueDir = queueDir
        self.lockPath = queueDir / ".lock"
        self.socketPath = queueDir.parent / SOCKET_NAME

    # -- server side -------------------------------------------------------------

    def holdLock(self) -> IO[bytes]:
        """
        Take the server's lock (blocking; at start-up).

        @return: the open lock file; keep it open while the server runs.
        @raise OSError: another server uses this queue already.
        """
        self.queueDir.mkdir(parents=True, exist_ok=True, mode=0o700)
        f = open(self.lockPath, "ab")  # noqa: SIM115  (held for the process's life)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise OSError(f"{self.lockPath.parent}: another mta server uses this queue") from None
        return f

    # -- admin side ------------------------------------------------------------------

    def serverRunning(self) -> bool:
        """
        @return: whether a server holds the queue lock right now.
        """
        if not self.lockPath.exists():
            return False
        with open(self.lockPath, "ab") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    def request(self, command: str, queueId: str | None = None, timeout: float = 30.0) -> Any:
        """
        Send one request to the running server and wait for its answer
        (blocking; the admin command's side).

        @return: the answer's C{data}, or its C{text} when it has none.
        @raise ControlError: the server refused the request, or did not
            answer in time.
        """
        line = json.dumps({"command": command, "id": queueId}).encode() + b"\n"
        try:
            with (
                _socketAddress(self.socketPath) as address,
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s,
            ):
                s.settimeout(timeout)
                s.connect(address)
                s.sendall(line)
                answer = _readLine(s)
        except TimeoutError:
            raise ControlError(
                f"the running server did not answer in {timeout:g} seconds"
            ) from None
        except OSError as e:
            raise ControlError(
                f"{self.socketPath}: cannot reach the running server: {e.strerror or e}"
            ) from None
        reply = json.loads(answer)
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error", "the server refused the request")))
        return reply["data"] if reply.get("data") is not None else reply.get("text", "")


def _readLine(s: socket.socket) -> bytes:
    """
    Read up to and excluding the first newline (blocking).

    @raise OSError: the connection ended first.
    """
    chunks = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("the server closed the connection without an answer")
        end = chunk.find(b"\n")
        if end >= 0:
            chunks.append(chunk[:end])
            return b"".join(chunks)
        chunks.append(chunk)


@contextlib.contextmanager
def _socketAddress(path: Path) -> Any:
    """
    Give a path to C{path} short enough for C{bind} and C{connect}: the
    path itself, or, when it is too long (a deep test folder), the same
    file through C{/proc/self/fd/N} of its folder, opened for the
    duration (Linux).
    """
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class QueueCommands:
    """
    What the control socket's requests do, against the running queue.
    """

    def __init__(self, queue: QueueManager, spool: ISpool, runner: IBlockingRunner) -> None:
        """
        @param runner: reads the message headers for C{show}.
        """
        self._queue = queue
        self._spool = spool
        self._runner = runner

    def handle(self, command: str, queueId: str | None) -> Deferred[tuple[str, Any]]:
        """
        Do one request.

        @return: a Deferred firing with the answer's text and data; failing
            with L{ControlError} for a request that cannot be done.
        """
        if command not in COMMANDS:
            raise ControlError(f"unknown command {command!r}")
        if COMMANDS[command] and not queueId:
            raise ControlError(f"{command} needs a queue id")
        handler: Callable[[str | None], Deferred[tuple[str, Any]]] = getattr(self, "_" + command)
        return handler(queueId)

    def _known(self, queueId: str | None) -> str:
        """
        @return: C{queueId}, a message in the queue.
        @raise ControlError: it is not.
        """
        if queueId is None or queueId not in self._queue.items:
            raise ControlError(f"{queueId}: no such message in the queue")
        return queueId

    def _list(self, queueId: str | None) -> Deferred[tuple[str, Any]]:
        messages = [self._queue.describe(i) for i in list(self._queue.items)]
        return succeed((f"{len(messages)} message(s)", messages))

    def _show(self, queueId: str | None) -> Deferred[tuple[str, Any]]:
        queueId = self._known(queueId)
        description = self._queue.describe(queueId)
        body = self._spool.body(queueId)

        def headers() -> str:
            try:
                return readHeaders(body).decode("utf-8", "replace")
            except (OSError, ValueError):
                return ""

        def done(text: str) -> tuple[str, Any]:
            return queueId, {**description, "headers": text}

        return self._runner.run(headers).addCallback(done)

    def _flush(self, queueId: str | None) -> Deferred[tuple[str, Any]]:
        if queueId is not None:
            self._known(queueId)
            if self._queue.describe(queueId)["held"]:
                raise ControlError(f"{queueId}: held; 'mta queue release {queueId}' tries it now")
        n = self._queue.flush(queueId)
        if queueId is None:
            return succeed((f"{n} message(s) to be tried now", None))
        if n == 0:
            return succeed((f"{queueId}: being delivered right now", None))
        return succeed((f"{queueId}: to be tried now", None))

    def _hold(self, queueId: str | None) -> Deferred[tuple[str, Any]]:
        queueId = self._known(queueId)
        return self._queue.hold(queueId).addCallback(
            lambda _: (f"{queueId}: held; no attempt until 'mta queue release {queueId}'", None)
        )

    def _release(self, queueId: str | None) -> Deferred[tuple[str, Any]]:
        queueId = self._known(queueId)
        return self._queue.release(queueId).addCallback(
            lambda _: (f"{queueId}: released, to be tried now", None)
        )

    def _bounce(self, queueId: str | None) -> Deferred[tuple[str, Any]]:
        queueId = self._known(queueId)
        try:
            d = self._queue.bounce(queueId)
        except ValueError as e:
            raise ControlError(str(e)) from None
        return d.addCallback(
            lambda _: (f"{queueId}: bounced; the sender gets a report if it asked for one", None)
        )

    def _delete(self, queueId: str | None) -> Deferred[tuple[str, Any]]:
        queueId = self._known(queueId)
        return self._queue.delete(queueId).addCallback(lambda _: (f"{queueId}: deleted", None))


class ControlProtocol(LineOnlyReceiver):
    """
    One admin connection: a JSON request a line, a JSON answer a line, in
    order.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST

    def __init__(self, commands: QueueCommands) -> None:
        self._commands = commands
        self._last: Deferred[None] = succeed(None)

    def lineReceived(self, line: bytes) -> None:
        """
        Answer C{line} once every earlier request is answered.
        """
        self._last.addCallback(lambda _: self._answer(line))

    def _answer(self, line: bytes) -> Deferred[None]:
        replied = maybeDeferred(self._do, line).addCallback(self._ok)
        # _ok cannot fail: _error sees only the request's own failure.
        replied.addErrback(self._error)
        return replied.addCallback(self._send)

    def _do(self, line: bytes) -> Deferred[tuple[str, Any]]:
        try:
            request = json.loads(line)
            command, queueId = request["command"], request.get("id")
        except (ValueError, TypeError, KeyError):
            raise ControlError("bad request: not a JSON object with a command") from None
        if not isinstance(command, str) or not (queueId is None or isinstance(queueId, str)):
            raise ControlError("bad request: command and id must be strings")
        return self._commands.handle(command, queueId)

    def _ok(self, result: tuple[str, Any]) -> dict[str, Any]:
        text, data = result
        return {"ok": True, "text": text, "data": data}

    def _error(self, failure: Failure) -> dict[str, Any]:
        if failure.check(ControlError):
            return {"ok": False, "error": str(failure.value)}
        _log.failure("queue: control request failed", failure)
        return {"ok": False, "error": f"internal error: {failure.getErrorMessage()}"}

    def _send(self, reply: dict[str, Any]) -> None:
        self.sendLine(json.dumps(reply).encode())

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Refuse a request too long to be one, and hang up.
        """
        self._send({"ok": False, "error": "request too long"})
        if self.transport is not None:
            self.transport.loseConnection()


class ControlFactory(Factory):
    """
    Makes a L{ControlProtocol} per admin connection.
    """

    def __init__(self, commands: QueueCommands) -> None:
        self._commands = commands

    def buildProtocol(self, addr: IAddress | None) -> ControlProtocol:
        """
        @return: a protocol answering with C{commands}.
        """
        protocol = ControlProtocol(self._commands)
        protocol.factory = self
        return protocol


class ControlServer(Service):
    """
    Listens on the control socket while the server runs: replaces a stale
    socket at start (the caller holds the queue lock, so no other server
    uses it), creates it with mode 0600, removes it at stop.
    """

    def __init__(self, path: Path, commands: QueueCommands, reactor: IReactorUNIX) -> None:
        self.path = path
        self._commands = commands
        self._reactor = reactor
        self._port: IListeningPort | None = None
        self._address: contextlib.ExitStack | None = None

    def startService(self) -> None:
        """
        Listen on the socket.
        """
        super().startService()
        self._address = contextlib.ExitStack()
        address = self._address.enter_context(_socketAddress(self.path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        factory = ControlFactory(self._commands)
        self._port = self._reactor.listenUNIX(address, factory, mode=0o600)

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        """
        Stop listening; the socket file goes with it.
        """
        super().stopService()
        port, self._port = self._port, None
        address, self._address = self._address, None
        stopped = port.stopListening() if port is not None else None
        d: Deferred[None] = stopped if isinstance(stopped, Deferred) else succeed(None)

        def closed(result: object) -> object:
            if address is not None:
                address.close()
            return result

        return d.addBoth(closed)
