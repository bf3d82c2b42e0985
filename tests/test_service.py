"""
Tests for L{mta.service}: listeners and connection limits; and the
production example C{etc/mta.toml}, whose listeners they serve.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
)
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mta.config import (
    Config,
    DNSConfig,
    LimitsConfig,
    ListenConfig,
    QueueConfig,
    RelayConfig,
    loadConfig,
)
from mta.service import ConnectionLimiter, Listener, ListenError

LOCAL = "tcp:0:interface=127.0.0.1"
REFUSAL = b"421 4.7.0 Too many connections\r\n"


class Echo(Protocol):
    """
    Server side of the tests: greets, then echoes.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"hello\r\n")

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Client(Protocol):
    """
    Client side of the tests: collects what it receives.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()
        self._waiting: list[tuple[bytes, Deferred[bytes]]] = []

    def waitFor(self, marker: bytes) -> Deferred[bytes]:
        """
        @return: a Deferred firing with everything received once C{marker}
            has been.
        """
        d: Deferred[bytes] = Deferred()
        self._waiting.append((marker, d))
        self._check()
        return d

    def _check(self) -> None:
        for item in list(self._waiting):
            marker, d = item
            if marker in self.received:
                self._waiting.remove(item)
                d.callback(self.received)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(self.received)


def connect(port: IListeningPort | int) -> Deferred[Client]:
    """
    Connect a L{Client} to a listening port (or port number) on 127.0.0.1.
    """
    number: int = port if isinstance(port, int) else port.getHost().port  # type: ignore[attr-defined]
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", number)
    client: Deferred[Client] = connectProtocol(endpoint, Client())
    return client


class ListenerTests(TestCase):
    """
    Tests for L{Listener}.
    """

    def listener(self, description: str = LOCAL) -> Listener:
        listener = Listener(description, Factory.forProtocol(Echo), reactor)
        self.addCleanup(listener.stopService)
        return listener

    @inlineCallbacks
    def test_whenListeningGivesPort(self):  # type: ignore[no-untyped-def]
        """
        C{whenListening} fires with the bound port, which accepts connections.
        """
        listener = self.listener()
        listener.startService()
        port = yield listener.whenListening()
        self.assertNotEqual(port.getHost().port, 0)
        client = yield connect(port)
        received = yield client.waitFor(b"\n")
        self.assertEqual(received, b"hello\r\n")
        client.transport.loseConnection()
        yield client.closed

    @inlineCallbacks
    def test_whenListeningBeforeStart(self):  # type: ignore[no-untyped-def]
        """
        A C{whenListening} Deferred asked for before start fires once listening.
        """
        listener = self.listener()
        d = listener.whenListening()
        self.assertNoResult(d)
        listener.startService()
        port = yield d
        self.assertNotEqual(port.getHost().port, 0)

    @inlineCallbacks
    def test_privilegedStartBindsOnce(self):  # type: ignore[no-untyped-def]
        """
        After C{privilegedStartService} bound the port, C{startService} keeps it.
        """
        listener = self.listener()
        listener.privilegedStartService()
        first = yield listener.whenListening()
        listener.startService()
        second = yield listener.whenListening()
        self.assertIs(first, second)

    @inlineCallbacks
    def test_portInUseFailsLoudly(self):  # type: ignore[no-untyped-def]
        """
        Listening on a port in use raises L{ListenError} naming the description.
        """
        first = self.listener()
        first.startService()
        port = yield first.whenListening()
        description = f"tcp:{port.getHost().port}:interface=127.0.0.1"
        second = self.listener(description)
        error = self.assertRaises(ListenError, second.startService)
        self.assertIn(description, str(error))
        self.assertIn("in use", str(error))
        yield self.assertFailure(second.whenListening(), ListenError)

    def test_badDescriptionFailsLoudly(self) -> None:
        """
        A description C{serverFromString} cannot parse raises L{ListenError}.
        """
        error = self.assertRaises(ListenError, self.listener("nonsense:25").startService)
        self.assertIn("nonsense:25", str(error))

    def test_systemdWithoutSocketFailsLoudly(self) -> None:
        """
        A C{systemd:} description with no socket passed in raises L{ListenError}.
        """
        description = "systemd:domain=INET:index=7"
        error = self.assertRaises(ListenError, self.listener(description).startService)
        self.assertIn(description, str(error))

    @inlineCallbacks
    def test_stopServiceStopsListening(self):  # type: ignore[no-untyped-def]
        """
        After C{stopService} the port refuses connections.
        """
        listener = self.listener()
        listener.startService()
        port = yield listener.whenListening()
        number = port.getHost().port
        yield listener.stopService()
        yield self.assertFailure(connect(number), ConnectionRefusedError)

    @inlineCallbacks
    def test_perAddressLimitOverSockets(self):  # type: ignore[no-untyped-def]
        """
        The connection over the per-IP limit gets the refusal and is closed,
        while the admitted ones keep working.
        """
        limiter = ConnectionLimiter(
            Factory.forProtocol(Echo),
            reactor,
            REFUSAL,
            maxConnections=10,
            maxPerAddress=2,
        )
        listener = Listener(LOCAL, limiter, reactor)
        self.addCleanup(listener.stopService)
        listener.startService()
        port = yield listener.whenListening()
        first = yield connect(port)
        second = yield connect(port)
        yield first.waitFor(b"hello\r\n")
        yield second.waitFor(b"hello\r\n")
        third = yield connect(port)
        received = yield third.closed
        self.assertEqual(received, REFUSAL)
        first.transport.write(b"ping\r\n")
        received = yield first.waitFor(b"ping\r\n")
        self.assertEqual(received, b"hello\r\nping\r\n")
        for client in (first, second):
            client.transport.loseConnection()
            yield client.closed


class AbortRecordingTransport(StringTransport):
    """
    A L{StringTransport} that records C{abortConnection}.
    """

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


def peer(host: str, port: int = 40000) -> IPv4Address:
    """
    @return: a TCP peer address.
    """
    return IPv4Address("TCP", host, port)


class ConnectionLimiterTests(SynchronousTestCase):
    """
    Tests for L{ConnectionLimiter}, without sockets.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.built: list[Protocol] = []
        built = self.built

        class Recording(Factory):
            def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
                protocol = Echo()
                built.append(protocol)
                return protocol

        self.limiter = ConnectionLimiter(
            Recording(), self.clock, REFUSAL, maxConnections=3, maxPerAddress=2
        )

    def connect(self, address: IAddress) -> tuple[Protocol, AbortRecordingTransport]:
        protocol = self.limiter.buildProtocol(address)
        assert protocol is not None
        transport = AbortRecordingTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_perAddressLimitRefuses(self) -> None:
        """
        A third connection from one address gets the refusal and is closed.
        """
        self.connect(peer("192.0.2.1"))
        self.connect(peer("192.0.2.1"))
        _, transport = self.connect(peer("192.0.2.1"))
        self.assertEqual(transport.value(), REFUSAL)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.built), 2)
        self.assertEqual(self.limiter.connectionsFrom("192.0.2.1"), 2)

    def test_otherAddressesStillAdmitted(self) -> None:
        """
        One address at its limit does not keep another address out.
        """
        self.connect(peer("192.0.2.1"))
        self.connect(peer("192.0.2.1"))
        _, transport = self.connect(peer("192.0.2.2"))
        self.assertEqual(transport.value(), b"hello\r\n")

    def test_totalLimitRefuses(self) -> None:
        """
        Past C{maxConnections} every address is refused.
        """
        for n in range(3):
            self.connect(peer(f"192.0.2.{n + 1}"))
        _, transport = self.connect(peer("192.0.2.9"))
        self.assertEqual(transport.value(), REFUSAL)
        self.assertEqual(len(self.built), 3)

    def test_closedConnectionFreesSlot(self) -> None:
        """
        When an admitted connection ends, its address may connect again.
        """
        first, _ = self.connect(peer("192.0.2.1"))
        self.connect(peer("192.0.2.1"))
        first.connectionLost(connectionDone)
        self.assertEqual(self.limiter.connectionsFrom("192.0.2.1"), 1)
        _, transport = self.connect(peer("192.0.2.1"))
        self.assertEqual(transport.value(), b"hello\r\n")

    def test_unixPeersCountOnlyTowardsTotal(self) -> None:
        """
        Connections without an IP address are limited only by the total.
        """
        for _ in range(3):
            _, transport = self.connect(UNIXAddress(b"/run/mta.sock"))
            self.assertEqual(transport.value(), b"hello\r\n")
        _, transport = self.connect(UNIXAddress(b"/run/mta.sock"))
        self.assertEqual(transport.value(), REFUSAL)

    def test_refusedConnectionAbortedIfItLingers(self) -> None:
        """
        A refused connection still open after C{closeTimeout} is aborted.
        """
        self.connect(peer("192.0.2.1"))
        self.connect(peer("192.0.2.1"))
        _, transport = self.connect(peer("192.0.2.1"))
        self.clock.advance(self.limiter.closeTimeout - 1)
        self.assertFalse(transport.aborted)
        self.clock.advance(1)
        self.assertTrue(transport.aborted)

    def test_closingConnectionAbortedIfItLingers(self) -> None:
        """
        An admitted connection that does not close after its protocol asked
        is aborted after C{closeTimeout}.
        """
        _, transport = self.connect(peer("192.0.2.1"))
        self.built[0].transport.loseConnection()  # type: ignore[union-attr]
        self.assertTrue(transport.disconnecting)
        self.clock.advance(self.limiter.closeTimeout)
        self.assertTrue(transport.aborted)

    def test_closedConnectionNotAborted(self) -> None:
        """
        A connection that closes in time cancels its abort.
        """
        protocol, transport = self.connect(peer("192.0.2.1"))
        self.built[0].transport.loseConnection()  # type: ignore[union-attr]
        protocol.connectionLost(connectionDone)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(transport.aborted)

    def test_fromConfig(self) -> None:
        """
        C{fromConfig} takes the caps from C{[limits]}.
        """
        limits = LimitsConfig(connections=7, connections_per_ip=4)
        limiter = ConnectionLimiter.fromConfig(
            Factory.forProtocol(Echo), limits, REFUSAL, self.clock
        )
        self.assertEqual((limiter.maxConnections, limiter.maxPerAddress), (7, 4))
        self.assertEqual(limiter.refusal, REFUSAL)


EXAMPLE = Path(__file__).absolute().parent.parent / "etc" / "mta.toml"


def tomlKeys(table: dict[str, object], prefix: str = "") -> set[str]:
    """
    @return: every key of a TOML document, dotted, tables included.
    """
    keys = set()
    for name, value in table.items():
        keys.add(prefix + name)
        if isinstance(value, dict):
            keys |= tomlKeys(value, f"{prefix}{name}.")
    return keys


def configKeys(cls: type, prefix: str = "") -> set[str]:
    """
    @return: every key a config dataclass reads, dotted, sections included.
    """
    keys = set()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name == "source":
            continue  # where the config came from, not a key
        keys.add(prefix + field.name)
        if dataclasses.is_dataclass(hints[field.name]):
            keys |= configKeys(hints[field.name], f"{prefix}{field.name}.")
    return keys


class ExampleConfigTests(SynchronousTestCase):
    """
    Tests for the production example, C{etc/mta.toml}.
    """

    def test_loads(self) -> None:
        """
        The example loads, with the standard ports and production paths.
        """
        config = loadConfig(EXAMPLE)
        self.assertEqual(config.hostname, "mail.example.com")
        self.assertEqual(config.data_dir, Path("/var/lib/mta"))
        self.assertEqual(config.domains, ("example.com",))
        self.assertEqual(
            config.listen,
            ListenConfig(
                smtp=("tcp:25",),
                submission=("tcp:587",),
                submissions=("tcp:465",),
                imap=("tcp:143",),
                imaps=("tcp:993",),
                pop3=("tcp:110",),
                pop3s=("tcp:995",),
            ),
        )
        self.assertEqual(
            config.tls.certificate,
            Path("/etc/letsencrypt/live/mail.example.com/fullchain.pem"),
        )
        self.assertEqual(
            config.tls.private_key,
            Path("/etc/letsencrypt/live/mail.example.com/privkey.pem"),
        )
        self.assertEqual(config.relay.max_lifetime, 5 * 86400)
        self.assertEqual(config.relay.smarthost, "")
        self.assertEqual(config.dns.nameservers, ())
        self.assertEqual(config.limits.message_size, 25 * 1024 * 1024)
        self.assertEqual(config.limits.login_block_time, 900)

    def test_defaultsAsDocumented(self) -> None:
        """
        Apart from the names and the listen/TLS sections, the example
        states the built-in defaults.
        """
        config = loadConfig(EXAMPLE)
        self.assertEqual(config.relay, RelayConfig())
        self.assertEqual(config.dns, DNSConfig())
        self.assertEqual(config.limits, LimitsConfig())
        self.assertEqual(config.queue, QueueConfig())

    def test_everyKeyShown(self) -> None:
        """
        The example sets every key the configuration knows, and no other.
        """
        with EXAMPLE.open("rb") as f:
            document = tomllib.load(f)
        self.assertEqual(tomlKeys(document), configKeys(Config))

    def test_descriptionsParse(self) -> None:
        """
        Every listen description in the example is a valid server endpoint.
        """
        config = loadConfig(EXAMPLE)
        for field in dataclasses.fields(ListenConfig):
            for description in getattr(config.listen, field.name):
                serverFromString(reactor, description)
