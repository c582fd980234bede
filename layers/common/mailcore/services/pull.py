"""Pulling new mail of team accounts over POP3 into storage.

Order per message: raw bytes to the bucket, attachments to the file store, then the item with a
conditional put, and only then (when the account asks for it) DELE. The item's id derives from
the message's UIDL, so a message pulled again after a crash or by a concurrent pull is never
stored twice: the conditional put refuses the second copy.
"""

from __future__ import annotations

import logging
import mimetypes
import ssl
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from mailcore.errors import MailServerError
from mailcore.ids import incoming_mail_id
from mailcore.mime.parse import ParsedMail, parse_message
from mailcore.models import AccountPullReport, Direction, Mail, MailStatus, StoredFile
from mailcore.oauth2 import OAuth2Error, TokenBroker
from mailcore.protocols.diagnose import from_rewritten_warning
from mailcore.protocols.pop3 import Pop3Session
from mailcore.protocols.transcript import Transcript
from mailcore.services.credentials import broken_mark, open_session
from mailcore.storage import Storage, file_key, raw_key
from mailcore.teams import ResolvedAccount

logger = logging.getLogger(__name__)

# Stop fetching when fewer seconds than this are left: storing one large message takes a while.
TIME_MARGIN_SECONDS = 10.0


def mailbox_identity(target: ResolvedAccount) -> str:
    pop3 = target.account.pop3
    return f"{pop3.host}:{pop3.port}/{target.account.pop3_login}"


def store_incoming(
    target: ResolvedAccount, uidl: str, raw: bytes, *, storage: Storage, now: datetime | None = None
) -> Mail | None:
    """Stores one pulled message; None when it was already stored (by an earlier or concurrent pull)."""
    team, account = target.team, target.name
    mail_id = incoming_mail_id(team, account, mailbox_identity(target), uidl)
    received = now or datetime.now(UTC)
    key = raw_key(team, account, mail_id)
    storage.blobs.put(key, raw, "message/rfc822")

    parsed: ParsedMail | None
    try:
        parsed = parse_message(raw)
        parse_error = None
    except Exception as error:  # the raw message is kept; a person can look at it
        parsed, parse_error = None, f"{type(error).__name__}: {error}"[:1000]

    file_ids = []
    if parsed is not None:
        for index, attachment in enumerate(parsed.attachments):
            file_id = f"{mail_id}-{index}"
            object_key = file_key(team, file_id)
            content_type = attachment.content_type or "application/octet-stream"
            storage.blobs.put(object_key, attachment.data, content_type)
            storage.files.put(
                StoredFile(
                    id=file_id,
                    team=team,
                    name=attachment.filename
                    or f"attachment-{index}{mimetypes.guess_extension(content_type) or ''}",
                    content_type=content_type,
                    size=len(attachment.data),
                    s3_key=object_key,
                    created_at=received,
                    content_id=attachment.content_id,
                    mail_id=mail_id,
                )
            )
            file_ids.append(file_id)

    mail = Mail(
        id=mail_id,
        team=team,
        account=account,
        direction=Direction.IN,
        status=MailStatus.RECEIVED,
        created_at=received,
        uidl=uidl,
        raw_key=key,
        raw_size=len(raw),
        parse_error=parse_error,
        attachments=file_ids,
    )
    if parsed is not None:
        mail = mail.model_copy(
            update={
                "from_": parsed.from_,
                "to": parsed.to,
                "cc": parsed.cc,
                "reply_to": parsed.reply_to,
                "subject": parsed.subject,
                "date": parsed.date,
                "message_id": parsed.message_id,
                "in_reply_to": parsed.in_reply_to,
                "references": parsed.references,
                "body_text": parsed.body_text,
                "body_html": parsed.body_html,
            }
        )
    return mail if storage.mail.put_new(mail) else None


def pull_account(
    target: ResolvedAccount,
    *,
    storage: Storage,
    transcript: Transcript,
    tls_context: ssl.SSLContext,
    seconds_left: Callable[[], float] | None = None,
    tokens: TokenBroker | None = None,
) -> AccountPullReport:
    """Pulls the account's new messages; a failure of the server is reported, not raised."""
    report = AccountPullReport(team=target.team, account=target.name)
    identity = mailbox_identity(target)
    delete = not target.account.leave_on_server
    broken: dict[str, object] = {}
    try:
        session = open_session(
            target,
            lambda token: Pop3Session(
                target.account, transcript=transcript, tls_context=tls_context, access_token=token
            ),
            tokens=tokens,
            pull_state=storage.pull_state,
        )
        with session:
            listing = session.listing()
            ids = {uidl: incoming_mail_id(target.team, target.name, identity, uidl) for _, uidl in listing}
            stored_before = storage.mail.existing_ids(ids.values())
            new = [(number, uidl) for number, uidl in listing if ids[uidl] not in stored_before]
            report.skipped = len(listing) - len(new)
            if delete:
                for number, uidl in listing:
                    if ids[uidl] in stored_before:
                        session.delete(number)
                        report.deleted += 1
            for position, (number, uidl) in enumerate(new):
                if seconds_left is not None and seconds_left() < TIME_MARGIN_SECONDS:
                    report.remaining = len(new) - position
                    break
                stored = store_incoming(target, uidl, session.retrieve(number), storage=storage)
                if stored is None:
                    report.skipped += 1
                else:
                    report.fetched += 1
                    report.mail_ids.append(stored.id)
                if delete:
                    session.delete(number)
                    report.deleted += 1
                if stored is not None and (warning := from_rewritten_warning(target.account, stored)):
                    report.warnings.append(warning)
                    logger.warning("%s/%s: %s", target.team, target.name, warning)
    except OAuth2Error as error:
        report.error = error.message
        if not error.temporary:
            broken = broken_mark(storage.pull_state.get(target.team, target.name))
    except MailServerError as error:
        report.error = error.message
        report.problem = error.problem
    storage.pull_state.record(
        target.team,
        target.name,
        {
            "pulled_at": datetime.now(UTC).isoformat(),
            "fetched": report.fetched,
            "remaining": report.remaining,
            "error": report.error,
            **broken,
        },
    )
    return report


def pull_accounts(
    targets: Iterable[ResolvedAccount],
    *,
    storage: Storage,
    transcript: Transcript,
    tls_context: ssl.SSLContext,
    seconds_left: Callable[[], float] | None = None,
    tokens: TokenBroker | None = None,
) -> list[AccountPullReport]:
    """Pulls each account in turn; one broken account never stops the others."""
    reports = []
    for target in targets:
        try:
            reports.append(
                pull_account(
                    target,
                    storage=storage,
                    transcript=transcript,
                    tls_context=tls_context,
                    seconds_left=seconds_left,
                    tokens=tokens,
                )
            )
        except Exception:
            # Storage failing is not the account's fault; report it and go on with the others.
            logger.exception("pull of %s/%s failed", target.team, target.name)
            reports.append(
                AccountPullReport(
                    team=target.team, account=target.name, error="storing the mail failed; retry later"
                )
            )
    return reports
