"""Writing team secrets without losing a change: the secret itself (Secrets Manager) and the
writer's lease and account revisions next to it (PullStateTable).

Secrets Manager has no compare-and-swap: PutSecretValue always makes the new value current. Two
changes that both read the secret, change one account each and write it back would lose the first
write. So a change of a team's accounts runs under the team's writer lease, a DynamoDB item taken
with a conditional put, and reads the secret fresh (never from a cache) only once it holds the
lease: every writer sees the finished write of the one before.

Item: pk "accounts#<team>", sk "WRITER": holder, lease_until (epoch seconds), revisions (a map
account -> the number of changes made through the API, the version a caller's If-Match names).
`lease_until` is not the table's TTL attribute (`expires_at`): TTL would delete the revisions.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from mailcore.storage.aws import AwsAdapter

if TYPE_CHECKING:
    from botocore.client import BaseClient

WRITER = "WRITER"
# What Secrets Manager accepts in a name (after the prefix), as TeamDirectory checks it.
TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}$")


class DynamoAccountRevisions(AwsAdapter):
    service = "dynamodb"

    def __init__(self, table: str, client: BaseClient | None = None) -> None:
        self.table = table
        super().__init__(client)

    @staticmethod
    def _key(team: str) -> dict[str, Any]:
        return {"pk": {"S": f"accounts#{team}"}, "sk": {"S": WRITER}}

    def acquire(self, team: str, holder: str, seconds: float) -> bool:
        """Takes the team's writer lease; False while another live writer holds it."""
        client = self.client
        now = int(time.time())
        try:
            client.update_item(
                TableName=self.table,
                Key=self._key(team),
                UpdateExpression=(
                    "SET holder = :holder, lease_until = :until, revisions = if_not_exists(revisions, :none)"
                ),
                # Race closed: two changes of one team's accounts at the same time, each reading
                # the secret before the other wrote it, the later PutSecretValue erasing the
                # earlier change. Only one conditional update wins; the other waits and then reads
                # the secret with the first change in it. A lease outlives the function's timeout,
                # so a holder cannot still be writing when its lease lapses; a crashed holder's
                # lease stops counting then.
                ConditionExpression="attribute_not_exists(holder) OR lease_until < :now",
                ExpressionAttributeValues={
                    ":holder": {"S": holder},
                    ":until": {"N": str(now + max(1, int(seconds)))},
                    ":now": {"N": str(now)},
                    ":none": {"M": {}},
                },
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release(self, team: str, holder: str, *, account: str | None, revision: int | None) -> None:
        """Gives the lease back, recording the account's new revision when a change was written."""
        client = self.client
        request: dict[str, Any] = {
            "UpdateExpression": "REMOVE holder, lease_until",
            "ExpressionAttributeValues": {":holder": {"S": holder}},
        }
        if account is not None and revision is not None:
            request["UpdateExpression"] = "SET revisions.#account = :revision REMOVE holder, lease_until"
            request["ExpressionAttributeNames"] = {"#account": account}
            request["ExpressionAttributeValues"][":revision"] = {"N": str(revision)}
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.update_item(
                TableName=self.table,
                Key=self._key(team),
                # Race closed: a writer whose lease lapsed must not end the lease of the writer
                # that took over (a third could then write alongside it), nor move a revision.
                ConditionExpression="holder = :holder",
                **request,
            )

    def revisions(self, team: str) -> dict[str, int]:
        answer = self.client.get_item(TableName=self.table, Key=self._key(team), ConsistentRead=True)
        stored = answer.get("Item", {}).get("revisions", {}).get("M", {})
        return {account: int(value["N"]) for account, value in stored.items()}


class MemoryAccountRevisions:
    """The same lease and revisions under a lock (unit tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: dict[str, tuple[str, float]] = {}
        self._revisions: dict[str, dict[str, int]] = {}

    def acquire(self, team: str, holder: str, seconds: float) -> bool:
        with self._lock:
            held = self._holders.get(team)
            if held is not None and held[1] >= time.time():
                return False
            self._holders[team] = (holder, time.time() + seconds)
            return True

    def release(self, team: str, holder: str, *, account: str | None, revision: int | None) -> None:
        with self._lock:
            if self._holders.get(team, ("", 0.0))[0] != holder:
                return
            del self._holders[team]
            if account is not None and revision is not None:
                self._revisions.setdefault(team, {})[account] = revision

    def revisions(self, team: str) -> dict[str, int]:
        with self._lock:
            return dict(self._revisions.get(team, {}))


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


class MemoryTeamSecrets:
    def __init__(self, secrets: dict[str, dict[str, Any]] | None = None) -> None:
        self.secrets = {team: json.dumps(config) for team, config in (secrets or {}).items()}

    def read(self, team: str) -> dict[str, Any] | None:
        stored = self.secrets.get(team)
        return None if stored is None else dict(json.loads(stored))

    def write(self, team: str, config: dict[str, Any]) -> None:
        self.secrets[team] = json.dumps(config)
