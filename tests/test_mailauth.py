"""
Tests for L{mta.policy.authresults} (SPF, DKIM and DMARC together, the
Authentication-Results header, enforcement), L{Verdict.stripHeaders}
through the chain and the SMTP server, and C{[checks]}.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mta.config import ChecksConfig, LimitsConfig, loadConfig
from mta.directory.memory import MemoryDirectory
from mta.dns import Resolver
from mta.envelope import Address, Envelope, Recipient
from mta.errors import ConfigError
from mta.policy import authresults
from mta.policy.authresults import InboundChecks, MailAuthentication, authenticationResults
from mta.policy.base import ACCEPT, PolicyChain, PolicyCheck, Session, Verdict, stripHeaderFields
from mta.policy.chain import smtpPolicy
from mta.policy.dkimverify import DKIMResult
from mta.policy.dmarc import DMARCResult, loadPublicSuffixList
from mta.policy.spf import SPFResult
from mta.smtp.server import Mode, SMTPFactory
from mta.testing.fakes import AtOnceReactor, FakeResolver, HeldRunner, RecordingSink, TXTUpstream
from mta.threads import BlockingRunner
from tests.test_dkimverify import MESSAGE, rsaKey, sign

#: The global reactor, as the interfaces the checks ask for.
reactor = cast(Any, _reactor)
PSL = loadPublicSuffixList()
CLIENT = "192.0.2.10"
MX = Session(peer=CLIENT, listener="smtp", heloName="mail.example.test")


class HeaderTests(SynchronousTestCase):
    """
    L{authenticationResults}: the header text (RFC 8601).
    """

    def test_allPass(self) -> None:
        """
        One header: our authserv-id, then spf, dkim and dmarc with their properties.
        """
        header = authenticationResults(
            "mx.our.test",
            SPFResult(
                "pass", "mailfrom", "example.test", "a@example.test", "sender SPF authorized"
            ),
            [DKIMResult("pass", "example.test", "s1", "rsa-sha256", "AbCdEfGh")],
            DMARCResult("pass", "example.test", "reject", "none", 100, ("mailto:d@x.test",)),
        )
        self.assertEqual(
            header,
            "Authentication-Results: mx.our.test;\r\n"
            "\tspf=pass (sender SPF authorized) smtp.mailfrom=a@example.test;\r\n"
            "\tdkim=pass header.d=example.test header.s=s1 header.a=rsa-sha256 header.b=AbCdEfGh;\r\n"
            "\tdmarc=pass (p=reject dis=none rua=mailto:d@x.test) header.from=example.test",
        )

    def test_reasonsAreComments(self) -> None:
        """
        Reasons become comments without parentheses or line breaks; the
        HELO identity is smtp.helo; a message without checks says none.
        """
        header = authenticationResults(
            "mx",
            SPFResult("none", "helo", "h.test", "h.test", "a (b)\r\nc"),
            [DKIMResult("fail", "x.test", reason="body hash did not verify")],
            None,
        )
        self.assertIn("spf=none (a b c) smtp.helo=h.test;", header)
        self.assertIn("dkim=fail (body hash did not verify) header.d=x.test", header)
        self.assertEqual(
            authenticationResults("mx", None, [], None), "Authentication-Results: mx;\r\n\tnone"
        )

    def test_dmarcComment(self) -> None:
        """
        A failing DMARC result carries policy, disposition, pct and reason.
        """
        header = authenticationResults(
            "mx",
            None,
            [],
            DMARCResult("fail", "example.test", "reject", "quarantine", 40, (), reason="why"),
        )
        self.assertTrue(
            header.endswith(
                "dmarc=fail (p=reject dis=quarantine pct=40; why) header.from=example.test"
            )
        )


class StripTests(SynchronousTestCase):
    """
    L{stripHeaderFields}, L{PolicyChain} carrying C{stripHeaders}, and the
    server applying them.
    """

    def test_stripsOurs(self) -> None:
        """
        Fields claiming our authserv-id go, folded lines with them; others' stay.
        """
        data = (
            b"Authentication-Results: MX.our.test;\r\n\tdkim=pass header.d=bank.test\r\n"
            b"Subject: x\r\n"
            b"Authentication-Results: other.test; spf=pass\r\n"
            b"authentication-results: (forged) mx.our.test 1; dmarc=pass\r\n"
            b"\r\n"
            b"Authentication-Results: mx.our.test; in the body\r\n"
        )
        stripped = stripHeaderFields(data, [("Authentication-Results", "mx.our.test")])
        self.assertEqual(
            stripped,
            b"Subject: x\r\n"
            b"Authentication-Results: other.test; spf=pass\r\n"
            b"\r\n"
            b"Authentication-Results: mx.our.test; in the body\r\n",
        )

    def test_nothingToStrip(self) -> None:
        """
        Without pairs the message is returned as it is.
        """
        self.assertEqual(stripHeaderFields(MESSAGE, []), MESSAGE)

    def test_chainCarriesStrip(self) -> None:
        """
        The chain's answer keeps every accepting check's strip pairs.
        """

        class Strips(PolicyCheck):
            def checkMessage(self, session: Session, envelope: Envelope, data: bytes) -> Verdict:
                return Verdict(None, ("X-A: 1",), stripHeaders=(("Authentication-Results", "mx"),))

        envelope = Envelope("Q1", Address("a", "b.test"), (), 0.0)
        verdict = PolicyChain([Strips(), PolicyCheck()]).checkMessage(MX, envelope, b"")
        assert isinstance(verdict, Verdict)
        self.assertEqual(verdict.stripHeaders, (("Authentication-Results", "mx"),))

    def test_serverStrips(self) -> None:
        """
        The SMTP server removes the fields a verdict names before queueing
        and puts the verdict's headers on top.
        """

        class Strips(PolicyCheck):
            def checkMessage(self, session: Session, envelope: Envelope, data: bytes) -> Verdict:
                strip = (("Authentication-Results", "mx.our.test"),)
                return Verdict(
                    None, ("Authentication-Results: mx.our.test; none",), stripHeaders=strip
                )

        sink = RecordingSink()
        directory = MemoryDirectory(["our.test"], users={"bob@our.test": "x"})
        factory = SMTPFactory(
            mode=Mode.MX,
            hostname="mx.our.test",
            directory=directory,
            sink=sink,
            policy=PolicyChain([Strips()]),
            limits=LimitsConfig(),
            clock=Clock(),
        )
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport(peerAddress=cast(Any, None)))
        proto.dataReceived(
            b"EHLO c.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<bob@our.test>\r\nDATA\r\n"
            b"Authentication-Results: mx.our.test; dmarc=pass\r\nSubject: s\r\n\r\nhi\r\n.\r\n"
        )
        [(_, data)] = sink.messages
        self.assertEqual(data.count(b"Authentication-Results"), 1)
        self.assertIn(b"Authentication-Results: mx.our.test; none\r\nSubject: s\r\n", data)


class MailAuthenticationTests(TestCase):
    """
    The check as the chain builds it, over a L{FakeResolver}.
    """

    def setUp(self) -> None:
        self.resolver = FakeResolver()
        runner = BlockingRunner(reactor, 2, name="mailauth-test")
        runner.startService()
        self.addCleanup(runner.stopService)
        self.runner = runner
        self.private, record = rsaKey()
        self.resolver.txt["s1._domainkey.example.test"] = [record]
        self.resolver.txt["example.test"] = [b"v=spf1 ip4:192.0.2.10 -all"]
        self.draw = 0.5

    def inbound(self, config: ChecksConfig | None = None) -> InboundChecks:
        return InboundChecks(
            "mx.our.test",
            config or ChecksConfig(),
            self.resolver,
            reactor,
            self.runner,
            PSL,
            lambda: self.draw,
        )

    def chain(self, config: ChecksConfig | None = None) -> PolicyChain:
        directory = MemoryDirectory(["our.test"], users={"bob@our.test": "x"})
        inbound = self.inbound(config)
        trusted = [ipaddress.ip_network("198.51.100.0/24")]
        return smtpPolicy(directory, trusted, LimitsConfig(), Clock(), inbound=inbound)

    async def check(
        self,
        data: bytes,
        session: Session = MX,
        sender: str = "bounce@example.test",
        config: ChecksConfig | None = None,
    ) -> Verdict:
        local, _, domain = sender.partition("@")
        envelope = Envelope(
            "Q1",
            Address(local, domain),
            (Recipient(Address("bob", "our.test"), Address("bob", "our.test")),),
            0.0,
            clientAddress=session.peer,
            heloName=session.heloName,
        )
        answer = self.chain(config).checkMessage(session, envelope, data)
        if isinstance(answer, Verdict):
            return answer
        return await answer

    async def test_alignedPass(self) -> None:
        """
        A signed message from an aligned domain gets spf, dkim and dmarc
        pass in one header, and asks for forged ones to go.
        """
        self.resolver.txt["_dmarc.example.test"] = [b"v=DMARC1; p=reject"]
        verdict = await self.check(sign(MESSAGE, self.private))
        self.assertTrue(verdict.accepted)
        [header] = verdict.headers
        self.assertTrue(header.startswith("Authentication-Results: mx.our.test;\r\n\tspf=pass"))
        self.assertIn("dkim=pass header.d=example.test header.s=s1", header)
        self.assertIn(
            "dmarc=pass (p=reject dis=none; aligned DKIM pass) header.from=example.test", header
        )
        # No Authentication-Results arrived: nothing to strip.
        self.assertEqual(verdict.stripHeaders, ())
        # The results go on the transaction's one log line.
        self.assertEqual(
            verdict.logNote,
            "spf=pass dkim=pass:example.test dmarc=pass from=example.test policy=reject"
            " disposition=none rua= action=accept",
        )

    async def test_stripOnlyWhenPresent(self) -> None:
        """
        A message that arrives with an Authentication-Results field gets a
        verdict asking for those claiming our authserv-id to go.
        """
        self.resolver.txt["_dmarc.example.test"] = [b"v=DMARC1; p=reject"]
        forged = b"authentication-results: mx.our.test; dmarc=pass\r\n" + sign(
            MESSAGE, self.private
        )
        verdict = await self.check(forged)
        self.assertIn("dkim=pass", verdict.headers[0])
        self.assertEqual(verdict.stripHeaders, (("Authentication-Results", "mx.our.test"),))
        # In the body it is no field.
        body = sign(MESSAGE, self.private) + b"Authentication-Results: mx.our.test; x\r\n"
        self.assertEqual((await self.check(body)).stripHeaders, ())

    async def test_oneJobEachWay(self) -> None:
        """
        SPF, DKIM and DMARC of a message are one job: first with DNS from
        the cache alone, which a resolver without a cache cannot answer,
        then once more where lookups wait.
        """
        self.resolver.txt["_dmarc.example.test"] = [b"v=DMARC1; p=reject"]
        calls = []
        run = self.runner.run

        def counting(f: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(f.__name__)
            return run(f, *args, **kwargs)

        self.patch(self.runner, "run", counting)
        verdict = await self.check(sign(MESSAGE, self.private))
        self.assertIn("dmarc=pass", verdict.headers[0])
        self.assertEqual(calls, ["_checkCached", "_check"])

    async def test_brokenMechanism(self) -> None:
        """
        A mechanism that raises counts as temperror (and is logged); the
        others still give their results.
        """
        self.resolver.txt["_dmarc.example.test"] = [b"v=DMARC1; p=none"]

        def broken(message: bytes, txt: Any, keys: Any = None) -> Any:
            raise RuntimeError("dkimpy broke")

        self.patch(authresults, "verifyMessage", broken)
        verdict = await self.check(sign(MESSAGE, self.private))
        self.assertIn("dkim=temperror (verifier error)", verdict.headers[0])
        self.assertIn("spf=pass", verdict.headers[0])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_jobBroken(self) -> None:
        """
        When the job itself breaks, enforced checks answer 451 4.7.1, and
        checks that only report accept without a header.
        """

        def broken(*args: Any) -> Any:
            raise RuntimeError("bug")

        self.patch(authresults, "enforce", broken)
        verdict = await self.check(MESSAGE)
        assert verdict.reply is not None
        self.assertEqual((verdict.reply.code, verdict.reply.text[:5]), (451, "4.7.1"))
        report = ChecksConfig("check", "check", "check")
        self.assertEqual(
            await self.check(MESSAGE, config=report), Verdict(logNote="mailauth=temperror")
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    async def test_rejectForged(self) -> None:
        """
        A From of a p=reject domain without aligned pass is refused with 550 5.7.1.
        """
        self.resolver.txt["_dmarc.bank.test"] = [b"v=DMARC1; p=reject"]
        forged = MESSAGE.replace(b"alice@example.test", b"ceo@bank.test")
        verdict = await self.check(forged)
        assert verdict.reply is not None
        self.assertEqual(verdict.reply.code, 550)
        self.assertTrue(verdict.reply.text.startswith("5.7.1 Message rejected: bank.test DMARC"))

    async def test_quarantineJunk(self) -> None:
        """
        A p=quarantine failure is accepted, marked junk.
        """
        self.resolver.txt["_dmarc.bank.test"] = [b"v=DMARC1; p=quarantine"]
        verdict = await self.check(MESSAGE.replace(b"alice@example.test", b"ceo@bank.test"))
        self.assertEqual((verdict.accepted, verdict.junk), (True, True))
        self.assertIn("dmarc=fail (p=quarantine dis=quarantine;", verdict.headers[0])

    async def test_dmarcCheckOnly(self) -> None:
        """
        With dmarc = "check" a p=reject failure is only reported.
        """
        self.resolver.txt["_dmarc.bank.test"] = [b"v=DMARC1; p=reject"]
        forged = MESSAGE.replace(b"alice@example.test", b"ceo@bank.test")
        verdict = await self.check(forged, config=ChecksConfig(dmarc="check"))
        self.assertTrue(verdict.accepted)
        self.assertIn("dmarc=fail", verdict.headers[0])

    async def test_dnsFailureTemporary(self) -> None:
        """
        A DNS failure where p=reject would apply gives 451 4.7.1, not a pass.
        """
        self.resolver.txt["_dmarc.example.test"] = [b"v=DMARC1; p=reject"]
        self.resolver.failing.update({"example.test", "s1._domainkey.example.test"})
        verdict = await self.check(sign(MESSAGE, self.private))
        assert verdict.reply is not None
        self.assertEqual((verdict.reply.code, verdict.reply.text[:5]), (451, "4.7.1"))

    async def test_dnsFailureReported(self) -> None:
        """
        A DNS failure with checks that only report gives temperror results.
        """
        self.resolver.failing.update({"example.test", "s1._domainkey.example.test"})
        self.resolver.failing.add("_dmarc.example.test")
        verdict = await self.check(sign(MESSAGE, self.private))
        self.assertTrue(verdict.accepted)
        header = verdict.headers[0]
        for clause in ("spf=temperror", "dkim=temperror", "dmarc=temperror"):
            self.assertIn(clause, header)

    async def test_spfEnforced(self) -> None:
        """
        With spf = "enforce" an SPF fail is refused with 550 5.7.23.
        """
        verdict = await self.check(
            MESSAGE,
            session=Session(peer="203.0.113.5", listener="smtp"),
            config=ChecksConfig(spf="enforce"),
        )
        assert verdict.reply is not None
        self.assertEqual((verdict.reply.code, verdict.reply.text[:6]), (550, "5.7.23"))

    async def test_spfFailDMARCPass(self) -> None:
        """
        An enforced SPF fail is accepted when DMARC passes (aligned DKIM).
        """
        self.resolver.txt["_dmarc.example.test"] = [b"v=DMARC1; p=reject"]
        verdict = await self.check(
            sign(MESSAGE, self.private),
            session=Session(peer="203.0.113.5", listener="smtp"),
            config=ChecksConfig(spf="enforce"),
        )
        self.assertTrue(verdict.accepted)
        self.assertIn("spf=fail", verdict.headers[0])

    async def test_dkimEnforced(self) -> None:
        """
        With dkim = "enforce" a message whose only signature fails is refused (5.7.20).
        """
        tampered = sign(MESSAGE, self.private).replace(b"Hello Bob.", b"Hello Eve.")
        verdict = await self.check(tampered, config=ChecksConfig(dkim="enforce"))
        assert verdict.reply is not None
        self.assertEqual(verdict.reply.text[:6], "5.7.20")

    async def test_offWritesNothing(self) -> None:
        """
        With every mechanism off nothing is looked up and no header is written.
        """
        off = ChecksConfig(spf="off", dkim="off", dmarc="off")
        verdict = await self.check(MESSAGE, config=off)
        self.assertEqual((verdict.headers, self.resolver.queries), ((), []))

    async def test_notChecked(self) -> None:
        """
        Authenticated sessions, trusted networks and the submission
        listeners are not checked.
        """
        self.resolver.txt["_dmarc.bank.test"] = [b"v=DMARC1; p=reject"]
        forged = MESSAGE.replace(b"alice@example.test", b"ceo@bank.test")
        for session in (
            Session(peer=CLIENT, listener="smtp", authUser="bob@our.test"),
            Session(peer="198.51.100.7", listener="smtp"),
            Session(peer=CLIENT, listener="submission", tls=True, authUser="bob@our.test"),
        ):
            envelope = Envelope(
                "Q1", Address("ceo", "bank.test"), (), 0.0, clientAddress=session.peer
            )
            check = self.inbound().build(lambda ip: ip.startswith("198.51.100."))
            self.assertIs(check.checkMessage(session, envelope, forged), ACCEPT)
        self.assertEqual(self.resolver.queries, [])


class CachedFirstTests(SynchronousTestCase):
    """
    L{MailAuthentication} over a real L{Resolver}: a check runs first with
    DNS from the cache alone; only when an answer is not cached does it
    run again where lookups wait, and then the next message's needs none.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.upstream = TXTUpstream()
        self.resolver = Resolver(self.clock, upstream=cast(Any, self.upstream))
        self.cached = HeldRunner()
        self.waiting = HeldRunner()
        self.private, record = rsaKey()
        self.upstream.txt["s1._domainkey.example.test"] = (record.decode(), 300)
        self.upstream.txt["example.test"] = ("v=spf1 ip4:192.0.2.10 -all", 300)
        self.upstream.txt["_dmarc.example.test"] = ("v=DMARC1; p=reject", 300)

    def check(self, data: bytes, config: ChecksConfig | None = None) -> Verdict:
        """
        Check C{data} from L{CLIENT} as bounce@example.test, running what
        the runners hold.
        """
        check = MailAuthentication(
            hostname="mx.our.test",
            config=config or ChecksConfig(),
            resolver=self.resolver,
            reactor=cast(Any, AtOnceReactor()),
            runner=self.cached,
            isTrusted=lambda ip: False,
            psl=PSL,
            waitingRunner=self.waiting,
        )
        envelope = Envelope(
            "Q1",
            Address("bounce", "example.test"),
            (Recipient(Address("bob", "our.test"), Address("bob", "our.test")),),
            0.0,
            clientAddress=CLIENT,
            heloName=MX.heloName,
        )
        answer = check.checkMessage(MX, envelope, data)
        assert isinstance(answer, Deferred)
        self.cached.runAll()
        self.waiting.runAll()
        return self.successResultOf(answer)

    def test_missThenCached(self) -> None:
        """
        The first message's answers are not cached: its check is dropped
        and run again where lookups wait.  The second message's check is
        answered from the cache alone: one job, no lookup upstream, the
        same results.
        """
        calls: list[str] = []
        for runner, name in ((self.cached, "cached"), (self.waiting, "waiting")):
            self.patch(runner, "run", _counting(runner.run, calls, name))
        first = self.check(sign(MESSAGE, self.private))
        self.assertEqual(calls, ["cached", "waiting"])
        asked = self.upstream.queries
        self.assertGreater(asked, 0)
        del calls[:]
        second = self.check(sign(MESSAGE, self.private))
        self.assertEqual(calls, ["cached"])
        self.assertEqual(self.upstream.queries, asked)
        self.assertEqual(second.logNote, first.logNote)
        self.assertIn("dkim=pass", second.headers[0])
        self.assertIn("dmarc=pass", second.headers[0])
        # Once the answers expire, the cache cannot answer again.
        self.clock.advance(301)
        del calls[:]
        self.check(sign(MESSAGE, self.private))
        self.assertEqual(calls, ["cached", "waiting"])

    def test_swallowedMissWaits(self) -> None:
        """
        A miss that the library swallows (pyspf ignores any error while it
        fetches an C{exp=} explanation) still sends the check to wait: the
        refusal carries the explanation, which a check from the cache alone
        would have lacked.
        """
        self.upstream.txt["example.test"] = ("v=spf1 -all exp=why.example.test", 300)
        # Never cached (TTL 0): every check must look it up.
        self.upstream.txt["why.example.test"] = ("%{i} may not send for %{d}", 0)
        config = ChecksConfig(spf="enforce", dkim="off", dmarc="off")
        calls: list[str] = []
        for runner, name in ((self.cached, "cached"), (self.waiting, "waiting")):
            self.patch(runner, "run", _counting(runner.run, calls, name))
        self.check(MESSAGE, config)
        del calls[:]
        verdict = self.check(MESSAGE, config)
        self.assertEqual(calls, ["cached", "waiting"])
        assert verdict.reply is not None
        self.assertEqual(verdict.reply.code, 550)
        self.assertIn("192.0.2.10 may not send for example.test", verdict.reply.text)


def _counting(run: Any, calls: list[str], name: str) -> Any:
    """
    @return: C{run}, noting C{name} in C{calls} each time it is called.
    """

    def counting(f: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return run(f, *args, **kwargs)

    return counting


class ChecksConfigTests(SynchronousTestCase):
    """
    The C{[checks]} section.
    """

    def load(self, text: str) -> ChecksConfig:
        path = Path(self.mktemp())
        path.write_text('hostname = "mx.our.test"\ndomains = ["our.test"]\n' + text)
        return loadConfig(path).checks

    def test_defaults(self) -> None:
        """
        SPF and DKIM are checked, DMARC enforced, by default.
        """
        self.assertEqual(self.load(""), ChecksConfig("check", "check", "enforce"))

    def test_values(self) -> None:
        """
        Each mechanism takes off, check or enforce.
        """
        checks = self.load('[checks]\nspf = "enforce"\ndkim = "off"\ndmarc = "check"\n')
        self.assertEqual(checks, ChecksConfig("enforce", "off", "check"))

    def test_badValue(self) -> None:
        """
        Another value or an unknown key stops with a line naming the key.
        """
        e = self.assertRaises(ConfigError, self.load, '[checks]\ndmarc = "strict"\n')
        self.assertIn("checks.dmarc", str(e))
        e = self.assertRaises(ConfigError, self.load, '[checks]\narc = "check"\n')
        self.assertIn("checks.arc", str(e))
