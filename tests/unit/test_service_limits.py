"""AWS's 256 KB limits that moto lets pass are refused locally (local/service_limits.py), and the
service's own messages stay inside them by design."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError
from mailcore.adapters.eventbridge import EventBridgePublisher
from mailcore.events import MAIL_RECEIVED, MailEvent
from mailcore.models import Direction, Mail, MailStatus
from mailcore.services.outbox import completion_event
from moto import mock_aws

from local import iam
from local.service_limits import MESSAGE_LIMIT, event_entry_size

REGION = "us-east-1"


@pytest.fixture
def aws():
    iam.install()  # the size checks ride on the same botocore hook
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


def refused_code(call) -> str:
    with pytest.raises(ClientError) as refused:
        call()
    return str(refused.value.response["Error"]["Code"])


def test_an_sqs_message_over_256_kb_is_refused_and_one_at_the_limit_is_sent(aws):
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x" * MESSAGE_LIMIT)
    assert refused_code(lambda: sqs.send_message(QueueUrl=url, MessageBody="x" * (MESSAGE_LIMIT + 1))) == (
        "InvalidParameterValue"
    )


def test_an_sqs_batch_over_256_kb_in_total_is_refused(aws):
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    entries = [{"Id": str(n), "MessageBody": "x" * 100_000} for n in range(3)]
    code = refused_code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=entries))
    assert code == "AWS.SimpleQueueService.BatchRequestTooLong"


def test_eventbridge_entries_over_256_kb_are_refused(aws):
    events = aws.client("events")
    entry = {"Source": "s", "DetailType": "d", "Detail": json.dumps({"x": "y" * MESSAGE_LIMIT})}
    assert refused_code(lambda: events.put_events(Entries=[entry])) == "ValidationException"


def test_a_mail_sent_with_5000_refused_recipients_is_announced_in_one_entry_under_256_kb():
    refused = {f"recipient{n:04d}@example.test": "550 5.1.1 " + "no such user " * 20 for n in range(5000)}
    mail = Mail(
        id="m1",
        team="t",
        account="a",
        direction=Direction.OUT,
        status=MailStatus.SENT,
        to=list(refused),
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        refused=refused,
        reply="250 " + "ok " * 100_000,
    )
    event = completion_event(mail)
    entry = {"Source": "mail-service", "DetailType": event.detail_type, "Detail": json.dumps(event.detail())}
    assert event_entry_size(entry) < MESSAGE_LIMIT
    assert event.detail()["refused_count"] == 5000 and len(event.detail()["refused"]) == 100


def test_a_pull_of_1000_mails_announces_them_in_calls_of_10_small_entries(aws):
    events = aws.client("events")
    events.create_event_bus(Name="mail")
    sizes: list[int] = []
    events.meta.events.register(
        "before-parameter-build.eventbridge.PutEvents",
        lambda params, **_: sizes.append(sum(event_entry_size(e) for e in params["Entries"])),
    )
    received = [MailEvent(MAIL_RECEIVED, "team", "account", f"m{n:06d}") for n in range(1000)]
    EventBridgePublisher("mail", client=events).publish(received)
    assert len(sizes) == 100 and max(sizes) < 2_000
