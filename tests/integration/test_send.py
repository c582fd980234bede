"""Sending through the send function's handler, against the real Postfix and moto."""

import json

import pytest

from tests.integration.conftest import claims, read_mailbox, rest_event, wait_for_messages
from tests.stack import stack_storage


def send(stack, team, body, *, query=None, caller=None):
    event = rest_event(
        "POST",
        f"/api/core/mail/send/{team.account}",
        resource="/api/core/mail/send/{account}",
        path_parameters={"account": team.account},
        query=query,
        body=json.dumps(body),
        caller=caller or claims(team.team),
    )
    answer = stack.invoke("SendFunction", event)
    return answer["statusCode"], json.loads(answer["body"])


def test_a_sent_mail_is_stored_with_its_raw_message_and_status_sent(stack, new_team):
    team = new_team()
    status, answer = send(stack, team, {"to": team.mailbox.address, "subject": "Stored", "body_text": "kept"})
    assert status == 200
    stored = stack_storage().mail.get(answer["mail"]["id"])
    assert stored is not None and stored.status == "sent" and stored.direction == "out"
    raw = stack_storage().blobs.get(stored.raw_key)
    assert stored.message_id.encode() in raw


def test_bcc_recipients_get_the_mail_but_never_see_the_header(stack, new_team):
    team, hidden = new_team(), new_team()
    status, _ = send(
        stack, team, {"to": team.mailbox.address, "bcc": hidden.mailbox.address, "body_text": "x"}
    )
    assert status == 200
    wait_for_messages(stack, hidden.mailbox.address, 1)
    (message,) = read_mailbox(stack, hidden.mailbox)
    assert message["Bcc"] is None


def test_mail_from_may_be_a_shared_mailbox_sent_with_another_login(stack, new_team):
    team = new_team(mail_from="Shared Desk <shared@example.test>")
    status, answer = send(stack, team, {"to": team.mailbox.address, "body_text": "from the desk"})
    assert status == 200, answer
    wait_for_messages(stack, team.mailbox.address, 1)
    (message,) = read_mailbox(stack, team.mailbox)
    assert message["From"] == "Shared Desk <shared@example.test>"


@pytest.mark.parametrize(
    ("port_name", "security"), [("smtps", "ssl"), ("smtp", "starttls"), ("smtp", "none")]
)
def test_every_smtp_security_mode_sends(stack, new_team, port_name, security):
    smtp = {"host": "127.0.0.1", "port": getattr(stack.mail_servers.ports, port_name), "security": security}
    team = new_team(smtp=smtp)
    status, answer = send(stack, team, {"to": team.mailbox.address, "body_text": security})
    assert status == 200, answer


def test_a_wrong_password_fails_with_502_stores_the_mail_failed_and_never_shows_the_password(
    stack, new_team, capsys
):
    team = new_team(mail_password="wrong-password-x7")
    status, answer = send(
        stack, team, {"to": team.mailbox.address, "body_text": "x"}, query={"debug": "true"}
    )
    assert status == 502
    assert answer["error"]["code"] == "mail_server_error"
    assert "authentication failed" in answer["error"]["message"]
    assert answer["mail"]["status"] == "failed"
    assert stack_storage().mail.get(answer["mail"]["id"]).status == "failed"
    assert "C: AUTH PLAIN <redacted>" in answer["debug"]
    logs = capsys.readouterr()
    for text in (json.dumps(answer), logs.out, logs.err):
        assert "wrong-password-x7" not in text


def test_the_debug_transcript_shows_the_conversation_without_credentials(stack, new_team):
    import base64

    team = new_team()
    status, answer = send(
        stack, team, {"to": team.mailbox.address, "body_text": "x"}, query={"debug": "true"}
    )
    assert status == 200
    transcript = "\n".join(answer["debug"])
    assert "c: starttls" in transcript.lower() and "c: mail from:" in transcript.lower()
    assert "C: AUTH PLAIN <redacted>" in transcript
    password = team.mailbox.password
    plain = base64.b64encode(f"\0{team.mailbox.address}\0{password}".encode()).decode()
    assert password not in transcript and plain not in transcript


def test_a_refused_server_gives_202_with_the_mail_deferred_and_the_reason(stack, new_team):
    team = new_team(smtp={"host": "127.0.0.1", "port": 1, "security": "starttls"})
    status, answer = send(stack, team, {"to": team.mailbox.address, "body_text": "x"})
    assert status == 202 and "refused" in answer["error"]["message"]
    assert answer["error"]["code"] == "mail_deferred" and answer["mail"]["status"] == "deferred"


def test_an_attachment_of_another_team_is_refused(stack, new_team):
    from tests.integration.test_files import upload

    mine, theirs = new_team(), new_team()
    file_id = upload(stack, theirs.team, b"secret plans")["file"]["id"]
    status, answer = send(
        stack, mine, {"to": mine.mailbox.address, "body_text": "x", "attachments": [file_id]}
    )
    assert status == 400 and answer["error"]["field"] == "attachments"


def test_two_teams_with_the_same_account_name_need_the_team_parameter(stack, new_team):
    first, second = new_team(), new_team()
    both = claims(first.team, second.team)
    status, answer = send(stack, first, {"to": first.mailbox.address, "body_text": "x"}, caller=both)
    assert status == 409 and answer["error"]["field"] == "team"
    status, answer = send(
        stack,
        first,
        {"to": first.mailbox.address, "body_text": "x"},
        caller=both,
        query={"team": second.team},
    )
    assert status == 200 and answer["mail"]["team"] == second.team


def test_a_request_without_a_body_names_body_text(stack, new_team):
    team = new_team()
    status, answer = send(stack, team, {"to": team.mailbox.address})
    assert status == 400 and answer["error"]["field"] == "body_text"


def test_an_unknown_field_is_refused_naming_it(stack, new_team):
    team = new_team()
    status, answer = send(stack, team, {"to": team.mailbox.address, "body_text": "x", "sender": "a@b.test"})
    assert status == 400 and answer["error"]["field"] == "sender"


def test_an_account_whose_password_is_in_another_script_logs_in_and_sends(stack):
    import secrets

    from local.mailservers import Mailbox
    from tests.integration.conftest import TeamAccount

    password = f"пароль-密码-ñ-{secrets.token_hex(4)}"
    mailbox = Mailbox(f"utf8-{secrets.token_hex(4)}@example.test", password)
    stack.mail_servers.add_mailboxes([mailbox])
    team = TeamAccount(f"utf8-{secrets.token_hex(4)}", "main", mailbox)
    stack.put_team_secret(team.team, {"type": "mail", "accounts": {"main": stack.account_config(mailbox)}})
    status, answer = send(stack, team, {"to": mailbox.address, "body_text": "x"}, query={"debug": "true"})
    assert status == 200, answer
    assert password not in json.dumps(answer, ensure_ascii=False)
    wait_for_messages(stack, mailbox.address, 1)
