# -*- test-case-name: tests.test_envelope -*-
"""
Addresses and envelopes: frozen values, no I/O.

An L{Envelope} is what SMTP's MAIL and RCPT commands say about a message;
the queue stores it as JSON next to the message bytes.

L{Address.parse} is the one gate every address passes, from the network,
the admin command or a queue file: it follows RFC 5321 section 4.1.2 (a
dot-string or a quoted string, a domain or an address literal), with the
UTF-8 extension of RFC 6531 when asked for, and it refuses every control
character, so nothing it returns can split a header or a log line.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any

#: The longest address (RFC 5321 section 4.5.3.1.3: a path is at most 256
#: octets, angle brackets included).
MAX_ADDRESS_OCTETS = 254
#: The longest local part (RFC 5321 section 4.5.3.1.1).
MAX_LOCAL_OCTETS = 64
#: The longest domain (RFC 5321 section 4.5.3.1.2).
MAX_DOMAIN_OCTETS = 255
#: The longest label of a domain, in its ASCII form (RFC 1035).
MAX_LABEL_OCTETS = 63

#: atext of RFC 5322 section 3.2.3, ASCII only.
_ATEXT = "A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_ASCII_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
#: The common case, checked at once: a plain ASCII dot-string at a plain
#: ASCII domain, with no trailing dot.
_SIMPLE = re.compile(
    rf"({_DOT_STRING.pattern})@({_ASCII_LABEL.pattern}(?:\.{_ASCII_LABEL.pattern})*)"
)
#: Characters that may never appear in an address, quoted or not: every
#: control character (C0, DEL, C1), and the Unicode line and paragraph
#: separators, which some readers take for line breaks.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def hasControlCharacter(text: str) -> bool:
    """
    @return: C{True} if C{text} holds a character no address or command
        argument may carry: a control character of Unicode category C{Cc}
        (C0, DEL and C1), a lone surrogate (text that was not valid
        UTF-8), or a line or paragraph separator.
    """
    if text.isascii():
        return _ASCII_CONTROL.search(text) is not None
    return any(unicodedata.category(c) in _FORBIDDEN_CATEGORIES for c in text)


class AddressError(ValueError):
    """
    The text is not a usable mailbox address.
    """


class AddressNeedsUTF8(AddressError):
    """
    The text is an address only under SMTPUTF8 (RFC 6531): it has non-ASCII
    characters and UTF-8 was not allowed.  A server answers C{553 5.6.7}.
    """


def _isAtext(c: str) -> bool:
    """
    @return: whether C{c} may appear in an unquoted local part (atext, with
        the UTF8-non-ascii of RFC 6531).
    """
    if c.isascii():
        return c.isalnum() or c in "!#$%&'*+-/=?^_`{|}~"
    # Spaces, format and unassigned characters of any script would make the
    # address unreadable or ambiguous unquoted.
    return unicodedata.category(c)[0] not in "CZ"


def _isQtext(c: str) -> bool:
    """
    @return: whether C{c} may appear unescaped in a quoted local part
        (qtextSMTP of RFC 5321, with UTF8-non-ascii of RFC 6531).
    """
    if c.isascii():
        return " " <= c <= "~" and c not in '"\\'
    return unicodedata.category(c) not in _FORBIDDEN_CATEGORIES


def _isDotString(text: str) -> bool:
    """
    @return: whether C{text} is a dot-string: atoms of atext joined by
        single dots.
    """
    if text.isascii():
        return _DOT_STRING.fullmatch(text) is not None
    atoms = text.split(".")
    return all(atom and all(_isAtext(c) for c in atom) for atom in atoms)


def _unquote(text: str) -> str:
    """
    Undo a quoted-string: C{"a\\"b"} gives C{a"b}.

    @raise AddressError: it is not a quoted-string of RFC 5321: an
        unescaped C{"} or C{\\} inside, or a quoted pair escaping anything
        but a printable ASCII character.
    """
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise AddressError(f"bad local part: {text!r}")
    out = []
    chars = iter(text[1:-1])
    for c in chars:
        if c == "\\":
            escaped = next(chars, "")
            # quoted-pairSMTP is "\" followed by %d32-126 only.
            if not (" " <= escaped <= "~"):
                raise AddressError(f"bad quoted pair in local part: {text!r}")
            out.append(escaped)
        elif _isQtext(c):
            out.append(c)
        else:
            raise AddressError(f"bad character in quoted local part: {text!r}")
    return "".join(out)


def quoteLocalPart(local: str) -> str:
    """
    Write a local part the way RFC 5321 section 4.1.2 wants it: as a
    dot-string when it is one, otherwise as a quoted string with only C{"}
    and C{\\} escaped.

    @param local: the local part's text, unquoted.
    @return: its written form.
    """
    if _isDotString(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parseLocalPart(text: str) -> str:
    """
    @return: the local part C{text} in its written form (see
        L{quoteLocalPart}): C{"alice"} becomes C{alice}.
    @raise AddressError: C{text} is neither a dot-string nor a
        quoted-string, or is too long.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_LOCAL_OCTETS:
        raise AddressError(f"local part too long: {text!r}")
    if _isDotString(text):
        return text
    if text.startswith('"'):
        return quoteLocalPart(_unquote(text))
    raise AddressError(f"bad local part: {text!r}")


def _normaliseDomain(text: str) -> str:
    """
    @return: C{text} lower case; non-ASCII text in Unicode normal form C{NFC}
        first, repeated until stable so that parsing the result again gives
        the same text.
    """
    if text.isascii():
        return text.lower()
    for _ in range(4):
        new = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).lower())
        if new == text:
            break
        text = new
    return text


def _labelToASCII(label: str) -> str:
    """
    @return: the A-label (C{xn--...}) of a U-label, or the label itself
        when it is ASCII.
    @raise UnicodeError: it cannot be encoded.
    """
    if label.isascii():
        return label
    encoded = "xn--" + label.encode("punycode").decode("ascii")
    if len(encoded) > MAX_LABEL_OCTETS:
        raise UnicodeError(f"label too long: {label!r}")
    return encoded


def _isULabel(label: str) -> bool:
    """
    @return: whether C{label} (with non-ASCII characters) is made only of
        letters, marks, digits, hyphens and underscores, not starting or
        ending with a hyphen, and short enough once encoded.
    """
    if label.startswith("-") or label.endswith("-"):
        return False
    for c in label:
        if c.isascii():
            if not (c.isalnum() or c in "-_"):
                return False
        elif unicodedata.category(c)[0] not in "LMN":
            return False
    try:
        _labelToASCII(label)
    except UnicodeError:
        return False
    return True


def parseDomain(text: str, utf8: bool = False) -> str:
    """
    Parse the domain of an address: dot-separated labels (one trailing dot
    is dropped) or an address literal C{[192.0.2.1]} or C{[IPv6:2001:db8::1]}.

    @param utf8: whether U-labels (RFC 6531) are allowed.
    @return: the domain lower case (non-ASCII in NFC), literals as
        C{[a.b.c.d]} and C{[IPv6:...]}.
    @raise AddressNeedsUTF8: the domain has non-ASCII characters and
        C{utf8} is false.
    @raise AddressError: it is not a domain.
    """
    if text.startswith("[") and text.endswith("]"):
        return _parseLiteral(text)
    if text.endswith("."):
        text = text[:-1]
    if not text or len(text.encode("utf-8", "surrogatepass")) > MAX_DOMAIN_OCTETS:
        raise AddressError(f"bad domain: {text!r}")
    if text.isascii():
        labels = text.split(".")
        if all(
            len(label) <= MAX_LABEL_OCTETS and _ASCII_LABEL.fullmatch(label) for label in labels
        ):
            return text.lower()
        raise AddressError(f"bad domain: {text!r}")
    if hasControlCharacter(text):
        raise AddressError(f"bad domain: {text!r}")
    domain = _normaliseDomain(text)
    labels = domain.split(".")
    for label in labels:
        if label.isascii():
            if len(label) > MAX_LABEL_OCTETS or not _ASCII_LABEL.fullmatch(label):
                raise AddressError(f"bad domain: {text!r}")
        elif not _isULabel(label):
            raise AddressError(f"bad domain: {text!r}")
    if not utf8:
        raise AddressNeedsUTF8(f"domain needs SMTPUTF8: {text!r}")
    return domain


def _parseLiteral(text: str) -> str:
    """
    @return: the address literal C{text} in its written form: C{[a.b.c.d]}
        or C{[IPv6:...]} (the tag as RFC 5321 spells it, the address lower
        case).
    @raise AddressError: it is not an IPv4 or IPv6 address literal.
    """
    inner = text[1:-1]
    tag, colon, rest = inner.partition(":")
    try:
        # The address module takes "%scope" suffixes, which RFC 5321 has not.
        if colon and tag.upper() == "IPV6" and ":" in rest and "%" not in rest:
            ipaddress.IPv6Address(rest)
            return f"[IPv6:{rest.lower()}]"
        if not colon:
            ipaddress.IPv4Address(inner)
            return text
    except ValueError:
        pass
    raise AddressError(f"bad address literal: {text!r}")


@dataclass(frozen=True, order=True)
class Address:
    """
    A mailbox address C{local@domain}.

    The local part is kept in its written form (a dot-string, or a quoted
    string where it must be: C{"a b"@example.com}), the domain lower case
    (U-labels in NFC).  The null address C{<>} has an empty local part and
    domain.
    """

    local: str
    domain: str

    @classmethod
    def parse(cls, text: str, utf8: bool = False) -> Address:
        """
        Parse C{local@domain} (without angle brackets).

        The local part is a dot-string of atext atoms or a quoted string of
        qtext and quoted pairs (RFC 5321 section 4.1.2); the domain is
        dot-separated labels or an address literal.  A quoted local part
        that needs no quotes loses them: C{"alice"@example.com} is
        C{alice@example.com}.  No control character is accepted anywhere,
        quoted or escaped.

        @param utf8: whether the address may have non-ASCII characters in
            its local part and U-labels in its domain (SMTPUTF8, RFC 6531).
        @raise AddressNeedsUTF8: it is an address only with C{utf8}.
        @raise AddressError: the text is not an address.
        """
        if text == "":
            return NULL_ADDRESS
        if text.isascii():
            simple = _SIMPLE.fullmatch(text)
            if simple is not None and len(text) <= MAX_ADDRESS_OCTETS:
                local, domain = simple.group(1, 2)
                if len(local) <= MAX_LOCAL_OCTETS and all(
                    len(label) <= MAX_LABEL_OCTETS for label in domain.split(".")
                ):
                    return cls(local, domain.lower())
        if hasControlCharacter(text):
            raise AddressError(f"control character in address: {text!r}")
        if len(text.encode("utf-8")) > MAX_ADDRESS_OCTETS:
            raise AddressError(f"address too long: {text[:80]!r}...")
        local, at, domain = text.rpartition("@")
        if not at or not local or not domain:
            raise AddressError(f"not an address: {text!r}")
        address = cls(_parseLocalPart(local), parseDomain(domain, utf8=True))
        if not utf8 and address.isUTF8:
            raise AddressNeedsUTF8(f"address needs SMTPUTF8: {text!r}")
        return address

    @property
    def isNull(self) -> bool:
        """
        @return: C{True} for the null sender C{<>}.
        """
        return not self.local and not self.domain

    @property
    def isUTF8(self) -> bool:
        """
        @return: C{True} if the address has non-ASCII characters, so that
            it can travel only with SMTPUTF8.
        """
        return not (self.local.isascii() and self.domain.isascii())

    @property
    def asciiDomain(self) -> str:
        """
        @return: the domain with each U-label as its A-label
            (C{例え.jp} is C{xn--r8jz45g.jp}), for comparing domains however
            they were written; the domain unchanged if it is ASCII or cannot
            be encoded.
        """
        if self.domain.isascii():
            return self.domain
        try:
            return ".".join(_labelToASCII(label) for label in self.domain.split("."))
        except UnicodeError:
            return self.domain

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}" if not self.isNull else ""

    def canonical(self) -> str:
        """
        @return: the address in the form user names are stored in: the local
            part as written, the domain lower case.  Local parts compare
            case-insensitively in our directory, so this lower-cases them too.
        """
        return str(self).lower()


NULL_ADDRESS = Address("", "")


#: The DSN NOTIFY keywords (RFC 3461 section 4.1), in canonical order.
NOTIFY_KEYWORDS = ("SUCCESS", "FAILURE", "DELAY")
_BODY_TYPES = ("", "7BIT", "8BITMIME")
_RET_TYPES = ("", "FULL", "HDRS")


#: Most delivery attempts a recipient remembers (the latest ones).
MAX_HISTORY = 10


@dataclass(frozen=True)
class Attempt:
    """
    One delivery attempt of one recipient, for C{mta queue show}.

    @ivar time: POSIX time the attempt ended.
    @ivar reply: the outcome, as reply text (C{"250 2.0.0 Ok"}).
    @ivar remote: the server that answered (C{"mx.example.com[192.0.2.1]"}),
        or C{""} for a local delivery or an answer of our own.
    @ivar detail: how the attempt went: hosts chosen and why, failures,
        the TLS outcome.
    """

    time: float
    reply: str
    remote: str = ""
    detail: str = ""

    def toJSON(self) -> dict[str, Any]:
        """
        @return: the on-disk form, empty fields left out.
        """
        data: dict[str, Any] = {"time": self.time, "reply": self.reply}
        if self.remote:
            data["remote"] = self.remote
        if self.detail:
            data["detail"] = self.detail
        return data

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> Attempt:
        """
        @return: the attempt L{toJSON} wrote.
        """
        return cls(
            float(data["time"]),
            str(data["reply"]),
            str(data.get("remote", "")),
            str(data.get("detail", "")),
        )


@dataclass(frozen=True)
class Recipient:
    """
    One recipient of a queued message and its delivery state.

    @ivar address: where to deliver (after alias expansion).
    @ivar original: the RCPT TO address the client gave.
    @ivar state: C{"pending"}, C{"delivered"} or C{"failed"}.
    @ivar attempts: how many delivery attempts were made.
    @ivar lastError: the reply of the last failed attempt, as text.
    @ivar notify: the DSN NOTIFY parameter (RFC 3461): C{()} when not
        given, C{("NEVER",)}, or some of C{"SUCCESS"}, C{"FAILURE"} and
        C{"DELAY"} in that order.
    @ivar orcpt: the DSN ORCPT parameter, decoded, as
        C{"addr-type;address"} (C{"rfc822;bob@example.com"}), or C{""}.
    @ivar history: the latest delivery attempts (at most L{MAX_HISTORY}),
        oldest first.
    """

    address: Address
    original: Address
    state: str = "pending"
    attempts: int = 0
    lastError: str = ""
    notify: tuple[str, ...] = ()
    orcpt: str = ""
    history: tuple[Attempt, ...] = ()

    def withOutcome(self, state: str, error: str = "", attempt: Attempt | None = None) -> Recipient:
        """
        @param attempt: what to add to the recipient's L{history}.
        @return: a copy after one more attempt ending in C{state}.
        """
        history = self.history
        if attempt is not None:
            history = (*history, attempt)[-MAX_HISTORY:]
        return replace(
            self, state=state, attempts=self.attempts + 1, lastError=error, history=history
        )


@dataclass(frozen=True)
class Envelope:
    """
    The SMTP envelope of one message and where it came from.

    @ivar queueId: the queue id, shown in logs and C{mta queue list}.
    @ivar sender: the MAIL FROM address (maybe null).
    @ivar recipients: one L{Recipient} per destination.
    @ivar arrival: POSIX time the message was accepted.
    @ivar nextAttempt: POSIX time of the next delivery attempt.
    @ivar client: the remote IP address, the HELO name and the user that
        authenticated, for logs and bounces.
    @ivar smtputf8: the client gave MAIL's SMTPUTF8 parameter (RFC 6531):
        addresses and headers may be UTF-8.
    @ivar bodyType: MAIL's BODY parameter: C{"7BIT"}, C{"8BITMIME"}, or
        C{""} when not given.
    @ivar requireTLS: the client gave MAIL's REQUIRETLS parameter (RFC
        8689): every hop must use verified TLS.
    @ivar dsnRet: MAIL's RET parameter (RFC 3461): C{"FULL"}, C{"HDRS"},
        or C{""} when not given.
    @ivar dsnEnvid: MAIL's ENVID parameter, decoded, or C{""}.
    """

    queueId: str
    sender: Address
    recipients: tuple[Recipient, ...]
    arrival: float
    nextAttempt: float = 0.0
    clientAddress: str = ""
    heloName: str = ""
    authUser: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    smtputf8: bool = False
    bodyType: str = ""
    requireTLS: bool = False
    dsnRet: str = ""
    dsnEnvid: str = ""

    @property
    def pending(self) -> tuple[Recipient, ...]:
        """
        @return: the recipients still to be delivered.
        """
        return tuple(r for r in self.recipients if r.state == "pending")

    def toJSON(self) -> dict[str, Any]:
        """
        @return: a JSON-serialisable dict, the on-disk form.  The SMTPUTF8,
            BODY, REQUIRETLS and DSN fields are written only when set, so
            that the common envelope stays small; L{fromJSON} takes their
            absence for the default.
        """
        data: dict[str, Any] = {
            "version": 1,
            "id": self.queueId,
            "sender": str(self.sender),
            "arrival": self.arrival,
            "next_attempt": self.nextAttempt,
            "client_address": self.clientAddress,
            "helo": self.heloName,
            "auth_user": self.authUser,
            "recipients": [_recipientToJSON(r) for r in self.recipients],
            "extra": self.extra,
        }
        if self.smtputf8:
            data["smtputf8"] = True
        if self.bodyType:
            data["body_type"] = self.bodyType
        if self.requireTLS:
            data["require_tls"] = True
        if self.dsnRet:
            data["dsn_ret"] = self.dsnRet
        if self.dsnEnvid:
            data["dsn_envid"] = self.dsnEnvid
        return data

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> Envelope:
        """
        Rebuild an envelope from L{toJSON}'s form; envelopes written before
        a field existed get its default.  Addresses may be UTF-8.

        @raise ValueError: the data is not an envelope.
        """
        try:
            envelope = cls(
                queueId=data["id"],
                sender=Address.parse(data["sender"], utf8=True),
                recipients=tuple(_recipientFromJSON(r) for r in data["recipients"]),
                arrival=float(data["arrival"]),
                nextAttempt=float(data["next_attempt"]),
                clientAddress=data.get("client_address", ""),
                heloName=data.get("helo", ""),
                authUser=data.get("auth_user", ""),
                extra=dict(data.get("extra", {})),
                smtputf8=_flag(data, "smtputf8"),
                bodyType=data.get("body_type", ""),
                requireTLS=_flag(data, "require_tls"),
                dsnRet=data.get("dsn_ret", ""),
                dsnEnvid=data.get("dsn_envid", ""),
            )
        except (KeyError, TypeError, AttributeError, AddressError) as e:
            raise ValueError(f"bad envelope: {e}") from e
        if envelope.bodyType not in _BODY_TYPES:
            raise ValueError(f"bad envelope: body_type {envelope.bodyType!r}")
        if envelope.dsnRet not in _RET_TYPES:
            raise ValueError(f"bad envelope: dsn_ret {envelope.dsnRet!r}")
        if not isinstance(envelope.dsnEnvid, str) or hasControlCharacter(envelope.dsnEnvid):
            raise ValueError("bad envelope: dsn_envid")
        return envelope


def _flag(data: dict[str, Any], key: str) -> bool:
    """
    @return: the boolean C{data[key]}, C{False} when absent.
    @raise TypeError: it is there but not a boolean.
    """
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise TypeError(f"{key} is not a boolean")
    return value


def _recipientToJSON(r: Recipient) -> dict[str, Any]:
    """
    @return: the on-disk form of one recipient; C{notify} and C{orcpt}
        only when set.
    """
    data: dict[str, Any] = {
        "address": str(r.address),
        "original": str(r.original),
        "state": r.state,
        "attempts": r.attempts,
        "last_error": r.lastError,
    }
    if r.notify:
        data["notify"] = list(r.notify)
    if r.orcpt:
        data["orcpt"] = r.orcpt
    if r.history:
        data["history"] = [a.toJSON() for a in r.history]
    return data


def _recipientFromJSON(data: dict[str, Any]) -> Recipient:
    """
    @return: the recipient L{_recipientToJSON} wrote.
    @raise ValueError: the NOTIFY or ORCPT value is not one we write.
    @raise KeyError: a required key is missing.
    """
    notify = tuple(data.get("notify", ()))
    if notify != ("NEVER",) and not (
        set(notify) <= set(NOTIFY_KEYWORDS)
        and notify == tuple(k for k in NOTIFY_KEYWORDS if k in notify)
    ):
        raise ValueError(f"bad envelope: notify {notify!r}")
    orcpt = data.get("orcpt", "")
    if not isinstance(orcpt, str) or hasControlCharacter(orcpt):
        raise ValueError("bad envelope: orcpt")
    return Recipient(
        address=Address.parse(data["address"], utf8=True),
        original=Address.parse(data["original"], utf8=True),
        state=data["state"],
        attempts=int(data["attempts"]),
        lastError=data["last_error"],
        notify=notify,
        orcpt=orcpt,
        history=tuple(Attempt.fromJSON(a) for a in data.get("history", ())),
    )
