"""Pulling through the pull function's handler, against the real Dovecot and moto."""

import json
import smtplib
import time
from email.message import EmailMessage

from tests.integration.conftest import call_function, claims, wait_for_messages
from tests.stack import stack_storage


def deliver(stack, address: str, subject: str, *, html: str | None = None, text: str = "hello") -> None:
    """Puts a message into a mailbox the way the world would (SMTP to Postfix, no login), and waits
    until Dovecot has it."""
    waiting = stack.mail_servers.message_count(address)
    message = EmailMessage()
    message["From"] = "Sender <sender@example.test>"
    message["To"] = address
    message["Subject"] = subject
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    with smtplib.SMTP(stack.mail_servers.host, stack.mail_servers.ports.smtp, local_hostname="test") as smtp:
        smtp.send_message(message)
    wait_for_messages(stack, address, waiting + 1)


def pull(stack, team, *, account=None, query=None, caller=None):
    resource, params = (
        ("/api/core/mail/pull", None)
        if account is None
        else ("/api/core/mail/pull/{account}", {"account": account})
    )
    return call_function(
        stack,
        "PullFunction",
        "POST",
        resource,
        params=params,
        query=query,
        caller=caller or claims(team.team),
    )


def test_a_pull_stores_each_new_message_with_text_and_safe_html(stack, new_team):
    team = new_team()
    deliver(
        stack,
        team.mailbox.address,
        "Offer",
        html='<p onclick="x()">Deal <a href="https://e.test">here</a></p>',
    )
    status, answer = pull(stack, team, account=team.account)
    assert status == 200
    (report,) = answer["accounts"]
    assert report["fetched"] == 1 and report["error"] is None
    mail = stack_storage().mail.get(report["mail_ids"][0])
    assert mail.subject == "Offer" and mail.direction == "in" and mail.status == "received"
    assert mail.body_text.strip() == "hello"
    assert "onclick" not in mail.body_html and 'rel="noopener noreferrer"' in mail.body_html
    assert stack_storage().blobs.get(mail.raw_key).startswith(b"")


def test_a_second_pull_fetches_nothing_new(stack, new_team):
    team = new_team(leave_on_server=True)
    deliver(stack, team.mailbox.address, "Once")
    pull(stack, team, account=team.account)
    _, answer = pull(stack, team, account=team.account)
    assert answer["accounts"][0]["fetched"] == 0 and answer["accounts"][0]["skipped"] == 1


def test_mail_is_left_on_the_server_when_the_account_says_so(stack, new_team):
    team = new_team(leave_on_server=True)
    deliver(stack, team.mailbox.address, "Stay")
    _, answer = pull(stack, team, account=team.account)
    assert answer["accounts"][0]["deleted"] == 0
    assert stack.mail_servers.message_count(team.mailbox.address) == 1


def test_mail_is_deleted_from_the_server_after_it_is_stored_when_the_account_says_so(stack, new_team):
    team = new_team(leave_on_server=False)
    deliver(stack, team.mailbox.address, "Go")
    _, answer = pull(stack, team, account=team.account)
    assert answer["accounts"][0]["deleted"] == 1
    assert stack_storage().mail.get(answer["accounts"][0]["mail_ids"][0]) is not None
    assert stack.mail_servers.message_count(team.mailbox.address) == 0


def test_pulling_all_accounts_covers_every_mail_team_of_the_caller(stack, new_team):
    first, second = new_team(), new_team()
    for team in (first, second):
        deliver(stack, team.mailbox.address, f"for {team.team}")
    status, answer = pull(stack, first, caller=claims(first.team, second.team, "not-a-mail-team"))
    assert status == 200
    assert sorted((r["team"], r["fetched"]) for r in answer["accounts"]) == sorted(
        [(first.team, 1), (second.team, 1)]
    )


def test_one_broken_account_does_not_stop_the_others(stack, new_team):
    broken = new_team(mail_password="not-the-password")
    working = new_team()
    deliver(stack, working.mailbox.address, "still arrives")
    _, answer = pull(stack, working, caller=claims(broken.team, working.team))
    reports = {r["team"]: r for r in answer["accounts"]}
    assert "login failed" in reports[broken.team]["error"]
    assert "not-the-password" not in json.dumps(answer)
    assert reports[working.team]["fetched"] == 1


def test_the_pop3_transcript_redacts_the_password(stack, new_team):
    team = new_team()
    _, answer = pull(stack, team, account=team.account, query={"debug": "true"})
    transcript = "\n".join(answer["debug"])
    assert "C: PASS <redacted>" in transcript and "UIDL" in transcript
    assert team.mailbox.password not in transcript


def test_pop3_with_stls_and_plain_work_too(stack, new_team):
    for security in ("starttls", "none"):
        team = new_team(
            pop3={"host": "127.0.0.1", "port": stack.mail_servers.ports.pop3, "security": security}
        )
        deliver(stack, team.mailbox.address, security)
        _, answer = pull(stack, team, account=team.account)
        assert answer["accounts"][0]["fetched"] == 1, answer


def test_a_changed_team_secret_takes_effect_without_a_restart(stack, new_team):
    team = new_team(mail_password="wrong-at-first")
    _, answer = pull(stack, team, account=team.account)
    assert answer["accounts"][0]["error"]
    stack.put_team_secret(
        team.team, {"type": "mail", "accounts": {team.account: stack.account_config(team.mailbox)}}
    )
    time.sleep(1.2)  # the stack under test caches secrets for one second
    _, answer = pull(stack, team, account=team.account)
    assert answer["accounts"][0]["error"] is None


def test_a_mail_whose_body_is_too_large_for_its_item_is_stored_with_the_body_in_the_bucket(stack, new_team):
    # Bodies over the item's inline limit (mailcore.adapters.dynamodb.BODY_INLINE_LIMIT) go to S3
    # under bodies/: without the PullFunction's grant there, such a newsletter stopped the account.
    team = new_team()
    paragraphs = "".join(f"<p>Paragraph {n} of a long newsletter.</p>" for n in range(8_000))
    deliver(stack, team.mailbox.address, "Newsletter", html=paragraphs)
    wait_for_messages(stack, team.mailbox.address, 1)

    status, answer = pull(stack, team, account=team.account)

    assert status == 200, answer
    (report,) = answer["accounts"]
    assert report["fetched"] == 1 and report["error"] is None
    mail = stack_storage().mail.get(report["mail_ids"][0])
    assert "Paragraph 7999 of a long newsletter." in mail.body_html
