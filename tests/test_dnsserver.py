"""
Tests for L{mta.testing.dnsserver}: the authoritative test DNS server
answers real queries over UDP and TCP on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.names import client, dns
from twisted.trial.unittest import TestCase

from mta.testing.dnsserver import DNSServer, Record

_ZONES = {
    "example.test": {"MX": [(10, "mx1.example.test"), (20, "mx2.example.test.")]},
    "MX1.Example.Test.": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
    "nullmx.test": {"MX": [(0, ".")]},
    "txt.test": {"TXT": ["v=spf1 -all", ("first ", "second")]},
    "short.test": {"A": [Record("127.0.0.9", ttl=7)]},
    "alias.test": {"CNAME": "mx1.example.test"},
    "2.0.0.127.in-addr.arpa": {"PTR": ["mx1.example.test"]},
    "servfail.test": "SERVFAIL",
    "refused.test": "REFUSED",
    "silent.test": "TIMEOUT",
}


class _Controller:
    """
    The minimum a L{dns.DNSProtocol} over TCP needs from its controller.
    """

    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self, protocol: Any) -> None:
        pass

    def connectionLost(self, protocol: Any) -> None:
        self.lost.callback(None)

    def messageReceived(self, message: Any, protocol: Any, address: Any = None) -> None:
        pass


class DNSServerTests(TestCase):
    """
    L{DNSServer} over real sockets.
    """

    def setUp(self) -> None:
        self.server = DNSServer(_ZONES, negativeTTL=42)
        self.port = self.server.listen(reactor)
        self.addCleanup(self.server.stop)
        self.client = client.Resolver(servers=[("127.0.0.1", self.port)], reactor=reactor)

    def ask(self, name: str, rrtype: int, timeout: float = 2) -> Deferred[dns.Message]:
        """
        Send one question over UDP.
        """
        return self.client.queryUDP([dns.Query(name, rrtype)], timeout=(timeout,))

    async def test_mx(self) -> None:
        """
        MX records come back with their preferences, the exchange without its
        trailing dot, and the authoritative flag set.
        """
        message = await self.ask("example.test", dns.MX)
        self.assertEqual(message.rCode, dns.OK)
        self.assertTrue(message.auth)
        found = [(a.payload.preference, a.payload.name.name) for a in message.answers]
        self.assertEqual(found, [(10, b"mx1.example.test"), (20, b"mx2.example.test")])
        self.assertEqual([a.ttl for a in message.answers], [300, 300])

    async def test_namesIgnoreCaseAndTrailingDot(self) -> None:
        """
        A zone key written in capitals with a trailing dot answers a
        lower-case question.
        """
        message = await self.ask("mx1.example.test", dns.AAAA)
        self.assertEqual([a.payload._address for a in message.answers], ["::1"])

    async def test_recordTTL(self) -> None:
        """
        A value wrapped in L{Record} is served with its own TTL.
        """
        message = await self.ask("short.test", dns.A)
        self.assertEqual(
            [(a.payload.dottedQuad(), a.ttl) for a in message.answers], [("127.0.0.9", 7)]
        )

    async def test_nullMX(self) -> None:
        """
        C{(0, ".")} is served as the null MX: preference 0, the root name.
        """
        message = await self.ask("nullmx.test", dns.MX)
        self.assertEqual(
            [(a.payload.preference, a.payload.name.name) for a in message.answers], [(0, b"")]
        )

    async def test_txtStrings(self) -> None:
        """
        A TXT value that is a tuple becomes one record of several strings.
        """
        message = await self.ask("txt.test", dns.TXT)
        self.assertEqual(
            [a.payload.data for a in message.answers], [[b"v=spf1 -all"], [b"first ", b"second"]]
        )

    async def test_ptr(self) -> None:
        """
        PTR records are served under their in-addr.arpa name.
        """
        message = await self.ask("2.0.0.127.in-addr.arpa", dns.PTR)
        self.assertEqual([a.payload.name.name for a in message.answers], [b"mx1.example.test"])

    async def test_cnameFollowed(self) -> None:
        """
        A question for an alias gets the CNAME and then the target's records.
        """
        message = await self.ask("alias.test", dns.A)
        self.assertEqual([a.type for a in message.answers], [dns.CNAME, dns.A])
        self.assertEqual(message.answers[1].name.name, b"mx1.example.test")

    async def test_nxdomainWithSOA(self) -> None:
        """
        A name in no zone is NXDOMAIN with an SOA giving the negative TTL.
        """
        message = await self.ask("nowhere.test", dns.MX)
        self.assertEqual(message.rCode, dns.ENAME)
        [soa] = message.authority
        self.assertEqual((soa.type, soa.ttl, soa.payload.minimum), (dns.SOA, 42, 42))

    async def test_noDataWithSOA(self) -> None:
        """
        An existing name without the type asked is NOERROR with no answer and
        an SOA in the authority section.
        """
        message = await self.ask("nullmx.test", dns.A)
        self.assertEqual((message.rCode, message.answers), (dns.OK, []))
        self.assertEqual([a.type for a in message.authority], [dns.SOA])

    async def test_servfailAndRefused(self) -> None:
        """
        A name mapped to C{"SERVFAIL"} or C{"REFUSED"} gets that response code.
        """
        for name, code in (("servfail.test", dns.ESERVER), ("refused.test", dns.EREFUSED)):
            message = await self.ask(name, dns.MX)
            self.assertEqual((message.rCode, message.answers), (code, []))

    async def test_silent(self) -> None:
        """
        A name mapped to C{"TIMEOUT"} gets no answer at all.
        """
        await self.assertFailure(self.ask("silent.test", dns.A, timeout=0.2), TimeoutError)

    async def test_changeWhileRunning(self) -> None:
        """
        A change to C{zones} is seen by the next query, and every question is
        recorded in C{queries}.
        """
        self.server.zones["example.test"] = {"MX": [(5, "new.example.test")]}
        message = await self.ask("Example.Test", dns.MX)
        self.assertEqual([a.payload.name.name for a in message.answers], [b"new.example.test"])
        self.assertEqual(self.server.queries, [("example.test", "MX")])

    async def test_tcp(self) -> None:
        """
        The same zones are served over TCP on the same port number.
        """
        controller = _Controller()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        protocol = await connectProtocol(endpoint, dns.DNSProtocol(controller, reactor=reactor))
        message = await protocol.query([dns.Query("mx1.example.test", dns.A)])
        protocol.transport.loseConnection()
        await controller.lost
        self.assertEqual([a.payload.dottedQuad() for a in message.answers], ["127.0.0.2"])

    def test_nameserver(self) -> None:
        """
        C{nameserver} is the C{[dns] nameservers} entry for the server.
        """
        self.assertEqual(self.server.nameserver, f"127.0.0.1:{self.port}")
