"""Received mail that is automatic: bounces (delivery reports) and auto-replies.

`classify(raw)` is the one hook of the received-mail path (services/pull.prepare_incoming): it
reads the headers, and only for a mail that looks like a delivery report the first
`REPORT_BYTES` of it, so a hostile message costs no more than its headers.

Bounces are linked to the outgoing mail by the original Message-ID the report quotes (in its
attached message or headers, or in its text). The service's Message-IDs carry the mail's id
(`<mail_id.random@domain>`, mime/build.new_message_id), so the link needs no index. A per-mail
bounce address (VERP, `bounces+<id>@domain` as envelope sender) would survive reports that quote
nothing, but it needs the submission server to take an envelope sender per mail: Microsoft 365
and Gmail allow only the mailbox's own addresses (plus-addresses are not reliably accepted as
senders), and the service sends through the account's own provider. The Message-ID is quoted by
every format seen (RFC 3464 reports attach the headers; Exchange, Gmail, Exim attach the
message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC
from email import message_from_bytes, policy
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any

from mailcore.events import MAIL_BOUNCED, MailEvent
from mailcore.models import Direction, Mail, MailStatus
from mailcore.storage import Clause, Storage

# A report is small; the original message attached to it may be large and is read only this far.
REPORT_BYTES = 256 * 1024
REPORT_ENTRIES = 100
_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|auto(matic)?[ -]?(reply|response|antwort)|abwesenheit|"
    r"absence|away from (the )?office|on vacation|vacation reply|r[ée]ponse automatique)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"(undeliver|undelivered mail|delivery status notification \(failure\)|mail delivery failed|"
    r"delivery failure|returned mail|failure notice|non[- ]?delivery)",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon)@", re.IGNORECASE)
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_REPLY = re.compile(r"\b([245]\d\d)[ -]((?:[245]\.\d{1,3}\.\d{1,3} )?[^\r\n]{0,300})")
_MESSAGE_ID_LINE = re.compile(r"^\s*Message-ID:\s*(<[^>\s]{1,250}>)", re.IGNORECASE | re.MULTILINE)
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+")


@dataclass
class Classified:
    auto_reply: bool = False
    # Per recipient: {recipient, action, status, diagnostic}; empty when not a bounce.
    report: list[dict[str, Any]] = field(default_factory=list)
    original_message_id: str | None = None

    @property
    def is_bounce(self) -> bool:
        return bool(self.report)


def is_auto_reply(headers: Message) -> bool:
    """RFC 3834's Auto-Submitted, the vendors' X-Autoreply/X-Autorespond, bulk precedence, and
    the usual out-of-office subjects."""
    auto = str(headers.get("Auto-Submitted", "")).strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if headers.get("X-Autoreply") or headers.get("X-Autorespond") or headers.get("X-Autoreply-From"):
        return True
    if str(headers.get("Precedence", "")).strip().lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    return bool(_AUTO_SUBJECT.match(str(headers.get("Subject", ""))))


def _looks_like_report(headers: Message) -> bool:
    content_type = str(headers.get("Content-Type", "")).lower()
    if "multipart/report" in content_type and "delivery-status" in content_type:
        return True
    if headers.get("X-Failed-Recipients"):
        return True
    sender = getaddresses([str(headers.get("From", ""))])
    from_daemon = any(_DAEMON.match(address) for _, address in sender)
    return bool(from_daemon or _BOUNCE_SUBJECT.search(str(headers.get("Subject", ""))))


def classify(raw: bytes) -> Classified:
    """What the received message is, read defensively: never raises."""
    try:
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(raw[:REPORT_BYTES], headersonly=True)
        found = Classified(auto_reply=is_auto_reply(headers))
        if _looks_like_report(headers):
            message = message_from_bytes(raw[:REPORT_BYTES], policy=policy.compat32)
            found.report, found.original_message_id = read_report(message)
            # A bounce is automatic too: no business logic should answer it.
            found.auto_reply = found.auto_reply or found.is_bounce
        return found
    except Exception:  # a mail that cannot be classified is stored as plain mail
        return Classified()


def read_report(message: Message) -> tuple[list[dict[str, Any]], str | None]:
    """(per-recipient entries, the original Message-ID) of a delivery report in any of the
    formats: RFC 3464 first, then X-Failed-Recipients and the text of non-standard reports."""
    original = _original_message_id(message)
    entries = _rfc3464(message)
    if not entries:
        entries = _non_standard(message)
    # Each entry lands on two items (the bounce and its outgoing mail): a report of thousands of
    # recipients must not push either past DynamoDB's 400 KB.
    return entries[:REPORT_ENTRIES], original


def _rfc3464(message: Message) -> list[dict[str, Any]]:
    entries = []
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        for block in blocks[1:]:  # the first block is about the message, the rest per recipient
            if not isinstance(block, Message):
                continue
            recipient = _typed_address(block.get("Final-Recipient") or block.get("Original-Recipient"))
            action = str(block.get("Action", "")).strip().lower()
            if not recipient or not action:
                continue
            entries.append(
                {
                    "recipient": recipient,
                    "action": action,
                    "status": str(block.get("Status", "")).strip()[:32] or None,
                    "diagnostic": _typed_text(block.get("Diagnostic-Code")),
                }
            )
    return entries


def _non_standard(message: Message) -> list[dict[str, Any]]:
    """Exchange/Microsoft 365 NDRs, Gmail and Exim: recipients from X-Failed-Recipients or the
    report's text, the status and the server's reply from the text near them."""
    text = _report_text(message)
    failed = [a for _, a in getaddresses([str(message.get("X-Failed-Recipients", ""))]) if a]
    if not failed:
        # The text before the attached original names the recipients that failed.
        failed = list(dict.fromkeys(_ADDRESS.findall(text)))
        sender = {a.lower() for _, a in getaddresses([str(message.get("To", ""))])}
        failed = [a for a in failed if a.lower() not in sender and not _DAEMON.match(a)][:50]
    if not failed or not (_REPLY.search(text) or _STATUS.search(text)):
        return []
    entries = []
    for recipient in failed:
        near = text[text.find(recipient) :] if recipient in text else text
        reply = _REPLY.search(near) or _REPLY.search(text)
        status = _STATUS.search(near) or _STATUS.search(text)
        entries.append(
            {
                "recipient": recipient,
                "action": "failed",
                "status": status.group(1) if status else None,
                "diagnostic": f"{reply.group(1)} {reply.group(2)}".strip()[:500] if reply else None,
            }
        )
    return entries


def _report_text(message: Message) -> str:
    """The human-readable text of the report, without the attached original message."""
    texts = []
    for part in message.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            break
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                text = payload.decode(part.get_content_charset() or "utf-8", "replace")
                if part.get_content_subtype() == "html":
                    text = re.sub(r"<[^>]{0,2000}>", " ", text)
                texts.append(text)
    joined = "\n".join(texts)
    # Exim quotes the original inline after this line: what follows is not the report.
    cut = re.search(r"^-+ ?This is a copy of the message", joined, re.MULTILINE | re.IGNORECASE)
    return joined[: cut.start()] if cut else joined


def _original_message_id(message: Message) -> str | None:
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(first, Message) and first.get("Message-ID"):
                return str(first["Message-ID"]).strip()
        elif content_type == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                found = _MESSAGE_ID_LINE.search(payload.decode("utf-8", "replace"))
                if found:
                    return found.group(1)
    for part in message.walk():  # inline copies (Exim) and quoted headers in the text
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                found = _MESSAGE_ID_LINE.search(payload.decode("utf-8", "replace"))
                if found:
                    return found.group(1)
    return None


def _typed_address(value: Any) -> str | None:
    """`rfc822; someone@example.com` -> the address."""
    if not value:
        return None
    address = str(value).split(";", 1)[-1].strip().strip("<>")
    return address[:320] or None


def _typed_text(value: Any) -> str | None:
    if not value:
        return None
    text = " ".join(str(value).split(";", 1)[-1].split())
    return text[:500] or None


def mail_id_of(message_id: str | None) -> str | None:
    """The stored mail's id in one of the service's Message-IDs (new_message_id), or None."""
    if not message_id:
        return None
    found = re.match(r"^<([A-Za-z0-9_-]{1,64})\.[0-9a-f]{16}@", message_id.strip())
    return found.group(1) if found else None


# ----------------------------------------------------------------------------- recording

# Attempts of the optimistic write of one bounce (two pulls recording bounces of one mail).
RECORD_TRIES = 5


def mark(mail: Mail, raw: bytes) -> Mail:
    """A received mail with what `classify` found: auto_reply, and for a bounce its report and
    the outgoing mail it names (checked against storage when recorded)."""
    found = classify(raw)
    if not found.auto_reply and not found.is_bounce:
        return mail
    return mail.model_copy(
        update={
            "auto_reply": found.auto_reply,
            "bounces": found.report,
            "bounce_of": mail_id_of(found.original_message_id) if found.is_bounce else None,
            "in_reply_to": mail.in_reply_to or found.original_message_id,
        }
    )


def linked(storage: Storage, mail: Mail) -> Mail:
    """A received bounce with `bounce_of` kept only when it names an outgoing mail of the same
    team with exactly that Message-ID (a report naming another team's mail links nothing)."""
    if mail.bounce_of is None:
        return mail
    outgoing = storage.mail.get(mail.bounce_of)
    if _answers(outgoing, mail):
        return mail
    return mail.model_copy(update={"bounce_of": None})


def _answers(outgoing: Mail | None, bounce: Mail) -> bool:
    return (
        outgoing is not None
        and outgoing.team == bounce.team
        and outgoing.direction == Direction.OUT
        and outgoing.message_id == bounce.in_reply_to
    )


def bounced_event(bounce: Mail) -> MailEvent:
    """MailBounced: names the outgoing mail, the bounce stored as received mail, and what it reports."""
    assert bounce.bounce_of is not None
    failed = [entry["recipient"] for entry in bounce.bounces if entry.get("action") == "failed"]
    delayed = [entry["recipient"] for entry in bounce.bounces if entry.get("action") == "delayed"]
    extra = {"bounce_mail_id": bounce.id, "failed": failed, "delayed": delayed, "bounces": bounce.bounces}
    return MailEvent(MAIL_BOUNCED, bounce.team, bounce.account, bounce.bounce_of, extra)


def record_bounce(storage: Storage, bounce: Mail) -> Mail | None:
    """Adds a stored bounce's report to the outgoing mail it names: `bounces` (one entry per
    recipient and report), status `bounced` when every recipient failed. None when the bounce
    names no outgoing mail of the same team with that Message-ID (then it stays a plain bounce)."""
    if bounce.bounce_of is None:
        return None
    for _ in range(RECORD_TRIES):
        outgoing = storage.mail.get(bounce.bounce_of)
        if outgoing is None or not _answers(outgoing, bounce):
            return None
        if any(entry.get("bounce") == bounce.id for entry in outgoing.bounces):
            return outgoing  # recorded already (the pull ran again)
        at = (bounce.created_at).astimezone(UTC).isoformat()
        added = [{**entry, "time": at, "bounce": bounce.id} for entry in bounce.bounces]
        entries = [*outgoing.bounces, *added][-100:]
        status = _status_after(outgoing, entries)
        # Two bounces of one mail recorded at once (two pulls) each read the list: only the
        # write whose read is still current applies; the other reads again and retries.
        tag = outgoing.model_dump(mode="json").get("bounce_tag")
        guard = (
            Clause(
                equals={"status": outgoing.status.value, **({"bounce_tag": tag} if tag else {})},
                missing=() if tag else ("bounce_tag",),
            ),
        )
        done = storage.mail.transition(
            outgoing.id, guard, assign={"bounces": entries, "status": status.value, "bounce_tag": bounce.id}
        )
        if done is not None:
            return done
    raise RuntimeError(
        f"the bounce of mail {bounce.bounce_of} could not be recorded: too many concurrent writes"
    )


def _status_after(outgoing: Mail, entries: list[dict[str, Any]]) -> MailStatus:
    if outgoing.status != MailStatus.SENT:
        return outgoing.status
    recipients = {a.lower() for _, a in getaddresses([*outgoing.to, *outgoing.cc, *outgoing.bcc]) if a}
    failed = {str(e["recipient"]).lower() for e in entries if e.get("action") == "failed"}
    return MailStatus.BOUNCED if recipients and recipients <= failed else outgoing.status
