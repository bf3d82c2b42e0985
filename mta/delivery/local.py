# -*- test-case-name: tests.test_routing -*-
"""
Local delivery: step "deliver" of the lifecycle, for local users.

L{LocalDelivery} is the L{IDeliveryTarget} that writes each recipient's
copy into its L{IMessageStore} (Maildir), prefixed with C{Return-Path} and
C{Delivered-To} as Postfix's virtual(8) and Dovecot's LDA do.  Recipients
were expanded at RCPT time (aliases, plus-addressing); a user deleted
since then fails permanently with 5.1.1, a disk error temporarily.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mta.envelope import Envelope, Recipient
from mta.errors import Reply
from mta.interfaces import IDeliveryTarget, IMessageStore, IUserDirectory
from mta.message import MessageBody

_log = Logger(namespace="mta.delivery")

S250_DELIVERED = Reply(250, "2.0.0 Delivered to mailbox")

INBOX = "INBOX"
JUNK = "Junk"
S550_NO_USER = Reply(550, "5.1.1 User unknown in local recipient table")
S451_STORE_ERROR = Reply(451, "4.3.0 Mailbox temporarily unavailable")


def deliveryPrefix(envelope: Envelope, recipient: Recipient) -> bytes:
    """
    @return: the trace headers a local delivery adds in front of the
        message (RFC 5321 4.4 Return-Path; Delivered-To for loop checks).
    """
    return f"Return-Path: <{envelope.sender}>\r\nDelivered-To: {recipient.address}\r\n".encode()


@implementer(IDeliveryTarget)
class LocalDelivery:
    """
    Delivers to local users' stores.
    """

    def __init__(self, directory: IUserDirectory, store: IMessageStore) -> None:
        self._directory = directory
        self._store = store

    def deliver(self, envelope: Envelope, body: MessageBody) -> Deferred[dict[Recipient, Reply]]:
        """
        Store one copy per pending recipient; see L{IDeliveryTarget.deliver}.
        """
        pending = envelope.pending
        if len(pending) == 1:
            [only] = pending
            return self._deliverOne(envelope, only, body).addCallback(lambda reply: {only: reply})
        ds = [self._deliverOne(envelope, r, body) for r in pending]
        d = DeferredList(ds, consumeErrors=True)
        return d.addCallback(
            lambda results: {r: reply for r, (_, reply) in zip(pending, results, strict=True)}
        )

    def _deliverOne(self, envelope: Envelope, r: Recipient, body: MessageBody) -> Deferred[Reply]:
        user = r.address.canonical()
        # A user deleted since RCPT no longer resolves to itself; an
        # unaliased postmaster@ does, and gets a mailbox of its own.
        targets = self._directory.resolve(r.address)
        if targets is None or r.address not in targets:
            d: Deferred[Reply] = Deferred()
            d.callback(S550_NO_USER)
            return d
        # A check at reception (DMARC p=quarantine) may have asked for Junk.
        folder = JUNK if envelope.extra.get("junk") else INBOX
        stored = self._store.deliver(user, body, deliveryPrefix(envelope, r), folder)
        return stored.addCallbacks(
            lambda _: S250_DELIVERED, self._storeFailed, errbackArgs=(envelope, r)
        )

    def _storeFailed(self, failure: Failure, envelope: Envelope, r: Recipient) -> Reply:
        _log.failure(
            "delivery: id={id} to=<{to}> store failed",
            failure,
            id=envelope.queueId,
            to=r.address,
        )
        return S451_STORE_ERROR
