"""
The DMARC matrix through the inbound check (L{mta.policy.authresults}),
with real SPF (pyspf) and DKIM (dkimpy, messages signed here by dkimpy
called directly) over a L{FakeResolver}: aligned or not x SPF pass or
fail x DKIM pass or fail x p=none/quarantine/reject x pct 0/100 x the
From domain itself (C{p}) or a subdomain (C{sp}), asserting the
disposition (accept, Junk, 550) and the Authentication-Results text; and
relaxed against strict alignment for both C{adkim} and C{aspf}.
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.trial.unittest import TestCase

from mta.config import ChecksConfig
from mta.envelope import Address, Envelope, Recipient
from mta.policy.authresults import InboundChecks
from mta.policy.base import Session, Verdict
from mta.policy.dmarc import loadPublicSuffixList
from mta.testing.fakes import FakeResolver
from mta.threads import BlockingRunner
from tests.test_dkimverify import rsaKey, sign

#: The global reactor, as the interfaces the checks ask for.
reactor = cast(Any, _reactor)
PSL = loadPublicSuffixList()

#: The address SPF allows for every domain here; another one fails.
ALLOWED = "192.0.2.10"
REFUSED = "203.0.113.5"
OTHER_POLICY = {"none": "reject", "quarantine": "none", "reject": "none"}
MILDER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


@cache
def key(domain: str) -> tuple[bytes, bytes]:
    """
    @return: the private key and key record of C{domain} (one per run).
    """
    return rsaKey()


def message(fromAddress: str) -> bytes:
    """
    @return: a message from C{fromAddress}.
    """
    return (
        f"From: Alice <{fromAddress}>\r\nTo: bob@our.test\r\nSubject: matrix\r\n"
        f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m@x.test>\r\n\r\nHello Bob.\r\n"
    ).encode()


class MatrixTestCase(TestCase):
    """
    Runs one message through L{MailAuthentication} with the default
    C{[checks]} (SPF and DKIM checked, DMARC enforced).
    """

    def setUp(self) -> None:
        self.resolver = FakeResolver()
        runner = BlockingRunner(reactor, 2, name="dmarc-matrix")
        runner.startService()
        self.addCleanup(runner.stopService)
        self.runner = runner
        self.draw = 0.5
        for domain in ("example.test", "mail.example.test", "other.test"):
            self.resolver.txt[f"s1._domainkey.{domain}"] = [key(domain)[1]]
            self.resolver.txt[domain] = [f"v=spf1 ip4:{ALLOWED} -all".encode()]

    def publish(self, domain: str, record: str) -> None:
        self.resolver.txt[f"_dmarc.{domain}"] = [record.encode()]

    async def check(
        self, data: bytes, sender: str, client: str, config: ChecksConfig | None = None
    ) -> Verdict:
        checks = InboundChecks(
            "mx.our.test",
            config or ChecksConfig(),
            self.resolver,
            reactor,
            self.runner,
            PSL,
            lambda: self.draw,
        ).build(lambda ip: False)
        local, _, domain = sender.partition("@")
        bob = Address("bob", "our.test")
        envelope = Envelope(
            "Q1",
            Address(local, domain),
            (Recipient(bob, bob),),
            0.0,
            clientAddress=client,
            heloName="mail.example.test",
        )
        session = Session(peer=client, listener="smtp", heloName="mail.example.test")
        answer = checks.checkMessage(session, envelope, data)
        return answer if isinstance(answer, Verdict) else await answer

    def signed(self, fromAddress: str, domain: str, passes: bool) -> bytes:
        """
        @return: a message from C{fromAddress} signed by C{domain}; its
            body changed after signing unless it C{passes}.
        """
        data = sign(message(fromAddress), key(domain)[0], domain=domain)
        return data if passes else data.replace(b"Hello Bob.", b"Hello Eve.")


class DMARCMatrixTests(MatrixTestCase):
    """
    One test per cell of the matrix (added below).
    """

    async def cell(
        self, aligned: bool, spfPass: bool, dkimPass: bool, policy: str, pct: int, sub: bool
    ) -> None:
        fromDomain = "sub.example.test" if sub else "example.test"
        if sub:
            record = f"v=DMARC1; p={OTHER_POLICY[policy]}; sp={policy}"
        else:
            record = f"v=DMARC1; p={policy}; sp={OTHER_POLICY[policy]}"
        if pct != 100:
            record += f"; pct={pct}"
        self.publish("example.test", record)
        # The edges of sampling: 0.0 is not under pct=0, 0.99 is under 100.
        self.draw = 0.0 if pct == 0 else 0.99
        identifier = "example.test" if aligned else "other.test"
        data = self.signed(f"alice@{fromDomain}", identifier, dkimPass)
        sender = f"bounce@{identifier}"
        verdict = await self.check(data, sender, ALLOWED if spfPass else REFUSED)

        passed = aligned and (spfPass or dkimPass)
        disposition = "none" if passed else (policy if pct == 100 else MILDER[policy])
        if disposition == "reject":
            assert verdict.reply is not None
            self.assertEqual(verdict.reply.code, 550)
            self.assertEqual(
                verdict.reply.text,
                f"5.7.1 Message rejected: {fromDomain} DMARC policy is reject:"
                " no aligned SPF or DKIM pass",
            )
            self.assertEqual(verdict.headers, ())
            return
        self.assertIsNone(verdict.reply)
        self.assertEqual(verdict.junk, disposition == "quarantine")
        [header] = verdict.headers
        self.assertTrue(header.startswith("Authentication-Results: mx.our.test;\r\n\t"), header)
        clauses = header.split(";\r\n\t")[1:]
        self.assertEqual(len(clauses), 3, header)
        spfClause, dkimClause, dmarcClause = clauses
        self.assertTrue(spfClause.startswith(f"spf={'pass' if spfPass else 'fail'} ("), spfClause)
        self.assertTrue(spfClause.endswith(f" smtp.mailfrom={sender}"), spfClause)
        if dkimPass:
            self.assertTrue(
                dkimClause.startswith(
                    f"dkim=pass header.d={identifier} header.s=s1 header.a=rsa-sha256 header.b="
                ),
                dkimClause,
            )
        else:
            self.assertTrue(
                dkimClause.startswith(
                    f"dkim=fail (body hash did not verify) header.d={identifier} header.s=s1"
                ),
                dkimClause,
            )
        words = f"p={policy} dis={disposition}" + ("" if pct == 100 else f" pct={pct}")
        if passed:
            reason = "aligned DKIM pass" if dkimPass else "aligned SPF pass"
        else:
            reason = "no aligned SPF or DKIM pass"
            if pct != 100:
                # The reason's parentheses are dropped inside the comment.
                reason += f" not sampled by pct={pct}"
        self.assertEqual(
            dmarcClause,
            f"dmarc={'pass' if passed else 'fail'} ({words}; {reason}) header.from={fromDomain}",
        )


def _addCells() -> None:
    for aligned, spfPass, dkimPass, policy, pct, sub in itertools.product(
        (True, False),
        (True, False),
        (True, False),
        ("none", "quarantine", "reject"),
        (0, 100),
        (False, True),
    ):
        name = "_".join(
            [
                "test",
                "aligned" if aligned else "unaligned",
                "spfPass" if spfPass else "spfFail",
                "dkimPass" if dkimPass else "dkimFail",
                policy,
                f"pct{pct}",
                "sp" if sub else "p",
            ]
        )

        async def test(
            self: DMARCMatrixTests,
            args: tuple[Any, ...] = (aligned, spfPass, dkimPass, policy, pct, sub),
        ) -> None:
            await self.cell(*args)

        test.__name__ = name
        test.__doc__ = (
            f"{'Aligned' if aligned else 'Unaligned'} identifiers, SPF"
            f" {'pass' if spfPass else 'fail'}, DKIM {'pass' if dkimPass else 'fail'},"
            f" {'sp' if sub else 'p'}={policy}, pct={pct}."
        )
        setattr(DMARCMatrixTests, name, test)


_addCells()


class AlignmentModeTests(MatrixTestCase):
    """
    adkim and aspf, relaxed (the default) and strict, with p=reject: the
    From domain is example.test, the passing identifier mail.example.test
    (same organisational domain) or example.test itself.
    """

    async def outcome(
        self, record: str, dkimDomain: str | None, spfDomain: str | None
    ) -> tuple[int | None, str]:
        """
        @param dkimDomain: the domain of a passing signature, or L{None}
            for a failing one by other.test.
        @param spfDomain: the MAIL FROM domain of an SPF pass, or L{None}
            for an SPF fail of other.test.
        @return: the reply code (L{None} when accepted) and the dmarc
            clause (C{""} when refused).
        """
        self.publish("example.test", record)
        if dkimDomain is None:
            data = self.signed("alice@example.test", "other.test", False)
        else:
            data = self.signed("alice@example.test", dkimDomain, True)
        sender = f"bounce@{spfDomain or 'other.test'}"
        verdict = await self.check(data, sender, ALLOWED if spfDomain else REFUSED)
        if verdict.reply is not None:
            return verdict.reply.code, ""
        [header] = verdict.headers
        return None, header.split(";\r\n\t")[-1]

    async def test_relaxedDKIM(self) -> None:
        """
        Without adkim (relaxed), a signature of a subdomain of the
        organisational domain aligns.
        """
        code, clause = await self.outcome("v=DMARC1; p=reject", "mail.example.test", None)
        self.assertEqual(
            (code, clause),
            (None, "dmarc=pass (p=reject dis=none; aligned DKIM pass) header.from=example.test"),
        )

    async def test_explicitRelaxedDKIM(self) -> None:
        """
        adkim=r is the same as the default.
        """
        code, _ = await self.outcome("v=DMARC1; p=reject; adkim=r", "mail.example.test", None)
        self.assertIsNone(code)

    async def test_strictDKIMSubdomain(self) -> None:
        """
        adkim=s: a subdomain's signature does not align: 550.
        """
        code, _ = await self.outcome("v=DMARC1; p=reject; adkim=s", "mail.example.test", None)
        self.assertEqual(code, 550)

    async def test_strictDKIMExact(self) -> None:
        """
        adkim=s: the From domain's own signature aligns.
        """
        code, clause = await self.outcome("v=DMARC1; p=reject; adkim=s", "example.test", None)
        self.assertEqual((code, "aligned DKIM pass" in clause), (None, True))

    async def test_relaxedSPF(self) -> None:
        """
        Without aspf (relaxed), a MAIL FROM subdomain's SPF pass aligns.
        """
        code, clause = await self.outcome("v=DMARC1; p=reject", None, "mail.example.test")
        self.assertEqual(
            (code, clause),
            (None, "dmarc=pass (p=reject dis=none; aligned SPF pass) header.from=example.test"),
        )

    async def test_explicitRelaxedSPF(self) -> None:
        """
        aspf=r is the same as the default.
        """
        code, _ = await self.outcome("v=DMARC1; p=reject; aspf=r", None, "mail.example.test")
        self.assertIsNone(code)

    async def test_strictSPFSubdomain(self) -> None:
        """
        aspf=s: a MAIL FROM subdomain's SPF pass does not align: 550.
        """
        code, _ = await self.outcome("v=DMARC1; p=reject; aspf=s", None, "mail.example.test")
        self.assertEqual(code, 550)

    async def test_strictSPFExact(self) -> None:
        """
        aspf=s: an SPF pass of the From domain itself aligns.
        """
        code, clause = await self.outcome("v=DMARC1; p=reject; aspf=s", None, "example.test")
        self.assertEqual((code, "aligned SPF pass" in clause), (None, True))

    async def test_strictDKIMRelaxedSPF(self) -> None:
        """
        The modes are separate: adkim=s with aspf relaxed passes on SPF
        when both identifiers are subdomains.
        """
        record = "v=DMARC1; p=reject; adkim=s"
        code, clause = await self.outcome(record, "mail.example.test", "mail.example.test")
        self.assertEqual((code, "aligned SPF pass" in clause), (None, True))

    async def test_strictSPFRelaxedDKIM(self) -> None:
        """
        aspf=s with adkim relaxed passes on DKIM when both are subdomains.
        """
        record = "v=DMARC1; p=reject; aspf=s"
        code, clause = await self.outcome(record, "mail.example.test", "mail.example.test")
        self.assertEqual((code, "aligned DKIM pass" in clause), (None, True))

    async def test_bothStrictSubdomains(self) -> None:
        """
        adkim=s and aspf=s: two subdomain passes align with nothing: 550.
        """
        record = "v=DMARC1; p=reject; adkim=s; aspf=s"
        code, _ = await self.outcome(record, "mail.example.test", "mail.example.test")
        self.assertEqual(code, 550)

    async def test_strictQuarantineToJunk(self) -> None:
        """
        A strict-alignment failure under p=quarantine is accepted for Junk.
        """
        self.publish("example.test", "v=DMARC1; p=quarantine; adkim=s; aspf=s")
        data = self.signed("alice@example.test", "mail.example.test", True)
        verdict = await self.check(data, "bounce@mail.example.test", ALLOWED)
        self.assertEqual((verdict.accepted, verdict.junk), (True, True))
        self.assertIn(
            "dmarc=fail (p=quarantine dis=quarantine; no aligned SPF or DKIM pass)",
            verdict.headers[0],
        )
