"""
Tests for L{mta.auth}: password hashes, the twisted.cred checker and realm,
the login throttle, the authenticator and the SASL helpers.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from argon2 import PasswordHasher
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mta import auth
from mta.auth import (
    DUMMY_HASH,
    Account,
    AccountRealm,
    Authenticator,
    DirectoryChecker,
    LoginFailed,
    LoginRefused,
    LoginThrottle,
    decodeBase64,
    decodePlain,
    hashPassword,
    plaintextAllowed,
    verifyPassword,
)
from mta.directory.files import FileDirectory
from mta.directory.memory import MemoryDirectory
from mta.interfaces import IAccount, IBlockingRunner
from mta.sasl import LOGIN_PASSWORD_PROMPT, LOGIN_USERNAME_PROMPT
from mta.threads import SynchronousRunner

_T = TypeVar("_T")

_cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

#: Cheap hashes keep the suite fast; verifyPassword reads the parameters
#: from the hash, so these check exactly like production ones.
ALICE_HASH = _cheap.hash("correct horse")
CHEAP_DUMMY = _cheap.hash("nobody's password")


@implementer(IBlockingRunner)
class RecordingRunner:
    """
    A synchronous L{IBlockingRunner} that records what it ran.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def run(self, f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        self.calls.append((f, args))
        return SynchronousRunner().run(f, *args, **kwargs)


@implementer(IBlockingRunner)
class PendingRunner:
    """
    An L{IBlockingRunner} that runs nothing until told to, like a busy pool.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def run(self, f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        d: Deferred[_T] = Deferred()
        self.pending.append((d, lambda: f(*args, **kwargs)))
        return d

    def runAll(self) -> None:
        """
        Run what was queued, firing each Deferred with its result.
        """
        pending, self.pending = self.pending, []
        for d, call in pending:
            d.callback(call())


class ReloadingDirectory(MemoryDirectory):
    """
    A directory in which alice appears only once it is reloaded, as in a
    server whose files were just changed by C{mta user add}.
    """

    def __init__(self) -> None:
        super().__init__(["example.com"])
        self.reloads = 0

    def reloadIfChanged(self) -> bool:
        """
        Take in alice, as if the users file had gained her line.
        """
        self.reloads += 1
        self.addUser("alice@example.com", ALICE_HASH)
        return True


def makeDirectory() -> MemoryDirectory:
    return MemoryDirectory(["example.com"], users={"alice@example.com": ALICE_HASH})


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class PasswordHashTests(SynchronousTestCase):
    """
    L{hashPassword} and L{verifyPassword}.
    """

    def test_hashRoundTrip(self) -> None:
        """A fresh hash is argon2id with a salt and verifies only its password."""
        hashed = hashPassword("s3cret pass")
        self.assertTrue(hashed.startswith("$argon2id$"))
        self.assertNotEqual(hashed, hashPassword("s3cret pass"))
        self.assertTrue(verifyPassword(hashed, "s3cret pass"))
        self.assertFalse(verifyPassword(hashed, "s3cret pas"))

    def test_verifyAnyParameters(self) -> None:
        """A hash made with other argon2 parameters verifies too."""
        self.assertTrue(verifyPassword(ALICE_HASH, "correct horse"))
        self.assertTrue(verifyPassword(ALICE_HASH, b"correct horse"))
        self.assertFalse(verifyPassword(ALICE_HASH, "Correct horse"))

    def test_verifyNonAscii(self) -> None:
        """A non-ASCII password hashed as text verifies as text and as UTF-8."""
        hashed = _cheap.hash("pässwörd")
        self.assertTrue(verifyPassword(hashed, "pässwörd"))
        self.assertTrue(verifyPassword(hashed, "pässwörd".encode()))
        self.assertFalse(verifyPassword(hashed, "pässwörd".encode("latin-1")))

    def test_malformedHash(self) -> None:
        """A malformed or non-argon2 hash never verifies and never raises."""
        for bad in ["", "plaintext", "$argon2id$v=19$broken", "$2b$12$abcdefghijk"]:
            self.assertFalse(verifyPassword(bad, "plaintext"), bad)

    def test_dummyHashUsesDefaultParameters(self) -> None:
        """The unknown-user hash costs what a real stored hash costs."""
        self.assertFalse(PasswordHasher().check_needs_rehash(DUMMY_HASH))


class DirectoryCheckerTests(SynchronousTestCase):
    """
    L{DirectoryChecker} over a L{MemoryDirectory}.
    """

    def setUp(self) -> None:
        self.runner = RecordingRunner()
        self.checker = DirectoryChecker(makeDirectory(), self.runner, CHEAP_DUMMY)

    def check(self, user: bytes, password: bytes) -> Deferred[Any]:
        return self.checker.requestAvatarId(UsernamePassword(user, password))

    def recordVerifications(self) -> list[tuple[str, str | bytes]]:
        """
        @return: a list that gets the (hash, password) of every verification.
        """
        calls: list[tuple[str, str | bytes]] = []

        def recording(hash: str, password: str | bytes) -> bool:
            calls.append((hash, password))
            return verifyPassword(hash, password)

        self.patch(auth, "verifyPassword", recording)
        return calls

    def test_interface(self) -> None:
        """The checker provides ICredentialsChecker."""
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))

    def test_success(self) -> None:
        """The right password gives the lower-case address as avatar id."""
        d = self.check(b"Alice@Example.COM", b"correct horse")
        self.assertEqual(self.successResultOf(d), "alice@example.com")

    def test_verifiesOnRunner(self) -> None:
        """Reading the hash and verifying it happen on the blocking runner, not before."""
        verified = self.recordVerifications()
        pending = PendingRunner()
        checker = DirectoryChecker(makeDirectory(), pending, CHEAP_DUMMY)
        d = checker.requestAvatarId(UsernamePassword(b"alice@example.com", b"correct horse"))
        self.assertNoResult(d)
        self.assertEqual(verified, [])
        pending.runAll()
        self.assertEqual(verified, [(ALICE_HASH, b"correct horse")])
        self.assertEqual(self.successResultOf(d), "alice@example.com")

    def test_reloadsBeforeReading(self) -> None:
        """A user the directory only knows after a reload logs in at once."""
        directory = ReloadingDirectory()
        checker = DirectoryChecker(directory, self.runner, CHEAP_DUMMY)
        d = checker.requestAvatarId(UsernamePassword(b"alice@example.com", b"correct horse"))
        self.assertEqual(self.successResultOf(d), "alice@example.com")
        self.assertEqual(directory.reloads, 1)

    def test_deletedUserRefusedAtOnce(self) -> None:
        """A user gone from the files fails on the next login, without waiting for a timer."""
        dataDir = Path(self.mktemp())
        admin = FileDirectory(dataDir, ["example.com"])
        admin.addUser("alice@example.com", ALICE_HASH)
        running = FileDirectory(dataDir, ["example.com"])
        checker = DirectoryChecker(running, SynchronousRunner(), CHEAP_DUMMY)
        credentials = UsernamePassword(b"alice@example.com", b"correct horse")
        self.successResultOf(checker.requestAvatarId(credentials))
        admin.deleteUser("alice@example.com")
        self.failureResultOf(checker.requestAvatarId(credentials), UnauthorizedLogin)

    def test_wrongPassword(self) -> None:
        """A wrong password fails with UnauthorizedLogin."""
        failure = self.failureResultOf(self.check(b"alice@example.com", b"x"))
        failure.trap(UnauthorizedLogin)

    def test_unknownUserLooksTheSame(self) -> None:
        """An unknown user fails like a wrong password, after the same hash work."""
        verified = self.recordVerifications()
        wrong = self.failureResultOf(self.check(b"alice@example.com", b"x"))
        unknown = self.failureResultOf(self.check(b"mallory@example.com", b"x"))
        self.assertIs(wrong.type, unknown.type)
        self.assertEqual(str(wrong.value), str(unknown.value))
        self.assertEqual(len(self.runner.calls), 2)
        self.assertEqual([h for h, _ in verified], [ALICE_HASH, CHEAP_DUMMY])

    def test_unknownUserWithDummyPassword(self) -> None:
        """Knowing the dummy hash's password does not log anybody in."""
        d = self.check(b"mallory@example.com", b"nobody's password")
        self.failureResultOf(d, UnauthorizedLogin)

    def test_undecodableUser(self) -> None:
        """A user name that is not UTF-8 is just an unknown user."""
        self.failureResultOf(self.check(b"\xff\xfe@example.com", b"x"), UnauthorizedLogin)


class AccountRealmTests(SynchronousTestCase):
    """
    L{AccountRealm} and its L{Account} avatars.
    """

    def test_interfaces(self) -> None:
        """The realm provides IRealm and its avatars IAccount."""
        self.assertTrue(verifyObject(IRealm, AccountRealm()))
        self.assertTrue(verifyObject(IAccount, Account("alice@example.com")))

    def test_requestAvatar(self) -> None:
        """An IAccount request gives an account with the address."""
        iface, avatar, logout = AccountRealm().requestAvatar("alice@example.com", None, IAccount)
        self.assertIs(iface, IAccount)
        self.assertEqual(avatar.address, "alice@example.com")
        logout()

    def test_otherInterface(self) -> None:
        """Any other avatar interface is refused."""
        self.assertRaises(NotImplementedError, AccountRealm().requestAvatar, "a@b", None, IRealm)


class LoginThrottleTests(SynchronousTestCase):
    """
    L{LoginThrottle} with the default limits: delay after 3, block after 10.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = LoginThrottle(self.clock, 3, 10, 900)

    def fail(self, ip: str, times: int) -> None:  # type: ignore[override]
        for _ in range(times):
            self.throttle.recordFailure(ip)

    def test_noDelayAtFirst(self) -> None:
        """The first failures are answered at once."""
        self.assertEqual(self.throttle.delayFor("192.0.2.1"), 0)
        self.fail("192.0.2.1", 2)
        self.assertEqual(self.throttle.delayFor("192.0.2.1"), 0)

    def test_delayGrowsAndIsCapped(self) -> None:
        """From the third failure on, delays are 1 s or more, growing, capped at 5 s."""
        delays = []
        for _ in range(7):
            self.throttle.recordFailure("192.0.2.1")
            delays.append(self.throttle.delayFor("192.0.2.1"))
        self.assertEqual(delays, [0, 0, 1, 2, 4, 5, 5])

    def test_blockAfterLimit(self) -> None:
        """The tenth failure blocks the address."""
        self.fail("192.0.2.1", 9)
        self.assertFalse(self.throttle.isBlocked("192.0.2.1"))
        self.fail("192.0.2.1", 1)
        self.assertTrue(self.throttle.isBlocked("192.0.2.1"))

    def test_otherAddressesUnaffected(self) -> None:
        """A blocked address does not slow or block any other."""
        self.fail("192.0.2.1", 20)
        self.assertFalse(self.throttle.isBlocked("192.0.2.2"))
        self.assertEqual(self.throttle.delayFor("192.0.2.2"), 0)
        self.assertEqual(self.throttle.failures("2001:db8::1"), 0)

    def test_expiry(self) -> None:
        """A count, and so a block, lasts blockTime after the latest failure."""
        self.fail("192.0.2.1", 10)
        self.clock.advance(600)
        self.fail("192.0.2.1", 1)
        self.clock.advance(899)
        self.assertTrue(self.throttle.isBlocked("192.0.2.1"))
        self.clock.advance(1)
        self.assertFalse(self.throttle.isBlocked("192.0.2.1"))
        self.assertEqual(self.throttle.failures("192.0.2.1"), 0)

    def test_successDoesNotReset(self) -> None:
        """A success neither lifts a block nor clears a count."""
        self.fail("192.0.2.1", 10)
        self.fail("192.0.2.2", 4)
        self.throttle.recordSuccess("192.0.2.1")
        self.throttle.recordSuccess("192.0.2.2")
        self.assertTrue(self.throttle.isBlocked("192.0.2.1"))
        self.assertEqual(self.throttle.failures("192.0.2.2"), 4)

    def test_boundedMemory(self) -> None:
        """Past maxEntries the address with the oldest failure is forgotten."""
        throttle = LoginThrottle(self.clock, 3, 10, 900, maxEntries=3)
        for i in range(4):
            throttle.recordFailure(f"192.0.2.{i}")
            self.clock.advance(1)
        self.assertEqual(throttle.failures("192.0.2.0"), 0)
        self.assertEqual(throttle.failures("192.0.2.3"), 1)
        self.assertEqual(len(throttle._table), 3)


class AuthenticatorTests(SynchronousTestCase):
    """
    L{Authenticator}: throttle, check through a portal, log.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.runner = RecordingRunner()
        checker = DirectoryChecker(makeDirectory(), self.runner, CHEAP_DUMMY)
        self.portal = Portal(AccountRealm(), [checker])
        self.throttle = LoginThrottle(self.clock, 3, 10, 900)
        self.auth = Authenticator(self.portal, self.throttle, self.clock)
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def logLines(self) -> list[str]:
        lines = [formatEvent(e) for e in self.events]
        return [line for line in lines if line.startswith("login:")]

    def login(self, user: str, password: str, ip: str = "192.0.2.1") -> Deferred[str]:
        return self.auth.login(user, password, ip, "pop3")

    def test_success(self) -> None:
        """A right password fires with the address and logs result=ok."""
        d = self.login("Alice@example.com", "correct horse")
        self.assertEqual(self.successResultOf(d), "alice@example.com")
        self.assertEqual(
            self.logLines(),
            ["login: proto=pop3 user=Alice@example.com ip=192.0.2.1 result=ok"],
        )

    def test_failureAtOnce(self) -> None:
        """The first failures errback LoginFailed at once and log result=fail."""
        self.failureResultOf(self.login("alice@example.com", "wrong"), LoginFailed)
        self.assertEqual(
            self.logLines(),
            ["login: proto=pop3 user=alice@example.com ip=192.0.2.1 result=fail"],
        )

    def test_passwordNeverLogged(self) -> None:
        """Neither a right nor a wrong password appears in the log."""
        self.login("alice@example.com", "correct horse")
        self.failureResultOf(self.login("alice@example.com", "hunter2"), LoginFailed)
        text = " ".join(formatEvent(e) for e in self.events)
        self.assertNotIn("correct horse", text)
        self.assertNotIn("hunter2", text)

    def test_delayedFailure(self) -> None:
        """After a few failures the answer comes only after the delay."""
        for _ in range(2):
            self.failureResultOf(self.login("alice@example.com", "x"), LoginFailed)
        d = self.login("alice@example.com", "x")
        self.assertNoResult(d)
        self.clock.advance(0.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, LoginFailed)

    def test_successNotDelayed(self) -> None:
        """A right password is answered at once even after failures."""
        failures = [self.login("alice@example.com", "x") for _ in range(5)]
        d = self.login("alice@example.com", "correct horse")
        self.assertEqual(self.successResultOf(d), "alice@example.com")
        self.clock.advance(5)
        for failed in failures:
            self.failureResultOf(failed, LoginFailed)

    def test_unknownUserSameAsWrongPassword(self) -> None:
        """Unknown user and wrong password fail alike, with the same delay."""
        self.throttle.recordFailure("192.0.2.1")
        self.throttle.recordFailure("192.0.2.1")
        self.throttle.recordFailure("192.0.2.2")
        self.throttle.recordFailure("192.0.2.2")
        wrong = self.login("alice@example.com", "x", "192.0.2.1")
        unknown = self.login("nobody@example.com", "x", "192.0.2.2")
        self.assertNoResult(wrong)
        self.assertNoResult(unknown)
        self.clock.advance(1)
        f1 = self.failureResultOf(wrong, LoginFailed)
        f2 = self.failureResultOf(unknown, LoginFailed)
        self.assertEqual(str(f1.value), str(f2.value))

    def test_blockedRefusedWithoutCheck(self) -> None:
        """A blocked address is refused at once; the password is not checked."""
        for _ in range(10):
            self.throttle.recordFailure("192.0.2.1")
        d = self.login("alice@example.com", "correct horse")
        self.failureResultOf(d, LoginRefused)
        self.assertEqual(self.runner.calls, [])
        self.assertEqual(
            self.logLines()[-1],
            "login: proto=pop3 user=alice@example.com ip=192.0.2.1 result=blocked",
        )

    def test_otherAddressStillLogsIn(self) -> None:
        """A blocked address does not lock the same user out elsewhere."""
        for _ in range(10):
            self.throttle.recordFailure("192.0.2.1")
        d = self.login("alice@example.com", "correct horse", "192.0.2.99")
        self.assertEqual(self.successResultOf(d), "alice@example.com")

    def test_userNameSanitised(self) -> None:
        """A user name cannot forge log fields or lines."""
        self.failureResultOf(self.login("a b\r\nlogin: result=ok", "x"), LoginFailed)
        [line] = self.logLines()
        self.assertNotIn("\n", line)
        self.assertIn("user=a?b??login:?result=ok ", line)

    def test_unexpectedError(self) -> None:
        """A checker crash is passed on, not turned into a failed login."""

        @implementer(ICredentialsChecker)
        class Broken:
            credentialInterfaces = DirectoryChecker.credentialInterfaces

            def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
                return fail(RuntimeError("disk on fire"))

        auth = Authenticator(Portal(AccountRealm(), [Broken()]), self.throttle, self.clock)
        self.failureResultOf(auth.login("a@example.com", "x", "192.0.2.1"), RuntimeError)
        self.assertEqual(self.throttle.failures("192.0.2.1"), 0)
        self.flushLoggedErrors(RuntimeError)


class SASLTests(SynchronousTestCase):
    """
    L{decodePlain}, L{decodeBase64}, the LOGIN prompts, L{plaintextAllowed}.
    """

    def test_plainWithoutAuthzid(self) -> None:
        """An empty authzid is the common case."""
        self.assertEqual(
            decodePlain(b64(b"\0alice@example.com\0pw")),
            ("", "alice@example.com", "pw"),
        )

    def test_plainSameAuthzid(self) -> None:
        """An authzid naming the same user (any case) is accepted."""
        result = decodePlain(b64(b"Alice@example.com\0alice@example.com\0pw"))
        self.assertEqual(result, ("Alice@example.com", "alice@example.com", "pw"))

    def test_plainOtherAuthzid(self) -> None:
        """Acting as another user is refused."""
        self.assertRaises(ValueError, decodePlain, b64(b"bob@x\0alice@x\0pw"))

    def test_plainPasswordWithSpacesAndUTF8(self) -> None:
        """The password is taken whole, spaces and UTF-8 included."""
        data = b64("\0alice@x\0 pä ss ".encode())
        self.assertEqual(decodePlain(data)[2], " pä ss ")

    def test_plainMalformed(self) -> None:
        """Bad base64, field counts, empty fields or bad UTF-8 raise ValueError."""
        for bad in [
            b"not base64!",
            b"=",
            b"",
            b64(b"alice\0pw"),
            b64(b"\0alice\0pw\0extra"),
            b64(b"\0\0pw"),
            b64(b"\0alice\0"),
            b64(b"\0al\xffice\0pw"),
            b64(b"\0alice\0pw")[:-2],
        ]:
            self.assertRaises(ValueError, decodePlain, bad)

    def test_decodeBase64(self) -> None:
        """C{=} is the empty response; surrounding white space is ignored."""
        self.assertEqual(decodeBase64(b"="), b"")
        self.assertEqual(decodeBase64(b" YWJj \r"), b"abc")
        self.assertRaises(ValueError, decodeBase64, b"YW?j")

    def test_loginPrompts(self) -> None:
        """The LOGIN prompts are base64 of Username: and Password:."""
        self.assertEqual(base64.b64decode(LOGIN_USERNAME_PROMPT), b"Username:")
        self.assertEqual(base64.b64decode(LOGIN_PASSWORD_PROMPT), b"Password:")

    def test_plaintextAllowed(self) -> None:
        """Passwords may travel under TLS, or in the clear from loopback only."""
        self.assertTrue(plaintextAllowed(True, "192.0.2.1"))
        self.assertTrue(plaintextAllowed(False, "127.0.0.1"))
        self.assertTrue(plaintextAllowed(False, "127.3.4.5"))
        self.assertTrue(plaintextAllowed(False, "::1"))
        self.assertTrue(plaintextAllowed(False, "::ffff:127.0.0.1"))
        self.assertFalse(plaintextAllowed(False, "192.0.2.1"))
        self.assertFalse(plaintextAllowed(False, "2001:db8::1"))
        self.assertFalse(plaintextAllowed(False, ""))


class LoginCacheTests(SynchronousTestCase):
    """
    L{auth.LoginCache}: recent successes skip argon2, nothing else does.
    """

    def setUp(self) -> None:
        self.now = 1000.0
        self.cache = auth.LoginCache(lambda: self.now)

    def test_successRemembered(self) -> None:
        """A good password is held for its address and stored hash, until the TTL passes."""
        self.cache.add("a@x", b"pw", "$h1")
        self.assertTrue(self.cache.holds("a@x", b"pw", "$h1"))
        self.now += auth.LoginCache.ttl + 1
        self.assertFalse(self.cache.holds("a@x", b"pw", "$h1"))

    def test_otherInputsMiss(self) -> None:
        """Another password, user or stored hash (a passwd change) is not held."""
        self.cache.add("a@x", b"pw", "$h1")
        self.assertFalse(self.cache.holds("a@x", b"PW", "$h1"))
        self.assertFalse(self.cache.holds("b@x", b"pw", "$h1"))
        self.assertFalse(self.cache.holds("a@x", b"pw", "$h2"))

    def test_bounded(self) -> None:
        """Past maxEntries the oldest entry is dropped."""
        self.cache.maxEntries = 2
        for user in ("a@x", "b@x", "c@x"):
            self.cache.add(user, b"pw", "$h")
        self.assertFalse(self.cache.holds("a@x", b"pw", "$h"))
        self.assertTrue(self.cache.holds("c@x", b"pw", "$h"))

    def test_checkerSkipsArgon2OnRepeat(self) -> None:
        """The checker verifies a password once, then answers from the cache; failures never are."""
        directory = MemoryDirectory(["x"], users={"a@x": hashPassword("pw")})
        checker = DirectoryChecker(directory, SynchronousRunner())
        calls: list[object] = []
        real = auth.verifyPassword

        def counting(h: str, p: str | bytes) -> bool:
            calls.append(p)
            return real(h, p)

        self.patch(auth, "verifyPassword", counting)
        for _ in range(3):
            self.successResultOf(checker.requestAvatarId(UsernamePassword(b"a@x", b"pw")))
        self.assertEqual(len(calls), 1)
        for _ in range(2):
            self.failureResultOf(
                checker.requestAvatarId(UsernamePassword(b"a@x", b"bad")), UnauthorizedLogin
            )
        self.assertEqual(len(calls), 3)
