"""Outgoing mail as an RFC 5322 / MIME message, ready for `msg.as_bytes(policy=email.policy.SMTP)`.

Structure: text/plain alone; or multipart/alternative (text, then html) when there is HTML (a text
part is derived from HTML given alone); wrapped with the attachments in multipart/mixed when there
are any. Text is UTF-8, sent as 7bit when it is short-lined ASCII and as quoted-printable or base64
otherwise, so body lines stay within 78 characters and no server needs 8BITMIME. Non-ASCII header text is
RFC 2047 encoded and non-ASCII filenames RFC 2231 encoded (by the `email` package's folding).
Bcc never becomes a header: the caller gives those recipients to SMTP as envelope recipients only.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

from mailcore.sanitize import text_from_html

# policy.SMTP (CRLF, 78 columns) restricted to 7bit content transfer encodings.
_POLICY = email_policy.SMTP.clone(cte_type="7bit")
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"  # RFC 6838 restricted-name characters
_CONTENT_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_DOMAIN = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_FALLBACK_DOMAIN = "mail.invalid"


@dataclass(frozen=True)
class OutgoingAttachment:
    filename: str
    content_type: str  # "type/subtype"; an invalid or empty one is sent as application/octet-stream
    data: bytes


def new_message_id(mail_from: str, mail_id: str | None = None) -> str:
    """A new, unguessable Message-ID on the sender's domain: `<random@domain>`, or with the
    stored mail's id `<mail_id.random@domain>`, so that a bounce quoting it names the mail it
    reports on without an index (mailcore/bounces.py).

    The domain comes from the addr-spec of `mail_from` (IDNA encoded when it is not ASCII);
    `mail.invalid` when there is none or it is not a usable host name.
    """
    local = f"{mail_id}.{secrets.token_hex(8)}" if mail_id else secrets.token_hex(16)
    return f"<{local}@{_domain_of(mail_from)}>"


def _domain_of(mail_from: str) -> str:
    try:
        pairs = getaddresses([mail_from])
    except Exception:  # getaddresses is lenient; this is defence against odd input only
        return _FALLBACK_DOMAIN
    addr = pairs[0][1] if pairs else ""
    _, at, domain = addr.rpartition("@")
    domain = domain.strip().rstrip(".").lower()
    if not at or not domain:
        return _FALLBACK_DOMAIN
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return _FALLBACK_DOMAIN
    return domain if _DOMAIN.fullmatch(domain) else _FALLBACK_DOMAIN


def _no_line_breaks(name: str, value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"{name} must not contain CR, LF or NUL")
    return value


def _content_type(value: str) -> tuple[str, str]:
    match = _CONTENT_TYPE.fullmatch(value.strip())
    if not match:
        return "application", "octet-stream"
    maintype, subtype = match.group(1).lower(), match.group(2).lower()
    # A multipart or message type would need a structure the bytes don't carry (and message/*
    # may not be base64 encoded): such files go as opaque bytes.
    if maintype in ("multipart", "message"):
        return "application", "octet-stream"
    return maintype, subtype


def _part(content: str | bytes, *args: Any, **kwargs: Any) -> EmailMessage:
    part = EmailMessage(policy=_POLICY)
    part.set_content(content, *args, **kwargs)
    del part["MIME-Version"]  # set_content adds it; only the top of the message has it
    return part


def build_message(
    *,
    mail_from: str,
    to: list[str],
    cc: list[str],
    reply_to: list[str],
    subject: str,
    body_text: str | None,
    body_html: str | None,
    attachments: list[OutgoingAttachment],
    message_id: str,
    date: datetime,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    auto_generated: bool = False,
) -> EmailMessage:
    """The MIME message of one outgoing mail. Addresses are validated `Name <addr>` strings.
    `auto_generated` marks mail no person wrote (RFC 3834), so that auto-responders stay quiet.

    Raises ValueError when a header value contains CR, LF or NUL, or `date` has no time zone.
    """
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("date must be timezone-aware")
    _no_line_breaks("from", mail_from)
    for field, values in (("to", to), ("cc", cc), ("reply_to", reply_to), ("references", references or [])):
        for value in values:
            _no_line_breaks(field, value)
    _no_line_breaks("subject", subject)
    _no_line_breaks("message_id", message_id)
    if in_reply_to is not None:
        _no_line_breaks("in_reply_to", in_reply_to)
    for attachment in attachments:
        _no_line_breaks("attachment filename", attachment.filename)
        _no_line_breaks("attachment content type", attachment.content_type)

    msg = EmailMessage(policy=_POLICY)
    msg["From"] = mail_from
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    if reply_to:
        msg["Reply-To"] = ", ".join(reply_to)
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    if auto_generated:
        msg["Auto-Submitted"] = "auto-generated"
    msg["MIME-Version"] = "1.0"
    _add_bodies(msg, body_text, body_html)
    _add_attachments(msg, attachments)
    return msg


def _add_bodies(msg: EmailMessage, body_text: str | None, body_html: str | None) -> None:
    """The plain text body (made from the HTML when only HTML is given), and the HTML as its
    alternative."""
    if body_html is not None and body_text is None:
        body_text = text_from_html(body_html)
    msg.set_content(body_text or "", subtype="plain", charset="utf-8")
    if body_html is not None:
        msg.make_alternative()
        msg.attach(_part(body_html, subtype="html", charset="utf-8"))


def _add_attachments(msg: EmailMessage, attachments: list[OutgoingAttachment]) -> None:
    if attachments:
        msg.make_mixed()
    for index, attachment in enumerate(attachments, start=1):
        maintype, subtype = _content_type(attachment.content_type)
        filename = attachment.filename.strip() or f"attachment-{index}"
        msg.attach(
            _part(bytes(attachment.data), maintype, subtype, disposition="attachment", filename=filename)
        )
