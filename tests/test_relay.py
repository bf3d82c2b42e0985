"""
Tests for L{mta.delivery.relay}: L{RelayDelivery} over a fake connect
function handing out fake clients, and L{FakeResolver}, on a L{Clock}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mta.delivery.bounce import RelayedReply
from mta.delivery.mx import Host, MXFinder
from mta.delivery.relay import IDLE_REUSE, RelayDelivery, Smarthost, describeTLS
from mta.envelope import Address, Envelope, Recipient
from mta.errors import Reply
from mta.message import MessageBody
from mta.smtp.client import ClientPolicy, ConnectionFailed, OutboundMessage, TLSOutcome
from mta.testing.fakes import FakeResolver

DATA = b"Subject: hi\r\n\r\nhello\r\n"
TLS = TLSOutcome("TLSv1.3", "TLS_AES_256_GCM_SHA384", True)

#: Answers one transaction: the client and message to a reply per recipient.
Answer = Callable[
    ["FakeClient", OutboundMessage], "dict[Recipient, Reply] | Deferred[dict[Recipient, Reply]]"
]


def accept(client: FakeClient, message: OutboundMessage) -> dict[Recipient, Reply]:
    """
    Every recipient delivered.
    """
    return {r: Reply(250, "2.0.0 ok") for r in message.recipients}


class FakeClient:
    """
    Stands in for L{mta.smtp.client.SMTPClient}: records each transaction
    and answers it with C{connect.answer}.
    """

    def __init__(self, connect: FakeConnect, host: Host, ip: str, policy: ClientPolicy) -> None:
        self.connect = connect
        self.host = host
        self.ip = ip
        self.policy = policy
        self.usable = True
        self.dsnPassed = True
        self.tlsOutcome = TLS
        self.sent: list[OutboundMessage] = []
        self.quits = 0
        self.transport = None

    def send(self, message: OutboundMessage) -> Deferred[dict[Recipient, Reply]]:
        self.sent.append(message)
        answer = self.connect.answer(self, message)
        return answer if isinstance(answer, Deferred) else succeed(answer)

    def quit(self) -> Deferred[None]:
        self.quits += 1
        self.usable = False
        return succeed(None)


class FakeConnect:
    """
    The relay's C{connect}: hands out L{FakeClient}s, or fails an address
    with the exceptions queued for it.

    @ivar calls: C{(host name, ip, port, tls mode)} per call.
    @ivar clients: every client handed out.
    @ivar failures: address to exceptions to raise, first to last.
    @ivar answer: how clients answer transactions.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, str]] = []
        self.clients: list[FakeClient] = []
        self.failures: dict[str, list[Exception]] = {}
        self.answer: Answer = accept

    def __call__(self, host: Host, ip: str, port: int, policy: ClientPolicy) -> Deferred[Any]:
        self.calls.append((host.name, ip, port, policy.tls))
        queued = self.failures.get(ip)
        if queued:
            return fail(queued.pop(0))
        client = FakeClient(self, host, ip, policy)
        self.clients.append(client)
        return succeed(client)


def envelope(*rcpts: str, queueId: str = "Q1") -> Envelope:
    """
    @return: an envelope from alice@example.com to C{rcpts}.
    """
    return Envelope(
        queueId=queueId,
        sender=Address.parse("alice@example.com"),
        recipients=tuple(Recipient(Address.parse(a), Address.parse(a)) for a in rcpts),
        arrival=0.0,
    )


def failed(code: int, text: str, retryWithoutTLS: bool = False) -> ConnectionFailed:
    return ConnectionFailed(Reply(code, text), retryWithoutTLS)


class RelayDeliveryTests(SynchronousTestCase):
    """
    L{RelayDelivery.deliver}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resolver = FakeResolver(
            mx={
                "one.test": [(10, "mx1.one.test"), (20, "mx2.one.test")],
                "two.test": [(10, "mx.two.test")],
                "null.test": [(0, ".")],
            },
            addresses={
                "mx1.one.test": ["192.0.2.1"],
                "mx2.one.test": ["192.0.2.2"],
                "mx.two.test": ["2001:db8::2", "192.0.2.20"],
            },
        )
        self.connect = FakeConnect()
        self.relay = self.makeRelay()

    def makeRelay(self, smarthost: Smarthost | None = None) -> RelayDelivery:
        return RelayDelivery(
            finder=MXFinder(self.resolver, ["mx.example.com"], shuffle=lambda rs: None),
            connect=self.connect,
            policy=ClientPolicy(hostname="mx.example.com"),
            clock=self.clock,
            runner=None,  # type: ignore[arg-type]
            port=2525,
            smarthost=smarthost,
        )

    def deliver(self, env: Envelope) -> dict[Recipient, Reply]:
        """
        @return: the replies of one delivery, which must end at once.
        """
        result: dict[Recipient, Reply] = self.successResultOf(
            self.relay.deliver(env, MessageBody("", 0, len(DATA), DATA))
        )
        return result

    def byAddress(self, results: dict[Recipient, Reply]) -> dict[str, Reply]:
        return {str(r.address): reply for r, reply in results.items()}

    def test_recipientsGroupedByDomain(self) -> None:
        """Recipients of one domain share one transaction; each domain gets its own."""
        results = self.deliver(envelope("a@one.test", "b@two.test", "c@one.test"))
        self.assertEqual(len(results), 3)
        self.assertTrue(all(r.code == 250 for r in results.values()))
        sent = {
            c.host.name: [[str(r.address) for r in m.recipients] for m in c.sent]
            for c in self.connect.clients
        }
        self.assertEqual(
            sent, {"mx1.one.test": [["a@one.test", "c@one.test"]], "mx.two.test": [["b@two.test"]]}
        )

    def test_nextHostAfterConnectionFailure(self) -> None:
        """A host that cannot be reached is passed over for the next MX, and the detail says so."""
        self.connect.failures["192.0.2.1"] = [failed(421, "4.4.1 cannot connect: refused")]
        [reply] = self.deliver(envelope("a@one.test")).values()
        self.assertEqual(
            [c[:3] for c in self.connect.calls],
            [("mx1.one.test", "192.0.2.1", 2525), ("mx2.one.test", "192.0.2.2", 2525)],
        )
        self.assertEqual(reply.code, 250)
        self.assertEqual(reply.remote, "mx2.one.test[192.0.2.2]")
        self.assertIn("mx1.one.test[192.0.2.1]: 421 4.4.1 cannot connect: refused", reply.detail)

    def test_addressesOfOneHostInOrder(self) -> None:
        """Each address of a host is tried in turn (IPv6 first) before giving up."""
        self.connect.failures["2001:db8::2"] = [failed(421, "4.4.1 cannot connect: unreachable")]
        [reply] = self.deliver(envelope("b@two.test")).values()
        self.assertEqual([c[1] for c in self.connect.calls], ["2001:db8::2", "192.0.2.20"])
        self.assertEqual(reply.remote, "mx.two.test[192.0.2.20]")

    def test_allHostsFail(self) -> None:
        """When no host can be reached every recipient gets 451 4.4.1 with the last error."""
        self.connect.failures["192.0.2.1"] = [failed(421, "4.4.1 cannot connect: one")]
        self.connect.failures["192.0.2.2"] = [failed(421, "4.4.1 cannot connect: two")]
        replies = self.deliver(envelope("a@one.test", "b@one.test"))
        self.assertEqual({r.code for r in replies.values()}, {451})
        for reply in replies.values():
            self.assertTrue(reply.text.startswith("4.4.1 No mail host of one.test"))
            self.assertIn("cannot connect: two", reply.text)
            self.assertEqual(reply.remote, "")

    def test_retryWithoutTLS(self) -> None:
        """A failed TLS handshake is retried once on the same address with tls="none"."""
        self.connect.failures["192.0.2.1"] = [
            failed(421, "4.7.5 TLS handshake failed", retryWithoutTLS=True)
        ]
        [reply] = self.deliver(envelope("a@one.test")).values()
        self.assertEqual(
            [(c[1], c[3]) for c in self.connect.calls],
            [("192.0.2.1", "opportunistic"), ("192.0.2.1", "none")],
        )
        self.assertEqual(reply.remote, "mx1.one.test[192.0.2.1]")

    def test_noSecondPlaintextRetry(self) -> None:
        """A plaintext retry that fails too moves on to the next host, not a third try."""
        self.connect.failures["192.0.2.1"] = [
            failed(421, "4.7.5 TLS handshake failed", retryWithoutTLS=True),
            failed(421, "4.7.5 TLS handshake failed", retryWithoutTLS=True),
        ]
        self.deliver(envelope("a@one.test"))
        self.assertEqual(
            [(c[1], c[3]) for c in self.connect.calls],
            [("192.0.2.1", "opportunistic"), ("192.0.2.1", "none"), ("192.0.2.2", "opportunistic")],
        )

    def test_tooManyRecipientsNextTransaction(self) -> None:
        """Recipients refused with 452 go in the next transaction on the same connection."""

        def limit2(client: FakeClient, message: OutboundMessage) -> dict[Recipient, Reply]:
            return {
                r: Reply(250, "2.0.0 ok") if i < 2 else Reply(452, "4.5.3 too many recipients")
                for i, r in enumerate(message.recipients)
            }

        self.connect.answer = limit2
        rcpts = [f"r{i}@one.test" for i in range(5)]
        replies = self.deliver(envelope(*rcpts))
        [client] = self.connect.clients
        self.assertEqual(
            [[str(r.address) for r in m.recipients] for m in client.sent],
            [rcpts, rcpts[2:], rcpts[4:]],
        )
        self.assertEqual({r.code for r in replies.values()}, {250})

    def test_tooManyWithoutProgressStops(self) -> None:
        """A peer refusing every recipient with 452 is not asked again in the same delivery."""
        self.connect.answer = lambda c, m: {r: Reply(452, "4.5.3 no") for r in m.recipients}
        replies = self.deliver(envelope("a@one.test", "b@one.test"))
        self.assertEqual(len(self.connect.clients[0].sent), 1)
        self.assertEqual({r.code for r in replies.values()}, {452})

    def test_idleConnectionReused(self) -> None:
        """A connection is reused by the next message to the domain within IDLE_REUSE seconds."""
        self.deliver(envelope("a@one.test"))
        self.clock.advance(IDLE_REUSE - 1)
        [reply] = self.deliver(envelope("b@one.test", queueId="Q2")).values()
        [client] = self.connect.clients
        self.assertEqual(len(client.sent), 2)
        self.assertEqual(client.quits, 0)
        self.assertIn("connection reused", reply.detail)

    def test_idleConnectionExpires(self) -> None:
        """An idle connection is closed after IDLE_REUSE seconds and not used again."""
        self.deliver(envelope("a@one.test"))
        [first] = self.connect.clients
        self.clock.advance(IDLE_REUSE + 0.1)
        self.assertEqual(first.quits, 1)
        self.deliver(envelope("b@one.test", queueId="Q2"))
        self.assertEqual(len(self.connect.clients), 2)
        self.assertEqual(len(first.sent), 1)

    def test_noIdleConnectionAfterStop(self) -> None:
        """
        A delivery that ends after stopService closes its connection rather
        than parking it: nothing would close it later, and no timer is left.
        """
        finish: Deferred[dict[Recipient, Reply]] = Deferred()
        self.connect.answer = lambda client, message: finish
        sending = self.relay.deliver(envelope("a@one.test"), MessageBody("", 0, len(DATA), DATA))
        self.relay.startService()
        self.successResultOf(self.relay.stopService())
        [client] = self.connect.clients
        finish.callback({r: Reply(250, "2.0.0 ok") for r in client.sent[0].recipients})
        self.successResultOf(sending)
        self.assertEqual(client.quits, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idleConnectionNotSharedAcrossDomains(self) -> None:
        """A connection kept for one domain is not used for another."""
        self.deliver(envelope("a@one.test"))
        self.deliver(envelope("b@two.test", queueId="Q2"))
        self.assertEqual(len(self.connect.clients), 2)

    def test_lostIdleConnectionReplaced(self) -> None:
        """A reused connection that turns out dead is replaced by a new one to the hosts."""
        self.deliver(envelope("a@one.test"))
        [first] = self.connect.clients

        def dropped(client: FakeClient, message: OutboundMessage) -> dict[Recipient, Reply]:
            if client is first:
                client.usable = False
                return {r: Reply(421, "4.4.2 connection closed") for r in message.recipients}
            return accept(client, message)

        self.connect.answer = dropped
        [reply] = self.deliver(envelope("b@one.test", queueId="Q2")).values()
        self.assertEqual(reply.code, 250)
        self.assertEqual(len(self.connect.clients), 2)
        self.assertIn("reused connection lost", reply.detail)

    def test_unusableConnectionNotKept(self) -> None:
        """A connection left unusable by its transaction is closed, not kept."""

        def broken(client: FakeClient, message: OutboundMessage) -> dict[Recipient, Reply]:
            client.usable = False
            return {r: Reply(421, "4.4.2 timed out") for r in message.recipients}

        self.connect.answer = broken
        self.deliver(envelope("a@one.test"))
        self.connect.answer = accept
        self.deliver(envelope("b@one.test", queueId="Q2"))
        self.assertEqual(len(self.connect.clients), 2)
        self.assertEqual(self.connect.clients[0].quits, 1)

    def test_relayedReplyWithoutDSN(self) -> None:
        """A 2xx from a peer that did not take the DSN parameters is a RelayedReply."""
        original = self.connect.__call__

        def noDSN(host: Host, ip: str, port: int, policy: ClientPolicy) -> Deferred[Any]:
            d = original(host, ip, port, policy)
            self.connect.clients[-1].dsnPassed = False
            return d

        self.relay = RelayDelivery(
            finder=MXFinder(self.resolver, ["mx.example.com"]),
            connect=noDSN,
            policy=ClientPolicy(hostname="mx.example.com"),
            clock=self.clock,
            runner=None,  # type: ignore[arg-type]
        )
        [reply] = self.deliver(envelope("b@two.test")).values()
        self.assertIsInstance(reply, RelayedReply)
        self.assertEqual(reply.remote, "mx.two.test[2001:db8::2]")

    def test_plainReplyWithDSN(self) -> None:
        """A 2xx from a peer that took the DSN parameters is a plain Reply; a refusal is never relayed."""
        self.connect.answer = lambda c, m: {
            r: Reply(250, "2.0.0 ok") if "a@" in str(r.address) else Reply(550, "5.1.1 no")
            for r in m.recipients
        }
        replies = self.byAddress(self.deliver(envelope("a@one.test", "b@one.test")))
        self.assertIs(type(replies["a@one.test"]), Reply)
        self.assertIs(type(replies["b@one.test"]), Reply)
        self.assertEqual(replies["b@one.test"].remote, "mx1.one.test[192.0.2.1]")

    def test_remoteAndDetail(self) -> None:
        """Each reply names the server and explains the MX choice and the TLS outcome."""
        [reply] = self.deliver(envelope("a@one.test")).values()
        self.assertEqual(reply.remote, "mx1.one.test[192.0.2.1]")
        self.assertIn("MX by preference: mx1.one.test (10), mx2.one.test (20)", reply.detail)
        self.assertIn(f"mx1.one.test[192.0.2.1]: {describeTLS(TLS)}", reply.detail)

    def test_noRouteForEveryRecipientOfTheDomain(self) -> None:
        """A domain without a route gives its reply to each of its recipients, and only them."""
        replies = self.byAddress(self.deliver(envelope("x@null.test", "y@null.test", "a@one.test")))
        for who in ("x@null.test", "y@null.test"):
            self.assertEqual(replies[who].code, 556)
            self.assertIn("5.1.10", replies[who].text)
            self.assertIn("null MX", replies[who].detail)
        self.assertEqual(replies["a@one.test"].code, 250)
        self.assertEqual([c[0] for c in self.connect.calls], ["mx1.one.test"])

    def test_unknownDomain(self) -> None:
        """An NXDOMAIN domain is refused for good with 5.1.2, no connection made."""
        [reply] = self.deliver(envelope("x@nowhere.test")).values()
        self.assertEqual(reply.code, 550)
        self.assertIn("5.1.2", reply.text)
        self.assertEqual(self.connect.calls, [])

    def test_unexpectedErrorInOneDomain(self) -> None:
        """A delivery to one domain raising unexpectedly gives its recipients a temporary reply, and the error is logged."""
        original = self.connect.__call__

        def brokenForTwo(host: Host, ip: str, port: int, policy: ClientPolicy) -> Deferred[Any]:
            if host.name == "mx.two.test":
                raise ValueError("bad source address")
            return original(host, ip, port, policy)

        self.relay = RelayDelivery(
            finder=MXFinder(self.resolver, ["mx.example.com"]),
            connect=brokenForTwo,
            policy=ClientPolicy(hostname="mx.example.com"),
            clock=self.clock,
            runner=None,  # type: ignore[arg-type]
        )
        replies = self.byAddress(self.deliver(envelope("a@one.test", "b@two.test")))
        self.assertEqual(replies["a@one.test"].code, 250)
        self.assertIn("b@two.test", replies)
        self.assertTrue(replies["b@two.test"].isTemporary)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_smarthost(self) -> None:
        """With a smarthost every domain goes to it, on its port, without an MX lookup."""
        self.relay = self.makeRelay(Smarthost("127.0.0.1", 587))
        replies = self.deliver(envelope("a@one.test", "x@null.test", "z@nowhere.test"))
        self.assertEqual({r.code for r in replies.values()}, {250})
        self.assertEqual({c[:3] for c in self.connect.calls}, {("127.0.0.1", "127.0.0.1", 587)})
        self.assertEqual(self.resolver.queries, [])
        reply = next(iter(replies.values()))
        self.assertEqual(reply.remote, "127.0.0.1[127.0.0.1]")
        self.assertIn("smarthost 127.0.0.1", reply.detail)

    def test_smarthostByName(self) -> None:
        """A smarthost named by host name is looked up by address, not MX."""
        self.resolver.addresses["relay.isp.test"] = ["192.0.2.99"]
        self.relay = self.makeRelay(Smarthost("relay.isp.test", 25))
        [reply] = self.deliver(envelope("a@one.test")).values()
        self.assertEqual(self.connect.calls[0][:3], ("relay.isp.test", "192.0.2.99", 25))
        self.assertEqual(self.resolver.queries, [("A/AAAA", "relay.isp.test")])
        self.assertEqual(reply.code, 250)

    def test_smarthostNotFoundIsTemporary(self) -> None:
        """A smarthost name that does not resolve keeps the mail queued (4.4.3), never bounces it."""
        self.relay = self.makeRelay(Smarthost("typo.isp.test", 25))
        [reply] = self.deliver(envelope("a@one.test")).values()
        self.assertEqual(reply.code, 451)
        self.assertIn("4.4.3", reply.text)
        self.assertIn("typo.isp.test", reply.text)
        self.assertEqual(self.connect.calls, [])

    def test_perDomainLimit(self) -> None:
        """At most perDomain deliveries to one domain run at once; the rest wait their turn."""
        relay = RelayDelivery(
            finder=MXFinder(self.resolver, ["mx.example.com"]),
            connect=self.connect,
            policy=ClientPolicy(hostname="mx.example.com"),
            clock=self.clock,
            runner=None,  # type: ignore[arg-type]
            perDomain=1,
        )
        gate: Deferred[None] = Deferred()
        started: list[str] = []
        real = relay._deliverDomain

        def gated(domain: str, env: Envelope, rs: list[Recipient], data: bytes) -> Any:
            started.append(env.queueId)
            d = gate if len(started) == 1 else succeed(None)
            return d.addCallback(lambda _: real(domain, env, rs, data))

        relay._deliverDomain = gated  # type: ignore[method-assign]
        body = MessageBody("", 0, len(DATA), DATA)
        first = relay.deliver(envelope("a@one.test"), body)
        second = relay.deliver(envelope("b@one.test", queueId="Q2"), body)
        self.assertEqual(started, ["Q1"])
        gate.callback(None)
        self.assertEqual(started, ["Q1", "Q2"])
        self.successResultOf(first)
        self.successResultOf(second)


class SmarthostParseTests(SynchronousTestCase):
    """
    L{Smarthost.parse}.
    """

    def test_forms(self) -> None:
        """Host, host:port and [v6]:port are read, the port defaulting to 25."""
        self.assertEqual(Smarthost.parse("relay.test"), Smarthost("relay.test", 25))
        self.assertEqual(Smarthost.parse("relay.test:465"), Smarthost("relay.test", 465))
        self.assertEqual(Smarthost.parse("[::1]:587"), Smarthost("::1", 587))
        self.assertEqual(Smarthost.parse("[::1]"), Smarthost("::1", 25))


class TooManyTests(SynchronousTestCase):
    """
    Only "too many recipients" sends recipients on in the next transaction.
    """

    def test_kinds(self) -> None:
        """452 4.5.3 or a bare 452 is too many recipients; 452 4.2.2 (mailbox full) is not."""
        from mta.delivery.relay import _tooMany

        self.assertTrue(_tooMany(Reply(452, "4.5.3 Too many recipients")))
        self.assertTrue(_tooMany(Reply(452, "Too many recipients")))
        self.assertFalse(_tooMany(Reply(452, "4.2.2 Mailbox full")))
        self.assertFalse(_tooMany(Reply(451, "4.5.3 x")))
        self.assertFalse(_tooMany(None))
