# -*- test-case-name: tests.test_transcripts -*-
"""
SMTP dialogs kept as data, replayed against the real protocol over a
L{StringTransport} (chasquid's C{.cmy} idea, minus the shell).

A transcript is a text file.  It starts with comment lines: the first
ones that are not settings describe what the dialog shows (the test's
description), and settings of the form C{# key: value} choose the server
(all optional)::

    # mode: smtp            smtp (default) | submission | submissions
    # peer: 192.0.2.7       the client's address (default 192.0.2.7; IPv6 too)
    # tls: yes              the session starts as if already under TLS (default no)
    # starttls: no          the server has no TLS context (default: it has a fake one)
    # hostname: mx.example.com
    # limits: recipients=3 errors=5      any LimitsConfig field, space-separated
    # trusted: 192.0.2.0/24 10.0.0.0/8   [relay] trusted_networks (default none)
    # user: carol@example.com hunter2    one more user, with a password
    # alias: all@example.com alice@example.com bob@example.com

Setting keys are lower case; an unknown one is an error.  Every transcript
has the same fixture besides: local domains C{example.com} (primary) and
C{example.org}; users C{alice@example.com} and C{bob@example.com}, both
with the password C{secret} (AUTH PLAIN C{AGFsaWNlQGV4YW1wbGUuY29tAHNlY3JldA==}
for alice); aliases C{team@example.com} (alice, bob) and
C{ext@example.com} (C{someone@remote.test}).  The limits default to
L{LimitsConfig}'s.

Then the dialog, one step a line (blank lines and other C{#} lines are
comments):

    - C{> TEXT}: the client writes C{TEXT} and CRLF, as one write.  C{>}
      alone writes an empty line.  Escapes: C{\\r}, C{\\n}, C{\\t},
      C{\\\\}, C{\\xHH} (any byte), and C{\\c} at the very end to leave
      out the CRLF (as in C{echo -e}).  Everything else is sent as
      written, UTF-8 encoded.
    - C{>> TEXT}: the same, added to the previous write (pipelining: the
      server gets the lines in one C{dataReceived} call).
    - C{< 250}: the server's next reply has code 250; any continuation
      lines (C{250-...}) are skipped.  C{< 250 2.1.5 Ok} also checks that
      the final line's text starts with C{2.1.5 Ok}.
    - C{< 250-PIPELINING}: the next line is a continuation line of a
      multi-line reply, starting with that text.  Mix the two to check
      chosen lines of an EHLO reply, ending with C{< 250}.
    - C{<+ TEXT}: a line of the last reply read starts (after its code)
      with C{TEXT}, wherever it is: an EHLO keyword, in whatever order.
    - C{<! TEXT}: no line of the last reply read contains C{TEXT}.
    - C{< close}: the server has closed the connection, and has sent
      nothing that was not expected.
    - C{< nothing}: the server has sent nothing that was not expected
      (yet: e.g. no reply before a pending login or queue write is done).
    - C{~ wait SECONDS}: the clock moves on (idle timeouts, login delays).
    - C{= queued N}: N messages have reached the sink in all.
    - C{= from ADDRESS}: the latest message's sender (C{<>} for null).
    - C{= to ADDRESS ...}: the latest message's recipients after
      aliases and plus-addressing, in order.
    - C{= contains TEXT} / C{= tail TEXT}: the latest message as queued
      (trace headers included) contains / ends with C{TEXT} (escapes as
      for C{>}).
    - C{= envelope KEY JSON}: in the latest message's envelope as the queue
      file stores it (L{Envelope.toJSON}), the value at C{KEY} equals the
      JSON value C{JSON}.  C{KEY} is a dotted path, numbers indexing lists
      (C{recipients.0.notify}); a key that is not there is C{null} (the
      queue file leaves out unset SMTPUTF8, REQUIRETLS and DSN fields), so
      C{= envelope smtputf8 true}, C{= envelope dsn_ret "HDRS"},
      C{= envelope recipients.1.orcpt null}.

Replies are checked in order.  Every reply the server sends must be
expected: output left over at the end (or before a C{< close}) is a
mismatch.  L{replay} raises L{TranscriptMismatch} naming the file and line
of the first step that did not hold.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import cast

from argon2 import PasswordHasher
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IOpenSSLContextFactory, ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import directlyProvides

from mta.auth import AccountRealm, Authenticator, DirectoryChecker, LoginThrottle
from mta.config import IPNetwork, LimitsConfig
from mta.directory.memory import MemoryDirectory
from mta.policy.chain import smtpPolicy
from mta.smtp.server import Mode, SMTPFactory, SMTPServer
from mta.testing.fakes import RecordingSink
from mta.threads import SynchronousRunner

#: Every fixture user's password.
PASSWORD = "secret"
DOMAINS = ("example.com", "example.org")
USERS = ("alice@example.com", "bob@example.com")
ALIASES = {
    "team@example.com": ("alice@example.com", "bob@example.com"),
    "ext@example.com": ("someone@remote.test",),
}

# Cheap on purpose: these hashes guard nothing and must not slow tests.
_hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
_SETTING = re.compile(r"^#\s*([a-z_]+):\s*(.*?)\s*$")
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}


class TranscriptError(Exception):
    """
    A transcript file is malformed.
    """


class TranscriptMismatch(AssertionError):
    """
    The server did not do what a transcript says.
    """


@dataclass(frozen=True)
class Step:
    """
    One dialog line of a transcript.

    @ivar lineno: where it is in the file (1-based).
    @ivar kind: C{send}, C{join}, C{reply}, C{present}, C{absent},
        C{close}, C{nothing}, C{wait} or C{check}.
    @ivar data: the bytes to send (C{send} and C{join}).
    @ivar code: the reply code expected (C{reply}).
    @ivar continuation: whether a C{reply} step is for a C{NNN-} line.
    @ivar text: text to find, the check's name and arguments, or the
        seconds to wait.
    """

    lineno: int
    kind: str
    data: bytes = b""
    code: str = ""
    continuation: bool = False
    text: str = ""


@dataclass
class Settings:
    """
    The server a transcript talks to; see the module docstring.
    """

    mode: Mode = Mode.MX
    peer: str = "192.0.2.7"
    tls: bool = False
    starttls: bool = True
    hostname: str = "mx.example.com"
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    trusted: tuple[IPNetwork, ...] = ()
    users: dict[str, str] = field(default_factory=lambda: dict.fromkeys(USERS, PASSWORD))
    aliases: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(ALIASES))


@dataclass
class Transcript:
    """
    A parsed transcript.

    @ivar name: the file name, for messages.
    @ivar description: the leading comment, one line.
    """

    name: str
    description: str
    settings: Settings
    steps: list[Step]


def decodeEscapes(text: str) -> tuple[bytes, bool]:
    """
    Turn a C{>} line's text into bytes.

    @return: the bytes, and whether a trailing C{\\c} asked for no CRLF.
    @raise TranscriptError: an unknown escape, or C{\\c} not at the end.
    """
    out = bytearray()
    pos = 0
    noNewline = False
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode("utf-8")
        pos = m.end()
        escape = m.group(1)
        if escape == "c":
            if m.end() != len(text):
                raise TranscriptError("\\c must end the line")
            noNewline = True
        elif escape in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[escape]
        elif escape.startswith("x") and len(escape) == 3:
            out.append(int(escape[1:], 16))
        else:
            raise TranscriptError(f"unknown escape \\{escape}")
    out += text[pos:].encode("utf-8")
    return bytes(out), noNewline


def _yes(value: str) -> bool:
    if value not in ("yes", "no"):
        raise TranscriptError(f"expected yes or no, not {value!r}")
    return value == "yes"


def _limits(value: str) -> LimitsConfig:
    kinds = {f.name: f.type for f in fields(LimitsConfig)}
    changes: dict[str, float | int] = {}
    for item in value.split():
        key, _, number = item.partition("=")
        if key not in kinds:
            raise TranscriptError(f"no such limit {key!r}")
        changes[key] = float(number) if kinds[key] in (float, "float") else int(number)
    return LimitsConfig(**changes)  # type: ignore[arg-type]


def _applySetting(settings: Settings, key: str, value: str) -> None:
    """
    @raise TranscriptError: unknown key or bad value.
    """
    if key == "mode":
        settings.mode = Mode(value)
    elif key == "peer":
        ipaddress.ip_address(value)
        settings.peer = value
    elif key == "tls":
        settings.tls = _yes(value)
    elif key == "starttls":
        settings.starttls = _yes(value)
    elif key == "hostname":
        settings.hostname = value
    elif key == "limits":
        settings.limits = _limits(value)
    elif key == "trusted":
        settings.trusted = tuple(ipaddress.ip_network(n) for n in value.split())
    elif key == "user":
        address, _, password = value.partition(" ")
        settings.users[address] = password.strip()
    elif key == "alias":
        alias, *targets = value.split()
        settings.aliases[alias] = tuple(targets)
    else:
        raise TranscriptError(f"unknown setting {key!r}")


def _parseStep(lineno: int, line: str) -> Step:
    """
    @raise TranscriptError: not a dialog line.
    """
    marker, _, rest = line.partition(" ")
    if marker in (">", ">>"):
        data, noNewline = decodeEscapes(rest)
        kind = "send" if marker == ">" else "join"
        return Step(lineno, kind, data=data if noNewline else data + b"\r\n")
    if marker == "<!":
        return Step(lineno, "absent", text=rest)
    if marker == "<+":
        return Step(lineno, "present", text=rest)
    if marker == "<":
        if rest.strip() in ("close", "nothing"):
            return Step(lineno, rest.strip())
        m = re.match(r"^(\d{3})(?:([ -])(.*))?$", rest)
        if m is None:
            raise TranscriptError(f"bad reply line {rest!r}")
        return Step(
            lineno, "reply", code=m.group(1), continuation=m.group(2) == "-", text=m.group(3) or ""
        )
    if marker == "~":
        verb, _, seconds = rest.partition(" ")
        if verb != "wait":
            raise TranscriptError(f"unknown action {verb!r}")
        float(seconds)
        return Step(lineno, "wait", text=seconds)
    if marker == "=":
        check = rest.split(" ", 1)[0]
        if check not in ("queued", "from", "to", "contains", "tail", "envelope"):
            raise TranscriptError(f"unknown check {check!r}")
        if check == "envelope":
            parts = rest.split(" ", 2)
            if len(parts) != 3 or not parts[1]:
                raise TranscriptError("= envelope needs a key and a JSON value")
            json.loads(parts[2])
        return Step(lineno, "check", text=rest)
    raise TranscriptError(f"not a dialog line: {line!r}")


def parseTranscript(text: str, name: str) -> Transcript:
    """
    Parse a transcript's text.

    @param name: the file's name, for error messages.
    @raise TranscriptError: the text is malformed; the message names
        C{name} and the line.
    """
    settings = Settings()
    description: list[str] = []
    steps: list[Step] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        try:
            if line.startswith("#"):
                setting = _SETTING.match(line)
                if setting and not steps:
                    _applySetting(settings, setting.group(1), setting.group(2))
                elif not steps and not description:
                    description.append(line.lstrip("#").strip())
            elif line.strip():
                steps.append(_parseStep(lineno, line))
        except (TranscriptError, ValueError) as e:
            raise TranscriptError(f"{name}:{lineno}: {e}") from e
    if not description or not description[0]:
        raise TranscriptError(f"{name}: no description (a first '# ...' line)")
    return Transcript(name, description[0], settings, steps)


def loadTranscript(path: Path | str) -> Transcript:
    """
    Read and parse a transcript file.

    @raise TranscriptError: it is malformed.
    """
    path = Path(path)
    return parseTranscript(path.read_text(encoding="utf-8"), path.name)


class TranscriptTransport(StringTransport):
    """
    A L{StringTransport} on which C{startTLS} only records that it was
    called (the protocol then believes it is under TLS).
    """

    tlsStarted = False

    def startTLS(self, contextFactory: object) -> None:
        self.tlsStarted = True


@dataclass
class Session:
    """
    A server built from a transcript's settings, connected to a
    L{TranscriptTransport}.
    """

    clock: Clock
    sink: RecordingSink
    directory: MemoryDirectory
    factory: SMTPFactory
    transport: TranscriptTransport
    protocol: SMTPServer


def buildSession(settings: Settings) -> Session:
    """
    Build the fixture server of L{Settings} and connect it.
    """
    clock = Clock()
    sink = RecordingSink()
    users = {address: _hasher.hash(password) for address, password in settings.users.items()}
    directory = MemoryDirectory(DOMAINS, users=users, aliases=settings.aliases)
    checker = DirectoryChecker(directory, SynchronousRunner(), _hasher.hash("nobody"))
    limits = settings.limits
    throttle = LoginThrottle(
        clock, limits.login_delay_after, limits.login_block_after, limits.login_block_time
    )
    factory = SMTPFactory(
        mode=settings.mode,
        hostname=settings.hostname,
        directory=directory,
        sink=sink,
        # The checks mta.tap gives every SMTP listener.
        policy=smtpPolicy(directory, settings.trusted, limits, clock),
        limits=limits,
        clock=clock,
        login=Authenticator(Portal(AccountRealm(), [checker]), throttle, clock),
        # Only handed to the fake startTLS, which ignores it.
        tls=cast(IOpenSSLContextFactory, object()) if settings.starttls else None,
    )
    ip = ipaddress.ip_address(settings.peer)
    kind = IPv4Address if ip.version == 4 else IPv6Address
    peer = kind("TCP", settings.peer, 40000)
    transport = TranscriptTransport(peerAddress=peer)
    if settings.tls:
        directlyProvides(transport, ISSLTransport)
    protocol = factory.buildProtocol(peer)
    protocol.makeConnection(transport)
    return Session(clock, sink, directory, factory, transport, protocol)


def _show(raw: bytes) -> str:
    """
    @return: a reply line as text, for comparisons and messages.
    """
    return raw.rstrip(b"\r\n").decode("utf-8", "replace")


def _lookup(data: object, key: str) -> object:
    """
    @return: the value at the dotted path C{key} in C{data} (numbers index
        lists), or C{None} where there is none.
    """
    for part in key.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


class _Replayer:
    """
    Walks a transcript's steps against a L{Session}.
    """

    def __init__(self, transcript: Transcript) -> None:
        self.transcript = transcript
        self.session = buildSession(transcript.settings)
        self.seen = 0
        self.lines: list[bytes] = []
        self.lastReply: list[bytes] = []
        self.replyDone = True
        self.write = bytearray()

    def fail(self, step: Step | None, message: str) -> TranscriptMismatch:
        where = f"line {step.lineno}" if step is not None else "end"
        return TranscriptMismatch(f"{self.transcript.name}:{where}: {message}")

    def flush(self) -> None:
        """
        Send the write being built, then collect what the server answered.
        """
        if self.write:
            data, self.write = bytes(self.write), bytearray()
            self.session.protocol.dataReceived(data)
        value = self.session.transport.value()
        fresh, self.seen = value[self.seen :], len(value)
        if self.lines and not self.lines[-1].endswith(b"\r\n"):
            fresh = self.lines.pop() + fresh
        self.lines.extend(fresh.splitlines(keepends=True))

    def nextLine(self, step: Step, wanted: str) -> bytes:
        if not self.lines:
            raise self.fail(step, f"expected {wanted!r}, but the server sent nothing more")
        line = self.lines.pop(0)
        if self.replyDone:
            self.lastReply = []
        self.lastReply.append(line)
        self.replyDone = line[3:4] != b"-"
        return line

    def expectReply(self, step: Step) -> None:
        wanted = f"{step.code}{'-' if step.continuation else ' '}{step.text}".rstrip()
        while True:
            raw = self.nextLine(step, wanted)
            line = _show(raw)
            code, separator, text = line[:3], line[3:4], line[4:]
            isLast = separator != "-"
            if code != step.code or (step.continuation and isLast):
                raise self.fail(step, f"expected {wanted!r}, got {line!r}")
            if not isLast and not step.continuation:
                continue  # skip to the final line of this reply
            if not text.startswith(step.text):
                raise self.fail(step, f"expected {wanted!r}, got {line!r}")
            return

    def expectPresent(self, step: Step) -> None:
        texts = [_show(raw)[4:] for raw in self.lastReply]
        if not any(text.startswith(step.text) for text in texts):
            raise self.fail(step, f"no line starts with {step.text!r} in {texts!r}")

    def expectAbsent(self, step: Step) -> None:
        for raw in self.lastReply:
            if step.text.encode("utf-8") in raw:
                raise self.fail(step, f"{step.text!r} is in {_show(raw)!r}")

    def expectNothing(self, step: Step) -> None:
        if self.lines:
            raise self.fail(step, f"expected no reply, got {_show(self.lines[0])!r}")

    def expectClosed(self, step: Step) -> None:
        if self.lines:
            raise self.fail(step, f"expected the close, got {_show(self.lines[0])!r}")
        if not self.session.transport.disconnecting:
            raise self.fail(step, "expected the server to close the connection; it is open")

    def check(self, step: Step) -> None:
        name, _, argument = step.text.partition(" ")
        messages = self.session.sink.messages
        if name == "queued":
            if len(messages) != int(argument):
                raise self.fail(step, f"expected {argument} queued, got {len(messages)}")
            return
        if not messages:
            raise self.fail(step, "no message was queued")
        envelope, data = messages[-1]
        if name == "from":
            got = f"<{envelope.sender}>" if envelope.sender.isNull else str(envelope.sender)
            ok = got == argument.strip()
        elif name == "to":
            got = " ".join(str(r.address) for r in envelope.recipients)
            ok = got == " ".join(argument.split())
        elif name == "envelope":
            key, _, wanted = argument.partition(" ")
            # Compared as canonical JSON text: true is not 1.
            got = json.dumps(_lookup(envelope.toJSON(), key), ensure_ascii=False, sort_keys=True)
            ok = got == json.dumps(json.loads(wanted), ensure_ascii=False, sort_keys=True)
        else:
            needle = decodeEscapes(argument)[0]
            got = repr(data[-len(needle) - 40 :] if name == "tail" else data[:2000])
            ok = data.endswith(needle) if name == "tail" else needle in data
        if not ok:
            raise self.fail(step, f"{step.text!r} does not hold; got {got}")

    def run(self) -> None:
        for step in self.transcript.steps:
            if step.kind == "join":
                self.write += step.data
                continue
            self.flush()
            if step.kind == "send":
                self.write += step.data
            elif step.kind == "reply":
                self.expectReply(step)
            elif step.kind == "present":
                self.expectPresent(step)
            elif step.kind == "absent":
                self.expectAbsent(step)
            elif step.kind == "close":
                self.expectClosed(step)
            elif step.kind == "nothing":
                self.expectNothing(step)
            elif step.kind == "wait":
                self.session.clock.advance(float(step.text))
            else:
                self.check(step)
        self.flush()
        if self.lines:
            raise self.fail(None, f"unexpected reply {_show(self.lines[0])!r}")


def replay(transcript: Transcript) -> Session:
    """
    Play C{transcript} against a fresh server.

    @return: the session, for further checks.
    @raise TranscriptMismatch: the first step that did not hold, by file
        and line.
    """
    replayer = _Replayer(transcript)
    replayer.run()
    return replayer.session
