"""Per-account sending limits on DynamoDB (moto) shared by concurrent senders, and through the handler."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from mailcore.adapters.dynamodb import DynamoLimitCounters
from mailcore.settings import Settings, read

from tests.integration.test_oauth2 import oauth_team  # noqa: F401 (a fixture)
from tests.integration.test_send import send


def counters() -> DynamoLimitCounters:
    return DynamoLimitCounters(read(Settings).pull_state_table)


def test_concurrent_senders_together_never_pass_the_per_minute_limit(stack):
    pk = f"team-{uuid.uuid4().hex[:6]}#desk"
    shared = counters()
    with ThreadPoolExecutor(max_workers=8) as pool:
        taken = list(pool.map(lambda _: shared.take(pk, 29_000_000, 30, 2_000_000_000), range(45)))
    assert taken.count(True) == 30


def test_concurrent_connections_get_each_slot_once():
    pk = f"team-{uuid.uuid4().hex[:6]}#desk"
    shared = counters()
    with ThreadPoolExecutor(max_workers=8) as pool:
        held = list(pool.map(lambda n: shared.lease(pk, n % 3, f"holder{n}", 100.0, 1000.0), range(12)))
    assert held.count(True) == 3


def test_a_released_slot_can_be_taken_again_but_not_freed_by_a_former_holder():
    pk = f"team-{uuid.uuid4().hex[:6]}#desk"
    shared = counters()
    assert shared.lease(pk, 0, "first", 100.0, 200.0)
    assert shared.lease(pk, 0, "second", 300.0, 1200.0)  # the first holder's lease ran out
    shared.release(pk, 0, "first")  # too late: the slot is the second holder's now
    assert not shared.lease(pk, 0, "third", 400.0, 1300.0)
    shared.release(pk, 0, "second")
    assert shared.lease(pk, 0, "third", 400.0, 1300.0)


def test_a_send_over_the_accounts_rate_is_answered_429_and_nothing_is_stored(stack, oauth_team):  # noqa: F811
    team = oauth_team(max_messages_per_minute=1)
    assert send(stack, team, {"to": team.mailbox.address, "body_text": "first"})[0] == 200
    # Two more within a second or so: a minute may begin between two sends, but not twice.
    answers = [send(stack, team, {"to": team.mailbox.address, "body_text": n}) for n in ("second", "third")]
    status, answer = next(((s, a) for s, a in answers if s == 429), answers[-1])
    assert status == 429, answers
    assert answer["error"]["code"] == "rate_limited" and answer["error"]["field"] == "account"
    assert "mail" not in answer
