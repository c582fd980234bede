"""GET /api/core/mail: the caller's teams' mail newest first, filters, cursor pagination, and
only members ever see a team's mail. Through StoreFunction's handler, against moto."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from mailcore.ids import new_id
from mailcore.models import Direction, Mail, MailStatus

from tests.integration.conftest import claims, rest_event
from tests.stack import stack_storage

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def put_mail(team: str, minutes: int, *, account: str = "main", direction: Direction = Direction.IN) -> str:
    mail = Mail(
        id=new_id(),
        team=team,
        account=account,
        direction=direction,
        status=MailStatus.RECEIVED if direction is Direction.IN else MailStatus.SENT,
        created_at=START + timedelta(minutes=minutes),
        subject=f"{team} at {minutes}",
        body_text="not in listings",
    )
    assert stack_storage().mail.put_new(mail)
    return mail.id


def listing(stack, *teams: str, **query: str) -> tuple[int, dict]:
    event = rest_event(
        "GET", "/api/core/mail", resource="/api/core/mail", query=query or None, caller=claims(*teams)
    )
    answer = stack.invoke("StoreFunction", event)
    return answer["statusCode"], json.loads(answer["body"])


def every_page(stack, *teams: str, **query: str) -> list[dict]:
    seen, cursor = [], None
    while True:
        status, page = listing(stack, *teams, **query, **({"cursor": cursor} if cursor else {}))
        assert status == 200, page
        seen.extend(page["mail"])
        cursor = page["cursor"]
        if cursor is None:
            return seen


@pytest.fixture
def two_teams(stack) -> tuple[str, str, dict[str, str]]:
    first, second = f"list-{new_id()[-8:]}", f"list-{new_id()[-8:]}"
    for team in (first, second):  # only groups with a mail team secret are teams
        stack.put_team_secret(team, {"type": "mail", "accounts": {}})
    ids = {}
    for minutes in (0, 10, 20, 30, 40):
        ids[f"first {minutes}"] = put_mail(first, minutes, account="sales" if minutes % 20 else "main")
    ids["first out"] = put_mail(first, 25, direction=Direction.OUT)
    for minutes in (5, 15, 35):
        ids[f"second {minutes}"] = put_mail(second, minutes)
    return first, second, ids


def test_mail_is_listed_newest_first_across_the_callers_teams_and_pages_cover_all_once(stack, two_teams):
    first, second, ids = two_teams
    pages = every_page(stack, first, second, limit="3")
    created = [mail["created_at"] for mail in pages]
    assert created == sorted(created, reverse=True)
    assert sorted(mail["id"] for mail in pages) == sorted(ids.values())
    assert "body_text" not in pages[0] and "raw_key" not in pages[0]


def test_the_filters_narrow_the_listing(stack, two_teams):
    first, second, _ = two_teams
    assert [m["subject"] for m in every_page(stack, first, account="sales")] == [
        f"{first} at 30",
        f"{first} at 10",
    ]
    assert [m["subject"] for m in every_page(stack, first, direction="out")] == [f"{first} at 25"]
    assert len(every_page(stack, first, status="received")) == 5
    since = (START + timedelta(minutes=30)).isoformat()
    assert [m["subject"] for m in every_page(stack, first, second, since=since)] == [
        f"{first} at 40",
        f"{second} at 35",
        f"{first} at 30",
    ]
    assert {m["team"] for m in every_page(stack, first, second, team=second)} == {second}


def test_only_members_see_a_teams_mail(stack, two_teams):
    first, second, _ = two_teams
    assert {m["team"] for m in every_page(stack, second)} == {second}
    status, answer = listing(stack, second, team=first)
    assert status == 403 and answer["error"]["field"] == "team"


def test_a_cursor_of_another_team_is_refused(stack, two_teams):
    first, second, _ = two_teams
    _, page = listing(stack, first, limit="2")
    status, answer = listing(stack, second, cursor=page["cursor"])
    assert status == 400 and answer["error"]["field"] == "cursor"


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 at all!",
        base64.urlsafe_b64encode(b'{"v": 1, "after": {"x": "2026-01-01T00:00:00Z#id\' OR 1"}}').decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
    ],
    ids=["garbage", "tampered-key", "wrong-shape"],
)
def test_a_tampered_cursor_is_a_400_naming_the_cursor(stack, two_teams, cursor):
    first, _, _ = two_teams
    status, answer = listing(stack, first, cursor=cursor)
    assert status == 400 and answer["error"]["field"] == "cursor"


@pytest.mark.parametrize(
    ("name", "value"), [("limit", "0"), ("limit", "101"), ("direction", "sideways"), ("since", "soon")]
)
def test_bad_filters_are_a_400_naming_the_field(stack, two_teams, name, value):
    first, _, _ = two_teams
    status, answer = listing(stack, first, **{name: value})
    assert status == 400 and answer["error"]["field"] == name


def test_over_http_a_member_lists_and_reads_its_teams_mail_and_an_outsider_sees_none(stack):
    from tests.integration.test_http_api import call

    member, outsider = stack.info["tokens"]["member"], stack.info["tokens"]["outsider"]
    mail_id = put_mail(stack.info["team"], 50)
    status, page = call(stack, "GET", "/api/core/mail?limit=100", token=member)
    assert status == 200, page
    assert {mail["team"] for mail in page["mail"]} == {stack.info["team"]}
    assert mail_id in {mail["id"] for mail in page["mail"]}
    assert call(stack, "GET", f"/api/core/mail/{mail_id}", token=member)[0] == 200
    status, page = call(stack, "GET", "/api/core/mail", token=outsider)
    assert status == 200 and page == {"mail": [], "cursor": None}
    status, answer = call(stack, "GET", f"/api/core/mail/pull/{stack.info['account']}/status", token=member)
    assert status == 200 and answer["status"]["team"] == stack.info["team"], answer
    status, answer = call(stack, "GET", f"/api/core/mail/pull/{stack.info['account']}/status", token=outsider)
    assert status == 403
