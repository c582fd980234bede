"""Sending one mail of a team's account over SMTP, and keeping it in storage.

`compose` is the `mail_set` step every outgoing mail goes through, sent at once (`DirectSend`) or
queued (`services.outbox.queue_mail`): validate and normalise, resolve the mail it replies to,
build the MIME message and store its raw bytes.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from typing import TypedDict, Unpack

from mailcore.errors import Conflict, InvalidInput, MailServerError, MailServiceError, NotFound
from mailcore.ids import keyed_mail_id, new_id
from mailcore.limits import AccountLimiter
from mailcore.mime.build import OutgoingAttachment, build_message, new_message_id
from mailcore.models import Direction, Mail, MailStatus, SendRequest, StoredFile, header_safe
from mailcore.oauth2 import TokenBroker
from mailcore.ports import DeadLetters, EventPublisher
from mailcore.protocols.deadline import Deadline
from mailcore.protocols.smtp import SmtpAccount, SmtpDelivery, SmtpSession
from mailcore.protocols.transcript import Transcript
from mailcore.sanitize import safe_html
from mailcore.services.credentials import open_session
from mailcore.services.delivery import DIRECT_HOLD, Attempts, Completions, SendOnce, direct_hold_until
from mailcore.services.retry import WHILE_THE_CALLER_WAITS, RetryPolicy
from mailcore.storage import Storage, raw_key
from mailcore.teams import ResolvedAccount

# "Re:", "RE:", "re :", "Aw:" (German), "Sv:" (Nordic), "Antw:" (Dutch), also "Re[2]:".
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|antw)\s*(\[\d+\])?\s*:", re.IGNORECASE)
# References keeps the thread's first id and the latest ones; mail clients cut long chains too.
_MAX_REFERENCES = 20
# How long an Idempotency-Key names one mail (Powertools keeps the answer as long).
KEY_WINDOW = timedelta(hours=24)
# A direct send's SMTP session ends this long before the caller's time: the outcome is written
# and the answer given after it.
ANSWER_MARGIN_SECONDS = 4.0


@dataclass(frozen=True)
class SystemSender:
    """The system mail's sender in the place of a team account (see services/system.py)."""

    team: str
    name: str
    config: SmtpAccount


class MailSendFailed(MailServerError):
    """The server refused or failed the mail; it is stored `failed` (`unknown` when the connection
    dropped after the whole message went out)."""

    def __init__(self, cause: MailServerError, mail: Mail) -> None:
        super().__init__(
            cause.message,
            reply_code=cause.reply_code,
            reply=cause.reply,
            temporary=cause.temporary,
            problem=cause.problem,
        )
        self.mail = mail
        if cause.status < 500:  # the account's fault (a server it may not reach): answered as such
            self.status, self.code = cause.status, cause.code


class MailDeferred(MailSendFailed, status=202, code="mail_deferred"):
    """The server failed the mail temporarily: it is stored `deferred` and the outbox tries it
    again (services/retry.py). Answered 202 with the mail, the reason and the diagnosis."""


@dataclass(frozen=True)
class RequestKey:
    """A caller's Idempotency-Key for one direct send: with the caller and the account it names
    one mail (ids.keyed_mail_id); `digest` is the request's hash, stored with the mail."""

    caller: str
    key: str
    digest: str


class KeyReused(MailServiceError, status=422, code="idempotency_key_reused"):
    def __init__(self) -> None:
        message = "this Idempotency-Key was used for a different request; use a new key"
        super().__init__(message, field="Idempotency-Key")


class EarlierAttempt(Conflict, code="earlier_attempt"):
    """An earlier run of the same keyed request stored its mail and did not answer it as sent (it
    died, or its answer was lost): what is known of the mail, never a second send."""

    def __init__(self, mail: Mail) -> None:
        retry = f"POST /api/core/mail/{mail.id}/retry"
        if mail.status in (MailStatus.SENDING, MailStatus.UNKNOWN):
            held = mail.lease_until.isoformat() if mail.lease_until else "its hold ends"
            when = "is `unknown`" if mail.status == MailStatus.UNKNOWN else f"becomes `unknown` after {held}"
            message = (
                f"an earlier request with this Idempotency-Key stopped while sending mail {mail.id}: it may"
                f" have been delivered, so it is not sent again; it {when}, then {retry} if you know it"
                " did not arrive (same Message-ID)"
            )
        else:
            message = (
                f"an earlier request with this Idempotency-Key made mail {mail.id}, now `{MailStatus(mail.status).value}`:"
                f" it is not sent again for this key; read it, and {retry} if it failed"
            )
        super().__init__(message, field="Idempotency-Key")
        self.mail = mail


def earlier_answer(mail: Mail, target: ResolvedAccount | SystemSender, once: RequestKey) -> Mail:
    """The answer to a keyed request whose mail an earlier run stored: the mail when it went out,
    else EarlierAttempt (409); another request under the same key is refused (422)."""
    if mail.request_digest != once.digest or (mail.team, mail.account) != (target.team, target.name):
        raise KeyReused()
    if mail.status in (MailStatus.SENT, MailStatus.BOUNCED):
        return mail
    raise EarlierAttempt(mail)


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


def render(
    mail: Mail, storage: Storage, *, auto_generated: bool = False, files: list[StoredFile] | None = None
) -> bytes:
    """The raw RFC 5322 bytes of a composed mail (its attachments read from storage);
    `auto_generated` for system mail (Auto-Submitted: auto-generated); `files`: the mail's
    attachments as team_files found them already (else they are looked up again)."""
    attachments = []
    for stored in team_files(mail.team, mail.attachments, storage) if files is None else files:
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


class ComposeOptions(TypedDict, total=False):
    now: datetime | None
    mail_id: str | None


def compose(
    target: ResolvedAccount | SystemSender,
    request: SendRequest,
    *,
    storage: Storage,
    status: MailStatus,
    **options: Unpack[ComposeOptions],
) -> Mail:
    """The `mail_set` step: a validated, normalised mail with its raw message stored, not yet
    the item (the caller stores it with `status`). `mail_id`: a derived id (a keyed send), else
    a new one."""
    return composed_message(target, request, storage=storage, status=status, **options)[0]


def composed_message(
    target: ResolvedAccount | SystemSender,
    request: SendRequest,
    *,
    storage: Storage,
    status: MailStatus,
    now: datetime | None = None,
    mail_id: str | None = None,
) -> tuple[Mail, bytes]:
    """`compose`, and the raw message it stored (a direct send sends these bytes: reading them
    back from S3 would cost a round trip per mail)."""
    if missing := request.missing():
        raise InvalidInput(missing[1], field=missing[0])
    account = target.config
    files = team_files(target.team, request.attachments, storage)
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
    # Two runs of one keyed request may compose the same derived id: each writes its own raw
    # object, so the run whose item is not stored (put_new) cannot overwrite the other's message.
    raw_name = f"{mail_id}.{new_id()}" if mail_id else None
    mail_id = mail_id or new_id()
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
        raw_key=raw_key(target.team, target.name, raw_name or mail_id),
    )
    raw = render(mail, storage, auto_generated=isinstance(target, SystemSender), files=files)
    assert mail.raw_key is not None
    storage.blobs.put(mail.raw_key, raw, "message/rfc822")
    # The stored HTML is the safe one; the message keeps what the caller wrote.
    body_html = safe_html(request.body_html) if request.body_html else ""
    return mail.model_copy(update={"raw_size": len(raw), "body_html": body_html}), raw


@dataclass(frozen=True)
class DirectSend:
    """Sends one mail now, while the caller waits: the outbox's attempts and outcomes
    (services/delivery.py) without a claim. The mail is held `sending` without a lease owner
    until its function's deadline and a margin (DIRECT_HOLD): only this send moves it on while
    it may be alive; after that the outbox's sync records it `unknown` (never sends it).

    The raw message and the item are stored before the first SMTP byte, so a crash mid-send
    leaves a trace instead of a mail nobody knows about. With a `limiter`, a team account over
    its provider's limits (messages a minute, connections) gets RateLimited (429) before
    anything is stored. A busy server is tried again after a pause (WHILE_THE_CALLER_WAITS); a
    team mail still failing temporarily after that raises MailDeferred (stored `deferred`: the
    outbox owns it from then on); any other failure raises MailSendFailed (stored `failed`, or
    `unknown` when the connection dropped after the message went out). System mail has no
    outbox account: a temporary failure fails it at once.
    """

    storage: Storage
    tls_context: ssl.SSLContext
    tokens: TokenBroker | None = None
    limiter: AccountLimiter | None = None
    events: EventPublisher | None = None
    dead_letters: DeadLetters | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # The caller's time (API Gateway's 29 s): each try's SMTP session ends ANSWER_MARGIN_SECONDS
    # before it, however slowly the server answers.
    seconds_left: Callable[[], float] | None = None

    def send(
        self,
        target: ResolvedAccount | SystemSender,
        request: SendRequest,
        *,
        transcript: Transcript,
        stored_as: SendRequest | None = None,
        time_left: float | None = None,
        once: RequestKey | None = None,
    ) -> Mail:
        """Builds, stores and sends one mail; answers it stored `sent`. `stored_as`, when given,
        is what storage keeps (item and raw object) in place of `request`: the same mail with its
        secrets replaced (system mail), while `request` is what goes out. `time_left`: the
        seconds the function has before it is stopped (its hold ends then, and a margin).
        `once`: the caller's Idempotency-Key; the mail an earlier run of the same request stored
        is answered (earlier_answer), never sent again."""
        if missing := request.missing():
            raise InvalidInput(missing[1], field=missing[0])
        mail_id = None
        if once is not None:
            earlier, mail_id = self._earlier(target, once)
            if earlier is not None:
                return earlier_answer(earlier, target, once)
        with self._within_limits(target):
            mail, raw = self._store(target, request, stored_as, time_left, mail_id, once)
            if raw is None:  # a run of the same keyed request stored it first (only derived ids meet)
                assert once is not None
                return earlier_answer(mail, target, once)
            attempts = Attempts(self.policy, WHILE_THE_CALLER_WAITS, self.clock, self.sleep, transcript)
            config = target.config if isinstance(target, ResolvedAccount) else None
            send = self._sender(target, transcript)
            outcome = attempts.deliver(mail, raw, request.recipients(), send, config)
        completions = Completions(self.storage, self.events, self.dead_letters)
        completions.record([(outcome, DIRECT_HOLD)])
        completions.flush()
        if outcome.error is None:
            return outcome.mail
        failure = MailDeferred if outcome.mail.status == MailStatus.DEFERRED else MailSendFailed
        raise failure(outcome.error, outcome.mail)

    @contextlib.contextmanager
    def _within_limits(self, target: ResolvedAccount | SystemSender) -> Iterator[None]:
        """Counts the message and holds one of the account's SMTP connection slots, before
        anything is stored: a send over the provider's limits is a 429 that leaves no trace."""
        if self.limiter is None or not isinstance(target, ResolvedAccount):
            yield
            return
        self.limiter.take_message(target)
        with self.limiter.connection(target):
            yield

    def _earlier(self, target: ResolvedAccount | SystemSender, once: RequestKey) -> tuple[Mail | None, str]:
        """The mail an earlier run of this keyed request stored within the key's window (today's
        id or yesterday's), and the id a new mail of it gets (today's)."""
        now = self.clock()
        today = int(now.timestamp() // KEY_WINDOW.total_seconds())
        ids = [
            keyed_mail_id(target.team, target.name, once.caller, once.key, day) for day in (today, today - 1)
        ]
        # One round trip for both ids (BatchGetItem, the one read a system mail function may
        # make of the mail table): a new key (the common case) finds neither.
        stored = self.storage.mail.get_many(ids)
        for found in (stored[mail_id] for mail_id in ids if mail_id in stored):
            if found.created_at > now - KEY_WINDOW:
                return found, ids[0]
        return None, ids[0]

    def _store(
        self,
        target: ResolvedAccount | SystemSender,
        request: SendRequest,
        stored_as: SendRequest | None,
        time_left: float | None,
        mail_id: str | None = None,
        once: RequestKey | None = None,
    ) -> tuple[Mail, bytes | None]:
        """The mail stored `sending` and held (composed from `stored_as` when given), and the
        bytes that go out; no bytes, and the mail as stored, when its (derived) id was taken."""
        now = self.clock()
        mail, stored_raw = composed_message(
            target,
            stored_as or request,
            storage=self.storage,
            status=MailStatus.SENDING,
            now=now,
            mail_id=mail_id,
        )
        # Written with the item, before the first SMTP byte: from here on the message may go
        # out, so the sync that takes over a send that died records `unknown` (never sends it).
        hold = {"lease_until": direct_hold_until(now, time_left), "attempt_started_at": now}
        mail = mail.model_copy(update={**hold, "request_digest": once.digest if once else None})
        system = isinstance(target, SystemSender)
        if stored_as is None:
            raw = stored_raw
        else:
            sent = {
                "subject": request.subject,
                "body_text": request.body_text or "",
                "body_html": request.body_html or "",
            }
            raw = render(mail.model_copy(update=sent), self.storage, auto_generated=system)
        # attribute_not_exists(id): of two runs of one keyed request that both found no mail
        # (Powertools lets a second run in once the first's in-progress record expired with its
        # function's deadline), only one stores the mail and sends it; the other answers it.
        if not self.storage.mail.put_new(mail):
            earlier = self.storage.mail.get_many([mail.id]).get(mail.id)
            if earlier is not None:
                return earlier, None
            raise Conflict(
                f"mail {mail.id} was stored and removed while this request ran", field="Idempotency-Key"
            )
        return mail, raw

    def _sender(self, target: ResolvedAccount | SystemSender, transcript: Transcript) -> SendOnce:
        """One try over a new connection (logged in with a password or an OAuth2 token)."""

        def send(raw: bytes, recipients: list[str]) -> SmtpDelivery:
            deadline = Deadline.ahead_of(self.seconds_left, ANSWER_MARGIN_SECONDS)

            def make(token: str | None) -> SmtpSession:
                return SmtpSession(
                    target.config,
                    transcript=transcript,
                    tls_context=self.tls_context,
                    access_token=token,
                    deadline=deadline,
                )

            if isinstance(target, ResolvedAccount):
                session = open_session(
                    target, make, tokens=self.tokens, pull_state=self.storage.pull_state, deadline=deadline
                )
            else:
                session = make(None)
            with session:
                return session.send(raw, recipients)

        return send
