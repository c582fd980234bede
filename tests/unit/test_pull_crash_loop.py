"""Crash-loop protection as data: a pull killed for memory or time (nothing after the kill runs)
leaves its lease behind; the next pull records the messages the dead one may have had in hand as
attempted while it prepares them, and after MAX_DEATHS deaths the next pull sets such a message
aside unparsed and goes on with the mail behind it. A pull that follows no death records nothing."""

from __future__ import annotations

import time
import uuid

import boto3
import pytest
from mailcore.adapters.dynamodb import DynamoPullState
from mailcore.errors import MailServerError
from mailcore.mime import parse_message
from mailcore.services.pull import MAX_IN_FLIGHT
from moto import mock_aws

from tests.fakes.storage import MemoryPullState, memory_storage
from tests.unit.test_pull_pipeline import FakeMailbox, mail_id_of, pull


class Killed(BaseException):
    """Stands for the kill: the function's process is gone, nothing after this point runs."""


class DyingPullState:
    """The in-memory pull state of a function that dies: after `die()` no write reaches it (a
    killed Lambda runs no `finally`), and the dead pull's lease is left to run out."""

    def __init__(self, inner) -> None:
        self.inner, self.dead = inner, False

    def die(self) -> None:
        self.dead = True

    def revive(self) -> None:
        """The next invocation, in a new execution environment, once the dead pull's lease ran out."""
        self.dead = False
        self.inner.leases = {key: (holder, 0.0) for key, (holder, _) in self.inner.leases.items()}

    def __getattr__(self, name: str):
        method = getattr(self.inner, name)
        return (lambda *args, **kwargs: None) if self.dead else method


def killing_on(marker: bytes, state: DyingPullState, deaths: list[int]):
    """A parse step during which the function is killed whenever the message holds `marker`."""

    def parse(raw: bytes):
        if marker in raw:
            deaths.append(1)
            state.die()
            raise Killed
        return parse_message(raw)

    return parse


def pulled_after_kills(mailbox: FakeMailbox, storage, parse, kills: int):
    """Pulls until one pull completes, each dead pull followed by a new invocation."""
    for _ in range(kills):
        with pytest.raises(Killed):
            pull(mailbox, storage, parse=parse)
        storage.pull_state.revive()
    return pull(mailbox, storage, parse=parse)


def test_a_message_the_function_died_preparing_twice_is_set_aside_unparsed_and_the_pull_goes_on():
    mailbox, storage, deaths = FakeMailbox(3), memory_storage(), []
    storage.pull_state = DyingPullState(storage.pull_state)
    mailbox.messages[2] = (mailbox.messages[2][0], b"Subject: deadly\r\nFrom: m@example.test\r\n\r\nkill\r\n")

    report = pulled_after_kills(mailbox, storage, killing_on(b"kill", storage.pull_state, deaths), kills=2)

    aside = storage.mail.get(mail_id_of(mailbox, 2))
    assert aside.parse_error == "set aside: the function died preparing it 2 times"
    assert aside.subject == "deadly" and storage.blobs.get(aside.raw_key) == mailbox.messages[2][1]
    assert storage.mail.get(mail_id_of(mailbox, 3)) is not None
    # The second pull prepared it again (one death is not enough); every marker is cleared.
    assert (len(deaths), report.set_aside, set(mailbox.deleted)) == (2, 1, {1, 2, 3})
    assert storage.pull_state.inner.attempts == {}


class RecordingPullState(MemoryPullState):
    """The in-memory pull state, keeping the messages recorded as attempted."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[str] = []

    def begin_attempt(self, team: str, account: str, mail_id: str, holder: str) -> int:
        self.recorded.append(mail_id)
        return super().begin_attempt(team, account, mail_id, holder)


def recording_storage():
    storage = memory_storage()
    storage.pull_state = RecordingPullState()
    return storage


def a_pull_died_before(storage) -> None:
    """The lease a killed pull leaves behind, run out."""
    assert storage.pull_state.acquire_lease("acme", "main", f"killed pull {uuid.uuid4()}", -1)


def test_a_pull_that_follows_no_death_records_no_attempt():
    storage = recording_storage()

    report = pull(FakeMailbox(20), storage)

    assert report.fetched == 20 and storage.pull_state.recorded == []


def test_after_a_death_only_the_messages_the_dead_pull_could_have_had_in_hand_are_recorded():
    mailbox, storage = FakeMailbox(MAX_IN_FLIGHT + 10), recording_storage()
    a_pull_died_before(storage)

    report = pull(mailbox, storage)

    assert report.fetched == MAX_IN_FLIGHT + 10
    assert storage.pull_state.recorded == [mail_id_of(mailbox, n) for n in range(1, MAX_IN_FLIGHT + 1)]
    assert storage.pull_state.attempts == {}  # each cleared once prepared


def test_after_two_deaths_in_a_row_every_message_is_recorded():
    mailbox, storage = FakeMailbox(MAX_IN_FLIGHT + 10), recording_storage()
    a_pull_died_before(storage)
    a_pull_died_before(storage)

    pull(mailbox, storage)

    assert len(storage.pull_state.recorded) == MAX_IN_FLIGHT + 10


def test_a_message_deep_in_the_mailbox_that_kills_the_function_twice_is_set_aside():
    mailbox, storage, deaths = FakeMailbox(60), memory_storage(), []
    storage.pull_state = DyingPullState(storage.pull_state)
    mailbox.messages[45] = (mailbox.messages[45][0], b"Subject: deadly\r\n\r\nkill\r\n")

    report = pulled_after_kills(mailbox, storage, killing_on(b"kill", storage.pull_state, deaths), kills=2)

    assert storage.mail.get(mail_id_of(mailbox, 45)).parse_error.startswith("set aside: the function died")
    assert len(deaths) == 2 and report.set_aside == 1
    assert all(storage.mail.get(mail_id_of(mailbox, n)) for n in range(1, 61))


def test_the_first_death_alone_sets_nothing_aside():
    mailbox, storage, deaths = FakeMailbox(3), memory_storage(), []
    storage.pull_state = DyingPullState(storage.pull_state)
    mailbox.messages[2] = (mailbox.messages[2][0], b"Subject: once\r\n\r\nkill\r\n")
    killing = killing_on(b"kill", storage.pull_state, deaths)

    with pytest.raises(Killed):
        pull(mailbox, storage, parse=killing)
    storage.pull_state.revive()
    report = pull(mailbox, storage)  # the message no longer kills (a deployment had killed it)

    assert report.set_aside == 0 and storage.mail.get(mail_id_of(mailbox, 2)).parse_error is None


class LineBreaksAt(FakeMailbox):
    """A mailbox whose connection breaks while message `number` is sent."""

    def __init__(self, count: int, number: int) -> None:
        super().__init__(count)
        self.breaks_at = number

    def retrieve(self, number: int) -> bytes:
        if number == self.breaks_at:
            raise MailServerError("the connection to the mail server broke")
        return super().retrieve(number)


def test_a_message_whose_fetch_fails_is_no_death_its_record_is_cleared():
    mailbox, storage = LineBreaksAt(3, number=2), recording_storage()
    a_pull_died_before(storage)

    report = pull(mailbox, storage)

    assert report.error and report.fetched == 1
    assert mail_id_of(mailbox, 2) in storage.pull_state.recorded
    assert storage.pull_state.attempts == {}


@pytest.fixture
def dynamo_pull_state():
    with mock_aws():
        client = boto3.session.Session().client("dynamodb", region_name="us-east-1")
        keys = {"pk": "HASH", "sk": "RANGE"}  # as PullStateTable's
        client.create_table(
            TableName="pull-state",
            AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name in keys],
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys.items()],
            BillingMode="PAY_PER_REQUEST",
        )
        yield DynamoPullState("pull-state", client=client)


def test_attempts_on_dynamodb_count_the_pulls_that_never_finished_the_message(dynamo_pull_state):
    state = dynamo_pull_state

    assert state.begin_attempt("acme", "main", "m1", "pull-a") == 0
    assert state.begin_attempt("acme", "main", "m1", "pull-b") == 1  # pull-a died
    assert state.begin_attempt("acme", "main", "m1", "pull-c") == 2  # and pull-b
    assert state.begin_attempt("acme", "main", "m2", "pull-c") == 0  # per message


def test_a_retried_begin_of_the_same_pull_is_not_counted_as_a_death(dynamo_pull_state):
    state = dynamo_pull_state
    state.begin_attempt("acme", "main", "m1", "pull-a")
    state.begin_attempt("acme", "main", "m1", "pull-b")

    assert state.begin_attempt("acme", "main", "m1", "pull-b") == 1  # the SDK sent it again


def test_only_the_pull_that_holds_the_marker_clears_it(dynamo_pull_state):
    state = dynamo_pull_state
    state.begin_attempt("acme", "main", "m1", "overran")
    state.begin_attempt("acme", "main", "m1", "newer")

    state.end_attempt("acme", "main", "m1", "overran")
    assert state.begin_attempt("acme", "main", "m1", "third") == 2
    state.end_attempt("acme", "main", "m1", "third")
    assert state.begin_attempt("acme", "main", "m1", "fourth") == 0


def runs_out(state: DynamoPullState) -> None:
    """The lease's time passes (its holder, killed, never gave it back)."""
    state.client.update_item(
        TableName=state.table,
        Key={"pk": {"S": "acme#main"}, "sk": {"S": "LEASE"}},
        UpdateExpression="SET lease_until = :past",
        ExpressionAttributeValues={":past": {"N": "0"}},
    )


def test_a_lease_left_behind_tells_the_next_pull_how_many_pulls_died_in_a_row(dynamo_pull_state):
    state = dynamo_pull_state

    assert state.acquire_lease("acme", "main", "first", 60).after_deaths == 0  # none before
    state.release_lease("acme", "main", "first")
    assert state.acquire_lease("acme", "main", "second", 60).after_deaths == 0  # given back
    runs_out(state)  # "second" was killed: its lease is never given back
    assert state.acquire_lease("acme", "main", "third", 60).after_deaths == 1
    assert state.acquire_lease("acme", "main", "fourth", 60) is None  # third's lease is live
    runs_out(state)
    assert state.acquire_lease("acme", "main", "fifth", 60).after_deaths == 2
    state.release_lease("acme", "main", "fifth")
    assert state.acquire_lease("acme", "main", "sixth", 60).after_deaths == 0


def test_a_resent_lease_write_is_taken_and_counts_the_death_once(dynamo_pull_state):
    state = dynamo_pull_state
    state.acquire_lease("acme", "main", "killed", 60)
    runs_out(state)
    state.acquire_lease("acme", "main", "next", 60)  # applied; its answer lost

    again = state.acquire_lease("acme", "main", "next", 60)  # the SDK sends it again

    assert again is not None and again.after_deaths == 1


def test_the_count_of_deaths_outlives_the_lease_it_rides_on(dynamo_pull_state):
    state = dynamo_pull_state
    state.acquire_lease("acme", "main", "killed", 60)
    runs_out(state)
    # What DynamoDB's TTL deletes once its time is past, as it may minutes after the lease ends.
    swept_until = int(time.time()) + 86400
    for item in state.client.scan(TableName=state.table)["Items"]:
        if int(item.get("expires_at", {}).get("N", "0")) < swept_until:
            state.client.delete_item(TableName=state.table, Key={"pk": item["pk"], "sk": item["sk"]})
    assert state.acquire_lease("acme", "main", "next", 60).after_deaths == 1
