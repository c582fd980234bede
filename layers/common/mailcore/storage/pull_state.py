"""Pull state of an account in DynamoDB: the lease that lets one pull at a time download a
mailbox, and the outcome of the latest pull. Every transition of these items is in this module.

Items (PullStateTable): pk "<team>#<account>", sk "LEASE" (holder, expires_at), sk "STATE"
(last_pull_at, last_error, fetched, remaining) and sk "ATTEMPT#<mail id>" (holder, attempts,
expires_at) while a pull prepares that received message: a marker a pull finds there was left by
a pull that died preparing the message. `expires_at` is also the table's TTL attribute, so
DynamoDB removes the leases of crashed pulls eventually; the condition below does not wait for
that (TTL deletes lag by up to days).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from mailcore.storage.aws import AwsAdapter, from_item, to_item

if TYPE_CHECKING:
    from botocore.client import BaseClient

LEASE, STATE, ATTEMPT = "LEASE", "STATE", "ATTEMPT#"
# An attempt marker outlives any pull; a message whose marker expired starts counting again.
ATTEMPT_SECONDS = 30 * 86400


class DynamoPullState(AwsAdapter):
    service = "dynamodb"

    def __init__(self, table: str, client: BaseClient | None = None) -> None:
        self.table = table
        super().__init__(client)

    @staticmethod
    def _key(team: str, account: str, kind: str) -> dict[str, Any]:
        return {"pk": {"S": f"{team}#{account}"}, "sk": {"S": kind}}

    def acquire_lease(self, team: str, account: str, holder: str, seconds: float) -> bool:
        """Takes the account's lease for `seconds`; False when another pull holds a live one."""
        client = self.client
        now = int(time.time())
        try:
            client.put_item(
                TableName=self.table,
                Item={
                    **self._key(team, account, LEASE),
                    "holder": {"S": holder},
                    "expires_at": {"N": str(now + max(1, int(seconds)))},
                },
                # Race closed: two pulls of one account starting together (API call and schedule)
                # both see "no lease" and both download the mailbox. Only one conditional put
                # wins. A lease whose holder crashed stops counting once expired, so a killed
                # Lambda does not lock the account until TTL gets round to deleting the item.
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release_lease(self, team: str, account: str, holder: str) -> None:
        client = self.client
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.delete_item(
                TableName=self.table,
                Key=self._key(team, account, LEASE),
                # Race closed: a pull that overran its lease must not delete the lease a newer
                # pull took over in the meantime (that would let a third pull start alongside).
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )

    def lease_held(self, team: str, account: str) -> bool:
        answer = self.client.get_item(
            TableName=self.table, Key=self._key(team, account, LEASE), ConsistentRead=True
        )
        item = answer.get("Item")
        return item is not None and int(item["expires_at"]["N"]) >= int(time.time())

    def begin_attempt(self, team: str, account: str, mail_id: str, holder: str) -> int:
        """Records that pull `holder` is preparing the received message `mail_id`; answers how
        many earlier pulls recorded the same and never finished (they died preparing it)."""
        client = self.client
        key = self._key(team, account, ATTEMPT + mail_id)
        try:
            answer = client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET holder = :holder, expires_at = :expires ADD attempts :one",
                # Race closed: the SDK sending this write again after its answer was lost (the
                # first one was applied) would count this pull's own attempt as an earlier pull
                # that died, and set a message aside one death too early.
                ConditionExpression="attribute_not_exists(holder) OR holder <> :holder",
                ExpressionAttributeValues={
                    ":holder": {"S": holder},
                    ":expires": {"N": str(int(time.time()) + ATTEMPT_SECONDS)},
                    ":one": {"N": "1"},
                },
                ReturnValues="UPDATED_OLD",
            )
        except client.exceptions.ConditionalCheckFailedException:  # recorded already, by this pull
            item = client.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item") or {}
            return max(0, int(item.get("attempts", {}).get("N", "1")) - 1)
        return int(answer.get("Attributes", {}).get("attempts", {}).get("N", "0"))

    def end_attempt(self, team: str, account: str, mail_id: str, holder: str) -> None:
        """The message is prepared (or set aside): its marker goes."""
        client = self.client
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.delete_item(
                TableName=self.table,
                Key=self._key(team, account, ATTEMPT + mail_id),
                # Race closed: a pull that overran its lease must not clear the marker of a newer
                # pull that prepares the same message now (if that one dies, its death must count).
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )

    def record(self, team: str, account: str, state: dict[str, Any]) -> None:
        # Unconditional: only the lease holder records, so the latest pull's outcome wins.
        item = {**to_item(state), **self._key(team, account, STATE)}
        self.client.put_item(TableName=self.table, Item=item)

    def get(self, team: str, account: str) -> dict[str, Any] | None:
        answer = self.client.get_item(
            TableName=self.table, Key=self._key(team, account, STATE), ConsistentRead=True
        )
        if "Item" not in answer:
            return None
        state = from_item(answer["Item"])
        state.pop("pk"), state.pop("sk")
        return state
