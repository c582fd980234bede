"""The local gateway runs the functions in threads of this process, where Lambda gives each
request an execution environment of its own: concurrent requests must still be answered each
for itself (Powertools keeps the request on its resolvers' class: local.gateway.powertools_events_per_thread)."""

from __future__ import annotations

import sys
import threading

from tests.integration.test_console_browser import store_mail
from tests.integration.test_http_api import call
from tests.integration.test_pull_crash_loop import member_token

STORED = ("failed", "unknown")


def test_concurrent_requests_are_each_answered_for_their_own_query(stack, new_team):
    team = new_team()
    for status in STORED:
        store_mail(team, direction="out", status=status, subject=f"stuck {status}")
    token = member_token(stack, team.team)
    wrong: list[tuple[str, int, list[str]]] = []

    def ask(status: str) -> None:
        for _ in range(15):
            code, answer = call(stack, "GET", f"/api/core/mail?direction=out&status={status}", token=token)
            found = [mail["status"] for mail in answer.get("mail", [])]
            if code != 200 or found != ([status] if status in STORED else []):
                wrong.append((status, code, found))

    # The console's outbox asks for these four at once. Switching threads often makes their
    # requests overlap at every step, as a loaded machine does now and then.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        askers = [
            threading.Thread(target=ask, args=(status,)) for status in (*STORED, "queued", "sending") * 2
        ]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(120)
    finally:
        sys.setswitchinterval(before)
    assert wrong == [], f"{len(wrong)} of 120 answers were another request's: {wrong[:5]}"
