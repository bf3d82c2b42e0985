# -*- test-case-name: tests.test_imapmessage -*-
"""
What IMAP FETCH says about a message: its MIME structure, ENVELOPE,
BODY/BODYSTRUCTURE and the bytes of a BODY[section]<partial>.

Everything here is a pure function of the message's raw bytes (CRLF line
ends, as the store keeps them).  L{parseStructure} finds every MIME part's
byte offsets in those bytes, so sizes are the octet counts of the parts as
stored and a section is a slice of the message, never a re-serialisation
(Python's C{email} package would rewrite line ends and headers).

Results are plain values for the wire encoder: C{bytes} is an IMAP string
(quoted or literal), C{None} is C{NIL}, C{int} is a number, a C{tuple} is a
parenthesised list with items separated by one space, and a L{Concat} is a
run of lists written one after the other with no space and no parentheses
of its own.  RFC 3501 needs the last for the parts of a multipart
(C{(part)(part) "mixed"}) and for an address list (C{((a)(b))}).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: A value the IMAP wire encoder renders (see the module docstring).
Value = object

#: Parts nested deeper than this, or past this many in one message, are not
#: parsed further (Dovecot has the same kind of limits).
MAX_DEPTH = 64
MAX_PARTS = 10000


_DEFAULT_PARAMS = ((b"charset", b"us-ascii"),)


class Concat(tuple[Value, ...]):
    """
    Lists the encoder writes back to back: no space between them and no
    parentheses around them.
    """

    __slots__ = ()


@dataclass(frozen=True)
class Field:
    """
    One header field as it is in the message.

    @ivar name: the field name as written (compare it case-insensitively).
    @ivar value: the value with line folds removed (CR and LF dropped,
        the folding white space kept), leading and trailing space stripped.
    @ivar raw: the field's lines exactly, line ends included.
    """

    name: bytes
    value: bytes
    raw: bytes


@dataclass
class Part:
    """
    One MIME part (or a whole message) and where it lies in the raw bytes.

    The part's MIME header is C{raw[headerStart:bodyStart]} (with its
    terminating empty line), its body C{raw[bodyStart:bodyEnd]}.

    @ivar mainType: the media type as written (C{b"text"}); C{subType} too.
    @ivar params: the Content-Type parameters in order, RFC 2231
        continuations merged (an extended value keeps its C{name*} and its
        C{charset'lang'} prefix, as Dovecot returns them).
    @ivar children: the parts of a multipart, else empty.
    @ivar message: the message inside a C{message/rfc822} part.
    @ivar lines: the body's line count, for C{text/*} and C{message/rfc822}.
    """

    headerStart: int
    bodyStart: int
    bodyEnd: int
    fields: list[Field]
    mainType: bytes = b"text"
    subType: bytes = b"plain"
    params: tuple[tuple[bytes, bytes], ...] = _DEFAULT_PARAMS
    children: list[Part] = field(default_factory=list)
    message: Part | None = None
    lines: int = 0

    @property
    def size(self) -> int:
        """
        The body's size in octets, as stored.
        """
        return self.bodyEnd - self.bodyStart

    @property
    def isMultipart(self) -> bool:
        """
        Whether this part has parts of its own.
        """
        return bool(self.children)

    def header(self, name: bytes) -> bytes | None:
        """
        @return: the value of the first field called C{name} (any case), or
            C{None} when there is none.
        """
        return firstValue(self.fields, name)

    def param(self, name: bytes) -> bytes | None:
        """
        @return: the value of the Content-Type parameter C{name}.
        """
        lowered = name.lower()
        for key, value in self.params:
            if key.lower() == lowered:
                return value
        return None

    @property
    def encoding(self) -> bytes:
        """
        The Content-Transfer-Encoding, C{7bit} when there is none.
        """
        tokens = words(self.header(b"content-transfer-encoding") or b"")
        return tokens[0] if tokens else b"7bit"

    def walk(self) -> list[Part]:
        """
        @return: this part and every part inside it, depth first.
        """
        found = [self]
        for child in self.children:
            found.extend(child.walk())
        if self.message is not None:
            found.extend(self.message.walk())
        return found


def firstValue(fields: list[Field], name: bytes) -> bytes | None:
    lowered = name.lower()
    for each in fields:
        if each.name.lower() == lowered:
            return each.value
    return None


# -- Headers -------------------------------------------------------------------


def _headerEnd(raw: bytes, start: int, end: int) -> int:
    """
    @return: where the body starts: after the first empty line at or after
        C{start}, or C{end} when the header never ends.
    """
    if raw.startswith(b"\r\n", start, end):
        return start + 2
    if raw.startswith(b"\n", start, end):
        return start + 1
    crlf = raw.find(b"\n\r\n", start, end)
    # A bare-LF end counts only before the CRLF one: look no further (a
    # CRLF message would otherwise be scanned to its end).
    lf = raw.find(b"\n\n", start, end if crlf < 0 else crlf + 1)
    if crlf < 0 and lf < 0:
        return end
    if lf < 0 or (0 <= crlf < lf):
        return crlf + 3
    return lf + 2


def parseFields(header: bytes) -> list[Field]:
    """
    Split a header block into fields.

    A line that is neither a field nor a continuation becomes a field with
    an empty name, so that no byte is lost; the empty line ending the block
    is not a field.

    @param header: the header block, with or without its final empty line.
    """
    fields: list[Field] = []
    lines = header.splitlines(keepends=True)
    if lines and lines[-1] in (b"\r\n", b"\n"):
        lines.pop()
    current: list[bytes] = []
    for line in lines:
        if current and line[:1] in (b" ", b"\t"):
            current.append(line)
            continue
        if current:
            fields.append(_field(current))
        current = [line]
    if current:
        fields.append(_field(current))
    return fields


def _field(lines: list[bytes]) -> Field:
    raw = b"".join(lines)
    name, colon, value = raw.partition(b":")
    if not colon:
        return Field(b"", raw.strip(), raw)
    unfolded = value.replace(b"\r", b"").replace(b"\n", b"")
    return Field(name.strip(), unfolded.strip(b" \t"), raw)


def headerFields(raw: bytes) -> list[Field]:
    """
    @return: the fields of the message's (top-level) header.
    """
    return parseFields(raw[: _headerEnd(raw, 0, len(raw))])


# -- Tokens (RFC 2045 and RFC 5322 lexical forms) -------------------------------

_MIME_SPECIALS = b'()<>@,;:\\"/[]?='
ADDRESS_SPECIALS = b'()<>[]:;@\\,."'
_SPACE = b" \t\r\n"


@dataclass(frozen=True)
class Token:
    kind: str  # "atom", "quoted", "comment", "literal" or "special"
    text: bytes
    start: int
    end: int


def tokenize(value: bytes, specials: bytes) -> list[Token]:
    """
    Split a structured header value into tokens; never fails (an unclosed
    quote, comment or literal runs to the end).
    """
    tokens: list[Token] = []
    i, n = 0, len(value)
    while i < n:
        char = value[i : i + 1]
        if char in (b" ", b"\t", b"\r", b"\n"):
            i += 1
        elif char == b'"':
            text, j = _quoted(value, i + 1, b'"')
            tokens.append(Token("quoted", text, i, j))
            i = j
        elif char == b"(":
            text, j = _comment(value, i)
            tokens.append(Token("comment", text, i, j))
            i = j
        elif char == b"[" and specials is ADDRESS_SPECIALS:
            text, j = _quoted(value, i + 1, b"]")
            tokens.append(Token("literal", b"[" + text + b"]", i, j))
            i = j
        elif char in specials:
            tokens.append(Token("special", char, i, i + 1))
            i += 1
        else:
            j = i
            while j < n and value[j] not in specials and value[j] not in _SPACE:
                j += 1
            tokens.append(Token("atom", value[i:j], i, j))
            i = j
    return tokens


def _quoted(value: bytes, i: int, close: bytes) -> tuple[bytes, int]:
    """
    @return: the unescaped text from C{i} to the C{close} byte, and the
        index after it.
    """
    out = bytearray()
    n = len(value)
    while i < n:
        char = value[i : i + 1]
        if char == b"\\" and i + 1 < n:
            out += value[i + 1 : i + 2]
            i += 2
        elif char == close:
            return bytes(out), i + 1
        else:
            out += char
            i += 1
    return bytes(out), n


def _comment(value: bytes, i: int) -> tuple[bytes, int]:
    """
    @return: the text of the (possibly nested) comment opening at C{i},
        without its outer parentheses, and the index after it.
    """
    depth, start, n = 0, i + 1, len(value)
    while i < n:
        char = value[i : i + 1]
        if char == b"\\":
            i += 2
            continue
        if char == b"(":
            depth += 1
        elif char == b")":
            depth -= 1
            if depth == 0:
                return value[start:i], i + 1
        i += 1
    return value[start:], n


def words(value: bytes) -> list[bytes]:
    """
    @return: the atoms and quoted strings of a MIME header value.
    """
    return [t.text for t in tokenize(value, _MIME_SPECIALS) if t.kind in ("atom", "quoted")]


# -- Content-Type, Content-Disposition ------------------------------------------


def parseContentType(value: bytes) -> tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...]] | None:
    """
    Parse a Content-Type value (RFC 2045 5.1, RFC 2231 continuations).

    @return: C{(type, subtype, params)}, or C{None} when the value has no
        C{type/subtype}.
    """
    tokens = [t for t in tokenize(value, _MIME_SPECIALS) if t.kind != "comment"]
    if (
        len(tokens) < 3
        or tokens[0].kind != "atom"
        or tokens[1].text != b"/"
        or tokens[2].kind != "atom"
    ):
        return None
    return tokens[0].text, tokens[2].text, _params(tokens[3:])


def parseDisposition(value: bytes) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]] | None:
    tokens = [t for t in tokenize(value, _MIME_SPECIALS) if t.kind != "comment"]
    if not tokens or tokens[0].kind != "atom":
        return None
    return tokens[0].text, _params(tokens[1:])


def _params(tokens: list[Token]) -> tuple[tuple[bytes, bytes], ...]:
    """
    @return: the C{; name=value} pairs in C{tokens}; a malformed one is
        skipped, the ones after it still read.
    """
    pairs: list[tuple[bytes, bytes]] = []
    i = 0
    while i + 4 <= len(tokens):
        semi, name, equals, value = tokens[i : i + 4]
        if (
            semi.text == b";"
            and name.kind == "atom"
            and equals.text == b"="
            and value.kind in ("atom", "quoted")
        ):
            pairs.append((name.text, value.text))
            i += 4
        else:
            i += 1
    return _merge2231(pairs)


_CONTINUATION = re.compile(rb"(.+?)\*(\d+)(\*?)")


def _merge2231(pairs: list[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """
    Merge RFC 2231 continuations (C{name*0}, C{name*1*}...) into one
    parameter at the place of the first piece.
    """
    merged: list[tuple[bytes, bytes]] = []
    pieces: dict[bytes, list[tuple[int, bool, bytes]]] = {}
    for name, value in pairs:
        match = _CONTINUATION.fullmatch(name)
        if match is None:
            merged.append((name, value))
            continue
        base = match.group(1)
        if base.lower() not in pieces:
            pieces[base.lower()] = []
            merged.append((base, b""))
        pieces[base.lower()].append((int(match.group(2)), bool(match.group(3)), value))
    result = []
    for name, value in merged:
        found = pieces.get(name.lower())
        if found is None or value:
            result.append((name, value))
            continue
        found.sort(key=lambda piece: piece[0])
        encoded = any(piece[1] for piece in found)
        result.append((name + b"*" if encoded else name, b"".join(p[2] for p in found)))
    return tuple(result)


# -- Structure --------------------------------------------------------------------


class _Budget:
    """
    How many more parts one message may have.
    """

    def __init__(self) -> None:
        self.left = MAX_PARTS


def parseStructure(raw: bytes) -> Part:
    """
    Find the MIME structure of a message.

    Never raises: a part whose Content-Type cannot be read, a multipart
    without a boundary or without any boundary line, and anything past the
    nesting limits are C{text/plain}; a multipart whose final boundary is
    missing ends where its enclosing part ends.  Work is linear in the size
    of C{raw} for each level of nesting.

    @param raw: the whole message.
    @return: the top-level part; its header is the message's header.
    """
    return _parse(raw, 0, len(raw), 0, False, _Budget())


def _parse(raw: bytes, start: int, end: int, depth: int, digest: bool, budget: _Budget) -> Part:
    budget.left -= 1
    bodyStart = _headerEnd(raw, start, end)
    fields = parseFields(raw[start:bodyStart])
    part = Part(start, bodyStart, end, fields)
    declared = firstValue(fields, b"content-type")
    parsed = parseContentType(declared) if declared is not None else None
    if parsed is not None:
        part.mainType, part.subType, part.params = parsed
    elif declared is None and digest:
        part.mainType, part.subType, part.params = b"message", b"rfc822", ()
    nested = depth < MAX_DEPTH and budget.left > 0
    kind = (part.mainType.lower(), part.subType.lower())
    if kind[0] == b"multipart":
        boundary = part.param(b"boundary")
        if nested and boundary:
            digest = kind[1] == b"digest"
            for partStart, partEnd in _split(raw, bodyStart, end, boundary):
                part.children.append(_parse(raw, partStart, partEnd, depth + 1, digest, budget))
        if not part.children:
            part.mainType, part.subType, part.params = b"text", b"plain", _DEFAULT_PARAMS
    elif kind == (b"message", b"rfc822"):
        if nested:
            part.message = _parse(raw, bodyStart, end, depth + 1, False, budget)
        else:
            part.mainType, part.subType = b"application", b"octet-stream"
    if part.mainType.lower() == b"text" or part.message is not None:
        part.lines = _lines(raw, bodyStart, end)
    return part


def _lines(raw: bytes, start: int, end: int) -> int:
    """
    @return: the number of lines in C{raw[start:end]}, a last line without
        a line end included.
    """
    count = raw.count(b"\n", start, end)
    if end > start and raw[end - 1 : end] != b"\n":
        count += 1
    return count


def _split(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """
    Find the parts of a multipart body (RFC 2046 5.1.1).

    A delimiter is C{--boundary} at the start of a line, followed only by
    white space up to the line end; the line end before it belongs to it.
    The preamble and epilogue are not parts.

    @return: the C{(start, end)} offsets of each part.
    """
    dash = b"--" + boundary
    parts: list[tuple[int, int]] = []
    partStart: int | None = None
    position = start
    while True:
        found = raw.find(dash, position, end)
        if found < 0:
            break
        position = found + len(dash)
        if found != start and raw[found - 1 : found] != b"\n":
            continue
        closing = raw.startswith(b"--", position, end)
        lineEnd = raw.find(b"\n", position, end)
        lineEnd = end if lineEnd < 0 else lineEnd + 1
        rest = raw[position + 2 if closing else position : lineEnd]
        if rest.strip(_SPACE) and not closing:
            continue
        if partStart is not None:
            before = found - 2 if raw[found - 2 : found] == b"\r\n" else found - 1
            parts.append((partStart, max(partStart, before)))
        if closing:
            return parts
        partStart = position = lineEnd
    if partStart is not None:
        parts.append((partStart, end))
    return parts


# -- BODY[section]<partial> ------------------------------------------------------------

_SECTION = re.compile(
    rb"((?:[1-9][0-9]*)(?:\.[1-9][0-9]*)*)?\.?"
    rb"(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME)?"
    rb"\s*(?:\((.*)\))?",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class Section:
    """
    What a BODY[...] asks for.

    @ivar path: the part numbers (C{(1, 2)} for C{1.2}); empty for the
        whole message.
    @ivar text: C{b""} (the part itself), C{b"HEADER"}, C{b"HEADER.FIELDS"},
        C{b"HEADER.FIELDS.NOT"}, C{b"TEXT"} or C{b"MIME"}, upper case.
    @ivar fields: the field names of C{HEADER.FIELDS} and C{.NOT}.
    """

    path: tuple[int, ...] = ()
    text: bytes = b""
    fields: tuple[bytes, ...] = ()

    @classmethod
    def parse(cls, spec: bytes) -> Section:
        """
        Parse the text between the brackets, e.g. C{b"1.HEADER.FIELDS (To)"}.

        @raise ValueError: C{spec} is not a section.
        """
        match = _SECTION.fullmatch(spec.strip())
        if match is None or (match.group(3) is not None and match.group(2) is None):
            raise ValueError(f"not a section: {spec!r}")
        path = tuple(int(n) for n in match.group(1).split(b".")) if match.group(1) else ()
        text = (match.group(2) or b"").upper()
        if text == b"MIME" and not path:
            raise ValueError("MIME needs a part number")
        fields = tuple(match.group(3).split()) if match.group(3) is not None else ()
        if text.startswith(b"HEADER.FIELDS") and not fields:
            raise ValueError("HEADER.FIELDS needs field names")
        return cls(path, text, fields)


def section(
    raw: bytes,
    spec: Section,
    partial: tuple[int, int] | None = None,
    structure: Part | None = None,
) -> bytes:
    """
    The bytes of C{BODY[spec]<partial>}, exactly as stored.

    A part that does not exist (or C{HEADER}/C{TEXT} of a part that is not a
    C{message/rfc822}) is empty, as in Dovecot.  C{RFC822} is
    C{Section()}, C{RFC822.HEADER} C{Section(text=b"HEADER")} and
    C{RFC822.TEXT} C{Section(text=b"TEXT")}.

    @param partial: C{(start, length)}: the slice of the section to return.
    @param structure: C{parseStructure(raw)}, when the caller has it.
    """
    data = _section(raw, spec, structure)
    if partial is not None:
        start, length = partial
        data = data[start : start + length]
    return data


def _section(raw: bytes, spec: Section, structure: Part | None) -> bytes:
    if not spec.path and spec.text == b"":
        return raw
    if not spec.path and structure is None and spec.text in (b"HEADER", b"TEXT"):
        # The top-level header or text needs only where the header ends,
        # not the whole MIME tree (a mail client's header FETCH of a large
        # mailbox asks for exactly this).
        bodyStart = _headerEnd(raw, 0, len(raw))
        return raw[:bodyStart] if spec.text == b"HEADER" else raw[bodyStart:]
    part = structure if structure is not None else parseStructure(raw)
    message: Part | None = part
    if spec.path:
        found = _resolve(part, spec.path)
        if found is None:
            return b""
        if spec.text == b"":
            return raw[found.bodyStart : found.bodyEnd]
        if spec.text == b"MIME":
            return raw[found.headerStart : found.bodyStart]
        message = found.message
    if message is None:
        return b""
    if spec.text == b"TEXT":
        return raw[message.bodyStart : message.bodyEnd]
    header = raw[message.headerStart : message.bodyStart]
    if spec.text == b"HEADER":
        return header
    return headerSubset(message.fields, spec.fields, spec.text == b"HEADER.FIELDS.NOT")


def headerSubset(fields: list[Field], names: tuple[bytes, ...], exclude: bool) -> bytes:
    """
    @return: the fields named in C{names} (or, with C{exclude}, the others)
        as written, in message order, then the empty line.
    """
    wanted = {name.lower() for name in names}
    kept = [f.raw for f in fields if (f.name.lower() in wanted) != exclude and f.name]
    return b"".join(line if line.endswith(b"\n") else line + b"\r\n" for line in kept) + b"\r\n"


def _enter(message: Part, number: int) -> Part | None:
    """
    @return: part C{number} of a message: its C{number}th part when it is a
        multipart, itself when it is not and C{number} is 1.
    """
    if message.children:
        return message.children[number - 1] if number <= len(message.children) else None
    return message if number == 1 else None


def _resolve(top: Part, path: tuple[int, ...]) -> Part | None:
    """
    @return: the part a section's part number names (RFC 3501 6.4.5).
    """
    current = _enter(top, path[0])
    for number in path[1:]:
        if current is None:
            return None
        if current.children:
            current = _enter(current, number)
        elif current.message is not None:
            current = _enter(current.message, number)
        else:
            return None
    return current


def flatParams(params: tuple[tuple[bytes, bytes], ...]) -> tuple[bytes, ...] | None:
    """
    @return: parameters as IMAP writes them: C{None} when there are none,
        else C{(name, value, name, value...)}.
    """
    return tuple(item for pair in params for item in pair) or None
