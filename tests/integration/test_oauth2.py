"""OAuth2 (SASL XOAUTH2) accounts end to end: the handlers, the local token endpoint, Dovecot's
oauth2 passdb (introspection) and Postfix's SASL through Dovecot."""

from __future__ import annotations

import itertools
import json
import smtplib
import time
import uuid
from email.message import EmailMessage
from typing import Any

import pytest
from mailcore import wiring

from tests.integration.conftest import TeamAccount, read_mailbox, wait_for_messages
from tests.integration.test_http_api import call
from tests.integration.test_pull import deliver, pull
from tests.integration.test_send import send
from tests.stack import stack_storage

_numbers = itertools.count()


@pytest.fixture
def oauth_team(stack):
    """A fresh mail team whose one account logs in with OAuth2 only, on its own empty mailbox."""

    def make(account: str = "main", *, refresh_token: bool = False, **changes: Any) -> TeamAccount:
        mailbox = next(stack.mailbox_pool)
        team = f"oauth{next(_numbers)}-{uuid.uuid4().hex[:6]}"
        config = stack.oauth_account_config(mailbox.address, refresh_token=refresh_token, **changes)
        stack.put_team_secret(team, {"type": "mail", "accounts": {account: config}})
        # The mailbox keeps its password for reading it in tests; the account never uses it.
        return TeamAccount(team, account, mailbox)

    return make


def secret_auth(stack, team: TeamAccount) -> dict[str, Any]:
    client = stack.session.client("secretsmanager")
    value = client.get_secret_value(SecretId=stack.team_secret_prefix + team.team)["SecretString"]
    return json.loads(value)["accounts"][team.account]["auth"]


def as_a_new_process() -> None:
    """Forgets this process's tokens and cached secrets, as a fresh Lambda would start."""
    from aws_lambda_powertools.utilities import parameters

    wiring.reset()
    parameters.clear_caches()


def test_an_oauth2_account_sends_with_xoauth2_through_postfix_and_dovecot(stack, oauth_team):
    team = oauth_team()
    status, answer = send(
        stack,
        team,
        {"to": team.mailbox.address, "subject": "Via OAuth2", "body_text": "x"},
        query={"debug": "true"},
    )
    assert status == 200, answer
    assert "C: AUTH XOAUTH2 <redacted>" in answer["debug"]
    assert "S: 235 2.7.0 Authentication successful" in answer["debug"]
    wait_for_messages(stack, team.mailbox.address, 1)


def test_an_oauth2_account_pulls_with_the_two_step_pop3_form_by_default(stack, oauth_team):
    team = oauth_team()
    deliver(stack, team.mailbox.address, "Two-step")
    wait_for_messages(stack, team.mailbox.address, 1)
    status, answer = pull(stack, team, account=team.account, query={"debug": "true"})
    assert status == 200, answer
    assert answer["accounts"][0]["fetched"] == 1, answer
    login = answer["debug"].index("C: AUTH XOAUTH2")
    assert answer["debug"][login + 1 : login + 4] == ["S: + ", "C: <redacted>", "S: +OK Logged in."]


def test_the_one_line_pop3_form_works_when_the_account_asks_for_it(stack, oauth_team):
    team = oauth_team(auth={"pop3_auth_form": "one-line"})
    deliver(stack, team.mailbox.address, "One line")
    wait_for_messages(stack, team.mailbox.address, 1)
    status, answer = pull(stack, team, account=team.account, query={"debug": "true"})
    assert status == 200, answer
    assert answer["accounts"][0]["fetched"] == 1, answer
    login = answer["debug"].index("C: AUTH XOAUTH2 <redacted>")
    assert answer["debug"][login + 1] == "S: +OK Logged in."


def test_a_refresh_token_account_sends_and_pulls_its_own_mail(stack, oauth_team):
    team = oauth_team(refresh_token=True)
    status, answer = send(
        stack, team, {"to": team.mailbox.address, "subject": "Round trip", "body_text": "x"}
    )
    assert status == 200, answer
    wait_for_messages(stack, team.mailbox.address, 1)
    status, answer = pull(stack, team, account=team.account)
    assert status == 200 and answer["accounts"][0]["fetched"] == 1, answer
    stored = stack_storage().mail.get(answer["accounts"][0]["mail_ids"][0])
    assert stored is not None and stored.subject == "Round trip"


def test_an_access_token_is_reused_until_shortly_before_it_expires_then_refreshed(stack, oauth_team):
    team = oauth_team(refresh_token=True)
    client_id = secret_auth(stack, team)["client_id"]
    stack.oauth2.lifetimes[client_id] = 2.0
    before = stack.oauth2.calls["refresh_token"]
    assert pull(stack, team, account=team.account)[1]["accounts"][0]["error"] is None
    assert pull(stack, team, account=team.account)[1]["accounts"][0]["error"] is None
    assert stack.oauth2.calls["refresh_token"] - before == 1  # the second pull reused the token
    time.sleep(2.1)  # the token has expired: the next run must refresh it, with no restart
    status, answer = pull(stack, team, account=team.account)
    assert status == 200 and answer["accounts"][0]["error"] is None, answer
    assert stack.oauth2.calls["refresh_token"] - before == 2


def test_a_token_expiring_between_two_sends_is_refreshed_and_both_go_out(stack, oauth_team):
    team = oauth_team()
    client_id = secret_auth(stack, team)["client_id"]
    stack.oauth2.lifetimes[client_id] = 2.0
    assert send(stack, team, {"to": team.mailbox.address, "body_text": "first"})[0] == 200
    time.sleep(2.1)
    status, answer = send(stack, team, {"to": team.mailbox.address, "body_text": "second"})
    assert status == 200, answer
    wait_for_messages(stack, team.mailbox.address, 2)


def test_a_rotated_refresh_token_is_written_back_to_the_team_secret(stack, oauth_team):
    team = oauth_team(refresh_token=True)
    first = secret_auth(stack, team)["refresh_token"]
    stack.oauth2.rotating.add(secret_auth(stack, team)["client_id"])
    assert pull(stack, team, account=team.account)[1]["accounts"][0]["error"] is None
    second = secret_auth(stack, team)["refresh_token"]
    assert second != first
    # The old refresh token is dead now: a new process works only with the one written back.
    as_a_new_process()
    status, answer = pull(stack, team, account=team.account)
    assert status == 200 and answer["accounts"][0]["error"] is None, answer
    assert secret_auth(stack, team)["refresh_token"] not in (first, second)


def test_a_revoked_refresh_token_marks_the_account_broken_without_a_retry_storm(stack, oauth_team):
    team = oauth_team(refresh_token=True)
    stack.oauth2.revoke(secret_auth(stack, team)["refresh_token"])
    before = stack.oauth2.calls["refresh_token"]

    status, answer = pull(stack, team, account=team.account)
    assert status == 200
    error = answer["accounts"][0]["error"]
    assert "invalid_grant" in error and "expired or was revoked" in error
    assert "new refresh token" in error
    state = stack_storage().pull_state.get(team.team, team.account)
    assert state is not None and state["broken_reason"] and state["last_error"]

    # Other processes, scheduled pulls and sends: none of them asks the token endpoint again.
    for _ in range(3):
        as_a_new_process()
        assert pull(stack, team, account=team.account)[1]["accounts"][0]["error"]
    status, answer = send(stack, team, {"to": team.mailbox.address, "body_text": "x"})
    assert status == 502 and "marked broken" in answer["error"]["message"], answer
    assert stack.oauth2.calls["refresh_token"] - before == 1


def test_a_cached_token_refused_after_a_revocation_leads_to_the_token_endpoints_verdict(stack, oauth_team):
    team = oauth_team(refresh_token=True)
    assert pull(stack, team, account=team.account)[1]["accounts"][0]["error"] is None  # a token is cached now
    before = stack.oauth2.calls["refresh_token"]
    # Revoking the refresh token revokes its access tokens: Dovecot refuses the cached one.
    stack.oauth2.revoke(secret_auth(stack, team)["refresh_token"])
    status, answer = pull(stack, team, account=team.account, query={"debug": "true"})
    assert status == 200
    assert "invalid_grant" in answer["accounts"][0]["error"], answer
    assert sum(line == "C: AUTH XOAUTH2" for line in answer["debug"]) == 1  # one refused login, no more
    assert stack.oauth2.calls["refresh_token"] - before == 1
    assert stack_storage().pull_state.get(team.team, team.account)["broken_reason"]


def test_a_broken_account_works_again_once_its_secret_has_a_new_refresh_token(stack, oauth_team):
    team = oauth_team(refresh_token=True)
    auth = secret_auth(stack, team)
    stack.oauth2.revoke(auth["refresh_token"])
    assert pull(stack, team, account=team.account)[1]["accounts"][0]["error"]

    client = next(c for c in stack.oauth2._clients.values() if c.client_id == auth["client_id"])
    config = stack.oauth_account_config(team.mailbox.address, refresh_token=True)
    config["auth"].update(client_id=client.client_id, client_secret=client.client_secret)
    config["auth"]["refresh_token"] = stack.oauth2.issue_refresh_token(client)
    stack.put_team_secret(team.team, {"type": "mail", "accounts": {team.account: config}})
    as_a_new_process()

    status, answer = pull(stack, team, account=team.account)
    assert status == 200 and answer["accounts"][0]["error"] is None, answer
    assert "broken_reason" not in stack_storage().pull_state.get(team.team, team.account)


def test_a_token_the_server_refuses_is_diagnosed_with_the_decoded_xoauth2_status(stack, oauth_team):
    # The token is for another mailbox, so Dovecot's introspection finds a different username.
    team = oauth_team()
    other = stack.oauth2.add_client("someone-else@example.test")
    config = stack.oauth_account_config(team.mailbox.address)
    config["auth"].update(client_id=other.client_id, client_secret=other.client_secret)
    stack.put_team_secret(team.team, {"type": "mail", "accounts": {team.account: config}})
    status, answer = pull(stack, team, account=team.account, query={"debug": "true"})
    assert status == 200
    error = answer["accounts"][0]["error"]
    assert "OAuth2 (XOAUTH2) login" in error and "status 401" in error, answer
    assert any(line.startswith("S: -ERR") for line in answer["debug"])


def test_tokens_and_client_secrets_appear_in_no_answer_transcript_or_log(stack, oauth_team, capsys):
    team = oauth_team(refresh_token=True)
    auth = secret_auth(stack, team)
    stack.oauth2.rotating.add(auth["client_id"])
    issued_before = len(stack.oauth2.issued)
    texts = []
    status, answer = send(
        stack, team, {"to": team.mailbox.address, "body_text": "x"}, query={"debug": "true"}
    )
    assert status == 200, answer
    texts.append(json.dumps(answer))
    wait_for_messages(stack, team.mailbox.address, 1)
    status, answer = pull(stack, team, account=team.account, query={"debug": "true"})
    assert status == 200 and answer["accounts"][0]["fetched"] == 1, answer
    texts.append(json.dumps(answer))
    stored = stack_storage().mail.get(answer["accounts"][0]["mail_ids"][0])
    texts.append(stored.model_dump_json())
    logs = capsys.readouterr()
    texts += [logs.out, logs.err, stack.mail_servers.log_tail(200)]
    secrets = [auth["client_secret"], auth["refresh_token"], *stack.oauth2.issued[issued_before:]]
    assert len(secrets) >= 4  # client secret, refresh token, an access token, a rotated refresh token
    for secret in secrets:
        for text in texts:
            assert secret not in text


def test_the_demo_oauth2_account_sends_and_pulls_through_the_http_api(stack):
    info, token = stack.info["oauth_account"], stack.info["tokens"]["member"]
    stack.mail_servers.remove_all_mail(info["mailbox"])
    status, sent = call(
        stack,
        "POST",
        f"/api/core/mail/send/{info['account']}",
        token=token,
        body={"to": info["mailbox"], "subject": "Demo via OAuth2", "body_text": "x"},
    )
    assert status == 200, sent
    wait_for_messages(stack, info["mailbox"], 1)
    status, pulled = call(stack, "POST", f"/api/core/mail/pull/{info['account']}", token=token)
    assert status == 200 and pulled["accounts"][0]["error"] is None, pulled
    status, stored = call(stack, "GET", f"/api/core/mail/{pulled['accounts'][0]['mail_ids'][0]}", token=token)
    assert status == 200 and stored["mail"]["message_id"] == sent["mail"]["message_id"]


def test_a_shared_mailbox_address_is_kept_as_from_on_mail_sent_with_an_oauth2_login(stack, oauth_team):
    team = oauth_team(mail_from="Desk <desk@example.test>")
    status, answer = send(stack, team, {"to": team.mailbox.address, "subject": "From desk", "body_text": "x"})
    assert status == 200, answer
    wait_for_messages(stack, team.mailbox.address, 1)
    (message,) = read_mailbox(stack, team.mailbox)
    assert message["From"] == "Desk <desk@example.test>"


def test_a_pulled_sent_copy_with_from_rewritten_to_the_login_gives_a_warning(stack, oauth_team):
    # What Gmail's `recent:` POP3 serves after it rewrote From: the account's own mail, with the
    # login in From and the Message-ID the service made on the domain of mail_from.
    team = oauth_team(mail_from="Desk <desk@desk.example>")
    message = EmailMessage()
    message["From"] = team.mailbox.address
    message["To"] = "someone@example.test"
    message["Subject"] = "Sent copy"
    message["Message-ID"] = "<0123abcd@desk.example>"
    message.set_content("x")
    with smtplib.SMTP(stack.mail_servers.host, stack.mail_servers.ports.smtp, local_hostname="test") as smtp:
        smtp.send_message(message, to_addrs=[team.mailbox.address])
    wait_for_messages(stack, team.mailbox.address, 1)
    status, answer = pull(stack, team, account=team.account)
    assert status == 200, answer
    (warning,) = answer["accounts"][0]["warnings"]
    assert "rewrote From to the login" in warning and "desk@desk.example" in warning
