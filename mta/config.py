# -*- test-case-name: tests.test_config -*-
"""
The TOML configuration file, loaded into a frozen, validated L{Config}.

No reactor, no sockets: just parsing.  Every unknown key and every bad
value raises L{ConfigError} with one line that names the key, e.g.
C{config: listen.smtp: expected a list of strings}.  Listener
descriptions go through Twisted's own endpoint parser (without
listening), so a description the server could not use fails here.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.endpoints import _parseServer, serverFromString

from mta.errors import ConfigError

_T = TypeVar("_T")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)B?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parseDuration(text: str | int | float) -> float:
    """
    Parse C{30s}, C{5m}, C{2h}, C{5d}, C{1w} (or a number of seconds).

    @raise ValueError: not a duration.
    """
    if isinstance(text, bool):
        raise ValueError("expected a duration like 30s, 5m, 2h or 5d")
    if isinstance(text, int | float):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a duration like 30s, 5m, 2h or 5d, not {text!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parseSize(text: str | int) -> int:
    """
    Parse C{10M}, C{512K}, C{1G} (or a number of bytes).

    @raise ValueError: not a size.
    """
    if isinstance(text, bool):
        raise ValueError("expected a size like 512K or 10M")
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"expected a size like 512K or 10M, not {text!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]


@dataclass(frozen=True)
class ListenConfig:
    """
    C{[listen]}: Twisted server endpoint descriptions per service.
    """

    smtp: tuple[str, ...] = ()
    submission: tuple[str, ...] = ()
    submissions: tuple[str, ...] = ()
    imap: tuple[str, ...] = ()
    imaps: tuple[str, ...] = ()
    pop3: tuple[str, ...] = ()
    pop3s: tuple[str, ...] = ()


@dataclass(frozen=True)
class TLSConfig:
    """
    C{[tls]}: the certificate chain and key; both C{None} means self-signed.
    """

    certificate: Path | None = None
    private_key: Path | None = None


@dataclass(frozen=True)
class RelayConfig:
    """
    C{[relay]}: who may relay and how outbound mail leaves.
    """

    trusted_networks: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    smarthost: str = ""
    outbound_port: int = 25
    source_address: str = ""
    retry_schedule: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400)
    max_lifetime: float = 5 * 86400
    #: After this long (from arrival) a message still being retried gets one
    #: delay DSN; 0 (C{""} in the file) sends none.
    delay_warning: float = 4 * 3600
    smarthost_user: str = ""
    smarthost_password_file: Path | None = None
    address_family: str = "any"
    tls: str = "opportunistic"
    connections_per_domain: int = 10


@dataclass(frozen=True)
class DNSConfig:
    """
    C{[dns]}: resolvers; empty means the system's.
    """

    nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChecksConfig:
    """
    C{[checks]}: mail authentication of inbound mail on the MX listener,
    each C{"off"}, C{"check"} (write the Authentication-Results header
    only) or C{"enforce"} (also refuse or file into Junk, see
    L{mta.policy.authresults}).
    """

    spf: str = "check"
    dkim: str = "check"
    dmarc: str = "enforce"


@dataclass(frozen=True)
class LimitsConfig:
    """
    C{[limits]}: what one client may do.  Defaults follow Postfix and Dovecot.

    @ivar message_size: largest message accepted (SMTP SIZE).
    @ivar recipients: most RCPT per message.
    @ivar line_length: longest command line, CRLF included.
    @ivar commands: most commands in one session.
    @ivar errors: protocol errors before the server hangs up.
    @ivar smtp_idle: idle time before an SMTP session is dropped.
    @ivar pop3_idle: idle time before a POP3 session is dropped.
    @ivar imap_idle: the IMAP autologout: idle time before a logged-in
        IMAP session is dropped (RFC 3501: at least 30 minutes).
    @ivar connections: simultaneous connections per listener.
    @ivar connections_per_ip: simultaneous connections from one address.
    @ivar imap_connections_per_user: simultaneous logged-in IMAP sessions
        of one user, from any address, over imap and imaps together.
    @ivar auth_failures: failed logins on one connection before hanging up.
    @ivar login_delay_after: failures from one IP before answers slow down.
    @ivar login_block_after: failures from one IP before logins are refused.
    @ivar login_block_time: how long the refusal and the count last.
    @ivar messages_per_hour: most messages one authenticated user may
        start in any hour (so a stolen password sends little spam).
    """

    message_size: int = 25 * 1024 * 1024
    recipients: int = 100
    line_length: int = 2048
    commands: int = 1000
    errors: int = 20
    smtp_idle: float = 300.0
    pop3_idle: float = 600.0
    imap_idle: float = 1800.0
    connections: int = 1000
    connections_per_ip: int = 50
    imap_connections_per_user: int = 20
    auth_failures: int = 3
    login_delay_after: int = 3
    login_block_after: int = 10
    login_block_time: float = 900.0
    messages_per_hour: int = 300


@dataclass(frozen=True)
class QueueConfig:
    """
    C{[queue]}: the delivery side of the queue.

    @ivar delivery_concurrency: messages delivered at once.
    @ivar io_threads: size of the thread pool for fsync and file work.
    """

    delivery_concurrency: int = 32
    io_threads: int = 16


#: Header fields a DKIM signature must not cover (RFC 6376 5.4): they
#: are added or changed in transit.
_UNSIGNABLE = frozenset(
    {"return-path", "received", "comments", "keywords", "bcc", "resent-bcc", "dkim-signature"}
)


@dataclass(frozen=True)
class DKIMConfig:
    """
    C{[dkim]}: signing of outbound mail with the keys in C{data_dir/dkim}.

    @ivar sign: sign mail of domains that have a key (C{mta dkim keygen}).
    @ivar headers: the header fields signed when present (lower case);
        empty means the built-in list (L{mta.policy.dkimsign.SIGNED_HEADERS}).
    """

    sign: bool = True
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    """
    The whole, validated configuration.
    """

    hostname: str
    data_dir: Path
    domains: tuple[str, ...]
    listen: ListenConfig
    tls: TLSConfig = field(default_factory=TLSConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    dkim: DKIMConfig = field(default_factory=DKIMConfig)
    source: str = "<embedded default>"


def _defaultHostname() -> str:
    name = socket.gethostname() or "localhost"
    return name.lower()


def embeddedDefault(dataDir: str | Path = "mta-data") -> Config:
    """
    The configuration C{twistd -n mta} runs with when given no file: local
    domain C{localhost}, 127.0.0.1 only, unprivileged ports.
    """
    local = "interface=127.0.0.1"
    return Config(
        hostname=_defaultHostname(),
        data_dir=Path(dataDir).absolute(),
        domains=("localhost",),
        listen=ListenConfig(
            smtp=(f"tcp:2525:{local}",),
            submission=(f"tcp:2587:{local}",),
            submissions=(f"tcp:2465:{local}",),
            imap=(f"tcp:2143:{local}",),
            imaps=(f"tcp:2993:{local}",),
            pop3=(f"tcp:2110:{local}",),
            pop3s=(f"tcp:2995:{local}",),
        ),
    )


class _Section:
    """
    Reads typed values out of one TOML table, tracking unknown keys.
    """

    def __init__(self, table: dict[str, Any], prefix: str) -> None:
        self.table = table
        self.prefix = prefix
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def fail(self, name: str, why: str) -> ConfigError:
        return ConfigError(f"config: {self.key(name)}: {why}")

    def get(self, name: str, convert: Callable[[Any], _T], default: _T) -> _T:
        self.seen.add(name)
        if name not in self.table:
            return default
        try:
            return convert(self.table[name])
        except (ValueError, TypeError) as e:
            raise self.fail(name, str(e)) from None

    def sub(self, name: str) -> _Section:
        self.seen.add(name)
        value = self.table.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, "expected a table")
        return _Section(value, f"{self.prefix}{name}.")

    def finish(self) -> None:
        for name in self.table:
            if name not in self.seen:
                raise ConfigError(f"config: {self.key(name)}: unknown key")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {value!r}")
    return value


def _nonEmptyString(value: Any) -> str:
    s = _string(value)
    if not s.strip():
        raise ValueError("must not be empty")
    return s


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of strings")
    return tuple(value)


def _endpoints(value: Any) -> tuple[str, ...]:
    items = _strings(value)
    for item in items:
        try:
            _checkEndpoint(item)
        except Exception as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"{item!r} is not a valid endpoint description: {why}") from None
    return items


def _checkEndpoint(description: str) -> None:
    """
    Parse a server endpoint description with Twisted's own parser, as the
    listener will, building the endpoint object but never listening.

    C{systemd:} descriptions only have their syntax checked: building
    their endpoint looks the socket up in C{LISTEN_FDS}, which only the
    server started by systemd has (not C{mta check}).

    @raise Exception: whatever the parser raises for a bad description
        (C{ValueError}, C{TypeError}, C{KeyError}...).
    """
    if description.partition(":")[0].strip().lower() == "systemd":
        _checkSystemd(description)
        return
    # The reactor is only stored by the endpoint, and used when it
    # listens, which it never does here.
    endpoint = serverFromString(None, description)
    port = getattr(endpoint, "_port", 0)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(f"{port} is not a port number")


def _checkSystemd(description: str) -> None:
    """
    Check C{systemd:domain=INET:index=N} (or C{name=...}) without asking
    for the inherited sockets.

    @raise ValueError: not a usable description.
    """
    # Twisted's grammar for descriptions (quoting, key=value); the systemd
    # parser's own checks follow, short of the socket lookup.
    _, args, kwargs = _parseServer(description, None)
    unknown = set(kwargs) - {"domain", "index", "name"}
    if args or unknown:
        raise ValueError(f"unexpected {', '.join(sorted(unknown)) or args[0]!s}")
    if not hasattr(socket, f"AF_{kwargs.get('domain', '')}"):
        raise ValueError("domain= must be INET, INET6 or UNIX")
    if ("index" in kwargs) == ("name" in kwargs):
        raise ValueError("give exactly one of index= and name=")
    if "index" in kwargs and not str(kwargs["index"]).isdigit():
        raise ValueError(f"index={kwargs['index']} is not a number")


def _choice(*allowed: str) -> Callable[[Any], str]:
    """
    @return: a converter accepting only one of C{allowed}.
    """

    def convert(value: Any) -> str:
        s = _string(value)
        if s not in allowed:
            raise ValueError(f"expected one of {', '.join(map(repr, allowed))}, not {s!r}")
        return s

    return convert


def _domains(value: Any) -> tuple[str, ...]:
    items = _strings(value)
    if not items:
        raise ValueError("at least one local domain is needed")
    out = []
    for d in items:
        d = d.strip().lower().rstrip(".")
        if not re.match(r"^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$", d) or ".." in d:
            raise ValueError(f"{d!r} is not a domain name")
        out.append(d)
    return tuple(out)


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in _strings(value))


def _positiveInt(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive integer, not {value!r}")
    return value


def _port(value: Any) -> int:
    port = _positiveInt(value)
    if port > 65535:
        raise ValueError(f"{port} is not a port number")
    return port


def _hostPort(value: Any) -> str:
    s = _string(value)
    if s and not re.match(r"^(\[[0-9a-fA-F:.]+\]|[^:\s]+)(:\d{1,5})?$", s):
        raise ValueError(f"expected 'host:port', not {s!r}")
    return s


def _address(value: Any) -> str:
    s = _string(value)
    if s:
        ipaddress.ip_address(s)
    return s


def _nameservers(value: Any) -> tuple[str, ...]:
    items = _strings(value)
    for item in items:
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        if item.startswith("["):
            host, _, port = item[1:].partition("]:")
        ipaddress.ip_address(host or item)
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"bad port in {item!r}")
    return items


def _schedule(value: Any) -> tuple[float, ...]:
    items = _strings(value)
    if not items:
        raise ValueError("needs at least one interval")
    schedule = tuple(parseDuration(v) for v in items)
    for text, seconds in zip(items, schedule, strict=True):
        # Zero would retry a failing message in a tight loop.
        if seconds < 1:
            raise ValueError(f"{text!r} is shorter than 1s")
    return schedule


def _duration(value: Any) -> float:
    d = parseDuration(value)
    if d <= 0:
        raise ValueError("must be more than zero")
    return d


def _size(value: Any) -> int:
    s = parseSize(value)
    if s <= 0:
        raise ValueError("must be more than zero")
    return s


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, not {value!r}")
    return value


def _signedHeaders(value: Any) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in _strings(value))
    for name in names:
        if not re.match(r"^[!-9;-~]+$", name):
            raise ValueError(f"{name!r} is not a header field name")
        if name in _UNSIGNABLE:
            raise ValueError(f"{name!r} must not be signed (it changes in transit)")
    if "from" not in names:
        raise ValueError("must include 'from' (RFC 6376 5.4)")
    return names


def _build(data: dict[str, Any], source: str, base: Path) -> Config:
    top = _Section(data, "")
    hostname = top.get("hostname", _nonEmptyString, _defaultHostname())
    dataDir = top.get("data_dir", _nonEmptyString, "/var/lib/mta")
    noDomains: tuple[str, ...] = ()  # the empty default, typed
    domains = top.get("domains", _domains, noDomains)
    if not domains:
        raise ConfigError("config: domains: at least one local domain is needed")

    s = top.sub("listen")
    listen = ListenConfig(
        **{k: s.get(k, _endpoints, noDomains) for k in ListenConfig.__dataclass_fields__}
    )
    s.finish()

    s = top.sub("tls")
    cert = s.get("certificate", _string, "")
    key = s.get("private_key", _string, "")
    if bool(cert) != bool(key):
        missing = "private_key" if cert else "certificate"
        raise ConfigError(f"config: tls.{missing}: certificate and private_key go together")
    s.finish()
    tls = TLSConfig(
        certificate=(base / cert) if cert else None,
        private_key=(base / key) if key else None,
    )

    s = top.sub("relay")
    d = RelayConfig()
    relay = RelayConfig(
        trusted_networks=s.get("trusted_networks", _networks, d.trusted_networks),
        smarthost=s.get("smarthost", _hostPort, d.smarthost),
        outbound_port=s.get("outbound_port", _port, d.outbound_port),
        source_address=s.get("source_address", _address, d.source_address),
        retry_schedule=s.get("retry_schedule", _schedule, d.retry_schedule),
        max_lifetime=s.get("max_lifetime", _duration, d.max_lifetime),
        delay_warning=s.get(
            "delay_warning", lambda v: 0.0 if v == "" else _duration(v), d.delay_warning
        ),
        smarthost_user=s.get("smarthost_user", _string, d.smarthost_user),
        smarthost_password_file=s.get(
            "smarthost_password_file", lambda v: (base / v) if _string(v) else None, None
        ),
        address_family=s.get("address_family", _choice("any", "ipv4", "ipv6"), "any"),
        tls=s.get("tls", _choice("opportunistic", "verify"), "opportunistic"),
        connections_per_domain=s.get(
            "connections_per_domain", _positiveInt, d.connections_per_domain
        ),
    )
    if relay.smarthost_user and relay.smarthost_password_file is None:
        raise ConfigError("config: relay.smarthost_password_file: needed with relay.smarthost_user")
    s.finish()

    s = top.sub("dns")
    dns = DNSConfig(nameservers=s.get("nameservers", _nameservers, ()))
    s.finish()

    s = top.sub("checks")
    mode = _choice("off", "check", "enforce")
    c = ChecksConfig()
    checks = ChecksConfig(
        spf=s.get("spf", mode, c.spf),
        dkim=s.get("dkim", mode, c.dkim),
        dmarc=s.get("dmarc", mode, c.dmarc),
    )
    s.finish()

    s = top.sub("limits")
    dl = LimitsConfig()
    limitTypes: dict[str, Callable[[Any], Any]] = {
        "message_size": _size,
        "smtp_idle": _duration,
        "pop3_idle": _duration,
        "imap_idle": _duration,
        "login_block_time": _duration,
    }
    limits = LimitsConfig(
        **{
            k: s.get(k, limitTypes.get(k, _positiveInt), getattr(dl, k))
            for k in LimitsConfig.__dataclass_fields__
        }
    )
    s.finish()

    s = top.sub("queue")
    dq = QueueConfig()
    queue = QueueConfig(
        **{k: s.get(k, _positiveInt, getattr(dq, k)) for k in QueueConfig.__dataclass_fields__}
    )
    s.finish()

    s = top.sub("dkim")
    dkim = DKIMConfig(
        sign=s.get("sign", _bool, True),
        headers=s.get("headers", _signedHeaders, ()),
    )
    s.finish()

    top.finish()

    return Config(
        hostname=hostname.lower(),
        data_dir=(base / dataDir).absolute(),
        domains=domains,
        listen=listen,
        tls=tls,
        checks=checks,
        relay=relay,
        dns=dns,
        limits=limits,
        queue=queue,
        dkim=dkim,
        source=source,
    )


def loadConfig(path: str | Path) -> Config:
    """
    Read and validate a TOML config file.  Relative paths in it are taken
    relative to the file's folder.

    @raise ConfigError: the file is missing, not TOML, or not valid.
    """
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"config: cannot read {p}: {e.strerror}") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config: {p}: not valid TOML: {e}") from None
    return _build(data, str(p), p.absolute().parent)
