# -*- test-case-name: tests.test_params -*-
"""
The arguments of MAIL and RCPT, parsed: part of step "receive".

Pure functions over the text after the verb, with no protocol state: the
path (RFC 5321 section 4.1.2, with SMTPUTF8 addresses of RFC 6531) and the
ESMTP parameters this server knows: SIZE (RFC 1870), BODY (RFC 6152),
SMTPUTF8 (RFC 6531), RET, ENVID, NOTIFY and ORCPT (DSN, RFC 3461, with the
C{utf-8} address type of RFC 6533), REQUIRETLS (RFC 8689) and AUTH (RFC
4954).  Every refusal is a L{ParamError} carrying the exact reply to send;
whether a parameter is allowed in this session (say, REQUIRETLS without
TLS, or SMTPUTF8 when it is not offered) is the server's call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mta.envelope import (
    NOTIFY_KEYWORDS,
    Address,
    AddressError,
    AddressNeedsUTF8,
    hasControlCharacter,
    parseDomain,
)
from mta.errors import Reply
from mta.smtp import replies as R

S501_PARAM_SYNTAX = Reply(501, "5.5.4 Bad ESMTP parameter syntax")
S501_DUPLICATE = Reply(501, "5.5.4 ESMTP parameter given twice")
S501_SIZE = Reply(501, "5.5.4 Bad SIZE parameter")
S501_BODY = Reply(501, "5.5.4 Unsupported BODY type (7BIT and 8BITMIME only)")
S501_SMTPUTF8 = Reply(501, "5.5.4 SMTPUTF8 takes no value")
S501_RET = Reply(501, "5.5.4 RET must be FULL or HDRS")
S501_ENVID = Reply(501, "5.5.4 Bad ENVID parameter")
S501_REQUIRETLS = Reply(501, "5.5.4 REQUIRETLS takes no value")
S501_AUTH_PARAMETER = Reply(501, "5.5.4 Bad AUTH parameter")
S501_NOTIFY = Reply(501, "5.5.4 Bad NOTIFY parameter")
S501_ORCPT = Reply(501, "5.5.4 Bad ORCPT parameter")
S553_NEEDS_UTF8 = Reply(553, "5.6.7 Non-ASCII address, SMTPUTF8 required")
S555_PARAMETER = Reply(555, "5.5.4 Unsupported MAIL/RCPT parameter")

#: The longest ENVID, decoded (RFC 3461 section 4.4).
MAX_ENVID = 100
#: The longest ORCPT value (RFC 3461 section 4.2).
MAX_ORCPT = 500

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/?^_`{|}~]+")
_HEX = frozenset("0123456789ABCDEFabcdef")
_EMBEDDED = re.compile(r"\\x\{([0-9A-Fa-f]{2,6})\}")

#: One ESMTP parameter: its name upper case, and its value or C{None}.
Param = tuple[str, str | None]


class ParamError(Exception):
    """
    MAIL or RCPT cannot be accepted as written.

    @ivar reply: the reply to send.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


# -- the path ---------------------------------------------------------------------------------


def parsePath(text: str, keyword: str, utf8: bool = True) -> tuple[Address, list[Param]]:
    """
    Parse C{FROM:<addr> PARAM=VALUE ...} (or C{TO:...}).

    The address may be bare (C{FROM:a@b.example}) and a space may follow
    the colon, as Postfix allows; an obsolete source route
    (C{<@a,@b:user@c>}) is dropped.  C{<>} is the null sender, for C{FROM}
    only.

    @param text: the command's argument, after the verb.
    @param keyword: C{"FROM"} or C{"TO"}.
    @param utf8: whether the address may be UTF-8 (RFC 6531).
    @return: the address and the parameters in the order given, names upper
        case, values as written (C{None} without C{=}).
    @raise ParamError: C{501 5.1.7} (FROM) or C{501 5.1.3} (TO) for bad
        syntax or any control character, C{553 5.6.7} for a non-ASCII
        address without C{utf8}, C{501 5.5.4} for a malformed parameter.
    """
    syntax = R.S501_SENDER_SYNTAX if keyword == "FROM" else R.S501_RCPT_SYNTAX
    if hasControlCharacter(text):
        raise ParamError(syntax)
    head, colon, rest = text.partition(":")
    if not colon or not head.isascii() or head.strip().upper() != keyword:
        raise ParamError(syntax)
    rest = rest.lstrip(" ")
    if rest.startswith("<"):
        end = _closingBracket(rest)
        if end < 0:
            raise ParamError(syntax)
        path, after = rest[1:end], rest[end + 1 :]
        if after and not after.startswith(" "):
            raise ParamError(syntax)
    else:
        path, _, after = rest.partition(" ")
        if not path or "<" in path or ">" in path:
            raise ParamError(syntax)
    try:
        if path.startswith("@"):
            path = _dropRoute(path, utf8)
            if not path:
                raise ParamError(syntax)
        address = Address.parse(path, utf8=utf8)
    except AddressNeedsUTF8:
        raise ParamError(S553_NEEDS_UTF8) from None
    except AddressError:
        raise ParamError(syntax) from None
    if address.isNull and keyword != "FROM":
        raise ParamError(syntax)
    return address, _splitParams(after, utf8)


def _closingBracket(text: str) -> int:
    """
    @param text: text starting with C{<}.
    @return: the index of the C{>} that closes it, past any quoted string
        (C{<"a>b"@c>}), or -1.
    """
    quoted = False
    i = 1
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ">":
            return i
        elif c == "<":
            return -1
        i += 1
    return -1


def _dropRoute(path: str, utf8: bool) -> str:
    """
    Drop a source route C{@a,@b:} from the front of C{path}, checking that
    each of its domains is one.

    @return: the mailbox after the route.
    @raise AddressError: the route is malformed.
    """
    i = 0
    while True:
        if path[i : i + 1] != "@":
            raise AddressError(f"bad source route: {path!r}")
        start = i + 1
        if path[start : start + 1] == "[":
            end = path.find("]", start) + 1
            if end == 0:
                raise AddressError(f"bad source route: {path!r}")
        else:
            end = start
            while end < len(path) and path[end] not in ",:":
                end += 1
        parseDomain(path[start:end], utf8=utf8)
        separator = path[end : end + 1]
        if separator == ":":
            return path[end + 1 :]
        if separator != ",":
            raise AddressError(f"bad source route: {path!r}")
        i = end + 1


def _splitParams(text: str, utf8: bool) -> list[Param]:
    """
    @return: the C{KEYWORD[=VALUE]} words of C{text}, in order.
    @raise ParamError: C{501 5.5.4} for a malformed keyword or value
        (RFC 5321 section 4.1.2; RFC 6531 allows UTF-8 values).
    """
    params: list[Param] = []
    for word in text.split(" "):
        if not word:
            continue
        key, equals, value = word.partition("=")
        if not _KEYWORD.fullmatch(key):
            raise ParamError(S501_PARAM_SYNTAX)
        if not equals:
            params.append((key.upper(), None))
            continue
        if not value or not all(_isValueChar(c, utf8) for c in value):
            raise ParamError(S501_PARAM_SYNTAX)
        params.append((key.upper(), value))
    return params


def _isValueChar(c: str, utf8: bool) -> bool:
    """
    @return: whether C{c} may appear in an esmtp-value: printable ASCII but
        C{=} (RFC 5321), or with C{utf8} any non-ASCII character but a
        control character (RFC 6531).
    """
    if c.isascii():
        return "!" <= c <= "~" and c != "="
    return utf8 and not hasControlCharacter(c)


# -- MAIL -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailParams:
    """
    The parameters of one MAIL command.

    @ivar size: SIZE, the client's estimate of the message size.
    @ivar body: BODY, C{"7BIT"} or C{"8BITMIME"}.
    @ivar smtputf8: whether SMTPUTF8 was given.
    @ivar ret: RET, C{"FULL"} or C{"HDRS"}.
    @ivar envid: ENVID, xtext-decoded.
    @ivar requireTLS: whether REQUIRETLS was given.
    @ivar auth: AUTH, xtext-decoded (C{"<>"} when the client says the
        message has no authenticated origin).

    Each is C{None} (or C{False}) when not given.
    """

    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    requireTLS: bool = False
    auth: str | None = None


def parseMailParams(params: Sequence[Param], *, maxSize: int) -> MailParams:
    """
    Check MAIL's parameters.

    @param params: as L{parsePath} returns them.
    @param maxSize: the largest message accepted, in octets.
    @raise ParamError: C{552 5.3.4} for a SIZE over C{maxSize}, C{555 5.5.4}
        for an unknown parameter, C{501 5.5.4} for anything else wrong: a
        bad value, a missing or unexpected value, a parameter given twice.
    """
    seen: set[str] = set()
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    ret: str | None = None
    envid: str | None = None
    requireTLS = False
    auth: str | None = None
    for key, value in params:
        if key in seen:
            raise ParamError(S501_DUPLICATE)
        seen.add(key)
        if key == "SIZE":
            size = _parseSize(value, maxSize)
        elif key == "BODY":
            body = (value or "").upper()
            if body not in ("7BIT", "8BITMIME"):
                raise ParamError(S501_BODY)
        elif key == "SMTPUTF8":
            if value is not None:
                raise ParamError(S501_SMTPUTF8)
            smtputf8 = True
        elif key == "RET":
            ret = (value or "").upper()
            if ret not in ("FULL", "HDRS"):
                raise ParamError(S501_RET)
        elif key == "ENVID":
            envid = _decodePrintable(value, S501_ENVID)
            if len(envid) > MAX_ENVID:
                raise ParamError(S501_ENVID)
        elif key == "REQUIRETLS":
            if value is not None:
                raise ParamError(S501_REQUIRETLS)
            requireTLS = True
        elif key == "AUTH":
            auth = _decodePrintable(value, S501_AUTH_PARAMETER)
        else:
            raise ParamError(S555_PARAMETER)
    return MailParams(size, body, smtputf8, ret, envid, requireTLS, auth)


def _parseSize(value: str | None, maxSize: int) -> int:
    """
    @return: the SIZE value.
    @raise ParamError: C{501} if it is not digits, C{552} if over C{maxSize}.
    """
    if value is None or not (value.isascii() and value.isdigit()):
        raise ParamError(S501_SIZE)
    # int() refuses very long digit strings; anything that long is too big.
    if len(value.lstrip("0")) > 20 or int(value) > maxSize:
        raise ParamError(R.S552_TOO_BIG)
    return int(value)


def _decodePrintable(value: str | None, reply: Reply) -> str:
    """
    @return: the xtext C{value} decoded; it must be printable ASCII.
    @raise ParamError: with C{reply} when it is missing, not xtext, or
        decodes to anything but printable ASCII.
    """
    if value is None:
        raise ParamError(reply)
    try:
        decoded = xtextDecode(value)
    except ValueError:
        raise ParamError(reply) from None
    if not decoded or not decoded.isascii() or not decoded.isprintable():
        raise ParamError(reply)
    return decoded


def parseMail(text: str, *, maxSize: int) -> tuple[Address, MailParams]:
    """
    Parse MAIL's argument: L{parsePath} and L{parseMailParams} together.

    A UTF-8 sender is accepted only with the SMTPUTF8 parameter, which
    comes in the same command.

    @raise ParamError: as those do, and C{553 5.6.7} for a non-ASCII
        address without SMTPUTF8.
    """
    sender, raw = parsePath(text, "FROM", utf8=True)
    params = parseMailParams(raw, maxSize=maxSize)
    if sender.isUTF8 and not params.smtputf8:
        raise ParamError(S553_NEEDS_UTF8)
    return sender, params


# -- RCPT -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RcptParams:
    """
    The parameters of one RCPT command.

    @ivar notify: NOTIFY: C{()} when not given, C{("NEVER",)}, or some of
        C{"SUCCESS"}, C{"FAILURE"} and C{"DELAY"} in that order.
    @ivar orcpt: ORCPT: the address type upper case (C{"RFC822"},
        C{"UTF-8"}) and the decoded address, or C{None}.
    """

    notify: tuple[str, ...] = ()
    orcpt: tuple[str, str] | None = None


def parseRcptParams(params: Sequence[Param]) -> RcptParams:
    """
    Check RCPT's parameters.

    @param params: as L{parsePath} returns them.
    @raise ParamError: C{555 5.5.4} for an unknown parameter, C{501 5.5.4}
        for a bad NOTIFY or ORCPT or a parameter given twice.
    """
    seen: set[str] = set()
    notify: tuple[str, ...] = ()
    orcpt: tuple[str, str] | None = None
    for key, value in params:
        if key in seen:
            raise ParamError(S501_DUPLICATE)
        seen.add(key)
        if key == "NOTIFY":
            notify = _parseNotify(value)
        elif key == "ORCPT":
            orcpt = _parseOrcpt(value)
        else:
            raise ParamError(S555_PARAMETER)
    return RcptParams(notify, orcpt)


def _parseNotify(value: str | None) -> tuple[str, ...]:
    """
    @return: NOTIFY's keywords, canonical: C{("NEVER",)} or a subset of
        L{NOTIFY_KEYWORDS} in their order.
    @raise ParamError: C{501 5.5.4} for an unknown or empty keyword, or
        NEVER with others.
    """
    if value is None:
        raise ParamError(S501_NOTIFY)
    words = {word.upper() for word in value.split(",")}
    if words == {"NEVER"}:
        return ("NEVER",)
    if not words <= set(NOTIFY_KEYWORDS):
        raise ParamError(S501_NOTIFY)
    return tuple(k for k in NOTIFY_KEYWORDS if k in words)


def _parseOrcpt(value: str | None) -> tuple[str, str]:
    """
    @return: ORCPT's address type, upper case, and its address, decoded:
        as a C{utf-8-addr-xtext} or C{utf-8-addr-unitext} for type
        C{utf-8} (RFC 6533, and it must then be an address), as xtext for
        any other type.
    @raise ParamError: C{501 5.5.4} when it is malformed or decodes to a
        control character.
    """
    if value is None or len(value) > MAX_ORCPT:
        raise ParamError(S501_ORCPT)
    addrType, semicolon, encoded = value.partition(";")
    if not semicolon or not encoded or not _ADDR_TYPE.fullmatch(addrType):
        raise ParamError(S501_ORCPT)
    addrType = addrType.upper()
    try:
        if addrType == "UTF-8":
            decoded = utf8AddressDecode(encoded)
            Address.parse(decoded, utf8=True)
        else:
            decoded = xtextDecode(encoded)
    except ValueError:
        raise ParamError(S501_ORCPT) from None
    if not decoded or hasControlCharacter(decoded):
        raise ParamError(S501_ORCPT)
    return addrType, decoded


def parseRcpt(text: str, *, utf8: bool) -> tuple[Address, RcptParams]:
    """
    Parse RCPT's argument: L{parsePath} and L{parseRcptParams} together.

    @param utf8: whether the transaction's MAIL gave SMTPUTF8.
    @raise ParamError: as those do.
    """
    recipient, raw = parsePath(text, "TO", utf8=utf8)
    return recipient, parseRcptParams(raw)


# -- encodings ------------------------------------------------------------------------------


def xtextDecode(s: str) -> str:
    """
    Decode xtext (RFC 3461 section 4): printable ASCII but C{+} and C{=}
    stand for themselves, C{+XX} for the octet XX (hex; lower case is
    tolerated).  The octets must be UTF-8.

    @raise ValueError: C{s} is not xtext.
    """
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == "+":
            pair = s[i + 1 : i + 3]
            if len(pair) != 2 or not _HEX.issuperset(pair):
                raise ValueError(f"bad xtext escape at {i}")
            out.append(int(pair, 16))
            i += 3
        elif "!" <= c <= "~" and c != "=":
            out.append(ord(c))
            i += 1
        else:
            raise ValueError(f"bad xtext character at {i}")
    return out.decode("utf-8")


def xtextEncode(s: str) -> str:
    """
    Encode C{s} (as UTF-8) as xtext (RFC 3461 section 4).

    @return: printable ASCII without C{=}; C{+XX} for every other octet.
    """
    return "".join(
        chr(b) if 33 <= b <= 126 and b not in b"+=" else f"+{b:02X}" for b in s.encode("utf-8")
    )


def _mayEmbed(hexDigits: str, codePoint: int) -> bool:
    """
    @return: whether C{\\x{hexDigits}} is an EmbeddedUnicodeChar of RFC
        6533: two digits for a character that must be escaped (ASCII
        control, space, C{+}, C{=}, C{\\}, DEL) or a non-ASCII one,
        otherwise no leading zero, and never a surrogate.
    """
    if len(hexDigits) == 2:
        return 0 < codePoint <= 0x20 or codePoint in (0x2B, 0x3D, 0x5C) or codePoint >= 0x7F
    return hexDigits[0] != "0" and codePoint <= 0x10FFFF and not (0xD800 <= codePoint <= 0xDFFF)


def utf8AddressDecode(s: str) -> str:
    """
    Decode a C{utf-8-addr-xtext} or C{utf-8-addr-unitext} (RFC 6533
    section 3): ASCII printable characters but C{+}, C{=} and C{\\} stand
    for themselves, as do non-ASCII characters (unitext); C{\\x{HEX}}
    stands for the character with that code point.

    @raise ValueError: C{s} is not one.
    """
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            m = _EMBEDDED.match(s, i)
            if m is None:
                raise ValueError(f"bad escape at {i}")
            codePoint = int(m.group(1), 16)
            if not _mayEmbed(m.group(1), codePoint):
                raise ValueError(f"bad escape at {i}")
            out.append(chr(codePoint))
            i = m.end()
        elif ("!" <= c <= "~" and c not in "+=") or (
            not c.isascii() and not hasControlCharacter(c)
        ):
            out.append(c)
            i += 1
        else:
            raise ValueError(f"bad character at {i}")
    if not out:
        raise ValueError("empty address")
    return "".join(out)


def utf8AddressEncode(s: str) -> str:
    """
    Encode C{s} as a C{utf-8-addr-xtext} (RFC 6533 section 3), which is
    ASCII: C{\\x{HEX}} for every character but printable ASCII other than
    C{+}, C{=} and C{\\}.
    """
    return "".join(c if "!" <= c <= "~" and c not in "+=\\" else f"\\x{{{ord(c):02X}}}" for c in s)
