"""A real bounce: the local Postfix takes a mail for a domain it cannot reach (its `error:`
transport), writes a DSN into the sender's mailbox, and the pull links it to the outgoing mail."""

from __future__ import annotations

import time

from mailcore.wiring import pull as pull_wiring

from tests.fakes import MemoryPublisher
from tests.integration.test_outbox import queue, settled, stored
from tests.integration.test_pull import pull
from tests.stack import replace_in_root

NOWHERE = "someone@unreachable.example"


def test_a_dsn_from_postfix_is_linked_to_the_outgoing_mail_with_its_bounces_and_event(
    stack, new_team, monkeypatch
):
    team = new_team()
    mail = queue(stack, team, to=NOWHERE, subject="Will bounce")
    assert settled(mail["id"]).status == "sent"  # Postfix took it, then could not deliver it
    deadline = time.monotonic() + 20
    while stack.mail_servers.message_count(team.mailbox.address) < 1:
        assert time.monotonic() < deadline, stack.mail_servers.log_tail(20)
        time.sleep(0.1)

    published = MemoryPublisher()
    replace_in_root(monkeypatch, pull_wiring, events=published)
    status, answer = pull(stack, team, account=team.account)
    assert status == 200, answer

    outgoing = stored(mail["id"])
    assert outgoing.status == "bounced"
    (entry,) = outgoing.bounces
    assert entry["recipient"] == NOWHERE and entry["action"] == "failed" and entry["status"].startswith("5.")
    bounce = stored(entry["bounce"])
    assert bounce.bounce_of == mail["id"] and bounce.auto_reply and bounce.direction == "in"
    kinds = {event.detail_type: event for event in published.events}
    assert kinds["MailBounced"].mail_id == mail["id"] and kinds["MailBounced"].extra["failed"] == [NOWHERE]
    assert kinds["MailReceived"].extra == {"auto_reply": True, "bounce_of": mail["id"]}
