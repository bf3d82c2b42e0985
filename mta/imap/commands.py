# -*- test-case-name: tests.test_imapparser -*-
"""
IMAP commands parsed into frozen values: the grammar above the lexical layer.

L{parseCommand} turns one framed command into a L{Command}: its tag, name
(upper case; for C{UID FETCH} the name is C{FETCH} and C{uid} is true) and
a typed argument value the server dispatches on.  Covered: every IMAP4rev1
command (RFC 3501 section 6) and the extensions the server offers:
AUTHENTICATE with SASL-IR (RFC 4959), SELECT/EXAMINE with CONDSTORE and
QRESYNC (RFC 7162), CREATE with USE (RFC 6154), LIST-EXTENDED and
LIST-STATUS (RFC 5258, RFC 5819), ESEARCH (RFC 4731) and SEARCHRES (RFC
5182), SORT (RFC 5256), UIDPLUS's UID EXPUNGE (RFC 4315), MOVE (RFC 6851),
UNSELECT (RFC 3691), IDLE (RFC 2177), NAMESPACE (RFC 2342), ID (RFC 2971)
and ENABLE (RFC 5161).  Whether a command is allowed in the session's
state is the server's call, not the parser's.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from mta.imap.query import (
    SEARCH_RETURN_OPTIONS,
    FetchItem,
    SearchKey,
    SortCriterion,
    readCharset,
    readFetchItems,
    readSearchKeys,
    readSortCriteria,
)
from mta.imap.syntax import ASTRING_CHARS, MAX_NUMBER64, Cursor, SequenceSet

#: The STATUS data items understood (RFC 3501, RFC 7162, RFC 8438, RFC 9051, RFC 7889).
STATUS_ITEMS = frozenset(
    {
        "MESSAGES",
        "RECENT",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "HIGHESTMODSEQ",
        "SIZE",
        "DELETED",
        "APPENDLIMIT",
    }
)
#: LIST selection options (RFC 5258 section 3.1, RFC 6154 section 5.3).
LIST_SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
#: LIST return options, STATUS aside (RFC 5258 section 3.2, RFC 6154, RFC 3348).
LIST_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})
_TAG_CHARS = ASTRING_CHARS - {ord("+")}
_BASE64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


@dataclass(frozen=True)
class NoArguments:
    """
    The arguments of a command that takes none (NOOP, CAPABILITY, IDLE, ...).
    """


NO_ARGUMENTS = NoArguments()


@dataclass(frozen=True)
class Authenticate:
    """
    C{AUTHENTICATE mechanism [initial-response]}.

    @ivar mechanism: upper case, e.g. C{"PLAIN"}.
    @ivar initialResponse: the decoded SASL-IR response (C{=} is C{b""}), or
        C{None} when the client sent none.
    """

    mechanism: str
    initialResponse: bytes | None = None


@dataclass(frozen=True)
class Login:
    """
    C{LOGIN user password}, both decoded as UTF-8.
    """

    username: str
    password: str


@dataclass(frozen=True)
class QResync:
    """
    The QRESYNC select parameter (RFC 7162 section 3.2.5.2).

    @ivar knownUids: the UIDs the client knows, or C{None}.
    @ivar sequenceMatch: C{(sequence numbers, UIDs)} pairs the client
        knows, or C{None}.
    """

    uidValidity: int
    modseq: int
    knownUids: SequenceSet | None = None
    sequenceMatch: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True)
class Select:
    """
    C{SELECT} or C{EXAMINE} with optional C{(CONDSTORE)} and C{(QRESYNC (...))}.
    """

    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True)
class Mailbox:
    """
    The one mailbox argument of DELETE, SUBSCRIBE and UNSUBSCRIBE.
    """

    mailbox: str


@dataclass(frozen=True)
class Create:
    """
    C{CREATE mailbox [(USE (special-uses))]} (RFC 6154 section 3).
    """

    mailbox: str
    specialUse: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rename:
    """
    C{RENAME existing new}.
    """

    source: str
    destination: str


@dataclass(frozen=True)
class ListMailboxes:
    """
    C{LIST} (basic or RFC 5258 extended) and C{LSUB}.

    @ivar reference: the reference name, decoded.
    @ivar patterns: one or more patterns (with C{%} and C{*}), decoded.
    @ivar selection: upper-case selection options (C{SUBSCRIBED}, ...).
    @ivar returns: upper-case return options other than STATUS.
    @ivar statusItems: the items of C{RETURN (STATUS (...))} (RFC 5819), or C{None}.
    @ivar extended: whether the client used any RFC 5258 syntax, which
        changes the response (RFC 5258 section 3: CHILDREN info, no
        C{\\NoSelect} parents for SUBSCRIBED, and so on).
    """

    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    statusItems: tuple[str, ...] | None = None
    extended: bool = False


@dataclass(frozen=True)
class Status:
    """
    C{STATUS mailbox (items)}, items upper case.
    """

    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Append:
    """
    C{APPEND mailbox [flags] [date-time] literal}.
    """

    mailbox: str
    flags: tuple[str, ...]
    internalDate: datetime | None
    message: bytes


@dataclass(frozen=True)
class Search:
    """
    C{SEARCH [RETURN (...)] [CHARSET c] keys}.

    @ivar charset: C{"UTF-8"} or C{"US-ASCII"} as given, or C{None} without
        C{CHARSET}; strings are then read as UTF-8 (a superset of the
        US-ASCII default), since clients send UTF-8 regardless.
    @ivar returnOptions: C{None} for a plain SEARCH (C{* SEARCH} answer);
        for ESEARCH (RFC 4731) the options, with C{RETURN ()} given as
        C{("ALL",)}.
    """

    criteria: SearchKey
    charset: str | None = None
    returnOptions: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Sort:
    """
    C{SORT (criteria) charset keys} (RFC 5256).
    """

    criteria: tuple[SortCriterion, ...]
    charset: str
    search: SearchKey


@dataclass(frozen=True)
class Fetch:
    """
    C{FETCH set items [(CHANGEDSINCE n [VANISHED])]}.

    @ivar vanished: C{VANISHED} (RFC 7162 section 3.2.6), only in UID FETCH.
    """

    messages: SequenceSet
    items: tuple[FetchItem, ...]
    changedSince: int | None = None
    vanished: bool = False


@dataclass(frozen=True)
class Store:
    """
    C{STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] flags}.

    @ivar mode: C{"SET"}, C{"ADD"} (C{+FLAGS}) or C{"REMOVE"} (C{-FLAGS}).
    """

    messages: SequenceSet
    mode: str
    silent: bool
    flags: tuple[str, ...]
    unchangedSince: int | None = None


@dataclass(frozen=True)
class Copy:
    """
    C{COPY set mailbox} and C{MOVE set mailbox}.
    """

    messages: SequenceSet
    mailbox: str


@dataclass(frozen=True)
class Expunge:
    """
    C{EXPUNGE}, or C{UID EXPUNGE set} (RFC 4315) with the UIDs to remove.
    """

    messages: SequenceSet | None = None


@dataclass(frozen=True)
class Id:
    """
    C{ID (field value ...)} or C{ID NIL} (C{fields} is C{None}).
    """

    fields: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True)
class Enable:
    """
    C{ENABLE capability...}, upper case.
    """

    capabilities: tuple[str, ...]


Arguments: TypeAlias = (
    NoArguments
    | Authenticate
    | Login
    | Select
    | Mailbox
    | Create
    | Rename
    | ListMailboxes
    | Status
    | Append
    | Search
    | Sort
    | Fetch
    | Store
    | Copy
    | Expunge
    | Id
    | Enable
)


@dataclass(frozen=True)
class Command:
    """
    One parsed command.

    @ivar tag: the client's tag.
    @ivar name: the command, upper case (C{"FETCH"} for C{UID FETCH}).
    @ivar uid: whether it came as C{UID <name>}.
    @ivar arguments: the typed arguments; which type follows from C{name}.
    """

    tag: str
    name: str
    uid: bool
    arguments: Arguments


def _noArguments(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    Arguments of commands that take none.
    """
    return NO_ARGUMENTS


def _authenticate(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{AUTHENTICATE mechanism [SP initial-response]}.
    """
    mechanism = c.keyword()
    if c.atEnd():
        return Authenticate(mechanism)
    c.sp()
    raw = c.take(_BASE64_CHARS, "initial response")
    if raw == b"=":
        return Authenticate(mechanism, b"")
    try:
        return Authenticate(mechanism, binascii.a2b_base64(raw, strict_mode=True))
    except binascii.Error:
        raise c.error("bad base64 in initial response") from None


def _login(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{LOGIN userid password}.
    """
    user = c.text(c.astring())
    c.sp()
    return Login(user, c.text(c.astring()))


def _select(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{SELECT}/C{EXAMINE mailbox [(CONDSTORE | QRESYNC (...))]}.
    """
    mailbox = c.mailbox()
    condstore = False
    qresync = None
    if not c.atEnd():
        c.sp()
        for _ in c.listItems():
            parameter = c.keyword()
            if parameter == "CONDSTORE":
                condstore = True
            elif parameter == "QRESYNC" and qresync is None:
                c.sp()
                qresync = _qresync(c)
            else:
                raise c.error("unknown select parameter")
    return Select(mailbox, condstore, qresync)


def _qresync(c: Cursor) -> QResync:
    """
    C{(uidvalidity modseq [known-uids] [(known-sequence-set known-uid-set)])}.
    """
    c.openList()
    validity = c.nzNumber()
    c.sp()
    modseq = c.nzNumber(MAX_NUMBER64)
    known = None
    match = None
    if c.peek() == 0x20:
        c.sp()
        if c.peek() != 0x28:
            known = c.sequenceSet()
            if c.peek() == 0x20:
                c.sp()
        if c.peek() == 0x28:
            c.openList()
            sequences = c.sequenceSet()
            c.sp()
            match = (sequences, c.sequenceSet())
            c.closeList()
    c.closeList()
    return QResync(validity, modseq, known, match)


def _mailbox(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    A single mailbox argument.
    """
    return Mailbox(c.mailbox())


def _create(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{CREATE mailbox [(USE (\\Sent ...))]}.
    """
    mailbox = c.mailbox()
    uses: list[str] = []
    if not c.atEnd():
        c.sp()
        for _ in c.listItems():
            if c.keyword() != "USE":
                raise c.error("unknown create parameter")
            c.sp()
            uses.extend(c.flagList())
    return Create(mailbox, tuple(uses))


def _rename(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{RENAME existing new}.
    """
    source = c.mailbox()
    c.sp()
    return Rename(source, c.mailbox())


def _list(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{LIST [(select-opts)] reference (pattern | (patterns)) [RETURN (opts)]} and C{LSUB}.
    """
    extended = False
    selection: set[str] = set()
    if name == "LIST" and c.peek() == 0x28:
        extended = True
        for _ in c.listItems():
            option = c.keyword()
            if option not in LIST_SELECT_OPTIONS:
                raise c.error("unknown LIST selection option")
            selection.add(option)
        if "RECURSIVEMATCH" in selection and selection <= {"RECURSIVEMATCH", "REMOTE"}:
            raise c.error("RECURSIVEMATCH needs another selection option")
        c.sp()
    reference = c.mailbox()
    c.sp()
    patterns: list[str] = []
    if name == "LIST" and c.peek() == 0x28:
        extended = True
        for _ in c.listItems():
            patterns.append(c.listMailbox())
        if not patterns:
            raise c.error("empty pattern list")
    else:
        patterns.append(c.listMailbox())
    returns: set[str] = set()
    status = None
    if name == "LIST" and not c.atEnd():
        extended = True
        c.sp()
        if c.keyword() != "RETURN":
            raise c.error("expected RETURN")
        c.sp()
        for _ in c.listItems():
            option = c.keyword()
            if option == "STATUS" and status is None:
                c.sp()
                status = _statusItems(c)
            elif option in LIST_RETURN_OPTIONS:
                returns.add(option)
            else:
                raise c.error("unknown LIST return option")
    return ListMailboxes(
        reference, tuple(patterns), frozenset(selection), frozenset(returns), status, extended
    )


def _statusItems(c: Cursor) -> tuple[str, ...]:
    """
    A parenthesised, non-empty list of STATUS items.
    """
    items: list[str] = []
    for _ in c.listItems():
        item = c.keyword()
        if item not in STATUS_ITEMS:
            raise c.error("unknown status item")
        items.append(item)
    if not items:
        raise c.error("empty status item list")
    return tuple(items)


def _status(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{STATUS mailbox (items)}.
    """
    mailbox = c.mailbox()
    c.sp()
    return Status(mailbox, _statusItems(c))


def _append(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{APPEND mailbox [SP flag-list] [SP date-time] SP literal}.
    """
    mailbox = c.mailbox()
    c.sp()
    flags: tuple[str, ...] = ()
    when = None
    if c.peek() == 0x28:
        flags = c.flagList()
        c.sp()
    if c.peek() == 0x22:
        when = c.dateTime()
        c.sp()
    if c.peek() != 0x7B:
        raise c.error("APPEND needs the message as a literal")
    return Append(mailbox, flags, when, c.literal())


def _search(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{SEARCH [RETURN (options)] [CHARSET charset] keys}.
    """
    returns = None
    charset = None
    if c.accept(b"RETURN "):
        options: list[str] = []
        for _ in c.listItems():
            option = c.keyword()
            if option not in SEARCH_RETURN_OPTIONS:
                raise c.error("unknown search return option")
            options.append(option)
        returns = tuple(options) or ("ALL",)
        c.sp()
    if c.accept(b"CHARSET "):
        charset = readCharset(c)
        c.sp()
    return Search(readSearchKeys(c, charset or "UTF-8"), charset, returns)


def _sort(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{SORT (criteria) charset keys}.
    """
    criteria = readSortCriteria(c)
    c.sp()
    charset = readCharset(c)
    c.sp()
    return Sort(criteria, charset, readSearchKeys(c, charset))


def _fetch(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{FETCH set items [(CHANGEDSINCE n [VANISHED])]}.
    """
    messages = c.sequenceSet()
    c.sp()
    items = readFetchItems(c)
    changed = None
    vanished = False
    if not c.atEnd():
        c.sp()
        for _ in c.listItems():
            modifier = c.keyword()
            if modifier == "CHANGEDSINCE" and changed is None:
                c.sp()
                changed = c.nzNumber(MAX_NUMBER64)
            elif modifier == "VANISHED" and not vanished:
                vanished = True
            else:
                raise c.error("unknown fetch modifier")
    if vanished and (not uid or changed is None):
        raise c.error("VANISHED needs UID FETCH and CHANGEDSINCE")
    return Fetch(messages, items, changed, vanished)


_STORE_MODES = {"FLAGS": "SET", "+FLAGS": "ADD", "-FLAGS": "REMOVE"}


def _store(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] (flags) | flag...}.
    """
    messages = c.sequenceSet()
    c.sp()
    unchanged = None
    if c.peek() == 0x28:
        for _ in c.listItems():
            if c.keyword() != "UNCHANGEDSINCE" or unchanged is not None:
                raise c.error("unknown store modifier")
            c.sp()
            unchanged = c.number(MAX_NUMBER64)
        c.sp()
    item = c.take(
        frozenset(b"+-.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"), "store item"
    )
    word = item.decode("ascii").upper()
    silent = word.endswith(".SILENT")
    mode = _STORE_MODES.get(word.removesuffix(".SILENT"))
    if mode is None:
        raise c.error("unknown store item")
    c.sp()
    if c.peek() == 0x28:
        flags = c.flagList()
    else:
        words = [c.flag()]
        while not c.atEnd():
            c.sp()
            words.append(c.flag())
        flags = tuple(words)
    return Store(messages, mode, silent, flags, unchanged)


def _copy(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{COPY}/C{MOVE set mailbox}.
    """
    messages = c.sequenceSet()
    c.sp()
    return Copy(messages, c.mailbox())


def _expunge(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{EXPUNGE}, or C{UID EXPUNGE set}.
    """
    if not uid:
        return Expunge()
    return Expunge(c.sequenceSet())


def _id(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{ID NIL} or C{ID (field value ...)}, within RFC 2971's bounds.
    """
    if c.peek() != 0x28:
        if c.keyword() != "NIL":
            raise c.error("expected a list or NIL")
        return Id(None)
    fields: list[tuple[str, str | None]] = []
    for _ in c.listItems():
        key = c.text(c.string())
        c.sp()
        raw = c.nstring()
        if len(key.encode()) > 30 or (raw is not None and len(raw) > 1024) or len(fields) >= 30:
            raise c.error("ID field too long or too many fields")
        fields.append((key, None if raw is None else c.text(raw)))
    return Id(tuple(fields))


def _enable(c: Cursor, name: str, uid: bool) -> Arguments:
    """
    C{ENABLE capability...}.
    """
    names = [c.keyword()]
    while not c.atEnd():
        c.sp()
        names.append(c.keyword())
    return Enable(tuple(names))


_Handler = Callable[[Cursor, str, bool], Arguments]

#: Every command: its argument reader, and whether it has arguments at all.
COMMANDS: dict[str, tuple[_Handler, bool]] = {
    "CAPABILITY": (_noArguments, False),
    "NOOP": (_noArguments, False),
    "LOGOUT": (_noArguments, False),
    "STARTTLS": (_noArguments, False),
    "AUTHENTICATE": (_authenticate, True),
    "LOGIN": (_login, True),
    "SELECT": (_select, True),
    "EXAMINE": (_select, True),
    "CREATE": (_create, True),
    "DELETE": (_mailbox, True),
    "RENAME": (_rename, True),
    "SUBSCRIBE": (_mailbox, True),
    "UNSUBSCRIBE": (_mailbox, True),
    "LIST": (_list, True),
    "LSUB": (_list, True),
    "STATUS": (_status, True),
    "APPEND": (_append, True),
    "CHECK": (_noArguments, False),
    "CLOSE": (_noArguments, False),
    "UNSELECT": (_noArguments, False),
    "EXPUNGE": (_expunge, False),
    "SEARCH": (_search, True),
    "SORT": (_sort, True),
    "FETCH": (_fetch, True),
    "STORE": (_store, True),
    "COPY": (_copy, True),
    "MOVE": (_copy, True),
    "IDLE": (_noArguments, False),
    "NAMESPACE": (_noArguments, False),
    "ID": (_id, True),
    "ENABLE": (_enable, True),
}
#: The commands that may follow C{UID}.
UID_COMMANDS = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "SORT", "EXPUNGE"})


def readTag(c: Cursor) -> str:
    """
    Read the tag (any ASTRING-CHAR but C{+}) and remember it in the cursor.
    """
    c.tag = c.take(_TAG_CHARS, "tag").decode("ascii")
    return c.tag


def parseCommand(
    segments: Sequence[bytes], literals: Sequence[bytes], maxDepth: int = 32
) -> Command:
    """
    Parse one complete command.

    @param segments: the command's lines, without CRLF; all but the last
        end in a literal marker.
    @param literals: the literals' data, C{literals[i]} after C{segments[i]}.
    @param maxDepth: the deepest nesting of lists, NOT and OR allowed.
    @raise CommandError: for anything but a well-formed command.
    """
    c = Cursor(segments, literals, maxDepth)
    readTag(c)
    c.sp()
    name = c.keyword()
    uid = name == "UID"
    if uid:
        c.sp()
        name = c.keyword()
        if name not in UID_COMMANDS:
            raise c.error("unknown UID command")
    entry = COMMANDS.get(name)
    if entry is None:
        raise c.error("unknown command")
    handler, hasArguments = entry
    if hasArguments or (uid and name == "EXPUNGE"):
        c.sp()
    arguments = handler(c, name, uid)
    c.end()
    return Command(c.tag, name, uid, arguments)
