"""Issue 9, item 5, against the real Dovecot and the local stack's execution environments: a
message whose preparing takes the PullFunction over its MemorySize kills the function (its worker
process and the parser child with it), the API answers as API Gateway does, and after the function
died on it twice the next pull sets it aside and stores the ordinary mail behind it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

from mailcore.services.pull import MAX_DEATHS

from bench import hostile_shapes
from local.aws import cognito_user
from local.maildir import deliver_files
from tests.integration.test_pull_hostile_mail import uidls
from tests.stack import stack_storage

# A PullFunction of this size pulls ordinary mail (a warm worker and its parser child peak at
# ~110-125 MiB here) but not DEADLY: parsing its 600,000 lines takes the parser child past it.
LOWERED_MEMORY_MB = 160
DEADLY = b"From: Big <big@example.test>\r\nSubject: deadly\r\n\r\n" + b"line of text\r\n" * 600_000
ORDINARY = [hostile_shapes.ordinary(20_000).replace(b"Your order", b"Your order %d" % n) for n in range(3)]


def member_token(stack, team: str) -> str:
    email, password = f"member-{team}@example.test", "Member-" + uuid.uuid4().hex[:12] + "1!"
    endpoint = stack.info["aws_endpoint"]
    cognito_user(stack.session, endpoint, *stack.user_pool(), email=email, password=password, groups=[team])
    return stack.token(email, password)


def pull_over_http(stack, account: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{stack.info['api_url']}/api/core/mail/pull/{account}", method="POST", data=b""
    )
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def lease_runs_out(stack, team) -> None:
    """A killed pull never gives its lease back; it stops counting once expired, and the next
    pull learns from it that a pull died (adapters/dynamodb.py). The test moves the lease's
    expiry instead of waiting the function's Timeout for it."""
    stack.session.client("dynamodb").update_item(
        TableName=stack.info["environment"]["PULL_STATE_TABLE"],
        Key={"pk": {"S": f"{team.team}#{team.account}"}, "sk": {"S": "LEASE"}},
        UpdateExpression="SET lease_until = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )


def test_a_message_that_kills_the_function_is_set_aside_after_two_deaths_and_the_mail_behind_it_arrives(
    stack, new_team
):
    team = new_team(leave_on_server=False)
    token = member_token(stack, team.team)
    deliver_files(stack.mail_servers, team.mailbox.address, [DEADLY])
    assert len(uidls(stack, team.mailbox)) == 1  # numbered first: in front
    deliver_files(stack.mail_servers, team.mailbox.address, ORDINARY)

    with stack.gateway.isolated(memory={"PullFunction": LOWERED_MEMORY_MB}):
        for _ in range(MAX_DEATHS):
            status, text = pull_over_http(stack, team.account, token)
            # API Gateway's answer to a function that failed, shaped by the API's GatewayResponses.
            assert status == 502 and json.loads(text)["error"]["code"] == "INTEGRATION_FAILURE", text
            assert "Traceback" not in text and "killed" not in text
            lease_runs_out(stack, team)
        status, text = pull_over_http(stack, team.account, token)
        environments = stack.gateway.runtime("PullFunction").environments

    assert status == 200, text
    (report,) = json.loads(text)["accounts"]
    assert (report["fetched"], report["set_aside"], report["error"]) == (4, 1, None)
    assert environments == MAX_DEATHS + 1  # each death, a new execution environment
    storage = stack_storage()
    aside = storage.mail.get(report["mail_ids"][0])
    assert aside.parse_error == f"set aside: the function died preparing it {MAX_DEATHS} times"
    assert (aside.subject, aside.raw_size) == ("deadly", len(DEADLY))
    assert storage.blobs.get(aside.raw_key).replace(b"\r\n", b"\n") == DEADLY.replace(b"\r\n", b"\n")
    subjects = {storage.mail.get(mail_id).subject for mail_id in report["mail_ids"][1:]}
    assert subjects == {f"Your order {n}" for n in range(3)}
    assert stack.mail_servers.message_count(team.mailbox.address) == 0
