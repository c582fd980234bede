"""Mail whose body is over DynamoDB's share of the item (storage keeps it in S3, under bodies/):
sent, queued, pulled and read back through the API, each function under its own role."""

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.conftest import call_function, claims, wait_for_messages
from tests.integration.test_outbox import call, queue, stored, stream_event, sync
from tests.integration.test_pull import pull
from tests.integration.test_send import send

# Over the 200,000 bytes a body may take inside the item (adapters/dynamodb.BODY_INLINE_LIMIT).
LARGE_TEXT = "A long report line, one of very many.\n" * 8_000


def store_call(stack, team, method: str, path: str, mail_id: str) -> tuple[int, Any]:
    """The StoreFunction's answer to a team member's request on one mail."""
    return call_function(
        stack, "StoreFunction", method, path, params={"mail_id": mail_id}, caller=claims(team.team)
    )


def read_mail(stack, team, mail_id: str) -> tuple[int, Any]:
    return store_call(stack, team, "GET", "/api/core/mail/{mail_id}", mail_id)


def test_a_sent_mail_with_a_large_body_is_stored_and_read_back(stack, new_team):
    team = new_team()
    status, answer = send(
        stack, team, {"to": team.mailbox.address, "subject": "Big", "body_text": LARGE_TEXT}
    )
    assert status == 200, answer
    status, read = read_mail(stack, team, answer["mail"]["id"])
    assert status == 200, read
    assert read["mail"]["body_text"] == LARGE_TEXT


def test_a_queued_mail_with_a_large_body_is_pushed(stack, new_team):
    team = new_team()
    mail = queue(stack, team, subject="Big, pushed", body_text=LARGE_TEXT)
    answer = stack.invoke("OutboxPushFunction", stream_event(stack, [mail["id"]]))
    assert answer == {"batchItemFailures": []}
    wait_for_messages(stack, team.mailbox.address, 1)
    assert stored(mail["id"]).status == "sent"


def test_a_queued_mail_with_a_large_body_is_sent_by_the_sync(stack, new_team):
    team = new_team()
    mail = queue(stack, team, subject="Big, synced", body_text=LARGE_TEXT)
    answer = sync(stack, team)
    assert [sent["id"] for sent in answer["sent"]] + answer["skipped"] == [mail["id"]], answer
    wait_for_messages(stack, team.mailbox.address, 1)


def test_a_scheduled_mail_with_a_large_body_is_cancelled_and_answered_with_its_body(stack, new_team):
    team = new_team()
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    mail = queue(stack, team, subject="Big, cancelled", body_text=LARGE_TEXT, send_at=later)
    status, answer = call(
        stack, "POST", "/api/core/mail/{mail_id}/cancel", team=team, params={"mail_id": mail["id"]}
    )
    assert status == 200, answer
    assert answer["mail"]["status"] == "cancelled" and answer["mail"]["body_text"] == LARGE_TEXT


def sent_to_itself_and_pulled(stack, team, subject: str) -> str:
    """Sends LARGE_TEXT to the team's own mailbox and pulls it: the id of the received mail."""
    status, answer = send(
        stack, team, {"to": team.mailbox.address, "subject": subject, "body_text": LARGE_TEXT}
    )
    assert status == 200, answer
    wait_for_messages(stack, team.mailbox.address, 1)
    status, pulled = pull(stack, team, account=team.account)
    assert status == 200, pulled
    [report] = pulled["accounts"]
    assert report["error"] is None and len(report["mail_ids"]) == 1, report
    return report["mail_ids"][0]


def test_a_pulled_mail_with_a_large_body_is_stored_and_read_back(stack, new_team):
    team = new_team()
    status, read = read_mail(stack, team, sent_to_itself_and_pulled(stack, team, "Big, pulled"))
    assert status == 200, read
    assert read["mail"]["body_text"].replace("\r\n", "\n") == LARGE_TEXT


def test_a_received_mail_with_a_large_body_is_parsed_again(stack, new_team):
    team = new_team()
    mail_id = sent_to_itself_and_pulled(stack, team, "Big, again")
    status, parsed = store_call(stack, team, "POST", "/api/core/mail/{mail_id}/parse", mail_id)
    assert status == 200, parsed
    assert read_mail(stack, team, mail_id)[1]["mail"]["body_text"].replace("\r\n", "\n") == LARGE_TEXT
