"""A queued system notification whose function is killed mid-send, against the real Postfix and
moto and the local stack's execution environments: SQS's redelivery is held by Powertools'
in-progress record until the killed invocation's deadline, then finds the first attempt's mail
(`sending`: it may have been delivered) and does not send it again (services/system.py,
send_once; docs/system-mail.md); after the mail's hold the scheduled outbox sync records it
`unknown`, and sends nothing either (services/outbox_sync.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import mailcore.wiring
import pytest
from mailcore.models import MailStatus
from mailcore.storage import MailQuery
from mailcore.teams import SYSTEM_TEAM

from tests.integration.conftest import SECRETS_MAX_AGE, postfix_holds_no_mail
from tests.integration.fault_proxy import DATA_END, Fault, FaultProxy
from tests.integration.test_idempotent_send import move_powertools_clock
from tests.integration.test_outbox import proxy_to_postfix
from tests.integration.test_stuck_sending import killed_mid_send
from tests.integration.test_system_mail import QUEUE_FUNCTION, sqs_event
from tests.stack import stack_storage


def system_mails_to(address: str) -> list:
    mails, _ = stack_storage().mail.list_team(SYSTEM_TEAM, MailQuery(), after=None, limit=1000)
    return [mail for mail in mails if address in mail.to]


@contextmanager
def killed_queued_notification(stack, address: str) -> Iterator[tuple[FaultProxy, dict[str, Any]]]:
    """Queues a notification to `address` and kills SystemMailQueueFunction while it sends it
    (the system secret pointed at a proxy holding DATA, killed_mid_send); yields the proxy and
    the SQS event, and puts the secret back after the block."""
    notification = {"template": "notification", "to": address, "variables": {"title": "t", "message": "m"}}
    event = sqs_event(json.dumps(notification))
    secret = stack.info["environment"]["SYSTEM_MAIL_SECRET_NAME"]
    client = stack.session.client("secretsmanager")
    original = json.loads(client.get_secret_value(SecretId=secret)["SecretString"])
    with proxy_to_postfix(stack, Fault("DATA", "hold")) as proxy:
        stack.put_secret(secret, original | {"host": "127.0.0.1", "port": proxy.port, "security": "none"})
        try:
            killed_mid_send(stack, proxy, QUEUE_FUNCTION, lambda: stack.invoke(QUEUE_FUNCTION, event))
            yield proxy, event
        finally:
            stack.put_secret(secret, original)
            time.sleep(float(SECRETS_MAX_AGE) + 0.2)  # no later invocation reads the proxy's address


def test_a_queued_notification_redelivered_after_its_function_was_killed_mid_send_is_not_sent_again(
    stack, new_team, monkeypatch
):
    address = new_team().mailbox.address
    with killed_queued_notification(stack, address) as (proxy, event):
        # SQS delivers it again in another environment: held while the killed run may live.
        with pytest.raises(Exception, match="already in progress"):
            stack.invoke(QUEUE_FUNCTION, event)
        deadline = stack.gateway.runtime(QUEUE_FUNCTION).spec.timeout
        move_powertools_clock(monkeypatch, timedelta(seconds=deadline + 1))
        assert stack.invoke(QUEUE_FUNCTION, event) == {"batchItemFailures": []}
        (mail,) = system_mails_to(address)
        assert mail.status == "sending" and proxy.seen("DATA") == 1
    postfix_holds_no_mail(stack)
    assert stack.mail_servers.message_count(address) == 0


def test_a_system_mail_killed_mid_send_is_recorded_unknown_by_the_sync_after_its_hold_and_not_sent(
    stack, new_team, monkeypatch
):
    address = new_team().mailbox.address
    with killed_queued_notification(stack, address) as (proxy, _):
        (held,) = system_mails_to(address)
        assert held.status == MailStatus.SENDING and held.lease_until is not None
        stack.invoke("OutboxSyncFunction", {"source": "schedule"})  # the hold lasts: left alone
        assert system_mails_to(address)[0].status == MailStatus.SENDING

        later = held.lease_until + timedelta(seconds=1) - datetime.now(UTC)
        monkeypatch.setattr(mailcore.wiring, "clock", lambda: datetime.now(UTC) + later)
        counts = stack.invoke("OutboxSyncFunction", {"source": "schedule"})
        (mail,) = system_mails_to(address)
        assert counts["unknown"] >= 1 and mail.status == MailStatus.UNKNOWN
        assert "not sent again by itself" in (mail.error or "")
        assert (proxy.seen("DATA"), proxy.seen(DATA_END)) == (1, 0)  # the sync sent nothing
    postfix_holds_no_mail(stack)
    assert stack.mail_servers.message_count(address) == 0
