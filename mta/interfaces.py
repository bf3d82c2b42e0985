"""
Every zope Interface in mta: the seams between the parts.

Read this file first.  A message travels::

    smtp.server --IMessageSink--> queue.scheduler --ISpool--> disk
    queue.scheduler --IDeliveryTarget--> routing.Router
        --> delivery.local --IMessageStore--> store.maildir
    pop3.server --IMessageStore/IMailbox--> store.maildir

and every protocol asks L{IUserDirectory} who exists and twisted.cred
(over the same directory) who may log in.  Anything that would block the
reactor goes through L{IBlockingRunner}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from mta.dns import MXRecord
    from mta.envelope import Address, Envelope, Recipient
    from mta.errors import Reply
    from mta.message import MessageBody
    from mta.policy.base import Session, Verdict

_T = TypeVar("_T")


class IBlockingRunner(Interface):
    """
    Runs blocking work (fsync, file I/O, password hashing) off the reactor
    thread, on a bounded pool.
    """

    def run(f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        """
        Call C{f(*args, **kwargs)} in a worker thread.

        @return: a Deferred firing with its result on the reactor thread.
        """


class IUserDirectory(Interface):
    """
    Who exists here: local domains, users, aliases.  Lookups are answered
    from memory and never block; the directory reloads its files when they
    change (see L{reloadIfChanged}).
    """

    domains = Attribute("frozenset of the local domains, lower case.")

    def isLocalDomain(domain: str) -> bool:
        """
        @return: whether mail for C{domain} is delivered here.
        """

    def resolve(address: Address) -> tuple[Address, ...] | None:
        """
        Expand C{address} to its final destinations.

        Plus-addressing (C{user+tag@}) is stripped, aliases are expanded
        recursively (loops are cut), C{postmaster@} every local domain
        always resolves.  A non-local address resolves to itself.

        @return: the destinations (local users and remote addresses), or
            C{None} when C{address} is in a local domain but nobody is
            there.
        """

    def isUser(address: Address) -> bool:
        """
        @return: whether C{address} names an existing user account.
        """

    def passwordHash(user: str) -> str | None:
        """
        @param user: the full address a user logs in with.
        @return: the stored argon2id hash, or C{None} for no such user.
        """

    def mayUseSender(user: str, sender: Address) -> bool:
        """
        @return: whether authenticated C{user} may send as C{sender}: its
            own address, its plus-addresses, and aliases that lead to it.
        """

    def users() -> list[str]:
        """
        @return: every user's address, sorted.
        """

    def reloadIfChanged() -> bool:
        """
        Re-read the files if they changed on disk (blocking; run it on an
        L{IBlockingRunner}).

        @return: whether anything was reloaded.
        """


class IMailbox(Interface):
    """
    One folder of one user's store, as POP3 (and later IMAP) see it.
    """

    def listMessages() -> Deferred[list[StoredMessage]]:
        """
        @return: the messages, oldest first.
        """

    def readMessage(uid: str) -> Deferred[bytes]:
        """
        @return: the exact bytes of the message C{uid}.
        @raise KeyError: (in the Deferred) no such message.
        """

    def deleteMessages(uids: Sequence[str]) -> Deferred[None]:
        """
        Remove the messages for good.  Missing ones are ignored.
        """


class IMessageStore(Interface):
    """
    Every user's mail.  Local delivery writes into it; POP3 and IMAP read it.
    """

    def createUser(user: str) -> Deferred[None]:
        """
        Create the user's store with INBOX, Sent, Drafts, Trash and Junk.
        Idempotent.
        """

    def deliver(
        user: str, body: MessageBody, prefix: bytes, folder: str = "INBOX"
    ) -> Deferred[str]:
        """
        Store C{prefix} followed by the bytes of C{body}.

        @return: a Deferred firing with the new message's uid once the
            message is durable (fsync'd).
        """

    def openMailbox(user: str, folder: str = "INBOX") -> Deferred[IMailbox]:
        """
        @return: the folder, created when missing.
        """


class IMessageSink(Interface):
    """
    Where a receiving protocol hands an accepted message.
    """

    def newQueueId() -> str:
        """
        @return: a fresh queue id, for the Received header and the logs of
            a message about to be enqueued.
        """

    def enqueue(envelope: Envelope, data: bytes) -> Deferred[str]:
        """
        Take responsibility for a message.

        @param data: the whole message, headers included, CRLF line ends.
        @return: a Deferred firing with the queue id once message and
            envelope are fsync'd: only then may a server say 250.
        """


class ISpool(Interface):
    """
    Durable storage for queued messages: one raw message file and one
    JSON envelope per message.
    """

    def store(envelope: Envelope, data: bytes) -> Deferred[None]:
        """
        Write message and envelope durably; fires once both are fsync'd.
        """

    def update(envelope: Envelope) -> Deferred[None]:
        """
        Replace the stored envelope atomically (per-recipient state).
        """

    def remove(queueId: str) -> Deferred[None]:
        """
        Delete a message and its envelope.
        """

    def body(queueId: str) -> MessageBody:
        """
        @return: where the bytes of a message stored or loaded by this
            spool are (answered from memory, never blocks).
        @raise KeyError: no such message.
        """

    def load() -> Deferred[list[Envelope]]:
        """
        Read every committed envelope, discarding half-written files.
        """


class IDeliveryTarget(Interface):
    """
    Something that can deliver a queued message: local delivery, relay,
    and the router that chooses between them.
    """

    def deliver(envelope: Envelope, body: MessageBody) -> Deferred[dict[Recipient, Reply]]:
        """
        Try each pending recipient once.

        @return: a reply per recipient tried: 2xx delivered, 4xx try again
            later, 5xx failed for good.
        """


class ILoginService(Interface):
    """
    Checks a user name and password for a protocol (SMTP AUTH, POP3,
    IMAP), with the shared failed-login throttle and one log line per
    attempt.
    """

    def login(username: str, password: str, peer: str, protocol: str = "-") -> Deferred[str]:
        """
        @param peer: the client's IP address (the throttle's key).
        @param protocol: the protocol's name, for the log.
        @return: a Deferred firing with the user's address, or failing
            with L{mta.auth.LoginFailed} (wrong user or password, after
            the throttle's delay) or L{mta.auth.LoginRefused} (the address
            is blocked).
        """


class IPolicyCheck(Interface):
    """
    One check on incoming mail, asked at each step of an SMTP session.

    Relay access, the authenticated sender's rate and address ownership
    (and SPF, DKIM and DMARC) are policy checks; the SMTP server asks
    a chain of them (L{mta.policy.base.PolicyChain}) and never calls a
    concrete check itself.  Each method answers a L{Verdict} (accept, or a
    reply that refuses the step; at end of data also headers to add), or a
    Deferred of one when it must wait (DNS, a thread).
    """

    def checkConnection(session: Session) -> Verdict | Deferred[Verdict]:
        """
        A client connected; a refusal is sent instead of the greeting.
        """

    def checkHelo(session: Session, name: str) -> Verdict | Deferred[Verdict]:
        """
        The client said EHLO or HELO C{name}.
        """

    def checkSender(session: Session, sender: Address) -> Verdict | Deferred[Verdict]:
        """
        MAIL FROM:<sender>, its syntax and parameters already checked.
        """

    def checkRecipient(
        session: Session, sender: Address, recipient: Address
    ) -> Verdict | Deferred[Verdict]:
        """
        RCPT TO:<recipient> before the directory expands it.
        """

    def checkMessage(
        session: Session, envelope: Envelope, data: bytes
    ) -> Verdict | Deferred[Verdict]:
        """
        The whole message is in (C{data} as the client sent it, no trace
        headers yet); the headers of an accepting verdict are added on top.
        """


class IDNSResolver(Interface):
    """
    Every DNS lookup mta makes goes through this one interface
    (L{mta.dns}): MX and addresses for the relay, TXT for SPF, DKIM and
    DMARC, PTR for the deliverability doctor.  It honours C{[dns]
    nameservers}, caches answers by their TTL and never blocks.

    Errors come as failures of the Deferred: L{mta.dns.DNSNameError}
    when the name does not exist (NXDOMAIN: permanent), and
    L{mta.dns.DNSTemporaryError} for SERVFAIL, REFUSED or a time-out
    (try later).  A name that exists without records of the type asked
    gives an empty list.
    """

    def lookupMX(domain: str) -> Deferred[list[MXRecord]]:
        """
        @return: the MX records of C{domain}, in no particular order; a
            null MX (RFC 7505) is C{MXRecord(0, "")}.
        """

    def lookupAddresses(host: str, family: str = "any") -> Deferred[list[str]]:
        """
        @param family: C{"any"} (AAAA and A), C{"ipv6"} or C{"ipv4"}.
        @return: the host's addresses as text, IPv6 first when both are
            asked for.
        """

    def lookupTXT(name: str) -> Deferred[list[bytes]]:
        """
        @return: each TXT record of C{name}, its strings joined.
        """

    def lookupPTR(ip: str) -> Deferred[list[str]]:
        """
        @return: the names the reverse zone gives for C{ip}.
        """


class IAccount(Interface):
    """
    The avatar of a logged-in user (twisted.cred).
    """

    address = Attribute("The user's full address, as str.")


from mta.store.base import StoredMessage  # noqa: E402  (re-exported for IMailbox)

__all__ = [
    "IAccount",
    "IBlockingRunner",
    "IDNSResolver",
    "IDeliveryTarget",
    "ILoginService",
    "IMailbox",
    "IMessageSink",
    "IMessageStore",
    "IPolicyCheck",
    "ISpool",
    "IUserDirectory",
    "StoredMessage",
]
