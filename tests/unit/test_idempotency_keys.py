"""Powertools idempotency records are keyed on a fixed prefix per use ("send", "system-mail"), not
on the handler's module and function (Powertools' default): every execution environment (the
local stack loads each under a module name of its own) and every later version of the code finds
the records the others wrote, so a redelivery within the window is answered, not run again."""

import json

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from mailcore.services.system import SystemMailResult
from mailcore.wiring.system_mail import SystemMailRoot
from moto import mock_aws

from tests.stack import function_environment
from tests.support import LambdaContext, load_function

REQUEST = {
    "template": "notification",
    "to": ["user@example.test"],
    "variables": {"title": "t", "message": "m"},
}


@pytest.fixture
def idempotency_records(monkeypatch):
    """An idempotency table (keyed on `id`, as IdempotencyTable) in moto, used by system mail."""
    with mock_aws():
        client = boto3.session.Session().client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="idempotency",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        monkeypatch.setattr(
            SystemMailRoot,
            "idempotency_store",
            lambda root: DynamoDBPersistenceLayer(table_name="idempotency", boto3_client=client),
        )
        yield client


def sqs_event(message_id: str) -> dict:
    record = {"messageId": message_id, "receiptHandle": "r", "body": json.dumps(REQUEST), "attributes": {}}
    return {"Records": [record | {"eventSource": "aws:sqs", "messageAttributes": {}, "md5OfBody": ""}]}


def test_a_queue_message_redelivered_to_another_execution_environment_is_not_sent_again(
    idempotency_records, monkeypatch
):
    delivered: list[str] = []

    def deliver(root, request, *args, **kwargs):
        delivered.append(request.template)
        return SystemMailResult(status="sent", mail_id="m-1", template=request.template)

    monkeypatch.setattr(SystemMailRoot, "deliver", deliver)
    with function_environment("SystemMailQueueFunction"):
        environments = [load_function("system_mail", f"_local_lambda_queue_{n}") for n in (0, 1)]
        for app in environments:
            assert app.on_queue(sqs_event("message-1"), LambdaContext()) == {"batchItemFailures": []}
    assert delivered == ["notification"]
    (record,) = idempotency_records.scan(TableName="idempotency")["Items"]
    assert record["id"]["S"].startswith("system-mail#")
