# -*- test-case-name: tests.test_directory -*-
"""
Who exists here, answered from memory: the L{IUserDirectory} logic.

This is the RCPT-time step of the lifecycle: the SMTP server asks
L{BaseDirectory.resolve} whether a recipient exists and where its mail
goes; submission asks L{BaseDirectory.mayUseSender}; logins ask
L{BaseDirectory.passwordHash}.

L{BaseDirectory} holds the rules (plus-addressing, aliases, postmaster)
over one immutable L{DirectoryTables} snapshot, and the validation of
every change.  L{MemoryDirectory} keeps the snapshot in memory only (for
tests); L{mta.directory.files.FileDirectory} keeps it in files.

Resolution rules, in order, for an address in a local domain (local parts
compare case-insensitively):

  1. the full address is a user: the user;
  2. the full address is an alias: the alias's targets, each resolved by
     these same rules (loops and chains deeper than L{MAX_DEPTH} are cut,
     duplicates dropped);
  3. C{user+tag@domain}: rules 1-2 for C{user@domain};
  4. C{postmaster@} any local domain, when rules 1-3 give nothing, goes
     where C{postmaster@<primary domain>} goes (the primary domain is the
     first one configured).  When that is neither a user nor an alias it
     stays a recipient of its own, C{postmaster@<primary domain>}: local
     delivery files it in that mailbox, which C{mta user add} can turn
     into an account later;
  5. otherwise nobody is there: C{None}.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from zope.interface import implementer

from mta.envelope import Address
from mta.interfaces import IUserDirectory

MAX_DEPTH = 10
"""How many aliases deep an expansion may go before it is cut."""

# Characters that would break the one-line-per-entry file formats or make
# an address ambiguous; the admin command refuses addresses holding them.
_UNSAFE = re.compile(r'[\s,:#"\\<>()\[\];]|[\x00-\x1f\x7f]')


@dataclass(frozen=True)
class DirectoryTables:
    """
    One consistent state of the directory.  Never mutated: a change makes a
    new snapshot, and readers swap in the whole snapshot at once.

    @ivar users: canonical (lower-case) address to password hash.
    @ivar aliases: canonical alias address to its targets; local targets
        are canonical, remote ones as written (domain lower case).
    """

    users: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, tuple[Address, ...]] = field(default_factory=dict)


def _normaliseDomains(domains: Iterable[str]) -> tuple[str, ...]:
    """
    @return: the domains lower case without a trailing dot, in order.
    @raise ValueError: there are none.
    """
    ordered = tuple(d.strip().lower().rstrip(".") for d in domains)
    if not ordered:
        raise ValueError("at least one local domain is needed")
    return ordered


def _baseLocal(address: Address) -> str:
    """
    @return: the local part without its C{+tag}.
    """
    base, plus, _ = address.local.partition("+")
    return base if plus and base else address.local


def _dedupe(addresses: Iterable[Address]) -> tuple[Address, ...]:
    """
    @return: C{addresses} in order, each one once.
    """
    return tuple(dict.fromkeys(addresses))


@implementer(IUserDirectory)
class BaseDirectory:
    """
    The resolution rules and the validation of changes, over a snapshot.

    Subclasses decide where snapshots come from and where changes go by
    overriding L{_change} and L{reloadIfChanged}.

    @ivar domains: the local domains, lower case.
    @ivar primaryDomain: the first configured domain; unaliased
        C{postmaster@} mail goes to C{postmaster@primaryDomain}.
    """

    def __init__(self, domains: Iterable[str]) -> None:
        """
        @param domains: the local domains, the primary one first.
        @raise ValueError: there are none.
        """
        ordered = _normaliseDomains(domains)
        self.domains = frozenset(ordered)
        self.primaryDomain = ordered[0]
        self._tables = DirectoryTables()

    # Lookups.  Each takes one snapshot of self._tables and uses only that,
    # so a concurrent reload never shows it half a state.

    def isLocalDomain(self, domain: str) -> bool:
        """
        @return: whether mail for C{domain} is delivered here.
        """
        domain = domain.lower().rstrip(".")
        if domain in self.domains:
            return True
        # An SMTPUTF8 client may write a local domain as U-labels.
        return not domain.isascii() and Address("x", domain).asciiDomain in self.domains

    def resolve(self, address: Address) -> tuple[Address, ...] | None:
        """
        Expand C{address} by the rules in this module's docstring.

        @return: the destinations, or C{None} when C{address} is in a local
            domain but nobody is there.
        """
        if not self.isLocalDomain(address.domain):
            return (address,)
        address = Address(address.local, address.asciiDomain)
        found = _dedupe(self._expand(self._tables, address, ()))
        return found or None

    def isUser(self, address: Address) -> bool:
        """
        @return: whether C{address}, exactly, names a user account.
        """
        return address.canonical() in self._tables.users

    def passwordHash(self, user: str) -> str | None:
        """
        @param user: the full address a user logs in with.
        @return: the stored argon2id hash, or C{None} for no such user.
        """
        return self._tables.users.get(user.strip().lower())

    def mayUseSender(self, user: str, sender: Address) -> bool:
        """
        Whether C{user} may send as C{sender}: its own address, its
        plus-addresses and every alias whose expansion includes it.  The
        null sender belongs to nobody: only the server sends bounces.

        @return: C{True} when C{sender} is C{user}'s to use.
        """
        tables = self._tables
        key = user.strip().lower()
        if sender.isNull or key not in tables.users:
            return False
        if not self.isLocalDomain(sender.domain):
            return False
        destinations = self._expand(tables, sender, ())
        return any(d.canonical() == key for d in destinations)

    def users(self) -> list[str]:
        """
        @return: every user's address, sorted.
        """
        return sorted(self._tables.users)

    def aliases(self) -> dict[str, tuple[str, ...]]:
        """
        @return: every alias and its targets as written, sorted by alias.
        """
        aliases = self._tables.aliases
        return {a: tuple(str(t) for t in aliases[a]) for a in sorted(aliases)}

    def reloadIfChanged(self) -> bool:
        """
        Nothing to reload in memory.

        @return: C{False}.
        """
        return False

    # The rules.

    def _findKey(self, tables: DirectoryTables, address: Address) -> str | None:
        """
        @return: the user or alias C{address} names, exactly or once its
            C{+tag} is stripped; C{None} for neither.
        """
        exact = address.canonical()
        stripped = f"{_baseLocal(address)}@{address.domain}".lower()
        for key in (exact, stripped):
            if key in tables.users or key in tables.aliases:
                return key
        return None

    def _expand(
        self, tables: DirectoryTables, address: Address, chain: tuple[str, ...]
    ) -> list[Address]:
        """
        Resolve one address, possibly in a local domain.

        @param chain: the aliases being expanded on the way here.
        @return: the destinations, possibly with duplicates; empty for
            nobody.
        """
        if not self.isLocalDomain(address.domain):
            return [address]
        key = self._findKey(tables, address)
        found: list[Address] = []
        if key is None:
            pass
        elif key in tables.users:
            found = [Address.parse(key, utf8=True)]
        elif key not in chain and len(chain) < MAX_DEPTH:
            for target in tables.aliases[key]:
                found.extend(self._expand(tables, target, (*chain, key)))
        if not found and _baseLocal(address).lower() == "postmaster":
            found = self._postmaster(tables, address, chain)
        return found

    def _postmaster(
        self, tables: DirectoryTables, address: Address, chain: tuple[str, ...]
    ) -> list[Address]:
        """
        Rule 4: C{postmaster@} with nowhere else to go.

        @return: where C{postmaster@primaryDomain} goes, or that address
            itself.
        """
        primary = Address("postmaster", self.primaryDomain)
        if address.domain == self.primaryDomain:
            return [primary]
        return self._expand(tables, primary, chain) or [primary]

    # Changes.  Each validator takes the current snapshot and returns the
    # next one, or raises ValueError with a line fit for the admin command.

    def _change(self, change: Callable[[DirectoryTables], DirectoryTables]) -> None:
        """
        Apply C{change} to the current snapshot and keep the result.
        """
        self._tables = change(self._tables)

    def addUser(self, address: str, passwordHash: str) -> None:
        """
        Create a user.

        @param passwordHash: an argon2id hash from L{mta.auth.hashPassword}.
        @raise ValueError: the address is not local or already taken.
        """
        checkPasswordHash(passwordHash)

        def change(tables: DirectoryTables) -> DirectoryTables:
            key = self._newUserKey(tables, address)
            return replace(tables, users={**tables.users, key: passwordHash})

        self._change(change)

    def checkNewUser(self, address: str) -> str:
        """
        Check that C{address} could become a user now, before asking for a
        password.

        @return: the address as it would be stored.
        @raise ValueError: it could not.
        """
        return self._newUserKey(self._tables, address)

    def setPassword(self, address: str, passwordHash: str) -> None:
        """
        Replace a user's password hash.

        @raise ValueError: no such user.
        """
        checkPasswordHash(passwordHash)

        def change(tables: DirectoryTables) -> DirectoryTables:
            key = self._existingUserKey(tables, address)
            return replace(tables, users={**tables.users, key: passwordHash})

        self._change(change)

    def deleteUser(self, address: str) -> None:
        """
        Remove a user.  Aliases pointing at it are left alone.

        @raise ValueError: no such user.
        """

        def change(tables: DirectoryTables) -> DirectoryTables:
            key = self._existingUserKey(tables, address)
            users = {k: v for k, v in tables.users.items() if k != key}
            return replace(tables, users=users)

        self._change(change)

    def addAlias(self, alias: str, targets: Iterable[str]) -> None:
        """
        Create an alias, or add targets to an existing one.

        @param targets: local users, other aliases or remote addresses.
        @raise ValueError: the alias is not local or is a user, a target is
            not an address or is local and nobody, or the alias would lead
            nowhere.
        """
        parsed = [parsePlainAddress(t) for t in targets]
        if not parsed:
            raise ValueError("an alias needs at least one target")

        def change(tables: DirectoryTables) -> DirectoryTables:
            key = self._localKey(alias)
            return self._withAlias(tables, key, parsed)

        self._change(change)

    def deleteAlias(self, alias: str) -> None:
        """
        Remove an alias.

        @raise ValueError: no such alias.
        """

        def change(tables: DirectoryTables) -> DirectoryTables:
            key = self._localKey(alias)
            if key not in tables.aliases:
                raise ValueError(f"no such alias {key}")
            aliases = {k: v for k, v in tables.aliases.items() if k != key}
            return replace(tables, aliases=aliases)

        self._change(change)

    def _localKey(self, address: str) -> str:
        """
        @return: C{address} as stored: canonical, in a local domain.
        @raise ValueError: not a plain address in a local domain.
        """
        parsed = parsePlainAddress(address)
        if not self.isLocalDomain(parsed.domain):
            raise ValueError(f"{parsed.domain} is not a local domain")
        return parsed.canonical()

    def _newUserKey(self, tables: DirectoryTables, address: str) -> str:
        """
        @return: the key of a user that could be added to C{tables}.
        @raise ValueError: it could not.
        """
        key = self._localKey(address)
        if key in tables.users:
            raise ValueError(f"user {key} exists")
        if key in tables.aliases:
            raise ValueError(f"{key} is an alias; delete the alias first")
        return key

    def _existingUserKey(self, tables: DirectoryTables, address: str) -> str:
        """
        @return: the key of an existing user.
        @raise ValueError: there is no such user.
        """
        key = parsePlainAddress(address).canonical()
        if key not in tables.users:
            raise ValueError(f"no such user {key}")
        return key

    def _withAlias(
        self, tables: DirectoryTables, key: str, targets: list[Address]
    ) -> DirectoryTables:
        """
        @return: C{tables} with C{targets} added to alias C{key}.
        @raise ValueError: the result would be wrong (see L{addAlias}).
        """
        if key in tables.users:
            raise ValueError(f"{key} is a user; an alias cannot have its address")
        stored = [self._storedTarget(t) for t in targets]
        if any(t.canonical() == key for t in stored):
            raise ValueError(f"alias {key} cannot point to itself")
        merged = _dedupe((*tables.aliases.get(key, ()), *stored))
        new = replace(tables, aliases={**tables.aliases, key: merged})
        for target in stored:
            if not self._expand(new, target, (key,)):
                raise ValueError(f"no such user or alias {target}")
        return new

    def _storedTarget(self, target: Address) -> Address:
        """
        @return: C{target} as stored: canonical (lower case) when local.
        """
        if not self.isLocalDomain(target.domain):
            return target
        return Address.parse(target.canonical(), utf8=True)


def parsePlainAddress(text: str) -> Address:
    """
    Parse an address the admin command may store: no quoting, comments,
    separators or control characters.

    @raise ValueError: it is not one.
    """
    # UTF-8 local parts and domains (RFC 6531) are ordinary names here.
    parsed = Address.parse(text.strip(), utf8=True)
    if parsed.isNull or _UNSAFE.search(str(parsed)):
        raise ValueError(f"not a plain address: {text.strip()!r}")
    return parsed


def checkPasswordHash(passwordHash: str) -> None:
    """
    Refuse anything but an argon2 hash, so a plaintext password typed into
    the users file by mistake is never taken for one.  The message never
    quotes the value.

    @raise ValueError: C{passwordHash} is not an argon2 hash on one line.
    """
    if not passwordHash.startswith("$argon2") or _UNSAFE.search(passwordHash.replace(",", "")):
        raise ValueError("not an argon2 password hash")


class MemoryDirectory(BaseDirectory):
    """
    An L{IUserDirectory} held in memory, for other modules' unit tests.

    Changes (L{addUser} and friends) apply at once, with the same checks as
    on disk.
    """

    def __init__(
        self,
        domains: Iterable[str],
        users: Mapping[str, str] | None = None,
        aliases: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """
        @param users: address to password hash.
        @param aliases: alias address to its targets.
        @raise ValueError: an address is not in a local domain.
        """
        super().__init__(domains)
        self._tables = DirectoryTables(
            users={self._localKey(a): h for a, h in (users or {}).items()},
            aliases={
                self._localKey(a): tuple(self._storedTarget(parsePlainAddress(t)) for t in targets)
                for a, targets in (aliases or {}).items()
            },
        )
