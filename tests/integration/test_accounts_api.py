"""The accounts API on the local stack: moto's Secrets Manager and DynamoDB, real Dovecot and
Postfix behind `?check=true` and the check route, the gateway's Cognito authorizer."""

import json
import threading
import uuid
from typing import Any

import pytest

from tests.integration.conftest import bus_to_queue, call_function, claims
from tests.integration.test_http_api import call

ROUTES = [
    ("GET", "/api/core/mail/accounts", "/api/core/mail/accounts"),
    ("GET", "/api/core/mail/accounts/{account}", "/api/core/mail/accounts/{account}"),
    ("PUT", "/api/core/mail/accounts/{account}", "/api/core/mail/accounts/{account}"),
    ("DELETE", "/api/core/mail/accounts/{account}", "/api/core/mail/accounts/{account}"),
    ("POST", "/api/core/mail/accounts/{account}/check", "/api/core/mail/accounts/{account}/check"),
]


def accounts_call(
    stack,
    method: str,
    account: str | None,
    *,
    groups: tuple[str, ...],
    query: dict[str, str] | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    suffix: str = "",
) -> tuple[int, dict]:
    """Calls the accounts function as API Gateway would, for a caller in `groups`."""
    return call_function(
        stack,
        "AccountsFunction",
        method,
        "/api/core/mail/accounts" + ("/{account}" if account else "") + suffix,
        params={"account": account} if account else None,
        query=query,
        body=body,
        caller=claims(*groups, user=f"{'-'.join(groups) or 'nobody'}@example.test"),
        headers=headers,
    )


def public(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "mail_password"}


@pytest.fixture
def admin_team(new_team):
    team = new_team()
    return team, (team.team, team.team + "-admin")


def test_the_authorization_matrix_of_every_accounts_route(stack, admin_team):
    team, admin = admin_team
    member, outsider, admin_only = (team.team,), ("someone-else",), (team.team + "-admin",)
    config = public(stack.account_config(team.mailbox))
    expected = {
        # (method, suffix): member, admin, outsider, admin group without the team group
        ("GET", ""): (200, 200, 403, 403),
        ("PUT", ""): (403, 200, 403, 403),
        ("POST", "/check"): (200, 200, 403, 403),
        ("DELETE", ""): (403, 204, 403, 403),
    }
    status, listed = accounts_call(stack, "GET", None, groups=outsider, query={"team": team.team})
    assert status == 403 and listed["error"]["field"] == "team"
    status, _ = accounts_call(stack, "GET", "main", groups=outsider)
    assert status == 404  # without ?team= an outsider learns nothing about other teams' accounts
    status, listed = accounts_call(stack, "GET", None, groups=member)
    assert status == 200 and [entry["team"] for entry in listed["accounts"]] == [team.team]
    seen = {}
    for (method, suffix), statuses in expected.items():
        for groups, want in zip((member, admin, outsider, admin_only), statuses, strict=True):
            body = config if method == "PUT" else None
            status, answer = accounts_call(
                stack,
                method,
                team.account,
                groups=groups,
                body=body,
                suffix=suffix,
                query={"team": team.team},
            )
            seen[(method, suffix, groups)] = status
            assert status == want, (method, suffix, groups, answer)
    assert len(seen) == 16


def test_every_accounts_route_needs_a_token(stack):
    for method, path, _ in ROUTES:
        status, answer = call(stack, method, path.replace("{account}", "demo"))
        assert status == 401, (method, path, answer)


def test_an_account_answer_never_holds_a_secret_value(stack, admin_team):
    team, admin = admin_team
    status, answer = accounts_call(stack, "GET", team.account, groups=admin)
    assert status == 200
    account = answer["account"]
    assert account["secrets"]["mail_password"] is True
    assert team.mailbox.password not in json.dumps(answer)
    status, checked = accounts_call(stack, "POST", team.account, groups=admin, suffix="/check")
    assert status == 200 and checked["check"]["ok"], checked
    assert team.mailbox.password not in json.dumps(checked)


def test_check_true_refuses_a_wrong_password_naming_the_field_and_saves_nothing(stack, admin_team):
    team, admin = admin_team
    wrong = {**stack.account_config(team.mailbox), "mail_password": "wrong-" + uuid.uuid4().hex}
    status, answer = accounts_call(
        stack, "PUT", team.account, groups=admin, body=wrong, query={"check": "true"}
    )
    assert status == 422, answer
    assert answer["error"]["code"] == "check_failed" and answer["error"]["field"] == "mail_password"
    assert answer["check"]["pop3"]["problem"] == "auth_failed"
    assert wrong["mail_password"] not in json.dumps(answer)
    secret = stack.session.client("secretsmanager").get_secret_value(
        SecretId=stack.team_secret_prefix + team.team
    )
    assert (
        json.loads(secret["SecretString"])["accounts"][team.account]["mail_password"] == team.mailbox.password
    )


def test_check_true_refuses_a_server_on_a_loopback_address_outside_the_allowed_networks(stack, admin_team):
    # The stack allows 127.0.0.0/8 (its Postfix and Dovecot); ::1 is loopback too, but not in it.
    team, admin = admin_team
    change = stack.account_config(team.mailbox)
    change["pop3"] = {**change["pop3"], "host": "::1"}
    status, answer = accounts_call(
        stack, "PUT", team.account, groups=admin, body=change, query={"check": "true"}
    )
    assert status == 422, answer
    assert answer["error"]["code"] == "check_failed" and answer["error"]["field"] == "pop3.host"
    pop3 = answer["check"]["pop3"]
    assert pop3["problem"] == "address_not_allowed" and "::1" in pop3["message"]
    assert "loopback" in pop3["message"] and answer["check"]["smtp"]["ok"], answer
    assert change["mail_password"] not in json.dumps(answer)
    secret = stack.session.client("secretsmanager").get_secret_value(
        SecretId=stack.team_secret_prefix + team.team
    )
    assert json.loads(secret["SecretString"])["accounts"][team.account]["pop3"]["host"] == "127.0.0.1"


def test_a_checked_change_without_the_password_is_saved_and_keeps_the_password(stack, admin_team):
    team, admin = admin_team
    change = {**public(stack.account_config(team.mailbox)), "leave_on_server": True}
    status, answer = accounts_call(
        stack,
        "PUT",
        team.account,
        groups=admin,
        body=change,
        query={"check": "true"},
        headers={"If-Match": "0"},
    )
    assert status == 200, answer
    assert (
        answer["account"]["revision"] == 1 and answer["account"]["configuration"]["leave_on_server"] is True
    )
    status, again = accounts_call(
        stack, "PUT", team.account, groups=admin, body=change, headers={"If-Match": "0"}
    )
    assert status == 412 and again["error"]["field"] == "If-Match"
    # The pull function (its own cached copy of the secret) logs in with the kept password.
    status, checked = accounts_call(stack, "POST", team.account, groups=admin, suffix="/check")
    assert checked["check"]["ok"], checked


def test_an_invalid_account_is_refused_naming_the_nested_field(stack, admin_team):
    team, admin = admin_team
    change = {
        **stack.account_config(team.mailbox),
        "pop3": {"host": "127.0.0.1", "port": 99999, "security": "ssl"},
    }
    status, answer = accounts_call(stack, "PUT", team.account, groups=admin, body=change)
    assert status == 400 and answer["error"]["field"] == "pop3.port"


def test_two_concurrent_changes_through_the_stack_both_survive(stack, admin_team):
    team, admin = admin_team
    config = stack.account_config(team.mailbox)
    names = [f"parallel{n}" for n in range(4)]
    results: dict[str, int] = {}

    def create(name: str) -> None:
        results[name] = accounts_call(
            stack, "PUT", name, groups=admin, body=config, query={"team": team.team}
        )[0]

    threads = [threading.Thread(target=create, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {name: 201 for name in names}
    secret = stack.session.client("secretsmanager").get_secret_value(
        SecretId=stack.team_secret_prefix + team.team
    )
    assert set(json.loads(secret["SecretString"])["accounts"]) == {team.account, *names}


def test_the_writer_lease_is_held_by_one_writer_at_a_time_in_dynamodb(stack):
    from mailcore.adapters.dynamodb import DynamoAccountRevisions

    revisions = DynamoAccountRevisions(stack.info["environment"]["PULL_STATE_TABLE"])
    team = "lease-" + uuid.uuid4().hex[:6]
    assert revisions.acquire(team, "first", 60)
    assert not revisions.acquire(team, "second", 60)
    revisions.release(team, "second", account="a", revision=5)  # not the holder: nothing happens
    assert not revisions.acquire(team, "third", 60)
    revisions.release(team, "first", account="a", revision=1)
    assert revisions.revisions(team) == {"a": 1}
    assert revisions.acquire(team, "second", 60)


def test_a_change_is_announced_on_the_bus_with_who_and_which_fields(stack, admin_team):
    team, admin = admin_team
    sqs = stack.session.client("sqs")
    pattern = {"detail-type": ["AccountChanged"], "detail": {"team": [team.team]}}
    queue_url = bus_to_queue(stack, f"changed-{team.team}", pattern)
    new_password = "Changed-" + uuid.uuid4().hex
    change = {**stack.account_config(team.mailbox), "mail_password": new_password}
    assert accounts_call(stack, "PUT", team.account, groups=admin, body=change)[0] == 200
    (message,) = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    event = json.loads(message["Body"])
    assert event["detail"] == {
        "team": team.team,
        "account": team.account,
        "action": "changed",
        "by": f"{team.team}-{team.team}-admin@example.test",
        "fields": ["mail_password"],
    }
    assert new_password not in message["Body"]
