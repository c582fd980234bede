import base64
import json
from typing import Any

import pytest
from mailcore.errors import AccountNotFound, AmbiguousAccount, NotAMember, TeamConfigInvalid
from mailcore.teams import Caller, TeamDirectory, caller_from_claims

from tests.fakes import memory_directory
from tests.support import account_config, call_api, claims, handler, load_function

ACCOUNT = account_config(mail_password="pw-of-support")


@pytest.fixture
def directory() -> TeamDirectory:
    return memory_directory(
        {
            "sales": {"type": "mail", "accounts": {"support": ACCOUNT, "offers": ACCOUNT}},
            "service": {"type": "mail", "accounts": {"support": ACCOUNT}},
            "hr": {"type": "mail", "accounts": {"payroll": ACCOUNT}},
            "chat": {"type": "chat", "accounts": {"payroll": ACCOUNT}},
        }
    )


def caller(*teams: str) -> Caller:
    return Caller(user="u@example.test", teams=frozenset(teams))


def test_an_account_of_one_of_the_callers_teams_resolves(directory):
    found = directory.resolve_account(caller("sales"), "offers")
    assert (found.team, found.name) == ("sales", "offers")


def test_two_teams_with_the_account_need_the_team_named(directory):
    with pytest.raises(AmbiguousAccount) as caught:
        directory.resolve_account(caller("sales", "service"), "support")
    assert caught.value.status == 409 and caught.value.field == "team"
    assert directory.resolve_account(caller("sales", "service"), "support", "service").team == "service"


@pytest.mark.parametrize(
    ("teams", "account", "team", "refusal", "status"),
    [
        pytest.param(["sales"], "payroll", None, NotAMember, 403, id="caller-outside-the-accounts-team"),
        pytest.param(["sales"], "payroll", "hr", NotAMember, 403, id="naming-a-team-one-is-not-in"),
        pytest.param(["sales"], "nobody", None, AccountNotFound, 404, id="an-account-nobody-has"),
        pytest.param(["chat"], "payroll", "chat", AccountNotFound, 404, id="a-team-that-is-not-a-mail-team"),
    ],
)
def test_an_account_the_caller_may_not_use_is_refused(directory, teams, account, team, refusal, status):
    with pytest.raises(refusal) as caught:
        directory.resolve_account(caller(*teams), account, team)
    assert caught.value.status == status


def test_a_group_without_a_secret_is_a_team_without_accounts(directory):
    assert directory.accounts_of(["admins"]) == []


def test_an_invalid_team_secret_names_the_problem_but_never_the_password():
    directory = memory_directory({"ops": {"type": "mail", "accounts": {"x": {**ACCOUNT, "smtp": "nope"}}}})
    with pytest.raises(TeamConfigInvalid) as caught:
        directory.team("ops")
    assert "accounts.x.smtp" in caught.value.message
    assert "pw-of-support" not in str(caught.value)


def test_a_broken_secret_of_another_team_does_not_break_resolving(directory):
    directory.secrets.secrets["teams/broken"] = {"type": "mail", "accounts": {"x": {"mail_from": 1}}}
    with pytest.raises(AccountNotFound):
        directory.resolve_account(caller("sales"), "nobody")


@pytest.mark.parametrize(
    "groups",
    ["[sales service]", "sales,service", "sales service", '["sales","service"]', ["sales", "service"]],
)
def test_cognito_groups_are_read_in_every_form_api_gateway_hands_them_over(groups):
    found = caller_from_claims({"email": "u@example.test", "cognito:groups": groups})
    assert found is not None and found.teams == {"sales", "service"}


def test_claims_without_a_user_are_no_caller():
    assert caller_from_claims({}) is None
    assert caller_from_claims({"cognito:groups": "sales"}) is None


def token_with(payload: dict[str, Any]) -> str:
    encode = lambda part: base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")  # noqa: E731
    return f"Bearer {encode({'alg': 'RS256'})}.{encode(payload)}.c2lnbmF0dXJl"


def test_a_group_name_with_a_comma_stays_whole_when_the_verified_token_lists_it():
    claims = {"sub": "u-1", "email": "u@example.test", "cognito:groups": "ops,alpha,beta"}
    token = token_with({"sub": "u-1", "cognito:groups": ["ops,alpha", "beta"]})
    found = caller_from_claims(claims, token)
    assert found is not None and found.teams == {"ops,alpha", "beta"}


def test_a_token_that_is_not_the_one_api_gateway_verified_is_not_read():
    claims = {"sub": "u-1", "email": "u@example.test", "cognito:groups": "sales"}
    for other in ({"sub": "u-2", "cognito:groups": ["hr"]}, {"sub": "u-1", "cognito:groups": ["hr"]}):
        found = caller_from_claims(claims, token_with(other))
        assert found is not None and found.teams == {"sales"}


def test_only_groups_with_a_mail_team_secret_are_teams(directory):
    directory.secrets.secrets["teams/system"] = {"type": "mail", "accounts": {}}
    member = directory.member_teams(caller("sales", "chat", "admins", "system"))
    assert member.teams == {"sales"}


@pytest.fixture
def store_app(monkeypatch, directory):
    from mailcore.wiring import store as store_wiring
    from mailcore.wiring.store import StoreRoot

    from tests.fakes import memory_storage

    storage = memory_storage()
    root = StoreRoot(storage=storage, directory=directory)
    monkeypatch.setattr(store_wiring, "root", lambda: root)
    app = load_function("store")
    app.storage = storage
    return app


def call(app, method: str, resource: str, groups: str, body: dict | None = None, **params):
    return call_api(
        handler(app), method, resource, params=params or None, body=body, caller=claims(*groups.split())
    )


def test_a_group_without_a_mail_team_secret_cannot_store_files(store_app):
    body = {"name": "a.txt", "content": "", "team": "admins"}
    status, answer = call(store_app, "POST", "/api/core/files", "admins", body)
    assert status == 403 and answer["error"]["field"] == "team"


def test_system_mail_is_never_visible_to_a_group_named_system(store_app):
    from datetime import UTC, datetime

    from mailcore.models import Direction, Mail

    mail = Mail(
        id="m1",
        team="system",
        account="system",
        direction=Direction.OUT,
        status="sent",
        created_at=datetime.now(UTC),
    )
    store_app.storage.mail.put_new(mail)
    status, _ = call(store_app, "GET", "/api/core/mail/{mail_id}", "system", mail_id="m1")
    assert status == 403
