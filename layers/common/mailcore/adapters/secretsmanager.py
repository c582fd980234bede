"""Secrets Manager: the team secrets and the system mail secret, read through Powertools' cache
(port SecretReader), and read fresh and written for a change of a team's accounts (port TeamSecrets)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from mailcore.adapters.base import AwsAdapter

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from botocore.client import BaseClient

# What Secrets Manager accepts in a name (after the prefix), as TeamDirectory checks it.
TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}$")


class SecretsManagerSecrets(AwsAdapter):
    """Secrets as JSON, cached for `max_age` seconds (Powertools): a changed secret takes effect
    within that time without a redeploy or restart."""

    service = "secretsmanager"

    def __init__(self, max_age: float, client: BaseClient | None = None) -> None:
        self.max_age = max_age
        self._provider: SecretsProvider | None = None
        super().__init__(client)

    @property
    def provider(self) -> SecretsProvider:
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            self._provider = SecretsProvider(boto3_client=self.client)
        return self._provider

    def cached_json(self, name: str) -> Any | None:
        from aws_lambda_powertools.utilities.parameters.exceptions import (
            GetParameterError,
            TransformParameterError,
        )

        try:
            return self.provider.get(name, transform="json", max_age=int(self.max_age))
        except TransformParameterError:
            raise ValueError(f"the secret {name!r} is not valid JSON") from None
        except GetParameterError as error:
            if "ResourceNotFoundException" in repr(error.__context__) or "ResourceNotFound" in str(error):
                return None
            raise

    def fresh_json(self, name: str) -> Any:
        return json.loads(self.client.get_secret_value(SecretId=name)["SecretString"])

    def put_json(self, name: str, value: Any) -> None:
        self.client.put_secret_value(SecretId=name, SecretString=json.dumps(value))

    def names_under(self, prefix: str) -> list[str]:
        names: list[str] = []
        paginator = self.client.get_paginator("list_secrets")
        for page in paginator.paginate(Filters=[{"Key": "name", "Values": [prefix]}]):
            for entry in page.get("SecretList", []):
                name = entry["Name"]
                if name.startswith(prefix) and not entry.get("DeletedDate"):
                    names.append(name)
        return names

    def clear_cache(self) -> None:
        if self._provider is not None:
            self._provider.clear_cache()


class SecretsManagerTeamSecrets(AwsAdapter):
    """The raw JSON of team secrets, read fresh (no cache) for a read-modify-write."""

    service = "secretsmanager"

    def __init__(self, prefix: str, client: BaseClient | None = None) -> None:
        self.prefix = prefix
        super().__init__(client)

    def read(self, team: str) -> dict[str, Any] | None:
        """The team's secret, or None when there is none (also for a name no secret can have)."""
        if not TEAM_NAME.match(team):
            return None
        client = self.client
        try:
            answer = client.get_secret_value(SecretId=self.prefix + team)
        except client.exceptions.ResourceNotFoundException:
            return None
        value = json.loads(answer["SecretString"])
        return value if isinstance(value, dict) else None

    def write(self, team: str, config: dict[str, Any]) -> None:
        self.client.put_secret_value(SecretId=self.prefix + team, SecretString=json.dumps(config))
