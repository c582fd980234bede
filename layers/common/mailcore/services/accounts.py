"""A team's mail accounts as the accounts API and the console see them: read, check, change.

Who may do what (docs/accounts.md): members of a team (Cognito group `<team>`, the team having a
mail team secret) read its accounts; its administrators, members who are also in the Cognito
group `<team>-admin`, create, change, delete and check them.

Secret values (mail_password, auth.client_secret, auth.refresh_token) never leave this module in
an answer or an event: an answer says only whether each is set; a change that leaves one out
keeps the stored value. Changes of one team's accounts are serialised by the team's writer lease
(adapters/dynamodb.py), so two at the same time never lose one of them; `If-Match` with the
account's revision refuses a change made from an outdated copy.
"""

from __future__ import annotations

import io
import json
import re
import ssl
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from mailcore.check import Connection, check_pop3, check_smtp
from mailcore.errors import (
    AccountNotFound,
    AmbiguousAccount,
    Conflict,
    InvalidInput,
    MailServerError,
    MailServiceError,
    NotAMember,
    NotFound,
)
from mailcore.events import ACCOUNT_CHANGED, AccountChanged
from mailcore.models import NAME_PATTERN, MailAccount, TeamConfig
from mailcore.oauth2 import OAuth2Error, TokenBroker
from mailcore.ports import AccountRevisions, EventPublisher, TeamSecrets
from mailcore.protocols.deadline import Deadline
from mailcore.protocols.diagnose import diagnosis
from mailcore.protocols.transcript import Transcript
from mailcore.services.team_writes import Writer, writer_lease
from mailcore.storage import MailQuery, Storage
from mailcore.teams import Caller

ADMIN_GROUP_SUFFIX = "-admin"
SECRET_FIELDS = ("mail_password", "auth.client_secret", "auth.refresh_token")
LAST_SEND_DAYS = 7
# Seconds per server answer in a check through the API: POP3 and SMTP each stuck at one step
# stay under API Gateway's 29 s.
CHECK_ANSWER_SECONDS = 10.0
# The whole check (token, POP3, SMTP) ends within this, however slowly a server drips its
# answers: the token request gets at most CHECK_ANSWER_SECONDS of it, POP3 half of what is left.
CHECK_SECONDS = 24.0
# Secrets Manager's limit on a SecretString; the team secret holds all of the team's accounts.
MAX_TEAM_SECRET_BYTES = 65536
_NAME = re.compile(NAME_PATTERN)


class NotAnAdministrator(NotAMember, code="not_an_administrator"): ...


class RevisionMismatch(MailServiceError, status=412, code="revision_mismatch"): ...


class CheckFailed(MailServiceError, status=422, code="check_failed"):
    """`?check=true` and the account does not work: nothing was saved."""

    def __init__(self, message: str, *, field: str | None, check: dict[str, Any]) -> None:
        super().__init__(message, field=field)
        self.check = check


AccountChecker = Callable[[str, str, MailAccount], dict[str, Any]]


@dataclass
class Accounts:
    secrets: TeamSecrets
    revisions: AccountRevisions
    storage: Storage
    events: EventPublisher
    checker: AccountChecker
    # Called after a write so that cached copies of the team secret (Powertools) are dropped.
    on_written: Callable[[], None] = lambda: None

    # --- reading ------------------------------------------------------------------------------
    def mail_config(self, team: str) -> dict[str, Any] | None:
        raw = self.secrets.read(team)
        return raw if raw is not None and raw.get("type") == "mail" else None

    def list(self, caller: Caller, team: str | None) -> list[dict[str, Any]]:
        if team is not None and team not in caller.teams:
            raise NotAMember(f"you are not a member of team {team!r}", field="team")
        views = []
        for name in sorted({team} if team else caller.teams):
            raw = self.mail_config(name)
            if raw is None:
                if team is not None:
                    raise NotFound(f"team {team!r} has no mail team secret", field="team")
                continue
            revisions = self.revisions.revisions(name)
            for account, config in sorted(dict(raw.get("accounts") or {}).items()):
                views.append(self.view(name, account, config, revisions.get(account, 0)))
        return views

    def get(self, caller: Caller, account: str, team: str | None) -> dict[str, Any]:
        found, config = self.find(caller, account, team)
        return self.view(found, account, config, self.revisions.revisions(found).get(account, 0))

    def find(self, caller: Caller, account: str, team: str | None) -> tuple[str, dict[str, Any]]:
        """(team, stored account JSON) of the caller's account; 403, 404 or 409 otherwise."""
        teams = [team] if team is not None else sorted(caller.teams)
        if team is not None and team not in caller.teams:
            raise NotAMember(f"you are not a member of team {team!r}", field="team")
        found = []
        for name in teams:
            accounts = dict((self.mail_config(name) or {}).get("accounts") or {})
            if account in accounts:
                found.append((name, accounts[account]))
        if len(found) > 1:
            names = ", ".join(name for name, _ in found)
            raise AmbiguousAccount(
                f"several of your teams have an account {account!r} ({names}); name one with ?team=",
                field="team",
            )
        if not found:
            where = f"team {team!r} has no" if team else "none of your teams has a"
            raise AccountNotFound(f"{where} mail account {account!r}", field="account")
        return found[0]

    def view(self, team: str, account: str, config: dict[str, Any], revision: int) -> dict[str, Any]:
        configuration, secrets = public_configuration(config)
        return {
            "team": team,
            "account": account,
            "configuration": configuration,
            "secrets": secrets,
            "revision": revision,
            "health": account_health(self.storage, team, account),
        }

    # --- checking -----------------------------------------------------------------------------
    def check_saved(self, caller: Caller, account: str, team: str | None) -> dict[str, Any]:
        # Members may check, as they may pull: both log in the same way.
        found, config = self.find(caller, account, team)
        return {"team": found, "account": account, **self.checker(found, account, validated(config))}

    # --- changing -----------------------------------------------------------------------------
    def save(
        self,
        caller: Caller,
        account: str,
        team: str | None,
        change: dict[str, Any],
        *,
        check: bool,
        if_match: int | None,
    ) -> tuple[dict[str, Any], bool]:
        """Creates or changes an account; (its view, whether it was created)."""
        if not _NAME.match(account):
            raise InvalidInput("an account name is 1-64 letters, digits, '.', '_' or '-'", field="account")
        target = self.team_to_change(caller, account, team)
        require_admin(caller, target)
        stored = dict((self.mail_config(target) or {}).get("accounts") or {}).get(account)
        candidate = merge_change(stored, change)
        checked = validated(candidate)
        if check:
            result = self.checker(target, account, checked)
            if not result["ok"]:
                raise failed_check(result)
        with self.writer(target) as writer:
            # Read again under the lease: a change written meanwhile is in it, and kept.
            raw = self.mail_config(target)
            if raw is None:
                raise NotFound(f"team {target!r} has no mail team secret", field="team")
            accounts = dict(raw.get("accounts") or {})
            revision = self.revisions.revisions(target).get(account, 0)
            expect_revision(if_match, revision, account)
            previous = accounts.get(account)
            final = merge_change(previous, change)
            if check and final != candidate:
                # What would be saved is not what was checked (a kept secret changed meanwhile).
                raise Conflict(
                    f"account {account!r} changed while it was checked; try again", field="account"
                )
            validated(final)
            accounts[account] = final
            self.write(target, {**raw, "accounts": accounts})
            writer.changed(account, revision + 1)
        self.publish(caller, target, account, "created" if previous is None else "changed", previous, final)
        return self.view(target, account, final, revision + 1), previous is None

    def delete(self, caller: Caller, account: str, team: str | None, *, if_match: int | None) -> None:
        target, _ = self.find(caller, account, team)
        require_admin(caller, target)
        with self.writer(target) as writer:
            raw = self.mail_config(target) or {}
            accounts = dict(raw.get("accounts") or {})
            if account not in accounts:
                raise AccountNotFound(f"team {target!r} has no mail account {account!r}", field="account")
            revision = self.revisions.revisions(target).get(account, 0)
            expect_revision(if_match, revision, account)
            previous = accounts.pop(account)
            self.write(target, {**raw, "accounts": accounts})
            writer.changed(account, revision + 1)
        self.publish(caller, target, account, "deleted", previous, None)

    def team_to_change(self, caller: Caller, account: str, team: str | None) -> str:
        if team is not None:
            return team
        try:
            return self.find(caller, account, None)[0]
        except AccountNotFound:
            pass
        administered = [name for name in sorted(caller.teams) if is_admin(caller, name)]
        mail_teams = [name for name in administered if self.mail_config(name) is not None]
        if len(mail_teams) == 1:
            return mail_teams[0]
        raise InvalidInput("name the team of the new account with ?team=", field="team")

    def write(self, team: str, config: dict[str, Any]) -> None:
        accounts = dict(config.get("accounts") or {})
        try:
            TeamConfig.model_validate(config)
        except ValidationError as error:
            raise invalid(
                error, [value for item in accounts.values() for value in secret_values(item)]
            ) from None
        size = len(json.dumps(config).encode())
        if size > MAX_TEAM_SECRET_BYTES:
            # Secrets Manager refuses it (a 500 otherwise): say which value made it too long.
            longest = max(
                (
                    (name, len(json.dumps(value)))
                    for item in accounts.values()
                    for name, value in _flatten(item).items()
                ),
                key=lambda found: found[1],
                default=(None, 0),
            )[0]
            raise InvalidInput(
                f"the team's secret would be {size} bytes, over the {MAX_TEAM_SECRET_BYTES} a secret may hold",
                field=longest,
            )
        self.secrets.write(team, config)
        self.on_written()

    def writer(self, team: str) -> AbstractContextManager[Writer]:
        return writer_lease(self.revisions, team)

    def publish(
        self,
        caller: Caller,
        team: str,
        account: str,
        action: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        fields = changed_fields(before or {}, after or {})
        event = AccountChanged(ACCOUNT_CHANGED, team, account, action=action, by=caller.user, fields=fields)
        self.events.publish([event])


def is_admin(caller: Caller, team: str) -> bool:
    """An administrator of `team` is a member (group `<team>`) also in group `<team>-admin`."""
    return team in caller.teams and team + ADMIN_GROUP_SUFFIX in caller.groups


def require_admin(caller: Caller, team: str) -> None:
    if team not in caller.teams:
        raise NotAMember(f"you are not a member of team {team!r}", field="team")
    if not is_admin(caller, team):
        raise NotAnAdministrator(
            f"changing team {team!r}'s accounts needs its administrators' group "
            f"{team + ADMIN_GROUP_SUFFIX!r}",
            field="team",
        )


def expect_revision(if_match: int | None, revision: int, account: str) -> None:
    if if_match is not None and if_match != revision:
        raise RevisionMismatch(
            f"account {account!r} changed since you read it (revision {revision}, yours {if_match}); "
            "read it again and repeat your change",
            field="If-Match",
        )


def invalid(error: ValidationError, secrets: Iterable[str] = ()) -> InvalidInput:
    """The first problem, naming its field (`smtp.port`), never the value (it may be a password).
    Some messages quote the input (an address, a union's tag): a secret value of the account
    pasted into such a field is masked there too."""
    details = error.errors(include_input=False, include_url=False)
    first = details[0] if details else {"loc": (), "msg": "invalid account"}
    location = [str(part) for part in first["loc"] if not isinstance(part, int)]
    # A discriminated union adds the tag to the path: auth.oauth2.client_id -> auth.client_id.
    if len(location) > 1 and location[0] == "auth" and location[1] in ("password", "oauth2"):
        del location[1]
    if location[:1] == ["accounts"]:
        location = location[2:]
    field = ".".join(location) or None
    return InvalidInput(Transcript(secrets).redact(str(first["msg"])), field=field)


def secret_values(config: Any) -> list[str]:
    """The secret values an account's JSON holds (as text, whatever their JSON type)."""
    if not isinstance(config, dict):
        return []
    auth = config.get("auth")
    auth = auth if isinstance(auth, dict) else {}
    found = [config.get("mail_password"), auth.get("client_secret"), auth.get("refresh_token")]
    return [json.dumps(value) if not isinstance(value, str) else value for value in found if value]


def validated(config: dict[str, Any]) -> MailAccount:
    try:
        return MailAccount.model_validate(config)
    except ValidationError as error:
        raise invalid(error, secret_values(config)) from None


def merge_change(stored: dict[str, Any] | None, change: dict[str, Any]) -> dict[str, Any]:
    """The account after `change`: a secret value the change leaves out keeps its stored value
    (null removes it); every other field is as the change says."""
    merged = {key: value for key, value in change.items() if value is not None or key in ("auth",)}
    stored = stored or {}
    if "mail_password" not in change and "mail_password" in stored:
        merged["mail_password"] = stored["mail_password"]
    new_auth, old_auth = change.get("auth"), stored.get("auth")
    if (
        isinstance(new_auth, dict)
        and isinstance(old_auth, dict)
        and new_auth.get("mode") == old_auth.get("mode")
    ):
        auth = {key: value for key, value in new_auth.items() if value is not None}
        for key in ("client_secret", "refresh_token"):
            if key not in new_auth and key in old_auth:
                auth[key] = old_auth[key]
        merged["auth"] = auth
    elif isinstance(new_auth, dict):
        merged["auth"] = {key: value for key, value in new_auth.items() if value is not None}
    elif "auth" in merged and merged["auth"] is None:
        del merged["auth"]
    return merged


def public_configuration(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    """The account without its secret values, and whether each secret is set."""
    public = {key: value for key, value in config.items() if key != "mail_password"}
    auth = config.get("auth")
    if isinstance(auth, dict):
        public["auth"] = {
            key: value for key, value in auth.items() if key not in ("client_secret", "refresh_token")
        }
    else:
        auth = {}
    secrets = {
        "mail_password": bool(config.get("mail_password")),
        "auth.client_secret": bool(auth.get("client_secret")),
        "auth.refresh_token": bool(auth.get("refresh_token")),
    }
    return public, secrets


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The dotted names of the fields that differ (names only: a value may be a secret)."""
    old, new = _flatten(before), _flatten(after)
    return sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))


def account_health(storage: Storage, team: str, account: str) -> dict[str, Any]:
    """The latest pull and send of the account, and the latest error of either with its diagnosis."""
    state = storage.pull_state.get(team, account) or {}
    last_pull = None
    if state.get("last_pull_at"):
        last_pull = {
            "at": state["last_pull_at"],
            "fetched": state.get("fetched", 0),
            "remaining": state.get("remaining", 0),
            "error": state.get("last_error"),
        }
    # The newest outgoing mail of the account, looked for in the last days only: the team's index
    # is read newest first and filtered, so an account that never sends must not cost a full read.
    since = (datetime.now(UTC) - timedelta(days=LAST_SEND_DAYS)).strftime("%Y-%m-%dT%H:%M:%S")
    query = MailQuery(account=account, direction="out", since=since)
    sent, _ = storage.mail.list_team(team, query, after=None, limit=1)
    last_send = None
    if sent:
        mail = sent[0]
        at = mail.created_at.isoformat()
        last_send = {"at": at, "mail_id": mail.id, "status": mail.status.value, "error": mail.error}
    errors = [
        {"source": "pull", "at": state.get("last_pull_at"), "message": state.get("last_error")},
        {"source": "send", "at": (last_send or {}).get("at"), "message": (last_send or {}).get("error")},
    ]
    found = [error for error in errors if error["message"]]
    return {
        "last_pull": last_pull,
        "last_send": last_send,
        "last_error": max(found, key=lambda error: str(error["at"] or "")) if found else None,
        "broken_reason": state.get("broken_reason"),
    }


# Which field of the form a check's problem points at.
_PROBLEM_FIELDS = {
    "dns": "host",
    "refused": "port",
    "timeout": "port",
    "wrong_port": "port",
    "tls_certificate": "host",
    "wrong_tls_mode": "security",
    "tls_failed": "security",
    "tls_not_offered": "security",
}


def problem_field(protocol: str, problem: str, config: MailAccount) -> str:
    if problem in ("auth_failed", "auth_not_offered"):
        return "auth.client_secret" if config.oauth2 else "mail_password"
    return f"{protocol}.{_PROBLEM_FIELDS.get(problem, 'host')}"


def failed_check(result: dict[str, Any]) -> CheckFailed:
    first = next(result[protocol] for protocol in ("pop3", "smtp") if not result[protocol]["ok"])
    return CheckFailed(f"the check failed: {first['message']}", field=first["field"], check=result)


def check_account(
    team: str, name: str, config: MailAccount, *, tls_context: ssl.SSLContext
) -> dict[str, Any]:
    """What `make check` does for POP3 and for SMTP (log in; list the mailbox), as data."""
    # API Gateway ends a request after 29 s with a bare 504: the check of a wrong port (packets
    # dropped: a connect waits the whole timeout, 30 s by default) must answer before that.
    config = config.model_copy(update={"timeout_seconds": min(config.timeout_seconds, CHECK_ANSWER_SECONDS)})
    results: dict[str, Any] = {}
    # A broker of its own: an unsaved configuration must not reuse a cached token. One token for
    # both protocols, and a token endpoint that failed is not asked twice (a stalled one would
    # take its timeout twice, past what API Gateway waits).
    broker, token_failure = TokenBroker(), None
    check_ends = Deadline.after(CHECK_SECONDS)
    for protocol in ("pop3", "smtp"):
        transcript, out = Transcript(), io.StringIO()
        try:
            token = None
            if config.oauth2 is not None:
                if token_failure is not None:
                    raise token_failure
                try:
                    token = broker.access_token(
                        team, name, config.oauth2, deadline=check_ends.earlier(CHECK_ANSWER_SECONDS)
                    )
                except OAuth2Error as error:
                    token_failure = error
                    raise
            share = check_ends.left() / 2 if protocol == "pop3" else None
            connection = Connection(
                transcript, tls_context, access_token=token, deadline=check_ends.earlier(share)
            )
            if protocol == "pop3":
                check_pop3(config, connection, out)
            else:
                check_smtp(config, connection, None, out)
            results[protocol] = {
                "ok": True,
                "message": out.getvalue().strip(),
                "transcript": transcript.lines,
            }
        except MailServerError as error:
            found = diagnosis(error)
            field = (
                "auth.client_secret"
                if isinstance(error, OAuth2Error)
                else problem_field(protocol, found["problem"], config)
            )
            results[protocol] = {"ok": False, **found, "field": field, "transcript": transcript.lines}
    return {"ok": all(result["ok"] for result in results.values()), **results}
