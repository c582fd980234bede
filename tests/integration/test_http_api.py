"""The service as a client sees it: HTTP on the local gateway, Cognito tokens, real mail servers."""

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from tests.integration.conftest import read_mailbox, wait_for_messages


def call(stack, method: str, path: str, *, token: str | None = None, body: Any = None) -> tuple[int, dict]:
    request = urllib.request.Request(stack.info["api_url"] + path, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data=data, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_a_mail_with_an_attachment_goes_out_and_comes_back_through_a_pull(stack):
    token, account, mailbox = stack.info["tokens"]["member"], stack.info["account"], stack.info["mailbox"]
    stack.mail_servers.remove_all_mail(mailbox)
    status, uploaded = call(
        stack,
        "POST",
        "/api/core/files",
        token=token,
        body={
            "name": "report.csv",
            "content_type": "text/csv",
            "content": base64.b64encode(b"a,b\n1,2\n").decode(),
        },
    )
    assert status == 201, uploaded
    status, sent = call(
        stack,
        "POST",
        f"/api/core/mail/send/{account}",
        token=token,
        body={
            "to": mailbox,
            "subject": "Quarterly report",
            "body_text": "The figures are attached.",
            "body_html": "<p>The <b>figures</b> are attached.<script>alert(1)</script></p>",
            "attachments": uploaded["file"]["id"],
        },
    )
    assert status == 200, sent
    assert sent["mail"]["status"] == "sent" and sent["mail"]["message_id"]
    wait_for_messages(stack, mailbox, 1)

    status, pulled = call(stack, "POST", f"/api/core/mail/pull/{account}", token=token)
    assert status == 200, pulled
    (report,) = pulled["accounts"]
    assert (report["fetched"], report["error"]) == (1, None)
    status, got = call(stack, "GET", f"/api/core/mail/{report['mail_ids'][0]}", token=token)
    assert status == 200
    mail = got["mail"]
    assert mail["direction"] == "in" and mail["subject"] == "Quarterly report"
    assert mail["message_id"] == sent["mail"]["message_id"]
    assert "The figures are attached." in mail["body_text"]
    assert "<b>figures</b>" in mail["body_html"] and "script" not in mail["body_html"]
    (file_id,) = mail["attachments"]
    status, described = call(stack, "GET", f"/api/core/files/{file_id}", token=token)
    assert status == 200 and described["file"]["name"] == "report.csv"
    with urllib.request.urlopen(described["file"]["url"], timeout=10) as download:
        assert download.read().replace(b"\r\n", b"\n") == b"a,b\n1,2\n"

    status, again = call(stack, "POST", f"/api/core/mail/pull/{account}", token=token)
    assert again["accounts"][0]["fetched"] == 0


def test_a_request_without_a_token_is_unauthorized(stack):
    status, _ = call(stack, "POST", f"/api/core/mail/pull/{stack.info['account']}")
    assert status == 401


def test_a_caller_in_no_mail_team_is_forbidden_the_demo_account(stack):
    status, answer = call(
        stack, "POST", f"/api/core/mail/pull/{stack.info['account']}", token=stack.info["tokens"]["outsider"]
    )
    assert status == 403 and answer["error"]["code"] == "not_a_member"


def test_an_unknown_account_is_not_found(stack):
    status, answer = call(stack, "POST", "/api/core/mail/pull/nobody", token=stack.info["tokens"]["member"])
    assert status == 404 and answer["error"]["field"] == "account"


def test_a_subject_with_a_line_break_is_refused_naming_the_field(stack):
    status, answer = call(
        stack,
        "POST",
        f"/api/core/mail/send/{stack.info['account']}",
        token=stack.info["tokens"]["member"],
        body={"to": stack.info["mailbox"], "subject": "Hi\r\nBcc: victim@example.test", "body_text": "x"},
    )
    assert status == 400 and answer["error"]["field"] == "subject"


def test_a_body_that_is_not_json_is_refused(stack):
    request = urllib.request.Request(
        stack.info["api_url"] + f"/api/core/mail/send/{stack.info['account']}",
        method="POST",
        data=b"{not json",
        headers={
            "Authorization": "Bearer " + stack.info["tokens"]["member"],
            "Content-Type": "application/json",
        },
    )
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("expected 400")
    except urllib.error.HTTPError as error:
        assert error.code == 400
        assert json.loads(error.read())["error"]["field"] == "body"


def test_the_sent_mail_is_in_the_real_mailbox(stack, new_team):
    # The demo member is in the demo team only; send with the demo account to a fresh mailbox.
    target = new_team()
    status, sent = call(
        stack,
        "POST",
        f"/api/core/mail/send/{stack.info['account']}",
        token=stack.info["tokens"]["member"],
        body={"to": target.mailbox.address, "cc": [], "subject": "Grüße", "body_text": "Hallo"},
    )
    assert status == 200, sent
    wait_for_messages(stack, target.mailbox.address, 1)
    (message,) = read_mailbox(stack, target.mailbox)
    assert message["Subject"] == "Grüße" and message["Message-ID"] == sent["mail"]["message_id"]
