# -*- test-case-name: tests.test_imapmessage -*-
"""
The ENVELOPE, BODY and BODYSTRUCTURE values of FETCH (RFC 3501 7.4.2),
computed from a message's L{mta.imap.message.Part} tree.

Values follow L{mta.imap.message}'s conventions: C{bytes} a string,
C{None} NIL, C{int} a number, C{tuple} a list, L{Concat} lists back to back.
"""

from __future__ import annotations

import itertools

from mta.imap.message import (
    ADDRESS_SPECIALS,
    Concat,
    Part,
    Token,
    Value,
    firstValue,
    flatParams,
    headerFields,
    parseDisposition,
    tokenize,
    words,
)

#: The host of an address that has none, so that it is not read as group
#: syntax (whose host is NIL); the mailbox of one that has no local part.
MISSING_DOMAIN = b"MISSING_DOMAIN"
MISSING_MAILBOX = b"MISSING_MAILBOX"


# -- ENVELOPE ------------------------------------------------------------------

_ENVELOPE_ADDRESSES = (b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc")


def envelope(source: bytes | Part) -> tuple[Value, ...]:
    """
    The ENVELOPE of a message (RFC 3501 7.4.2).

    Strings are the header text as written (encoded words and 8-bit bytes
    untouched), with folds removed.  Sender and Reply-To are From's when
    absent or empty.

    @param source: the raw message, or its parsed top-level L{Part}.
    @return: C{(date, subject, from, sender, reply-to, to, cc, bcc,
        in-reply-to, message-id)}; each address list is C{None} or a
        1-tuple holding a L{Concat} of C{(name, adl, mailbox, host)}.
    """
    fields = source.fields if isinstance(source, Part) else headerFields(source)
    lists = {name: addressList(firstValue(fields, name)) for name in _ENVELOPE_ADDRESSES}
    for name in (b"sender", b"reply-to"):
        if lists[name] is None:
            lists[name] = lists[b"from"]
    return (
        firstValue(fields, b"date"),
        firstValue(fields, b"subject"),
        *(lists[name] for name in _ENVELOPE_ADDRESSES),
        firstValue(fields, b"in-reply-to"),
        firstValue(fields, b"message-id"),
    )


def addressList(value: bytes | None) -> tuple[Concat] | None:
    """
    @return: the envelope form of an address header's value: C{None} when
        it is absent or holds no address, else C{(Concat(addresses),)}.
    """
    if value is None:
        return None
    found = parseAddresses(value)
    return (Concat(found),) if found else None


Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]


def parseAddresses(value: bytes) -> list[Address]:
    """
    Parse an address list (RFC 5322 3.4), leniently.

    A group is C{(None, None, name, None)}, its members, then
    C{(None, None, None, None)}.  A mailbox without a display name takes its
    comment as its name, as Dovecot does.

    @return: C{(name, adl, mailbox, host)} for each address.
    """
    found: list[Address] = []
    pending: list[Token] = []
    inGroup = False
    tokens = tokenize(value, ADDRESS_SPECIALS)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.kind != "special" or token.text in b".@":
            pending.append(token)
        elif token.text == b":" and not inGroup and not _hasAt(pending):
            found.append((None, None, _phrase(value, pending) or b"", None))
            inGroup, pending = True, []
        elif token.text == b"<":
            close = next((j for j in range(i, len(tokens)) if tokens[j].text == b">"), len(tokens))
            found.append(_angle(value, pending, tokens[i:close]))
            pending = []
            i = close + 1
            while i < len(tokens) and tokens[i].text not in (b",", b";"):
                i += 1
        elif token.text in b",;":
            found.extend(_bare(value, pending))
            pending = []
            if token.text == b";" and inGroup:
                found.append((None, None, None, None))
                inGroup = False
    found.extend(_bare(value, pending))
    if inGroup:
        found.append((None, None, None, None))
    return found


def _hasAt(tokens: list[Token]) -> bool:
    return any(t.kind == "special" and t.text == b"@" for t in tokens)


def _phrase(value: bytes, tokens: list[Token]) -> bytes | None:
    """
    @return: a display name: the words unquoted, with one space where the
        header had white space between them; comments left out.
    """
    words = [t for t in tokens if t.kind != "comment"]
    if not words:
        return None
    out = bytearray(words[0].text)
    for before, token in itertools.pairwise(words):
        if token.start > before.end:
            out += b" "
        out += token.text
    return bytes(out)


def _addrSpec(tokens: list[Token]) -> tuple[bytes, bytes]:
    words = [t for t in tokens if t.kind != "comment"]
    at = next((k for k, t in enumerate(words) if t.text == b"@" and t.kind == "special"), None)
    local = words if at is None else words[:at]
    domain = [] if at is None else words[at + 1 :]
    mailbox = b"".join(t.text for t in local) or MISSING_MAILBOX
    host = b"".join(t.text for t in domain) or MISSING_DOMAIN
    return mailbox, host


def _bare(value: bytes, tokens: list[Token]) -> list[Address]:
    """
    @return: the mailbox written as a bare addr-spec, if C{tokens} hold one.
    """
    if not any(t.kind != "comment" for t in tokens):
        return []
    mailbox, host = _addrSpec(tokens)
    comments = [t.text for t in tokens if t.kind == "comment"]
    return [(comments[-1] if comments else None, None, mailbox, host)]


def _angle(value: bytes, phrase: list[Token], inside: list[Token]) -> Address:
    """
    @return: a C{phrase <[route:]addr-spec>} mailbox.
    """
    adl = None
    colon = next((k for k, t in enumerate(inside) if t.text == b":"), None)
    if colon is not None:
        adl = b"".join(t.text for t in inside[:colon] if t.kind != "comment") or None
        inside = inside[colon + 1 :]
    name = _phrase(value, phrase)
    if name is None:
        comments = [t.text for t in phrase if t.kind == "comment"]
        name = comments[-1] if comments else None
    mailbox, host = _addrSpec(inside)
    return (name, adl, mailbox, host)


# -- BODY and BODYSTRUCTURE ---------------------------------------------------------


def bodyStructure(part: Part, extended: bool = True) -> tuple[Value, ...]:
    """
    The BODY (C{extended=False}) or BODYSTRUCTURE value of a part
    (RFC 3501 7.4.2).

    A single part is C{(type, subtype, params, id, description, encoding,
    size[, envelope, body, lines][, lines][, md5, disposition, language,
    location])}, the envelope and body for C{message/rfc822}, the lines for
    it and C{text/*}, the last four when extended.  A multipart is
    C{(Concat(parts), subtype[, params, disposition, language, location])}.
    C{params} is C{None} or a flat C{(name, value, ...)} tuple;
    C{disposition} is C{None} or C{(type, params)}; C{language} is C{None}
    or a tuple of tags.
    """
    if part.children:
        children = Concat(bodyStructure(child, extended) for child in part.children)
        value: tuple[Value, ...] = (children, part.subType)
        return (*value, flatParams(part.params), *_extension(part)) if extended else value
    value = (
        part.mainType,
        part.subType,
        flatParams(part.params),
        part.header(b"content-id"),
        part.header(b"content-description"),
        part.encoding,
        part.size,
    )
    if part.message is not None:
        embedded = part.message
        value += (envelope(embedded), bodyStructure(embedded, extended), part.lines)
    elif part.mainType.lower() == b"text":
        value += (part.lines,)
    if extended:
        value += (part.header(b"content-md5"), *_extension(part))
    return value


def _extension(part: Part) -> tuple[Value, ...]:
    """
    @return: C{(disposition, language, location)} of a part.
    """
    written = part.header(b"content-disposition")
    parsed = parseDisposition(written) if written is not None else None
    disposition = None if parsed is None else (parsed[0], flatParams(parsed[1]))
    language = tuple(words(part.header(b"content-language") or b"")) or None
    return (disposition, language, part.header(b"content-location"))
