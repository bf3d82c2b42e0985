"""
Tests for L{mta.dkimkeys}: the DKIM key store.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.trial.unittest import SynchronousTestCase

from mta.dkimkeys import (
    DKIMKey,
    KeyStore,
    checkSelector,
    defaultSelector,
    normalizeDomain,
    splitTXT,
)
from tests.test_admin import CONFIG, AdminTestCase


def parseRecord(record: str) -> dict[str, str]:
    """
    @return: the tags of a DKIM key record (RFC 6376 3.6.1).
    """
    return dict(tag.strip().split("=", 1) for tag in record.split(";") if tag.strip())


def zoneStrings(line: str) -> list[str]:
    """
    @return: the quoted character-strings of a zone-file TXT line.
    """
    return re.findall(r'"([^"]*)"', line)


class KeyStoreTestCase(SynchronousTestCase):
    """
    A L{KeyStore} on a fresh data dir.
    """

    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp()).absolute()
        self.store = KeyStore(self.dataDir)


class GenerateTests(KeyStoreTestCase):
    """
    L{KeyStore.generate} and the records of what it makes.
    """

    def test_rsaKey(self) -> None:
        """An RSA key is 2048 bits, PEM, mode 0600 in a 0700 folder under dkim/."""
        key = self.store.generate("Example.COM.", "s1")
        self.assertEqual(
            key,
            DKIMKey("example.com", "s1", "rsa", self.dataDir / "dkim/example.com/s1.rsa.pem"),
        )
        private = serialization.load_pem_private_key(key.path.read_bytes(), None)
        assert isinstance(private, rsa.RSAPrivateKey)
        self.assertEqual(private.key_size, 2048)
        self.assertEqual(stat.S_IMODE(key.path.stat().st_mode), 0o600)
        for folder in (self.dataDir / "dkim", key.path.parent):
            self.assertEqual(stat.S_IMODE(folder.stat().st_mode), 0o700)

    def test_ed25519Key(self) -> None:
        """An Ed25519 key is written as PEM, mode 0600."""
        key = self.store.generate("example.com", "e1", "ed25519")
        private = serialization.load_pem_private_key(key.path.read_bytes(), None)
        self.assertIsInstance(private, ed25519.Ed25519PrivateKey)
        self.assertEqual(stat.S_IMODE(key.path.stat().st_mode), 0o600)
        self.assertEqual(key.path.name, "e1.ed25519.pem")

    def test_rsaRecordParses(self) -> None:
        """The RSA record is v=DKIM1; k=rsa; p= the key's SubjectPublicKeyInfo, which dkimpy reads."""
        key = self.store.generate("example.com", "s1")
        record = key.publicRecord()
        self.assertTrue(record.startswith("v=DKIM1; k=rsa; p=MII"))
        tags = parseRecord(record)
        public = serialization.load_der_public_key(base64.b64decode(tags["p"]))
        self.assertEqual(
            public.public_numbers(),  # type: ignore[union-attr]
            key.privateKey().public_key().public_numbers(),  # type: ignore[union-attr]
        )
        _, keysize, ktag, _ = dkim.evaluate_pk(b"s1._domainkey.example.com", record.encode())
        self.assertEqual((keysize, ktag), (2048, b"rsa"))

    def test_ed25519RecordParses(self) -> None:
        """The Ed25519 record's p= is the raw 32-byte public key (RFC 8463), which dkimpy reads."""
        key = self.store.generate("example.com", "e1", "ed25519")
        tags = parseRecord(key.publicRecord())
        self.assertEqual(tags["k"], "ed25519")
        raw = base64.b64decode(tags["p"])
        self.assertEqual(len(raw), 32)
        private = key.privateKey()
        self.assertEqual(
            raw,
            private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            ),
        )
        _, _, ktag, _ = dkim.evaluate_pk(b"e1._domainkey.example.com", key.publicRecord())
        self.assertEqual(ktag, b"ed25519")

    def test_rsaZoneLine(self) -> None:
        """The RSA zone line names the record and splits its text into strings of at most 255."""
        key = self.store.generate("example.com", "s1")
        line = key.zoneLine()
        self.assertTrue(line.startswith('s1._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; " "p='))
        strings = zoneStrings(line)
        self.assertEqual(len(strings), 3)
        self.assertTrue(all(len(s) <= 255 for s in strings))
        self.assertEqual(len(strings[1]), 255)
        self.assertEqual("".join(strings), key.publicRecord())
        self.assertNotIn("\n", line)

    def test_ed25519ZoneLine(self) -> None:
        """The Ed25519 zone line is the record in two short strings."""
        key = self.store.generate("example.com", "e1", "ed25519")
        strings = zoneStrings(key.zoneLine())
        self.assertEqual(strings[0], "v=DKIM1; k=ed25519; ")
        self.assertEqual(len(strings), 2)
        self.assertEqual("".join(strings), key.publicRecord())

    def test_existingSelectorRefused(self) -> None:
        """A selector a domain already has is refused, whatever the algorithm; the key stays."""
        key = self.store.generate("example.com", "s1")
        before = key.path.read_bytes()
        for algorithm in ("rsa", "ed25519"):
            e = self.assertRaises(ValueError, self.store.generate, "example.com", "S1", algorithm)
            self.assertIn("already has a key with selector s1", str(e))
        self.assertEqual(key.path.read_bytes(), before)
        self.assertEqual(os.listdir(key.path.parent), ["s1.rsa.pem"])

    def test_sameSelectorOtherDomain(self) -> None:
        """Another domain may use the same selector."""
        self.store.generate("example.com", "s1", "ed25519")
        self.store.generate("example.org", "s1", "ed25519")
        found = self.store.keys()
        self.assertEqual([k.domain for k in found], ["example.com", "example.org"])

    def test_badArguments(self) -> None:
        """A bad domain, selector or algorithm is refused before anything is written."""
        for args in [
            ("bad..example", "s1", "rsa"),
            ("exa mple.com", "s1", "rsa"),
            ("example.com", "s 1", "rsa"),
            ("example.com", "s1/x", "rsa"),
            ("example.com", "", "rsa"),
            ("example.com", "s1", "dsa"),
        ]:
            self.assertRaises(ValueError, self.store.generate, *args)
        self.assertFalse((self.dataDir / "dkim").exists())

    def test_unicodeDomain(self) -> None:
        """A domain written in U-labels is stored as A-labels (what d= and DNS use)."""
        key = self.store.generate("bücher.example", "s1", "ed25519")
        self.assertEqual(key.domain, "xn--bcher-kva.example")
        self.assertEqual(self.store.keysFor("BÜCHER.example"), [key])


class ListTests(KeyStoreTestCase):
    """
    L{KeyStore.keys}, L{KeyStore.keysFor} and L{KeyStore.signingKeys}.
    """

    def test_empty(self) -> None:
        """With no dkim folder there are no keys."""
        self.assertEqual(self.store.keys(), [])
        self.assertEqual(self.store.keysFor("example.com"), [])
        self.assertEqual(self.store.signingKeys("example.com"), [])

    def test_sorted(self) -> None:
        """Keys are listed by domain, then selector; other files are ignored."""
        b = self.store.generate("b.example", "z", "ed25519")
        a2 = self.store.generate("a.example", "y", "ed25519")
        a1 = self.store.generate("a.example", "x", "ed25519")
        (a1.path.parent / "notes.txt").write_text("x")
        (a1.path.parent / "x.dsa.pem").write_text("x")
        (self.dataDir / "dkim" / "README").write_text("x")
        self.assertEqual(self.store.keys(), [a1, a2, b])
        self.assertEqual(self.store.keysFor("A.example."), [a1, a2])
        self.assertEqual(self.store.keysFor("not a domain"), [])

    def test_newestOfEachAlgorithmSigns(self) -> None:
        """The newest key of each algorithm signs, RSA first: dual signing and rotation."""
        old = self.store.generate("example.com", "s1", "ed25519")
        os.utime(old.path, ns=(1_000_000_000, 1_000_000_000))
        new = self.store.generate("example.com", "s2", "ed25519")
        rsaKey = self.store.generate("example.com", "r1", "rsa")
        self.assertEqual(self.store.signingKeys("example.com"), [rsaKey, new])


class HelperTests(SynchronousTestCase):
    """
    The name checks, the default selector and TXT splitting.
    """

    def test_defaultSelector(self) -> None:
        """The default selector is s (RSA) or e (Ed25519) and the UTC year and month."""
        july = 1783000000.0  # 2026-07-02
        self.assertEqual(defaultSelector("rsa", july), "s202607")
        self.assertEqual(defaultSelector("ed25519", july), "e202607")
        self.assertRegex(defaultSelector(), r"^s\d{6}$")

    def test_names(self) -> None:
        """Domains and selectors are lower-cased and checked."""
        self.assertEqual(normalizeDomain(" Mail.Example.COM. "), "mail.example.com")
        self.assertEqual(checkSelector("Sel-1.Sub"), "sel-1.sub")
        for bad in ("-x", "x-", "a..b", "x_y z", "a" * 64):
            self.assertRaises(ValueError, checkSelector, bad)

    def test_splitTXT(self) -> None:
        """Text is cut into strings of at most 255 characters that join back."""
        self.assertEqual(splitTXT(""), [""])
        self.assertEqual(splitTXT("abc", 2), ["ab", "c"])
        text = "x" * 600
        parts = splitTXT(text)
        self.assertEqual([len(p) for p in parts], [255, 255, 90])
        self.assertEqual("".join(parts), text)


class DKIMCommandTests(AdminTestCase):
    """
    C{mta dkim keygen} and C{mta dkim list}.
    """

    def store(self) -> KeyStore:
        """
        @return: the key store of the test config's data dir.
        """
        return KeyStore(self.dataDir)

    def test_keygenPrintsZoneLine(self) -> None:
        """keygen writes an RSA key under the default selector and prints its zone line alone."""
        self.assertEqual(self.run_("dkim", "keygen", "example.com"), 0)
        [key] = self.store().keys()
        self.assertEqual((key.selector, key.algorithm), (defaultSelector(), "rsa"))
        self.assertEqual(self.stdout.getvalue(), key.zoneLine() + "\n")
        self.assertEqual(self.stderr.getvalue(), "")
        self.assertEqual(stat.S_IMODE(key.path.stat().st_mode), 0o600)

    def test_keygenOptions(self) -> None:
        """--selector and --algorithm ed25519 are honoured; a second key allows rotation."""
        self.assertEqual(self.run_("dkim", "keygen", "example.com", "--algorithm", "ed25519"), 0)
        self.assertEqual(self.run_("dkim", "keygen", "example.com", "--selector", "Rot2"), 0)
        keys = self.store().keysFor("example.com")
        self.assertEqual(
            [(k.selector, k.algorithm) for k in keys],
            [(defaultSelector("ed25519"), "ed25519"), ("rot2", "rsa")],
        )
        self.assertTrue(self.stdout.getvalue().splitlines()[1].startswith("rot2._domainkey."))

    def test_keygenExistingSelector(self) -> None:
        """An existing selector is one line on stderr and exit 1; the key is kept."""
        self.run_("dkim", "keygen", "example.com", "--selector", "s1", "--algorithm", "ed25519")
        before = self.store().keys()[0].path.read_bytes()
        self.assertEqual(self.run_("dkim", "keygen", "example.com", "--selector", "s1"), 1)
        self.assertEqual(
            self.stderr.getvalue(),
            "mta: example.com already has a key with selector s1 "
            "(choose another with --selector)\n",
        )
        self.assertEqual(self.store().keys()[0].path.read_bytes(), before)

    def test_keygenBadInput(self) -> None:
        """A bad domain, selector or algorithm is one line on stderr and exit 1."""
        for argv in [
            ("example..com",),
            ("example.com", "--selector", "a b"),
            ("example.com", "--algorithm", "dsa"),
        ]:
            self.stderr.truncate(0)
            self.stderr.seek(0)
            self.assertEqual(self.run_("dkim", "keygen", *argv), 1)
            self.assertEqual(len(self.stderr.getvalue().splitlines()), 1)
            self.assertTrue(self.stderr.getvalue().startswith("mta: "))
        self.assertEqual(self.store().keys(), [])

    def test_keygenNotLocalWarns(self) -> None:
        """A domain that is not local gets a key and a warning line."""
        self.assertEqual(self.run_("dkim", "keygen", "other.test", "--algorithm", "ed25519"), 0)
        self.assertEqual(
            self.stderr.getvalue(),
            "mta: warning: other.test is not a local domain (see 'domains')\n",
        )
        self.assertIn("._domainkey.other.test. IN TXT", self.stdout.getvalue())

    def test_list(self) -> None:
        """list gives a line per key: domain, selector, algorithm, file, and whether it signs."""
        store = self.store()
        old = store.generate("example.com", "s1")
        os.utime(old.path, ns=(1_000_000_000, 1_000_000_000))
        new = store.generate("example.com", "s2")
        ed = store.generate("example.com", "e1", "ed25519")
        other = store.generate("other.test", "x", "ed25519")
        self.assertEqual(self.run_("dkim", "list"), 0)
        self.assertEqual(
            self.stdout.getvalue().splitlines(),
            [
                f"example.com e1 ed25519 {ed.path} signing",
                f"example.com s1 rsa {old.path} not signing (replaced by s2)",
                f"example.com s2 rsa {new.path} signing",
                f"other.test x ed25519 {other.path} signing, not a local domain",
            ],
        )

    def test_listSignOff(self) -> None:
        """With [dkim] sign = false every key is listed as not signing."""
        self.config.write_text(CONFIG + "[dkim]\nsign = false\n")
        key = self.store().generate("example.com", "e1", "ed25519")
        self.assertEqual(self.run_("dkim", "list"), 0)
        self.assertEqual(
            self.stdout.getvalue(),
            f"example.com e1 ed25519 {key.path} not signing ([dkim] sign = false)\n",
        )

    def test_listEmpty(self) -> None:
        """With no keys, list prints nothing and succeeds."""
        self.assertEqual(self.run_("dkim", "list"), 0)
        self.assertEqual(self.stdout.getvalue(), "")
