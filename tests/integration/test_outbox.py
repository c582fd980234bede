"""The outbox against the real Postfix and moto: queue, push (stream events), sync, retries,
refusals, the unknown fate after DATA, idempotent sends, events and the dead-letter queue."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from typing import Any

from tests.integration.conftest import (
    call_function,
    claims,
    drain,
    postfix_holds_no_mail,
    queued_messages,
    read_mailbox,
    wait_for_messages,
)
from tests.integration.fault_proxy import DATA_END, Fault, FaultProxy
from tests.stack import stack_storage
from tests.support import wait_until

UNKNOWN_USER = "nobody-here@example.test"


# ----------------------------------------------------------------------------- helpers


def call(stack, method: str, resource: str, *, team, **request: Any) -> tuple[int, Any]:
    return call_function(stack, "SendFunction", method, resource, caller=claims(team.team), **request)


def queue(stack, team, **fields: Any) -> dict[str, Any]:
    body = {"account": team.account, "to": team.mailbox.address, "body_text": "queued", **fields}
    status, answer = call(stack, "POST", "/api/core/mail", team=team, body=body)
    assert status == 202, answer
    return answer["mail"]


def sync(stack, team) -> dict[str, Any]:
    params = {"account": team.account}
    status, answer = call(stack, "POST", "/api/core/mail/sync/{account}", team=team, params=params)
    assert status == 200, answer
    return answer


def stream_event(stack, mail_ids: list[str], event_name: str = "INSERT") -> dict[str, Any]:
    """The event Lambda's DynamoDB stream mapping hands the function, built from the items."""
    client = stack_storage().mail.client  # type: ignore[attr-defined]
    table = stack.info["resources"]["MailTable"]
    records = []
    for number, mail_id in enumerate(mail_ids):
        item = client.get_item(TableName=table, Key={"id": {"S": mail_id}}, ConsistentRead=True)["Item"]
        records.append(
            {
                "eventID": uuid.uuid4().hex,
                "eventName": event_name,
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "Keys": {"id": item["id"]},
                    "NewImage": item,
                    "SequenceNumber": str(1000 + number),
                    "SizeBytes": 100,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
                "eventSourceARN": f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/x",
            }
        )
    return {"Records": records}


def stored(mail_id: str):
    return stack_storage().mail.get(mail_id)


def reaching(mail_id: str, *statuses: str, timeout: float = 20.0):
    """The mail once it has one of `statuses` (push, a sync or the schedule may be the run that got it there)."""
    return wait_until(
        lambda: (mail := stored(mail_id)).status in statuses and mail,
        timeout=timeout,
        interval=0.1,
        failure=lambda: f"mail {mail_id} still {stored(mail_id).status}",
    )


def settled(mail_id: str, timeout: float = 20.0):
    """The mail once a run finished with it (final, or deferred): the local stack's stream driver pushes queued
    mail by itself, so a test's own sync may find it already taken (it is then `skipped`)."""
    return reaching(mail_id, "sent", "failed", "unknown", "deferred", timeout=timeout)


def minimal_item(stack, team, *, status: str, subject: str, body_text: str, **strings: str) -> str:
    """Writes the README's minimal outgoing item straight into the table, as another service
    would, to the team's own mailbox (with more string attributes); answers its id."""
    mail_id = uuid.uuid4().hex
    created = "2026-11-24T12:00:00+00:00"
    item = {
        "id": {"S": mail_id},
        "team": {"S": team.team},
        "account": {"S": team.account},
        "direction": {"S": "out"},
        "status": {"S": status},
        "outbox": {"S": f"{team.team}#{team.account}"},
        "created_at": {"S": created},
        "created_key": {"S": f"{created}#{mail_id}"},
        "to": {"L": [{"S": team.mailbox.address}]},
        "subject": {"S": subject},
        "body_text": {"S": body_text},
    } | {name: {"S": value} for name, value in strings.items()}
    client = stack_storage().mail.client  # type: ignore[attr-defined]
    client.put_item(TableName=stack.info["resources"]["MailTable"], Item=item)
    return mail_id


def orphan(stack, team, *, lease_until: str, subject: str = "orphan") -> str:
    """A minimal item that a sender claimed and never finished: `sending`, so the stream never
    invokes push for it; only a sync or the schedule takes it over, after its lease."""
    return minimal_item(
        stack,
        team,
        status="sending",
        subject=subject,
        body_text="claimed, never sent",
        lease_owner="a-sender-that-died",
        lease_until=lease_until,
    )


def proxied_team(new_team, stack, proxy: FaultProxy):
    return new_team(smtp={"host": "127.0.0.1", "port": proxy.port, "security": "none"})


def proxy_to_postfix(stack, *faults: Fault) -> FaultProxy:
    return FaultProxy(("127.0.0.1", stack.mail_servers.ports.smtp), *faults)


def dead_letters_of(stack, mail_id: str) -> list[dict[str, Any]]:
    """The mail's letters on the outbox's dead-letter queue now (the others are taken off too)."""
    url = stack.info["environment"]["OUTBOX_DLQ_URL"]
    bodies = [json.loads(message["Body"]) for message in queued_messages(stack, url)]
    return [body for body in bodies if body.get("mail_id") == mail_id]


_BUS_EVENTS: dict[str, list[dict[str, Any]]] = {}  # what each test's bus queue delivered so far


def completion_of(stack, bus_queue: str, mail_id: str) -> dict[str, Any]:
    """The mail's completion event (the queue gets every team's: the others are kept for a later
    call). Once it is on the bus, the run that finished the mail has recorded its outcome, its
    dead letter included (Completions.record puts the letter before it queues the event)."""
    seen = _BUS_EVENTS.setdefault(bus_queue, [])

    def arrived() -> dict[str, Any] | None:
        if (found := next((event for event in seen if event["detail"]["mail_id"] == mail_id), None)) is None:
            seen.extend(drain(stack, bus_queue, 1, timeout=1))
        return found

    return wait_until(arrived, timeout=20, interval=0, failure=lambda: f"events seen: {seen}")


# ----------------------------------------------------------------------------- queue + push + sync


def test_a_queued_mail_is_stored_with_its_raw_message_from_message_id_and_date(stack, new_team):
    team = new_team()
    mail = queue(stack, team, subject="Later")
    assert mail["status"] == "queued"
    item = stored(mail["id"])
    assert item.message_id and item.date and item.from_ == f"Demo Team <{team.mailbox.address}>"
    assert item.message_id.encode() in stack_storage().blobs.get(item.raw_key)


def test_a_queued_mail_with_a_bad_address_is_refused_naming_the_field(stack, new_team):
    team = new_team()
    body = {"account": team.account, "to": "not an address", "body_text": "x"}
    status, answer = call(stack, "POST", "/api/core/mail", team=team, body=body)
    assert status == 400 and answer["error"]["field"] == "to"


def test_push_sends_a_queued_mail_from_its_stream_record(stack, new_team):
    team = new_team()
    mail = queue(stack, team, subject="Pushed")
    answer = stack.invoke("OutboxPushFunction", stream_event(stack, [mail["id"]]))
    assert answer == {"batchItemFailures": []}
    wait_for_messages(stack, team.mailbox.address, 1)
    assert stored(mail["id"]).status == "sent"
    assert read_mailbox(stack, team.mailbox)[0]["Subject"] == "Pushed"


def test_sync_sends_everything_queued_for_the_account_and_says_what(stack, new_team):
    team = new_team()
    ids = {queue(stack, team, subject=f"s{n}")["id"] for n in range(3)}
    answer = sync(stack, team)
    assert {mail["id"] for mail in answer["sent"]} | set(answer["skipped"]) <= ids
    assert answer["failed"] == [] and all(mail["reply"].startswith("250") for mail in answer["sent"])
    assert {settled(mail_id).status for mail_id in ids} == {"sent"}
    wait_for_messages(stack, team.mailbox.address, 3)
    assert sync(stack, team)["sent"] == []  # nothing left in the outbox


def test_sync_answers_what_it_sent(stack, new_team):
    team = new_team()
    mail_id = orphan(stack, team, lease_until="2026-01-01T00:00:00+00:00")
    answer = sync(stack, team)
    assert [mail["id"] for mail in answer["sent"]] == [mail_id]
    assert answer["sent"][0]["reply"].startswith("250") and answer["sent"][0]["attempts"] == 1


def test_a_minimal_item_another_service_writes_is_sent(stack, new_team):
    """The README's minimal item: the service builds the message (From, Message-ID, Date)."""
    team = new_team()
    mail_id = minimal_item(
        stack,
        team,
        status="queued",
        subject="From another service",
        body_text="written straight into the table",
    )
    assert stack.invoke("OutboxPushFunction", stream_event(stack, [mail_id])) == {"batchItemFailures": []}
    wait_for_messages(stack, team.mailbox.address, 1)
    (message,) = read_mailbox(stack, team.mailbox)
    item = stored(mail_id)
    assert item.status == "sent" and message["Message-ID"] == item.message_id
    assert message["From"] == f"Demo Team <{team.mailbox.address}>"


def test_push_and_sync_racing_for_the_same_50_mails_deliver_each_exactly_once(stack, new_team):
    team = new_team()
    ids = [queue(stack, team, subject=f"race {n}")["id"] for n in range(50)]
    pushes = [
        stream_event(stack, ids),
        stream_event(stack, ids[::-1]),
        stream_event(stack, ids[25:] + ids[:25]),
    ]
    errors: list[BaseException] = []

    def run(action) -> None:
        try:
            action()
        except BaseException as error:
            errors.append(error)

    actions = [lambda event=event: stack.invoke("OutboxPushFunction", event) for event in pushes]
    actions += [lambda: sync(stack, team) for _ in range(3)]
    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    wait_for_messages(stack, team.mailbox.address, 50)
    postfix_holds_no_mail(stack)  # a duplicate it had taken would be in the mailbox now
    subjects = Counter(str(message["Subject"]) for message in read_mailbox(stack, team.mailbox))
    delivered = len(subjects)
    duplicated = sum(count - 1 for count in subjects.values())
    lost = 50 - delivered
    print(f"race: queued 50, delivered {delivered}, duplicated {duplicated}, lost {lost}")
    assert (delivered, duplicated, lost) == (50, 0, 0)
    assert {stored(mail_id).status for mail_id in ids} == {"sent"}


# ----------------------------------------------------------------------------- SMTP outcomes


def test_a_server_answering_451_twice_then_accepting_gets_the_mail_once_after_retries(stack, new_team):
    with proxy_to_postfix(
        stack, Fault("RCPT", "reply", times=2, reply=b"451 4.7.1 Try again later\r\n")
    ) as proxy:
        team = proxied_team(new_team, stack, proxy)
        mail = queue(stack, team, subject="Third time")
        sync(stack, team)
        item = settled(mail["id"])
    assert item.status == "sent" and item.attempts == 3
    wait_for_messages(stack, team.mailbox.address, 1)
    postfix_holds_no_mail(stack)
    print(
        "451 twice: queued 1, delivered 1, duplicated",
        stack.mail_servers.message_count(team.mailbox.address) - 1,
    )
    assert stack.mail_servers.message_count(team.mailbox.address) == 1


def test_a_mail_still_refused_at_its_maximum_age_fails_and_lands_on_the_dead_letter_queue(
    stack, new_team, bus_queue
):
    with proxy_to_postfix(
        stack, Fault("RCPT", "reply", times=10, reply=b"451 4.7.1 Try again later\r\n")
    ) as proxy:
        team = proxied_team(new_team, stack, proxy)
        # A maximum age shorter than the first deferral (1 minute): no later attempt is allowed.
        mail = queue(stack, team, retry_max_age_hours=0.01)
        sync(stack, team)
        item = settled(mail["id"])
    assert item.status == "failed" and item.attempts == 3 and "451" in item.reply
    assert completion_of(stack, bus_queue, mail["id"])["detail-type"] == "MailFailed"
    (letter,) = dead_letters_of(stack, mail["id"])
    assert letter["attempts"] == 3 and letter["team"] == team.team
    assert stack.mail_servers.message_count(team.mailbox.address) == 0


def test_a_refused_recipient_fails_at_once_with_the_servers_reply(stack, new_team, bus_queue):
    team = new_team()
    mail = queue(stack, team, to=UNKNOWN_USER)
    sync(stack, team)
    item = settled(mail["id"])
    assert item.status == "failed" and item.attempts == 1
    assert item.reply.startswith("550") and "5.1.1" in item.reply
    assert completion_of(stack, bus_queue, mail["id"])["detail-type"] == "MailFailed"
    assert dead_letters_of(stack, mail["id"]) == []  # permanent: no retries, nothing to redrive


def test_relaying_to_another_domain_without_login_is_refused_at_once(stack, new_team):
    team = new_team(mail_password="")
    mail = queue(stack, team, to="someone@elsewhere.test")
    sync(stack, team)
    item = settled(mail["id"])
    assert item.status == "failed" and item.attempts == 1 and item.reply.startswith("554")


def test_a_partly_refused_mail_is_sent_and_names_the_refused_recipient(stack, new_team):
    team = new_team()
    mail = queue(stack, team, to=[team.mailbox.address, UNKNOWN_USER])
    sync(stack, team)
    item = settled(mail["id"])
    assert item.status == "sent" and list(item.refused) == [UNKNOWN_USER]
    assert item.refused[UNKNOWN_USER].startswith("550")
    wait_for_messages(stack, team.mailbox.address, 1)


def test_a_connection_dropped_after_the_data_leaves_the_mail_unknown_and_never_resends_it(stack, new_team):
    with proxy_to_postfix(stack, Fault(DATA_END, "hang_up")) as proxy:
        team = proxied_team(new_team, stack, proxy)
        mail = queue(stack, team, subject="Did it arrive?")
        sync(stack, team)
        item = settled(mail["id"])
        assert sync(stack, team) == {
            "sent": [],
            "failed": [],
            "unknown": [],
            "deferred": [],
            "skipped": [],
            "errors": {},
            "released": [],
        }
    assert item.status == "unknown" and item.attempts == 1 and "may have been delivered" in item.error
    wait_for_messages(stack, team.mailbox.address, 1)  # Postfix had the whole message: it delivered
    postfix_holds_no_mail(stack)
    assert stack.mail_servers.message_count(team.mailbox.address) == 1


# ----------------------------------------------------------------------------- replies


def test_a_reply_threads_to_the_stored_mail_and_gets_re_once(stack, new_team):
    team = new_team()
    first = queue(stack, team, subject="Offer")
    reply = queue(stack, team, reply_to_mail=first["id"])
    again = queue(stack, team, reply_to_mail=reply["id"])
    sync(stack, team)
    assert (reply["subject"], again["subject"]) == ("Re: Offer", "Re: Offer")
    wait_for_messages(stack, team.mailbox.address, 3)
    by_id = {message["Message-ID"]: message for message in read_mailbox(stack, team.mailbox)}
    last = by_id[stored(again["id"]).message_id]
    assert last["In-Reply-To"] == reply["message_id"]
    assert last["References"].split() == [first["message_id"], reply["message_id"]]


def test_a_reply_to_a_mail_of_another_team_is_refused_naming_the_field(stack, new_team):
    mine, theirs = new_team(), new_team()
    other = queue(stack, theirs)
    body = {
        "account": mine.account,
        "to": mine.mailbox.address,
        "body_text": "x",
        "reply_to_mail": other["id"],
    }
    status, answer = call(stack, "POST", "/api/core/mail", team=mine, body=body)
    assert status == 400 and answer["error"]["field"] == "reply_to_mail"


# ----------------------------------------------------------------------------- direct send


def send_with_key(stack, team, key: str, body: dict[str, Any]):
    return call(
        stack,
        "POST",
        "/api/core/mail/send/{account}",
        team=team,
        body=body,
        params={"account": team.account},
        headers={"Idempotency-Key": key},
    )


def test_a_replayed_idempotency_key_returns_the_first_answer_and_sends_nothing_new(stack, new_team):
    team = new_team()
    body = {"to": team.mailbox.address, "subject": "Once", "body_text": "x"}
    first = send_with_key(stack, team, "order-4711", body)
    second = send_with_key(stack, team, "order-4711", body)
    assert first[0] == 200 and second == first
    wait_for_messages(stack, team.mailbox.address, 1)
    postfix_holds_no_mail(stack)
    assert stack.mail_servers.message_count(team.mailbox.address) == 1


def test_an_idempotency_key_reused_with_another_body_is_refused(stack, new_team):
    team = new_team()
    send_with_key(stack, team, "key-1", {"to": team.mailbox.address, "body_text": "a"})
    status, answer = send_with_key(stack, team, "key-1", {"to": team.mailbox.address, "body_text": "b"})
    assert status == 422 and answer["error"]["field"] == "Idempotency-Key"


def test_the_same_idempotency_key_of_two_teams_sends_both(stack, new_team):
    first, second = new_team(), new_team()
    body = {"to": first.mailbox.address, "body_text": "x"}
    answers = [send_with_key(stack, team, "shared-key", body) for team in (first, second)]
    assert answers[0][1]["mail"]["id"] != answers[1][1]["mail"]["id"]


# ----------------------------------------------------------------------------- onComplete


def test_every_finished_mail_puts_mail_sent_or_mail_failed_on_the_bus(stack, new_team, bus_queue):
    team = new_team()
    sent = queue(stack, team)
    failed = queue(stack, team, to=UNKNOWN_USER)
    sync(stack, team)
    settled(sent["id"]), settled(failed["id"])
    events = {mail["id"]: completion_of(stack, bus_queue, mail["id"]) for mail in (sent, failed)}
    assert events[sent["id"]]["detail-type"] == "MailSent"
    assert events[failed["id"]]["detail-type"] == "MailFailed"
    detail = events[failed["id"]]["detail"]
    assert (detail["team"], detail["account"]) == (team.team, team.account)
    assert detail["reply"].startswith("550") and events[sent["id"]]["detail"]["reply"].startswith("250")


def test_a_direct_send_puts_mail_sent_on_the_bus(stack, new_team, bus_queue):
    team = new_team()
    status, answer = send_with_key(
        stack, team, uuid.uuid4().hex, {"to": team.mailbox.address, "body_text": "x"}
    )
    assert status == 200
    assert completion_of(stack, bus_queue, answer["mail"]["id"])["detail-type"] == "MailSent"


def test_a_mail_claimed_by_a_sender_that_died_is_sent_by_the_next_sync_after_the_lease(stack, new_team):
    team = new_team()
    mail_id = orphan(stack, team, lease_until="2026-01-01T00:00:00+00:00")
    answer = sync(stack, team)
    assert [sent["id"] for sent in answer["sent"]] == [mail_id]
    wait_for_messages(stack, team.mailbox.address, 1)


def test_a_mail_claimed_by_a_live_sender_is_left_to_it(stack, new_team):
    team = new_team()
    mail_id = orphan(stack, team, lease_until="2999-01-01T00:00:00+00:00")
    assert sync(stack, team)["skipped"] == [mail_id]
    assert stored(mail_id).status == "sending"


def test_a_stream_record_whose_claim_cannot_be_written_is_reported_as_a_batch_item_failure(
    stack, new_team, monkeypatch
):
    team = new_team()
    # Orphans (claims whose lease is over) rather than queued mail: the local stack's stream
    # driver never pushes them, so only this test's invocation touches them.
    over = "2026-01-01T00:00:00+00:00"
    broken, fine = ({"id": orphan(stack, team, lease_until=over)} for _ in range(2))
    event = stream_event(stack, [broken["id"], fine["id"]])
    sequence = event["Records"][0]["dynamodb"]["SequenceNumber"]
    mail_class = type(stack_storage().mail)
    transition = mail_class.transition

    def unavailable_for_one(self, mail_id, *args, **kwargs):
        if mail_id == broken["id"]:
            raise ConnectionError("DynamoDB is unavailable")
        return transition(self, mail_id, *args, **kwargs)

    monkeypatch.setattr(mail_class, "transition", unavailable_for_one)
    answer = stack.invoke("OutboxPushFunction", event)
    monkeypatch.undo()
    assert answer == {"batchItemFailures": [{"itemIdentifier": sequence}]}
    assert stored(broken["id"]).status == "sending"  # untouched: Lambda's retry will send it
    assert stored(fine["id"]).status == "sent"


def test_a_wrong_password_fails_the_queued_mail_at_once_and_never_shows_the_password(stack, new_team, capsys):
    team = new_team(mail_password="wrong-password-q9")
    mail = queue(stack, team)
    answer = sync(stack, team)
    item = settled(mail["id"])
    assert item.status == "failed" and item.attempts == 1 and "authentication failed" in item.error
    logs = capsys.readouterr()
    for text in (json.dumps(answer), item.model_dump_json(), logs.out, logs.err):
        assert "wrong-password-q9" not in text


def test_the_schedule_takes_over_mail_whose_sender_died(stack, new_team):
    team = new_team()
    mail_id = orphan(stack, team, lease_until="2026-01-01T00:00:00+00:00")
    counts = stack.invoke("OutboxSyncFunction", {"source": "schedule"})
    assert counts["sent"] >= 1 and stored(mail_id).status == "sent"
