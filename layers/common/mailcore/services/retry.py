"""The one retry policy of outgoing mail, for direct sends and the outbox alike.

SMTP's 4xx means "try again later", and later is minutes to hours (RFC 5321 §4.5.4.1: retries
at least 30 minutes apart, give up after 4-5 days). A run retries a short blip itself
(ShortRetries, seconds); once those tries are spent the mail is `deferred` with a
`next_attempt_at` that grows with each deferral (1, 5, 15, 30 minutes, then every 1 to 2 hours,
jittered so that mails deferred together do not return together) until its maximum age, after
which it fails with the server's last reply. A 5xx fails at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mailcore.errors import MailServerError
from mailcore.models import Mail, MailAccount
from mailcore.textcut import cut_to_bytes

# Pauses after the 1st, 2nd, ... deferral; after the last one, HOURLY with jitter.
DEFERRAL_STEPS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=30))
HOURLY = (timedelta(hours=1), timedelta(hours=2))
# Jitter of the short steps: up to this share of the pause, added.
JITTER_SHARE = 0.2
DEFAULT_MAX_AGE = timedelta(days=2)
# The longest a caller or an account may keep a mail trying (RFC 5321's upper end).
LONGEST_MAX_AGE = timedelta(days=5)
# attempt_log keeps the first entry and the latest ones: a mail tried for days stays a small item.
ATTEMPT_LOG_LIMIT = 50
# Of each attempt: the server's reply up to this many bytes, and the first recipients tried (the
# mail's own fields name them all): 50 entries of at most ~3 KB stay far under DynamoDB's 400 KB.
ATTEMPT_REPLY_BYTES = 500
ATTEMPT_RECIPIENTS = 10


def is_busy(error: MailServerError) -> bool:
    """421, or 432 4.3.2: the server is busy now and says so at once."""
    return error.reply_code == 421 or (error.reply_code == 432 and "4.3.2" in (error.reply or ""))


@dataclass(frozen=True)
class ShortRetries:
    """Tries of one mail within one run, before it is deferred: the pauses between them, and
    which failures are worth them."""

    pauses: tuple[float, ...]
    retries: Callable[[MailServerError], bool]


# Nobody waits on an outbox run: every temporary failure is tried again after 0.5 s and 2 s.
IN_THE_BACKGROUND = ShortRetries((0.5, 2.0), lambda error: error.temporary)
# A direct send's caller waits (API Gateway answers within 29 s; one SMTP timeout may take 30):
# only a busy server, which answers at once, is tried again (after 1 s and 3 s); any other
# temporary failure goes to the outbox at once, deferred.
WHILE_THE_CALLER_WAITS = ShortRetries((1.0, 3.0), is_busy)


@dataclass(frozen=True)
class RetryPolicy:
    steps: tuple[timedelta, ...] = DEFERRAL_STEPS
    hourly: tuple[timedelta, timedelta] = HOURLY
    default_max_age: timedelta = DEFAULT_MAX_AGE
    uniform: Callable[[float, float], float] = random.uniform

    def pause(self, deferrals: int) -> timedelta:
        """The wait after the `deferrals`-th deferral (1 for the first)."""
        if deferrals <= len(self.steps):
            step = self.steps[deferrals - 1]
            return step + step * self.uniform(0.0, JITTER_SHARE)
        low, high = self.hourly
        return timedelta(seconds=self.uniform(low.total_seconds(), high.total_seconds()))

    def give_up_at(self, mail: Mail, account_max_age: timedelta | None) -> datetime:
        """When the mail stops trying: its own limit (set at queueing), else the account's, else
        the default, counted from when it was due (send_at) or created."""
        if mail.retry_until is not None:
            return mail.retry_until
        start = mail.send_at or mail.created_at
        return start + (account_max_age or self.default_max_age)

    def next_attempt(self, mail: Mail, now: datetime, account_max_age: timedelta | None) -> datetime | None:
        """When to try a mail that met a temporary failure again, or None when it is past its
        maximum age (it then fails)."""
        deferrals = mail.deferrals + 1
        at = now + self.pause(deferrals)
        return at if at <= self.give_up_at(mail, account_max_age) else None


def deferred(
    policy: RetryPolicy, mail: Mail, error: MailServerError, now: datetime, config: MailAccount
) -> Mail | None:
    """The mail waiting for its next attempt after `error`, or None when it must fail: the
    error is final (5xx, failed login), or the mail is past its maximum age. Temporary are a
    4xx, a refused/dropped connection and a timeout before DATA (protocols/diagnose marks them)."""
    if not error.temporary:
        return None
    max_age = timedelta(hours=config.retry_max_age_hours) if config.retry_max_age_hours else None
    next_at = policy.next_attempt(mail, now, max_age)
    if next_at is None:
        return None
    return mail.model_copy(
        update={
            "next_attempt_at": next_at,
            "deferrals": mail.deferrals + 1,
            "retry_until": policy.give_up_at(mail, max_age),
        }
    )


def server_reply(error: MailServerError) -> str | None:
    return f"{error.reply_code} {error.reply}" if error.reply_code else error.reply


def attempt_entry(
    at: datetime, recipients: list[str], *, outcome: str, reply: str | None, error: str | None = None
) -> dict[str, Any]:
    """One attempt, small by design: ATTEMPT_LOG_LIMIT of them must fit in the mail's item
    whatever the server answers (a reply is as long as the server makes it) and however many
    recipients the mail has."""
    entry: dict[str, Any] = {
        "time": at.astimezone(UTC).isoformat(),
        "outcome": outcome,
        "reply": cut_reply(reply),
        "recipients": recipients[:ATTEMPT_RECIPIENTS],
    }
    if len(recipients) > ATTEMPT_RECIPIENTS:
        entry["recipient_count"] = len(recipients)
    if error and error != reply:
        entry["error"] = cut_reply(error)
    return entry


def cut_reply(text: str | None) -> str | None:
    return text if text is None else cut_to_bytes(text, ATTEMPT_REPLY_BYTES)


def capped(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(log) <= ATTEMPT_LOG_LIMIT:
        return log
    return [log[0], *log[-(ATTEMPT_LOG_LIMIT - 1) :]]
