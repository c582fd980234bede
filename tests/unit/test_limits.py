"""Per-account sending limits (the in-memory counters; the DynamoDB ones run in the integration tests)."""

from __future__ import annotations

import pytest
from mailcore.limits import AccountLimiter, RateLimited
from mailcore.models import MailAccount
from mailcore.teams import ResolvedAccount

from tests.fakes import MemoryLimitCounters


def target(**limits) -> ResolvedAccount:
    account = MailAccount.model_validate(
        {
            "mail_from": "desk@contoso.test",
            "mail_username": "desk@contoso.test",
            "smtp": {"host": "smtp.office365.com", "port": 587, "security": "starttls"},
            "pop3": {"host": "outlook.office365.com", "port": 995, "security": "ssl"},
            "auth": {
                "mode": "oauth2",
                "provider": "microsoft",
                "tenant_id": "t",
                "client_id": "c",
                "client_secret": "s",
            },
            **limits,
        }
    )
    return ResolvedAccount("team", "desk", account)


class Clock:
    def __init__(self, now: float = 60_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_microsoft_account_sends_30_messages_a_minute_and_the_31st_waits_for_the_next_minute():
    clock = Clock(60_000.0 + 15)
    limiter = AccountLimiter(MemoryLimitCounters(), clock=clock)
    for _ in range(30):
        limiter.take_message(target())
    with pytest.raises(RateLimited) as caught:
        limiter.take_message(target())
    assert caught.value.status == 429 and caught.value.retry_after == pytest.approx(45)
    clock.now += 45
    limiter.take_message(target())


def test_the_secret_can_set_its_own_rate():
    limiter = AccountLimiter(MemoryLimitCounters(), clock=Clock())
    limiter.take_message(target(max_messages_per_minute=1))
    with pytest.raises(RateLimited):
        limiter.take_message(target(max_messages_per_minute=1))


def test_a_fourth_concurrent_connection_is_refused_and_a_closed_one_frees_its_slot():
    limiter = AccountLimiter(MemoryLimitCounters(), clock=Clock())
    with (
        limiter.connection(target()),
        limiter.connection(target()),
        limiter.connection(target()),
        pytest.raises(RateLimited, match="3 SMTP connections"),
        limiter.connection(target()),
    ):
        pass
    with limiter.connection(target()):
        pass


def test_the_slot_of_a_crashed_holder_frees_itself_when_its_lease_runs_out():
    clock = Clock()
    counters = MemoryLimitCounters()
    limiter = AccountLimiter(counters, clock=clock)
    for slot in range(3):
        assert counters.lease("team#desk", slot, "crashed", clock.now, clock.now + 900)
    with pytest.raises(RateLimited), limiter.connection(target()):
        pass
    clock.now += 901
    with limiter.connection(target()):
        pass


def test_accounts_without_limits_are_never_counted():
    counters = MemoryLimitCounters()
    account = target(
        auth={
            "mode": "oauth2",
            "provider": "google",
            "client_id": "c",
            "client_secret": "s",
            "refresh_token": "r",
        }
    )
    limiter = AccountLimiter(counters, clock=Clock())
    for _ in range(100):
        limiter.take_message(account)
    with limiter.connection(account):
        pass
    assert counters.items == {}
