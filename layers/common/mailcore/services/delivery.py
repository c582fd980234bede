"""Delivering one composed mail, for the direct send and the outbox alike: its attempts under the
one retry policy (services/retry.py), and the one place an outcome is written, announced on the
bus and, when the mail failed for good after temporary failures, dead-lettered.

The two ways of sending differ only in how they hold the mail while it goes out, and so in the
guard its outcome is written under: the outbox claims it (a lease with an owner,
services/outbox.py), a direct send stores it `sending` without an owner but with the end of its
hold (DIRECT_HOLD, direct_hold_until). Either hold ends: a mail whose sender died is taken over
by the outbox's sync once its hold is over, and recorded `unknown` (docs/delivery.md).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from mailcore.errors import DeliveryUnknown, MailServerError
from mailcore.events import MAIL_CANCELLED, MAIL_DEFERRED, MAIL_FAILED, MAIL_SENT, MailEvent
from mailcore.models import Mail, MailAccount, MailStatus
from mailcore.ports import DeadLetters, EventPublisher
from mailcore.protocols.deadline import Deadline
from mailcore.protocols.smtp import SmtpDelivery
from mailcore.protocols.transcript import Transcript
from mailcore.services.retry import RetryPolicy, ShortRetries, attempt_entry, capped, deferred, server_reply
from mailcore.storage import Clause, Guard, Storage, Transition, iso_time, outbox_key

logger = Logger(child=True)

FINAL = (MailStatus.SENT, MailStatus.FAILED, MailStatus.UNKNOWN)
# The index attributes of a mail still to send (storage.index_attributes), and of a claim.
QUEUE_ATTRIBUTES = ("outbox", "waiting", "due_at", "lease_owner", "lease_until", "attempt_started_at")

# Longer than any function's timeout (Lambda stops every function by 15 minutes), so a live
# sender never loses its hold: the outbox's lease, and a direct send's hold when it does not know
# its function's deadline.
LEASE = timedelta(minutes=15)
# A direct send's hold lasts its function's time left when it stored the mail, and this margin:
# Lambda stops the function at its deadline, so after it the sender is dead; the margin covers
# the clocks of the sender and of the sync, and the moment between reading the time left and it.
HOLD_MARGIN = timedelta(seconds=30)

# A direct send holds its mail `sending` without a lease owner, until `lease_until` (written with
# the item: direct_hold_until). Until then no outbox run takes it (claim_guard wants a lease that
# is over), so only the send that stored it moves it on. After it the sync's claim may take it
# over: that claim sets a lease owner, so this guard closes the race of the two writes. If the
# send's outcome comes first, the mail is no longer `sending` and the claim finds nothing; if the
# claim comes first, the late send's outcome finds an owner and is neither recorded nor announced.
DIRECT_HOLD: Guard = (Clause(equals={"status": MailStatus.SENDING.value}, missing=("lease_owner",)),)


def direct_hold_until(now: datetime, time_left: float | None) -> datetime:
    """When a direct send's hold ends: its function's deadline (`time_left` seconds from now) and
    the margin, or a whole LEASE when the deadline is not known."""
    return now + (timedelta(seconds=time_left) + HOLD_MARGIN if time_left is not None else LEASE)


# One try of the message over SMTP: a fresh connection (direct send) or the run's open one (outbox).
SendOnce = Callable[[bytes, list[str]], SmtpDelivery]


@dataclass(frozen=True)
class Outcome:
    """A mail with its status after this run's attempts: sent, failed, unknown or deferred."""

    mail: Mail
    # The last attempt's failure, None when the mail was sent.
    error: MailServerError | None = None
    # Failed for good after temporary failures (past its maximum age): a person should look.
    dead_letter: bool = False


class OutOfTime(Exception):
    """The run's time for SMTP ran out during this mail's first try of the run, before DATA
    (Attempts.cut_off): the try is the run's failure, not the mail's. The mail goes back to the
    outbox unsent, its attempts as they were."""


@dataclass(frozen=True)
class Attempts:
    """How one run tries a mail: the retry policy, the short retries of this kind of run, and
    (for deferring) the account it goes out with, None for system mail (no outbox to wait in).
    `deadline`: when the run's SMTP sessions are cut off (never, for a run without a limit)."""

    policy: RetryPolicy
    short: ShortRetries
    clock: Callable[[], datetime]
    sleep: Callable[[float], None]
    transcript: Transcript
    deadline: Deadline = field(default_factory=Deadline.never)

    def deliver(
        self, mail: Mail, raw: bytes, recipients: list[str], send: SendOnce, config: MailAccount | None
    ) -> Outcome:
        """Sends the message, trying short blips again; answers the mail with its outcome.
        Raises OutOfTime when the run's deadline cut off its first try."""
        counted: MailServerError | None = None
        for pause in (*self.short.pauses, None):
            at, left = self.clock(), self.deadline.left()
            try:
                delivery = send(raw, recipients)
            except DeliveryUnknown as error:
                # Sending again could deliver it twice; not sending could lose it. A person
                # decides, with the transcript's hint (docs/outbox.md).
                mail = tried(mail, at, recipients, "unknown", None, error.message)
                return Outcome(ended(mail, MailStatus.UNKNOWN, error=error.message), error)
            except MailServerError as error:
                if self.cut_off(error, left, config):
                    # Not counted: a mail must not age towards `failed` because runs end.
                    if counted is None:
                        raise OutOfTime(error.message) from None
                    return self.after_failure(mail, counted, config)
                mail = tried(mail, at, recipients, "failed", server_reply(error), error.message)
                counted = error
                # A pause that outlasts the run's deadline would only end in a try cut off.
                if pause is None or not self.short.retries(error) or self.deadline.left() <= pause:
                    return self.after_failure(mail, error, config)
                said = error.reply_code or "no reply"
                self.transcript.note(f"temporary failure ({said}); trying again in {pause:g} s")
                self.sleep(pause)
                continue
            mail = tried(mail, at, recipients, "sent", delivery.reply, None)
            return Outcome(ended(mail, MailStatus.SENT, reply=delivery.reply, refused=delivery.refused))
        raise AssertionError("unreachable: the last attempt returns")

    def cut_off(self, error: MailServerError, left: float, config: MailAccount | None) -> bool:
        """Whether a try that began with `left` seconds of the run failed because the run's time
        ran out (the session tells whatever broke after its deadline as `timeout`), not because
        of the server: it began with less than the one answer's time the account gives its
        server. One that had that much and still ran into the deadline met a server too slow (or
        dripping) and counts: else such a server would hold the mail, and every run of the
        account behind it, for ever."""
        fair = config.timeout_seconds if config is not None else math.inf
        return error.problem == "timeout" and self.deadline.passed() and left < fair

    def after_failure(self, mail: Mail, error: MailServerError, config: MailAccount | None) -> Outcome:
        """A temporary failure defers the mail while it is young enough; a permanent one, or a
        temporary one past the mail's maximum age, fails it (and the latter is dead-lettered)."""
        reply = server_reply(error)
        waiting = deferred(self.policy, mail, error, self.clock(), config) if config else None
        if waiting is not None:
            return Outcome(ended(waiting, MailStatus.DEFERRED, error=error.message, reply=reply), error)
        failed = ended(mail, MailStatus.FAILED, error=error.message, reply=reply)
        return Outcome(failed, error, dead_letter=error.temporary)


def tried(
    mail: Mail, at: datetime, recipients: list[str], outcome: str, reply: str | None, error: str | None
) -> Mail:
    """The mail with one more attempt counted and logged."""
    entry = attempt_entry(at, recipients, outcome=outcome, reply=reply, error=error)
    return mail.model_copy(
        update={"attempts": mail.attempts + 1, "attempt_log": capped([*mail.attempt_log, entry])}
    )


def ended(
    mail: Mail,
    status: MailStatus,
    *,
    error: str | None = None,
    reply: str | None = None,
    refused: dict[str, str] | None = None,
) -> Mail:
    """The mail in `status` after an attempt (or without one: a mail that cannot be sent)."""
    return mail.model_copy(
        update={
            "status": status,
            "error": error,
            "reply": reply,
            "refused": refused or {},
            # The outcome's write ends the hold (outcome_transition removes them from the item).
            "lease_until": None,
            "attempt_started_at": None,
            **({} if status == MailStatus.DEFERRED else {"next_attempt_at": None}),
        }
    )


def outcome_transition(mail: Mail, guard: Guard) -> Transition:
    """The write of an outcome under the guard of the hold it was sent under."""
    assert mail.status in (*FINAL, MailStatus.DEFERRED)
    assign: dict[str, Any] = {
        "status": mail.status.value,
        "error": mail.error,
        "reply": mail.reply,
        "refused": mail.refused,
        "attempts": mail.attempts,
        "attempt_log": mail.attempt_log,
    }
    # The mail leaves the outbox's indexes only here, not at the claim: a claim whose sender
    # died stays visible to sync, which takes it over once the lease is over.
    # An outcome without an error or a reply must not keep those of an earlier attempt.
    removed = [*QUEUE_ATTRIBUTES, *(key for key in ("error", "reply") if getattr(mail, key) is None)]
    if mail.status == MailStatus.DEFERRED:
        assert mail.next_attempt_at is not None
        # Deferred: out of the Outbox index (no sync reads it until it is due), into Waiting.
        assign |= {
            "waiting": outbox_key(mail.team, mail.account),
            "due_at": iso_time(mail.next_attempt_at),
            "next_attempt_at": iso_time(mail.next_attempt_at),
            "deferrals": mail.deferrals,
            "retry_until": iso_time(mail.retry_until) if mail.retry_until else None,
        }
        removed = [key for key in removed if key not in assign]
    else:
        removed.append("next_attempt_at")
    return Transition(mail.id, guard, assign, tuple(removed))


class Completions:
    """The one place completion events are published. Writes outcomes (each one guarded
    transition), then puts their events on the bus, whole tens at once (PutEvents takes ten
    entries a call), and dead-letters the mails that failed for good after temporary failures.
    Only an outcome that was written is announced: a sender whose hold was superseded has
    nothing to tell."""

    def __init__(
        self, storage: Storage, events: EventPublisher | None, dead_letters: DeadLetters | None
    ) -> None:
        self.storage = storage
        self.events = events
        self.dead_letters = dead_letters
        self._pending: list[MailEvent] = []
        self._lock = threading.Lock()

    def record(self, outcomes: Sequence[tuple[Outcome, Guard]]) -> list[bool]:
        transitions = [outcome_transition(outcome.mail, guard) for outcome, guard in outcomes]
        recorded = self.storage.mail.apply(transitions)
        announced = []
        for (outcome, _), done in zip(outcomes, recorded, strict=True):
            if not done:
                logger.warning(
                    "outcome of a mail not recorded: its hold was superseded",
                    extra={
                        "team": outcome.mail.team,
                        "account": outcome.mail.account,
                        "mail_id": outcome.mail.id,
                    },
                )
                continue
            announced.append(completion_event(outcome.mail))
            if outcome.dead_letter and self.dead_letters is not None:
                self._dead_letter(outcome.mail)
        with self._lock:
            self._pending.extend(announced)
            whole = len(self._pending) // 10 * 10
            batch, self._pending = self._pending[:whole], self._pending[whole:]
        self._publish(batch)
        return recorded

    def announce(self, mails: Sequence[Mail]) -> None:
        """Puts the completion events of mails that reached their status without a delivery
        (a cancel), at once."""
        self._publish([completion_event(mail) for mail in mails])

    def flush(self) -> None:
        """Puts the events still pending."""
        with self._lock:
            pending, self._pending = self._pending, []
        self._publish(pending)

    # The outcome is written before these: a notification that fails must not fail the send (a
    # caller would send again) nor keep the other outcomes' events from going out. Logged instead.

    def _publish(self, events: list[MailEvent]) -> None:
        if not events or self.events is None:
            return
        try:
            self.events.publish(events)
        except Exception:
            logger.exception("could not put completion events", extra={"events": len(events)})

    def _dead_letter(self, mail: Mail) -> None:
        assert self.dead_letters is not None
        try:
            self.dead_letters.put(dead_letter(mail))
        except Exception:
            logger.exception(
                "could not put a dead letter",
                extra={"team": mail.team, "account": mail.account, "mail_id": mail.id},
            )


# An EventBridge entry and an SQS message hold 256 KB, a mail may have thousands of recipients and
# a server's reply has no length limit: a notice names at most NOTICE_REFUSED refused recipients
# (with how many there were) and keeps NOTICE_TEXT characters of a reply or an error. The mail
# itself keeps everything.
NOTICE_REFUSED = 100
NOTICE_TEXT = 1_000


def notice_text(text: str | None) -> str | None:
    return text if text is None or len(text) <= NOTICE_TEXT else text[:NOTICE_TEXT] + "..."


def dead_letter(mail: Mail) -> dict[str, Any]:
    return {
        "mail_id": mail.id,
        "team": mail.team,
        "account": mail.account,
        "attempts": mail.attempts,
        "error": notice_text(mail.error),
        "reply": notice_text(mail.reply),
    }


def completion_event(mail: Mail) -> MailEvent:
    detail_type = {
        MailStatus.SENT: MAIL_SENT,
        MailStatus.DEFERRED: MAIL_DEFERRED,
        MailStatus.CANCELLED: MAIL_CANCELLED,
    }.get(mail.status, MAIL_FAILED)
    extra: dict[str, Any] = {
        "status": mail.status.value,
        "reply": notice_text(mail.reply),
        "message_id": mail.message_id,
    }
    if mail.next_attempt_at is not None and mail.status == MailStatus.DEFERRED:
        extra |= {"next_attempt_at": iso_time(mail.next_attempt_at), "attempts": mail.attempts}
    if mail.refused:
        named = list(mail.refused.items())[:NOTICE_REFUSED]
        extra["refused"] = {address: notice_text(reply) for address, reply in named}
        extra["refused_count"] = len(mail.refused)
    if mail.error:
        extra["error"] = notice_text(mail.error)
    return MailEvent(detail_type, mail.team, mail.account, mail.id, extra)
