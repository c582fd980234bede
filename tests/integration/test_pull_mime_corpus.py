"""Real-world MIME: a corpus of awkward messages (this repo's, and CPython's own email test
messages when the interpreter ships them) pulled from the real Dovecot without a single crash."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

from mailcore.storage import MailQuery

from local.maildir import deliver_files
from tests.integration.conftest import claims, rest_event
from tests.stack import stack_storage

OURS = Path(__file__).parent.parent / "unit" / "data" / "mime"
CPYTHON_EMAIL_DATA = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"


def corpus() -> dict[str, bytes]:
    files = sorted(OURS.glob("*.eml")) + sorted(CPYTHON_EMAIL_DATA.glob("msg_*.txt"))
    return {path.name: path.read_bytes() for path in files}


def test_every_message_of_the_corpus_is_pulled_and_stored_once_without_a_crash(stack, new_team):
    team = new_team(leave_on_server=False)
    messages = corpus()
    assert len(messages) >= len(list(OURS.glob("*.eml")))
    deliver_files(stack.mail_servers, team.mailbox.address, messages.values())

    event = rest_event(
        "POST",
        f"/api/core/mail/pull/{team.account}",
        resource="/api/core/mail/pull/{account}",
        path_parameters={"account": team.account},
        caller=claims(team.team),
    )
    answer = stack.invoke("PullFunction", event)
    assert answer["statusCode"] == 200, answer["body"]
    (report,) = json.loads(answer["body"])["accounts"]
    assert report["error"] is None and report["fetched"] == len(messages)

    storage = stack_storage()
    stored, more = storage.mail.list_team(team.team, MailQuery(), after=None, limit=100)
    assert not more and len(stored) == len(messages) == len({mail.id for mail in stored})
    wanted = sorted(raw.replace(b"\r\n", b"\n").rstrip(b"\n") for raw in messages.values())
    kept = sorted(
        storage.blobs.get(mail.raw_key).replace(b"\r\n", b"\n").rstrip(b"\n")
        for mail in (storage.mail.get(found.id) for found in stored)
        if mail is not None and mail.raw_key
    )
    assert kept == wanted  # the raw bytes of each, parsed or not
    assert stack.mail_servers.message_count(team.mailbox.address) == 0
