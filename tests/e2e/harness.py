"""
Runs a complete mta service tree on 127.0.0.1 ephemeral ports for
end-to-end tests, and drives blocking clients (smtplib, poplib, swaks)
from threads so the reactor keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from mta.auth import hashPassword
from mta.config import Config, DNSConfig, ListenConfig, embeddedDefault
from mta.queue.scheduler import QueueManager
from mta.store.maildir import (
    createUserFolders,
    folderDirectory,
    mailRootOf,
    userDirectory,
)
from mta.tap import MailServer, buildService, listeningPorts

EPHEMERAL = ("tcp:0:interface=127.0.0.1",)
#: A nameserver that is not there (the discard port): lookups fail at once.
NO_DNS = "127.0.0.1:9"
SERVICES = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")


@dataclass
class RunningServer:
    """
    A started tree and what tests need to reach it.
    """

    config: Config
    top: MailServer
    ports: dict[str, int]

    @property
    def queue(self) -> QueueManager:
        return self.top.queue

    def addUser(self, address: str, password: str) -> None:
        """
        Add a user as C{mta user add} does (blocking; fine in test set-up).
        """
        self.top.directory.addUser(address, hashPassword(password))
        createUserFolders(self.config.data_dir, address)
        self.top.directory.reloadIfChanged()

    def maildir(self, address: str, folder: str = "INBOX") -> Path:
        return folderDirectory(userDirectory(mailRootOf(self.config.data_dir), address), folder)

    def delivered(self, address: str) -> list[bytes]:
        """
        @return: the messages in the user's INBOX, oldest first.
        """
        base = self.maildir(address)
        files = [
            p for sub in ("new", "cur") if (base / sub).exists() for p in (base / sub).iterdir()
        ]
        return [p.read_bytes() for p in sorted(files, key=lambda p: p.name)]


def testConfig(dataDir: Path, **changes: Any) -> Config:
    """
    The embedded default, on ephemeral ports, for domain example.com.

    DNS goes to C{NO_DNS} unless C{changes} say otherwise: no lookup may
    leave the machine, and one for a remote domain fails at once
    (temporarily) rather than reaching the system's resolver.
    """
    base = embeddedDefault(dataDir)
    listen = ListenConfig(**{name: EPHEMERAL for name in SERVICES})
    fields: dict[str, Any] = {"dns": DNSConfig(nameservers=(NO_DNS,))}
    fields.update(changes)
    return replace(
        base,
        hostname="mx.example.com",
        domains=("example.com",),
        listen=listen,
        **fields,
    )


@inlineCallbacks
def startServer(case: TestCase, config: Config | None = None) -> Any:
    """
    Build and start a tree; stop it when the test ends.

    @return: a Deferred firing with a L{RunningServer}.
    """
    config = config or testConfig(Path(case.mktemp()).absolute())
    top = buildService(config, reactor)
    top.startService()
    case.addCleanup(top.stopService)
    ports: dict[str, int] = {}
    for name in SERVICES:
        listeners = listeningPorts(top, name)
        if listeners:
            port = yield listeners[0].whenListening()
            ports[name] = port.getHost().port
    return RunningServer(config, top, ports)


def waitFor(condition: Callable[[], bool], timeout: float = 10.0) -> Deferred[None]:
    """
    Poll C{condition} on the reactor every 10 ms until true.

    @raise AssertionError: (in the Deferred) it stayed false for C{timeout}.
    """
    deadline = time.monotonic() + timeout

    @inlineCallbacks
    def poll() -> Any:
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            yield deferLater(reactor, 0.01, lambda: None)

    return poll()  # type: ignore[no-any-return]


__all__ = ["RunningServer", "gatherResults", "startServer", "testConfig", "waitFor"]
