"""Metrics an operator watches: each is written as a CloudWatch EMF line per account, with the
team and account as dimensions and never a secret (mailcore.telemetry)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from mailcore import telemetry
from mailcore.events import MAIL_RECEIVED, MailEvent
from mailcore.models import MailStatus, OAuth2Auth
from mailcore.oauth2 import OAuth2Error, TokenBroker
from mailcore.services.outbox import completion_event
from mailcore.settings import Settings
from mailcore.wiring import accounts as accounts_root
from mailcore.wiring import parts

from local.oauth2_server import OAuth2Server
from tests.fakes import MemoryPublisher, memory_storage
from tests.stack import function_environment
from tests.support import outgoing_mail
from tests.unit.test_pull_pipeline import FakeMailbox, pull

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = {
    "accounts": "AccountsFunction",
    "dispatch": "PullDispatchFunction",
    "outbox_push": "OutboxPushFunction",
    "outbox_sync": "OutboxSyncFunction",
    "pull": "PullFunction",
    "pull_queue": "QueuedPullFunction",
    "send": "SendFunction",
    "store": "StoreFunction",
}


@pytest.fixture
def provider():
    server = OAuth2Server().start()
    yield server
    server.stop()


@pytest.fixture
def written_text(monkeypatch, capsys):
    """What the next flush writes on stdout (Lambda's log), with metrics enabled."""
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "MailServiceTest")
    telemetry.flush()
    capsys.readouterr()

    def read() -> str:
        telemetry.flush()
        return str(capsys.readouterr().out)

    return read


@pytest.fixture
def written(written_text):
    """The EMF lines the next flush writes: {(team, account): {metric: [values]}}."""

    def read() -> dict[tuple[str, str], dict[str, list[float]]]:
        lines = [json.loads(line) for line in written_text().splitlines() if '"_aws"' in line]
        found: dict[tuple[str, str], dict[str, list[float]]] = {}
        for line in lines:
            (directive,) = line["_aws"]["CloudWatchMetrics"]
            assert directive["Namespace"] == "MailServiceTest"
            assert {"team", "account"} <= set(directive["Dimensions"][0])
            metrics = found.setdefault((line["team"], line["account"]), {})
            for metric in directive["Metrics"]:
                value = line[metric["Name"]]
                metrics.setdefault(metric["Name"], []).extend(value if isinstance(value, list) else [value])
        return found

    return read


def outcome(status: MailStatus, *, account: str = "main", reply: str | None = None) -> MailEvent:
    return completion_event(outgoing_mail(team="acme", account=account, status=status, reply=reply))


def test_each_mail_outcome_is_counted_per_account_from_the_event_that_announces_it(written):
    published = MemoryPublisher()
    metered = telemetry.MeteredPublisher(published)

    metered.publish([outcome(MailStatus.SENT), outcome(MailStatus.SENT), outcome(MailStatus.FAILED)])
    metered.publish([outcome(MailStatus.DEFERRED, account="other")])
    metered.publish([MailEvent(MAIL_RECEIVED, "acme", "main", "m1")])

    assert len(published.events) == 5
    assert written() == {
        ("acme", "main"): {"MailsSent": [2], "MailsFailed": [1], "MailsReceived": [1]},
        ("acme", "other"): {"MailsDeferred": [1]},
    }


def test_a_busy_provider_behind_a_deferral_counts_as_throttling_and_a_refusal_does_not(written):
    metered = telemetry.MeteredPublisher(MemoryPublisher())

    metered.publish([outcome(MailStatus.DEFERRED, reply="421 4.7.0 Try again later")])
    metered.publish(
        [outcome(MailStatus.DEFERRED, reply="432 4.3.2 STOREDRV.ClientSubmit; sender thread limit")]
    )
    metered.publish([outcome(MailStatus.FAILED, reply="550 5.1.1 no such user")])

    counts = written()[("acme", "main")]
    assert counts["ProviderThrottled"] == [2]
    assert counts["MailsDeferred"] == [2] and counts["MailsFailed"] == [1]


def test_a_pull_writes_its_duration_backlog_received_mail_and_then_its_lag(written):
    storage, mailbox = memory_storage(), FakeMailbox(3)
    events = telemetry.MeteredPublisher(MemoryPublisher())

    pull(mailbox, storage, events=events)
    first = written()[("acme", "main")]
    pull(mailbox, storage, events=events)
    second = written()[("acme", "main")]

    assert first["MailsReceived"] == [3] and first["PullBacklog"] == [0]
    assert len(first["PullDuration"]) == 1 and first["PullDuration"][0] >= 0
    assert "PullLag" not in first  # no pull before the first one
    assert len(second["PullLag"]) == 1 and 0 <= second["PullLag"][0] < 60


def oauth2_auth(provider: OAuth2Server, client_secret: str | None = None) -> OAuth2Auth:
    client = provider.add_client("desk@example.test")
    return OAuth2Auth.model_validate(
        {
            "mode": "oauth2",
            "provider": "generic",
            "client_id": client.client_id,
            "client_secret": client_secret or client.client_secret,
            "token_url": provider.token_url,
            "scope": "mail",
            "refresh_token": provider.issue_refresh_token(client),
        }
    )


def test_token_refreshes_and_refused_refreshes_are_counted_per_account(written, provider):
    broker = TokenBroker()
    good = oauth2_auth(provider)
    broker.access_token("acme", "main", good)
    broker.access_token("acme", "main", good)  # cached: no refresh
    with pytest.raises(OAuth2Error):
        broker.access_token("acme", "other", oauth2_auth(provider, client_secret="wrong"))

    assert written() == {
        ("acme", "main"): {"TokenRefreshes": [1]},
        ("acme", "other"): {"TokenRefreshFailures": [1]},
    }


def test_no_secret_of_a_refreshed_or_refused_account_is_written(written_text, provider):
    broker = TokenBroker()
    good = oauth2_auth(provider)
    token = broker.access_token("acme", "main", good)
    with pytest.raises(OAuth2Error):
        broker.access_token("acme", "other", oauth2_auth(provider, client_secret="wrong-secret-value"))

    text = written_text()
    assert '"TokenRefreshes"' in text
    secrets = [token, "wrong-secret-value", *provider.issued]
    secrets += [value.get_secret_value() for value in (good.client_secret, good.refresh_token) if value]
    assert not [secret for secret in secrets if secret in text]


def test_the_buffer_is_written_when_the_handler_raises_and_a_failed_write_does_not_raise(
    written, monkeypatch
):
    @telemetry.log_metrics
    def handler(event: dict[str, Any], context: object) -> None:
        telemetry.provider_throttled("acme", "main")
        raise RuntimeError("the use case failed")

    with pytest.raises(RuntimeError):
        handler({}, None)
    assert written() == {("acme", "main"): {"ProviderThrottled": [1]}}

    def broken_flush(self: Any, raise_on_empty_metrics: bool = False) -> None:
        raise ValueError("no CloudWatch today")

    monkeypatch.setattr(telemetry.EphemeralMetrics, "flush_metrics", broken_flush)
    telemetry.provider_throttled("acme", "main")
    telemetry.flush()


def test_the_published_events_of_every_function_are_counted():
    settings = Settings(
        **{name: "x" for name in ("MAIL_TABLE", "FILES_TABLE", "PULL_STATE_TABLE", "MAIL_BUCKET")},
        **{"MAIL_EVENT_BUS": "bus", "TEAM_SECRET_PREFIX": "t/", "SYSTEM_MAIL_SECRET_NAME": "s"},
    )
    assert isinstance(parts.mail_parts(settings)["events"], telemetry.MeteredPublisher)
    assert isinstance(accounts_root.build(settings).accounts.events, telemetry.MeteredPublisher)


@pytest.mark.parametrize("function", HANDLERS)
def test_every_handler_that_can_buffer_metrics_writes_them(function):
    spec = importlib.util.spec_from_file_location(
        f"telemetry_{function}_app", ROOT / "functions" / function / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with function_environment(HANDLERS[function]):
        spec.loader.exec_module(module)

    assert getattr(module.lambda_handler, telemetry.WRITES_METRICS, False)


def test_a_flush_writes_one_line_per_account_and_empties_the_buffer(written):
    telemetry.count("MailsSent", "acme", "main")
    telemetry.measure("PullLag", "acme", "main", 1.5, telemetry.MetricUnit.Seconds)

    assert written() == {("acme", "main"): {"MailsSent": [1], "PullLag": [1.5]}}
    assert written() == {}  # written once: the buffer is empty again
