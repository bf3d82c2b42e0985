"""
Tests for L{mta.delivery.mx}: which hosts take a domain's mail, in what
order, and why.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mta.delivery.mx import Host, HostPlan, MXFinder, NoRoute, orderMX
from mta.dns import MXRecord
from mta.testing.fakes import FakeResolver


def noShuffle(records: list[MXRecord]) -> None:
    """
    Leave equal-preference hosts in name order.
    """


def reverse(records: list[MXRecord]) -> None:
    """
    Turn equal-preference hosts around (a stand-in for chance).
    """
    records.reverse()


class MXFinderTests(SynchronousTestCase):
    """
    L{MXFinder.findHosts}.
    """

    def setUp(self) -> None:
        self.dns = FakeResolver(
            mx={
                "example.test": [(20, "mx2.example.test"), (10, "mx1.example.test")],
                "nullmx.test": [(0, ".")],
                "self.test": [(10, "mail.here.test"), (5, "backup.self.test")],
                "onlyme.test": [(10, "mail.here.test"), (20, "other.test")],
                "gone.test": [(10, "nowhere.test")],
            },
            addresses={
                "mx1.example.test": ["192.0.2.1", "2001:db8::1"],
                "mx2.example.test": ["192.0.2.2"],
                "implicit.test": ["192.0.2.9"],
                "backup.self.test": ["192.0.2.5"],
                "other.test": ["192.0.2.6"],
                "v6only.test": ["2001:db8::6"],
            },
            failing={"broken.test"},
        )
        self.finder = MXFinder(self.dns, ["mail.here.test"], shuffle=noShuffle)

    def plan(self, domain: str, finder: MXFinder | None = None) -> HostPlan:
        return self.successResultOf((finder or self.finder).findHosts(domain))

    def refusal(self, domain: str, finder: MXFinder | None = None) -> str:
        failure = self.failureResultOf((finder or self.finder).findHosts(domain), NoRoute)
        return str(failure.value.reply)

    def test_byPreference(self) -> None:
        """Hosts come lowest preference first, each with IPv6 before IPv4."""
        plan = self.plan("example.test")
        self.assertEqual(
            plan.hosts,
            [
                Host("mx1.example.test", 10, ("2001:db8::1", "192.0.2.1")),
                Host("mx2.example.test", 20, ("192.0.2.2",)),
            ],
        )
        self.assertIn("mx1.example.test (10)", plan.notes[0])

    def test_family(self) -> None:
        """address_family restricts the addresses tried."""
        finder = MXFinder(self.dns, [], family="ipv4", shuffle=noShuffle)
        self.assertEqual(self.plan("example.test", finder).hosts[0].addresses, ("192.0.2.1",))

    def test_implicitMX(self) -> None:
        """A domain without MX records is its own mail host."""
        plan = self.plan("implicit.test")
        self.assertEqual(plan.hosts, [Host("implicit.test", 0, ("192.0.2.9",))])
        self.assertIn("implicit MX", plan.notes[0])

    def test_nullMX(self) -> None:
        """A null MX fails at once, for good, with 5.1.10."""
        self.assertTrue(self.refusal("nullmx.test").startswith("556 5.1.10"))

    def test_nxdomain(self) -> None:
        """A domain that does not exist fails for good with 5.1.2."""
        self.assertTrue(self.refusal("nosuch.test").startswith("550 5.1.2"))

    def test_servfail(self) -> None:
        """A DNS failure is temporary, and the note says which lookup failed how."""
        self.assertTrue(self.refusal("broken.test").startswith("451 4.4.3"))
        failure = self.failureResultOf(self.finder.findHosts("broken.test"), NoRoute)
        self.assertEqual(failure.value.notes, ["DNS MX lookup of broken.test: SERVFAIL"])

    def test_selfDropsLessPreferred(self) -> None:
        """Hosts not preferred over this server's own MX are dropped (RFC 5321 5.1)."""
        plan = self.plan("self.test")
        self.assertEqual([h.name for h in plan.hosts], ["backup.self.test"])
        self.assertIn("is this server", plan.notes[0])

    def test_loopBack(self) -> None:
        """When this server is the best MX, the mail loops: 5.4.6."""
        self.assertTrue(self.refusal("onlyme.test").startswith("554 5.4.6"))

    def test_hostWithoutAddress(self) -> None:
        """An MX host whose name does not resolve leaves no host: a temporary failure."""
        self.assertTrue(self.refusal("gone.test").startswith("451 4.4.4"))

    def test_implicitWithoutAddress(self) -> None:
        """A domain with neither MX nor address has no mail host: permanent."""
        self.dns.addresses["bare.test"] = []
        self.assertTrue(self.refusal("bare.test").startswith("550 5.1.2"))

    def test_hostPlanLiteral(self) -> None:
        """A smarthost given as an address needs no lookup."""
        plan = self.successResultOf(self.finder.hostPlan("[192.0.2.77]"))
        self.assertEqual(plan.hosts, [Host("192.0.2.77", 0, ("192.0.2.77",))])
        self.assertEqual(self.dns.queries, [])

    def test_hostPlanName(self) -> None:
        """A smarthost given by name is looked up as a host, not as a domain's MX."""
        plan = self.successResultOf(self.finder.hostPlan("mx2.example.test"))
        self.assertEqual(plan.hosts, [Host("mx2.example.test", 0, ("192.0.2.2",))])
        self.assertEqual(self.dns.queries, [("A/AAAA", "mx2.example.test")])


class OrderTests(SynchronousTestCase):
    """
    L{orderMX}.
    """

    def test_equalPreferenceShuffled(self) -> None:
        """Only hosts of equal preference are reordered."""
        records = [MXRecord(10, "b"), MXRecord(5, "z"), MXRecord(10, "a"), MXRecord(20, "c")]
        self.assertEqual([r.exchange for r in orderMX(records, reverse)], ["z", "b", "a", "c"])
        self.assertEqual([r.exchange for r in orderMX(records, noShuffle)], ["z", "a", "b", "c"])
