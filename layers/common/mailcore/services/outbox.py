"""The outbox: queued mail sent exactly once, however many senders race for it.

A queued mail moves `queued -> sending -> sent | failed | unknown`, each step one conditional
write on its item (DynamoDB evaluates the condition and the write atomically). Every transition
of the outbox is in this module, with the race its guard closes:

- claim: `queued` (or `sending` whose lease ran out) -> `sending`, with a fresh lease owner and
  expiry. Push (the table's stream), sync (the API or a schedule) and a redelivered stream batch
  all claim before they send; exactly one of them wins, the others skip the mail.
- finish: `sending` owned by *this* claim -> `sent` / `failed` / `unknown`. A sender whose lease
  ran out (it stalled; another reclaimed the mail) cannot overwrite the newer outcome.

Retries happen inside the claim, in the same run, with a short backoff (temporary failures:
4xx replies, refused or dropped connections, timeouts); a Lambda never sleeps for minutes, so
greylisting that wants a second attempt much later ends as `failed` and on the dead-letter queue.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from mailcore.errors import DeliveryUnknown, InvalidInput, MailServerError, MailServiceError
from mailcore.events import MAIL_FAILED, MAIL_SENT, EventPublisher, MailEvent
from mailcore.limits import AccountLimiter, RateLimited
from mailcore.models import Mail, MailAccount, MailStatus, SendRequest, parse_addresses
from mailcore.oauth2 import TokenBroker
from mailcore.protocols.smtp import SmtpSession
from mailcore.protocols.transcript import Transcript
from mailcore.services.credentials import open_session
from mailcore.storage import Clause, Guard, Storage, Transition, raw_key
from mailcore.teams import ResolvedAccount, TeamDirectory

logger = logging.getLogger(__name__)

# Longer than any function's timeout, so a live sender never loses its claim; after it a
# crashed sender's claim is taken over by the next sync or push.
LEASE = timedelta(minutes=15)
# Attempts of one mail in one run, and the pauses between them (seconds).
MAX_ATTEMPTS = 3
BACKOFF = (0.5, 2.0)
# Claims run ahead of the SMTP conversation and outcomes are written behind it, on this many
# threads: with ~8 ms a DynamoDB call, writing one at a time would cap a run at ~50 mails/s.
WORKERS = 10
# Mails per claim job (and per outcome job), and how many claim jobs run ahead of the mail on
# the wire (so at most CLAIM_BATCH * CHUNKS_AHEAD mails wait claimed, well within the lease).
CLAIM_BATCH = 5
# A run waits for the account's next minute (provider limits) only while it keeps this much time.
PACE_MARGIN_SECONDS = 15.0
# Waits for a free SMTP connection slot of the account before the run gives its claims back.
CONNECTION_TRIES = 3
CHUNKS_AHEAD = 8
FINAL = (MailStatus.SENT, MailStatus.FAILED, MailStatus.UNKNOWN)


class DeadLetters(Protocol):
    def put(self, body: dict[str, Any]) -> None:
        """Keeps a mail that ended failed after its retries for a person (or a redrive) to see."""
        ...


class MemoryDeadLetters:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def put(self, body: dict[str, Any]) -> None:
        self.bodies.append(body)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


# ----------------------------------------------------------------------------- transitions


def claim_guard(now: datetime) -> Guard:
    return (
        # Push, sync and a redelivered batch race for the same queued mail: only the first
        # update finds it still `queued`; every other sender sees `sending` and skips it.
        Clause(equals={"status": MailStatus.QUEUED.value}),
        # A sender that died holding the claim (crash, timeout) must not strand the mail: once
        # its lease is over the mail can be claimed again. Mail sent through the direct API is
        # `sending` without a lease and is never taken here.
        Clause(equals={"status": MailStatus.SENDING.value}, before={"lease_until": _iso(now)}),
    )


def owner_guard(owner: str) -> Guard:
    # Only the claim that is current may record an outcome or what it built: a sender that
    # stalled past its lease (and was superseded) must not overwrite the newer claim's result.
    return (Clause(equals={"status": MailStatus.SENDING.value, "lease_owner": owner}),)


def _claim_assignment(now: datetime, owner: str) -> dict[str, Any]:
    return {"status": MailStatus.SENDING.value, "lease_owner": owner, "lease_until": _iso(now + LEASE)}


def claim(storage: Storage, mail_id: str, *, now: datetime) -> tuple[Mail, str] | None:
    """Takes a queued mail for sending: (the mail, the claim's owner token), or None when
    another sender has it or it is no longer queued."""
    owner = secrets.token_hex(8)
    mail = storage.mail.transition(
        mail_id, claim_guard(now), assign=_claim_assignment(now, owner), remove=("error",)
    )
    return (mail, owner) if mail is not None else None


def record_raw(storage: Storage, mail: Mail, owner: str) -> bool:
    """Keeps the message built at send time for an item written without one (see `materialise`)."""
    changes = {
        "raw_key": mail.raw_key,
        "raw_size": mail.raw_size,
        "message_id": mail.message_id,
        "from": mail.from_,
        "date": _iso(mail.date) if mail.date else None,
    }
    return storage.mail.transition(mail.id, owner_guard(owner), assign=changes) is not None


def _finish_transition(mail: Mail, owner: str) -> Transition:
    assert mail.status in FINAL
    assign = {
        "status": mail.status.value,
        "error": mail.error,
        "reply": mail.reply,
        "refused": mail.refused,
        "attempts": mail.attempts,
    }
    # The mail leaves the outbox index (`outbox` removed) only here, not at the claim: a claim
    # whose sender died stays visible to sync, which takes it over once the lease is over.
    removed = ("outbox", "lease_owner", "lease_until", *(() if mail.error else ("error",)))
    return Transition(mail.id, owner_guard(owner), assign, removed)


def finish(storage: Storage, mail: Mail, owner: str) -> bool:
    """Records the outcome of a claimed mail; False when the claim was superseded."""
    t = _finish_transition(mail, owner)
    return storage.mail.transition(t.mail_id, t.guard, assign=t.assign, remove=t.remove) is not None


def release(storage: Storage, mail: Mail, owner: str) -> bool:
    """Gives a claimed mail back to the outbox unsent (its account is at its provider's limit);
    the stream's MODIFY to `queued` or the next sync picks it up again."""
    # Only the current claim may give the mail back: a stalled sender whose lease was taken over
    # must not undo the newer claim (which may be sending it this moment).
    released = storage.mail.transition(
        mail.id,
        owner_guard(owner),
        assign={"status": MailStatus.QUEUED.value},
        remove=("lease_owner", "lease_until"),
    )
    return released is not None


def finish_many(storage: Storage, outcomes: list[tuple[Mail, str]]) -> list[bool]:
    recorded = storage.mail.transition_many([_finish_transition(mail, owner) for mail, owner in outcomes])
    return [mail is not None for mail in recorded]


# ----------------------------------------------------------------------------- queueing


def queue_mail(
    target: ResolvedAccount,
    request: SendRequest,
    *,
    storage: Storage,
    now: datetime | None = None,
) -> Mail:
    """Stores a mail as `queued` (raw message built now, so the Message-ID, Date and attachments
    are fixed at queue time); the table's stream (push) or a sync sends it."""
    from mailcore.services.send import compose

    mail = compose(target, request, storage=storage, status=MailStatus.QUEUED, now=now)
    storage.mail.put_new(mail)
    return mail


# An EventBridge entry and an SQS message hold 256 KB, a mail may have thousands of recipients and
# a server's reply has no length limit: a notice names at most NOTICE_REFUSED refused recipients
# (with how many there were) and keeps NOTICE_TEXT characters of a reply or an error. The mail
# itself keeps everything.
NOTICE_REFUSED = 100
NOTICE_TEXT = 1_000


def _notice_text(text: str | None) -> str | None:
    return text if text is None or len(text) <= NOTICE_TEXT else text[:NOTICE_TEXT] + "..."


def completion_event(mail: Mail) -> MailEvent:
    detail_type = MAIL_SENT if mail.status == MailStatus.SENT else MAIL_FAILED
    extra: dict[str, Any] = {
        "status": mail.status.value,
        "reply": _notice_text(mail.reply),
        "message_id": mail.message_id,
    }
    if mail.refused:
        named = list(mail.refused.items())[:NOTICE_REFUSED]
        extra["refused"] = {address: _notice_text(reply) for address, reply in named}
        extra["refused_count"] = len(mail.refused)
    if mail.error:
        extra["error"] = _notice_text(mail.error)
    return MailEvent(detail_type, mail.team, mail.account, mail.id, extra)


# ----------------------------------------------------------------------------- sending


@dataclass
class OutboxReport:
    sent: list[Mail] = field(default_factory=list)
    failed: list[Mail] = field(default_factory=list)
    unknown: list[Mail] = field(default_factory=list)
    # Claimed by another sender, or no longer queued: not this run's to send.
    skipped: list[str] = field(default_factory=list)
    # Mails whose claim or outcome could not be written (storage failed): mail id -> why.
    errors: dict[str, str] = field(default_factory=dict)
    # Mails given back to the outbox unsent: the account reached its provider's limits and this
    # run had no time left to wait for them.
    deferred: list[str] = field(default_factory=list)

    def add(self, mail: Mail) -> None:
        {MailStatus.SENT: self.sent, MailStatus.FAILED: self.failed, MailStatus.UNKNOWN: self.unknown}[
            mail.status
        ].append(mail)

    def public(self) -> dict[str, Any]:
        def brief(mail: Mail) -> dict[str, Any]:
            return {
                "id": mail.id,
                "status": mail.status.value,
                "reply": mail.reply,
                "error": mail.error,
                "refused": mail.refused,
                "attempts": mail.attempts,
            }

        return {
            "sent": [brief(mail) for mail in self.sent],
            "failed": [brief(mail) for mail in self.failed],
            "unknown": [brief(mail) for mail in self.unknown],
            "skipped": self.skipped,
            "errors": self.errors,
            "deferred": self.deferred,
        }


class _Deferred(Exception):
    """The account is at its provider's limits and the run has no time to wait."""


@dataclass
class _Claimed:
    mail: Mail
    owner: str
    raw: bytes = b""
    # A failure before any SMTP byte (bad item, missing attachment): the mail fails at once.
    problem: str | None = None


class Outbox:
    """Sends queued mail of any accounts: one SMTP connection per account for the whole run,
    claims running ahead of the conversation and outcomes written behind it on a thread pool."""

    def __init__(
        self,
        *,
        storage: Storage,
        directory: TeamDirectory | None,
        events: EventPublisher,
        dead_letters: DeadLetters,
        tls_context: ssl.SSLContext,
        transcript: Transcript | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        backoff: tuple[float, ...] = BACKOFF,
        max_attempts: int = MAX_ATTEMPTS,
        tokens: TokenBroker | None = None,
        limiter: AccountLimiter | None = None,
        seconds_left: Callable[[], float] | None = None,
    ) -> None:
        self.storage = storage
        self.limiter = limiter
        self.seconds_left = seconds_left
        self._slots = ExitStack()
        self.directory = directory
        self.events = events
        self.dead_letters = dead_letters
        self.tls_context = tls_context
        self.transcript = transcript or Transcript()
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.tokens = tokens
        self._sessions: dict[tuple[str, str], SmtpSession] = {}
        self._accounts: dict[tuple[str, str], MailAccount | None] = {}
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="outbox")
        self._writes: list[Future[None]] = []
        self._pending_events: list[MailEvent] = []
        self._events_lock = threading.Lock()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()
            self._slots.close()
            self._pool.shutdown(wait=True)

    # --- the two ways in -------------------------------------------------------------------
    def sync(self, target: ResolvedAccount) -> OutboxReport:
        """Sends everything still in the account's outbox (queued, or claimed by a sender whose
        lease ran out)."""
        self._accounts[(target.team, target.name)] = target.account
        ids = [mail.id for mail in self.storage.mail.outbox(target.team, target.name)]
        return self.send(ids)

    def send(self, mail_ids: Iterable[str]) -> OutboxReport:
        """Claims and sends these mails, in order; answers what happened to each. A mail whose
        claim or outcome could not be written (storage failing) is reported in `errors`: it
        stays queued, or is taken over by the next sync once its lease is over."""
        report = OutboxReport()
        ids = list(dict.fromkeys(mail_ids))
        chunks = [ids[start : start + CLAIM_BATCH] for start in range(0, len(ids), CLAIM_BATCH)]
        ahead: list[tuple[list[str], Future[tuple[list[_Claimed], dict[str, str]]]]] = []
        finished: list[tuple[Mail, str]] = []
        deferred = False
        while ahead or (chunks and not deferred):
            while chunks and len(ahead) < CHUNKS_AHEAD and not deferred:
                chunk = chunks.pop(0)
                ahead.append((chunk, self._pool.submit(self._claim_chunk, chunk)))
            chunk, claimed_future = ahead.pop(0)
            claimed_list, failures = claimed_future.result()
            report.errors.update(failures)
            taken = {claimed.mail.id: claimed for claimed in claimed_list}
            for mail_id in chunk:
                claimed = taken.get(mail_id)
                if claimed is None:
                    if mail_id not in failures:
                        report.skipped.append(mail_id)
                    continue
                try:
                    if deferred:
                        raise _Deferred
                    self._pace(claimed)
                    outcome = self._deliver(claimed)
                except _Deferred:
                    # Once the account is at its limit, the rest of this run's claims go back.
                    deferred = True
                    release(self.storage, claimed.mail, claimed.owner)
                    report.deferred.append(mail_id)
                    continue
                finished.append((outcome, claimed.owner))
                report.add(outcome)
                if len(finished) >= CLAIM_BATCH:
                    self._writes.append(self._pool.submit(self._record, finished))
                    finished = []
        if finished:
            self._writes.append(self._pool.submit(self._record, finished))
        try:
            self.flush()
        except Exception as error:
            logger.exception("outcomes of this run could not all be written")
            done = [*report.sent, *report.failed, *report.unknown]
            report.errors.update({mail.id: str(error) for mail in done})
        return report

    def flush(self) -> None:
        """Waits for the outcome writes and puts the events still pending."""
        writes, self._writes = self._writes, []
        errors = [future.exception() for future in writes]
        with self._events_lock:
            pending, self._pending_events = self._pending_events, []
        if pending:
            self.events.publish(pending)
        for error in errors:
            if error is not None:
                raise error

    # --- steps -----------------------------------------------------------------------------
    def _claim_chunk(self, mail_ids: list[str]) -> tuple[list[_Claimed], dict[str, str]]:
        """Claims (one conditional write each) and loads these mails: (claimed, failures). A
        failure to write one claim never costs the others theirs."""
        claimed, failures = [], {}
        for mail_id in mail_ids:
            try:
                taken = claim(self.storage, mail_id, now=self.clock())
            except Exception as error:
                failures[mail_id] = str(error)
                continue
            if taken is None:
                continue
            one = _Claimed(*taken)
            try:
                one.raw = self._materialise(one)
            except (MailServiceError, ValueError) as error:
                one.problem = getattr(error, "message", None) or str(error)  # fails the mail
            except Exception as error:
                # S3 or the secrets could not be read: not the mail's fault. It stays claimed
                # and is taken over once the lease is over, rather than failed for good.
                failures[mail_id] = str(error)
                continue
            claimed.append(one)
        return claimed, failures

    def _account(self, mail: Mail) -> MailAccount | None:
        key = (mail.team, mail.account)
        if key not in self._accounts:
            config = self.directory.team(mail.team) if self.directory else None
            self._accounts[key] = config.accounts.get(mail.account) if config else None
        return self._accounts[key]

    def _materialise(self, claimed: _Claimed) -> bytes:
        """The raw message: stored at queue time by the API; built now (and kept) for an item
        another service wrote with the fields alone."""
        from mailcore.mime.build import new_message_id
        from mailcore.services.send import render

        mail = claimed.mail
        account = self._account(mail)
        if account is None:
            raise InvalidInput(f"team {mail.team!r} has no mail account {mail.account!r}", field="account")
        if mail.raw_key:
            return self.storage.blobs.get(mail.raw_key)
        now = self.clock()
        built = mail.model_copy(
            update={
                "from_": parse_addresses(mail.from_)[0] if mail.from_ else account.mail_from,
                "to": parse_addresses(mail.to),
                "cc": parse_addresses(mail.cc),
                "bcc": parse_addresses(mail.bcc),
                "reply_to": parse_addresses(mail.reply_to),
                "date": mail.date or now,
                "message_id": mail.message_id or new_message_id(account.mail_from),
                "raw_key": raw_key(mail.team, mail.account, mail.id),
            }
        )
        raw = render(built, self.storage)
        assert built.raw_key is not None
        self.storage.blobs.put(built.raw_key, raw, "message/rfc822")
        built = built.model_copy(update={"raw_size": len(raw)})
        if not record_raw(self.storage, built, claimed.owner):
            raise InvalidInput("the claim was lost while the message was built")
        claimed.mail = built
        return raw

    def _pace(self, claimed: _Claimed) -> None:
        """Keeps the account within its provider's messages a minute: waits for the next minute
        while the run has time for it, else raises _Deferred."""
        account = self._account(claimed.mail) if claimed.problem is None else None
        if self.limiter is None or account is None:
            return
        target = ResolvedAccount(claimed.mail.team, claimed.mail.account, account)
        while True:
            try:
                self.limiter.take_message(target)
                return
            except RateLimited as limited:
                self._wait_or_defer(limited)

    def _wait_or_defer(self, limited: RateLimited) -> None:
        if self.seconds_left is not None and self.seconds_left() - limited.retry_after < PACE_MARGIN_SECONDS:
            raise _Deferred(limited.message)
        self.sleep(limited.retry_after)

    def _connection_slot(self, target: ResolvedAccount) -> None:
        """Holds one of the account's SMTP connection slots until the run closes."""
        if self.limiter is None:
            return
        for _ in range(CONNECTION_TRIES):
            try:
                self._slots.enter_context(self.limiter.connection(target))
                return
            except RateLimited as limited:
                self._wait_or_defer(limited)
        raise _Deferred("no SMTP connection slot of the account came free")

    def _session(self, mail: Mail, account: MailAccount) -> SmtpSession:
        """The run's open connection of the mail's account (logged in with a password or an
        OAuth2 token); raises MailServerError when it cannot be opened."""
        key = (mail.team, mail.account)
        if key not in self._sessions:

            def make(token: str | None) -> SmtpSession:
                return SmtpSession(
                    account, transcript=self.transcript, tls_context=self.tls_context, access_token=token
                )

            target = ResolvedAccount(mail.team, mail.account, account)
            self._connection_slot(target)
            self._sessions[key] = open_session(
                target, make, tokens=self.tokens, pull_state=self.storage.pull_state
            )
        return self._sessions[key]

    def _deliver(self, claimed: _Claimed) -> Mail:
        """Sends one claimed mail, retrying temporary failures; answers it with its outcome."""
        mail = claimed.mail
        attempts = mail.attempts
        if claimed.problem is not None:
            return _outcome(mail, MailStatus.FAILED, attempts, error=claimed.problem)
        account = self._account(mail)
        assert account is not None
        try:
            recipients = _envelope(mail)
        except ValueError as error:
            return _outcome(mail, MailStatus.FAILED, attempts, error=str(error))
        for attempt in range(self.max_attempts):
            attempts += 1
            try:
                delivery = self._session(mail, account).send(claimed.raw, recipients)
            except DeliveryUnknown as error:
                # Sending again could deliver it twice; not sending could lose it. A person
                # decides, with the transcript's hint (see the README).
                return _outcome(mail, MailStatus.UNKNOWN, attempts, error=error.message)
            except MailServerError as error:
                reply = f"{error.reply_code} {error.reply}" if error.reply_code else error.reply
                if error.temporary and attempt + 1 < self.max_attempts:
                    self.sleep(self.backoff[min(attempt, len(self.backoff) - 1)])
                    continue
                failed = _outcome(mail, MailStatus.FAILED, attempts, error=error.message, reply=reply)
                if error.temporary:
                    self._writes.append(self._pool.submit(self._dead_letter, failed))
                return failed
            return _outcome(mail, MailStatus.SENT, attempts, reply=delivery.reply, refused=delivery.refused)
        raise AssertionError("unreachable: the last attempt returns")

    def _record(self, outcomes: list[tuple[Mail, str]]) -> None:
        recorded = finish_many(self.storage, outcomes)
        events = []
        for (mail, _), done in zip(outcomes, recorded, strict=True):
            if done:
                events.append(completion_event(mail))
            else:
                logger.warning("outcome of mail %s not recorded: its claim was superseded", mail.id)
        # PutEvents takes ten entries a call: publish whole tens now, the rest at the flush.
        with self._events_lock:
            self._pending_events.extend(events)
            whole = len(self._pending_events) // 10 * 10
            batch, self._pending_events = self._pending_events[:whole], self._pending_events[whole:]
        if batch:
            self.events.publish(batch)

    def _dead_letter(self, mail: Mail) -> None:
        self.dead_letters.put(
            {
                "mail_id": mail.id,
                "team": mail.team,
                "account": mail.account,
                "attempts": mail.attempts,
                "error": _notice_text(mail.error),
                "reply": _notice_text(mail.reply),
            }
        )


def _envelope(mail: Mail) -> list[str]:
    recipients = SendRequest(to=parse_addresses([*mail.to, *mail.cc, *mail.bcc])).recipients()
    if not recipients:
        raise ValueError("the mail has no recipients")
    return recipients


def _outcome(
    mail: Mail,
    status: MailStatus,
    attempts: int,
    *,
    error: str | None = None,
    reply: str | None = None,
    refused: dict[str, str] | None = None,
) -> Mail:
    return mail.model_copy(
        update={
            "status": status,
            "attempts": attempts,
            "error": error,
            "reply": reply,
            "refused": refused or {},
        }
    )
