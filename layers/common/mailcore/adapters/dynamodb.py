"""DynamoDB: the mail and file tables, and the items of the pull state table (pull leases and
states, rate-limit windows, sending-limit counters, team writer leases). Every conditional write
of these items is in this module and says which race it closes."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from mailcore.adapters.base import AwsAdapter, aws_client, refusals_raised
from mailcore.limits import RATE_ITEM_LIFETIME_SECONDS
from mailcore.models import Mail, StoredFile
from mailcore.ports import BlobStore
from mailcore.storage import Guard, MailQuery, PullLease, Transition, body_key, index_attributes, outbox_key

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from botocore.client import BaseClient

# DynamoDB items stop at 400 KB; bodies above this many bytes go to S3 and the item points there.
BODY_INLINE_LIMIT = 200_000
LEASE, STATE = "LEASE", "STATE"
WRITER = "WRITER"


@cache
def _codec() -> tuple[Any, Any]:
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    return TypeSerializer(), TypeDeserializer()


def to_item(data: dict[str, Any]) -> dict[str, Any]:
    serializer, _ = _codec()
    return {key: serializer.serialize(value) for key, value in data.items() if value is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    _, deserializer = _codec()
    plain = {key: deserializer.deserialize(value) for key, value in item.items()}
    # Numbers come back as Decimal; every number this service stores is an integer.
    return {key: int(value) if type(value).__name__ == "Decimal" else value for key, value in plain.items()}


class DynamoMail(AwsAdapter):
    service = "dynamodb"

    def __init__(self, table: str, blobs: BlobStore, client: BaseClient | None = None) -> None:
        self.table = table
        self.blobs = blobs
        super().__init__(client)

    def _item(self, mail: Mail) -> dict[str, Any]:
        data = mail.model_dump(mode="json")
        data["from"] = data.pop("from_")
        data["created_key"] = f"{data['created_at']}#{mail.id}"
        data.update(index_attributes(mail))
        body_size = len(mail.body_text.encode()) + len(mail.body_html.encode())
        if body_size > BODY_INLINE_LIMIT:
            key = body_key(mail.team, mail.id)
            bodies = {"body_text": mail.body_text, "body_html": mail.body_html}
            self.blobs.put(key, json.dumps(bodies).encode(), "application/json")
            data.update(body_text="", body_html="", body_key=key)
        return to_item(data)

    def put_new(self, mail: Mail) -> bool:
        client = self.client
        try:
            with refusals_raised():
                client.put_item(
                    TableName=self.table,
                    Item=self._item(mail),
                    ConditionExpression="attribute_not_exists(id)",
                )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def replace(self, mail: Mail) -> bool:
        client = self.client
        try:
            # Closes the race with a delete: a mail removed meanwhile is not written back.
            client.put_item(
                TableName=self.table, Item=self._item(mail), ConditionExpression="attribute_exists(id)"
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def get(self, mail_id: str) -> Mail | None:
        answer = self.client.get_item(TableName=self.table, Key={"id": {"S": mail_id}}, ConsistentRead=True)
        if "Item" not in answer:
            return None
        return self._mail(answer["Item"])

    def _mail(self, item: dict[str, Any]) -> Mail:
        data = from_item(item)
        if key := data.pop("body_key", None):
            data.update(json.loads(self.blobs.get(key)))
        return Mail.model_validate(data)

    def _update(
        self, mail_id: str, guard: Guard, assign: Mapping[str, Any], remove: Iterable[str]
    ) -> dict[str, Any]:
        """The UpdateItem parameters of a guarded transition."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {}

        def name(attribute: str) -> str:
            placeholder = f"#n{len(names)}"
            names[placeholder] = attribute
            return placeholder

        def value(plain: Any) -> str:
            placeholder = f":v{len(values)}"
            values[placeholder] = to_item({"v": plain})["v"]
            return placeholder

        clauses = []
        for clause in guard:
            parts = [f"{name(key)} = {value(wanted)}" for key, wanted in clause.equals.items()]
            parts += [f"attribute_not_exists({name(key)})" for key in clause.missing]
            parts += [f"{name(key)} < {value(limit)}" for key, limit in clause.before.items()]
            parts += [f"{name(key)} <= {value(limit)}" for key, limit in clause.not_after.items()]
            clauses.append(" AND ".join(parts or ["attribute_exists(id)"]))
        # DynamoDB refuses redundant parentheses: only alternatives get them.
        if len(clauses) > 1:
            alternatives = " OR ".join(f"({clause})" for clause in clauses)
            condition = f"attribute_exists(id) AND ({alternatives})"
        else:
            condition = f"attribute_exists(id) AND {clauses[0]}"
        plain = {key: item for key, item in assign.items() if item is not None}
        update = "SET " + ", ".join(f"{name(key)} = {value(item)}" for key, item in plain.items())
        removed = [key for key in remove if key not in plain]
        if removed:
            update += " REMOVE " + ", ".join(name(key) for key in removed)
        return {
            "TableName": self.table,
            "Key": {"id": {"S": mail_id}},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def transition(
        self, mail_id: str, guard: Guard, *, assign: Mapping[str, Any], remove: Iterable[str] = ()
    ) -> Mail | None:
        client = self.client
        try:
            answer = client.update_item(
                **self._update(mail_id, guard, assign, remove), ReturnValues="ALL_NEW"
            )
        except client.exceptions.ConditionalCheckFailedException:
            return None
        return self._mail(answer["Attributes"])

    def apply(self, transitions: Sequence[Transition]) -> list[bool]:
        # One conditional UpdateItem each, not TransactWriteItems: a transaction is all or
        # nothing (one mail another sender took cancels the whole batch), costs twice the write
        # units, and moto copies the whole table for each one (slow, and not thread-safe).
        # Without ReturnValues: the item (and a body kept in S3) is not read back.
        client = self.client
        written = []
        for t in transitions:
            try:
                client.update_item(**self._update(t.mail_id, t.guard, t.assign, t.remove))
            except client.exceptions.ConditionalCheckFailedException:
                written.append(False)
            else:
                written.append(True)
        return written

    def outbox(self, team: str, account: str, *, limit: int = 1000) -> list[Mail]:
        return [self._mail(item) for item in self._index_items(self._outbox_query(team, account), limit)]

    def outbox_ids(self, team: str, account: str, *, limit: int = 1000) -> list[str]:
        return self._index_ids(self._outbox_query(team, account), limit)

    def due(self, team: str, account: str, now: str, *, limit: int = 1000) -> list[Mail]:
        return [self._mail(item) for item in self._index_items(self._due_query(team, account, now), limit)]

    def due_ids(self, team: str, account: str, now: str, *, limit: int = 1000) -> list[str]:
        return self._index_ids(self._due_query(team, account, now), limit)

    def _outbox_query(self, team: str, account: str) -> dict[str, Any]:
        return {
            "TableName": self.table,
            "IndexName": "Outbox",
            "KeyConditionExpression": "outbox = :key",
            "ExpressionAttributeValues": {":key": {"S": outbox_key(team, account)}},
        }

    def _due_query(self, team: str, account: str, now: str) -> dict[str, Any]:
        return {
            "TableName": self.table,
            "IndexName": "Waiting",
            "KeyConditionExpression": "waiting = :key AND due_at <= :now",
            "ExpressionAttributeValues": {":key": {"S": outbox_key(team, account)}, ":now": {"S": now}},
        }

    def _index_ids(self, request: dict[str, Any], limit: int) -> list[str]:
        # The indexes project whole items: only the key comes back (no body read from S3).
        items = self._index_items({**request, "ProjectionExpression": "id"}, limit)
        return [item["id"]["S"] for item in items]

    def _index_items(self, request: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            answer = self.client.query(**request, Limit=limit - len(found))
            found.extend(answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                break
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return found

    def existing_ids(self, mail_ids: Iterable[str]) -> set[str]:
        return {item["id"]["S"] for item in self._batch_get(mail_ids, {"ProjectionExpression": "id"})}

    def get_many(self, mail_ids: Iterable[str]) -> dict[str, Mail]:
        return {item["id"]["S"]: self._mail(item) for item in self._batch_get(mail_ids, {})}

    def _batch_get(self, mail_ids: Iterable[str], options: dict[str, Any]) -> list[dict[str, Any]]:
        """The items of these ids, read consistently with BatchGetItem (100 keys a request, the
        keys DynamoDB left unprocessed asked again)."""
        wanted = list(dict.fromkeys(mail_ids))
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), 100):
            keys = [{"id": {"S": mail_id}} for mail_id in wanted[start : start + 100]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True, **options}}
            while request:
                answer = self.client.batch_get_item(RequestItems=request)
                found.extend(answer["Responses"].get(self.table, []))
                request = answer.get("UnprocessedKeys") or {}
        return found

    def list_team(
        self, team: str, query: MailQuery, *, after: str | None, limit: int
    ) -> tuple[list[Mail], bool]:
        """Queries the ByTeam index newest first. Filters apply after DynamoDB's Limit, so pages
        are read until `limit` matches are found; the caller's next cursor is then the last
        match's key (its created_key ends in its id, so the index's start key is rebuilt from it)."""
        names: dict[str, str] = {"#team": "team"}
        values: dict[str, Any] = {":team": {"S": team}}
        condition = "#team = :team"
        if query.since is not None:
            condition += " AND #ck >= :since"
            names["#ck"] = "created_key"
            values[":since"] = {"S": query.since}
        filters = []
        for name, value in (
            ("account", query.account),
            ("direction", query.direction),
            ("status", query.status),
        ):
            if value is not None:
                names[f"#{name}"] = name
                values[f":{name}"] = {"S": value}
                filters.append(f"#{name} = :{name}")
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "ByTeam",
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "Limit": limit + 1,
        }
        if filters:
            request["FilterExpression"] = " AND ".join(filters)
        if after is not None:
            request["ExclusiveStartKey"] = {
                "team": {"S": team},
                "created_key": {"S": after},
                "id": {"S": after.rpartition("#")[2]},
            }
        found: list[dict[str, Any]] = []
        while True:
            answer = self.client.query(**request)
            found.extend(answer.get("Items", []))
            if len(found) > limit or "LastEvaluatedKey" not in answer:
                break
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        more = len(found) > limit or (len(found) == limit and "LastEvaluatedKey" in answer)
        mails = []
        for item in found[:limit]:
            data = from_item(item)
            data.pop("body_key", None)
            data.pop("created_key", None)
            data.pop("outbox", None)
            mails.append(Mail.model_validate(data))
        return mails, more


class DynamoFiles(AwsAdapter):
    service = "dynamodb"

    def __init__(self, table: str, client: BaseClient | None = None) -> None:
        self.table = table
        super().__init__(client)

    def put(self, stored: StoredFile) -> None:
        self.client.put_item(TableName=self.table, Item=to_item(stored.model_dump(mode="json")))

    def get(self, file_id: str) -> StoredFile | None:
        answer = self.client.get_item(TableName=self.table, Key={"id": {"S": file_id}}, ConsistentRead=True)
        return StoredFile.model_validate(from_item(answer["Item"])) if "Item" in answer else None


class DynamoRateLimits(AwsAdapter):
    """Counters in the pull state table under the key prefix `ratelimit#` (one item per key and
    window; the table's TTL attribute `expires_at` removes windows that are over)."""

    service = "dynamodb"

    def __init__(self, table: str, client: BaseClient | None = None) -> None:
        self.table = table
        super().__init__(client)

    def take(self, key: str, window: str, *, limit: int, expires_at: int) -> bool:
        item_key = {"pk": {"S": f"ratelimit#{key}"}, "sk": {"S": window}}
        return count_below(self.client, self.table, item_key, limit=limit, expires_at=expires_at)


def count_below(client: BaseClient, table: str, key: dict[str, Any], *, limit: int, expires_at: int) -> bool:
    """Adds one to the counter item `key` unless it already reached `limit`; False then.

    Closes the race of concurrent senders both reading count = limit - 1: the check and the
    increment are one atomic conditional write, so at most `limit` of them succeed. The item
    carries `expires_at` for the table's TTL, which removes windows that are over.
    """
    try:
        client.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="ADD #count :one SET expires_at = :expires",
            ConditionExpression="attribute_not_exists(#count) OR #count < :limit",
            ExpressionAttributeNames={"#count": "count"},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":limit": {"N": str(limit)},
                ":expires": {"N": str(expires_at)},
            },
        )
    except client.exceptions.ConditionalCheckFailedException:
        return False
    return True


# Pull state of an account in DynamoDB: the lease that lets one pull at a time download a
# mailbox, and the outcome of the latest pull. Every transition of these items is in this module.
#
# Items (PullStateTable): pk "<team>#<account>", sk "LEASE" (holder, lease_until, taken: leases
# taken since one was given back; deleted when released, so a lease found expired was left by a
# pull that died; its `expires_at`, the TTL, lies ATTEMPT_SECONDS ahead: TTL deleting the lease
# of a dead pull soon after it ended would lose the count of deaths), sk "STATE" (last_pull_at, last_error, fetched, remaining) and sk
# "ATTEMPT#<mail id>" (holder, attempts, expires_at) while a pull that follows a death prepares
# that received message (services/pull.py, Attempts): a record a pull finds there was left by a
# pull that died preparing the message. `expires_at` is the table's TTL attribute.
ATTEMPT = "ATTEMPT#"
# An attempt record outlives any pull; a message whose record expired starts counting again.
ATTEMPT_SECONDS = 30 * 86400


class DynamoPullState(AwsAdapter):
    service = "dynamodb"

    def __init__(self, table: str, client: BaseClient | None = None) -> None:
        self.table = table
        super().__init__(client)

    @staticmethod
    def _key(team: str, account: str, kind: str) -> dict[str, Any]:
        return {"pk": {"S": f"{team}#{account}"}, "sk": {"S": kind}}

    def acquire_lease(self, team: str, account: str, holder: str, seconds: float) -> PullLease | None:
        """Takes the account's lease for `seconds`; None when another pull holds a live one. A
        released lease is deleted, so `taken` counts the leases taken since one was given back."""
        client = self.client
        now = int(time.time())
        try:
            answer = client.update_item(
                TableName=self.table,
                Key=self._key(team, account, LEASE),
                UpdateExpression="SET holder = :holder, lease_until = :until, expires_at = :kept ADD taken :one",
                # Race closed: two pulls of one account starting together (API call and schedule)
                # both see "no lease" and both download the mailbox. Only one conditional write
                # wins. A lease whose holder crashed stops counting once expired, so a killed
                # Lambda does not lock the account until TTL gets round to deleting the item.
                # `holder = :holder`: the SDK re-sending this write after its answer was lost
                # must find the pull's own lease taken, not refuse the pull as already running.
                ConditionExpression="attribute_not_exists(pk) OR lease_until < :now OR holder = :holder",
                ExpressionAttributeValues={
                    ":now": {"N": str(now)},
                    ":until": {"N": str(now + max(1, int(seconds)))},
                    ":kept": {"N": str(now + ATTEMPT_SECONDS)},
                    ":holder": {"S": holder},
                    ":one": {"N": "1"},
                },
                ReturnValues="ALL_OLD",
            )
        except client.exceptions.ConditionalCheckFailedException:
            return None
        old = answer.get("Attributes", {})
        taken_before = int(old.get("taken", {}).get("N", "0"))
        if old.get("holder", {}).get("S") == holder:  # a re-sent write: the first one counted
            taken_before -= 1
        return PullLease(holder, after_deaths=max(0, taken_before))

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
        return item is not None and int(item["lease_until"]["N"]) >= int(time.time())

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


# Writing team secrets without losing a change: the secret itself (Secrets Manager) and the
# writer's lease and account revisions next to it (PullStateTable).
#
# Secrets Manager has no compare-and-swap: PutSecretValue always makes the new value current. Two
# changes that both read the secret, change one account each and write it back would lose the first
# write. So a change of a team's accounts runs under the team's writer lease, a DynamoDB item taken
# with a conditional put, and reads the secret fresh (never from a cache) only once it holds the
# lease: every writer sees the finished write of the one before.
#
# Item: pk "accounts#<team>", sk "WRITER": holder, lease_until (epoch seconds), revisions (a map
# account -> the number of changes made through the API, the version a caller's If-Match names).
# `lease_until` is not the table's TTL attribute (`expires_at`): TTL would delete the revisions.


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


# Per-account sending limits shared by every process: messages a minute and concurrent SMTP
# connections (Exchange Online allows 30 and 3 per mailbox; see MailAccount.message_rate_limit).
#
# The counters live in the pull state table next to the account's STATE item (pk `team#account`):
# `RATE#<epoch minute>` counts the messages of one minute (expiring by TTL), `CONN#<n>` are the
# connection slots, each a lease with an expiry so a crashed process frees its slot by itself.
# All conditions are in this module.
#
# The API the send paths use (send_mail now; the outbox's sender can call the same):
#
#     limiter.take_message(target)          # raises RateLimited (429, retry_after) when over
#     with limiter.connection(target): ...  # raises RateLimited when every slot is taken


class DynamoLimitCounters(AwsAdapter):
    service = "dynamodb"

    def __init__(self, table: str, client: BaseClient | None = None) -> None:
        self.table = table
        super().__init__(client)

    def take(self, pk: str, minute: int, limit: int, expires_at: int) -> bool:
        key = {"pk": {"S": pk}, "sk": {"S": f"RATE#{minute}"}}
        return count_below(self.client, self.table, key, limit=limit, expires_at=expires_at)

    def lease(self, pk: str, slot: int, holder: str, now: float, until: float) -> bool:
        client = self.client
        try:
            # Closes the race of two processes taking the same free slot: only one put finds it
            # free (absent, or its lease run out because the holder crashed).
            client.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": pk},
                    "sk": {"S": f"CONN#{slot}"},
                    "holder": {"S": holder},
                    "lease_until": {"N": f"{until:.3f}"},
                    "expires_at": {"N": str(math.ceil(until) + RATE_ITEM_LIFETIME_SECONDS)},
                },
                ConditionExpression="attribute_not_exists(pk) OR lease_until < :now",
                ExpressionAttributeValues={":now": {"N": f"{now:.3f}"}},
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release(self, pk: str, slot: int, holder: str) -> None:
        client = self.client
        # A holder whose lease ran out and was taken over must not free the new holder's slot.
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.delete_item(
                TableName=self.table,
                Key={"pk": {"S": pk}, "sk": {"S": f"CONN#{slot}"}},
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )


def idempotency_store(table: str) -> DynamoDBPersistenceLayer:
    """A persistence layer for ONE idempotency configuration: Powertools keeps the first
    configuration a layer is given, so two uses (send's keys, system mail's) must not share one."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    return DynamoDBPersistenceLayer(table_name=table, boto3_client=aws_client("dynamodb"))
