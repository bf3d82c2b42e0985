"""
Crash safety of the IMAP index (issue 9 item 4): SIGKILL a real C{twistd}
server while clients APPEND and UID STORE, restart it, and find every UID
and every flag change that was answered OK, no UID given twice, UIDNEXT
past every UID handed out, and the Maildir file names' C{:2,} flags in
step with the index.
"""

from __future__ import annotations

import contextlib
import imaplib
import random
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.python import log
from twisted.trial.unittest import TestCase

from tests.e2e.serverprocess import CONFIG_HEAD, ServerProcess, newInstance

CONFIG = (
    CONFIG_HEAD
    + """\
imap = ["tcp:0:interface=127.0.0.1"]
"""
)

USER = "alice@example.com"
PASSWORD = "pw"
ROUNDS = 3
CLIENTS = 2
#: Messages delivered into C{new/} before the first start: enough that
#: STOREs over many UIDs fill the journal past its compaction size, so a
#: kill can land in a compaction too.
SEEDS = 240

#: The header that names each message; its value is the message's identity.
HEADER = "X-Crash-Id"

#: Maildir info letters and the system flags they stand for.
LETTERS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}

KEYWORDS = ["$kw0", "$kw1", "$kw2", "$Forwarded", "Work"]
SYSTEM = ["\\Flagged", "\\Seen", "\\Answered", "\\Draft"]

Flags = frozenset[str]


@dataclass
class Model:
    """
    What the server acknowledged; threads own disjoint sets of identities.

    @ivar uidOf: identity to the UID it was last known under.
    @ivar flags: identity to its flags after the last change answered OK.
    @ivar pending: per thread, the command in flight when the server died,
        per message C{(kind, identity, before, after)} (C{kind} C{append}
        or C{store}): it may have happened, or not, or in part.
    @ivar owner: C{(uidvalidity, uid)} to the one identity it belongs to.
    @ivar errors: anything the server answered other than OK before the kill.
    """

    validity: int = 0
    uidOf: dict[str, int] = field(default_factory=dict)
    flags: dict[str, Flags] = field(default_factory=dict)
    pending: dict[int, list[tuple[str, str, Flags, Flags]]] = field(default_factory=dict)
    owner: dict[tuple[int, int], str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    handedOut: int = 0
    stores: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, validity: int, uid: int, identity: str) -> None:
        """
        Record that C{uid} belongs to C{identity}; a second owner is an error.
        """
        previous = self.owner.setdefault((validity, uid), identity)
        if previous != identity:
            self.errors.append(
                f"UID {uid} (validity {validity}) given to {previous} and {identity}"
            )


def message(identity: str) -> bytes:
    """
    @return: a message named by its C{X-Crash-Id} header.
    """
    return (
        f"From: load@example.com\r\nTo: {USER}\r\nSubject: crash load\r\n"
        f"{HEADER}: {identity}\r\n\r\n{identity} {'x' * 500}\r\n"
    ).encode()


def formatFlags(flags: Flags) -> str:
    return "(" + " ".join(sorted(flags)) + ")"


def login(port: int) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=15)
    client.login(USER, PASSWORD)
    return client


def load(
    port: int, model: Model, n: int, owned: list[str], prefix: str, rng: random.Random,
    started: threading.Event, killed: threading.Event,
) -> None:  # fmt: skip
    """
    One client: APPEND and UID STORE until the connection dies, recording
    every tagged OK in C{model}.
    """
    try:
        client = login(port)
        typ, _ = client.select("INBOX")
        if typ != "OK":
            model.errors.append(f"SELECT: {typ}")
            return
    except (OSError, imaplib.IMAP4.error) as e:
        if not killed.is_set():
            model.errors.append(f"client {n} could not start: {e!r}")
        return
    finally:
        started.set()
    i = 0
    try:
        while True:
            draw = rng.random()
            if owned and draw < 0.1:
                store(client, model, n, rng.sample(owned, min(len(owned), 100)), rng)
            elif owned and draw < 0.55:
                store(client, model, n, [rng.choice(owned)], rng)
            else:
                identity = f"{prefix}-c{n}-{i}"
                i += 1
                if append(client, model, n, identity, rng):
                    owned.append(identity)
    except (OSError, imaplib.IMAP4.abort):
        if not killed.is_set():
            model.errors.append(f"client {n}: connection lost before the kill")
    except imaplib.IMAP4.error as e:
        model.errors.append(f"client {n}: {e!r}")
    finally:
        with contextlib.suppress(OSError):
            client.shutdown()


def append(client: imaplib.IMAP4, model: Model, n: int, identity: str, rng: random.Random) -> bool:
    """
    APPEND one message with random flags; record its APPENDUID.

    @return: whether it was answered OK.
    """
    flags: Flags = frozenset(rng.sample([*SYSTEM, *KEYWORDS], rng.randint(0, 2)))
    with model.lock:
        model.pending[n] = [("append", identity, frozenset(), flags)]
    typ, data = client.append(
        "INBOX", formatFlags(flags) if flags else None, None, message(identity)
    )
    text = data[0] if data and isinstance(data[0], bytes) else b""
    found = re.search(rb"APPENDUID (\d+) (\d+)", text)
    with model.lock:
        del model.pending[n]
        if typ != "OK" or found is None:
            model.errors.append(f"APPEND {identity}: {typ} {data!r}")
            return False
        validity, uid = int(found.group(1)), int(found.group(2))
        if validity != model.validity:
            model.errors.append(f"APPENDUID validity {validity}, SELECT said {model.validity}")
        model.claim(validity, uid, identity)
        model.uidOf[identity] = uid
        model.flags[identity] = flags
        model.handedOut = max(model.handedOut, uid)
    return True


def store(
    client: imaplib.IMAP4, model: Model, n: int, identities: list[str], rng: random.Random
) -> None:
    """
    UID STORE a random change of flags on C{identities}; record it once OK.
    """
    mode = rng.choice(["+FLAGS", "+FLAGS", "-FLAGS", "FLAGS"])
    change: Flags = frozenset(rng.sample([*SYSTEM, *KEYWORDS], rng.randint(1, 3)))
    combine = {"+FLAGS": Flags.__or__, "-FLAGS": Flags.__sub__, "FLAGS": lambda _, c: c}[mode]
    with model.lock:
        changes = [
            ("store", i, model.flags[i], combine(model.flags[i], change)) for i in identities
        ]
        uids = ",".join(str(model.uidOf[i]) for i in identities)
        model.pending[n] = changes
    typ, data = client.uid("STORE", uids, mode, formatFlags(change))
    with model.lock:
        del model.pending[n]
        if typ != "OK":
            model.errors.append(f"UID STORE {uids} {mode} {change}: {typ} {data!r}")
            return
        for _, identity, _, after in changes:
            model.flags[identity] = after
        model.stores += 1


@dataclass
class Seen:
    uid: int
    flags: Flags


def fetchAll(client: imaplib.IMAP4) -> dict[str, list[Seen]]:
    """
    @return: every message in the selected folder, by identity.
    """
    typ, data = client.uid("FETCH", "1:*", f"(UID FLAGS BODY.PEEK[HEADER.FIELDS ({HEADER})])")
    assert typ == "OK", data
    out: dict[str, list[Seen]] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        text, literal = item
        uid = re.search(rb"UID (\d+)", text)
        flags = re.search(rb"FLAGS \(([^)]*)\)", text)
        identity = re.search(HEADER.encode() + rb": (\S+)", literal, re.IGNORECASE)
        assert uid and flags and identity, item
        out.setdefault(identity.group(1).decode(), []).append(
            Seen(int(uid.group(1)), frozenset(flags.group(1).decode().split()) - {"\\Recent"})
        )
    return out


def maildirFlags(maildir: Path) -> dict[str, list[Flags]]:
    """
    @return: by identity, the system flags each file's name carries.
    """
    out: dict[str, list[Flags]] = {}
    for sub in ("new", "cur"):
        for path in (maildir / sub).iterdir():
            found = re.search(HEADER.encode() + rb": (\S+)", path.read_bytes())
            if found is None:
                continue
            info = path.name.partition(":2,")[2]
            letters = frozenset(LETTERS[c] for c in info if c in LETTERS)
            out.setdefault(found.group(1).decode(), []).append(letters)
    return out


class IMAPCrashTests(TestCase):
    """
    kill -9 at a random moment of APPEND and STORE load loses nothing
    answered OK and never gives a UID twice.
    """

    timeout = 240

    def test_sigkillDuringAppendAndStore(self) -> Any:
        """Several SIGKILL/restart rounds under load: every APPENDUID and every flag change answered OK is there after restart, no UID reused, UIDNEXT past every UID, file names agree."""
        return deferToThread(self._rounds)

    def _rounds(self) -> None:
        seed = random.randrange(2**32)
        rng = random.Random(seed)
        self.note = f"seed {seed}"
        base = Path(self.mktemp()).absolute()
        config, maildir = newInstance(base, CONFIG, USER, PASSWORD)
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        for i in range(SEEDS):
            (maildir / "new" / f"{int(time.time())}.seed{i}.mx.example.com").write_bytes(
                message(f"seed-{i}")
            )
        server = ServerProcess(config, base / "mta.log")
        self.addCleanup(server.stop)
        server.start(timeout=60)
        model = Model()
        client = login(server.ports["imap:0"])
        try:
            client.select("INBOX")
            model.validity = int(client.response("UIDVALIDITY")[1][0])
            for identity, (first, *_) in fetchAll(client).items():
                model.claim(model.validity, first.uid, identity)
                model.uidOf[identity], model.flags[identity] = first.uid, first.flags
                model.handedOut = max(model.handedOut, first.uid)
            self.assertEqual(len(model.uidOf), SEEDS)
        finally:
            client.logout()
        self.rebuilds: list[str] = []
        for r in range(ROUNDS):
            before, stores = len(model.uidOf), model.stores
            delay = self._loadAndKill(server, model, r, rng)
            inFlight = sorted(f"{c[0][0]} of {len(c)}" for c in model.pending.values())
            self.assertEqual(model.errors, [], self.note)
            server.start(timeout=60)
            self._verify(server, model, maildir, r)
            self.note += (
                f"; round {r}: killed after {delay:.2f} s, "
                f"{len(model.uidOf) - before} APPENDs and {model.stores - stores} STOREs "
                f"answered OK, in flight: {inFlight}"
            )
        self.assertGreater(len(model.uidOf), SEEDS + 10, f"the load hardly ran: {self.note}")
        generation = (maildir / "mta-index").read_text().split("\n", 1)[0].split("\t")[-1]
        self.note += f"; snapshot generation at the end {generation}"
        server.stop()
        log.msg(f"imap crash test: {self.note}")
        if self.rebuilds:
            warnings.warn(
                f"index rebuilt after SIGKILL: {self.rebuilds} ({self.note})", stacklevel=1
            )

    def _loadAndKill(
        self, server: ServerProcess, model: Model, r: int, rng: random.Random
    ) -> float:
        killed = threading.Event()
        known = sorted(model.uidOf)
        rng.shuffle(known)
        threads = []
        starts = []
        for n in range(CLIENTS):
            started = threading.Event()
            owned = known[n::CLIENTS]
            t = threading.Thread(
                target=load,
                args=(server.ports["imap:0"], model, n, owned, f"r{r}", random.Random(rng.random()),
                      started, killed),
                daemon=True,
            )  # fmt: skip
            t.start()
            threads.append(t)
            starts.append(started)
        for started in starts:
            started.wait(30)
        delay = rng.uniform(0.2, 1.5)
        time.sleep(delay)
        killed.set()
        server.kill()
        for t in threads:
            t.join(30)
            self.assertFalse(t.is_alive(), "a client hung after the kill")
        return delay

    def _verify(self, server: ServerProcess, model: Model, maildir: Path, r: int) -> None:
        client = login(server.ports["imap:0"])
        try:
            typ, _ = client.select("INBOX")
            self.assertEqual(typ, "OK")
            validity = int(client.response("UIDVALIDITY")[1][0])
            uidNext = int(client.response("UIDNEXT")[1][0])
            seen = fetchAll(client)
        finally:
            client.logout()
        where = f"after round {r} ({self.note})"
        for identity, copies in seen.items():
            self.assertEqual(len(copies), 1, f"{identity} is there {len(copies)} times {where}")
        # UIDNEXT is past every UID handed out before the kill.
        self.assertGreater(uidNext, model.handedOut, f"UIDNEXT {where}")
        rebuilt = validity != model.validity
        if rebuilt:
            self.assertGreater(validity, model.validity, f"UIDVALIDITY went back {where}")
            self.rebuilds.append(f"round {r}: UIDVALIDITY {model.validity} -> {validity}")
            where = f"{where}, index rebuilt: UIDVALIDITY {model.validity} -> {validity}"
            for identity, copies in seen.items():
                self.assertGreater(copies[0].uid, model.handedOut, f"{identity} UID {where}")
        # The command in flight at the kill may have happened, or not, or in
        # part (system flags travel in the file name, renamed first).
        pending = {p[1]: p for changes in model.pending.values() for p in changes}
        model.pending.clear()
        for identity, uid in model.uidOf.items():
            self.assertIn(
                identity, seen, f"acknowledged APPEND {identity} (UID {uid}) lost {where}"
            )
            got = seen[identity][0]
            if not rebuilt:
                self.assertEqual(got.uid, uid, f"{identity} changed UID {where}")
            if identity not in pending:
                self.assertEqual(
                    got.flags, model.flags[identity], f"{identity} UID {got.uid} flags {where}"
                )
        for kind, identity, before, after in pending.values():
            if identity in seen:
                flags = seen[identity][0].flags
                why = f"{kind} in flight: {identity} {before} -> {after}, got {flags} {where}"
                self.assertLessEqual(flags, before | after, why)
                if kind == "store":
                    self.assertGreaterEqual(flags, before & after, why)
                model.flags[identity] = flags
        unknown = set(seen) - set(model.uidOf) - set(pending)
        self.assertEqual(unknown, set(), f"messages nobody appended {where}")
        for identity, copies in seen.items():
            model.claim(validity, copies[0].uid, identity)
            model.uidOf[identity] = copies[0].uid
            model.handedOut = max(model.handedOut, copies[0].uid)
        self.assertEqual(model.errors, [], where)
        self.assertGreater(uidNext, model.handedOut, f"UIDNEXT {where}")
        model.validity = validity
        # The file names carry the same system flags as the index.
        names = maildirFlags(maildir)
        self.assertEqual(set(names), set(seen), f"files and index hold different messages {where}")
        for identity, letters in names.items():
            self.assertEqual(len(letters), 1, f"{identity} has {len(letters)} files {where}")
            system = frozenset(f for f in seen[identity][0].flags if f.startswith("\\"))
            self.assertEqual(letters[0], system, f"{identity} file name flags {where}")
