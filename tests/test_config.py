"""
Tests for L{mta.config}: loading and validating the TOML file.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mta.config import Config, loadConfig
from mta.errors import ConfigError

BASE = """\
hostname = "mail.example.com"
data_dir = "data"
domains = ["example.com"]
"""


class ConfigTestCase(SynchronousTestCase):
    """
    Loads config text through L{loadConfig}, from a file in a temporary folder.
    """

    def load(self, text: str) -> Config:
        """
        Write C{BASE} plus C{text} to a file and load it.
        """
        folder = Path(self.mktemp())
        folder.mkdir()
        path = folder / "mta.toml"
        path.write_text(BASE + text)
        return loadConfig(path)

    def assertRefused(self, text: str, start: str) -> str:
        """
        Assert that loading C{text} fails with one line starting with C{start}.

        @return: the line.
        """
        e = self.assertRaises(ConfigError, self.load, text)
        self.assertTrue(str(e).startswith(start), str(e))
        self.assertEqual(len(str(e).splitlines()), 1)
        return str(e)


class RetryScheduleTests(ConfigTestCase):
    """
    C{[relay] retry_schedule}.
    """

    def test_accepted(self) -> None:
        """Durations of a second or more are read in seconds."""
        config = self.load('[relay]\nretry_schedule = ["1s", "5m", "2h"]\n')
        self.assertEqual(config.relay.retry_schedule, (1.0, 300.0, 7200.0))

    def test_zeroRefused(self) -> None:
        """A zero interval would retry in a tight loop: refused, naming the key."""
        line = self.assertRefused(
            '[relay]\nretry_schedule = ["0s"]\n', "config: relay.retry_schedule: "
        )
        self.assertIn("'0s'", line)

    def test_subSecondRefused(self) -> None:
        """Any interval under a second is refused, wherever it is in the list."""
        self.assertRefused(
            '[relay]\nretry_schedule = ["1m", "0.5s"]\n', "config: relay.retry_schedule: "
        )

    def test_emptyRefused(self) -> None:
        """An empty schedule is refused."""
        self.assertRefused("[relay]\nretry_schedule = []\n", "config: relay.retry_schedule: ")


class ListenTests(ConfigTestCase):
    """
    C{[listen]}: every description goes through Twisted's endpoint parser.
    """

    def test_goodDescriptions(self) -> None:
        """TCP, TCP6 with a quoted interface and UNIX descriptions are accepted."""
        config = self.load(
            "[listen]\n"
            'smtp = ["tcp:25", "tcp:2525:interface=127.0.0.1"]\n'
            'submission = ["tcp6:587:interface=\\\\:\\\\:"]\n'
            'pop3 = ["unix:/run/mta/pop3.sock"]\n'
        )
        self.assertEqual(config.listen.smtp, ("tcp:25", "tcp:2525:interface=127.0.0.1"))

    def test_systemdAccepted(self) -> None:
        """systemd descriptions pass without systemd having passed any socket."""
        config = self.load(
            "[listen]\n"
            'smtp = ["systemd:domain=INET:index=0"]\n'
            'submission = ["systemd:domain=INET6:name=submission"]\n'
        )
        self.assertEqual(config.listen.smtp, ("systemd:domain=INET:index=0",))

    def test_badPortRefused(self) -> None:
        """tcp:abc is refused at load time, naming the key."""
        line = self.assertRefused('[listen]\nsmtp = ["tcp:abc"]\n', "config: listen.smtp: ")
        self.assertIn("'tcp:abc'", line)

    def test_portOutOfRange(self) -> None:
        """A port past 65535 is refused."""
        self.assertRefused('[listen]\npop3 = ["tcp:99999"]\n', "config: listen.pop3: ")

    def test_unknownTypeRefused(self) -> None:
        """An endpoint type Twisted does not know is refused, as is a bare number."""
        self.assertRefused('[listen]\nsmtp = ["frob:25"]\n', "config: listen.smtp: ")
        self.assertRefused('[listen]\nsmtp = ["25"]\n', "config: listen.smtp: ")

    def test_unknownParameterRefused(self) -> None:
        """A parameter the endpoint type does not take is refused."""
        self.assertRefused(
            '[listen]\nsubmissions = ["tcp:465:bogus=1"]\n', "config: listen.submissions: "
        )

    def test_badSystemdRefused(self) -> None:
        """systemd descriptions without index or name, or with a bad domain, are refused."""
        self.assertRefused('[listen]\nsmtp = ["systemd:domain=INET"]\n', "config: listen.smtp: ")
        self.assertRefused(
            '[listen]\nsmtp = ["systemd:domain=NOPE:index=0"]\n', "config: listen.smtp: "
        )
        self.assertRefused(
            '[listen]\nsmtp = ["systemd:domain=INET:index=x"]\n', "config: listen.smtp: "
        )


class ExampleConfigTests(ConfigTestCase):
    """
    The shipped example config.
    """

    def test_exampleLoads(self) -> None:
        """etc/mta.toml is valid as shipped."""
        example = Path(__file__).resolve().parents[1] / "etc" / "mta.toml"
        config = loadConfig(example)
        self.assertEqual(config.listen.smtp, ("tcp:25",))


class RelayKeysTests(ConfigTestCase):
    """
    The keys that steer outbound delivery.
    """

    def test_defaults(self) -> None:
        """Without a [relay] section, MX delivery is opportunistic TLS over both families."""
        relay = self.load("").relay
        self.assertEqual(
            (relay.tls, relay.address_family, relay.connections_per_domain),
            ("opportunistic", "any", 10),
        )
        self.assertEqual((relay.smarthost_user, relay.smarthost_password_file), ("", None))

    def test_smarthostCredentials(self) -> None:
        """A password file is read relative to the config file's folder."""
        relay = self.load(
            '[relay]\nsmarthost = "smtp.example.net:587"\nsmarthost_user = "me"\n'
            'smarthost_password_file = "pw"\n'
        ).relay
        self.assertEqual(relay.smarthost_user, "me")
        assert relay.smarthost_password_file is not None
        self.assertEqual(relay.smarthost_password_file.name, "pw")

    def test_userNeedsPasswordFile(self) -> None:
        """A smarthost user without a password file is refused, naming the key."""
        self.assertRefused(
            '[relay]\nsmarthost_user = "me"\n', "config: relay.smarthost_password_file:"
        )

    def test_choices(self) -> None:
        """tls and address_family take only their listed values."""
        self.assertRefused('[relay]\ntls = "maybe"\n', "config: relay.tls:")
        self.assertRefused('[relay]\naddress_family = "ipv5"\n', "config: relay.address_family:")
        self.assertEqual(
            self.load('[relay]\naddress_family = "ipv6"\n').relay.address_family, "ipv6"
        )
