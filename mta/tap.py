# -*- test-case-name: tests.test_tap -*-
"""
C{twistd mta}: options and L{makeService}, the only place objects are wired.

The service tree::

    MultiService "mta"
    |- BlockingRunner "io"            thread pool for fsync, files, argon2
    |- BlockingRunner "checks-dns"    thread pool for the inbound checks that wait for DNS
    |- BlockingRunner "checks"        one draining thread: SPF, DKIM, DMARC of inbound mail
    |- DirectoryWatcher "directory-watch" inotify: reload users/aliases at once
    |- TimerService "directory-reload" users/aliases seen without restart
    |- TimerService "tls-reload"       renewed certificates picked up
    |- TmpCleaner "tmp-cleanup"        crash leftovers in Maildir tmp/ (36 h)
    |- QueueManager "queue"            loads the spool, schedules delivery
    |- ControlServer "queue-control"   data_dir/control.sock: mta queue ...
    |- RelayDelivery "relay"           MX or smarthost delivery; idle connections
    |- Listener "smtp:N"               MX (port 25)
    |- Listener "submission:N"         STARTTLS + AUTH (587)
    |- Listener "submissions:N"        implicit TLS + AUTH (465)
    |- Listener "pop3:N" / "pop3s:N"   POP3 with STLS / implicit TLS
    |- Listener "imap:N" / "imaps:N"   IMAP with STARTTLS / implicit TLS
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import IO, Any

from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService
from twisted.cred.portal import Portal
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger
from twisted.python import usage

from mta.auth import AccountRealm, Authenticator, DirectoryChecker, LoginThrottle
from mta.config import Config, embeddedDefault, loadConfig
from mta.delivery.bounce import Bouncer
from mta.delivery.local import LocalDelivery
from mta.delivery.mx import Host, MXFinder
from mta.delivery.relay import RelayDelivery, Smarthost
from mta.directory.files import DirectoryWatcher, FileDirectory
from mta.dkimkeys import KeyStore
from mta.dns import makeResolver
from mta.errors import ConfigError
from mta.imap.server import IMAPFactory
from mta.interfaces import IBlockingRunner, IDNSResolver
from mta.policy.authresults import InboundChecks
from mta.policy.chain import smtpPolicy
from mta.policy.dkimsign import SIGNED_HEADERS, DKIMSigner, LoadedKeys
from mta.pop3.server import POP3Factory
from mta.queue.control import ControlRequests, ControlServer, QueueCommands
from mta.queue.scheduler import QueueManager
from mta.queue.spool import Spool
from mta.routing import Router
from mta.service import ConnectionLimiter, Listener
from mta.smtp.client import ClientPolicy, connectSMTP
from mta.smtp.clienttls import clientContext
from mta.smtp.server import Mode, SMTPFactory
from mta.store.imapstore import IMAPStore
from mta.store.janitor import TmpCleaner
from mta.store.maildir import MaildirStore, mailRootOf
from mta.threads import BlockingRunner, ParallelSync
from mta.tls import TLSContextHolder, loadServerContext

_log = Logger(namespace="mta")

#: How often the directory files are checked for changes.
DIRECTORY_RELOAD_INTERVAL = 1.0
#: How long a batch of local deliveries may wait for company (see
#: L{MaildirStore}); well inside "delivered within a second".
DELIVERY_LINGER = 0.005
#: Allocations between two collections of the youngest generation (the
#: interpreter's default is 700).
GC_THRESHOLD = 10_000
#: How many fsyncs of one batch (queue or Maildir) may run at once.
SYNC_THREADS = 8
#: Threads for the SPF and DKIM checks of inbound mail that wait for DNS
#: (pyspf and dkimpy look up synchronously); the checks whose answers are
#: all cached run on one draining thread instead.
CHECK_THREADS = 8
#: How often the certificate files are checked for changes.
TLS_RELOAD_INTERVAL = 60.0

SMTP_TOO_MANY = b"421 4.7.0 Error: too many connections\r\n"
POP3_TOO_MANY = b"-ERR [SYS/TEMP] Too many connections\r\n"
IMAP_TOO_MANY = b"* BYE [UNAVAILABLE] Too many connections\r\n"


class StartupError(Exception):
    """
    The server cannot start (e.g. its queue cannot be loaded); the message
    is the one line to print.
    """


class Options(usage.Options):
    """
    C{twistd mta [--config PATH]}.
    """

    optParameters = [
        ["config", "c", None, "The TOML config file (default: the embedded default)."],
    ]


def makeService(options: Options) -> IService:
    """
    Build the whole server from the command line options.

    A bad config stops the start with one line naming the key; a queue
    that cannot be loaded with one line naming the queue folder.  Either
    way the exit status is 1 and no listener has been opened.
    """
    from twisted.internet import reactor

    try:
        config = loadConfig(options["config"]) if options["config"] else embeddedDefault()
        server = buildService(config, reactor)
    except (ConfigError, StartupError) as e:
        sys.stderr.write(f"mta: {e}\n")
        raise SystemExit(1) from None
    # Everything built so far lives as long as the process: keep the cyclic
    # garbage collector from walking it again and again, and let it run
    # less often (each message makes a few hundred short-lived objects).
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    return server


def _timer(
    parent: MultiService,
    name: str,
    interval: float,
    runner: IBlockingRunner,
    f: Any,
    clock: Any,
) -> None:
    timer = TimerService(interval, runner.run, f)
    timer.clock = clock
    timer.setName(name)
    timer.setServiceParent(parent)


class MailServer(MultiService):
    """
    The top of the service tree, keeping the shared parts at hand for
    tests, benchmarks and the admin hooks.

    @ivar config: the configuration it was built from.
    @ivar directory: the user directory.
    @ivar queue: the queue manager.
    """

    def __init__(self, config: Config, directory: FileDirectory, queue: QueueManager) -> None:
        super().__init__()
        self.config = config
        self.directory = directory
        self.queue = queue
        self.lockFile: IO[bytes] | None = None

    def stopService(self) -> Any:
        """
        Stop every service, then let go of the queue lock.
        """
        d = super().stopService()
        if self.lockFile is not None:
            self.lockFile.close()
            self.lockFile = None
        return d


def _queueUnusable(queueDir: Path, e: OSError) -> StartupError:
    """
    @return: the one-line error for a queue folder that cannot be used.
    """
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(queueDir) else ""
    return StartupError(f"queue: cannot load {queueDir}: {e.strerror or e}{where}")


def _holdLock(queueDir: Path) -> IO[bytes]:
    """
    Take the queue lock that says a server runs on this data dir.

    @raise ConfigError: another server runs on it.
    @raise StartupError: the queue folder cannot be used.
    """
    try:
        return ControlRequests(queueDir).holdLock()
    except OSError as e:
        if e.strerror is None:  # the lock is taken: already said in full
            raise ConfigError(f"config: data_dir: {e}") from None
        raise _queueUnusable(queueDir, e) from None


def _loadQueue(spool: Spool, queue: QueueManager) -> None:
    """
    Load the queue now, blocking, before any listener is opened: twistd
    ignores a Deferred returned by C{startService}, so a queue that fails
    to load there would leave a server accepting mail it never delivers.

    @raise StartupError: the queue cannot be read.
    """
    try:
        queue.resumeFrom(spool.loadSync())
    except OSError as e:
        raise _queueUnusable(spool.path, e) from None


def _controlQueue(top: MailServer, spool: Spool, runner: IBlockingRunner, reactor: Any) -> None:
    """
    Serve C{mta queue ...} on C{data_dir/control.sock}.
    """
    commands = QueueCommands(top.queue, spool, runner)
    server = ControlServer(ControlRequests(spool.path).socketPath, commands, reactor)
    server.setName("queue-control")
    server.setServiceParent(top)


def buildService(config: Config, reactor: Any) -> MailServer:
    """
    Wire every part for C{config}; the reactor is passed in so tests can
    run whole trees side by side.

    @raise ConfigError: the TLS files are unusable.
    @raise StartupError: the queue cannot be loaded.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The lock first: only the server that runs on this data dir may tell
    # the admin command what it has loaded (directory "acknowledge").
    lockFile = _holdLock(config.data_dir / "queue")
    try:
        return _build(config, reactor, lockFile)
    except BaseException:
        lockFile.close()
        raise


def buildRelay(
    config: Config, reactor: Any, runner: IBlockingRunner, resolver: IDNSResolver | None = None
) -> RelayDelivery:
    """
    The relay target: MX delivery through C{[dns]}, or the smarthost.

    @param resolver: the server's one resolver (made from C{[dns]} when
        not given).

    @raise ConfigError: the smarthost password file cannot be read.
    """
    relay = config.relay
    auth = None
    smarthost = Smarthost.parse(relay.smarthost) if relay.smarthost else None
    if relay.smarthost_user and relay.smarthost_password_file is not None:
        try:
            password = relay.smarthost_password_file.read_text().strip("\r\n")
        except OSError as e:
            raise ConfigError(
                f"config: relay.smarthost_password_file: cannot read: {e.strerror}"
            ) from None
        auth = (relay.smarthost_user, password)
    # A smarthost is one known server: TLS is required there (with AUTH
    # it carries a password); MX hosts get opportunistic TLS by default.
    tls = relay.tls if smarthost is None else ("verify" if relay.tls == "verify" else "required")
    policy = ClientPolicy(
        hostname=config.hostname,
        tls=tls,
        auth=auth,
        implicitTLS=smarthost is not None and smarthost.port == 465,
    )
    context = clientContext()

    def connect(host: Host, ip: str, port: int, policy: ClientPolicy) -> Any:
        return connectSMTP(reactor, (ip, port), host.name, policy, relay.source_address, context)

    if resolver is None:
        resolver = makeResolver(config.dns, reactor)
    finder = MXFinder(resolver, [config.hostname], relay.address_family)
    return RelayDelivery(
        finder=finder,
        connect=connect,
        policy=policy,
        clock=reactor,
        runner=runner,
        port=relay.outbound_port,
        perDomain=relay.connections_per_domain,
        smarthost=smarthost,
    )


def buildSigner(config: Config, runner: IBlockingRunner) -> DKIMSigner | None:
    """
    The DKIM signer over the keys in C{data_dir/dkim}, or C{None} when
    C{[dkim] sign} is off.
    """
    if not config.dkim.sign:
        return None
    keys = LoadedKeys(KeyStore(config.data_dir))
    headers = config.dkim.headers or SIGNED_HEADERS
    return DKIMSigner(keys, runner, config.relay.trusted_networks, headers)


def _build(config: Config, reactor: Any, lockFile: IO[bytes]) -> MailServer:
    """
    The body of L{buildService}, run with the queue lock held.
    """
    runner = BlockingRunner(reactor, config.queue.io_threads)
    directory = FileDirectory(config.data_dir, config.domains, acknowledge=True)
    sync = ParallelSync(SYNC_THREADS)
    store = MaildirStore(mailRootOf(config.data_dir), runner, reactor, DELIVERY_LINGER, sync)
    # One store, two views: local delivery and POP3 deletions reach the
    # IMAP sessions that have the folder selected.
    imapStore = IMAPStore(mailRootOf(config.data_dir), runner)
    store.onChange = imapStore.notifyChanged
    try:
        spool = Spool(config.data_dir / "queue", runner, sync, reactor.callFromThread)
    except OSError as e:
        raise _queueUnusable(config.data_dir / "queue", e) from None
    # The one resolver: the relay's MX lookups and the inbound checks.
    resolver = makeResolver(config.dns, reactor)
    relay = buildRelay(config, reactor, runner, resolver)
    router = Router(config.domains, LocalDelivery(directory, store), relay)
    queue = QueueManager(
        spool,
        router,
        reactor,
        config.relay.retry_schedule,
        config.relay.max_lifetime,
        config.queue.delivery_concurrency,
        delayWarning=config.relay.delay_warning,
    )
    queue.bouncer = Bouncer(
        queue, runner, config.hostname, reactor, returnLimit=config.limits.message_size
    )
    _loadQueue(spool, queue)

    top = MailServer(config, directory, queue)
    top.lockFile = lockFile
    relay.setName("relay")
    relay.setServiceParent(top)
    runner.setName("io")
    runner.setServiceParent(top)
    sync.setName("sync")
    sync.setServiceParent(top)
    _controlQueue(top, spool, runner, reactor)
    watcher = DirectoryWatcher(directory, runner, reactor)
    watcher.setName("directory-watch")
    watcher.setServiceParent(top)
    _timer(
        top,
        "directory-reload",
        DIRECTORY_RELOAD_INTERVAL,
        runner,
        directory.reloadIfChanged,
        reactor,
    )

    tls = loadServerContext(config)
    _timer(top, "tls-reload", TLS_RELOAD_INTERVAL, runner, tls.reloadIfChanged, reactor)
    cleaner = TmpCleaner(mailRootOf(config.data_dir), runner, reactor)
    cleaner.setName("tmp-cleanup")
    cleaner.setServiceParent(top)

    queue.setName("queue")
    queue.setServiceParent(top)

    limits = config.limits
    portal = Portal(AccountRealm(), [DirectoryChecker(directory, runner)])
    throttle = LoginThrottle(
        reactor,
        limits.login_delay_after,
        limits.login_block_after,
        limits.login_block_time,
    )
    authenticator = Authenticator(portal, throttle, reactor)
    # Mail authentication of inbound mail: first on one draining thread,
    # with DNS from the cache alone; a check that must wait for DNS again
    # on a pool of its own, so that slow lookups never hold up the fsyncs
    # of the io pool.
    # (Services stop in the reverse order: the draining thread first, as
    # it may still hand checks to the pool.)
    lookupsRunner = BlockingRunner(reactor, CHECK_THREADS, name="checks-dns")
    lookupsRunner.setName("checks-dns")
    lookupsRunner.setServiceParent(top)
    checksRunner = BlockingRunner(reactor, 1, name="checks", drain=True)
    checksRunner.setName("checks")
    checksRunner.setServiceParent(top)
    inbound = InboundChecks(
        config.hostname,
        config.checks,
        resolver,
        reactor,
        checksRunner,
        waitingRunner=lookupsRunner,
    )
    # Every SMTP listener asks the same checks; DKIM signing last.
    policy = smtpPolicy(
        directory,
        config.relay.trusted_networks,
        limits,
        reactor,
        signer=buildSigner(config, runner),
        inbound=inbound,
    )

    def smtp(mode: Mode) -> SMTPFactory:
        return SMTPFactory(
            mode=mode,
            hostname=config.hostname,
            directory=directory,
            sink=queue,
            policy=policy,
            limits=limits,
            clock=reactor,
            login=authenticator,
            tls=tls,
        )

    pop3 = POP3Factory(authenticator, store, tls, config.hostname, limits, reactor)
    imap = IMAPFactory(authenticator, imapStore, tls, config.hostname, limits, reactor)
    listeners: list[tuple[str, tuple[str, ...], IProtocolFactory, bytes, bool]] = [
        ("smtp", config.listen.smtp, smtp(Mode.MX), SMTP_TOO_MANY, False),
        (
            "submission",
            config.listen.submission,
            smtp(Mode.SUBMISSION),
            SMTP_TOO_MANY,
            False,
        ),
        (
            "submissions",
            config.listen.submissions,
            smtp(Mode.SUBMISSIONS),
            SMTP_TOO_MANY,
            True,
        ),
        ("pop3", config.listen.pop3, pop3, POP3_TOO_MANY, False),
        ("pop3s", config.listen.pop3s, pop3, POP3_TOO_MANY, True),
        ("imap", config.listen.imap, imap, IMAP_TOO_MANY, False),
        ("imaps", config.listen.imaps, imap, IMAP_TOO_MANY, True),
    ]
    for name, descriptions, factory, refusal, implicitTLS in listeners:
        for i, description in enumerate(descriptions):
            limited = ConnectionLimiter.fromConfig(factory, limits, refusal, reactor)
            listener = Listener(description, limited, reactor, tls if implicitTLS else None)
            listener.setName(f"{name}:{i}")
            listener.setServiceParent(top)
    return top


def listeningPorts(top: MailServer, name: str) -> list[Listener]:
    """
    @return: the listeners named C{name:N} in a tree built by
        L{buildService} (for tests and benchmarks).
    """
    return [s for s in top if isinstance(s, Listener) and (s.name or "").startswith(f"{name}:")]


__all__ = ["Options", "StartupError", "TLSContextHolder", "buildService", "makeService"]
