"""System mail through its functions, one per trigger (direct, EventBridge, SQS, Cognito), against the
real Postfix/Dovecot (read back over POP3) and moto (storage, KMS, Secrets Manager, S3)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from mailcore import wiring
from mailcore.services.system import SYSTEM_TEAM
from mailcore.templates import PLACEHOLDER

from tests.integration.conftest import postfix_holds_no_mail, read_mailbox, wait_for_messages
from tests.stack import stack_storage

FUNCTION = "SystemMailFunction"  # direct invocation
EVENTS_FUNCTION = "SystemMailEventsFunction"
QUEUE_FUNCTION = "SystemMailQueueFunction"
COGNITO_FUNCTION = "CognitoEmailSenderFunction"


def request(to: str, **variables: Any) -> dict[str, Any]:
    return {
        "template": "password_recovery",
        "to": to,
        "variables": {"name": "Ann", "reset_url": f"https://app.example.test/reset/{uuid.uuid4().hex}"}
        | variables,
    }


def eventbridge_event(detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "SystemMailRequested",
        "source": "my.application",
        "account": "123456789012",
        "time": "2026-11-24T12:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }


def sqs_event(*bodies: str) -> dict[str, Any]:
    batch = uuid.uuid4().hex[:8]
    return {
        "Records": [
            {
                "messageId": f"message-{batch}-{number}",
                "receiptHandle": f"handle-{number}",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1700000000000",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1700000000000",
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:SystemMailQueue",
                "awsRegion": "us-east-1",
            }
            for number, body in enumerate(bodies)
        ]
    }


def cognito_event(trigger: str, email: str, encrypted_code: str) -> dict[str, Any]:
    return {
        "version": "1",
        "triggerSource": trigger,
        "region": "us-east-1",
        "userPoolId": "us-east-1_example",
        "userName": "4f1c-user",
        "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": "client"},
        "request": {
            "type": "customEmailSenderRequestV1",
            "code": encrypted_code,
            "clientMetadata": {},
            "userAttributes": {"email": email, "name": "Cora", "email_verified": "true"},
        },
        "response": {},
    }


def encrypt_like_cognito(stack, code: str) -> str:
    """Encrypts as Cognito does: AWS Encryption SDK, under the template's KMS key (in moto)."""
    import aws_encryption_sdk
    from aws_encryption_sdk.identifiers import CommitmentPolicy

    key_arn = stack.template.attribute("SystemMailKey", "Arn")
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT
    )
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[key_arn])
    ciphertext, _ = client.encrypt(source=code.encode(), key_provider=provider)
    return base64.b64encode(ciphertext).decode()


def cognito_sends_code(stack, trigger: str, email: str, code: str) -> None:
    """Invokes the custom email sender as Cognito does for `trigger`, with `code` encrypted."""
    stack.invoke(COGNITO_FUNCTION, cognito_event(trigger, email, encrypt_like_cognito(stack, code)))


# A secret must not be stored in these forms either (Powertools hashes with md5 by default).
ENCODINGS = (
    lambda value: hashlib.sha256(value.encode()).hexdigest(),
    lambda value: hashlib.md5(value.encode()).hexdigest(),
    lambda value: base64.b64encode(value.encode()).decode(),
)


def only_message(stack, mailbox):
    wait_for_messages(stack, mailbox.address, 1)
    (message,) = read_mailbox(stack, mailbox)
    return message


def bodies(message) -> tuple[str, str]:
    return (
        message.get_body(("plain",)).get_content(),
        message.get_body(("html",)).get_content(),
    )


def test_an_eventbridge_request_sends_the_rendered_password_recovery_mail(stack, new_team):
    team = new_team()
    detail = request(team.mailbox.address, name="Ann <Admin>")
    answer = stack.invoke(EVENTS_FUNCTION, eventbridge_event(detail))
    assert answer == {"status": "sent"}
    message = only_message(stack, team.mailbox)
    text, html = bodies(message)
    assert message["Subject"] == "Reset your password"
    assert message["From"].addresses[0].addr_spec == "noreply@example.test"
    assert "Hello Ann <Admin>," in text and detail["variables"]["reset_url"] in text
    assert "Hello Ann &lt;Admin&gt;," in html  # autoescaped in HTML only
    assert f'href="{detail["variables"]["reset_url"]}"' in html


def test_system_mail_says_it_is_auto_generated_so_auto_responders_stay_quiet(stack, new_team):
    team = new_team()
    assert stack.invoke(EVENTS_FUNCTION, eventbridge_event(request(team.mailbox.address))) == {
        "status": "sent"
    }
    assert only_message(stack, team.mailbox)["Auto-Submitted"] == "auto-generated"


def test_queued_requests_report_only_the_failed_records(stack, new_team):
    team = new_team()
    good = json.dumps(request(team.mailbox.address))
    missing_variable = json.dumps({"template": "password_recovery", "to": team.mailbox.address})
    event = sqs_event(good, missing_variable)
    answer = stack.invoke(QUEUE_FUNCTION, event)
    assert answer == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
    assert only_message(stack, team.mailbox)["Subject"] == "Reset your password"


def test_a_direct_invocation_answers_the_stored_mail(stack, new_team):
    team = new_team()
    answer = stack.invoke(
        FUNCTION,
        {
            "template": "notification",
            "to": team.mailbox.address,
            "variables": {"title": "Backup done", "message": "All 3 volumes are saved."},
        },
    )
    assert answer["status"] == "sent"
    stored = stack_storage().mail.get(answer["mail_id"])
    assert stored is not None and stored.team == SYSTEM_TEAM and stored.status == "sent"
    assert stored.subject == "Backup done"
    assert only_message(stack, team.mailbox)["Subject"] == "Backup done"


def test_the_cognito_custom_email_sender_mails_the_decrypted_code(stack, new_team):
    team = new_team()
    cognito_sends_code(stack, "CustomEmailSender_ForgotPassword", team.mailbox.address, "482913")
    message = only_message(stack, team.mailbox)
    text, _ = bodies(message)
    assert message["Subject"] == "Reset your password"
    assert "Hello Cora," in text and "Your code to choose a new password is: 482913" in text


def test_cognito_sign_up_sends_the_verification_template(stack, new_team):
    team = new_team()
    cognito_sends_code(stack, "CustomEmailSender_SignUp", team.mailbox.address, "551177")
    message = only_message(stack, team.mailbox)
    assert message["Subject"] == "Your verification code"
    assert "551177" in bodies(message)[0]


def test_a_missing_variable_is_named_and_nothing_is_sent(stack, new_team):
    team = new_team()
    answer = stack.invoke(
        FUNCTION, {"template": "notification", "to": team.mailbox.address, "variables": {"title": "x"}}
    )
    assert answer["status"] == "invalid"
    assert "'message' is undefined" in answer["error"] and answer["field"] == "variables"
    postfix_holds_no_mail(stack)
    assert stack.mail_servers.message_count(team.mailbox.address) == 0


def test_an_unknown_template_is_an_error_naming_the_known_ones(stack, new_team):
    team = new_team()
    answer = stack.invoke(FUNCTION, {"template": "nope", "to": team.mailbox.address})
    assert answer["status"] == "invalid" and answer["field"] == "template"
    assert "no mail template 'nope'" in answer["error"] and "password_recovery" in answer["error"]


def test_an_eventbridge_request_that_cannot_be_sent_raises_so_lambda_retries_it(stack):
    with pytest.raises(Exception, match="undefined"):
        stack.invoke(
            EVENTS_FUNCTION, eventbridge_event({"template": "password_recovery", "to": "x@example.test"})
        )


def test_a_recipient_gets_at_most_the_limit_of_one_template_an_hour(stack, new_team):
    team = new_team()
    limit = int(stack.info["environment"]["SYSTEM_MAIL_RECIPIENT_LIMIT"])
    outcomes = [stack.invoke(FUNCTION, request(team.mailbox.address))["status"] for _ in range(limit + 2)]
    assert outcomes == ["sent"] * limit + ["rate_limited"] * 2
    other_template = {
        "template": "notification",
        "to": team.mailbox.address,
        "variables": {"title": "t", "message": "m"},
    }
    assert stack.invoke(FUNCTION, other_template)["status"] == "sent"
    wait_for_messages(stack, team.mailbox.address, limit + 1)
    postfix_holds_no_mail(stack)
    assert stack.mail_servers.message_count(team.mailbox.address) == limit + 1


@pytest.fixture
def function_log():
    """What the functions' Powertools Logger writes (JSON lines), from here on."""
    service = logging.getLogger(os.environ["POWERTOOLS_SERVICE_NAME"])
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(LambdaPowertoolsFormatter())
    service.addHandler(handler)
    yield written
    service.removeHandler(handler)


def test_secrets_reach_the_recipient_but_never_the_log_the_item_or_the_raw_object(
    stack, new_team, function_log
):
    team = new_team()
    detail = request(team.mailbox.address)
    reset_url = detail["variables"]["reset_url"]
    code = "K7Q9X2M4"
    answer = stack.invoke(FUNCTION, detail)
    cognito_sends_code(stack, "CustomEmailSender_ForgotPassword", team.mailbox.address, code)

    stored = stack_storage().mail.get(answer["mail_id"])
    assert stored is not None
    raw = stack_storage().blobs.get(stored.raw_key).decode()
    assert reset_url not in stored.model_dump_json() and reset_url not in raw
    assert PLACEHOLDER in stored.body_text and PLACEHOLDER in stored.body_html
    system_items = stack.session.client("dynamodb").scan(
        TableName=stack.physical["MailTable"],
        FilterExpression="team = :system",
        ExpressionAttributeValues={":system": {"S": SYSTEM_TEAM}},
    )["Items"]
    assert any(team.mailbox.address in json.dumps(item) for item in system_items)
    assert not [item for item in system_items if code in json.dumps(item)]
    # Nor encoded: each mail's id and request_digest come from its delivery and template only.
    assert all(item.get("request_digest") for item in system_items if item["id"]["S"] == stored.id)
    encoded = [encoding(secret) for secret in (code, reset_url) for encoding in ENCODINGS]
    assert not [item for item in system_items if any(form in json.dumps(item) for form in encoded)]
    s3 = stack.session.client("s3")
    bucket = stack.physical["MailBucket"]
    raw_objects = s3.list_objects_v2(Bucket=bucket, Prefix=f"raw/{SYSTEM_TEAM}/")["Contents"]
    assert not [
        entry["Key"]
        for entry in raw_objects
        if code.encode() in s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
    ]
    logs = function_log.getvalue()
    assert logs.count('"template":"password_recovery"') == 2  # the function did log these two mails
    assert reset_url not in logs and code not in logs
    wait_for_messages(stack, team.mailbox.address, 2)
    delivered = [bodies(message)[0] for message in read_mailbox(stack, team.mailbox)]
    assert any(reset_url in text for text in delivered) and any(code in text for text in delivered)


def test_a_deployment_can_store_the_secrets_when_it_says_so(stack, new_team, monkeypatch):
    team = new_team()
    monkeypatch.setenv("STORE_SYSTEM_MAIL_SECRETS", "true")
    wiring.reset()
    try:
        detail = request(team.mailbox.address)
        answer = stack.invoke(FUNCTION, detail)
        stored = stack_storage().mail.get(answer["mail_id"])
        assert stored is not None and detail["variables"]["reset_url"] in stored.body_text
        # ... and in the raw object, which shows it as sent (7bit: a search for it can find it)
        assert detail["variables"]["reset_url"].encode() in stack_storage().blobs.get(stored.raw_key)
    finally:
        monkeypatch.undo()
        wiring.reset()


def test_a_template_added_under_the_s3_prefix_is_used(stack, new_team):
    team = new_team()
    prefix = stack.info["environment"]["SYSTEM_TEMPLATES_PREFIX"]
    blobs = stack_storage().blobs
    blobs.put(f"{prefix}welcome/subject.txt", b"Welcome, {{ name }}", "text/plain")
    blobs.put(f"{prefix}welcome/text.txt", b"Glad you are here, {{ name }}.", "text/plain")
    answer = stack.invoke(
        FUNCTION, {"template": "welcome", "to": team.mailbox.address, "variables": {"name": "Dia"}}
    )
    assert answer["status"] == "sent"
    message = only_message(stack, team.mailbox)
    assert message["Subject"] == "Welcome, Dia"
    assert message.get_body(("plain",)).get_content().strip() == "Glad you are here, Dia."


def test_a_changed_system_secret_is_used_within_its_cache_time(stack, new_team):
    team = new_team()
    name = stack.info["environment"]["SYSTEM_MAIL_SECRET_NAME"]
    client = stack.session.client("secretsmanager")
    original = json.loads(client.get_secret_value(SecretId=name)["SecretString"])
    max_age = float(stack.info["environment"]["POWERTOOLS_PARAMETERS_MAX_AGE"])
    mail = {
        "template": "notification",
        "to": team.mailbox.address,
        "variables": {"title": "t", "message": "m"},
    }
    try:
        assert stack.invoke(FUNCTION, mail)["status"] == "sent"
        stack.put_secret(name, original | {"from_name": "Renamed Sender"})
        time.sleep(max_age + 0.2)
        assert stack.invoke(FUNCTION, mail)["status"] == "sent"
    finally:
        stack.put_secret(name, original)
    wait_for_messages(stack, team.mailbox.address, 2)
    senders = sorted(
        message["From"].addresses[0].display_name for message in read_mailbox(stack, team.mailbox)
    )
    assert senders == ["Mail service (local)", "Renamed Sender"]


def test_make_invoke_with_an_eventbridge_event_sends_through_the_local_postfix(stack, new_team, tmp_path):
    team = new_team()
    described, event_file = tmp_path / "stack.json", tmp_path / "event.json"
    described.write_text(json.dumps(stack.info))
    event_file.write_text(json.dumps(eventbridge_event(request(team.mailbox.address, name="Invoked"))))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "local.invoke",
            EVENTS_FUNCTION,
            str(event_file),
            "--stack-json",
            str(described),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # stdout: the function's log lines, then its result
    assert done.stdout.rstrip().endswith('{\n  "status": "sent"\n}'), done.stdout
    assert "Hello Invoked," in bodies(only_message(stack, team.mailbox))[0]


def test_an_event_put_on_the_mail_bus_reaches_the_function_through_its_rule(stack, new_team):
    team = new_team()
    detail = request(team.mailbox.address, name="Bus")
    stack.session.client("events").put_events(
        Entries=[
            {
                "EventBusName": stack.physical["MailEventBus"],
                "Source": "my.application",
                "DetailType": "SystemMailRequested",
                "Detail": json.dumps(detail),
            }
        ]
    )
    message = only_message(stack, team.mailbox)
    assert "Hello Bus," in bodies(message)[0] and detail["variables"]["reset_url"] in bodies(message)[0]


def test_a_message_sent_to_the_system_mail_queue_is_sent(stack, new_team):
    team = new_team()
    sqs = stack.session.client("sqs")
    queue_url = sqs.get_queue_url(QueueName=stack.physical["SystemMailQueue"])["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(request(team.mailbox.address, name="Queue")))
    assert "Hello Queue," in bodies(only_message(stack, team.mailbox))[0]


def test_a_queue_message_delivered_twice_sends_one_mail(stack, new_team):
    team = new_team()
    event = sqs_event(json.dumps(request(team.mailbox.address)))
    assert stack.invoke(QUEUE_FUNCTION, event) == {"batchItemFailures": []}
    assert stack.invoke(QUEUE_FUNCTION, event) == {"batchItemFailures": []}  # SQS delivers at least once
    wait_for_messages(stack, team.mailbox.address, 1)
    postfix_holds_no_mail(stack)
    assert stack.mail_servers.message_count(team.mailbox.address) == 1


def test_an_event_delivered_twice_sends_one_mail(stack, new_team):
    team = new_team()
    event = eventbridge_event(request(team.mailbox.address))
    assert stack.invoke(EVENTS_FUNCTION, event) == {"status": "sent"}
    assert stack.invoke(EVENTS_FUNCTION, event) == {"status": "sent"}  # EventBridge delivers at least once
    wait_for_messages(stack, team.mailbox.address, 1)
    postfix_holds_no_mail(stack)
    assert stack.mail_servers.message_count(team.mailbox.address) == 1
