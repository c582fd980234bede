"""Teams, their secrets and their accounts: who may use which mail account.

A team is a Cognito group; its configuration is the Secrets Manager secret `<prefix><team>`.
Secrets are read through Powertools Parameters with caching, so a changed secret takes effect
within the cache time (POWERTOOLS_PARAMETERS_MAX_AGE) without a redeploy or restart.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mailcore.errors import AccountNotFound, AmbiguousAccount, NotAMember, TeamConfigInvalid
from mailcore.models import MailAccount, TeamConfig

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from botocore.client import BaseClient

_TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}$")


@dataclass(frozen=True)
class Caller:
    """An authenticated user of the API and the teams (Cognito groups) they belong to."""

    user: str
    teams: frozenset[str]


@dataclass(frozen=True)
class ResolvedAccount:
    team: str
    name: str
    account: MailAccount


def caller_from_claims(claims: Mapping[str, Any] | None) -> Caller | None:
    """Reads the caller from the authorizer's claims, or None when there are none.

    API Gateway (REST) hands claims over as strings: `cognito:groups` arrives as "[a, b]",
    "a,b" or "a b" depending on the path it took, and as a list from other sources.
    """
    if not claims:
        return None
    user = str(claims.get("email") or claims.get("cognito:username") or claims.get("sub") or "")
    if not user:
        return None
    groups = claims.get("cognito:groups") or []
    if isinstance(groups, str):
        text = groups.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = json.loads(text)
                groups = parsed if isinstance(parsed, list) else [text]
            except ValueError:
                groups = re.split(r"[,\s]+", text[1:-1])
        else:
            groups = re.split(r"[,\s]+", text)
    teams = frozenset(str(group).strip() for group in groups if str(group).strip())
    return Caller(user=user, teams=teams)


def describe_validation_error(error: ValidationError) -> str:
    """Names what is wrong and where, never the value: the input may hold a password."""
    parts = []
    for detail in error.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in detail["loc"]) or "(root)"
        parts.append(f"{location}: {detail['msg']}")
    return "; ".join(parts)


class TeamDirectory:
    def __init__(
        self,
        prefix: str,
        *,
        provider: SecretsProvider | None = None,
        client: BaseClient | None = None,
        list_max_age: float | None = None,
    ) -> None:
        self.prefix = prefix
        self._provider = provider
        self._client = client
        # The list of teams is cached like the secrets themselves (Powertools' max age).
        self._list_max_age = (
            list_max_age
            if list_max_age is not None
            else float(os.environ.get("POWERTOOLS_PARAMETERS_MAX_AGE", "300"))
        )
        self._listed: tuple[float, list[str]] | None = None

    @property
    def provider(self) -> SecretsProvider:
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            self._provider = SecretsProvider(boto3_client=self.client)
        return self._provider

    @property
    def client(self) -> BaseClient:
        if self._client is None:
            from mailcore.storage.aws import aws_client

            self._client = aws_client("secretsmanager")
        return self._client

    def team(self, name: str) -> TeamConfig | None:
        """The team's configuration, or None when the team has no secret (a team of another kind)."""
        if not _TEAM_NAME.match(name):
            return None
        from aws_lambda_powertools.utilities.parameters.exceptions import (
            GetParameterError,
            TransformParameterError,
        )

        try:
            raw = self.provider.get(self.prefix + name, transform="json")
        except TransformParameterError:
            raise TeamConfigInvalid(f"the secret of team {name!r} is not valid JSON") from None
        except GetParameterError as error:
            if "ResourceNotFoundException" in repr(error.__context__) or "ResourceNotFound" in str(error):
                return None
            raise
        try:
            return TeamConfig.model_validate(raw)
        except ValidationError as error:
            message = f"the secret of team {name!r} is invalid: {describe_validation_error(error)}"
            raise TeamConfigInvalid(message) from None

    def store_refresh_token(self, team: str, account: str, refresh_token: str) -> None:
        """Writes a rotated OAuth2 refresh token into the team secret (PutSecretValue).

        Read fresh, not from the cache: the write must not undo a change made since. Two processes
        rotating at once both write a valid token (providers keep the previous one valid a while).
        """
        name = self.prefix + team
        config = json.loads(self.client.get_secret_value(SecretId=name)["SecretString"])
        auth = config.get("accounts", {}).get(account, {}).get("auth")
        if not isinstance(auth, dict) or auth.get("mode") != "oauth2":
            return
        auth["refresh_token"] = refresh_token
        self.client.put_secret_value(SecretId=name, SecretString=json.dumps(config))
        # The next read must see the new token, not Powertools' cached copy with the old one.
        self.provider.clear_cache()

    def all_teams(self) -> list[str]:
        """Every team that has a secret under the prefix (the listing is cached like the secrets)."""
        now = time.monotonic()
        if self._listed and now - self._listed[0] < self._list_max_age:
            return self._listed[1]
        names: list[str] = []
        paginator = self.client.get_paginator("list_secrets")
        for page in paginator.paginate(Filters=[{"Key": "name", "Values": [self.prefix]}]):
            for entry in page.get("SecretList", []):
                name = entry["Name"]
                if name.startswith(self.prefix) and not entry.get("DeletedDate"):
                    names.append(name[len(self.prefix) :])
        self._listed = (now, sorted(names))
        return self._listed[1]

    def accounts_of(self, teams: Iterable[str]) -> list[ResolvedAccount]:
        """Every account of every mail team among `teams`, in a stable order."""
        accounts: list[ResolvedAccount] = []
        for team in sorted(set(teams)):
            config = self.team(team)
            if config is None or not config.is_mail:
                continue
            accounts.extend(ResolvedAccount(team, name, account) for name, account in config.accounts.items())
        return accounts

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
