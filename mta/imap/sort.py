# -*- test-case-name: tests.test_imapsearch -*-
"""
What IMAP SORT orders by (RFC 5256 section 3), and the base subject of
section 2.1.

Strings compare with the C{i;ascii-casemap} collation (ASCII letters in
either case are equal, all other octets compare as they are); messages
equal under every criterion stay in sequence-number order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from mta.imap.envelope import parseAddresses
from mta.imap.message import Field, firstValue
from mta.imap.query import SortCriterion
from mta.imap.search import MessageView, arrived, decodeHeader, sentDate

__all__ = [
    "SORT_KEYS",
    "Criterion",
    "SortCriterion",
    "baseSubject",
    "needsDates",
    "sortKey",
    "sortMessages",
]

#: The sort keys of RFC 5256.
SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"})


class Criterion(Protocol):
    """
    One sort key, upper case (C{"SUBJECT"}), and whether C{REVERSE} came
    before it: L{mta.imap.query.SortCriterion} is one.
    """

    @property
    def key(self) -> str:
        """
        The sort key's name.
        """

    @property
    def reverse(self) -> bool:
        """
        Whether the key orders the other way round.
        """


class _Reversed:
    """
    A sort key that orders the other way round.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and bool(self.value == other.value)

    def __hash__(self) -> int:
        return hash(self.value)


def sortKey(message: MessageView, criteria: Sequence[Criterion]) -> tuple[Any, ...]:
    """
    @return: a value that orders messages as C{criteria} do, with the
        sequence number last as the tie-break.
    @raise ValueError: a criterion's key is not one of L{SORT_KEYS}.
    """
    values: list[Any] = []
    for criterion in criteria:
        value = _value(message, criterion.key.upper())
        values.append(_Reversed(value) if criterion.reverse else value)
    values.append(message.sequence)
    return tuple(values)


def sortMessages(
    messages: Iterable[MessageView], criteria: Sequence[Criterion]
) -> list[MessageView]:
    """
    @return: C{messages} in SORT order.
    """
    return sorted(messages, key=lambda message: sortKey(message, criteria))


def needsDates(criteria: Sequence[Criterion]) -> bool:
    """
    @return: whether sorting by C{criteria} may use internal dates.
    """
    return any(c.key.upper() in ("ARRIVAL", "DATE") for c in criteria)


def _value(message: MessageView, key: str) -> Any:
    if key == "ARRIVAL":
        return arrived(message).timestamp()
    if key == "SIZE":
        return message.size
    if key == "DATE":
        sent = sentDate(message.fields())
        return (sent or arrived(message)).timestamp()
    if key == "SUBJECT":
        return _casemap(baseSubject(firstValue(message.fields(), b"subject") or b""))
    if key in ("FROM", "TO", "CC"):
        return firstMailbox(message.fields(), key.encode("ascii"))
    raise ValueError(f"not a sort key: {key}")


def _casemap(text: str) -> bytes:
    return text.encode("utf-8").upper()


def firstMailbox(fields: list[Field], name: bytes) -> bytes:
    """
    @return: the mailbox (local part) of the first address in field
        C{name}, ASCII upper-cased, or C{b""} when there is none.
    """
    value = firstValue(fields, name)
    for _name, _adl, mailbox, host in parseAddresses(value or b""):
        if mailbox is not None and host is not None:
            return mailbox.upper()
    return b""


_TRAILER = re.compile(r"(?:\s|\(fwd\))+$", re.IGNORECASE)
_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(rf"^(?:\s+|(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:)", re.IGNORECASE)
_BLOB_PREFIX = re.compile(rf"^{_BLOB}")


def baseSubject(subject: bytes) -> str:
    """
    Extract the base subject (RFC 5256 2.1): encoded words decoded, white
    space runs made one space, then C{Re:}, C{Fwd:}, C{Fw:}, C{[blob]}
    prefixes, C{(fwd)} trailers and C{[fwd: ...]} wrappers removed.
    """
    text = " ".join(decodeHeader(subject).split())
    while True:
        text = _TRAILER.sub("", text)
        while True:
            before = text
            text = _LEADER.sub("", text, count=1)
            blob = _BLOB_PREFIX.match(text)
            if blob is not None and text[blob.end() :].strip():
                text = text[blob.end() :]
            if text == before:
                break
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            continue
        return text
