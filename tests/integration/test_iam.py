"""Every function runs under its own execution role from the translated template: a call its role
does not allow is refused here as AWS refuses it (local/iam.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local import iam
from local.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]


def role_of(stack: LocalStack, function_id: str) -> iam.Principal:
    assert stack.gateway is not None
    role = stack.gateway.runtime(function_id).role
    assert role is not None, f"{function_id} runs without its role"
    return role


def clients() -> Any:
    session = boto3.session.Session()  # made after the stack started: its clients are checked
    return {name: session.client(name) for name in ("dynamodb", "sqs", "secretsmanager", "kms")}


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
    role = stack.physical["SendFunctionRole"]  # named by moto's CloudFormation: a random suffix
    assert f"{role}/SendFunction is not authorized to perform: sqs:SendMessage" in message


def test_the_pull_function_may_not_send_to_the_outbox_dead_letter_queue(stack):
    aws = clients()
    queue = stack.info["environment"]["OUTBOX_DLQ_URL"]
    with iam.acting_as(role_of(stack, "PullFunction")):
        denied(lambda: aws["sqs"].send_message(QueueUrl=queue, MessageBody="{}"))


def test_the_dispatcher_may_not_read_mail(stack):
    aws = clients()
    with iam.acting_as(role_of(stack, "PullDispatchFunction")):
        denied(lambda: aws["dynamodb"].get_item(TableName=stack.physical["MailTable"], Key=mail_key()))


def test_the_store_function_may_read_mail_but_not_change_its_status(stack):
    aws, table = clients(), stack.physical["MailTable"]
    with iam.acting_as(role_of(stack, "StoreFunction")):
        aws["dynamodb"].get_item(TableName=table, Key=mail_key())
        denied(lambda: aws["dynamodb"].update_item(TableName=table, Key=mail_key()))


def test_the_accounts_function_may_not_read_mail(stack):
    aws = clients()
    with iam.acting_as(role_of(stack, "AccountsFunction")):
        denied(lambda: aws["dynamodb"].get_item(TableName=stack.physical["MailTable"], Key=mail_key()))


def test_the_console_may_make_no_aws_call_at_all(stack, new_team):
    aws = clients()
    secret = f"{stack.team_secret_prefix}{new_team().team}"
    with iam.acting_as(role_of(stack, "ConsoleFunction")):
        denied(lambda: aws["secretsmanager"].get_secret_value(SecretId=secret))
        denied(lambda: aws["dynamodb"].get_item(TableName=stack.physical["MailTable"], Key=mail_key()))


def test_the_system_mail_function_may_not_read_a_team_secret(stack, new_team):
    team = new_team()
    aws = clients()
    with iam.acting_as(role_of(stack, "SystemMailFunction")):
        denied(lambda: aws["secretsmanager"].get_secret_value(SecretId=stack.team_secret_prefix + team.team))


def test_the_store_function_may_read_a_team_secret_but_not_write_it(stack, new_team):
    team = new_team()
    aws = clients()
    secret = stack.team_secret_prefix + team.team
    with iam.acting_as(role_of(stack, "StoreFunction")):
        aws["secretsmanager"].get_secret_value(SecretId=secret)
        denied(lambda: aws["secretsmanager"].put_secret_value(SecretId=secret, SecretString="{}"))


def test_the_outbox_push_may_not_read_file_records(stack):
    aws, resources = clients(), stack.physical
    with iam.acting_as(role_of(stack, "OutboxPushFunction")):
        denied(lambda: aws["dynamodb"].get_item(TableName=resources["FilesTable"], Key=mail_key()))


def test_the_scheduled_sync_may_not_create_mail(stack):
    aws = clients()
    with iam.acting_as(role_of(stack, "OutboxSyncFunction")):
        denied(lambda: aws["dynamodb"].put_item(TableName=stack.physical["MailTable"], Item=mail_key()))


def test_the_queued_pull_may_not_send_to_the_outbox_dead_letter_queue(stack):
    aws = clients()
    with iam.acting_as(role_of(stack, "QueuedPullFunction")):
        denied(
            lambda: aws["sqs"].send_message(
                QueueUrl=stack.info["environment"]["OUTBOX_DLQ_URL"], MessageBody="{}"
            )
        )


@pytest.mark.parametrize(
    "function_id", ["SystemMailFunction", "SystemMailEventsFunction", "SystemMailQueueFunction"]
)
def test_only_the_cognito_sender_may_decrypt_the_codes_cognito_encrypts(stack, function_id):
    aws, key = clients(), stack.info["environment"]["SYSTEM_MAIL_KEY_ARN"]
    with iam.acting_as(role_of(stack, function_id)):
        denied(lambda: aws["kms"].decrypt(CiphertextBlob=b"not a real ciphertext", KeyId=key))


def test_the_cognito_sender_may_not_write_idempotency_records(stack):
    aws, table = clients(), stack.physical["IdempotencyTable"]
    with iam.acting_as(role_of(stack, "CognitoEmailSenderFunction")):
        denied(lambda: aws["dynamodb"].put_item(TableName=table, Item=mail_key()))


def test_the_pull_may_write_a_rotated_refresh_token_back_into_the_team_secret(stack, new_team):
    team = new_team()
    aws, name = clients(), stack.team_secret_prefix + team.team
    with iam.acting_as(role_of(stack, "PullFunction")):
        value = aws["secretsmanager"].get_secret_value(SecretId=name)["SecretString"]
        aws["secretsmanager"].put_secret_value(SecretId=name, SecretString=value)
    assert json.loads(value)["type"] == "mail"


def test_make_invoke_runs_a_function_under_its_role_from_the_stack_description(stack, tmp_path):
    described, event = tmp_path / "stack.json", tmp_path / "event.json"
    info = json.loads(json.dumps(stack.info))
    info["roles"]["PullDispatchFunction"]["policies"] = []  # a role that allows nothing
    described.write_text(json.dumps(info))
    event.write_text(json.dumps({"source": "schedule"}))
    command = [
        sys.executable,
        "-m",
        "local.invoke",
        "PullDispatchFunction",
        str(event),
        "--stack-json",
        str(described),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    role = stack.physical["PullDispatchFunctionRole"]
    assert f"{role}/PullDispatchFunction is not authorized to perform" in done.stdout


def granted(stack: LocalStack, function_id: str) -> set[tuple[str, str]]:
    """(action, resource) patterns the template's own Policies of a function grant; SAM's
    policies for what Lambda does with the role (event source destinations) are not code's."""
    translated = stack.template.translated()
    policies = translated.resources[f"{function_id}Role"]["Properties"].get("Policies", [])
    documents = translated.resolve(
        [
            policy["PolicyDocument"]
            for policy in policies
            if policy["PolicyName"].startswith(f"{function_id}RolePolicy")
        ]
    )
    return {
        (str(action), str(resource))
        for document in documents
        for statement in iam.statements(document)
        if statement.get("Effect") == "Allow"
        for action in iam.listed(statement.get("Action", []))
        for resource in iam.listed(statement.get("Resource", []))
    }


# Grants a code path of the function needs that no integration test reaches through that function
# (each is reached through another function running the same use case), by function and action.
BROKEN_MARK = "an OAuth2 account marked broken (credentials.access_token; pulls reach it)"
REACHED_OUTSIDE_THE_SUITE = {
    "SendFunction": {
        "dynamodb:DeleteItem": "Powertools deletes the in-progress record when a keyed send raises",
        "sqs:SendMessage": "a mail failed for good by a sync through the API (the stream push often takes it first)",
        "dynamodb:PutItem": BROKEN_MARK,
    },
    "OutboxPushFunction": {
        "dynamodb:GetItem": "an account's sending limit and broken mark (SendFunction reaches it)",
        "dynamodb:PutItem": BROKEN_MARK,
        "dynamodb:UpdateItem": "an account's sending limit",
        "secretsmanager:PutSecretValue": "an OAuth2 refresh token rotated while pushing",
        "sqs:SendMessage": "a pushed mail that failed for good (sync reaches it)",
    },
    "OutboxSyncFunction": {
        "dynamodb:GetItem": "an account's sending limit and broken mark",
        "dynamodb:PutItem": BROKEN_MARK,
        "dynamodb:UpdateItem": "an account's sending limit",
        "s3:GetObject": "the raw message of a queued mail (push reaches it)",
        "secretsmanager:PutSecretValue": "an OAuth2 refresh token rotated while syncing",
        "sqs:SendMessage": "a mail that failed for good during the scheduled sync",
    },
    "QueuedPullFunction": {
        "dynamodb:GetItem": "the broken mark of an OAuth2 account pulled from the queue; the outgoing"
        " mail a bounce names (PullFunction reaches it)",
        "dynamodb:PutItem": "attachments of a queued pull's mail (PullFunction reaches it)",
        "s3:PutObject": "attachments of a queued pull's mail",
        "secretsmanager:PutSecretValue": "an OAuth2 refresh token rotated during a queued pull",
        "dynamodb:UpdateItem": "the team's writer lease, under which a rotated refresh token is written;"
        " a bounce recorded on its outgoing mail",
        "sqs:SendMessage": "an account out of time goes back on the pull queue",
    },
    "PullDispatchFunction": {
        "sqs:SendMessage": "the suite's dispatcher test writes to a stand-in for PullQueue"
    },
    # One process here: the system secret and the templates one system mail function read are in
    # the process-wide cache when the next one runs (whichever runs first); in Lambda each reads them.
    **{
        function_id: {
            "secretsmanager:GetSecretValue": "the system secret, cached by whichever system mail function ran first",
            "s3:GetObject": "templates and raw messages, cached or read by another system mail function",
        }
        for function_id in (
            "SystemMailFunction",
            "SystemMailEventsFunction",
            "SystemMailQueueFunction",
            "CognitoEmailSenderFunction",
        )
    },
}


@pytest.mark.after_the_suite
def test_every_action_a_role_grants_is_used_by_a_code_path_of_its_function(stack, whole_suite):
    """Least privilege: what the whole integration suite's invocations were allowed to call, per
    function, against what each role grants (a grant counts once a call matched it)."""
    if not whole_suite:
        pytest.skip("needs every integration test in this session (run the whole tests/integration)")
    used = iam.usage()

    def was_used(function_id: str, action: str, resource: str) -> bool:
        return action in REACHED_OUTSIDE_THE_SUITE.get(function_id, {}) or any(
            iam.like(call, action, ignore_case=True) and iam.like(arn, resource)
            for call, arn in used.get(function_id, ())
        )

    unused = {
        function_id: sorted(
            grant for grant in granted(stack, function_id) if not was_used(function_id, *grant)
        )
        for function_id in stack.template.functions()
    }
    unused = {function_id: grants for function_id, grants in unused.items() if grants}
    assert unused == {}, f"granted but used by no code path the suite reached: {unused}"
