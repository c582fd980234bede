"""What an operator watches, as CloudWatch metrics (Powertools Metrics, embedded metric format).

The domain calls the named functions below; they only buffer. A handler decorated with
`@log_metrics` writes the buffer when it returns: one EMF line per account (dimensions service,
team, account) on stdout, which Lambda hands to CloudWatch Logs, where the lines become metrics.
Nothing here knows Lambda; a process without the decorator simply never writes its buffer.

Dimensions stop at the account: never a mail id, an address or a reply, so the number of
CloudWatch metrics grows with the accounts (about ten metric names each), not with the mail.
A total over all accounts is a metric-math SUM(SEARCH(...)), not a second dimension set.

Mail outcomes are counted from the domain events that announce them (MeteredPublisher): every
path that sends, fails, defers or receives a mail already publishes exactly one event for it.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from mailcore.events import (
    MAIL_BOUNCED,
    MAIL_CANCELLED,
    MAIL_DEFERRED,
    MAIL_FAILED,
    MAIL_RECEIVED,
    MAIL_SENT,
    MAIL_SET_ASIDE,
    Event,
    EventPublisher,
    MailEvent,
)
from mailcore.protocols.diagnose import is_busy_reply

logger = Logger(child=True)

DEFAULT_NAMESPACE = "MailService"

MAILS_SENT = "MailsSent"
MAILS_FAILED = "MailsFailed"
MAILS_DEFERRED = "MailsDeferred"
MAILS_CANCELLED = "MailsCancelled"
MAILS_RECEIVED = "MailsReceived"
MAILS_BOUNCED = "MailsBounced"
MAILS_SET_ASIDE = "MailsSetAside"
PULL_DURATION = "PullDuration"
PULL_LAG = "PullLag"
PULL_BACKLOG = "PullBacklog"
TOKEN_REFRESHES = "TokenRefreshes"
TOKEN_REFRESH_FAILURES = "TokenRefreshFailures"
PROVIDER_THROTTLED = "ProviderThrottled"

_OUTCOMES = {
    MAIL_SENT: MAILS_SENT,
    MAIL_FAILED: MAILS_FAILED,
    MAIL_DEFERRED: MAILS_DEFERRED,
    MAIL_CANCELLED: MAILS_CANCELLED,
    MAIL_RECEIVED: MAILS_RECEIVED,
    MAIL_BOUNCED: MAILS_BOUNCED,
    MAIL_SET_ASIDE: MAILS_SET_ASIDE,
}

# Set on a handler decorated with log_metrics (a test checks every handler has it).
WRITES_METRICS = "writes_metrics"

Account = tuple[str, str]
Sample = tuple[str, MetricUnit, float]

# Outcomes are recorded on the outbox's writer threads: the buffer takes a lock.
_lock = threading.Lock()
_counts: defaultdict[Account, dict[str, int]] = defaultdict(dict)
_samples: defaultdict[Account, list[Sample]] = defaultdict(list)


def count(name: str, team: str, account: str, value: int = 1) -> None:
    """Adds to a count; counts are summed per account until the buffer is written."""
    with _lock:
        counts = _counts[(team, account)]
        counts[name] = counts.get(name, 0) + value


def measure(name: str, team: str, account: str, value: float, unit: MetricUnit) -> None:
    """Keeps one sample (each is its own value, so CloudWatch can tell p99 from the average)."""
    with _lock:
        _samples[(team, account)].append((name, unit, value))


def mail_event(event: Event) -> None:
    """Counts a mail outcome event, and a busy provider (421, 432 4.3.2) behind a deferral or failure."""
    if not isinstance(event, MailEvent) or event.detail_type not in _OUTCOMES:
        return
    count(_OUTCOMES[event.detail_type], event.team, event.account)
    if event.detail_type in (MAIL_DEFERRED, MAIL_FAILED) and _busy(event.extra.get("reply")):
        provider_throttled(event.team, event.account)


def _busy(reply: object) -> bool:
    code, _, text = reply.partition(" ") if isinstance(reply, str) else ("", "", "")
    return code.isdigit() and is_busy_reply(int(code), text)


def pull_finished(team: str, account: str, *, seconds: float, backlog: int) -> None:
    """A pull's duration, and the messages it left on the server for the next one."""
    measure(PULL_DURATION, team, account, seconds, MetricUnit.Seconds)
    measure(PULL_BACKLOG, team, account, backlog, MetricUnit.Count)


def pull_lag(team: str, account: str, seconds: float) -> None:
    """Seconds since the account's previous pull ended: how old the newest mail here may be."""
    measure(PULL_LAG, team, account, seconds, MetricUnit.Seconds)


def token_refreshed(team: str, account: str) -> None:
    count(TOKEN_REFRESHES, team, account)


def token_refresh_failed(team: str, account: str) -> None:
    count(TOKEN_REFRESH_FAILURES, team, account)


def provider_throttled(team: str, account: str) -> None:
    count(PROVIDER_THROTTLED, team, account)


class MeteredPublisher:
    """An EventPublisher that counts the mail outcomes before handing them on: the outcome
    happened (it is stored) whether or not its notification reaches the bus."""

    def __init__(self, inner: EventPublisher) -> None:
        self.inner = inner

    def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            mail_event(event)
        self.inner.publish(events)


def _taken() -> tuple[dict[Account, dict[str, int]], dict[Account, list[Sample]]]:
    with _lock:
        counts, samples = dict(_counts), dict(_samples)
        _counts.clear()
        _samples.clear()
    return counts, samples


def flush() -> None:
    """Writes what was buffered, one EMF line per account, and empties the buffer. A metric
    that cannot be written is logged, never raised: it must not cost the handler its answer."""
    counts, samples = _taken()
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE
    for team, account in sorted({*counts, *samples}):
        metrics = EphemeralMetrics(namespace=namespace)
        metrics.add_dimension("team", team)
        metrics.add_dimension("account", account)
        for name, value in counts.get((team, account), {}).items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        for name, unit, measured in samples.get((team, account), []):
            metrics.add_metric(name=name, unit=unit, value=measured)
        try:
            metrics.flush_metrics()
        except Exception:
            logger.exception("metrics not written", extra={"team": team, "account": account})


def log_metrics[**P, R](handler: Callable[P, R]) -> Callable[P, R]:
    """Writes the metrics buffered during the handler's run when it returns or raises."""

    @functools.wraps(handler)
    def flushed(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return handler(*args, **kwargs)
        finally:
            flush()

    setattr(flushed, WRITES_METRICS, True)  # functools.wraps carries it to the outer decorators
    return flushed
