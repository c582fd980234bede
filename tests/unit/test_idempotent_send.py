"""A direct send with an Idempotency-Key is never sent twice because of the key: its mail's id is
derived from the key (ids.keyed_mail_id), so a run of the same request after one that died finds
that run's mail and answers it instead of sending a new one (services/send.py, earlier_answer).

Memory storage, a test clock and a scripted SMTP server (tests/unit/test_deferred_delivery.py);
the real-server version, with a killed function, is tests/integration/test_idempotent_send.py."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from mailcore.errors import NotAMember
from mailcore.ids import keyed_mail_id, new_id
from mailcore.models import Mail, MailStatus, SendRequest
from mailcore.protocols.transcript import Transcript
from mailcore.services.files import team_mail
from mailcore.services.send import EarlierAttempt, KeyReused, MailSendFailed, RequestKey
from mailcore.storage import MailQuery
from mailcore.teams import Caller

from tests.unit.test_deferred_delivery import REFUSED, Harness, ScriptedServer
from tests.unit.test_stuck_sending import FUNCTION_TIME_LEFT, HOLD, Direct

ONCE = RequestKey(caller="alice", key="order-4711", digest="digest-of-the-request")


class Killed(BaseException):
    """The function stopped mid-send (Lambda's timeout or a crash): nothing after it runs."""


def keyed_send(
    harness: Harness, once: RequestKey = ONCE, *, during: Callable[[], None] | None = None
) -> Mail:
    direct = Direct(storage=harness.storage, tls_context=ssl.create_default_context(), clock=harness.clock)
    object.__setattr__(direct, "server", harness.server)
    object.__setattr__(direct, "during", during)
    request = SendRequest(to="x@example.test", body_text="now")
    return direct.send(
        harness.target, request, transcript=Transcript(), time_left=FUNCTION_TIME_LEFT, once=once
    )


def killed_on_the_wire(harness: Harness) -> None:
    def die() -> None:
        raise Killed

    with pytest.raises(Killed):
        keyed_send(harness, during=die)


def stored_mails(harness: Harness) -> list[Mail]:
    return harness.storage.mail.list_team("t", MailQuery(), after=None, limit=10)[0]


def test_the_id_of_a_keyed_mail_is_the_same_for_the_same_request_and_differs_for_any_other():
    same = keyed_mail_id("t", "desk", "alice", "order-4711", 20_000)
    assert same == keyed_mail_id("t", "desk", "alice", "order-4711", 20_000)
    others = {
        keyed_mail_id("u", "desk", "alice", "order-4711", 20_000),
        keyed_mail_id("t", "shop", "alice", "order-4711", 20_000),
        keyed_mail_id("t", "desk", "bob", "order-4711", 20_000),
        keyed_mail_id("t", "desk", "alice", "order-4712", 20_000),
        keyed_mail_id("t", "desk", "alice", "order-4711", 20_001),
        # The parts are separated: moving a character from one to the next makes another id.
        keyed_mail_id("t", "des", "kalice", "order-4711", 20_000),
    }
    assert same not in others and len(others) == 6
    assert len(same) == len(new_id())  # its Message-ID is as long as any other's


def test_a_keyed_send_after_one_that_died_mid_send_answers_its_mail_and_sends_nothing():
    harness = Harness(ScriptedServer())
    killed_on_the_wire(harness)
    (first,) = stored_mails(harness)
    with pytest.raises(EarlierAttempt) as answer:
        keyed_send(harness)
    assert answer.value.mail.id == first.id and answer.value.mail.status == MailStatus.SENDING
    assert answer.value.status == 409 and answer.value.field == "Idempotency-Key"
    assert (
        "may have been delivered" in answer.value.message
        and f"/mail/{first.id}/retry" in answer.value.message
    )
    assert harness.server.delivered == [] and stored_mails(harness) == [first]


def test_a_keyed_send_after_the_sync_recorded_the_dead_run_unknown_answers_it_unknown():
    harness = Harness(ScriptedServer())
    killed_on_the_wire(harness)
    harness.clock.advance(seconds=HOLD.total_seconds() + 1)
    harness.sync()
    with pytest.raises(EarlierAttempt) as answer:
        keyed_send(harness)
    assert answer.value.mail.status == MailStatus.UNKNOWN and "is `unknown`" in answer.value.message
    assert harness.server.delivered == []


def test_a_keyed_send_whose_earlier_run_sent_the_mail_answers_it_sent_once():
    harness = Harness(ScriptedServer())
    first = keyed_send(harness)
    again = keyed_send(harness)
    assert again.id == first.id and again.status == MailStatus.SENT
    assert len(harness.server.delivered) == 1


def test_another_request_under_the_key_of_a_dead_run_is_refused():
    harness = Harness(ScriptedServer())
    killed_on_the_wire(harness)
    with pytest.raises(KeyReused) as refused:
        keyed_send(harness, RequestKey(caller="alice", key="order-4711", digest="another-request"))
    assert refused.value.status == 422 and refused.value.field == "Idempotency-Key"
    assert harness.server.delivered == [] and len(stored_mails(harness)) == 1


def test_of_two_runs_of_one_keyed_request_that_both_found_no_mail_only_the_one_that_stores_it_sends():
    """The race put_new's attribute_not_exists(id) closes: the second run starts (and sends)
    between the first run's look for an earlier mail and its put."""
    harness = Harness(ScriptedServer())
    blobs = harness.storage.blobs
    put, answers, runs = blobs.put, [], [1]

    def put_then_the_other_run(key: str, data: bytes, content_type: str) -> None:
        put(key, data, content_type)
        if len(runs) == 1:  # the first run's raw message is stored, its item not yet
            runs.append(2)
            answers.append(keyed_send(harness))

    object.__setattr__(blobs, "put", put_then_the_other_run)
    first_run = keyed_send(harness)
    (second_run,) = answers
    assert first_run.id == second_run.id and first_run.status == MailStatus.SENT
    (delivered,) = harness.server.delivered
    # The run that lost kept its raw message to itself: the stored one is what went out.
    assert blobs.get(second_run.raw_key) == delivered
    assert second_run.message_id is not None and second_run.message_id.encode() in delivered


def test_a_run_that_loses_the_put_does_not_overwrite_the_message_the_winner_sends():
    """The loser composes (and stores its raw message) between the winner's raw object and the
    winner's item: the winner still sends, and keeps, its own message and Message-ID."""
    harness = Harness(ScriptedServer())
    blobs, mails = harness.storage.blobs, harness.storage.mail
    put_blob, put_new = blobs.put, mails.put_new
    loser_composed, winner_stored, answers = threading.Event(), threading.Event(), []

    def loser() -> None:
        try:  # the winner's mail: `sent` (200) or, while the winner is on the wire, `sending` (409)
            answers.append(keyed_send(harness))
        except EarlierAttempt as answer:
            answers.append(answer.mail)

    other_run = threading.Thread(target=loser, daemon=True)

    def put_blob_in_order(key: str, data: bytes, content_type: str) -> None:
        put_blob(key, data, content_type)
        if threading.current_thread() is threading.main_thread():
            other_run.start()
            assert loser_composed.wait(5)
        else:
            loser_composed.set()

    def put_new_in_order(mail: Mail) -> bool:
        if threading.current_thread() is not threading.main_thread():
            assert winner_stored.wait(5)
            return put_new(mail)
        stored = put_new(mail)
        winner_stored.set()
        return stored

    object.__setattr__(blobs, "put", put_blob_in_order)
    object.__setattr__(mails, "put_new", put_new_in_order)
    winner = keyed_send(harness)
    other_run.join(5)
    assert [mail.id for mail in answers] == [winner.id]
    (delivered,) = harness.server.delivered
    assert winner.message_id is not None and winner.message_id.encode() in delivered
    assert blobs.get(winner.raw_key) == delivered


def test_a_key_names_its_mail_for_24_hours_across_midnight_and_then_a_new_one():
    harness = Harness(ScriptedServer())
    harness.clock.now = datetime(2026, 11, 24, 23, 59, 50, tzinfo=UTC)
    first = keyed_send(harness)
    harness.clock.advance(seconds=20)  # the next day, by the id's count
    assert keyed_send(harness).id == first.id
    harness.clock.advance(hours=24)
    later = keyed_send(harness)
    assert later.id != first.id and len(harness.server.delivered) == 2


def test_another_team_that_derives_a_keyed_mails_id_cannot_read_it():
    harness = Harness(ScriptedServer())
    mail = keyed_send(harness)
    day = int(harness.clock().timestamp() // 86400)
    assert keyed_mail_id("t", "desk", "alice", "order-4711", day) == mail.id
    with pytest.raises(NotAMember):
        team_mail(Caller(user="alice", teams=frozenset({"other"})), mail.id, harness.storage)
    assert team_mail(Caller(user="bob", teams=frozenset({"t"})), mail.id, harness.storage).id == mail.id


def test_a_send_without_a_key_gets_a_new_id_every_time():
    harness = Harness(ScriptedServer())
    direct = Direct(storage=harness.storage, tls_context=ssl.create_default_context(), clock=harness.clock)
    object.__setattr__(direct, "server", harness.server)
    object.__setattr__(direct, "during", None)
    request = SendRequest(to="x@example.test", body_text="now")
    sent = [direct.send(harness.target, request, transcript=Transcript()) for _ in range(2)]
    assert sent[0].id != sent[1].id and len(harness.server.delivered) == 2


def test_a_keyed_send_whose_earlier_run_failed_without_a_kept_answer_names_the_failure_and_sends_nothing():
    """Powertools keeps no answer when the first run ended in an unexpected error (it deletes
    its record): the repeat still finds the mail."""
    harness = Harness(ScriptedServer(REFUSED))
    with pytest.raises(MailSendFailed):
        keyed_send(harness)
    with pytest.raises(EarlierAttempt) as answer:
        keyed_send(harness)
    assert answer.value.mail.status == MailStatus.FAILED and "now `failed`" in answer.value.message
    assert harness.server.delivered == [] and len(stored_mails(harness)) == 1
