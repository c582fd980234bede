"""Sending one mail of a team's account over SMTP, and keeping it in storage."""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from typing import Any

from mailcore.errors import InvalidInput, MailServerError, NotFound
from mailcore.ids import new_id
from mailcore.limits import AccountLimiter
from mailcore.mime.build import OutgoingAttachment, build_message, new_message_id
from mailcore.models import Direction, Mail, MailStatus, SendRequest, StoredFile
from mailcore.oauth2 import TokenBroker
from mailcore.protocols.smtp import SmtpAccount, SmtpDelivery, SmtpSession
from mailcore.protocols.transcript import Transcript
from mailcore.sanitize import safe_html
from mailcore.services.credentials import open_session
from mailcore.storage import Storage, raw_key
from mailcore.teams import ResolvedAccount


@dataclass(frozen=True)
class SystemSender:
    """The system mail's sender in the place of a team account (see services/system.py)."""

    team: str
    name: str
    account: SmtpAccount


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
) -> Mail:
    """Builds, stores and sends one mail; answers the stored mail with status `sent`.

    `stored_as`, when given, is what storage keeps (item and raw object) in place of `request`:
    the same mail with its secrets replaced (system mail), while `request` is what goes out.

    The raw message and the item (status `sending`) are stored before the first SMTP byte, so a
    crash mid-send leaves a trace instead of a mail nobody knows about. Raises MailSendFailed
    (the mail stored as `failed`, with the server's reply) when the server does not take it.
    With a `limiter`, a team account over its provider's limits gets RateLimited (429) before
    anything is stored; a busy server (421, 432 4.3.2) is tried again after a pause.
    """
    if missing := request.missing():
        raise InvalidInput(missing[1], field=missing[0])
    account = target.account
    if limiter is not None and isinstance(target, ResolvedAccount):
        limiter.take_message(target)
    files = team_files(target.team, request.attachments, storage)
    attachments = []
    for stored in files:
        try:
            data = storage.blobs.get(stored.s3_key)
        except Exception as error:
            raise NotFound(f"the content of file {stored.id!r} is missing", field="attachments") from error
        attachments.append(OutgoingAttachment(stored.name, stored.content_type, data))

    mail_id = new_id()
    date = now or datetime.now(UTC)
    message_id = new_message_id(account.mail_from)

    def raw_of(content: SendRequest) -> bytes:
        message = build_message(
            mail_from=account.mail_from,
            to=content.to,
            cc=content.cc,
            reply_to=content.reply_to,
            subject=content.subject,
            body_text=content.body_text,
            body_html=content.body_html,
            attachments=attachments,
            message_id=message_id,
            date=date,
        )
        return message.as_bytes(policy=policy.SMTP)

    raw = raw_of(request)
    kept = stored_as or request
    kept_raw = raw if stored_as is None else raw_of(stored_as)
    key = raw_key(target.team, target.name, mail_id)
    storage.blobs.put(key, kept_raw, "message/rfc822")
    mail = Mail(
        id=mail_id,
        team=target.team,
        account=target.name,
        direction=Direction.OUT,
        status=MailStatus.SENDING,
        from_=account.mail_from,
        to=request.to,
        cc=request.cc,
        bcc=request.bcc,
        reply_to=request.reply_to,
        subject=kept.subject,
        date=date,
        message_id=message_id,
        body_text=kept.body_text or "",
        body_html=safe_html(kept.body_html) if kept.body_html else "",
        attachments=[stored.id for stored in files],
        created_at=date,
        raw_key=key,
        raw_size=len(kept_raw),
    )
    storage.mail.put_new(mail)

    try:
        with _connection_slot(target, limiter):
            delivery = _deliver(
                target, raw, request.recipients(), storage, transcript, tls_context, tokens, sleep
            )
    except MailServerError as error:
        storage.mail.update_status(
            mail_id, MailStatus.FAILED, expected=MailStatus.SENDING, error=error.message
        )
        failed = mail.model_copy(update={"status": MailStatus.FAILED, "error": error.message})
        raise MailSendFailed(error, failed) from None

    storage.mail.update_status(
        mail_id, MailStatus.SENT, expected=MailStatus.SENDING, changes={"refused": delivery.refused}
    )
    return mail.model_copy(update={"status": MailStatus.SENT, "refused": delivery.refused})


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
                target.account, transcript=transcript, tls_context=tls_context, access_token=token
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
