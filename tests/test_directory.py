"""
Tests for L{mta.directory.memory} and L{mta.directory.files}.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mta.directory import files
from mta.directory.files import DirectoryWatcher, FileDirectory
from mta.directory.memory import MAX_DEPTH, MemoryDirectory
from mta.envelope import NULL_ADDRESS, Address
from mta.interfaces import IBlockingRunner, IUserDirectory

_T = TypeVar("_T")

# Well-formed argon2id strings; the directory stores them, it never checks
# a password against them, so tests need not pay for real hashing.
HASH_A = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
HASH_B = "$argon2id$v=19$m=65536,t=3,p=4$cGVwcGVy$b3RoZXJoYXNo"

DOMAINS = ["example.com", "example.org"]


@implementer(IBlockingRunner)
class DeferringRunner:
    """
    An L{IBlockingRunner} that runs nothing until L{runAll}, like a busy pool.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def run(self, f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        d: Deferred[_T] = Deferred()
        self.pending.append((d, lambda: f(*args, **kwargs)))
        return d

    def runAll(self) -> None:
        """
        Run what is queued now, firing each Deferred with its result.
        """
        pending, self.pending = self.pending, []
        for d, call in pending:
            d.callback(call())


def a(text: str) -> Address:
    """
    Parse an address, for brevity.
    """
    return Address.parse(text)


def directory(
    users: dict[str, str] | None = None, aliases: dict[str, list[str]] | None = None
) -> MemoryDirectory:
    """
    A directory for C{example.com} (primary) and C{example.org} with alice
    and bob unless told otherwise.
    """
    if users is None:
        users = {"alice@example.com": HASH_A, "bob@example.com": HASH_B}
    return MemoryDirectory(DOMAINS, users, aliases or {})


class ResolutionTests(SynchronousTestCase):
    """
    The resolution rules, shared by every directory backend.
    """

    def test_interface(self) -> None:
        """
        Both backends provide L{IUserDirectory}.
        """
        self.assertTrue(verifyObject(IUserDirectory, directory()))
        fileDirectory = FileDirectory(Path(self.mktemp()), DOMAINS)
        self.assertTrue(verifyObject(IUserDirectory, fileDirectory))

    def test_userResolvesToItself(self) -> None:
        """
        A user resolves to its own address.
        """
        self.assertEqual(directory().resolve(a("alice@example.com")), (a("alice@example.com"),))

    def test_localPartIsCaseInsensitive(self) -> None:
        """
        Local parts and domains compare case-insensitively; the result is
        the stored, lower-case address.
        """
        found = directory().resolve(a("ALICE@Example.COM"))
        self.assertEqual(found, (a("alice@example.com"),))

    def test_plusAddressingIsStripped(self) -> None:
        """
        C{user+tag@} resolves to C{user@}.
        """
        found = directory().resolve(a("alice+news+x@example.com"))
        self.assertEqual(found, (a("alice@example.com"),))

    def test_exactPlusAddressWins(self) -> None:
        """
        An alias spelled with a C{+} is used as it is, not stripped.
        """
        d = directory(aliases={"alice+lists@example.com": ["bob@example.com"]})
        self.assertEqual(d.resolve(a("alice+lists@example.com")), (a("bob@example.com"),))

    def test_unknownLocalIsNone(self) -> None:
        """
        Nobody at a local address (with or without a tag) resolves to C{None}.
        """
        self.assertIsNone(directory().resolve(a("carol@example.com")))
        self.assertIsNone(directory().resolve(a("carol+x@example.com")))

    def test_leadingPlusIsNotATag(self) -> None:
        """
        A local part starting with C{+} has no base to strip to.
        """
        self.assertIsNone(directory().resolve(a("+alice@example.com")))

    def test_nonLocalResolvesToItself(self) -> None:
        """
        An address in another domain resolves to itself, untouched.
        """
        self.assertEqual(directory().resolve(a("Who@Remote.net")), (a("Who@remote.net"),))

    def test_aliasExpandsRecursively(self) -> None:
        """
        Alias targets may be users, other aliases and remote addresses.
        """
        d = directory(
            aliases={
                "team@example.com": ["alice@example.com", "ops@example.org"],
                "ops@example.org": ["bob+ops@example.com", "pager@remote.net"],
            }
        )
        self.assertEqual(
            d.resolve(a("team@example.com")),
            (a("alice@example.com"), a("bob@example.com"), a("pager@remote.net")),
        )

    def test_aliasDeduplicates(self) -> None:
        """
        A destination reached twice appears once.
        """
        d = directory(
            aliases={
                "all@example.com": ["alice@example.com", "staff@example.com"],
                "staff@example.com": ["Alice@example.com", "bob@example.com"],
            }
        )
        found = d.resolve(a("all@example.com"))
        self.assertEqual(found, (a("alice@example.com"), a("bob@example.com")))

    def test_aliasLoopIsCut(self) -> None:
        """
        Aliases pointing at each other expand once, keeping real targets.
        """
        d = directory(
            aliases={
                "x@example.com": ["y@example.com", "alice@example.com"],
                "y@example.com": ["x@example.com", "bob@example.com"],
            }
        )
        found = d.resolve(a("x@example.com"))
        self.assertEqual(found, (a("bob@example.com"), a("alice@example.com")))

    def test_pureLoopIsNone(self) -> None:
        """
        An alias that only loops back leads nowhere: C{None}.
        """
        d = directory(
            aliases={
                "x@example.com": ["y@example.com"],
                "y@example.com": ["x@example.com"],
            }
        )
        self.assertIsNone(d.resolve(a("x@example.com")))

    def test_deepChainIsCut(self) -> None:
        """
        A chain of aliases deeper than L{MAX_DEPTH} is cut.
        """
        chain = {f"a{i}@example.com": [f"a{i + 1}@example.com"] for i in range(MAX_DEPTH + 1)}
        chain[f"a{MAX_DEPTH + 1}@example.com"] = ["alice@example.com"]
        d = directory(aliases=chain)
        self.assertIsNone(d.resolve(a("a0@example.com")))
        self.assertEqual(d.resolve(a("a2@example.com")), (a("alice@example.com"),))

    def test_aliasToDeletedUserIsNone(self) -> None:
        """
        An alias whose targets are all gone resolves to C{None}.
        """
        d = directory(aliases={"old@example.com": ["gone@example.com"]})
        self.assertIsNone(d.resolve(a("old@example.com")))

    def test_postmasterWithoutAliasGoesToPrimary(self) -> None:
        """
        Unaliased C{postmaster@} any local domain resolves to
        C{postmaster@} the primary domain, even with no such user.
        """
        d = directory()
        expected = (a("postmaster@example.com"),)
        self.assertEqual(d.resolve(a("postmaster@example.com")), expected)
        self.assertEqual(d.resolve(a("PostMaster@example.org")), expected)
        self.assertEqual(d.resolve(a("postmaster+x@example.org")), expected)

    def test_postmasterFollowsPrimaryAlias(self) -> None:
        """
        Unaliased C{postmaster@} a secondary domain goes where the primary
        domain's postmaster alias goes.
        """
        d = directory(aliases={"postmaster@example.com": ["bob@example.com"]})
        self.assertEqual(d.resolve(a("postmaster@example.org")), (a("bob@example.com"),))

    def test_postmasterAliasWins(self) -> None:
        """
        A postmaster alias of its own decides where that domain's goes.
        """
        d = directory(aliases={"postmaster@example.org": ["alice@example.com"]})
        self.assertEqual(d.resolve(a("postmaster@example.org")), (a("alice@example.com"),))
        self.assertEqual(d.resolve(a("postmaster@example.com")), (a("postmaster@example.com"),))

    def test_postmasterUserWins(self) -> None:
        """
        A user called postmaster receives its own mail.
        """
        d = directory(users={"postmaster@example.org": HASH_A})
        self.assertEqual(d.resolve(a("postmaster@example.org")), (a("postmaster@example.org"),))

    def test_postmasterAliasLeadingNowhereStillResolves(self) -> None:
        """
        A postmaster alias whose targets are gone falls back to the primary
        postmaster rather than refusing mail.
        """
        d = directory(aliases={"postmaster@example.org": ["gone@example.com"]})
        self.assertEqual(d.resolve(a("postmaster@example.org")), (a("postmaster@example.com"),))

    def test_postmasterAliasLoopTerminates(self) -> None:
        """
        Postmaster aliases pointing at each other still resolve.
        """
        d = directory(
            aliases={
                "postmaster@example.com": ["postmaster@example.org"],
                "postmaster@example.org": ["postmaster@example.com"],
            }
        )
        self.assertEqual(d.resolve(a("postmaster@example.org")), (a("postmaster@example.com"),))

    def test_isUser(self) -> None:
        """
        Only an exact user address (in any case) is a user.
        """
        d = directory(aliases={"team@example.com": ["alice@example.com"]})
        self.assertTrue(d.isUser(a("Alice@EXAMPLE.com")))
        self.assertFalse(d.isUser(a("alice+x@example.com")))
        self.assertFalse(d.isUser(a("team@example.com")))

    def test_passwordHash(self) -> None:
        """
        The hash is found by the full address in any case; C{None} for
        nobody.
        """
        d = directory()
        self.assertEqual(d.passwordHash("ALICE@example.com"), HASH_A)
        self.assertIsNone(d.passwordHash("alice"))
        self.assertIsNone(d.passwordHash("carol@example.com"))

    def test_usersSorted(self) -> None:
        """
        L{users} lists every user, sorted.
        """
        d = directory({"zed@example.org": HASH_A, "amy@example.com": HASH_B})
        self.assertEqual(d.users(), ["amy@example.com", "zed@example.org"])

    def test_domains(self) -> None:
        """
        C{domains} is a frozenset, lower case; the first is the primary.
        """
        d = MemoryDirectory(["Example.COM.", "example.org"])
        self.assertEqual(d.domains, frozenset(DOMAINS))
        self.assertEqual(d.primaryDomain, "example.com")
        self.assertTrue(d.isLocalDomain("EXAMPLE.org."))
        self.assertFalse(d.isLocalDomain("remote.net"))

    def test_noDomainsRefused(self) -> None:
        """
        A directory needs at least one local domain.
        """
        self.assertRaises(ValueError, MemoryDirectory, [])

    def test_memoryRefusesNonLocal(self) -> None:
        """
        L{MemoryDirectory} refuses users outside its domains.
        """
        self.assertRaises(ValueError, MemoryDirectory, DOMAINS, {"x@remote.net": HASH_A})


class SenderTests(SynchronousTestCase):
    """
    L{MemoryDirectory.mayUseSender}: which addresses a user may send as.
    """

    def setUp(self) -> None:
        self.d = directory(
            aliases={
                "team@example.com": ["alice@example.com", "x@remote.net"],
                "sales@example.org": ["team@example.com"],
            }
        )

    def test_ownAddress(self) -> None:
        """
        A user may send as itself, in any case.
        """
        self.assertTrue(self.d.mayUseSender("alice@example.com", a("Alice@Example.com")))

    def test_plusAddress(self) -> None:
        """
        A user may send as its plus-addresses.
        """
        self.assertTrue(self.d.mayUseSender("alice@example.com", a("alice+shop@example.com")))

    def test_aliasLeadingToUser(self) -> None:
        """
        A user may send as aliases whose expansion includes it, directly or
        through other aliases.
        """
        self.assertTrue(self.d.mayUseSender("alice@example.com", a("team@example.com")))
        self.assertTrue(self.d.mayUseSender("alice@example.com", a("sales@example.org")))
        self.assertFalse(self.d.mayUseSender("bob@example.com", a("team@example.com")))

    def test_othersRefused(self) -> None:
        """
        A user may not send as another user, a remote or the null address.
        """
        self.assertFalse(self.d.mayUseSender("alice@example.com", a("bob@example.com")))
        self.assertFalse(self.d.mayUseSender("alice@example.com", a("x@remote.net")))
        self.assertFalse(self.d.mayUseSender("alice@example.com", NULL_ADDRESS))

    def test_unknownUserRefused(self) -> None:
        """
        A name that is not a user may send as nothing.
        """
        self.assertFalse(self.d.mayUseSender("carol@example.com", a("carol@example.com")))


class ChangeTests(SynchronousTestCase):
    """
    The checks on changes, shared by both backends (shown in memory).
    """

    def test_addUser(self) -> None:
        """
        A new user is stored lower case and resolves at once.
        """
        d = directory({})
        d.addUser(" Carol@Example.ORG ", HASH_A)
        self.assertEqual(d.users(), ["carol@example.org"])
        self.assertEqual(d.passwordHash("carol@example.org"), HASH_A)

    def test_addUserTwiceRefused(self) -> None:
        """
        Adding an existing user says so.
        """
        e = self.assertRaises(ValueError, directory().addUser, "ALICE@example.com", HASH_B)
        self.assertEqual(str(e), "user alice@example.com exists")

    def test_addUserNonLocalRefused(self) -> None:
        """
        A user must be in a local domain.
        """
        e = self.assertRaises(ValueError, directory().addUser, "x@remote.net", HASH_A)
        self.assertEqual(str(e), "remote.net is not a local domain")

    def test_addUserOverAliasRefused(self) -> None:
        """
        A user cannot take an alias's address.
        """
        d = directory(aliases={"team@example.com": ["alice@example.com"]})
        e = self.assertRaises(ValueError, d.addUser, "team@example.com", HASH_A)
        self.assertIn("is an alias", str(e))

    def test_plaintextPasswordRefused(self) -> None:
        """
        Only argon2 hashes are stored, and the refusal does not quote it.
        """
        e = self.assertRaises(ValueError, directory().addUser, "c@example.com", "hunter2")
        self.assertNotIn("hunter2", str(e))

    def test_unsafeAddressRefused(self) -> None:
        """
        Addresses that would break the files (separators, quoting) are
        refused.
        """
        for bad in ["a,b@example.com", '"a b"@example.com', "a:b@example.com", ""]:
            self.assertRaises(ValueError, directory().addUser, bad, HASH_A)

    def test_checkNewUser(self) -> None:
        """
        L{checkNewUser} answers before a password is asked for.
        """
        self.assertEqual(directory().checkNewUser("Carol@example.com"), "carol@example.com")
        self.assertRaises(ValueError, directory().checkNewUser, "alice@example.com")

    def test_setPassword(self) -> None:
        """
        A password change replaces the hash; nobody cannot have one.
        """
        d = directory()
        d.setPassword("Alice@example.com", HASH_B)
        self.assertEqual(d.passwordHash("alice@example.com"), HASH_B)
        e = self.assertRaises(ValueError, d.setPassword, "carol@example.com", HASH_B)
        self.assertEqual(str(e), "no such user carol@example.com")

    def test_deleteUser(self) -> None:
        """
        A deleted user is gone; deleting nobody says so.
        """
        d = directory()
        d.deleteUser("alice@example.com")
        self.assertEqual(d.users(), ["bob@example.com"])
        e = self.assertRaises(ValueError, d.deleteUser, "alice@example.com")
        self.assertEqual(str(e), "no such user alice@example.com")

    def test_addAliasMergesTargets(self) -> None:
        """
        Adding to an existing alias adds targets, once each; local targets
        are stored lower case.
        """
        d = directory()
        d.addAlias("Team@example.com", ["Alice@example.com", "X@Remote.net"])
        d.addAlias("team@example.com", ["bob@example.com", "alice@example.com"])
        self.assertEqual(
            d.aliases(),
            {
                "team@example.com": (
                    "alice@example.com",
                    "X@remote.net",
                    "bob@example.com",
                )
            },
        )

    def test_aliasCollidingWithUserRefused(self) -> None:
        """
        An alias cannot have a user's address.
        """
        e = self.assertRaises(
            ValueError, directory().addAlias, "alice@example.com", ["bob@example.com"]
        )
        self.assertIn("is a user", str(e))

    def test_aliasToNobodyRefused(self) -> None:
        """
        A local target must be a user, an alias or postmaster.
        """
        d = directory()
        e = self.assertRaises(ValueError, d.addAlias, "t@example.com", ["carol@example.com"])
        self.assertEqual(str(e), "no such user or alias carol@example.com")
        d.addAlias("abuse@example.com", ["postmaster@example.org", "bob+abuse@example.com"])

    def test_aliasToItselfRefused(self) -> None:
        """
        An alias cannot point at itself.
        """
        e = self.assertRaises(ValueError, directory().addAlias, "t@example.com", ["T@example.com"])
        self.assertIn("itself", str(e))

    def test_aliasNeedsTargets(self) -> None:
        """
        An alias without targets is refused.
        """
        self.assertRaises(ValueError, directory().addAlias, "t@example.com", [])

    def test_deleteAlias(self) -> None:
        """
        A deleted alias is gone; deleting none says so.
        """
        d = directory(aliases={"team@example.com": ["alice@example.com"]})
        d.deleteAlias("TEAM@example.com")
        self.assertEqual(d.aliases(), {})
        e = self.assertRaises(ValueError, d.deleteAlias, "team@example.com")
        self.assertEqual(str(e), "no such alias team@example.com")


class FileDirectoryTests(SynchronousTestCase):
    """
    L{FileDirectory}: the files, reloading and atomic, locked writes.
    """

    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp())
        self.dataDir.mkdir()
        self.users = self.dataDir / "users"
        self.aliases = self.dataDir / "aliases"

    def write(self, path: Path, *lines: str) -> None:
        """
        Hand-edit C{path} to hold C{lines}.
        """
        path.write_text("".join(line + "\n" for line in lines))

    def test_missingFilesAreEmpty(self) -> None:
        """
        A data dir without files (or at all) is an empty directory.
        """
        d = FileDirectory(Path(self.mktemp()), DOMAINS)
        self.assertEqual(d.users(), [])
        self.assertIsNone(d.resolve(a("alice@example.com")))

    def test_readsHandWrittenFiles(self) -> None:
        """
        Comments and blank lines are skipped; entries are read.
        """
        self.write(self.users, "# users", "", f"Alice@Example.com:{HASH_A}")
        self.write(
            self.aliases,
            "  # aliases",
            "team@example.com : alice@example.com ,x@remote.net",
        )
        d = FileDirectory(self.dataDir, DOMAINS)
        self.assertEqual(d.passwordHash("alice@example.com"), HASH_A)
        self.assertEqual(
            d.resolve(a("team@example.com")),
            (a("alice@example.com"), a("x@remote.net")),
        )
        self.assertEqual(d.problems, ())

    def test_lookupsDoNotTouchDisk(self) -> None:
        """
        Lookups answer from memory even when the files vanish.
        """
        self.write(self.users, f"alice@example.com:{HASH_A}")
        d = FileDirectory(self.dataDir, DOMAINS)
        self.users.unlink()
        self.assertTrue(d.isUser(a("alice@example.com")))

    def test_reloadSeesChange(self) -> None:
        """
        L{FileDirectory.reloadIfChanged} picks up a hand edit once.
        """
        self.write(self.users, f"alice@example.com:{HASH_A}")
        d = FileDirectory(self.dataDir, DOMAINS)
        self.assertFalse(d.reloadIfChanged())
        self.write(self.users, f"alice@example.com:{HASH_A}", f"bob@example.com:{HASH_B}")
        self.write(self.aliases, "team@example.com: bob@example.com")
        self.assertTrue(d.reloadIfChanged())
        self.assertFalse(d.reloadIfChanged())
        self.assertEqual(d.resolve(a("team@example.com")), (a("bob@example.com"),))

    def test_reloadSeesDeletion(self) -> None:
        """
        Removing a file empties its table.
        """
        self.write(self.users, f"alice@example.com:{HASH_A}")
        d = FileDirectory(self.dataDir, DOMAINS)
        self.users.unlink()
        self.assertTrue(d.reloadIfChanged())
        self.assertEqual(d.users(), [])

    def test_malformedLineSkippedAndLogged(self) -> None:
        """
        A malformed line is logged and skipped; the rest still loads.
        """
        self.write(
            self.users,
            "nonsense",
            f"alice@example.com:{HASH_A}",
            f"alice@example.com:{HASH_B}",
        )
        self.write(
            self.aliases,
            "team@example.com alice@example.com",
            "ok@example.com: alice@example.com,",
        )
        with capturedLogs() as events:
            d = FileDirectory(self.dataDir, DOMAINS)
        self.assertEqual(d.passwordHash("alice@example.com"), HASH_A)
        self.assertEqual(d.aliases(), {})
        self.assertEqual(len(d.problems), 4)
        self.assertIn(f"{self.users} line 1: expected 'address:hash'", d.problems)
        self.assertIn(f"{self.users} line 3: alice@example.com is listed twice", d.problems)
        self.assertEqual(len(events), 4)

    def test_problemsNeverQuoteHashes(self) -> None:
        """
        A bad users line is reported without its content.
        """
        self.write(self.users, f"{HASH_A}:alice@example.com", "alice@example.com:plaintext")
        d = FileDirectory(self.dataDir, DOMAINS)
        self.assertEqual(len(d.problems), 2)
        for problem in d.problems:
            self.assertNotIn("c2FsdHNhbHQ", problem)
            self.assertNotIn("plaintext", problem)

    def test_nonLocalEntriesIgnored(self) -> None:
        """
        Entries in domains no longer configured are ignored, not errors.
        """
        self.write(self.users, f"old@gone.net:{HASH_A}", f"alice@example.com:{HASH_A}")
        d = FileDirectory(self.dataDir, DOMAINS)
        self.assertEqual(d.users(), ["alice@example.com"])
        self.assertIsNone(d.passwordHash("old@gone.net"))
        self.assertEqual(d.problems, ())

    def test_unreadableFileKeepsState(self) -> None:
        """
        A file that cannot be read keeps the previous tables.
        """
        self.write(self.users, f"alice@example.com:{HASH_A}")
        d = FileDirectory(self.dataDir, DOMAINS)
        self.aliases.write_bytes(b"team@example.com: \xff\n")
        with capturedLogs() as events:
            self.assertFalse(d.reloadIfChanged())
        self.assertEqual(len(events), 1)
        self.assertTrue(d.isUser(a("alice@example.com")))

    def test_addUserWritesPrivateFile(self) -> None:
        """
        The users file is written mode 0600 with a header comment.
        """
        d = FileDirectory(self.dataDir, DOMAINS)
        d.addUser("alice@example.com", HASH_A)
        self.assertEqual(stat.S_IMODE(self.users.stat().st_mode), 0o600)
        lines = self.users.read_text().splitlines()
        self.assertTrue(lines[0].startswith("#"))
        self.assertEqual(lines[-1], f"alice@example.com:{HASH_A}")

    def test_writerSeesItsChange(self) -> None:
        """
        The object that made a change answers with it at once.
        """
        d = FileDirectory(self.dataDir, DOMAINS)
        d.addUser("alice@example.com", HASH_A)
        d.addAlias("team@example.com", ["alice@example.com"])
        self.assertEqual(d.resolve(a("team@example.com")), (a("alice@example.com"),))

    def test_otherInstanceSeesChangeAfterReload(self) -> None:
        """
        A running directory sees another process's change on reload.
        """
        server = FileDirectory(self.dataDir, DOMAINS)
        FileDirectory(self.dataDir, DOMAINS).addUser("alice@example.com", HASH_A)
        self.assertFalse(server.isUser(a("alice@example.com")))
        self.assertTrue(server.reloadIfChanged())
        self.assertTrue(server.isUser(a("alice@example.com")))

    def test_writeKeepsCommentsAndOrder(self) -> None:
        """
        A change keeps comments, blank lines and the order of entries.
        """
        self.write(
            self.users,
            "# mine",
            f"bob@example.com:{HASH_B}",
            "",
            f"alice@example.com:{HASH_A}",
        )
        d = FileDirectory(self.dataDir, DOMAINS)
        d.setPassword("bob@example.com", HASH_A)
        d.addUser("carol@example.com", HASH_B)
        d.deleteUser("alice@example.com")
        self.assertEqual(
            self.users.read_text().splitlines(),
            ["# mine", f"bob@example.com:{HASH_A}", "", f"carol@example.com:{HASH_B}"],
        )

    def test_writeKeepsForeignEntries(self) -> None:
        """
        A change keeps entries of domains not configured right now.
        """
        self.write(self.users, f"old@gone.net:{HASH_A}")
        FileDirectory(self.dataDir, DOMAINS).addUser("alice@example.com", HASH_B)
        self.assertIn(f"old@gone.net:{HASH_A}", self.users.read_text().splitlines())

    def test_writeRefusedWhileMalformed(self) -> None:
        """
        No change is made while a file has a malformed line.
        """
        self.write(self.aliases, "broken line")
        before = self.aliases.read_text()
        d = FileDirectory(self.dataDir, DOMAINS)
        e = self.assertRaises(ValueError, d.addUser, "alice@example.com", HASH_A)
        expected = "line 1: expected 'alias: target, target'; fix that line first"
        self.assertEqual(str(e), f"{self.aliases} {expected}")
        self.assertFalse(self.users.exists())
        self.assertEqual(self.aliases.read_text(), before)

    def test_writeIsAtomicRename(self) -> None:
        """
        A change replaces the file by rename: a reader holding the old file
        keeps reading the whole old content, and no temporary file remains.
        """
        self.write(self.users, f"alice@example.com:{HASH_A}")
        with self.users.open() as old:
            FileDirectory(self.dataDir, DOMAINS).addUser("bob@example.com", HASH_B)
            self.assertEqual(old.read(), f"alice@example.com:{HASH_A}\n")
        leftovers = [p.name for p in self.dataDir.iterdir()]
        self.assertEqual(sorted(leftovers), [".directory.lock", "users"])

    def test_failedWriteLeavesFileAlone(self) -> None:
        """
        A write that fails midway leaves the old file and no temporary.
        """
        self.write(self.users, f"alice@example.com:{HASH_A}")

        def failingFsync(fd: int) -> None:
            raise OSError(28, "No space left on device")

        self.patch(os, "fsync", failingFsync)
        d = FileDirectory(self.dataDir, DOMAINS)
        self.assertRaises(OSError, d.addUser, "bob@example.com", HASH_B)
        self.assertEqual(self.users.read_text(), f"alice@example.com:{HASH_A}\n")
        self.assertEqual(
            sorted(p.name for p in self.dataDir.iterdir()), [".directory.lock", "users"]
        )

    def test_writeHoldsTheLock(self) -> None:
        """
        Files are written while the exclusive lock is held.
        """
        held = []
        realWrite = files._writeAtomically

        def checkingWrite(path: Path, text: str, mode: int) -> None:
            fd = os.open(self.dataDir / ".directory.lock", os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(path.name)
            finally:
                os.close(fd)
            realWrite(path, text, mode)

        self.patch(files, "_writeAtomically", checkingWrite)
        FileDirectory(self.dataDir, DOMAINS).addUser("alice@example.com", HASH_A)
        self.assertEqual(held, ["users"])

    def test_aliasesFileWritten(self) -> None:
        """
        Aliases are written one per line, C{alias: target, target}.
        """
        d = FileDirectory(self.dataDir, DOMAINS)
        d.addUser("alice@example.com", HASH_A)
        d.addAlias("team@example.com", ["alice@example.com", "x@remote.net"])
        lines = self.aliases.read_text().splitlines()
        self.assertEqual(lines[-1], "team@example.com: alice@example.com, x@remote.net")
        d.deleteAlias("team@example.com")
        self.assertNotIn("team@example.com", self.aliases.read_text())

    def test_createsDataDir(self) -> None:
        """
        The first change creates a missing data dir, private to its owner.
        """
        dataDir = Path(self.mktemp()) / "deep"
        FileDirectory(dataDir, DOMAINS).addUser("alice@example.com", HASH_A)
        self.assertEqual(stat.S_IMODE(dataDir.stat().st_mode) & 0o077, 0)


class LoadedAcknowledgementTests(SynchronousTestCase):
    """
    C{data_dir/.directory.loaded}: how a running server tells the admin
    command which files it has loaded, and L{files.waitUntilLoaded}.
    """

    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp())
        self.dataDir.mkdir()

    def test_serverAcknowledgesEveryLoad(self) -> None:
        """
        A directory built with C{acknowledge=True} records the stamps of
        each load, so they match the files as they now are.
        """
        running = FileDirectory(self.dataDir, DOMAINS, acknowledge=True)
        self.assertEqual(files.loadedStamps(self.dataDir), files.currentStamps(self.dataDir))
        FileDirectory(self.dataDir, DOMAINS).addUser("alice@example.com", HASH_A)
        self.assertNotEqual(files.loadedStamps(self.dataDir), files.currentStamps(self.dataDir))
        running.reloadIfChanged()
        self.assertEqual(files.loadedStamps(self.dataDir), files.currentStamps(self.dataDir))

    def test_adminDoesNotAcknowledge(self) -> None:
        """
        A directory built without C{acknowledge} (the admin command's)
        never writes the file: only the server may vouch for what it loaded.
        """
        FileDirectory(self.dataDir, DOMAINS).addUser("alice@example.com", HASH_A)
        self.assertFalse((self.dataDir / files.LOADED_NAME).exists())
        self.assertIsNone(files.loadedStamps(self.dataDir))

    def test_unreadableFilesNotAcknowledged(self) -> None:
        """
        Files the server could not read are not acknowledged.
        """
        running = FileDirectory(self.dataDir, DOMAINS, acknowledge=True)
        (self.dataDir / "users").write_bytes(b"\xff\xfe not utf-8\n")
        with capturedLogs():
            running.reloadIfChanged()
        self.assertNotEqual(files.loadedStamps(self.dataDir), files.currentStamps(self.dataDir))

    def test_waitUntilLoadedWaitsForTheServer(self) -> None:
        """
        L{files.waitUntilLoaded} returns C{True} once the server has
        reloaded, looking again after each sleep.
        """
        running = FileDirectory(self.dataDir, DOMAINS, acknowledge=True)
        FileDirectory(self.dataDir, DOMAINS).addAlias("team@example.com", ["x@remote.net"])
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == 3:
                running.reloadIfChanged()

        self.assertTrue(files.waitUntilLoaded(self.dataDir, 5.0, sleep))
        self.assertEqual(len(sleeps), 3)

    def test_waitUntilLoadedGivesUp(self) -> None:
        """
        Without a reload, L{files.waitUntilLoaded} gives up at its timeout.
        """
        FileDirectory(self.dataDir, DOMAINS, acknowledge=True)
        FileDirectory(self.dataDir, DOMAINS).addAlias("team@example.com", ["x@remote.net"])
        now = [0.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds

        self.assertFalse(files.waitUntilLoaded(self.dataDir, 2.0, sleep, lambda: now[0]))
        self.assertGreaterEqual(now[0], 2.0)

    def test_concurrentReloadWaits(self) -> None:
        """
        A reload asked for while another thread is mid-reload waits for it,
        so it never returns with the tables from before the change.
        """
        FileDirectory(self.dataDir, DOMAINS).addUser("alice@example.com", HASH_A)
        running = FileDirectory(self.dataDir, DOMAINS)
        FileDirectory(self.dataDir, DOMAINS).addUser("bob@example.com", HASH_B)
        inside = threading.Event()
        release = threading.Event()
        realRead = files._readFile

        def slowRead(path: Path, parseLine: Any) -> Any:
            inside.set()
            release.wait(10)
            return realRead(path, parseLine)

        self.patch(files, "_readFile", slowRead)
        first = threading.Thread(target=running.reloadIfChanged)
        first.start()
        self.addCleanup(first.join)
        self.assertTrue(inside.wait(10))
        seen: list[bool] = []
        second = threading.Thread(
            target=lambda: seen.append(
                running.reloadIfChanged() or running.isUser(a("bob@example.com"))
            )
        )
        second.start()
        second.join(0.2)
        release.set()
        second.join(10)
        self.assertEqual(seen, [True])


class DirectoryWatcherTests(SynchronousTestCase):
    """
    L{DirectoryWatcher}: inotify events start reloads on the runner.
    """

    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp())
        self.running = FileDirectory(self.dataDir, DOMAINS)
        self.runner = DeferringRunner()
        self.watcher = DirectoryWatcher(self.running, self.runner, Clock())

    def event(self, name: str) -> None:
        """
        Deliver an inotify event for C{data_dir/name}, as Twisted does.
        """
        path = FilePath(os.fsencode(self.dataDir / name))
        self.watcher._event(None, path, 0)

    def test_eventForUsersFileReloads(self) -> None:
        """
        An event naming the users file reloads the directory on the runner.
        """
        FileDirectory(self.dataDir, DOMAINS).addUser("alice@example.com", HASH_A)
        self.event("users")
        self.assertEqual(len(self.runner.pending), 1)
        self.assertFalse(self.running.isUser(a("alice@example.com")))
        self.runner.runAll()
        self.assertTrue(self.running.isUser(a("alice@example.com")))

    def test_otherFilesIgnored(self) -> None:
        """
        Events for other files in C{data_dir} (temporary files, the
        acknowledgement itself) start nothing.
        """
        for name in (".users.abc123", files.LOADED_NAME, "queue"):
            self.event(name)
        self.assertEqual(self.runner.pending, [])

    def test_burstCoalesced(self) -> None:
        """
        Events during a reload make exactly one more reload, not one each.
        """
        self.event("users")
        self.event("aliases")
        self.event("users")
        self.assertEqual(len(self.runner.pending), 1)
        self.runner.runAll()
        self.assertEqual(len(self.runner.pending), 1)
        self.runner.runAll()
        self.assertEqual(self.runner.pending, [])

    def test_realInotify(self) -> None:
        """
        On Linux the watcher really watches C{data_dir}: a change made as
        C{mta user add} does reaches the callback through the reactor.
        """
        from twisted.internet import reactor

        self.dataDir.mkdir(exist_ok=True)
        watcher = DirectoryWatcher(self.running, self.runner, reactor)
        watcher.startService()
        self.addCleanup(watcher.stopService)
        if watcher._notifier is None:
            raise SkipTest("no inotify here")
        FileDirectory(self.dataDir, DOMAINS).addUser("alice@example.com", HASH_A)
        # Read the inotify descriptor by hand: no reactor runs in this test.
        watcher._notifier.doRead()
        self.assertEqual(len(self.runner.pending), 1)


class InternationalDomainTests(SynchronousTestCase):
    """
    A local domain written as U-labels (RFC 6531) is the same local domain.
    """

    def test_uLabelsAreLocal(self) -> None:
        """user@例え.jp reaches the user of xn--r8jz45g.jp."""
        directory = MemoryDirectory(["xn--r8jz45g.jp"], users={"taro@xn--r8jz45g.jp": "x"})
        address = Address.parse("taro@例え.jp", utf8=True)
        self.assertTrue(directory.isLocalDomain(address.domain))
        self.assertEqual(directory.resolve(address), (Address("taro", "xn--r8jz45g.jp"),))
        self.assertIsNone(directory.resolve(Address.parse("jiro@例え.jp", utf8=True)))
