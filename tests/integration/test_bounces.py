"""A real bounce: the local Postfix takes a mail for a domain it cannot reach (its `error:`
transport), writes a DSN into the sender's mailbox, and the pull links it to the outgoing mail."""

from __future__ import annotations

from tests.integration.conftest import bus_to_queue, drain, wait_for_messages
from tests.integration.test_outbox import queue, settled, stored
from tests.integration.test_pull import pull

NOWHERE = "someone@unreachable.example"


def test_a_dsn_from_postfix_is_linked_to_the_outgoing_mail_with_its_bounces_and_event(stack, new_team):
    team = new_team()
    pattern = {"detail-type": ["MailBounced", "MailReceived"], "detail": {"team": [team.team]}}
    events = bus_to_queue(stack, f"bounced-{team.team}", pattern)
    mail = queue(stack, team, to=NOWHERE, subject="Will bounce")
    assert settled(mail["id"]).status == "sent"  # Postfix took it, then could not deliver it
    wait_for_messages(stack, team.mailbox.address, 1, timeout=20)  # its DSN

    status, answer = pull(stack, team, account=team.account)
    assert status == 200, answer

    outgoing = stored(mail["id"])
    assert outgoing.status == "bounced"
    (entry,) = outgoing.bounces
    assert entry["recipient"] == NOWHERE and entry["action"] == "failed" and entry["status"].startswith("5.")
    bounce = stored(entry["bounce"])
    assert bounce.bounce_of == mail["id"] and bounce.auto_reply and bounce.direction == "in"
    kinds = {event["detail-type"]: event["detail"] for event in drain(stack, events, 2)}
    assert kinds["MailBounced"]["mail_id"] == mail["id"] and kinds["MailBounced"]["failed"] == [NOWHERE]
    assert kinds["MailReceived"]["mail_id"] == bounce.id
    assert kinds["MailReceived"]["auto_reply"] is True and kinds["MailReceived"]["bounce_of"] == mail["id"]
