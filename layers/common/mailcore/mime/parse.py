"""Received mail (raw RFC 5322 bytes) parsed into what the service stores and shows.

`parse_message` never raises: real mail is full of broken headers, wrong charset labels and
truncated MIME, and a mail that parses badly must still be stored and shown as well as it can.

- Headers: the first occurrence counts. Address headers become `Name <addr>` strings; one that
  does not parse cleanly is kept as its decoded raw text (one list item). RFC 2047 encoded words
  are decoded, raw 8-bit header bytes are read as UTF-8 (else windows-1252).
- Body: the first text/plain and the first text/html part that are not attachments, found in one
  depth-first walk through nested multiparts. A text part is an attachment when its disposition
  says so or it has a file name. Every other leaf part is an attachment; an embedded message
  (message/rfc822 and other message/* parts) is one attachment, its body is not merged.
- Charsets: iso-8859-1 and its aliases decode as windows-1252 (as browsers do); us-ascii, no
  label and unknown labels decode as UTF-8 when the bytes are valid UTF-8, else as windows-1252;
  known labels decode with replacement characters for bad bytes. NULs are removed.
- The HTML is sanitized (`mailcore.sanitize.safe_html`); when there is no text part the text is
  derived from it.
- Bounded whatever the mail holds (docs/received-mail-limits.md): a header value is parsed only up
  to MAX_PARSED_HEADER characters, address headers are split into addresses by a linear scan and
  each address is parsed on its own, and the parsed mail keeps at most the capped number of
  recipients, references and attachments, each text cut to a number of UTF-8 bytes with CUT_MARK.
  `ParsedMail.cut` says what was left out; the raw message keeps everything.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import mimetypes
import quopri
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.errors import (
    CharsetError,
    InvalidBase64CharactersDefect,
    InvalidBase64LengthDefect,
    InvalidBase64PaddingDefect,
    ObsoleteHeaderDefect,
    UndecodableBytesDefect,
)
from email.header import decode_header, make_header
from email.headerregistry import BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import Message
from email.parser import BytesFeedParser, BytesHeaderParser
from email.utils import parsedate_to_datetime
from functools import lru_cache, partial
from typing import Any

from mailcore.sanitize import safe_html, text_from_html

_CACHED_HEADERS = 512
# The stdlib header parser copies the rest of the value for each token it takes (quadratic: four
# To headers of 64 KB of `"` took 212 s) and keeps a parse tree per encoded word (a Subject of
# 8,000 encoded words took 494 MiB): it only ever sees this much of a value.
MAX_PARSED_HEADER = 4000
# One address ("Name <user@domain>") longer than this is kept as its text, not parsed.
MAX_PARSED_ADDRESS = 500
# What the stored item keeps (the raw message keeps all of it).
MAX_RECIPIENTS = 100  # per list: to, cc, reply-to
MAX_REFERENCES = 50  # the first (the thread's root) and the latest ones
MAX_ATTACHMENTS = 100  # parts kept as files; the rest stay in the raw message
MAX_ADDRESS_BYTES = 320
MAX_SUBJECT_BYTES = 2000
MAX_ID_BYTES = 500
CUT_MARK = "[…]"


def _cut_header(value: str) -> str:
    """The start of a long header value, cut at a space so no encoded word is cut in two."""
    head = value[:MAX_PARSED_HEADER]
    space = max(head.rfind(" "), head.rfind("\t"))
    return head[:space] if space > MAX_PARSED_HEADER // 2 else head


class _HeaderClasses(HeaderRegistry):
    """The stdlib header factory, made faster and unable to fail.

    The stdlib registry makes a new class for every header it parses (a quarter of the time spent
    on a header, and the parser parses Content-Type several times per part); this one makes each
    class once. A header value the structured parser raises on (it does on some garbage, even while
    the message is being parsed) becomes an unstructured header, so its text stays readable.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[type, type[BaseHeader]] = {}
        self._recent: dict[tuple[str, str], BaseHeader] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        return self._made_from(self.registry.get(name.lower(), self.default_class))

    def _made_from(self, specialised: type) -> type[BaseHeader]:
        made = self._made.get(specialised)
        if made is None:
            made = self._made[specialised] = type(
                "_" + specialised.__name__, (specialised, self.base_class), {}
            )
        return made

    def __call__(self, name: str, value: str) -> BaseHeader:
        # The feed parser asks for a part's Content-Type (and its boundary, charset, ...) several
        # times, each a full parse: the answers for recent values are kept (header objects are
        # immutable strings, safe to share). That halves the time spent parsing a message.
        if len(value) > MAX_PARSED_HEADER:
            value = _cut_header(value)
        key = (name, value)
        header = self._recent.get(key)
        if header is None:
            if len(self._recent) >= _CACHED_HEADERS:
                self._recent.clear()
            header = self._recent[key] = self._parsed(name, value)
        return header

    def _parsed(self, name: str, value: str) -> BaseHeader:
        try:
            return self[name](name, value)
        except Exception:
            return self._made_from(UnstructuredHeader)(name, value)


_POLICY = email_policy.default.clone(header_factory=_HeaderClasses())
_FEED_SLICE = 64 * 1024
# Base64 payloads above this size are decoded in slices (see _large_base64).
_LARGE_PAYLOAD = 1024 * 1024
_BASE64_SLICE = 1024 * 1024
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_HEADER_PARSER = BytesHeaderParser(policy=_POLICY)
# Embedded messages are written back out as they came (raw header values, no refolding).
_RAW_OUT = email_policy.compat32.clone(linesep="\r\n")


@dataclass
class ParsedAttachment:
    filename: str  # decoded and made safe; "attachment-N.ext" when the mail gives none
    content_type: str
    data: bytes
    content_id: str | None  # without the angle brackets
    inline: bool  # shown within the body (e.g. an image referenced by cid:)


@dataclass
class ParsedMail:
    from_: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)
    subject: str = ""
    date: datetime | None = None  # aware; UTC when the header had no zone
    message_id: str | None = None  # with angle brackets, as in the header
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    body_text: str = ""
    body_html: str = ""  # sanitized
    attachments: list[ParsedAttachment] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)  # what the caps left out, e.g. "to: 100 of 2000 kept"


# --- text helpers -------------------------------------------------------------------------------

_SURROGATES = re.compile("[\ud800-\udfff]")
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_MSG_ID = re.compile(r"<[^<>]*>")
_WHITESPACE = re.compile(r"\s+")
_UNSAFE_IN_FILENAME = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_PATH_SEPARATORS = re.compile(r"[/\\]")
_META_CHARSET = re.compile(
    rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([A-Za-z0-9_:.+-]{1,40})", re.IGNORECASE
)

_WINDOWS_1252 = {"iso8859-1", "cp1252", "latin-1", "latin1", "iso-8859-1", "iso_8859-1", "windows-1252"}
_ASCII = {"ascii", "us-ascii", "us", "ansi_x3.4-1968", "iso646-us", "cp367", "ibm367", "csascii"}
# Labels whose content is in practice the superset browsers decode them as.
_SUPERSETS = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "euc-cn": "gb18030", "cp936": "gb18030",
    "ks_c_5601-1987": "cp949", "euc-kr": "cp949", "iso-8859-9": "cp1254", "latin5": "cp1254",
    "tis-620": "cp874", "iso-8859-11": "cp874", "windows-874": "cp874", "shift_jis": "cp932",
    "x-sjis": "cp932", "sjis": "cp932", "big5": "big5hkscs", "x-unicode20utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8", "utf8": "utf-8",
}  # fmt: skip
# Python codecs that a charset label must not select (not charsets, or dangerous to decode with).
_NOT_CHARSETS = {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"}


def _clean(text: str) -> str:
    """Text without lone surrogates (raw 8-bit bytes as UTF-8, else windows-1252) and NULs."""
    if _SURROGATES.search(text):
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            text = _SURROGATES.sub("\ufffd", text)
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("cp1252", "replace")
    return text.replace("\x00", "")


@lru_cache(maxsize=256)
def _codec(label: str | None) -> str | None:
    """The Python codec for a charset label; None for "UTF-8 if valid, else windows-1252"."""
    if not label:
        return None
    label = label.strip().strip("\"'").strip().lower()
    if label in _WINDOWS_1252:
        return "cp1252"
    label = _SUPERSETS.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if info.name in _WINDOWS_1252:
        return "cp1252"
    if info.name in _ASCII or info.name in _NOT_CHARSETS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _decode(data: bytes, label: str | None) -> str:
    codec = _codec(label)
    text: str | None = None
    if codec is not None:
        try:
            text = data.decode(codec, "replace")
        except Exception:  # a codec that rejects "replace" or its input in another way
            text = None
    if text is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("cp1252", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    return _clean(text)


def _unfold(value: str) -> str:
    return _LINE_BREAKS.sub("", value)


def _decoded_text(value: str) -> str:
    """A raw header value unfolded, its encoded words decoded as far as they decode (of a long
    value, only its start: see MAX_PARSED_HEADER)."""
    value = _clean(_unfold(_cut_header(value) if len(value) > MAX_PARSED_HEADER else value))
    if "=?" in value:
        # An unknown charset or a broken encoded word keeps the raw text.
        with contextlib.suppress(Exception):
            value = _clean(str(make_header(decode_header(value))))
    return value.strip()


# --- headers ------------------------------------------------------------------------------------

# Defects that leave the parsed addresses right: obsolete syntax, badly encoded display names.
_HARMLESS_DEFECTS = (
    ObsoleteHeaderDefect,
    CharsetError,
    UndecodableBytesDefect,
    InvalidBase64CharactersDefect,
    InvalidBase64LengthDefect,
    InvalidBase64PaddingDefect,
)


def _raw_headers(msg: Message) -> dict[str, str]:
    raw: dict[str, str] = {}
    for name, value in msg.raw_items():
        raw.setdefault(name.lower(), value if isinstance(value, str) else str(value))
    return raw


def _header(msg: Message, raw: dict[str, str], name: str) -> Any:
    """The first `name` header, parsed. Raw 8-bit bytes are read as UTF-8 (else windows-1252)
    before parsing, as the stdlib would turn them into replacement characters."""
    value = raw[name]
    if _SURROGATES.search(value):
        return msg.policy.header_factory(name, _clean(_unfold(value)))  # type: ignore[attr-defined]
    return msg[name]


def _addresses(msg: Message, raw: dict[str, str], name: str) -> list[str]:
    value = raw.get(name)
    if value is None:
        return []
    if len(value) <= MAX_PARSED_ADDRESS:
        return _parsed_addresses(lambda: _header(msg, raw, name), value)
    # A long list: each address on its own, so that the parser's cost stays linear in the list.
    found: list[str] = []
    header_of = _POLICY.header_factory
    for piece in _address_pieces(_clean(_unfold(value))):
        if len(piece) > MAX_PARSED_ADDRESS:
            found.append(_decoded_text(piece))
        else:
            found += _parsed_addresses(partial(header_of, name, piece), piece)
    return found


def _parsed_addresses(parse: Callable[[], Any], value: str) -> list[str]:
    """The addresses of a header as `Name <addr>`; its decoded text when it does not parse cleanly."""
    try:
        header = parse()
        addresses = header.addresses
        harmless = all(isinstance(defect, _HARMLESS_DEFECTS) for defect in header.defects)
        if harmless and all(address.username and address.domain for address in addresses):
            return [_clean(str(address)) for address in addresses]
    except Exception:  # not an address header after all (see _HeaderClasses): use the raw text
        pass
    fallback = _decoded_text(value)
    return [fallback] if fallback else []


_ADDRESS_SYNTAX = re.compile(r'[^"\\()<>\[\],:;]+|.', re.DOTALL)
_CLOSING = {"(": ")", "<": ">", "[": "]"}


def _address_pieces(value: str) -> list[str]:
    """An address list split at its top-level commas in one pass (quotes, comments, angle
    brackets and domain literals respected); group names and their `;` are dropped."""
    pieces: list[str] = []
    current: list[str] = []
    quoted, escaped = False, False
    nesting: list[str] = []  # the closing character of each open comment, <...> or [...]
    for token in _ADDRESS_SYNTAX.findall(value):
        if escaped:
            escaped = False
        elif token == "\\":
            escaped = True
        elif quoted:
            quoted = token != '"'
        elif nesting and nesting[-1] == ")":  # in a comment only comments nest
            if token in "()":
                nesting.append(")") if token == "(" else nesting.pop()
        elif nesting and token == nesting[-1]:
            nesting.pop()
        elif token == '"':
            quoted = True
        elif token in _CLOSING and (not nesting or token == "("):
            nesting.append(_CLOSING[token])
        elif not nesting and token in ",;":
            pieces.append("".join(current).strip())
            current = []
            continue
        elif not nesting and token == ":":  # "group name:" before the group's addresses
            current = []
            continue
        current.append(token)
    pieces.append("".join(current).strip())
    return [piece for piece in pieces if piece]


def _subject(msg: Message, raw: dict[str, str]) -> str:
    if "subject" not in raw:
        return ""
    try:
        text = _clean(str(_header(msg, raw, "subject")))
    except Exception:
        text = _decoded_text(raw["subject"])
    text = _LINE_BREAKS.sub("", text).strip()
    return text + CUT_MARK if len(raw["subject"]) > MAX_PARSED_HEADER else text


def _date(raw: dict[str, str]) -> datetime | None:
    value = raw.get("date")
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(_clean(_unfold(value)).strip())
    except Exception:  # TypeError, ValueError, OverflowError, IndexError on garbage
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _message_ids(value: str | None) -> list[str]:
    if not value:
        return []
    value = _clean(_unfold(value))
    ids = [_WHITESPACE.sub("", found) for found in _MSG_ID.findall(value)]
    ids = [found for found in ids if len(found) > 2]
    if not ids and "<" not in value:
        ids = [token for token in re.split(r"[\s,]+", value) if token]
    return ids


def _message_id(value: str | None) -> str | None:
    ids = _message_ids(value)
    return ids[0] if ids else None


# --- parts --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _mime_types() -> mimetypes.MimeTypes:
    return mimetypes.MimeTypes()  # only Python's own table: the same answer on every machine


def _fallback_filename(index: int, content_type: str) -> str:
    if content_type in ("message/rfc822", "message/global"):
        extension = ".eml"
    else:
        extension = _mime_types().guess_extension(content_type, strict=False) or ""
        if not extension:
            extension = ".txt" if content_type.startswith(("text/", "message/")) else ".bin"
    return f"attachment-{index}{extension}"


def _safe_filename(name: str | None) -> str:
    """A file name without path, control or bidi characters; "" when nothing usable is left."""
    if not name:
        return ""
    if "=?" in name and "?=" in name:  # RFC 2047 in a quoted parameter: wrong, and common
        name = _decoded_text(name)
    name = _clean(name)
    name = _PATH_SEPARATORS.split(name)[-1]
    name = _UNSAFE_IN_FILENAME.sub("", name).strip(" .\t")
    if len(name) > 255:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = f"{stem[: 254 - len(extension)]}.{extension}"
        else:
            name = name[:255]
    return name


def _structured(part: Message, name: str) -> tuple[str | None, Mapping[str, str]]:
    """The value (lower case, without parameters) and the decoded parameters of a MIME header.

    Parsed once per part: each `get_content_type()`, `get_filename()`, ... parses the header again.
    """
    try:
        header: Any = part.get(name)
        if header is None:
            return None, {}
        return str(header).partition(";")[0].strip().lower(), getattr(header, "params", None) or {}
    except Exception:  # the header parser failed on garbage: as if the header were missing
        return None, {}


def _content_id(part: Message) -> str | None:
    for name, value in part.raw_items():
        if name.lower() == "content-id":
            cid = _clean(_unfold(str(value))).strip().strip("<>").strip()
            return cid or None
    return None


def _payload_bytes(part: Message) -> bytes:
    try:
        if str(part.get("content-transfer-encoding", "")).strip().lower() == "base64":
            payload = part.get_payload()
            if isinstance(payload, str) and len(payload) > _LARGE_PAYLOAD:
                with contextlib.suppress(binascii.Error, ValueError):
                    return _large_base64(payload)
        data = part.get_payload(decode=True)
    except Exception:
        return b""
    return data if isinstance(data, bytes) else b""


def _large_base64(text: str) -> bytes:
    """Decodes a large base64 payload a slice at a time. get_payload(decode=True) holds the text
    encoded, split into lines and joined again (~5x an attachment's size at once)."""
    pieces: list[bytes] = []
    carry = b""
    for start in range(0, len(text), _BASE64_SLICE):
        chunk = carry + _NOT_BASE64.sub(b"", text[start : start + _BASE64_SLICE].encode("ascii", "replace"))
        usable = len(chunk) - len(chunk) % 4
        pieces.append(binascii.a2b_base64(chunk[:usable]))
        carry = chunk[usable:]
    if len(carry) > 1:  # a truncated end: decode what there is, as the email package would
        pieces.append(binascii.a2b_base64(carry + b"=" * (-len(carry) % 4)))
    return b"".join(pieces)


def _text_of(part: Message, subtype: str, charset: str | None) -> str:
    data = _payload_bytes(part)
    if charset is None and subtype == "html":
        found = _META_CHARSET.search(data[:4096])
        charset = found.group(1).decode("ascii") if found else None
    return _decode(data, charset)


def _embedded_message(part: Message, index: int, content_type: str, filename: str) -> ParsedAttachment:
    """A message/* part as one attachment: the embedded message as it came, not merged."""
    payload = part.get_payload()
    messages = [item for item in payload if isinstance(item, Message)] if isinstance(payload, list) else []
    try:
        data = b"".join(item.as_bytes(policy=_RAW_OUT) for item in messages)
    except Exception:
        data = b""
    encoding = _raw_headers(part).get("content-transfer-encoding", "").strip().lower()
    if encoding in ("base64", "quoted-printable") and data:
        # Not allowed for message/rfc822, but sent: the parser took the encoded text for a message.
        try:
            data = base64.b64decode(data) if encoding == "base64" else quopri.decodestring(data)
            messages = [_HEADER_PARSER.parsebytes(data)]
        except Exception:  # not decodable after all: keep it as it is
            pass
    subject = ""
    if content_type in ("message/rfc822", "message/global") and messages:
        subject = _safe_filename(_subject(messages[0], _raw_headers(messages[0])))[:200].strip(" .")
    return ParsedAttachment(
        filename=f"{subject}.eml" if subject else filename or _fallback_filename(index, content_type),
        content_type=content_type,
        data=data,
        content_id=_content_id(part),
        inline=False,
    )


def _content_type(part: Message) -> tuple[str, Mapping[str, str]]:
    content_type, params = _structured(part, "content-type")
    if content_type is None:
        return part.get_default_type(), params
    if content_type.count("/") != 1:  # RFC 2045: an invalid type is text/plain
        return "text/plain", params
    return content_type, params


@dataclass
class _Walk:
    """One pass over a message's parts: the first plain and HTML text parts are the bodies,
    the others attachments (at most MAX_ATTACHMENTS; the rest counted as left out)."""

    mail: ParsedMail
    text: str | None = None
    html: str | None = None
    left_out: int = 0

    def visit(self, part: Message, stack: list[Message]) -> None:
        index = len(self.mail.attachments) + 1
        content_type, type_params = _content_type(part)
        maintype, _, subtype = content_type.partition("/")
        if part.is_multipart() and maintype != "message":
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(reversed([item for item in payload if isinstance(item, Message)]))
            return
        disposition, disposition_params = _structured(part, "content-disposition")
        filename = _safe_filename(disposition_params.get("filename") or type_params.get("name"))
        if part.is_multipart():  # message/rfc822 and other message/* with a parsed payload
            if self._room():
                self.mail.attachments.append(_embedded_message(part, index, content_type, filename))
            return
        if maintype == "multipart":  # a multipart without a usable boundary: show it as text
            maintype, subtype = "text", "plain"
        is_body = maintype == "text" and disposition != "attachment" and not filename
        if (is_body and self._body(part, subtype, type_params.get("charset"))) or not self._room():
            return
        content_id = _content_id(part)
        self.mail.attachments.append(
            ParsedAttachment(
                filename=filename or _fallback_filename(index, content_type),
                content_type=content_type,
                data=_payload_bytes(part),
                content_id=content_id,
                inline=disposition == "inline" or (disposition is None and content_id is not None),
            )
        )

    def keep_broken(self, part: Message) -> None:
        """Keeps what can be kept of a part that breaks the email package: its bytes."""
        if self._room():
            self.mail.attachments.append(
                ParsedAttachment(
                    filename=_fallback_filename(len(self.mail.attachments) + 1, "application/octet-stream"),
                    content_type="application/octet-stream",
                    data=_payload_bytes(part),
                    content_id=None,
                    inline=False,
                )
            )

    def _body(self, part: Message, subtype: str, charset: str | None) -> bool:
        if subtype == "plain" and self.text is None:
            self.text = _text_of(part, subtype, charset)
            return True
        if subtype == "html" and self.html is None:
            self.html = _text_of(part, subtype, charset)
            return True
        return False

    def _room(self) -> bool:
        """Whether another attachment may be kept (one that may not is counted as left out)."""
        if len(self.mail.attachments) < MAX_ATTACHMENTS:
            return True
        self.left_out += 1
        return False


def _walk(msg: Message, mail: ParsedMail) -> tuple[str | None, str | None]:
    """Fills in the attachments; answers the (text, html) bodies. One pass, no recursion."""
    walk = _Walk(mail)
    stack: list[Message] = [msg]
    while stack:
        part = stack.pop()
        try:
            walk.visit(part, stack)
        except Exception:  # keep what can be kept of a part that breaks the email package
            walk.keep_broken(part)
    if walk.left_out:
        kept = len(mail.attachments)
        mail.cut.append(
            f"attachments: {kept} of {kept + walk.left_out} kept as files, all are in the raw message"
        )
    return walk.text, walk.html


def _normalise_text(text: str) -> str:
    return _LINE_BREAKS.sub("\n", text)


def parse_message(raw: bytes) -> ParsedMail:
    """The parsed mail, within the caps. Never raises: whatever cannot be parsed is left empty or
    kept raw."""
    return _bounded(_parsed_somehow(raw))


def _parsed_somehow(raw: bytes) -> ParsedMail:
    try:
        return _parse(raw)
    except Exception:  # the email package failed on the body (e.g. RecursionError on deep nesting)
        pass
    try:  # the headers alone, and the body as text
        msg = _HEADER_PARSER.parsebytes(raw)
        mail = _headers_of(msg)
        mail.body_text = _normalise_text(_clean(str(msg.get_payload())))
        return mail
    except Exception:
        return ParsedMail(body_text=_normalise_text(_decode(bytes(raw), None)))


def cut_text(text: str, max_bytes: int) -> str:
    """`text` in at most `max_bytes` UTF-8 bytes, ending with CUT_MARK when it was cut."""
    if len(text) * 4 <= max_bytes or len(text.encode("utf-8", "surrogatepass")) <= max_bytes:
        return text
    room = max_bytes - len(CUT_MARK.encode())
    return text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore") + CUT_MARK


def _capped(name: str, values: list[str], cap: int, max_bytes: int, mail: ParsedMail) -> list[str]:
    if len(values) > cap:
        mail.cut.append(f"{name}: {cap} of {len(values)} kept")
        # References: the thread's root and the latest ones say where a mail belongs.
        values = values[: cap // 2] + values[-(cap - cap // 2) :] if name == "references" else values[:cap]
    kept = [cut_text(value, max_bytes) for value in values]
    if any(value.endswith(CUT_MARK) for value in kept):
        mail.cut.append(f"{name}: cut, marked {CUT_MARK}")
    return kept


def _bounded(mail: ParsedMail) -> ParsedMail:
    """The mail within the caps of the stored item (module docstring)."""
    [mail.from_] = _capped("from", [mail.from_], 1, MAX_ADDRESS_BYTES, mail)
    [mail.subject] = _capped("subject", [mail.subject], 1, MAX_SUBJECT_BYTES, mail)
    mail.to = _capped("to", mail.to, MAX_RECIPIENTS, MAX_ADDRESS_BYTES, mail)
    mail.cc = _capped("cc", mail.cc, MAX_RECIPIENTS, MAX_ADDRESS_BYTES, mail)
    mail.reply_to = _capped("reply_to", mail.reply_to, MAX_RECIPIENTS, MAX_ADDRESS_BYTES, mail)
    mail.references = _capped("references", mail.references, MAX_REFERENCES, MAX_ID_BYTES, mail)
    for name in ("message_id", "in_reply_to"):
        if (value := getattr(mail, name)) is not None:
            [cut] = _capped(name, [value], 1, MAX_ID_BYTES, mail)
            setattr(mail, name, cut)
    return mail


def _headers_of(msg: Message) -> ParsedMail:
    headers = _raw_headers(msg)
    return ParsedMail(
        from_=", ".join(_addresses(msg, headers, "from")),
        to=_addresses(msg, headers, "to"),
        cc=_addresses(msg, headers, "cc"),
        reply_to=_addresses(msg, headers, "reply-to"),
        subject=_subject(msg, headers),
        date=_date(headers),
        message_id=_message_id(headers.get("message-id")),
        in_reply_to=_message_id(headers.get("in-reply-to")),
        references=_message_ids(headers.get("references")),
    )


_HEADER_BLOCK = 256 * 1024
_CHEAP_HEADER = re.compile(rb"^(from|subject|date)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def cheap_headers(raw: bytes) -> ParsedMail:
    """Sender, subject and date of a message that is set aside unparsed: a bounded look at the
    start of its header block only (no MIME parsing), each value cut to a length before decoding."""
    ends = [
        end
        for end in (raw.find(b"\n\n", 0, _HEADER_BLOCK), raw.find(b"\r\n\r\n", 0, _HEADER_BLOCK))
        if end >= 0
    ]
    block = raw[: min(ends, default=_HEADER_BLOCK)]
    found: dict[str, str] = {}
    for match in _CHEAP_HEADER.finditer(block):
        name = match.group(1).decode("ascii").lower()
        value = match.group(2)[:MAX_SUBJECT_BYTES].decode("utf-8", "surrogateescape")
        found.setdefault(name, value)
    return _bounded(
        ParsedMail(
            from_=_decoded_text(found.get("from", "")),
            subject=_decoded_text(found.get("subject", "")),
            date=_date(found),
        )
    )


def _message_from(raw: bytes) -> Message:
    """What BytesParser.parsebytes answers, fed in slices: parsebytes decodes the whole message to
    one str and copies that into a StringIO (4 bytes a character), ~8x a large message at once."""
    parser = BytesFeedParser(policy=_POLICY)
    view = memoryview(raw)
    for start in range(0, len(view), _FEED_SLICE):
        parser.feed(bytes(view[start : start + _FEED_SLICE]))
    return parser.close()


def _parse(raw: bytes) -> ParsedMail:
    msg = _message_from(raw)
    mail = _headers_of(msg)
    text, html = _walk(msg, mail)
    if html is not None:
        mail.body_html = safe_html(html)
    if text is not None:
        mail.body_text = _normalise_text(text)
    elif mail.body_html:
        mail.body_text = text_from_html(mail.body_html)
    return mail
