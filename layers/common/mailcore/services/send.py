"""Sending one mail of a team's account over SMTP, and keeping it in storage.

`compose` is the `mail_set` step every outgoing mail goes through, sent at once (`send_mail`) or
queued (`services.outbox.queue_mail`): validate and normalise, resolve the mail it replies to,
build the MIME message and store its raw bytes.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from typing import TYPE_CHECKING, Any, NoReturn

from mailcore.errors import InvalidInput, MailServerError, NotFound
from mailcore.ids import new_id
from mailcore.limits import AccountLimiter
from mailcore.mime.build import OutgoingAttachment, build_message, new_message_id
from mailcore.models import Direction, Mail, MailStatus, SendRequest, StoredFile, header_safe
from mailcore.oauth2 import TokenBroker
from mailcore.protocols.smtp import SmtpAccount, SmtpDelivery, SmtpSession
from mailcore.protocols.transcript import Transcript
from mailcore.sanitize import safe_html
from mailcore.services.credentials import open_session
from mailcore.services.retry import attempt_entry, server_reply
from mailcore.storage import Storage, raw_key
from mailcore.teams import ResolvedAccount

if TYPE_CHECKING:
    from mailcore.ports import EventPublisher

# "Re:", "RE:", "re :", "Aw:" (German), "Sv:" (Nordic), "Antw:" (Dutch), also "Re[2]:".
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|antw)\s*(\[\d+\])?\s*:", re.IGNORECASE)
# References keeps the thread's first id and the latest ones; mail clients cut long chains too.
_MAX_REFERENCES = 20


@dataclass(frozen=True)
class SystemSender:
    """The system mail's sender in the place of a team account (see services/system.py)."""

    team: str
    name: str
    config: SmtpAccount


class MailSendFailed(MailServerError):
    """The server refused or failed the mail; it is stored with status `failed`."""

    def __init__(self, cause: MailServerError, mail: Mail) -> None:
        super().__init__(
            cause.message,
            reply_code=cause.reply_code,
            reply=cause.reply,
            temporary=cause.temporary,
            problem=cause.problem,
        )
        self.mail = mail


class MailDeferred(MailSendFailed):
    """The server failed the mail temporarily: it is stored `deferred` and the outbox tries it
    again (services/retry.py). Answered 202 with the mail, the reason and the diagnosis."""

    status = 202
    code = "mail_deferred"


def team_files(team: str, file_ids: list[str], storage: Storage) -> list[StoredFile]:
    """The files of `team` with these ids: each must exist, belong to the team and be uploaded."""
    found = []
    for file_id in file_ids:
        stored = storage.files.get(file_id)
        if stored is None or stored.team != team:
            raise InvalidInput(f"no file {file_id!r} in team {team!r}", field="attachments")
        if not stored.uploaded and not storage.blobs.exists(stored.s3_key):
            raise InvalidInput(f"file {file_id!r} has not been uploaded yet", field="attachments")
        found.append(stored)
    return found


def reply_subject(subject: str) -> str:
    """The subject of a reply: "Re: " in front once, never "Re: Re:"."""
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}".rstrip()


def thread_of(team: str, mail_id: str, storage: Storage) -> Mail:
    """The stored mail of `team` a reply answers."""
    original = storage.mail.get(mail_id)
    if original is None or original.team != team:
        raise InvalidInput(f"no mail {mail_id!r} in team {team!r}", field="reply_to_mail")
    return original


def _file_content(stored: StoredFile, storage: Storage) -> bytes:
    """A file's bytes. A file uploaded through a presigned URL is read only up to the size
    declared when it was registered: the URL cannot hold the uploader to it, this read does."""
    try:
        if stored.uploaded:
            return storage.blobs.get(stored.s3_key)
        data = storage.blobs.get_at_most(stored.s3_key, stored.size)
    except Exception as error:
        raise NotFound(f"the content of file {stored.id!r} is missing", field="attachments") from error
    if data is None:
        raise InvalidInput(
            f"file {stored.id!r} holds more than the {stored.size} bytes declared for its upload",
            field="attachments",
        )
    return data


def render(mail: Mail, storage: Storage, *, auto_generated: bool = False) -> bytes:
    """The raw RFC 5322 bytes of a composed mail (its attachments read from storage);
    `auto_generated` for system mail (Auto-Submitted: auto-generated)."""
    attachments = []
    for stored in team_files(mail.team, mail.attachments, storage):
        data = _file_content(stored, storage)
        # A received file's name is whatever the sender wrote: only header-safe text goes out.
        attachments.append(OutgoingAttachment(header_safe(stored.name), stored.content_type, data))
    assert mail.date is not None and mail.message_id is not None
    message = build_message(
        mail_from=mail.from_,
        to=mail.to,
        cc=mail.cc,
        reply_to=mail.reply_to,
        subject=mail.subject,
        body_text=mail.body_text if mail.body_text or not mail.body_html else None,
        body_html=mail.body_html or None,
        attachments=attachments,
        message_id=mail.message_id,
        date=mail.date,
        in_reply_to=mail.in_reply_to,
        references=mail.references,
        auto_generated=auto_generated,
    )
    return message.as_bytes(policy=policy.SMTP)


def compose(
    target: ResolvedAccount | SystemSender,
    request: SendRequest,
    *,
    storage: Storage,
    status: MailStatus,
    now: datetime | None = None,
) -> Mail:
    """The `mail_set` step: a validated, normalised mail with its raw message stored, not yet
    the item (the caller stores it with `status`)."""
    if missing := request.missing():
        raise InvalidInput(missing[1], field=missing[0])
    account = target.config
    team_files(target.team, request.attachments, storage)
    subject, in_reply_to, references = request.subject, None, []
    if request.reply_to_mail:
        original = thread_of(target.team, request.reply_to_mail, storage)
        subject = reply_subject(subject or header_safe(original.subject))
        if original.message_id:
            in_reply_to = original.message_id
            chain = [*original.references, original.message_id]
            references = (
                chain if len(chain) <= _MAX_REFERENCES else [chain[0], *chain[-_MAX_REFERENCES + 1 :]]
            )
    date = now or datetime.now(UTC)
    mail_id = new_id()
    mail = Mail(
        id=mail_id,
        team=target.team,
        account=target.name,
        direction=Direction.OUT,
        status=status,
        from_=account.mail_from,
        to=request.to,
        cc=request.cc,
        bcc=request.bcc,
        reply_to=request.reply_to,
        subject=subject,
        date=date,
        message_id=new_message_id(account.mail_from, mail_id),
        in_reply_to=in_reply_to,
        references=references,
        body_text=request.body_text or "",
        body_html=request.body_html or "",
        attachments=request.attachments,
        created_at=date,
        raw_key=raw_key(target.team, target.name, mail_id),
    )
    raw = render(mail, storage, auto_generated=isinstance(target, SystemSender))
    assert mail.raw_key is not None
    storage.blobs.put(mail.raw_key, raw, "message/rfc822")
    # The stored HTML is the safe one; the message keeps what the caller wrote.
    body_html = safe_html(request.body_html) if request.body_html else ""
    return mail.model_copy(update={"raw_size": len(raw), "body_html": body_html})


def send_mail(
    target: ResolvedAccount | SystemSender,
    request: SendRequest,
    *,
    storage: Storage,
    transcript: Transcript,
    tls_context: ssl.SSLContext,
    now: datetime | None = None,
    tokens: TokenBroker | None = None,
    limiter: AccountLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stored_as: SendRequest | None = None,
    events: EventPublisher | None = None,
) -> Mail:
    """Builds, stores and sends one mail; answers the stored mail with status `sent`.

    `stored_as`, when given, is what storage keeps (item and raw object) in place of `request`:
    the same mail with its secrets replaced (system mail), while `request` is what goes out.

    The raw message and the item (status `sending`) are stored before the first SMTP byte, so a
    crash mid-send leaves a trace instead of a mail nobody knows about. Raises MailSendFailed
    (the mail stored as `failed`, with the server's reply) when the server does not take it.
    With a `limiter`, a team account over its provider's limits gets RateLimited (429) before
    anything is stored; a busy server (421, 432 4.3.2) is tried again after a pause. A team
    mail still failing temporarily after that raises MailDeferred (stored `deferred`: the outbox
    tries it again, services/retry.py). With `events`, MailSent / MailFailed / MailDeferred go on the bus.
    """

    if missing := request.missing():
        raise InvalidInput(missing[1], field=missing[0])
    if limiter is not None and isinstance(target, ResolvedAccount):
        limiter.take_message(target)
    mail = compose(target, stored_as or request, storage=storage, status=MailStatus.SENDING, now=now)
    if stored_as is None:
        assert mail.raw_key is not None
        raw = storage.blobs.get(mail.raw_key)
    else:
        sent_content = {
            "subject": request.subject,
            "body_text": request.body_text or "",
            "body_html": request.body_html or "",
        }
        raw = render(
            mail.model_copy(update=sent_content), storage, auto_generated=isinstance(target, SystemSender)
        )
    storage.mail.put_new(mail)

    attempted_at = now or datetime.now(UTC)
    try:
        with _connection_slot(target, limiter):
            delivery = _deliver(
                target, raw, request.recipients(), storage, transcript, tls_context, tokens, sleep
            )
    except MailServerError as error:
        _fail_or_defer(target, mail, error, request.recipients(), storage, attempted_at, events)
    return _record_sent(mail, delivery, request.recipients(), storage, attempted_at, events)


def _record_sent(
    mail: Mail,
    delivery: SmtpDelivery,
    recipients: list[str],
    storage: Storage,
    at: datetime,
    events: EventPublisher | None,
) -> Mail:
    from mailcore.services.outbox import completion_event

    entry = attempt_entry(at, recipients, outcome="sent", reply=delivery.reply)
    changes = {"refused": delivery.refused, "reply": delivery.reply, "attempts": 1, "attempt_log": [entry]}
    storage.mail.update_status(mail.id, MailStatus.SENT, expected=MailStatus.SENDING, changes=changes)
    sent = mail.model_copy(update={"status": MailStatus.SENT, **changes})
    if events is not None:
        events.publish([completion_event(sent)])
    return sent


def _fail_or_defer(
    target: ResolvedAccount | SystemSender,
    mail: Mail,
    error: MailServerError,
    recipients: list[str],
    storage: Storage,
    at: datetime,
    events: EventPublisher | None,
) -> NoReturn:
    """Raises MailDeferred (a team mail handed to the outbox) or MailSendFailed (stored failed)."""
    from mailcore.services.outbox import completion_event

    reply = server_reply(error)
    entry = attempt_entry(at, recipients, outcome="failed", reply=reply, error=error.message)
    tried = mail.model_copy(
        update={"attempts": 1, "attempt_log": [entry], "error": error.message, "reply": reply}
    )
    waiting = _handed_to_outbox(target, tried, error, storage, at)
    if waiting is not None:
        if events is not None:
            events.publish([completion_event(waiting)])
        raise MailDeferred(error, waiting) from None
    changes = {"reply": reply, "attempts": 1, "attempt_log": [entry]}
    storage.mail.update_status(
        mail.id, MailStatus.FAILED, expected=MailStatus.SENDING, error=error.message, changes=changes
    )
    failed = tried.model_copy(update={"status": MailStatus.FAILED})
    if events is not None:
        events.publish([completion_event(failed)])
    raise MailSendFailed(error, failed) from None


def _handed_to_outbox(
    target: ResolvedAccount | SystemSender,
    mail: Mail,
    error: MailServerError,
    storage: Storage,
    now: datetime,
) -> Mail | None:
    """A team mail that met a temporary failure, now `deferred` in the outbox (the same retry
    policy as queued mail); None when it must fail instead (or is system mail, which has no
    outbox account to be retried with)."""
    from mailcore.services.outbox import hand_over
    from mailcore.services.retry import RetryPolicy, deferred

    if not isinstance(target, ResolvedAccount):
        return None
    waiting = deferred(RetryPolicy(), mail, error, now, target.config)
    if waiting is None:
        return None
    waiting = waiting.model_copy(update={"status": MailStatus.DEFERRED})
    return waiting if hand_over(storage, waiting) else None


# Pauses before trying a busy server again (421, 432 4.3.2): short, the caller is waiting.
BUSY_RETRY_DELAYS = (1.0, 3.0)


def _is_busy(error: MailServerError) -> bool:
    return error.reply_code == 421 or (error.reply_code == 432 and "4.3.2" in (error.reply or ""))


def _connection_slot(target: ResolvedAccount | SystemSender, limiter: AccountLimiter | None) -> Any:
    if limiter is not None and isinstance(target, ResolvedAccount):
        return limiter.connection(target)
    return contextlib.nullcontext()


def _deliver(
    target: ResolvedAccount | SystemSender,
    raw: bytes,
    recipients: list[str],
    storage: Storage,
    transcript: Transcript,
    tls_context: ssl.SSLContext,
    tokens: TokenBroker | None,
    sleep: Callable[[float], None],
) -> SmtpDelivery:
    for delay in (*BUSY_RETRY_DELAYS, None):

        def make(token: str | None) -> SmtpSession:
            return SmtpSession(
                target.config, transcript=transcript, tls_context=tls_context, access_token=token
            )

        try:
            if isinstance(target, ResolvedAccount):
                session = open_session(target, make, tokens=tokens, pull_state=storage.pull_state)
            else:
                session = make(None)
            with session:
                return session.send(raw, recipients)
        except MailServerError as error:
            if delay is None or not _is_busy(error):
                raise
            transcript.note(f"the server is busy ({error.reply_code}); trying again in {delay:g} s")
            sleep(delay)
    raise AssertionError("unreachable")
