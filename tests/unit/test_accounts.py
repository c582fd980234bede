"""The accounts use cases against in-memory adapters: secrets, validation, admins, lost updates."""

import contextlib
import json
import socket
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mailcore.errors import AccountNotFound, Conflict, InvalidInput, NotAMember
from mailcore.ids import new_id
from mailcore.models import Direction, Mail, MailAccount, MailStatus
from mailcore.services import accounts as accounts_service
from mailcore.services.accounts import (
    Accounts,
    CheckFailed,
    NotAnAdministrator,
    RevisionMismatch,
    changed_fields,
    merge_change,
)
from mailcore.services.team_writes import keep_rotated_refresh_token
from mailcore.teams import Caller

from tests.fakes import MemoryAccountRevisions, MemoryPublisher, MemoryTeamSecrets, memory_storage

PASSWORD = "pw-Very-Secret-42"
ACCOUNT = {
    "mail_from": "support@example.test",
    "mail_username": "support@example.test",
    "mail_password": PASSWORD,
    "smtp": {"host": "127.0.0.1", "port": 587, "security": "starttls"},
    "pop3": {"host": "127.0.0.1", "port": 995, "security": "ssl"},
}
# As the API hands callers over: `teams` only the groups with a mail team secret, `groups` all.
ADMIN = Caller("admin@example.test", frozenset({"sales"}), frozenset({"sales", "sales-admin"}))
MEMBER = Caller("member@example.test", frozenset({"sales"}), frozenset({"sales"}))
OUTSIDER = Caller("outsider@example.test", frozenset({"other"}), frozenset({"other"}))


def passing_check(team: str, name: str, account: Any) -> dict[str, Any]:
    return {"ok": True, "pop3": {"ok": True}, "smtp": {"ok": True}}


def make_accounts(checker=passing_check, secrets=None, revisions=None) -> tuple[Accounts, MemoryPublisher]:
    events = MemoryPublisher()
    accounts = Accounts(
        secrets=secrets or MemoryTeamSecrets({"sales": {"type": "mail", "accounts": {"support": ACCOUNT}}}),
        revisions=revisions or MemoryAccountRevisions(),
        storage=memory_storage(),
        events=events,
        checker=checker,
    )
    return accounts, events


def without_password(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "mail_password"}


def test_an_account_shows_whether_its_password_is_set_never_the_password():
    accounts, _ = make_accounts()
    view = accounts.get(MEMBER, "support", None)
    assert view["secrets"] == {
        "mail_password": True,
        "auth.client_secret": False,
        "auth.refresh_token": False,
    }
    assert "mail_password" not in view["configuration"]
    assert PASSWORD not in json.dumps(view)


def test_a_change_that_leaves_the_password_out_keeps_the_stored_one():
    accounts, _ = make_accounts()
    change = {
        **without_password(ACCOUNT),
        "smtp": {"host": "127.0.0.1", "port": 2587, "security": "starttls"},
    }
    accounts.save(ADMIN, "support", None, change, check=False, if_match=None)
    stored = accounts.secrets.read("sales")["accounts"]["support"]  # type: ignore[index]
    assert stored["mail_password"] == PASSWORD and stored["smtp"]["port"] == 2587


def test_an_oauth2_change_that_leaves_the_client_secret_out_keeps_it():
    auth = {
        "mode": "oauth2",
        "provider": "microsoft",
        "client_id": "app",
        "tenant_id": "t1",
        "client_secret": "cs-1",
    }
    stored = {**without_password(ACCOUNT), "auth": auth}
    change = {
        **without_password(ACCOUNT),
        "auth": {key: value for key, value in auth.items() if key != "client_secret"},
    }
    assert merge_change(stored, change)["auth"]["client_secret"] == "cs-1"


def test_an_invalid_change_names_the_field_and_saves_nothing():
    accounts, _ = make_accounts()
    before = accounts.secrets.read("sales")
    with pytest.raises(InvalidInput) as refused:
        accounts.save(
            ADMIN,
            "support",
            None,
            {**ACCOUNT, "smtp": {"host": "h", "port": 0, "security": "ssl"}},
            check=False,
            if_match=None,
        )
    assert refused.value.field == "smtp.port"
    assert accounts.secrets.read("sales") == before


def test_a_password_given_in_an_invalid_change_is_not_in_the_error():
    accounts, _ = make_accounts()
    with pytest.raises(InvalidInput) as refused:
        accounts.save(
            ADMIN, "new", "sales", {**ACCOUNT, "mail_password": 12345678}, check=False, if_match=None
        )
    assert refused.value.field == "mail_password" and "12345678" not in refused.value.message


def test_a_password_with_a_line_break_is_refused_naming_the_field_and_not_the_value():
    accounts, _ = make_accounts()
    before = accounts.secrets.read("sales")
    with pytest.raises(InvalidInput) as refused:
        accounts.save(
            ADMIN, "new", "sales", {**ACCOUNT, "mail_password": "pw\r\nDELE 1"}, check=False, if_match=None
        )
    assert refused.value.field == "mail_password" and "DELE" not in refused.value.message
    assert accounts.secrets.read("sales") == before


def test_a_member_who_is_not_in_the_admin_group_may_not_change_an_account():
    accounts, _ = make_accounts()
    with pytest.raises(NotAnAdministrator):
        accounts.save(MEMBER, "support", None, ACCOUNT, check=False, if_match=None)
    with pytest.raises(NotAnAdministrator):
        accounts.delete(MEMBER, "support", None, if_match=None)


def test_the_admin_group_alone_without_the_team_group_gives_nothing():
    accounts, _ = make_accounts()
    admin_only = Caller("x@example.test", frozenset(), frozenset({"sales-admin"}))
    with pytest.raises(NotAMember):
        accounts.save(admin_only, "support", "sales", ACCOUNT, check=False, if_match=None)
    with pytest.raises(NotAMember):
        accounts.list(admin_only, "sales")


def test_an_outsider_does_not_find_the_account():
    accounts, _ = make_accounts()
    with pytest.raises(AccountNotFound):
        accounts.get(OUTSIDER, "support", None)
    assert accounts.list(OUTSIDER, None) == []


def test_a_failing_check_refuses_the_change_with_the_field_to_fix():
    def failing(team: str, name: str, account: Any) -> dict[str, Any]:
        failure = {
            "ok": False,
            "problem": "auth_failed",
            "message": "authentication failed",
            "field": "mail_password",
        }
        return {"ok": False, "pop3": failure, "smtp": {"ok": True}}

    accounts, events = make_accounts(checker=failing)
    with pytest.raises(CheckFailed) as refused:
        accounts.save(
            ADMIN, "support", None, {**ACCOUNT, "mail_password": "wrong"}, check=True, if_match=None
        )
    assert refused.value.field == "mail_password"
    assert accounts.secrets.read("sales")["accounts"]["support"]["mail_password"] == PASSWORD  # type: ignore[index]
    assert events.events == []


def test_a_change_publishes_who_changed_which_fields_and_no_value():
    accounts, events = make_accounts()
    accounts.save(
        ADMIN, "support", None, {**ACCOUNT, "mail_password": "new-Secret-1"}, check=False, if_match=None
    )
    (event,) = events.events
    assert event.detail() == {
        "team": "sales",
        "account": "support",
        "action": "changed",
        "by": "admin@example.test",
        "fields": ["mail_password"],
    }
    assert "new-Secret-1" not in json.dumps(event.detail())


def test_a_new_account_is_created_in_the_only_team_the_caller_administers():
    accounts, events = make_accounts()
    view, created = accounts.save(ADMIN, "billing", None, ACCOUNT, check=False, if_match=None)
    assert created and view["team"] == "sales" and view["revision"] == 1
    assert events.events[0].detail()["action"] == "created"


def test_a_change_from_an_outdated_revision_is_refused():
    accounts, _ = make_accounts()
    accounts.save(ADMIN, "support", None, ACCOUNT, check=False, if_match=0)
    with pytest.raises(RevisionMismatch):
        accounts.save(ADMIN, "support", None, ACCOUNT, check=False, if_match=0)
    accounts.save(ADMIN, "support", None, ACCOUNT, check=False, if_match=1)


def test_deleting_removes_only_that_account():
    accounts, _ = make_accounts()
    accounts.save(ADMIN, "billing", "sales", ACCOUNT, check=False, if_match=None)
    accounts.delete(ADMIN, "support", None, if_match=None)
    assert list(accounts.secrets.read("sales")["accounts"]) == ["billing"]  # type: ignore[index]


def test_changed_fields_name_nested_fields():
    before = {"smtp": {"port": 1, "host": "a"}, "mail_password": "x"}
    after = {"smtp": {"port": 2, "host": "a"}, "mail_password": "y", "leave_on_server": False}
    assert changed_fields(before, after) == ["leave_on_server", "mail_password", "smtp.port"]


class RefusalsSeen(MemoryAccountRevisions):
    """The writer lease, telling when it refused a writer (another one held it)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = threading.Event()

    def acquire(self, team: str, holder: str, seconds: float) -> bool:
        taken = super().acquire(team, holder, seconds)
        if not taken:
            self.refused.set()
        return taken


class ReadsInStep(MemoryTeamSecrets):
    """Holds each writer's n-th read until the other writer has made its n-th read too, or the
    lease has refused a writer: without anything keeping them apart, both writers hold the same
    copy of the secret before either writes it. Neither within 10 s: the race did not happen, and
    the read fails (so the test cannot pass without it)."""

    def __init__(self, secrets: dict[str, Any], lease: RefusalsSeen, writers: int = 2) -> None:
        super().__init__(secrets)
        self.lease, self.writers = lease, writers
        self.reads: dict[int, int] = {}
        self.step = threading.Condition()

    def read(self, team: str) -> dict[str, Any] | None:
        value = super().read(team)
        me = threading.get_ident()
        with self.step:
            if me not in self.reads and len(self.reads) == self.writers:
                return value  # not a writer (the test reading what was written)
            self.reads[me] = mine = self.reads.get(me, 0) + 1
            self.step.notify_all()
            deadline = time.monotonic() + 10
            while not (met := self._met(mine)) and time.monotonic() < deadline:
                self.step.wait(0.02)  # a refusal notifies no one: look again now and then
        assert met, f"the writers never met: reads {self.reads}, no writer refused the lease"
        return value

    def _met(self, mine: int) -> bool:
        each_read = len(self.reads) == self.writers and min(self.reads.values()) >= mine
        return each_read or self.lease.refused.is_set()


def test_two_changes_at_the_same_time_both_survive():
    lease = RefusalsSeen()
    secrets = ReadsInStep({"sales": {"type": "mail", "accounts": {}}}, lease)
    accounts, _ = make_accounts(secrets=secrets, revisions=lease)
    errors: list[BaseException] = []

    def create(name: str) -> None:
        try:
            accounts.save(ADMIN, name, "sales", ACCOUNT, check=False, if_match=None)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=create, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(secrets.read("sales")["accounts"]) == ["first", "second"]  # type: ignore[index]
    assert lease.refused.is_set()  # the second writer came while the first held the lease


def outgoing(account: str, status: str, error: str | None, age: timedelta) -> Mail:
    return Mail(
        id=new_id(),
        team="sales",
        account=account,
        direction=Direction.OUT,
        status=MailStatus(status),
        error=error,
        created_at=datetime.now(UTC) - age,
    )


def test_health_shows_the_latest_send_and_its_error_as_the_last_error():
    accounts, _ = make_accounts()
    accounts.storage.mail.put_new(outgoing("support", "sent", None, timedelta(hours=2)))
    failed = outgoing(
        "support", "failed", "535 authentication failed; check the password", timedelta(hours=1)
    )
    accounts.storage.mail.put_new(failed)
    accounts.storage.pull_state.record("sales", "support", {"last_pull_at": "2026-01-01T00:00:00+00:00"})
    health = accounts.get(MEMBER, "support", None)["health"]
    assert health["last_send"]["mail_id"] == failed.id and health["last_send"]["status"] == "failed"
    assert health["last_error"]["source"] == "send" and "535" in health["last_error"]["message"]
    assert health["last_pull"]["at"] == "2026-01-01T00:00:00+00:00" and health["last_pull"]["error"] is None


def test_health_does_not_look_for_sends_older_than_a_week():
    accounts, _ = make_accounts()
    accounts.storage.mail.put_new(outgoing("support", "sent", None, timedelta(days=8)))
    assert accounts.get(MEMBER, "support", None)["health"]["last_send"] is None


def test_a_rotated_refresh_token_waits_for_an_account_change_to_finish():
    revisions = MemoryAccountRevisions()
    written: list[str] = []
    assert revisions.acquire("sales", "an-account-change", 60)
    rotation = threading.Thread(
        target=keep_rotated_refresh_token,
        args=(revisions, lambda team, account, token: written.append(token), "sales", "support", "rt-2"),
    )
    rotation.start()
    rotation.join(0.3)
    assert written == []  # it may not read the secret while the change is being written
    revisions.release("sales", "an-account-change", account=None, revision=None)
    rotation.join(5)
    assert written == ["rt-2"]


def test_a_rotated_refresh_token_is_written_even_when_the_lease_stays_taken():
    revisions = MemoryAccountRevisions()
    written: list[str] = []
    assert revisions.acquire("sales", "a-stuck-writer", 60)
    keep_rotated_refresh_token(
        revisions, lambda team, account, token: written.append(token), "sales", "support", "rt-3", wait=0.1
    )
    assert written == ["rt-3"]


def test_a_checked_change_is_not_saved_when_the_kept_password_changed_during_the_check():
    accounts: Accounts

    def check_while_someone_changes_the_password(team: str, name: str, account: Any) -> dict[str, Any]:
        other = accounts.secrets.read("sales")
        other["accounts"]["support"]["mail_password"] = "changed-meanwhile"  # type: ignore[index]
        accounts.secrets.write("sales", other)  # type: ignore[arg-type]
        return passing_check(team, name, account)

    accounts, _ = make_accounts(checker=check_while_someone_changes_the_password)
    with pytest.raises(Conflict):
        accounts.save(ADMIN, "support", None, without_password(ACCOUNT), check=True, if_match=None)
    assert accounts.secrets.read("sales")["accounts"]["support"]["mail_password"] == "changed-meanwhile"  # type: ignore[index]


@pytest.mark.parametrize(
    "change",
    [
        {**ACCOUNT, "mail_from": PASSWORD},
        {**ACCOUNT, "auth": {"mode": PASSWORD}},
        {
            **without_password(ACCOUNT),
            "auth": {"mode": "oauth2", "provider": "google", "client_id": "c", "client_secret": PASSWORD},
            "mail_from": PASSWORD,
        },
    ],
    ids=["password-in-mail_from", "password-as-auth-mode", "client-secret-in-mail_from"],
)
def test_a_secret_pasted_into_a_field_whose_error_quotes_its_input_is_masked_there(change):
    accounts, _ = make_accounts()
    with pytest.raises(InvalidInput) as refused:
        accounts.save(ADMIN, "new", "sales", change, check=False, if_match=None)
    assert PASSWORD not in refused.value.message and "<redacted>" in refused.value.message


def test_a_change_too_large_for_the_team_secret_is_refused_naming_the_longest_field():
    # Each field has a limit; the secret's 64 KB is reached by many accounts with long tokens.
    auth = {"mode": "oauth2", "provider": "google", "client_id": "c", "client_secret": "s"}
    long_token = {**without_password(ACCOUNT), "auth": {**auth, "refresh_token": "t" * 8000}}
    team = {"type": "mail", "accounts": {f"a{number}": long_token for number in range(8)}}
    accounts, _ = make_accounts(secrets=MemoryTeamSecrets({"sales": team}))
    before = accounts.secrets.read("sales")
    with pytest.raises(InvalidInput, match="over the 65536") as refused:
        accounts.save(ADMIN, "a8", "sales", long_token, check=False, if_match=None)
    assert refused.value.field == "auth.refresh_token"
    assert accounts.secrets.read("sales") == before


def test_a_check_through_the_api_answers_before_the_gateway_gives_up_whatever_the_accounts_timeout(
    monkeypatch,
):
    # A server that takes the connection and never says a word; the account waits 300 s an answer.
    silent = socket.create_server(("127.0.0.1", 0), backlog=8)
    port = silent.getsockname()[1]
    monkeypatch.setattr(accounts_service, "CHECK_ANSWER_SECONDS", 0.3, raising=False)
    account = MailAccount.model_validate(
        {
            **ACCOUNT,
            "timeout_seconds": 300,
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
            "pop3": {"host": "127.0.0.1", "port": port, "security": "none"},
        }
    )
    results: list[dict[str, Any]] = []
    checking = threading.Thread(
        target=lambda: results.append(
            accounts_service.check_account(
                "sales", "support", account, tls_context=ssl.create_default_context()
            )
        ),
        daemon=True,
    )
    try:
        checking.start()
        checking.join(10)
    finally:
        silent.close()
    assert results, "the check was still waiting after 10 s"
    assert not results[0]["pop3"]["ok"] and not results[0]["smtp"]["ok"]
    assert results[0]["pop3"]["problem"] == "timeout"  # smtplib calls a silent server "dropped"


def test_a_check_asks_a_failing_token_endpoint_once_for_both_protocols(monkeypatch):
    from mailcore import oauth2

    # A token endpoint that takes each connection and never answers: each ask costs its timeout.
    stalled = socket.create_server(("127.0.0.1", 0), backlog=8)
    taken: list[socket.socket] = []

    def take() -> None:
        with contextlib.suppress(OSError):
            while True:
                taken.append(stalled.accept()[0])

    threading.Thread(target=take, daemon=True).start()
    monkeypatch.setattr(oauth2, "TOKEN_TIMEOUT_SECONDS", 0.3)
    auth = {
        "mode": "oauth2",
        "provider": "generic",
        "client_id": "c",
        "client_secret": "s",
        "scope": "mail",
        "token_url": f"http://127.0.0.1:{stalled.getsockname()[1]}/token",
    }
    account = MailAccount.model_validate({**without_password(ACCOUNT), "auth": auth})
    try:
        result = accounts_service.check_account(
            "sales", "support", account, tls_context=ssl.create_default_context()
        )
    finally:
        stalled.close()
        for connection in taken:
            connection.close()
    assert result["pop3"]["field"] == result["smtp"]["field"] == "auth.client_secret"
    assert len(taken) == 1
