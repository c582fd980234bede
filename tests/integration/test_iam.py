"""Every function runs under its own execution role from the translated template: a call its role
does not allow is refused here as AWS refuses it (local/iam.py)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local import iam
from local.stack import LocalStack


def role_of(stack: LocalStack, function_id: str) -> iam.Principal:
    assert stack.gateway is not None
    role = stack.gateway.runtime(function_id).role
    assert role is not None, f"{function_id} runs without its role"
    return role


def clients() -> Any:
    session = boto3.session.Session()  # made after the stack started: its clients are checked
    return {name: session.client(name) for name in ("dynamodb", "sqs", "secretsmanager")}


def denied(call: Any) -> str:
    with pytest.raises(ClientError) as refused:
        call()
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "AccessDeniedException")
    return str(refused.value)


def mail_key() -> dict[str, Any]:
    return {"id": {"S": "no-such-mail"}}


def test_the_send_function_may_not_put_accounts_on_the_pull_queue(stack):
    aws, resources = clients(), stack.physical
    queue = stack.info["environment"]["PULL_QUEUE_URL"]
    with iam.acting_as(role_of(stack, "SendFunction")):
        aws["dynamodb"].get_item(TableName=resources["MailTable"], Key=mail_key())  # inside its role
        message = denied(lambda: aws["sqs"].send_message(QueueUrl=queue, MessageBody="{}"))
    assert "SendFunctionRole/SendFunction is not authorized to perform: sqs:SendMessage" in message


def test_the_pull_function_may_not_send_to_the_outbox_dead_letter_queue(stack):
    aws = clients()
    queue = stack.info["environment"]["OUTBOX_DLQ_URL"]
    with iam.acting_as(role_of(stack, "PullFunction")):
        denied(lambda: aws["sqs"].send_message(QueueUrl=queue, MessageBody="{}"))


def test_the_dispatcher_may_not_read_mail(stack):
    aws = clients()
    with iam.acting_as(role_of(stack, "PullDispatchFunction")):
        denied(lambda: aws["dynamodb"].get_item(TableName=stack.physical["MailTable"], Key=mail_key()))


def test_the_store_function_may_read_mail_but_not_write_it(stack):
    aws, table = clients(), stack.physical["MailTable"]
    with iam.acting_as(role_of(stack, "StoreFunction")):
        aws["dynamodb"].get_item(TableName=table, Key=mail_key())
        denied(lambda: aws["dynamodb"].put_item(TableName=table, Item=mail_key()))


def test_the_system_mail_function_may_not_read_a_team_secret(stack, new_team):
    team = new_team()
    aws = clients()
    with iam.acting_as(role_of(stack, "SystemMailFunction")):
        denied(lambda: aws["secretsmanager"].get_secret_value(SecretId=stack.team_secret_prefix + team.team))


def test_the_pull_may_write_a_rotated_refresh_token_back_into_the_team_secret(stack, new_team):
    team = new_team()
    aws, name = clients(), stack.team_secret_prefix + team.team
    with iam.acting_as(role_of(stack, "PullFunction")):
        value = aws["secretsmanager"].get_secret_value(SecretId=name)["SecretString"]
        aws["secretsmanager"].put_secret_value(SecretId=name, SecretString=value)
    assert json.loads(value)["type"] == "mail"
