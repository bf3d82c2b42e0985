"""
End to end: the real C{mta dns DOMAIN} command, asking the test DNS
server that C{[dns] nameservers} names.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mta.dkimkeys import KeyStore, splitTXT
from mta.testing.dnsserver import DNSServer
from tests.e2e.serverprocess import runAdmin

CONFIG = """\
hostname = "mx.example.com"
data_dir = "data"
domains = ["example.com"]
[dns]
nameservers = ["{nameserver}"]
"""


class DNSCommandTests(TestCase):
    """
    C{mta --config ... dns example.com} against a zone served on
    127.0.0.1.
    """

    timeout = 120

    def setUp(self) -> None:
        base = Path(self.mktemp()).absolute()
        base.mkdir()
        key = KeyStore(base / "data").generate("example.com", "s1")
        record = key.publicRecord()
        zones: dict[str, Any] = {
            "example.com": {"MX": [(10, "mx.example.com")], "TXT": ["v=spf1 mx -all"]},
            "mx.example.com": {"A": ["127.0.0.2"]},
            "2.0.0.127.in-addr.arpa": {"PTR": ["mx.example.com"]},
            "s1._domainkey.example.com": {"TXT": [tuple(splitTXT(record))]},
            "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject; rua=mailto:d@example.com"]},
        }
        self.zoneLine = key.zoneLine()
        self.server = DNSServer(zones)
        self.zones = self.server.zones
        self.server.listen(cast(IReactorUDP, reactor))
        self.addCleanup(self.server.stop)
        self.config = base / "mta.toml"
        self.config.write_text(CONFIG.format(nameserver=self.server.nameserver))

    async def dns(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """
        Run C{mta --config ... dns example.com argv} off the reactor thread,
        so the DNS server keeps answering.
        """
        return await deferToThread(runAdmin, self.config, "dns", "example.com", *argv)

    async def test_allGood(self) -> None:
        """
        A zone with every record right: a line per check and exit 0; the
        server was asked.
        """
        result = await self.dns()
        self.assertEqual((result.returncode, result.stderr), (0, ""), result.stdout)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[-1], "all checks pass")
        checks = [line.split()[1] for line in lines[1:-1]]
        self.assertEqual(
            checks, ["MX", "A/AAAA", "PTR", "SPF", "DKIM", "DMARC", "MTA-STS", "TLS-RPT", "TLSA"]
        )
        self.assertIn(("s1._domainkey.example.com", "TXT"), self.server.queries)

    async def test_broken(self) -> None:
        """
        A zone with a wrong DKIM key, two SPF records, a bad DMARC and no
        PTR: exit 1, each failure marked and followed by its fix line.
        """
        self.zones["s1._domainkey.example.com"] = {"TXT": ["v=DKIM1; k=rsa; p=AAAA"]}
        self.zones["example.com"]["TXT"] = ["v=spf1 mx -all", "v=spf1 a -all"]
        self.zones["_dmarc.example.com"] = {"TXT": ["v=DMARC1; p=maybe"]}
        del self.zones["2.0.0.127.in-addr.arpa"]
        result = await self.dns()
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        out = result.stdout
        self.assertIn("    fix: " + self.zoneLine, out)
        self.assertIn('    fix: example.com. IN TXT "v=spf1 mx -all"', out)
        self.assertIn(
            '    fix: _dmarc.example.com. IN TXT "v=DMARC1; p=quarantine;'
            ' rua=mailto:postmaster@example.com"',
            out,
        )
        self.assertIn("    fix: 2.0.0.127.in-addr.arpa. IN PTR mx.example.com.", out)
        self.assertIn("4 check(s) failed", out)

    async def test_json(self) -> None:
        """
        C{--json} prints the findings as a JSON list; C{--ip} names the
        address checked.
        """
        result = await self.dns("--json", "--ip", "127.0.0.3")
        self.assertEqual(result.returncode, 1)
        data = json.loads(result.stdout)
        byCheck = {item["check"]: item for item in data}
        self.assertEqual(byCheck["MX"]["status"], "ok")
        self.assertEqual(byCheck["A/AAAA"]["status"], "fail")
        self.assertEqual(byCheck["A/AAAA"]["fix"], ["mx.example.com. IN A 127.0.0.3"])
        self.assertEqual(byCheck["PTR"]["name"], "3.0.0.127.in-addr.arpa")
        self.assertEqual(byCheck["TLSA"]["status"], "info")
        self.assertEqual(
            sorted(data[0]), ["check", "expected", "fix", "found", "message", "name", "status"]
        )

    async def test_badIP(self) -> None:
        """
        A C{--ip} that is no address is one line on stderr and exit 1.
        """
        result = await self.dns("--ip", "nope")
        self.assertEqual(
            (result.returncode, result.stderr), (1, "mta: --ip nope: not an IP address\n")
        )
