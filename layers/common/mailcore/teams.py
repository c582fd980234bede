"""Teams, their secrets and their accounts: who may use which mail account.

A team is a Cognito group; its configuration is the Secrets Manager secret `<prefix><team>`.
Secrets are read through a cache (port SecretReader), so a changed secret takes effect
within the cache time (POWERTOOLS_PARAMETERS_MAX_AGE) without a redeploy or restart.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mailcore.errors import (
    AccountNotFound,
    AmbiguousAccount,
    NotAMember,
    TeamConfigInvalid,
    describe_validation_error,
)
from mailcore.models import MailAccount, TeamConfig

if TYPE_CHECKING:
    from mailcore.ports import SecretReader

_TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}$")


@dataclass(frozen=True)
class Caller:
    """An authenticated user of the API, the teams they are a member of and all their Cognito
    groups (a team is a group with a mail team secret; other groups, such as `<team>-admin`,
    only qualify a membership)."""

    user: str
    teams: frozenset[str]
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ResolvedAccount:
    team: str
    name: str
    config: MailAccount  # the account as its team secret holds it (Mail.account is its name)


# The reserved team that system mail (password resets, sign-up codes) is stored under: never a
# caller's team, whatever groups their token names.
SYSTEM_TEAM = "system"
# Its one account, the outbox key of its mail (services/system.py sends it, the sync takes over
# its dead sends).
SYSTEM_ACCOUNT = "system"


def _token_claims(authorization: str | None) -> dict[str, Any] | None:
    """The payload of the token in the Authorization header, read without a signature check: only
    used when it is the very token whose claims API Gateway verified (see `groups_of`)."""
    token = (authorization or "").strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return payload if isinstance(payload, dict) else None


def groups_of(claims: Mapping[str, Any], authorization: str | None = None) -> list[str]:
    """The caller's Cognito groups, each name whole.

    A REST API's Cognito authorizer hands every claim over as a string: the groups list arrives
    joined with commas ("a,b"), and a Cognito group name may itself hold a comma, so the string
    cannot be split safely. The token in the Authorization header (the one API Gateway verified,
    checked here by its `sub` and rendered groups) carries the real list: it is used when present.
    Otherwise "[a b]" (the HTTP API form; names hold no white space) is split on white space, and
    a plain string on commas (as API Gateway joined it) and white space.
    """
    groups = claims.get("cognito:groups")
    if isinstance(groups, list):
        return [str(group) for group in groups]
    if not groups:
        return []
    text = str(groups).strip()
    token = _token_claims(authorization)
    if token is not None and token.get("sub") == claims.get("sub"):
        listed = token.get("cognito:groups")
        if isinstance(listed, list) and text in (
            ",".join(map(str, listed)),
            "[" + " ".join(map(str, listed)) + "]",
        ):
            return [str(group) for group in listed]
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = json.loads(text)
            if isinstance(parsed, list):
                return [str(group) for group in parsed]
        except ValueError:
            pass
        return text[1:-1].split()
    return re.split(r"[,\s]+", text)


def caller_from_claims(claims: Mapping[str, Any] | None, authorization: str | None = None) -> Caller | None:
    """Reads the caller from the authorizer's claims, or None when there are none. Its teams are
    still all its groups: `TeamDirectory.member_teams` keeps the mail teams among them."""
    if not claims:
        return None
    user = str(claims.get("email") or claims.get("cognito:username") or claims.get("sub") or "")
    if not user:
        return None
    groups = frozenset(group.strip() for group in groups_of(claims, authorization) if group.strip())
    return Caller(user=user, teams=groups, groups=groups)


class TeamDirectory:
    def __init__(self, prefix: str, secrets: SecretReader, *, list_max_age: float) -> None:
        self.prefix = prefix
        self.secrets = secrets
        # The list of teams is cached like the secrets themselves.
        self._list_max_age = list_max_age
        self._listed: tuple[float, list[str]] | None = None

    def team(self, name: str) -> TeamConfig | None:
        """The team's configuration, or None when the team has no secret (a team of another kind)."""
        if not _TEAM_NAME.match(name):
            return None
        try:
            raw = self.secrets.cached_json(self.prefix + name)
        except ValueError:
            raise TeamConfigInvalid(f"the secret of team {name!r} is not valid JSON") from None
        if raw is None:
            return None
        try:
            return TeamConfig.model_validate(raw)
        except ValidationError as error:
            message = f"the secret of team {name!r} is invalid: {describe_validation_error(error)}"
            raise TeamConfigInvalid(message) from None

    def store_refresh_token(self, team: str, account: str, refresh_token: str) -> None:
        """Writes a rotated OAuth2 refresh token into the team secret.

        Read fresh, not from the cache: the write must not undo a change made since. Two processes
        rotating at once both write a valid token (providers keep the previous one valid a while).
        """
        name = self.prefix + team
        config = self.secrets.fresh_json(name)
        auth = config.get("accounts", {}).get(account, {}).get("auth")
        if not isinstance(auth, dict) or auth.get("mode") != "oauth2":
            return
        auth["refresh_token"] = refresh_token
        self.secrets.put_json(name, config)
        # The next read must see the new token, not the cached copy with the old one.
        self.secrets.clear_cache()

    def all_teams(self) -> list[str]:
        """Every team that has a secret under the prefix (the listing is cached like the secrets)."""
        now = time.monotonic()
        if self._listed and now - self._listed[0] < self._list_max_age:
            return self._listed[1]
        names = [name[len(self.prefix) :] for name in self.secrets.names_under(self.prefix)]
        self._listed = (now, sorted(names))
        return self._listed[1]

    def member_teams(self, caller: Caller) -> Caller:
        """The caller with only the groups that are mail teams: a group without a mail team secret
        (an admin group, a group of another application, the reserved `system`) grants nothing.
        A team whose secret is broken stays, so its members hear about it (team_config_invalid)."""
        teams = set()
        for team in caller.teams:
            if team == SYSTEM_TEAM:
                continue
            try:
                config = self.team(team)
            except TeamConfigInvalid:
                teams.add(team)
                continue
            if config is not None and config.is_mail:
                teams.add(team)
        return Caller(user=caller.user, teams=frozenset(teams), groups=caller.groups)

    def accounts_of(self, teams: Iterable[str]) -> list[ResolvedAccount]:
        """Every account of every mail team among `teams`, in a stable order."""
        accounts: list[ResolvedAccount] = []
        for team in sorted(set(teams)):
            config = self.team(team)
            if config is None or not config.is_mail:
                continue
            accounts.extend(ResolvedAccount(team, name, account) for name, account in config.accounts.items())
        return accounts

    def accounts_team_by_team(
        self, skipped: Callable[[str, TeamConfigInvalid], None]
    ) -> Iterator[list[ResolvedAccount]]:
        """The accounts of every mail team, one team at a time (its secret read when its turn
        comes). A team whose secret is broken goes to `skipped`, and the next team follows: one
        team's broken secret is its operators' problem, never the other teams'."""
        for team in self.all_teams():
            try:
                accounts = self.accounts_of([team])
            except TeamConfigInvalid as error:
                skipped(team, error)
                continue
            yield accounts

    def resolve_account(self, caller: Caller, account: str, team: str | None = None) -> ResolvedAccount:
        """The account `account` of one of the caller's mail teams.

        403 when the caller is not a member of the team that has it; 404 when no team has it;
        409 when two of the caller's teams have an account of that name and `team` is not given.
        """
        if team is not None:
            if team not in caller.teams:
                raise NotAMember(f"you are not a member of team {team!r}", field="team")
            config = self.team(team)
            if config is None or account not in config.accounts:
                raise AccountNotFound(f"team {team!r} has no mail account {account!r}", field="account")
            return ResolvedAccount(team, account, config.accounts[account])

        matches = [found for found in self.accounts_of(caller.teams) if found.name == account]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            teams = ", ".join(found.team for found in matches)
            raise AmbiguousAccount(
                f"several of your teams have an account {account!r} ({teams}); name one with ?team=",
                field="team",
            )
        for other in self.all_teams():
            if other in caller.teams:
                continue
            try:
                config = self.team(other)
            except TeamConfigInvalid:
                continue  # another team's broken secret is its operators' problem, not this caller's
            if config is not None and account in config.accounts:
                raise NotAMember(f"you are not a member of the team of account {account!r}", field="account")
        raise AccountNotFound(f"no mail account {account!r}", field="account")
