"""A queued system notification whose function is killed mid-send, against the real Postfix and
moto and the local stack's execution environments: SQS's redelivery is held by Powertools'
in-progress record until the killed invocation's deadline, then finds the first attempt's mail
(`sending`: it may have been delivered) and does not send it again (services/system.py,
send_once; docs/system-mail.md)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from mailcore.storage import MailQuery
from mailcore.teams import SYSTEM_TEAM

from tests.integration.conftest import SECRETS_MAX_AGE, postfix_holds_no_mail
from tests.integration.fault_proxy import Fault
from tests.integration.test_idempotent_send import move_powertools_clock
from tests.integration.test_outbox import proxy_to_postfix
from tests.integration.test_stuck_sending import killed_mid_send
from tests.integration.test_system_mail import QUEUE_FUNCTION, sqs_event
from tests.stack import stack_storage


def system_mails_to(address: str) -> list:
    mails, _ = stack_storage().mail.list_team(SYSTEM_TEAM, MailQuery(), after=None, limit=1000)
    return [mail for mail in mails if address in mail.to]


def test_a_queued_notification_redelivered_after_its_function_was_killed_mid_send_is_not_sent_again(
    stack, new_team, monkeypatch
):
    team = new_team()
    address = team.mailbox.address
    notification = {"template": "notification", "to": address, "variables": {"title": "t", "message": "m"}}
    event = sqs_event(json.dumps(notification))
    secret = stack.info["environment"]["SYSTEM_MAIL_SECRET_NAME"]
    client = stack.session.client("secretsmanager")
    original = json.loads(client.get_secret_value(SecretId=secret)["SecretString"])
    with proxy_to_postfix(stack, Fault("DATA", "hold")) as proxy:
        stack.put_secret(secret, original | {"host": "127.0.0.1", "port": proxy.port, "security": "none"})
        try:
            killed_mid_send(stack, proxy, QUEUE_FUNCTION, lambda: stack.invoke(QUEUE_FUNCTION, event))
            # SQS delivers it again in another environment: held while the killed run may live.
            with pytest.raises(Exception, match="already in progress"):
                stack.invoke(QUEUE_FUNCTION, event)
            deadline = stack.gateway.runtime(QUEUE_FUNCTION).spec.timeout
            move_powertools_clock(monkeypatch, timedelta(seconds=deadline + 1))
            assert stack.invoke(QUEUE_FUNCTION, event) == {"batchItemFailures": []}
        finally:
            stack.put_secret(secret, original)
            time.sleep(float(SECRETS_MAX_AGE) + 0.2)  # no later invocation reads the proxy's address
        (mail,) = system_mails_to(address)
        assert mail.status == "sending" and proxy.seen("DATA") == 1
    postfix_holds_no_mail(stack)
    assert stack.mail_servers.message_count(address) == 0
