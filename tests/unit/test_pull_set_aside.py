"""Received mail that cannot be prepared within its budget, or that storage refuses, is set aside:
stored raw with a small item saying why, and the pull goes on with the messages behind it."""

from __future__ import annotations

import pytest
from mailcore.errors import StoreRefused
from mailcore.events import MAIL_SET_ASIDE
from mailcore.mime.isolated import IsolatedParser, OutOfTime, OverBudget
from mailcore.models import Mail
from mailcore.services import pull as pull_service
from mailcore.services.dispatch import pull_status
from mailcore.teams import Caller

from tests.fakes import MemoryPublisher, memory_storage
from tests.unit.test_pull_pipeline import TARGET, FakeMailbox, mail_id_of, pull

HOSTILE = (
    b"From: Mallory <mallory@example.test>\r\nSubject: =?utf-8?q?caf=C3=A9?= offer\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\nhostile\r\n"
)
TIME = "preparing it took more than 5.2 s (the per-message time budget)"


def over_budget_for(marker: bytes):
    """A parse step that answers as the isolated parser does for a message over its budget."""
    from mailcore.mime import parse_message

    def parse(raw: bytes):
        if marker in raw:
            raise OverBudget(TIME)
        return parse_message(raw)

    return parse


def test_a_message_over_its_budget_is_stored_raw_with_a_small_item_and_the_pull_goes_on():
    mailbox, storage = FakeMailbox(3), memory_storage()
    mailbox.messages[1] = (mailbox.messages[1][0], HOSTILE)

    report = pull(mailbox, storage, parse=over_budget_for(b"hostile"))

    aside = storage.mail.get(mail_id_of(mailbox, 1))
    assert aside is not None and aside.parse_error == f"set aside: {TIME}"
    assert (aside.from_, aside.subject, aside.raw_size) == (
        "Mallory <mallory@example.test>",
        "café offer",
        len(HOSTILE),
    )
    assert aside.body_text == "" and aside.date is not None
    assert storage.blobs.get(aside.raw_key) == HOSTILE
    assert all(storage.mail.get(mail_id_of(mailbox, n)) for n in (2, 3))
    assert (report.fetched, report.set_aside, sorted(mailbox.deleted)) == (3, 1, [1, 2, 3])


class RefusingMail:
    """The mail store of `storage`, refusing the first item of a message with a marker in its
    subject as DynamoDB refuses an item over 400 KB."""

    def __init__(self, storage, marker: str) -> None:
        self.inner, self.marker = storage.mail, marker

    def put_new(self, mail: Mail) -> bool:
        if self.marker in mail.subject and not mail.parse_error:
            raise StoreRefused("ValidationException: Item size has exceeded the maximum allowed size")
        return self.inner.put_new(mail)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_a_message_storage_refuses_is_set_aside_with_the_reason_and_deleted_only_after():
    mailbox, storage, events = FakeMailbox(3), memory_storage(), MemoryPublisher()
    storage.mail = RefusingMail(storage, "message 2")

    report = pull(mailbox, storage, events=events)

    aside = storage.mail.get(mail_id_of(mailbox, 2))
    assert aside.parse_error.startswith("set aside: storing it failed: ValidationException")
    assert (report.fetched, report.set_aside, sorted(mailbox.deleted)) == (3, 1, [1, 2, 3])
    [event] = [event for event in events.events if event.detail_type == MAIL_SET_ASIDE]
    assert event.mail_id == aside.id and event.detail()["reason"].startswith("storing it failed")


def test_the_pull_state_counts_set_aside_messages_over_pulls_and_keeps_the_latest_reason():
    storage = memory_storage()
    first, second = FakeMailbox(2), FakeMailbox(2)
    second.messages = {n: (f"later{n}", raw) for n, (_, raw) in second.messages.items()}
    parse = over_budget_for(b"body 1")

    pull(first, storage, parse=parse)
    pull(FakeMailbox(0), storage)
    pull(second, storage, parse=parse)

    state = storage.pull_state.get("acme", "main")
    assert state["set_aside"] == 2
    assert state["latest_set_aside"]["mail_id"] == mail_id_of(second, 1)
    assert state["latest_set_aside"]["reason"] == TIME


# --- the isolated parser ------------------------------------------------------------------------


def _large(megabytes: int) -> bytes:
    return b"Subject: big\r\nContent-Type: text/plain\r\n\r\n" + b"line of text\r\n" * (megabytes * 75_000)


def test_the_isolated_parser_answers_what_parse_message_answers():
    from mailcore.mime import parse_message

    from bench.hostile_shapes import ordinary

    with IsolatedParser() as parser:
        assert parser.parse(ordinary(30_000)) == parse_message(ordinary(30_000))


def test_a_message_over_the_time_budget_stops_its_parser_and_the_next_message_gets_a_new_one():
    with IsolatedParser(seconds=0.05, seconds_per_mb=0) as parser:
        with pytest.raises(OverBudget, match="time budget"):
            parser.parse(_large(40))
        parser.seconds = 10
        assert parser.parse(HOSTILE).subject == "café offer"


def test_the_time_budget_grows_with_the_size_of_the_message():
    parser = IsolatedParser(seconds=5, seconds_per_mb=0.5)

    assert parser.budget(0) == 5 and parser.budget(10 * 2**20) == 10


def test_a_message_cut_short_by_the_invocations_time_is_out_of_time_not_over_budget():
    with IsolatedParser() as parser, pytest.raises(OutOfTime):
        parser.parse(_large(40), seconds_left=0.05)


def test_a_pull_whose_time_runs_out_while_parsing_leaves_the_message_for_the_next_pull(monkeypatch):
    mailbox, storage = FakeMailbox(2), memory_storage()
    mailbox.messages[1] = (mailbox.messages[1][0], _large(40))
    monkeypatch.setattr(pull_service, "WRITE_MARGIN_SECONDS", 10.4)
    clock = iter([60.0, 10.5] + [60.0] * 100)  # the lease, then the fetch with 0.1 s to parse

    report = pull(mailbox, storage, seconds_left=lambda: next(clock))

    assert mailbox.retrieved == [1]
    assert (report.fetched, report.set_aside, report.remaining, mailbox.deleted) == (0, 0, 2, [])
    assert storage.mail.get(mail_id_of(mailbox, 1)) is None


def test_a_message_over_the_memory_budget_is_refused_and_the_next_message_parses():
    with IsolatedParser(memory=32 * 1024 * 1024) as parser:
        with pytest.raises(OverBudget, match="memory budget"):
            parser.parse(_large(40))
        assert parser.parse(HOSTILE).subject == "café offer"


class OneAccountDirectory:
    def resolve_account(self, caller, account, team=None):
        return TARGET


def test_the_pull_status_shows_how_many_messages_were_set_aside_and_the_latest_reason():
    mailbox, storage = FakeMailbox(2), memory_storage()
    pull(mailbox, storage, parse=over_budget_for(b"body 2"))

    status = pull_status(
        Caller("member", frozenset({"acme"})), "main", None, directory=OneAccountDirectory(), storage=storage
    )

    assert status["set_aside"] == 1
    assert status["latest_set_aside"]["mail_id"] == mail_id_of(mailbox, 2)
    assert status["latest_set_aside"]["reason"] == TIME
