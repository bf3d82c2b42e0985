"""
Tests for L{mta.policy}: the chain and each check on its own.
"""

from __future__ import annotations

import email.utils
import ipaddress
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mta.directory.memory import MemoryDirectory
from mta.envelope import Address, Envelope
from mta.errors import Reply
from mta.interfaces import IPolicyCheck
from mta.policy.base import ACCEPT, PolicyChain, PolicyCheck, Session, Verdict
from mta.policy.limits import SenderRateLimit
from mta.policy.relayaccess import RelayAccess
from mta.policy.sender import SenderOwnership, fromAddresses

REMOTE = Session(peer="192.0.2.7", listener="smtp")
ALICE = Session(peer="192.0.2.7", listener="submission", tls=True, authUser="alice@example.com")
NO = Reply(550, "5.7.1 no")


class _Answer(PolicyCheck):
    """
    Answers every sender check with a fixed verdict (or Deferred).
    """

    def __init__(self, answer: Verdict | Deferred[Verdict]) -> None:
        self.answer = answer
        self.asked = 0

    def checkSender(self, session: Session, sender: Address) -> Verdict | Deferred[Verdict]:
        self.asked += 1
        return self.answer


class ChainTests(SynchronousTestCase):
    """
    L{PolicyChain}.
    """

    def test_interface(self) -> None:
        """The chain and every check provide IPolicyCheck."""
        directory = MemoryDirectory(["example.com"])
        for check in (
            PolicyChain(),
            RelayAccess(directory, []),
            SenderRateLimit(Clock(), 1),
            SenderOwnership(directory),
        ):
            self.assertTrue(verifyObject(IPolicyCheck, check))

    def test_firstRefusalWins(self) -> None:
        """A refusal stops the chain: later checks are not asked."""
        later = _Answer(ACCEPT)
        chain = PolicyChain([_Answer(Verdict(None, ("X-A: 1",))), _Answer(Verdict(NO)), later])
        self.assertEqual(chain.checkSender(REMOTE, Address("a", "b.test")), Verdict(NO))
        self.assertEqual(later.asked, 0)

    def test_headersGathered(self) -> None:
        """Headers of accepting checks are gathered in order, also across a Deferred."""
        d: Deferred[Verdict] = Deferred()
        chain = PolicyChain(
            [_Answer(Verdict(None, ("X-A: 1",))), _Answer(d), _Answer(Verdict(None, ("X-C: 3",)))]
        )
        answer = chain.checkSender(REMOTE, Address("a", "b.test"))
        assert isinstance(answer, Deferred)
        self.assertNoResult(answer)
        d.callback(Verdict(None, ("X-B: 2",)))
        self.assertEqual(self.successResultOf(answer).headers, ("X-A: 1", "X-B: 2", "X-C: 3"))

    def test_junkKept(self) -> None:
        """One check asking for Junk is enough, also across a Deferred."""
        d: Deferred[Verdict] = Deferred()
        chain = PolicyChain([_Answer(Verdict(None, (), junk=True)), _Answer(d)])
        answer = chain.checkSender(REMOTE, Address("a", "b.test"))
        assert isinstance(answer, Deferred)
        d.callback(Verdict(None, ("X-B: 2",)))
        verdict = self.successResultOf(answer)
        self.assertEqual((verdict.junk, verdict.headers), (True, ("X-B: 2",)))

    def test_logNotesGathered(self) -> None:
        """
        Log notes are gathered in order, across a Deferred, and kept with a
        refusal (the transaction's log line says what the checks found).
        """
        d: Deferred[Verdict] = Deferred()
        chain = PolicyChain([_Answer(Verdict(logNote="a=1")), _Answer(d), _Answer(ACCEPT)])
        answer = chain.checkSender(REMOTE, Address("a", "b.test"))
        assert isinstance(answer, Deferred)
        d.callback(Verdict(logNote="b=2"))
        self.assertEqual(self.successResultOf(answer).logNote, "a=1 b=2")
        refusing = PolicyChain(
            [_Answer(Verdict(logNote="a=1")), _Answer(Verdict(NO, logNote="b=2"))]
        )
        self.assertEqual(
            refusing.checkSender(REMOTE, Address("a", "b.test")), Verdict(NO, logNote="a=1 b=2")
        )

    def test_synchronousWhenEveryCheckIs(self) -> None:
        """With every check answering at once, the chain answers at once (no Deferred)."""
        chain = PolicyChain([_Answer(ACCEPT), _Answer(ACCEPT)])
        self.assertIs(chain.checkSender(REMOTE, Address("a", "b.test")), ACCEPT)


class RelayAccessTests(SynchronousTestCase):
    """
    L{RelayAccess}: no open relay.
    """

    def setUp(self) -> None:
        self.check = RelayAccess(
            MemoryDirectory(["example.com"]), [ipaddress.ip_network("10.0.0.0/8")]
        )

    def test_rules(self) -> None:
        """Local domains for anyone; others only when logged in or trusted."""
        local, far = Address("a", "example.com"), Address("b", "far.test")
        sender = Address("x", "y.test")
        self.assertTrue(self.check.checkRecipient(REMOTE, sender, local).accepted)
        self.assertEqual(self.check.checkRecipient(REMOTE, sender, far).reply.code, 554)  # type: ignore[union-attr]
        self.assertTrue(self.check.checkRecipient(ALICE, sender, far).accepted)
        trusted = Session(peer="10.1.2.3", listener="smtp")
        self.assertTrue(self.check.checkRecipient(trusted, sender, far).accepted)
        self.assertFalse(self.check.isTrusted("not an address"))


class SenderTests(SynchronousTestCase):
    """
    L{fromAddresses} reads every address of every From header.
    """

    def test_fromAddresses(self) -> None:
        """Folded, several and grouped From headers are read; none is []."""
        data = b"From: A <a@x.test>,\r\n  b@y.test\r\nFrom: c@z.test\r\nSubject: s\r\n\r\nFrom: no@body\r\n"
        self.assertEqual(fromAddresses(data), ["a@x.test", "b@y.test", "c@z.test"])
        self.assertEqual(fromAddresses(b"Subject: s\r\n\r\n"), [])
        self.assertIsNone(fromAddresses(b"From: (just a comment)\r\n\r\n"))

    @given(
        st.tuples(
            st.lists(
                st.sampled_from([*' \t"():;<@.\\\u00e9', "Jo", "Jo,", "=?utf-8?q?x?="]), max_size=3
            ),
            st.sampled_from(["<{}>", "{}", "<{}", "{}>", "<<{}>>"]),
            st.sampled_from(["a@x.test", "a.b+c@x-y.test", "a..b@x.test", "a@x", "@x.test", "a@"]),
            st.lists(st.sampled_from([*" \t,;:()>", "b@y.test", "Jo"]), max_size=2),
        ).map(lambda p: "".join(p[0]) + p[1].format(p[2]) + "".join(p[3]))
    )
    @settings(max_examples=500)
    def test_shortCutAgreesWithEmail(self, value: str) -> None:
        """
        Whatever a From value holds, the addresses read are those
        C{email.utils.getaddresses} reads (the short cut for plain
        addresses included).
        """
        pairs = email.utils.getaddresses([value])
        expected = [addr for _, addr in pairs if addr] or None
        data = b"From:" + value.encode("utf-8") + b"\r\n\r\n"
        self.assertEqual(fromAddresses(data), expected)

    def test_plainForms(self) -> None:
        """
        The plain forms the short cut takes; and every combination of a few
        display names, brackets, addresses and endings reads as
        C{getaddresses} reads it.
        """
        for value, address in [
            (b" a@x.test", "a@x.test"),
            (b" <a.b+c@x.test> ", "a.b+c@x.test"),
            (b" Jo Smith\t<jo@x.test>", "jo@x.test"),
            (b' "Smith, Jo" <jo@x.test>', "jo@x.test"),
        ]:
            self.assertEqual(fromAddresses(b"From:" + value + b"\r\n\r\n"), [address])
        for pre, form, address, post in itertools.product(
            [
                "",
                "Jo",
                "Jo ",
                "Jo,",
                "Jo\t",
                '"Jo" ',
                "(c) ",
                "Jo.",
                "\u00e9 ",
                "a:",
                "=?utf-8?q?J?= ",
            ],
            ["<{}>", "{}", "<{}", "{}>"],
            ["a@x.test", "a.b+c@x-y.test", "a..b@x.test", "a@x", "@x.test", "a@", "a@[1.2.3.4]"],
            ["", " ", "\t", ",", " (c)", ",b@y.test", ";"],
        ):
            text = pre + form.format(address) + post
            expected = [addr for _, addr in email.utils.getaddresses([text]) if addr] or None
            self.assertEqual(fromAddresses(f"From: {text}\r\n\r\n".encode()), expected, text)

    def test_envelopeUnaffectedWithoutLogin(self) -> None:
        """Sessions without a login are not this check's business."""
        check = SenderOwnership(MemoryDirectory(["example.com"]))
        envelope = Envelope("Q1", Address("x", "y.test"), (), 0.0)
        self.assertTrue(check.checkMessage(REMOTE, envelope, b"From: anyone@else\r\n\r\n").accepted)
