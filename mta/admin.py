# -*- test-case-name: tests.test_admin -*-
"""
The C{mta} admin command: users, aliases and config checks.

C{mta [--config PATH] COMMAND ...}, as SPEC section 3 says.  It changes
the same files the running server reads (L{mta.directory.files}); when a
server runs on the same data dir, C{user} and C{alias} changes return only
once that server says it has loaded them (or, after L{LOAD_TIMEOUT}
seconds, with a warning line), so a login right after C{mta user add}
succeeds.

Exit status 0 on success; 1 with one line on stderr otherwise, e.g.
C{mta: user alice@example.com exists}.  Passwords and hashes are never
printed.

C{mta queue ...} talks to the running server over its control socket
(L{mta.queue.control}); with none running, C{list}, C{show} and
C{delete} use the queue files themselves.

Each command group (C{user}, C{alias}, C{queue}, C{check}) is one C{_add*Commands}
function that registers its subcommands and handlers; a new group (queue,
dkim, dns) is one more such function and one line in L{_buildParser}.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from mta.config import Config, embeddedDefault, loadConfig
from mta.delivery.bounce import readHeaders
from mta.directory.files import FileDirectory, waitUntilLoaded
from mta.envelope import Envelope
from mta.errors import ConfigError
from mta.message import MessageBody
from mta.queue.control import ControlError, ControlRequests
from mta.queue.describe import describeMessage, renderList, renderShow
from mta.queue.spool import Spool
from mta.threads import SynchronousRunner

_Handler = Callable[[argparse.Namespace], int]

#: How long a C{user} or C{alias} change waits for a running server to
#: load it: it takes milliseconds with inotify, a second without.
LOAD_TIMEOUT = 5.0

#: How the wait sleeps and tells the time; tests replace them.
_sleep: Callable[[float], object] = time.sleep
_monotonic: Callable[[], float] = time.monotonic


class _UsageError(Exception):
    """
    The command line is wrong; the message says how.
    """


class _Parser(argparse.ArgumentParser):
    """
    An C{ArgumentParser} whose errors follow our rule (one line, exit 1)
    instead of argparse's usage dump and exit 2.
    """

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _config(args: argparse.Namespace) -> Config:
    """
    @return: the config named by C{--config}, or the embedded default.
    @raise ConfigError: the file is not valid.
    """
    if args.config is None:
        return embeddedDefault()
    return loadConfig(args.config)


def _directory(args: argparse.Namespace) -> FileDirectory:
    """
    @return: the user directory of the configured server.
    """
    config = _config(args)
    return FileDirectory(config.data_dir, config.domains)


def _awaitServer(directory: FileDirectory) -> None:
    """
    After a change to the users or aliases file: if a server runs on this
    data dir, wait until it has loaded the files as they are now.  If it
    does not say so in time, warn on stderr (the change itself is made).
    """
    if not ControlRequests(directory.dataDir / "queue").serverRunning():
        return
    if not waitUntilLoaded(directory.dataDir, LOAD_TIMEOUT, _sleep, _monotonic):
        print(
            f"mta: warning: saved, but the running server did not confirm loading "
            f"the change within {LOAD_TIMEOUT:g} seconds (see its log)",
            file=sys.stderr,
        )


def _readPassword(args: argparse.Namespace) -> str:
    """
    Read a new password: one line from stdin with C{--password-stdin},
    else prompted twice on the terminal.

    @raise ValueError: empty, or the two entries differ.
    """
    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        try:
            password = getpass.getpass("New password: ")
            again = getpass.getpass("Retype new password: ")
        except EOFError:
            raise ValueError("no password given") from None
        if again != password:
            raise ValueError("passwords do not match")
    if not password:
        raise ValueError("empty password")
    return password


def _hash(password: str) -> str:
    """
    @return: the argon2id hash of C{password}.
    """
    from mta.auth import hashPassword

    return hashPassword(password)


def _userAdd(args: argparse.Namespace) -> int:
    """
    C{mta user add ADDRESS}: check the address, ask for the password,
    create the mail folders, then the account.
    """
    from mta.store.maildir import createUserFolders

    directory = _directory(args)
    address = directory.checkNewUser(args.address)
    hashed = _hash(_readPassword(args))
    # Folders first: if they cannot be made, no account without a mailbox.
    createUserFolders(directory.dataDir, address)
    directory.addUser(address, hashed)
    _awaitServer(directory)
    return 0


def _userPasswd(args: argparse.Namespace) -> int:
    """
    C{mta user passwd ADDRESS}: replace a user's password.
    """
    directory = _directory(args)
    if directory.passwordHash(args.address) is None:
        raise ValueError(f"no such user {args.address.strip().lower()}")
    directory.setPassword(args.address, _hash(_readPassword(args)))
    _awaitServer(directory)
    return 0


def _userDel(args: argparse.Namespace) -> int:
    """
    C{mta user del ADDRESS}: remove the account; its mail stays on disk.
    """
    directory = _directory(args)
    directory.deleteUser(args.address)
    _awaitServer(directory)
    return 0


def _userList(args: argparse.Namespace) -> int:
    """
    C{mta user list}: one address per line, sorted.
    """
    for user in _directory(args).users():
        print(user)
    return 0


def _aliasAdd(args: argparse.Namespace) -> int:
    """
    C{mta alias add ALIAS TARGET...}: create an alias or add targets.
    """
    directory = _directory(args)
    directory.addAlias(args.alias, args.targets)
    _awaitServer(directory)
    return 0


def _aliasDel(args: argparse.Namespace) -> int:
    """
    C{mta alias del ALIAS}.
    """
    directory = _directory(args)
    directory.deleteAlias(args.alias)
    _awaitServer(directory)
    return 0


def _aliasList(args: argparse.Namespace) -> int:
    """
    C{mta alias list}: C{alias: target, target} per line, sorted.
    """
    for alias, targets in _directory(args).aliases().items():
        print(f"{alias}: {', '.join(targets)}")
    return 0


def _dkimKeygen(args: argparse.Namespace) -> int:
    """
    C{mta dkim keygen DOMAIN [--selector S] [--algorithm rsa|ed25519]}:
    make a key and print the zone-file line that publishes it.  A domain
    that is not local gets a warning line (its mail is signed only when it
    comes from a trusted network).
    """
    from mta.dkimkeys import KeyStore, defaultSelector, normalizeDomain

    config = _config(args)
    domain = normalizeDomain(args.domain)
    selector = args.selector or defaultSelector(args.algorithm)
    key = KeyStore(config.data_dir).generate(domain, selector, args.algorithm)
    if domain not in {normalizeDomain(d) for d in config.domains}:
        print(f"mta: warning: {domain} is not a local domain (see 'domains')", file=sys.stderr)
    print(key.zoneLine())
    return 0


def _dkimList(args: argparse.Namespace) -> int:
    """
    C{mta dkim list}: a line per key: domain, selector, algorithm, file,
    and whether it signs (the newest key of each algorithm does).
    """
    from mta.dkimkeys import KeyStore, normalizeDomain

    config = _config(args)
    store = KeyStore(config.data_dir)
    local = {normalizeDomain(d) for d in config.domains}
    found = store.keys()
    for key in found:
        signing = store.signingKeys(key.domain)
        if not config.dkim.sign:
            state = "not signing ([dkim] sign = false)"
        elif key in signing:
            state = "signing"
        else:
            newer = [k.selector for k in signing if k.algorithm == key.algorithm]
            state = f"not signing (replaced by {', '.join(newer)})"
        if key.domain not in local:
            state += ", not a local domain"
        print(f"{key.domain} {key.selector} {key.algorithm} {key.path} {state}")
    return 0


def _check(args: argparse.Namespace) -> int:
    """
    C{mta check}: validate the config (listener descriptions included),
    the C{[tls]} certificate and key it names, and the users and aliases
    files.
    """
    config = _config(args)
    if config.tls.certificate is not None and config.tls.private_key is not None:
        from mta.tls import checkCertificateFiles

        checkCertificateFiles(config.tls.certificate, config.tls.private_key)
    directory = FileDirectory(config.data_dir, config.domains)
    if directory.problems:
        raise ValueError(directory.problems[0])
    print(f"ok: {config.source}")
    return 0


def _dns(args: argparse.Namespace) -> int:
    """
    C{mta dns DOMAIN [--json] [--ip ADDRESS]}: check the records DOMAIN
    needs in DNS (L{mta.dnsdoctor}), asking the servers of C{[dns]
    nameservers}; exit 1 when one is missing or wrong.
    """
    import ipaddress

    from twisted.internet.task import react

    from mta.dkimkeys import KeyStore
    from mta.dns import makeResolver
    from mta.dnsdoctor import ServerFacts, diagnose, exitStatus, renderJSON, renderText

    config = _config(args)
    domain = args.domain.strip().rstrip(".").lower()
    if not domain:
        raise ValueError("dns: no domain given")
    ip = ""
    if args.ip is not None:
        try:
            ip = str(ipaddress.ip_address(args.ip.strip()))
        except ValueError:
            raise ValueError(f"--ip {args.ip}: not an IP address") from None
    facts = ServerFacts(
        hostname=config.hostname,
        sourceAddress=config.relay.source_address,
        ip=ip,
        dkimKeys=KeyStore(config.data_dir).keysFor(domain),
    )
    outcome: list[Any] = []

    def run(reactor: Any) -> Any:
        resolver = makeResolver(config.dns, reactor)
        return diagnose(resolver, domain, facts).addBoth(outcome.append)

    try:
        react(run)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    [findings] = outcome
    if not isinstance(findings, list):
        findings.raiseException()
    if args.json:
        print(renderJSON(findings))
    else:
        for line in renderText(domain, findings, sys.stdout.encoding):
            print(line)
    return exitStatus(findings)


def _queueControl(args: argparse.Namespace) -> tuple[Config, ControlRequests]:
    """
    @return: the config, and the lock and socket of its queue.
    @raise ValueError: the queue folder does not exist.
    """
    config = _config(args)
    queueDir = config.data_dir / "queue"
    if not queueDir.is_dir():
        raise ValueError(f"{queueDir}: no queue here (has the server ever run?)")
    return config, ControlRequests(queueDir)


def _ask(control: ControlRequests, command: str, queueId: str | None = None) -> Any:
    """
    Send one request to the running server.

    @return: the answer's data, or its one-line text.
    @raise ValueError: the server refused it, or did not answer.
    """
    try:
        return control.request(command, queueId)
    except ControlError as e:
        raise ValueError(str(e)) from None


def _offline(config: Config, queueId: str | None) -> list[dict[str, Any]]:
    """
    Describe messages from the spool files, with no server running
    (blocking): C{queueId}'s, with its headers, or all of them.

    @raise ValueError: C{queueId} is not in the queue.
    """
    spool = Spool(config.data_dir / "queue", SynchronousRunner())
    relay, now = config.relay, time.time()

    def describe(envelope: Envelope, body: MessageBody) -> dict[str, Any]:
        return describeMessage(envelope, body.size, now, relay.retry_schedule, relay.max_lifetime)

    if queueId is None:
        found = []
        for envelope in spool.envelopesSync():
            try:
                found.append(describe(*spool.readSync(envelope.queueId)))
            except (KeyError, ValueError):
                continue  # gone since the folder was listed
        return found
    try:
        envelope, body = spool.readSync(queueId)
    except KeyError:
        raise ValueError(f"{queueId}: no such message in the queue") from None
    headers = readHeaders(body).decode("utf-8", "replace")
    return [{**describe(envelope, body), "headers": headers}]


def _printJSON(data: Any) -> None:
    """
    Print C{data} as indented JSON, for scripts.
    """
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _queueList(args: argparse.Namespace) -> int:
    """
    C{mta queue list [--json]}: a line per message: id, age, size, sender,
    and each recipient with its state, last error, attempts and next try.
    """
    config, control = _queueControl(args)
    running = control.serverRunning()
    messages = _ask(control, "list") if running else _offline(config, None)
    if args.json:
        _printJSON(messages)
    else:
        for line in renderList(messages, time.time()):
            print(line)
    return 0


def _queueShow(args: argparse.Namespace) -> int:
    """
    C{mta queue show ID [--json]}: the envelope, each recipient's timeline
    of attempts and next try, and the message's headers.
    """
    config, control = _queueControl(args)
    if control.serverRunning():
        message = _ask(control, "show", args.id)
    else:
        [message] = _offline(config, args.id)
    if args.json:
        _printJSON(message)
    else:
        for line in renderShow(message, time.time()):
            print(line)
    return 0


def _queueAction(args: argparse.Namespace) -> int:
    """
    C{mta queue flush [ID]}, C{hold ID}, C{release ID}, C{bounce ID}:
    done by the running server, which says in one line what it did.
    """
    _, control = _queueControl(args)
    if not control.serverRunning():
        raise ValueError(
            f"no server is running: queue {args.action} needs one "
            "(queued mail is tried when it starts)"
        )
    print(_ask(control, args.action, args.id))
    return 0


def _queueDelete(args: argparse.Namespace) -> int:
    """
    C{mta queue delete ID}: remove a message without delivering it; by the
    running server, or from the spool files when none runs.
    """
    config, control = _queueControl(args)
    if control.serverRunning():
        print(_ask(control, "delete", args.id))
        return 0
    spool = Spool(config.data_dir / "queue", SynchronousRunner())
    try:
        spool.readEnvelope(args.id)
    except KeyError:
        raise ValueError(f"{args.id}: no such message in the queue") from None
    spool.removeSync(args.id)
    print(f"{args.id}: deleted")
    return 0


def _command(
    group: argparse._SubParsersAction[_Parser], name: str, handler: _Handler, help: str
) -> _Parser:
    """
    Add one subcommand that runs C{handler}.
    """
    parser = group.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=handler)
    return parser


def _addUserCommands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """
    Register C{mta user add|passwd|del|list}.
    """
    user = commands.add_parser("user", help="manage user accounts")
    sub = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, text in [
        ("add", _userAdd, "create a user and its mail folders"),
        ("passwd", _userPasswd, "change a user's password"),
    ]:
        parser = _command(sub, name, handler, text)
        parser.add_argument("address", metavar="ADDRESS")
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of stdin",
        )
    parser = _command(sub, "del", _userDel, "delete a user (its mail stays)")
    parser.add_argument("address", metavar="ADDRESS")
    _command(sub, "list", _userList, "list the users")


def _addAliasCommands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """
    Register C{mta alias add|del|list}.
    """
    alias = commands.add_parser("alias", help="manage aliases")
    sub = alias.add_subparsers(dest="action", required=True, metavar="ACTION")
    parser = _command(sub, "add", _aliasAdd, "create an alias or add targets to it")
    parser.add_argument("alias", metavar="ALIAS")
    parser.add_argument("targets", metavar="TARGET", nargs="+")
    parser = _command(sub, "del", _aliasDel, "delete an alias")
    parser.add_argument("alias", metavar="ALIAS")
    _command(sub, "list", _aliasList, "list the aliases and their targets")


def _addDKIMCommands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """
    Register C{mta dkim keygen|list}.
    """
    dkim = commands.add_parser("dkim", help="manage the DKIM signing keys")
    sub = dkim.add_subparsers(dest="action", required=True, metavar="ACTION")
    parser = _command(sub, "keygen", _dkimKeygen, "make a signing key and print its DNS record")
    parser.add_argument("domain", metavar="DOMAIN")
    parser.add_argument(
        "--selector",
        metavar="S",
        help="the selector (default: s or e, for rsa or ed25519, then YYYYMM)",
    )
    parser.add_argument(
        "--algorithm",
        choices=("rsa", "ed25519"),
        default="rsa",
        help="rsa (2048 bits, the default) or ed25519",
    )
    _command(sub, "list", _dkimList, "list the keys and which of them sign")


def _addQueueCommands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """
    Register C{mta queue list|show|flush|hold|release|bounce|delete}.
    """
    queue = commands.add_parser("queue", help="inspect and manage the mail queue")
    sub = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, text in [
        ("list", _queueList, "a line per queued message"),
        ("show", _queueShow, "a message's envelope, delivery timeline and headers"),
    ]:
        parser = _command(sub, name, handler, text)
        if name == "show":
            parser.add_argument("id")
        parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    _command(sub, "flush", _queueAction, "try now (all, or one)").add_argument("id", nargs="?")
    for name, text in [
        ("hold", "make no attempt until released (survives a restart)"),
        ("release", "undo hold and try now"),
        ("bounce", "fail every pending recipient now and report to the sender"),
    ]:
        _command(sub, name, _queueAction, text).add_argument("id")
    _command(sub, "delete", _queueDelete, "remove a message").add_argument("id")


def _addCheckCommand(commands: argparse._SubParsersAction[_Parser]) -> None:
    """
    Register C{mta check}.
    """
    _command(commands, "check", _check, "validate the config; exit 1 on error")


def _addDNSCommand(commands: argparse._SubParsersAction[_Parser]) -> None:
    """
    Register C{mta dns DOMAIN [--json] [--ip ADDRESS]}.
    """
    parser = _command(
        commands, "dns", _dns, "check the DNS records a domain needs; exit 1 if one is wrong"
    )
    parser.add_argument("domain", metavar="DOMAIN")
    parser.add_argument("--json", action="store_true", help="print JSON, for monitoring")
    parser.add_argument(
        "--ip",
        metavar="ADDRESS",
        help="this server's public address, when [relay] source_address is not set "
        "and the hostname does not resolve to it",
    )


def _buildParser() -> _Parser:
    """
    @return: the parser for the whole command line.
    """
    parser = _Parser(prog="mta", description="Administer the mta mail server.")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="the TOML config file (default: the embedded default, data in ./mta-data)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _addUserCommands(commands)
    _addAliasCommands(commands)
    _addDKIMCommands(commands)
    _addQueueCommands(commands)
    _addCheckCommand(commands)
    _addDNSCommand(commands)
    return parser


def _describe(error: Exception) -> str:
    """
    @return: one line for C{error}; file errors name the file.
    """
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the C{mta} command.

    @param argv: the arguments after the program name; C{sys.argv[1:]}
        when C{None}.
    @return: the exit status: 0 on success, 1 on any error (after one
        line on stderr).
    """
    try:
        args = _buildParser().parse_args(argv)
        handler: _Handler = args.handler
        return handler(args)
    except (_UsageError, ConfigError, ValueError, OSError) as e:
        print(f"mta: {_describe(e)}", file=sys.stderr)
        return 1
    except SystemExit as e:  # --help and --version end here
        return e.code if isinstance(e.code, int) else 1
    except KeyboardInterrupt:
        print("mta: interrupted", file=sys.stderr)
        return 1
