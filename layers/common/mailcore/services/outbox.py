"""The outbox: queued mail sent exactly once, however many senders race for it.

A queued mail moves `queued -> sending -> sent | failed | unknown | deferred`, and a deferred
one `deferred -> sending -> ...` again when it is due, each step one conditional write on its
item (DynamoDB evaluates the condition and the write atomically). Every guard of the outbox is
in this module, with the race it closes:

- claim: `queued` whose time came, `deferred` whose next attempt is due (or `sending` whose
  lease ran out) -> `sending`, with a fresh lease owner and expiry. Push (the table's stream),
  sync (the API or a schedule) and a redelivered stream batch all claim before they send;
  exactly one of them wins, the others skip the mail.
- finish (owner_guard): `sending` owned by *this* claim -> `sent` / `failed` / `unknown` /
  `deferred`. A sender whose lease ran out (it stalled; another reclaimed the mail) cannot
  overwrite the newer outcome.

The claimed mail is delivered, and its outcome written and announced, by services/delivery.py,
as a direct send's is: short blips are retried inside the claim, in the same run (every
temporary failure: 4xx replies, refused or dropped connections, timeouts). After those the
mail is `deferred` to a later run by the one retry policy (services/retry.py), until its
maximum age; only then does it end `failed` and on the dead-letter queue.
"""

from __future__ import annotations

import secrets
import ssl
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from mailcore.errors import Conflict, InvalidInput, MailServiceError
from mailcore.limits import AccountLimiter, RateLimited
from mailcore.models import Mail, MailAccount, MailStatus, SendRequest, parse_addresses
from mailcore.oauth2 import TokenBroker
from mailcore.ports import DeadLetters, EventPublisher
from mailcore.protocols.deadline import Deadline
from mailcore.protocols.smtp import SmtpDelivery, SmtpSession
from mailcore.protocols.transcript import Transcript
from mailcore.services.credentials import open_session
from mailcore.services.delivery import (
    LEASE,
    QUEUE_ATTRIBUTES,
    Attempts,
    Completions,
    Outcome,
    OutOfTime,
    ended,
)
from mailcore.services.retry import IN_THE_BACKGROUND, RetryPolicy
from mailcore.storage import Clause, Guard, Storage, Transition, iso_time, outbox_key, raw_key
from mailcore.teams import ResolvedAccount, TeamDirectory

logger = Logger(child=True)

# Claims run ahead of the SMTP conversation and outcomes are written behind it, on this many
# threads: with ~8 ms a DynamoDB call, writing one at a time would cap a run at ~50 mails/s.
WORKERS = 10
# Mails per claim job (and per outcome job), and how many claim jobs run ahead of the mail on
# the wire (so at most CLAIM_BATCH * CHUNKS_AHEAD mails wait claimed, well within the lease).
CLAIM_BATCH = 5
# A run waits for the account's next minute (provider limits) only while it keeps this much time.
PACE_MARGIN_SECONDS = 15.0
# An SMTP session (and its token request) ends this long before the run's time, which writes the
# outcomes and gives the claims back (protocols/deadline.py).
SMTP_MARGIN_SECONDS = 5.0
# Waits for a free SMTP connection slot of the account before the run gives its claims back.
CONNECTION_TRIES = 3
CHUNKS_AHEAD = 8


_iso = iso_time


# ----------------------------------------------------------------------------- transitions


def claim_guard(now: datetime) -> Guard:
    return (
        # Push, sync and a redelivered batch race for the same queued mail: only the first
        # update finds it still `queued`; every other sender sees `sending` and skips it.
        # Mail queued to go now carries no `due_at`.
        Clause(equals={"status": MailStatus.QUEUED.value}, missing=("due_at",)),
        # Scheduled mail: a push of its INSERT (or an early sync) must not send it before its
        # send_at; only a run at or after that time finds the guard true.
        Clause(equals={"status": MailStatus.QUEUED.value}, not_after={"due_at": _iso(now)}),
        # Deferred mail, once its next attempt is due. While another run tries it, it is
        # `sending` (not `deferred`), so a second run that found it due in the index skips it.
        Clause(equals={"status": MailStatus.DEFERRED.value}, not_after={"due_at": _iso(now)}),
        # A sender that died holding the claim (crash, timeout) must not strand the mail: once
        # its lease is over the mail can be claimed again (LEASE; a crashed sender's claim is
        # taken over by the next sync or push). The same for a direct send's hold once it is over
        # (delivery.DIRECT_HOLD: this claim's owner makes the late send's outcome lose); it
        # carries `attempt_started_at`, so it is recorded `unknown`, never sent.
        Clause(equals={"status": MailStatus.SENDING.value}, before={"lease_until": _iso(now)}),
    )


def owner_guard(owner: str) -> Guard:
    # Only the claim that is current may record an outcome or what it built: a sender that
    # stalled past its lease (and was superseded) must not overwrite the newer claim's result.
    return (Clause(equals={"status": MailStatus.SENDING.value, "lease_owner": owner}),)


def _claim_assignment(now: datetime, owner: str) -> dict[str, Any]:
    # `due_at` moves to the lease's end: a waiting mail whose sender dies stays in the Waiting
    # index and becomes due (to the sync that takes it over) exactly when its lease is over.
    lease_until = _iso(now + LEASE)
    return {
        "status": MailStatus.SENDING.value,
        "lease_owner": owner,
        "lease_until": lease_until,
        "due_at": lease_until,
    }


def claim(storage: Storage, mail_id: str, *, now: datetime) -> tuple[Mail, str] | None:
    """Takes a queued mail for sending: (the mail, the claim's owner token), or None when
    another sender has it or it is no longer queued."""
    owner = secrets.token_hex(8)
    mail = storage.mail.transition(
        mail_id, claim_guard(now), assign=_claim_assignment(now, owner), remove=("error",)
    )
    return (mail, owner) if mail is not None else None


def _applied(storage: Storage, transition: Transition) -> bool:
    """Whether a write whose caller needs nothing back won its guard (the mail is not read back)."""
    return storage.mail.apply([transition])[0]


def mark_attempt(storage: Storage, mail: Mail, owner: str, *, now: datetime) -> bool:
    """Notes, before the first SMTP byte of this claim's attempt, that the message may go out;
    False when the claim was superseded (then nothing may be sent)."""
    # A run killed between the server's acceptance and the write of its outcome leaves the
    # mail `sending`; the run that takes the claim over after the lease finds this mark and
    # records `unknown` (a person decides) instead of sending the message a second time.
    # Guarded by the owner: a superseded sender must not start an attempt at all.
    return _applied(storage, Transition(mail.id, owner_guard(owner), {"attempt_started_at": _iso(now)}))


def record_raw(storage: Storage, mail: Mail, owner: str) -> bool:
    """Keeps the message built at send time for an item written without one (see `materialise`)."""
    changes = {
        "raw_key": mail.raw_key,
        "raw_size": mail.raw_size,
        "message_id": mail.message_id,
        "from": mail.from_,
        "date": _iso(mail.date) if mail.date else None,
    }
    return _applied(storage, Transition(mail.id, owner_guard(owner), changes))


def release(storage: Storage, mail: Mail, owner: str, *, now: datetime) -> bool:
    """Gives a claimed mail back to the outbox unsent (its account is at its provider's limit);
    the stream's MODIFY to `queued` or the next sync picks it up again."""
    # Only the current claim may give the mail back: a stalled sender whose lease was taken over
    # must not undo the newer claim (which may be sending it this moment). A scheduled or
    # deferred mail goes back due now (in the Waiting index); a plain queued one without `due_at`.
    waits = mail.send_at is not None or mail.deferrals > 0
    released = Transition(
        mail.id,
        owner_guard(owner),
        {"status": MailStatus.QUEUED.value, "due_at": _iso(now) if waits else None},
        ("lease_owner", "lease_until", "attempt_started_at", *(() if waits else ("due_at",))),
    )
    return _applied(storage, released)


CANCELLABLE = (MailStatus.QUEUED, MailStatus.DEFERRED)
RETRYABLE = (MailStatus.FAILED, MailStatus.UNKNOWN)


def cancel(storage: Storage, mail: Mail, *, completions: Completions | None = None) -> Mail:
    """Cancels a queued or deferred mail: it leaves the outbox unsent (and MailCancelled goes on
    the bus through `completions`). Raises Conflict naming the status when it is not
    cancellable now (a run holds it: it is `sending`)."""
    # A run claims by moving the mail to `sending`; cancelling only from `queued`/`deferred`
    # means exactly one of the two wins: a cancelled mail is never claimed (claim_guard wants
    # queued/deferred), and a claimed one is never cancelled mid-send, where cancelling could
    # not stop the bytes already on the wire.
    guard = tuple(Clause(equals={"status": status.value}) for status in CANCELLABLE)
    done = storage.mail.transition(
        mail.id,
        guard,
        assign={"status": MailStatus.CANCELLED.value},
        remove=(*QUEUE_ATTRIBUTES, "next_attempt_at"),
    )
    if done is None:
        now = storage.mail.get(mail.id)
        status = now.status.value if now else "gone"
        why = " (a run is sending it now)" if status == MailStatus.SENDING else ""
        raise Conflict(
            f"only a queued or deferred mail can be cancelled; this one is {status}{why}", field="status"
        )
    if completions is not None:
        completions.announce([done])
    return done


@dataclass(frozen=True)
class Retried:
    """What a retry did: the mail queued again, and whether its first attempt may have been
    delivered (it ended `unknown`: the connection dropped after the message was sent), so the
    recipient may get it twice, with the same Message-ID."""

    mail: Mail
    first_may_be_delivered: bool


def retry(storage: Storage, mail: Mail) -> Retried:
    """Queues a failed or unknown mail again, as the same message (same Message-ID, stored raw
    bytes): the push of its change to `queued` sends it, with a fresh retry schedule."""
    # Only from a final failure: a retry of a mail that is queued, sending or deferred would
    # put a second sender on it; one of `sent` would send it twice on purpose.
    guard = tuple(Clause(equals={"status": status.value}) for status in RETRYABLE)
    done = storage.mail.transition(
        mail.id,
        guard,
        assign={
            "status": MailStatus.QUEUED.value,
            "outbox": outbox_key(mail.team, mail.account),
            "deferrals": 0,
        },
        remove=(
            "error",
            "waiting",
            "due_at",
            "next_attempt_at",
            "retry_until",
            "send_at",
            "attempt_started_at",
        ),
    )
    if done is None:
        now = storage.mail.get(mail.id)
        status = now.status.value if now else "gone"
        raise Conflict(f"only a failed or unknown mail can be retried; this one is {status}", field="status")
    return Retried(done, first_may_be_delivered=mail.status == MailStatus.UNKNOWN)


# ----------------------------------------------------------------------------- queueing


# The furthest ahead a mail may be scheduled (send_at); docs/delivery.md.
SEND_AT_LIMIT = timedelta(days=30)


def queue_mail(
    target: ResolvedAccount,
    request: SendRequest,
    *,
    storage: Storage,
    now: datetime | None = None,
    send_at: datetime | None = None,
    retry_max_age: timedelta | None = None,
) -> Mail:
    """Stores a mail as `queued` (raw message built now, so the Message-ID, Date and attachments
    are fixed at queue time); the table's stream (push) or a sync sends it, at `send_at` when
    that is ahead (a time in the past means now)."""
    from mailcore.services.send import compose

    now = now or datetime.now(UTC)
    if send_at is not None:
        send_at = send_at if send_at.tzinfo else send_at.replace(tzinfo=UTC)
        if send_at - now > SEND_AT_LIMIT:
            limit = SEND_AT_LIMIT.days
            raise InvalidInput(f"send_at may be at most {limit} days ahead", field="send_at")
        send_at = send_at if send_at > now else None
    mail = compose(target, request, storage=storage, status=MailStatus.QUEUED, now=now)
    if send_at is not None or retry_max_age is not None:
        retry_until = (send_at or now) + retry_max_age if retry_max_age is not None else None
        mail = mail.model_copy(update={"send_at": send_at, "retry_until": retry_until})
    storage.mail.put_new(mail)
    return mail


# ----------------------------------------------------------------------------- sending


@dataclass
class OutboxReport:
    sent: list[Mail] = field(default_factory=list)
    failed: list[Mail] = field(default_factory=list)
    unknown: list[Mail] = field(default_factory=list)
    # Met a temporary failure: waits for its next attempt (`next_attempt_at`).
    deferred: list[Mail] = field(default_factory=list)
    # Claimed by another sender, or no longer queued: not this run's to send.
    skipped: list[str] = field(default_factory=list)
    # Mails whose claim or outcome could not be written (storage failed): mail id -> why.
    errors: dict[str, str] = field(default_factory=dict)
    # Mails given back to the outbox unsent: the account reached its provider's limits and this
    # run had no time left to wait for them.
    released: list[str] = field(default_factory=list)

    def add(self, mail: Mail) -> None:
        {
            MailStatus.SENT: self.sent,
            MailStatus.FAILED: self.failed,
            MailStatus.UNKNOWN: self.unknown,
            MailStatus.DEFERRED: self.deferred,
        }[mail.status].append(mail)

    def public(self) -> dict[str, Any]:
        def brief(mail: Mail) -> dict[str, Any]:
            return {
                "id": mail.id,
                "status": mail.status.value,
                "reply": mail.reply,
                "error": mail.error,
                "refused": mail.refused,
                "attempts": mail.attempts,
                **({"next_attempt_at": _iso(mail.next_attempt_at)} if mail.next_attempt_at else {}),
            }

        return {
            "sent": [brief(mail) for mail in self.sent],
            "failed": [brief(mail) for mail in self.failed],
            "unknown": [brief(mail) for mail in self.unknown],
            "deferred": [brief(mail) for mail in self.deferred],
            "skipped": self.skipped,
            "errors": self.errors,
            "released": self.released,
        }


class _Deferred(Exception):
    """The account is at its provider's limits and the run has no time to wait, or the run's
    time for SMTP is over."""


@dataclass
class _Claimed:
    mail: Mail
    owner: str
    raw: bytes = b""
    # A failure before any SMTP byte (bad item, missing attachment): the mail fails at once.
    problem: str | None = None
    # Taken over from a run that died during its attempt: the message may be out already.
    interrupted: bool = False

    @property
    def attempts_smtp(self) -> bool:
        return not self.interrupted and self.problem is None


class _NotMarked(Exception):
    """The attempt could not be marked (claim superseded, storage failing): nothing is sent."""


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
        tokens: TokenBroker | None = None,
        limiter: AccountLimiter | None = None,
        seconds_left: Callable[[], float] | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.storage = storage
        self.limiter = limiter
        self.seconds_left = seconds_left
        # A server dripping its replies is cut off in time to record the outcomes; after it the
        # run takes no more mail (the next run sends the rest).
        self.deadline = Deadline.ahead_of(seconds_left, SMTP_MARGIN_SECONDS)
        self._slots = ExitStack()
        self.directory = directory
        self.tls_context = tls_context
        self.transcript = transcript or Transcript()
        self.clock = clock
        self.sleep = sleep
        self.attempts = Attempts(
            policy or RetryPolicy(), IN_THE_BACKGROUND, clock, sleep, self.transcript, self.deadline
        )
        self.completions = Completions(storage, events, dead_letters)
        self.tokens = tokens
        self._sessions: dict[tuple[str, str], SmtpSession] = {}
        self._configs: dict[tuple[str, str], MailAccount | None] = {}
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="outbox")
        # Attempt marks on their own threads: queued behind the claims running ahead on the
        # pool, they would hold up every chunk's first mail.
        self._mark_pool = ThreadPoolExecutor(CLAIM_BATCH, thread_name_prefix="outbox-mark")
        self._writes: list[Future[Any]] = []

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
            self._mark_pool.shutdown(wait=True)

    # --- the two ways in -------------------------------------------------------------------
    def sync(self, target: ResolvedAccount) -> OutboxReport:
        """Sends everything still in the account's outbox (queued, or claimed by a sender whose
        lease ran out) and its waiting mail that is due (scheduled, deferred)."""
        self._configs[(target.team, target.name)] = target.config
        return self._sync(target.team, target.name)

    def take_over(self, team: str, account: str) -> OutboxReport:
        """The sync of an outbox no run sends from (system mail): without the account's
        configuration, it only records what a sender that died left after its hold, `unknown`
        as any (a mail there that would need sending fails: nothing here may send it)."""
        self._configs[(team, account)] = None
        return self._sync(team, account)

    def _sync(self, team: str, account: str) -> OutboxReport:
        # Ids only: each claim reads its mail as it is then (the index's copy may be stale).
        queued = self.storage.mail.outbox_ids(team, account)
        due = self.storage.mail.due_ids(team, account, _iso(self.clock()))
        return self.send([*queued, *due])

    def send(self, mail_ids: Iterable[str]) -> OutboxReport:
        """Claims and sends these mails, in order; answers what happened to each. A mail whose
        claim or outcome could not be written (storage failing) is reported in `errors`: it
        stays queued, or is taken over by the next sync once its lease is over."""
        report = OutboxReport()
        ids = list(dict.fromkeys(mail_ids))
        chunks = [ids[start : start + CLAIM_BATCH] for start in range(0, len(ids), CLAIM_BATCH)]
        ahead: list[tuple[list[str], Future[tuple[list[_Claimed], dict[str, str]]]]] = []
        finished: list[tuple[Outcome, Guard]] = []
        # Set once the rest goes back unsent: no more claims, and each claimed mail released.
        deferred = self.deadline.passed()
        while ahead or (chunks and not deferred):
            while chunks and len(ahead) < CHUNKS_AHEAD and not deferred:
                chunk = chunks.pop(0)
                ahead.append((chunk, self._pool.submit(self._claim_chunk, chunk)))
            chunk, claimed_future = ahead.pop(0)
            claimed_list, failures = claimed_future.result()
            report.errors.update(failures)
            taken = {claimed.mail.id: claimed for claimed in claimed_list}
            # The chunk's attempts are marked together, on the pool, as its first mail goes
            # out: one round trip for five mails, and a run that dies leaves at most this
            # chunk marked without an attempt (those become `unknown`, never sent twice).
            marks = {
                c.mail.id: self._mark_pool.submit(self._mark, c) for c in claimed_list if c.attempts_smtp
            }
            for mail_id in chunk:
                claimed = taken.get(mail_id)
                if claimed is None:
                    if mail_id not in failures:
                        report.skipped.append(mail_id)
                    continue
                try:
                    # Only a mail that goes out waits for the account's limits or goes back: one
                    # taken over from a sender that died is recorded, never queued to go again.
                    if claimed.attempts_smtp:
                        if deferred or self.deadline.passed():
                            raise _Deferred
                        self._pace(claimed)
                        if mail_id in marks:
                            marks[mail_id].result()
                    outcome = self._deliver(claimed)
                except _NotMarked as error:
                    # Still claimed: taken over after its lease, and sent then (no attempt began).
                    report.errors[mail_id] = str(error)
                    continue
                except (_Deferred, OutOfTime):
                    # Once the account is at its limit, or the run's time is up (the mail cut
                    # off before DATA: no attempt counted), the rest of this run's claims go back.
                    deferred = True
                    release(self.storage, claimed.mail, claimed.owner, now=self.clock())
                    report.released.append(mail_id)
                    continue
                finished.append((outcome, owner_guard(claimed.owner)))
                report.add(outcome.mail)
                if len(finished) >= CLAIM_BATCH:
                    finished = self._write(finished)
        self._write(finished)
        self._flush_into(report)
        return report

    def _write(self, finished: list[tuple[Outcome, Guard]]) -> list[tuple[Outcome, Guard]]:
        """Records these outcomes behind the conversation, on the pool; answers an empty batch."""
        if finished:
            self._writes.append(self._pool.submit(self.completions.record, finished))
        return []

    def _flush_into(self, report: OutboxReport) -> None:
        try:
            self.flush()
        except Exception as error:
            logger.exception("outcomes of this run could not all be written")
            done = [*report.sent, *report.failed, *report.unknown, *report.deferred]
            report.errors.update({mail.id: str(error) for mail in done})

    def flush(self) -> None:
        """Waits for the outcome writes and puts the events still pending."""
        writes, self._writes = self._writes, []
        errors = [future.exception() for future in writes]
        self.completions.flush()
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
            if one.mail.attempt_started_at is not None:
                one.interrupted = True
                claimed.append(one)
                continue
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

    def _config(self, mail: Mail) -> MailAccount | None:
        """The configuration of the mail's account, as its team secret holds it now."""
        key = (mail.team, mail.account)
        if key not in self._configs:
            team = self.directory.team(mail.team) if self.directory else None
            self._configs[key] = team.accounts.get(mail.account) if team else None
        return self._configs[key]

    def _materialise(self, claimed: _Claimed) -> bytes:
        """The raw message: stored at queue time by the API; built now (and kept) for an item
        another service wrote with the fields alone."""
        from mailcore.mime.build import new_message_id
        from mailcore.services.send import render

        mail = claimed.mail
        config = self._config(mail)
        if config is None:
            raise InvalidInput(f"team {mail.team!r} has no mail account {mail.account!r}", field="account")
        if mail.raw_key:
            return self.storage.blobs.get(mail.raw_key)
        now = self.clock()
        built = mail.model_copy(
            update={
                "from_": parse_addresses(mail.from_)[0] if mail.from_ else config.mail_from,
                "to": parse_addresses(mail.to),
                "cc": parse_addresses(mail.cc),
                "bcc": parse_addresses(mail.bcc),
                "reply_to": parse_addresses(mail.reply_to),
                "date": mail.date or now,
                "message_id": mail.message_id or new_message_id(config.mail_from, mail.id),
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
        config = self._config(claimed.mail) if claimed.problem is None else None
        if self.limiter is None or config is None:
            return
        target = ResolvedAccount(claimed.mail.team, claimed.mail.account, config)
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

    def _session(self, mail: Mail, config: MailAccount) -> SmtpSession:
        """The run's open connection of the mail's account (logged in with a password or an
        OAuth2 token); raises MailServerError when it cannot be opened."""
        key = (mail.team, mail.account)
        if key not in self._sessions:
            deadline = self.deadline

            def make(token: str | None) -> SmtpSession:
                return SmtpSession(
                    config,
                    transcript=self.transcript,
                    tls_context=self.tls_context,
                    access_token=token,
                    deadline=deadline,
                )

            target = ResolvedAccount(mail.team, mail.account, config)
            self._connection_slot(target)
            self._sessions[key] = open_session(
                target, make, tokens=self.tokens, pull_state=self.storage.pull_state, deadline=deadline
            )
        return self._sessions[key]

    def _deliver(self, claimed: _Claimed) -> Outcome:
        """Sends one claimed mail (services/delivery.py); a mail that cannot be sent fails, one
        a run died trying is `unknown`."""
        mail = claimed.mail
        if claimed.interrupted:
            started = mail.attempt_started_at
            why = (
                f"the run or direct send holding it died during its attempt (started {started}): the"
                " mail may have been delivered, so it is not sent again by itself; retry it (same"
                " Message-ID) once you know it was not"
            )
            return Outcome(ended(mail, MailStatus.UNKNOWN, error=why))
        if claimed.problem is not None:
            return Outcome(ended(mail, MailStatus.FAILED, error=claimed.problem))
        config = self._config(mail)
        assert config is not None
        try:
            recipients = _envelope(mail)
        except ValueError as error:
            return Outcome(ended(mail, MailStatus.FAILED, error=str(error)))

        def send(raw: bytes, to: list[str]) -> SmtpDelivery:
            return self._session(mail, config).send(raw, to)

        return self.attempts.deliver(mail, claimed.raw, recipients, send, config)

    def _mark(self, claimed: _Claimed) -> None:
        try:
            marked = mark_attempt(self.storage, claimed.mail, claimed.owner, now=self.clock())
        except Exception as error:
            raise _NotMarked(f"the attempt could not be marked: {error}") from error
        if not marked:
            raise _NotMarked("the claim was superseded before the attempt")


def _envelope(mail: Mail) -> list[str]:
    recipients = SendRequest(to=parse_addresses([*mail.to, *mail.cc, *mail.bcc])).recipients()
    if not recipients:
        raise ValueError("the mail has no recipients")
    return recipients
