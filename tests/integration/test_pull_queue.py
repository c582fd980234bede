"""Scheduled pulls at scale: the dispatcher's queue messages, the SQS consumer with partial
batch failures, pull state and status, MailReceived events. Real Dovecot, moto SQS/EventBridge."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from email.message import EmailMessage

from botocore.config import Config
from mailcore.adapters.dynamodb import DynamoMail
from mailcore.adapters.sqs import SqsPullQueue
from mailcore.wiring import pull as pull_wiring

from local.maildir import deliver_files
from tests.integration.conftest import bus_to_queue, call_function, claims, queued_messages
from tests.integration.fault_proxy import closed_port
from tests.integration.test_pull import pull
from tests.stack import replace_in_root, stack_storage
from tests.support import wait_until

STATUS = "/api/core/mail/pull/{account}/status"


def one_message(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = "sender@example.test"
    message["To"] = "box@example.test"
    message["Subject"] = subject
    message.set_content("hello")
    return message.as_bytes()


def stands_in_for_the_pull_queue(stack, function_id: str, url: str, monkeypatch) -> None:
    """The function's role grants PullQueue; this test's queue takes PullQueue's place."""
    runtime_of_function = stack.gateway.runtime(function_id)
    role = runtime_of_function.role
    name = url.rstrip("/").rsplit("/", 1)[-1]
    grant = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sqs:SendMessage",
                "Resource": f"arn:aws:sqs:{role.region}:{role.account_id}:{name}",
            }
        ]
    }
    monkeypatch.setattr(
        runtime_of_function, "role", dataclasses.replace(role, policies=(*role.policies, grant))
    )


def sqs_event(messages: list[dict]) -> dict:
    """The event Lambda's SQS event source hands the function, built from received messages."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:pull",
                "awsRegion": "us-east-1",
            }
            for message in messages
        ]
    }


def status_of(stack, team):
    params = {"account": team.account}
    return call_function(stack, "PullFunction", "GET", STATUS, params=params, caller=claims(team.team))


def test_the_dispatcher_enqueues_one_message_per_account_and_the_consumer_pulls_them(
    stack, new_team, monkeypatch
):
    working, other = new_team(), new_team()
    host_down = new_team(pop3={"host": "127.0.0.1", "port": closed_port(), "security": "none"})
    for team in (working, other):
        deliver_files(stack.mail_servers, team.mailbox.address, [one_message(f"for {team.team}")])
    # The stack's own PullQueue is consumed by its event-source driver, which would pull every
    # other test's mailboxes too: the dispatcher writes to a queue of this test instead.
    sqs = stack.session.client("sqs")
    url = sqs.create_queue(QueueName=f"dispatch-{working.team}")["QueueUrl"]
    replace_in_root(monkeypatch, pull_wiring, queue=SqsPullQueue(url, client=sqs))
    stands_in_for_the_pull_queue(stack, "PullDispatchFunction", url, monkeypatch)
    time.sleep(1.2)  # the list of teams is cached like the secrets

    answer = stack.invoke("PullDispatchFunction", {"source": "schedule"})
    queued = queued_messages(stack, url)
    bodies = [json.loads(message["Body"]) for message in queued]
    assert answer["enqueued"] == len(queued)
    assert len({(b["team"], b["account"]) for b in bodies}) == len(bodies)  # one per account
    mine = {working.team, other.team, host_down.team}
    assert sorted((b["team"], b["account"]) for b in bodies if b["team"] in mine) == sorted(
        (team.team, team.account) for team in (working, other, host_down)
    )

    result = stack.invoke(
        "QueuedPullFunction", sqs_event([m for m, b in zip(queued, bodies, strict=True) if b["team"] in mine])
    )
    assert result == {"batchItemFailures": []}  # a broken account is recorded, not retried
    assert status_of(stack, working)[1]["status"]["fetched"] == 1
    assert status_of(stack, other)[1]["status"]["fetched"] == 1
    status, broken = status_of(stack, host_down)
    assert status == 200
    assert broken["status"]["last_error"] and broken["status"]["fetched"] == 0
    assert broken["status"]["running"] is False and broken["status"]["last_pull_at"]


def test_the_local_stack_drives_the_pull_queue_like_lambdas_event_source_mapping(stack, new_team):
    team = new_team()
    deliver_files(stack.mail_servers, team.mailbox.address, [one_message("through the queue")])
    stack.session.client("sqs").send_message(
        QueueUrl=stack.info["environment"]["PULL_QUEUE_URL"],
        MessageBody=json.dumps({"team": team.team, "account": team.account}),
    )
    wait_until(
        lambda: (stack_storage().pull_state.get(team.team, team.account) or {}).get("fetched") == 1,
        timeout=20,
        interval=0.2,
        failure="the queued pull did not run",
    )
    assert stack.mail_servers.message_count(team.mailbox.address) == 0


def test_a_storage_failure_makes_only_that_message_a_batch_item_failure(stack, new_team, monkeypatch):
    team = new_team()
    deliver_files(stack.mail_servers, team.mailbox.address, [one_message("storage down")])
    # The mail table is out of reach (its endpoint refuses connections); the rest of storage works.
    storage = pull_wiring.root().storage
    unreachable = stack.session.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    mail_down = DynamoMail(stack.info["resources"]["MailTable"], storage.blobs, client=unreachable)
    replace_in_root(monkeypatch, pull_wiring, storage=dataclasses.replace(storage, mail=mail_down))
    messages = [
        {
            "MessageId": str(uuid.uuid4()),
            "ReceiptHandle": "r",
            "Body": json.dumps({"team": team.team, "account": team.account}),
            "MD5OfBody": "",
        },
        {
            "MessageId": str(uuid.uuid4()),
            "ReceiptHandle": "r",
            "Body": json.dumps({"team": "no-such-team", "account": "main"}),
            "MD5OfBody": "",
        },
    ]
    result = stack.invoke("QueuedPullFunction", sqs_event(messages))
    assert result == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    assert stack.mail_servers.message_count(team.mailbox.address) == 1  # nothing deleted, nothing lost


def test_the_pull_status_is_for_members_only(stack, new_team):
    team, stranger = new_team(), new_team()
    status, answer = call_function(
        stack,
        "PullFunction",
        "GET",
        STATUS,
        params={"account": team.account},
        query={"team": team.team},
        caller=claims(stranger.team),
    )
    assert status == 403 and answer["error"]["field"] == "team"


def test_each_stored_mail_is_announced_on_the_bus_without_its_body(stack, new_team):
    team = new_team()
    pattern = {"detail-type": ["MailReceived"], "detail": {"team": [team.team]}}
    queue_url = bus_to_queue(stack, f"received-{team.team}", pattern)
    secret_body = "the body that must stay out of events"
    raws = []
    for number in range(12):  # more than one PutEvents batch
        message = EmailMessage()
        message["Subject"] = f"announced {number}"
        message["From"] = "sender@example.test"
        message.set_content(secret_body)
        raws.append(message.as_bytes())
    deliver_files(stack.mail_servers, team.mailbox.address, raws)

    report = pull(stack, team, account=team.account)[1]["accounts"][0]
    assert report["fetched"] == 12

    delivered = [json.loads(message["Body"]) for message in queued_messages(stack, queue_url)]
    assert sorted(event["detail"]["mail_id"] for event in delivered) == sorted(report["mail_ids"])
    assert {event["source"] for event in delivered} == {"mail-service"}
    assert all(
        event["detail"]
        == {
            "team": team.team,
            "account": team.account,
            "mail_id": event["detail"]["mail_id"],
            "auto_reply": False,
        }
        for event in delivered
    )
    assert secret_body not in json.dumps(delivered)
