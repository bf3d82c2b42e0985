# -*- test-case-name: tests.test_auth -*-
"""
Logging in, shared by SMTP AUTH, POP3 and IMAP.

Passwords are kept only as argon2id hashes (L{hashPassword},
L{verifyPassword}).  A login goes through twisted.cred: the
L{DirectoryChecker} checks a password against the L{IUserDirectory} on an
L{IBlockingRunner} (argon2 is slow on purpose and must never run on the
reactor thread), after asking the directory to pick up any change to its
files, and the L{AccountRealm} hands out an L{IAccount}.

L{Authenticator} is what the protocols call.  It adds the per-address
L{LoginThrottle} (failures are answered more and more slowly, then refused
for a while, without touching other addresses) and logs one line per
attempt.  It also holds the small SASL decoders (L{decodePlain},
L{decodeBase64}; the exchanges are in L{mta.sasl}) and the "may a password cross this connection" rule
(L{plaintextAllowed}).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mta.interfaces import IAccount, IBlockingRunner, ILoginService, IUserDirectory
from mta.logs import logLine
from mta.protocol import isLoopback

_log = Logger()

_hasher = PasswordHasher()

#: A hash of a password nobody has, made with L{PasswordHasher}'s default
#: parameters (the ones L{hashPassword} uses).  An unknown user's password
#: is checked against it so that the answer takes as long as for a known
#: user with a wrong password.
DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$bnvHbMYyszn65twxbSMk8Q"
    "$a9nrQ8TbxslEZApR3mBHdSwHeYKACPVaSetOEZye5NA"
)

#: The one message every failed check carries, known user or not.
_FAILED = "Authentication failed"


# -- passwords ----------------------------------------------------------------


def hashPassword(password: str) -> str:
    """
    Hash a password for storage with argon2id and a fresh salt.

    Blocking and slow by design: call it from a thread (or the admin CLI).

    @return: the encoded hash, parameters and salt included.
    """
    return _hasher.hash(password)


def verifyPassword(hash: str, password: str | bytes) -> bool:
    """
    Check C{password} against an argon2 hash made with any parameters.

    Blocking and slow by design: call it through an L{IBlockingRunner}.

    @param password: text, or the raw bytes a client sent (a password
        hashed as text is checked against its UTF-8 encoding).
    @return: whether it matches; C{False} for a malformed hash too.
    """
    try:
        return _hasher.verify(hash, password)
    except (VerificationError, InvalidHashError, TypeError, ValueError):
        return False


# -- twisted.cred -------------------------------------------------------------


def _text(value: str | bytes) -> str:
    """
    Credentials from twisted.cred are bytes; ours may already be text.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


@implementer(ICredentialsChecker)
class DirectoryChecker:
    """
    Checks user name and password against an L{IUserDirectory}.

    A user logs in with the full address, in any letter case.  The hash
    is always verified, against L{DUMMY_HASH} when the user is unknown, so
    unknown user and wrong password fail alike, with the same
    L{UnauthorizedLogin} after the same work.

    @ivar credentialInterfaces: only L{IUsernamePassword}.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        directory: IUserDirectory,
        runner: IBlockingRunner,
        dummyHash: str = DUMMY_HASH,
    ) -> None:
        """
        @param directory: who exists and their password hashes.
        @param runner: where the argon2 work runs, off the reactor thread.
        @param dummyHash: what unknown users are checked against; only
            tests pass a cheaper one.
        """
        self._directory = directory
        self._runner = runner
        self._dummyHash = dummyHash
        self.cache = LoginCache()

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """
        Check the credentials.

        @param credentials: an L{IUsernamePassword} provider.
        @return: a Deferred firing with the lower-cased address, or failing
            with L{UnauthorizedLogin}.
        """
        address = _text(credentials.username).lower()
        d = self._runner.run(self._verify, address, credentials.password)
        d.addCallback(self._checked, address)
        return d

    def _verify(self, address: str, password: str | bytes) -> bool:
        """
        On the runner's thread: pick up a change to the directory files (a
        stat of each, unless they changed), then check the password.

        Reloading here rather than only on a timer is what lets a user log
        in the moment C{mta user add} returns, and stops a deleted user or
        an old password at once.

        @return: whether C{address} is a user and C{password} is theirs.
        """
        self._directory.reloadIfChanged()
        stored = self._directory.passwordHash(address)
        if stored is None:
            verifyPassword(self._dummyHash, password)
            return False
        secret = password if isinstance(password, bytes) else password.encode("utf-8")
        if self.cache.holds(address, secret, stored):
            return True
        matched = verifyPassword(stored, password)
        if matched:
            self.cache.add(address, secret, stored)
        return matched

    @staticmethod
    def _checked(matched: bool, address: str) -> str:
        if matched:
            return address
        raise UnauthorizedLogin(_FAILED)


class LoginCache:
    """
    Remembers recent successful password checks for a few minutes, as
    Dovecot's C{auth_cache} does, so that a client logging in again and
    again (a mail client polling, an app submitting each message on a new
    connection) costs one argon2 verification, not one per login.

    Only successes are kept, and only as a keyed hash (HMAC-SHA256 under a
    key made at start-up, never stored) of the address, the password and
    the stored hash: a changed password or a deleted user no longer
    matches, and nothing in memory gives the password back.  Failed
    logins always pay the full price, so guessing is not sped up.  Safe to
    use from the runner's threads.

    @cvar ttl: seconds an entry is good for.
    @cvar maxEntries: most entries kept; the oldest go first.
    """

    ttl = 300.0
    maxEntries = 10_000

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        """
        @param now: the time source (tests pass a fake).
        """
        self._now = now
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def _digest(self, address: str, password: bytes, stored: str) -> bytes:
        message = b"\0".join(
            (address.encode("utf-8", "surrogateescape"), password, stored.encode())
        )
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def holds(self, address: str, password: bytes, stored: str) -> bool:
        """
        @return: whether this password was found good for this address and
            stored hash in the last L{ttl} seconds.
        """
        key = self._digest(address, password, stored)
        with self._lock:
            expires = self._entries.get(key)
            if expires is None:
                return False
            if expires <= self._now():
                del self._entries[key]
                return False
            return True

    def add(self, address: str, password: bytes, stored: str) -> None:
        """
        Remember a successful check.
        """
        key = self._digest(address, password, stored)
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = self._now() + self.ttl
            while len(self._entries) > self.maxEntries:
                self._entries.popitem(last=False)


@implementer(IAccount)
@dataclass(frozen=True)
class Account:
    """
    A logged-in user: the L{IAccount} avatar.

    @ivar address: the full, lower-case address.
    """

    address: str


@implementer(IRealm)
class AccountRealm:
    """
    Turns an avatar id (an address) into an L{Account}.
    """

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, Account, Callable[[], None]]:
        """
        @return: C{(IAccount, account, logout)}.
        @raise NotImplementedError: L{IAccount} was not asked for.
        """
        if IAccount not in interfaces:
            raise NotImplementedError("only IAccount avatars are available")
        return IAccount, Account(_text(avatarId)), lambda: None


# -- throttling ---------------------------------------------------------------


@dataclass
class _Failures:
    count: int
    expires: float


class LoginThrottle:
    """
    Counts failed logins per client address, to slow down and then refuse
    password guessing from it.

    An address's count lasts C{blockTime} seconds after its latest failure,
    then starts again from zero.  From C{delayAfter} failures on, each
    failure is answered after L{delayFor} seconds; from C{blockAfter}
    failures on the address is blocked (L{isBlocked}) until the count
    expires.  Refused attempts while blocked are not counted, so a block
    lifts C{blockTime} after the last real guess.

    A success does not clear the count.  Otherwise anyone holding one
    valid account could reset their count between guesses at other
    accounts and never be slowed down; an honest user who mistypes now
    and then is not hurt, as successes are never delayed and counts
    expire.

    Memory is bounded: past C{maxEntries} addresses the one whose latest
    failure is oldest is forgotten.

    @cvar maxDelay: the longest delay, in seconds.
    """

    maxDelay = 5.0

    def __init__(
        self,
        clock: IReactorTime,
        delayAfter: int,
        blockAfter: int,
        blockTime: float,
        maxEntries: int = 100_000,
    ) -> None:
        """
        @param clock: the time source.
        @param delayAfter: failures before answers slow down.
        @param blockAfter: failures before logins are refused.
        @param blockTime: how long a count (and so a block) lasts.
        @param maxEntries: most addresses remembered.
        """
        self._clock = clock
        self._delayAfter = delayAfter
        self._blockAfter = blockAfter
        self._blockTime = blockTime
        self._maxEntries = maxEntries
        # Ordered by latest failure, oldest first.
        self._table: OrderedDict[str, _Failures] = OrderedDict()

    def _purge(self) -> None:
        now = self._clock.seconds()
        while self._table:
            first = next(iter(self._table.values()))
            if first.expires > now:
                break
            self._table.popitem(last=False)

    def failures(self, ip: str) -> int:
        """
        @return: the current failure count of C{ip}.
        """
        self._purge()
        entry = self._table.get(ip)
        return entry.count if entry is not None else 0

    def delayFor(self, ip: str) -> float:
        """
        @return: seconds to wait before answering a failure from C{ip}: 0
            below C{delayAfter} failures, then 1, 2, 4... up to
            L{maxDelay}.
        """
        excess = self.failures(ip) - self._delayAfter
        if excess < 0:
            return 0.0
        return float(min(2 ** min(excess, 16), self.maxDelay))

    def isBlocked(self, ip: str) -> bool:
        """
        @return: whether logins from C{ip} are refused now.
        """
        return self.failures(ip) >= self._blockAfter

    def recordFailure(self, ip: str) -> None:
        """
        Count one failed login from C{ip}.
        """
        self._purge()
        entry = self._table.pop(ip, None)
        if entry is None:
            entry = _Failures(0, 0.0)
        entry.count += 1
        entry.expires = self._clock.seconds() + self._blockTime
        self._table[ip] = entry
        while len(self._table) > self._maxEntries:
            self._table.popitem(last=False)

    def recordSuccess(self, ip: str) -> None:
        """
        Note a successful login from C{ip}.

        Deliberately leaves the count alone (see the class docstring); only
        the expired entries are dropped.
        """
        self._purge()


# -- the protocols' entry point -----------------------------------------------


class LoginFailed(Exception):
    """
    Wrong user name or password; the same whichever of the two it was.
    """


class LoginRefused(Exception):
    """
    The client address is blocked after too many failures; the password
    was not checked.
    """


def _loggable(user: str) -> str:
    """
    Keep a client-chosen name from forging or flooding log lines.
    """
    clean = "".join(c if c.isprintable() and c != " " else "?" for c in user)
    return clean[:128] or "-"


@implementer(ILoginService)
class Authenticator:
    """
    Logs users in for the protocols: throttle, check, log.
    """

    def __init__(self, portal: Portal, throttle: LoginThrottle, clock: IReactorTime) -> None:
        """
        @param portal: a portal over a L{DirectoryChecker} and L{AccountRealm}.
        @param throttle: the per-address failure counts.
        @param clock: schedules the delayed failure answers.
        """
        self._portal = portal
        self._throttle = throttle
        self._clock = clock

    def login(self, username: str, password: str, peer: str, protocol: str = "-") -> Deferred[str]:
        """
        Check a user name and password from a client.

        Logs C{login: proto=... user=... ip=... result=ok|fail|blocked};
        never the password.

        @param peer: the client's IP address.
        @param protocol: the protocol's name, for the log.
        @return: a Deferred firing with the user's address; or failing with
            L{LoginFailed}, after the throttle's delay; or at once with
            L{LoginRefused} when C{peer} is blocked.
        """
        fields = {"proto": protocol, "user": _loggable(username), "ip": peer or "-"}
        if self._throttle.isBlocked(peer):
            self._logResult(fields, "blocked")
            return fail(LoginRefused("too many failed logins"))
        credentials = UsernamePassword(
            username.encode("utf-8", "surrogateescape"),
            password.encode("utf-8", "surrogateescape"),
        )
        d = self._portal.login(credentials, None, IAccount)
        return d.addCallbacks(
            self._succeeded,
            self._failed,
            callbackArgs=(fields, peer),
            errbackArgs=(fields, peer),
        )

    def _succeeded(
        self,
        result: tuple[Any, Any, Callable[[], None]],
        fields: dict[str, str],
        peer: str,
    ) -> str:
        _, avatar, logout = result
        logout()
        self._throttle.recordSuccess(peer)
        self._logResult(fields, "ok")
        return str(IAccount(avatar).address)

    def _failed(self, failure: Failure, fields: dict[str, str], peer: str) -> Deferred[str]:
        if not failure.check(UnauthorizedLogin):
            self._logResult(fields, "error")
            _log.failure("login check failed", failure)
            return fail(failure)
        self._throttle.recordFailure(peer)
        self._logResult(fields, "fail")
        delay = self._throttle.delayFor(peer)
        if delay <= 0:
            return fail(LoginFailed(_FAILED))
        d: Deferred[str] = Deferred()
        self._clock.callLater(delay, d.errback, LoginFailed(_FAILED))
        return d

    @staticmethod
    def _logResult(fields: dict[str, str], result: str) -> None:
        logLine(
            _log,
            "login: proto={proto} user={user} ip={ip} result={result}",
            result=result,
            **fields,
        )


# -- SASL and transport rules -------------------------------------------------


def decodeBase64(data: bytes) -> bytes:
    """
    Decode one base64 SASL response strictly; C{=} is the empty response.

    @raise ValueError: not base64.
    """
    data = data.strip()
    if data == b"=":
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        raise ValueError("malformed base64") from None


class AuthorizationRefused(ValueError):
    """
    A SASL PLAIN response asks to act as another user, which is not
    offered: the response decoded fine, the request is refused.
    """


def decodePlain(data: bytes) -> tuple[str, str, str]:
    """
    Decode a base64 SASL PLAIN response (RFC 4616).

    @return: C{(authzid, authcid, password)}; C{authzid} is C{""} or the
        same address as C{authcid} (acting as another user is not offered).
    @raise ValueError: not base64, not three NUL-separated UTF-8 fields,
        an empty user or password; L{AuthorizationRefused} (a
        C{ValueError} too) for a different C{authzid}.
    """
    fields = decodeBase64(data).split(b"\0")
    if len(fields) != 3:
        raise ValueError("PLAIN response is not authzid NUL authcid NUL password")
    authzid, authcid, password = (f.decode("utf-8") for f in fields)
    if not authcid or not password:
        raise ValueError("empty user name or password")
    if authzid and authzid.lower() != authcid.lower():
        raise AuthorizationRefused("authorization identity differs from the user")
    return authzid, authcid, password


def plaintextAllowed(tlsActive: bool, peer: str) -> bool:
    """
    May a password be sent in the clear on this connection?

    @return: C{True} under TLS or from loopback (127.0.0.0/8, ::1).
    """
    return tlsActive or isLoopback(peer)
