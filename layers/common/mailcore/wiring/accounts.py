"""AccountsFunction: the accounts API's use cases, team secrets written under the team's writer lease."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailcore.adapters.dynamodb import DynamoAccountRevisions
from mailcore.adapters.secretsmanager import SecretsManagerTeamSecrets
from mailcore.models import MailAccount
from mailcore.services.accounts import Accounts, check_account
from mailcore.settings import Settings, read
from mailcore.teams import TeamDirectory
from mailcore.wiring import parts, process_root


@dataclass(frozen=True)
class AccountsRoot:
    directory: TeamDirectory
    accounts: Accounts


def build(settings: Settings) -> AccountsRoot:
    directory = parts.team_directory(settings)
    tls_context = parts.tls_context(settings)

    def checker(team: str, name: str, config: MailAccount) -> dict[str, Any]:
        return check_account(team, name, config, tls_context=tls_context())

    accounts = Accounts(
        secrets=SecretsManagerTeamSecrets(settings.team_secret_prefix),
        revisions=DynamoAccountRevisions(settings.pull_state_table),
        storage=parts.aws_storage(settings),
        events=parts.event_publisher(settings),
        checker=checker,
        on_written=directory.secrets.clear_cache,
    )
    return AccountsRoot(directory=directory, accounts=accounts)


@process_root
def root() -> AccountsRoot:
    return build(read(Settings))
