"""The per-mail round trips of the send path: a direct send sends the bytes it stored without
reading them back, a send looks each attachment up once, and a write whose caller needs only to
know it won (`apply`) reads nothing back yet writes exactly what `transition` writes."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from mailcore.adapters.dynamodb import BODY_INLINE_LIMIT, DynamoMail
from mailcore.models import Mail, MailStatus, SendRequest, StoredFile
from mailcore.protocols.transcript import Transcript
from mailcore.services.delivery import DIRECT_HOLD, ended, outcome_transition, tried
from mailcore.services.outbox import owner_guard
from mailcore.storage import Clause, Transition
from moto import mock_aws

from local.template import Template
from tests.fakes import MemoryBlobs
from tests.support import outgoing_mail
from tests.unit.test_deferred_delivery import Harness, ScriptedServer
from tests.unit.test_idempotent_send import keyed_send
from tests.unit.test_stuck_sending import FUNCTION_TIME_LEFT, Direct, direct_send

NOW = datetime(2026, 12, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


class CountedBlobs(MemoryBlobs):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def get(self, key: str) -> bytes:
        self.reads.append(key)
        return super().get(key)


def test_a_direct_send_sends_the_bytes_it_stored_without_reading_them_back():
    harness = Harness(ScriptedServer())
    harness.storage.blobs = blobs = CountedBlobs()

    mail = direct_send(harness)

    assert mail.raw_key is not None and mail.raw_key not in blobs.reads
    assert harness.server.delivered == [blobs.objects[mail.raw_key][0]]
    assert harness.mail(mail.id).raw_size == len(harness.server.delivered[0])


def test_a_direct_send_looks_each_attachment_up_once():
    harness = Harness(ScriptedServer())
    stored = StoredFile(
        id="f1", team="t", name="a.txt", content_type="text/plain", size=4, s3_key="t/f1", created_at=NOW
    )
    harness.storage.files.put(stored)
    harness.storage.blobs.put(stored.s3_key, b"data", "text/plain")
    looked_up: list[str] = []
    get = harness.storage.files.get
    harness.storage.files.get = lambda file_id: looked_up.append(file_id) or get(file_id)

    direct = Direct(storage=harness.storage, tls_context=ssl.create_default_context(), clock=harness.clock)
    object.__setattr__(direct, "server", harness.server)
    request = SendRequest(to="x@example.test", body_text="see the file", attachments=["f1"])
    mail = direct.send(harness.target, request, transcript=Transcript(), time_left=FUNCTION_TIME_LEFT)

    assert looked_up == ["f1"]
    assert b"a.txt" in harness.server.delivered[0] and mail.attachments == ["f1"]


def test_a_new_keyed_send_looks_for_its_mail_in_one_batch_read_and_reads_no_single_mail():
    harness = Harness(ScriptedServer())
    reads: list[str] = []
    batches: list[list[str]] = []
    get, get_many = harness.storage.mail.get, harness.storage.mail.get_many
    harness.storage.mail.get = lambda mail_id: reads.append(mail_id) or get(mail_id)

    def recorded_batch(mail_ids):
        batches.append(list(mail_ids))
        return get_many(batches[-1])

    harness.storage.mail.get_many = recorded_batch

    mail = keyed_send(harness)

    assert reads == [] and [len(batch) for batch in batches] == [2]  # today's and yesterday's id
    assert harness.mail(mail.id).status == MailStatus.SENT


@pytest.fixture
def dynamo_mail() -> Iterator[DynamoMail]:
    """DynamoMail on the MailTable of template.yaml (keys and indexes), in moto."""
    table = Template.load(ROOT / "template.yaml", stack_name="hot").resources["MailTable"]["Properties"]
    with mock_aws():
        client = boto3.session.Session().client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="mail",
            **{key: table[key] for key in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")},
            BillingMode="PAY_PER_REQUEST",
        )
        yield DynamoMail("mail", blobs=CountedBlobs(), client=client)


def sending(mail_id: str, **fields) -> Mail:
    """A claimed outgoing mail whose body is too big for the item (kept in S3)."""
    body = "b" * (BODY_INLINE_LIMIT + 1)
    return outgoing_mail(
        id=mail_id, status=MailStatus.SENDING, body_text=body, lease_until=NOW, error="earlier", **fields
    )


def sent_outcome(mail: Mail) -> Transition:
    after = tried(mail, NOW, ["x@example.test"], "sent", "250 ok", None)
    return outcome_transition(ended(after, MailStatus.SENT, reply="250 ok"), DIRECT_HOLD)


def test_apply_writes_what_transition_writes_and_reads_nothing_back(dynamo_mail):
    applied, transitioned = sending("m1"), sending("m2")
    assert dynamo_mail.put_new(applied) and dynamo_mail.put_new(transitioned)
    blobs: CountedBlobs = dynamo_mail.blobs  # type: ignore[assignment]
    blobs.reads.clear()

    assert dynamo_mail.apply([sent_outcome(applied)]) == [True]
    assert blobs.reads == []
    answered = dynamo_mail.transition(
        "m2", DIRECT_HOLD, assign=sent_outcome(transitioned).assign, remove=sent_outcome(transitioned).remove
    )

    fresh_applied, fresh_transitioned = dynamo_mail.get("m1"), dynamo_mail.get("m2")
    assert answered == fresh_transitioned
    assert fresh_applied is not None and fresh_applied.status == MailStatus.SENT
    assert fresh_applied.model_copy(update={"id": "m2"}) == fresh_transitioned
    assert fresh_applied.error is None and fresh_applied.body_text == applied.body_text


def test_apply_answers_each_guard_and_writes_nothing_where_it_fails(dynamo_mail):
    mail = sending("m1")
    assert dynamo_mail.put_new(mail)
    superseded = Transition("m1", owner_guard("another run"), {"status": MailStatus.QUEUED.value})
    missing = Transition("gone", (Clause(),), {"status": MailStatus.QUEUED.value})

    assert dynamo_mail.apply([superseded, sent_outcome(mail), missing]) == [False, True, False]
    assert dynamo_mail.get("gone") is None
    assert dynamo_mail.get("m1").status == MailStatus.SENT  # type: ignore[union-attr]


def test_a_batch_read_answers_whole_mails_with_their_bodies_and_leaves_out_missing_ids(dynamo_mail):
    stored = sending("m1")
    assert dynamo_mail.put_new(stored)

    found = dynamo_mail.get_many(["m1", "missing", "m1"])

    assert list(found) == ["m1"] and found["m1"] == dynamo_mail.get("m1")
    assert found["m1"].body_text == stored.body_text  # the body kept in S3, read back


def test_the_ids_a_sync_reads_are_those_of_the_outbox_and_the_due_mail_without_their_bodies(dynamo_mail):
    queued = [sending(f"q{n}", created_at=NOW + timedelta(seconds=n)) for n in range(3)]
    deferred = sending("d1", next_attempt_at=NOW)
    later = sending("d2", next_attempt_at=NOW + timedelta(hours=1))
    for mail in queued:
        assert dynamo_mail.put_new(mail.model_copy(update={"status": MailStatus.QUEUED, "lease_until": None}))
    for mail in (deferred, later):
        assert dynamo_mail.put_new(
            mail.model_copy(update={"status": MailStatus.DEFERRED, "lease_until": None})
        )
    blobs: CountedBlobs = dynamo_mail.blobs  # type: ignore[assignment]
    blobs.reads.clear()
    now = NOW.isoformat()

    assert dynamo_mail.outbox_ids("t", "desk") == ["q0", "q1", "q2"]
    assert dynamo_mail.due_ids("t", "desk", now) == ["d1"]
    assert blobs.reads == []
    assert dynamo_mail.outbox_ids("t", "desk") == [mail.id for mail in dynamo_mail.outbox("t", "desk")]
    assert dynamo_mail.due_ids("t", "desk", now) == [mail.id for mail in dynamo_mail.due("t", "desk", now)]
