# -*- test-case-name: tests.test_dnsserver -*-
"""
A real authoritative DNS server for tests, serving zones from a dict.

It listens on UDP and TCP on a loopback address and port 0, so a test
starts one, points C{[dns] nameservers} (or L{mta.dns.Resolver}) at
L{DNSServer.nameserver}, and changes the records while it runs::

    server = DNSServer({
        "example.test": {"MX": [(10, "mx1.example.test")]},
        "mx1.example.test": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
        "nullmx.test": {"MX": [(0, ".")]},
        "txt.test": {"TXT": ["v=spf1 -all", ("long ", "record")]},
        "2.0.0.127.in-addr.arpa": {"PTR": ["mx1.example.test"]},
        "alias.test": {"CNAME": "mx1.example.test"},
        "broken.test": "SERVFAIL",
    })
    port = server.listen(reactor)
    ...
    server.zones["example.test"] = {"MX": [(5, "mx2.example.test")]}

A name maps to a dict of record type to a list of values, or to one of
the strings C{"SERVFAIL"}, C{"REFUSED"} or C{"TIMEOUT"} (no answer at
all).  A value wrapped in L{Record} carries its own TTL.  Names are
matched without regard to case or a trailing dot.  A name in no zone is
NXDOMAIN; a name without the type asked is NOERROR with no answer; both
carry an SOA in the authority section whose TTL and MINIMUM are
C{negativeTTL}, so resolvers can cache the negative answer.  A CNAME is
answered for every type, followed by the target's records when the server
has them, as a recursive resolver would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorUDP
from twisted.names import dns
from twisted.names.server import DNSServerFactory

#: The TTL of records that do not say otherwise.
DEFAULT_TTL = 300

#: What a zone entry may say instead of holding records.
_FAILURES = {"SERVFAIL": dns.ESERVER, "REFUSED": dns.EREFUSED, "TIMEOUT": None}


@dataclass(frozen=True)
class Record:
    """
    A record value with its own TTL, e.g. C{Record("127.0.0.2", ttl=10)}.

    @ivar value: what a bare value in the zone dict would be.
    @ivar ttl: seconds.
    """

    value: Any
    ttl: int


def _normal(name: str | bytes) -> str:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.rstrip(".").lower()


def _payload(rrtype: str, value: Any, ttl: int) -> Any:
    """
    Build the C{twisted.names} record for one zone value.
    """
    if rrtype == "MX":
        preference, exchange = value
        return dns.Record_MX(preference, exchange.rstrip(".").encode("ascii"), ttl=ttl)
    if rrtype == "TXT":
        parts = (value,) if isinstance(value, str | bytes) else tuple(value)
        data = [p.encode("utf-8") if isinstance(p, str) else p for p in parts]
        return dns.Record_TXT(*data, ttl=ttl)
    if rrtype == "A":
        return dns.Record_A(value, ttl=ttl)
    if rrtype == "AAAA":
        return dns.Record_AAAA(value, ttl=ttl)
    if rrtype in ("PTR", "CNAME", "NS"):
        cls = {"PTR": dns.Record_PTR, "CNAME": dns.Record_CNAME, "NS": dns.Record_NS}[rrtype]
        return cls(value.rstrip(".").encode("ascii"), ttl=ttl)
    raise ValueError(f"record type {rrtype} is not served")


class _ZoneFactory(DNSServerFactory):
    """
    The C{DNSServerFactory} of a L{DNSServer}: it answers every query
    itself from the zones, because the stock path logs a SERVFAIL as an
    error (which fails a trial test) and sends no SOA with NXDOMAIN.
    """

    def __init__(self, server: DNSServer) -> None:
        super().__init__()
        self._server = server

    def handleQuery(self, message: dns.Message, protocol: Any, address: Any) -> None:
        """
        Answer the first question of C{message} from the zones.
        """
        query = message.queries[0]
        outcome = self._server._answer(query)
        if outcome is None:
            return
        rCode, answers, authority = outcome
        response = self._responseFromMessage(
            message=message, rCode=rCode, answers=answers, authority=authority
        )
        response.auth = True
        self.sendReply(protocol, response, address)


class DNSServer:
    """
    An authoritative DNS server over the zones in a dict (see the module
    docstring for their form).

    @ivar zones: name to records or failure; change it at any time, the
        next query sees the change.
    @ivar ttl: the TTL of records that do not carry their own.
    @ivar negativeTTL: the TTL and MINIMUM of the SOA sent with NXDOMAIN
        and empty answers.
    @ivar queries: every question answered or dropped, as C{(name, type)}
        pairs such as C{("example.test", "MX")}, for counting lookups.
    @ivar port: the port number it listens on (UDP and TCP), once
        listening.
    """

    def __init__(
        self,
        zones: Mapping[str, Any] | None = None,
        ttl: int = DEFAULT_TTL,
        negativeTTL: int = 60,
    ) -> None:
        self.zones: dict[str, Any] = dict(zones or {})
        self.ttl = ttl
        self.negativeTTL = negativeTTL
        self.queries: list[tuple[str, str]] = []
        self.port = 0
        self._interface = "127.0.0.1"
        self._ports: list[IListeningPort] = []
        self._factory = _ZoneFactory(self)

    @property
    def nameserver(self) -> str:
        """
        The C{[dns] nameservers} entry for this server (C{"127.0.0.1:5353"},
        C{"[::1]:5353"}).
        """
        if ":" in self._interface:
            return f"[{self._interface}]:{self.port}"
        return f"{self._interface}:{self.port}"

    def listen(self, reactor: IReactorUDP, interface: str = "127.0.0.1") -> int:
        """
        Start answering on C{interface}, UDP and TCP on the same free port.

        @param reactor: also provides L{IReactorTCP}.
        @return: the port number.
        """
        self._interface = interface
        for _ in range(20):
            udp = reactor.listenUDP(
                0, dns.DNSDatagramProtocol(self._factory), interface=interface, maxPacketSize=8192
            )
            number: int = cast(Any, udp.getHost()).port
            try:
                tcp = cast(IReactorTCP, reactor).listenTCP(
                    number, self._factory, interface=interface
                )
            except CannotListenError:
                # Someone holds that TCP port; take another UDP one.
                udp.stopListening()
                continue
            self._ports = [udp, tcp]
            self.port = number
            return number
        raise RuntimeError("no port free for both UDP and TCP")

    def stop(self) -> Deferred[None]:
        """
        Stop listening and drop any TCP connection.
        """
        for protocol in list(self._factory.connections):
            protocol.transport.loseConnection()
        stopping = [maybeDeferred(p.stopListening) for p in self._ports]
        self._ports = []
        return gatherResults(stopping).addCallback(lambda _: None)

    def _find(self, name: str) -> tuple[bool, Any]:
        for key, value in self.zones.items():
            if _normal(key) == name:
                return True, value
        return False, None

    def _records(self, name: str, rrtype: str) -> list[Any]:
        found, entry = self._find(name)
        if not found or not isinstance(entry, Mapping):
            return []
        values = entry.get(rrtype, [])
        if isinstance(values, str | Record) or (rrtype == "MX" and isinstance(values, tuple)):
            values = [values]
        headers = []
        for value in values:
            ttl = value.ttl if isinstance(value, Record) else self.ttl
            plain = value.value if isinstance(value, Record) else value
            payload = _payload(rrtype, plain, ttl)
            headers.append(
                dns.RRHeader(name, payload.TYPE, dns.IN, ttl, payload=payload, auth=True)
            )
        return headers

    def _soa(self, name: str) -> dns.RRHeader:
        zone = ".".join(name.split(".")[-2:])
        soa = dns.Record_SOA(
            mname=f"ns.{zone}",
            rname=f"hostmaster.{zone}",
            serial=1,
            minimum=self.negativeTTL,
            ttl=self.negativeTTL,
        )
        return dns.RRHeader(zone, dns.SOA, dns.IN, self.negativeTTL, payload=soa, auth=True)

    def _answer(self, query: dns.Query) -> tuple[int, list[Any], list[Any]] | None:
        """
        @return: the response code, answer and authority sections for
            C{query}, or L{None} to send no answer at all.
        """
        name = _normal(query.name.name)
        rrtype = dns.QUERY_TYPES.get(query.type, str(query.type))
        self.queries.append((name, rrtype))
        found, entry = self._find(name)
        if not found:
            return dns.ENAME, [], [self._soa(name)]
        if isinstance(entry, str):
            rCode = _FAILURES[entry]
            return None if rCode is None else (rCode, [], [])
        answers: list[Any] = []
        target = name
        for _ in range(8):
            cnames = self._records(target, "CNAME")
            if not cnames or rrtype == "CNAME":
                break
            answers.extend(cnames)
            target = _normal(cnames[0].payload.name.name)
        answers.extend(self._records(target, rrtype))
        return dns.OK, answers, [] if answers else [self._soa(name)]


__all__ = ["DEFAULT_TTL", "DNSServer", "Record"]
