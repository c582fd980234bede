"""DynamoDB and S3 adapters of the storage ports. Clients are created once, lazily, per process."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from mailcore.errors import StoreRefused
from mailcore.models import Mail, StoredFile
from mailcore.settings import Settings
from mailcore.storage import Guard, MailQuery, Storage, Transition, body_key, index_attributes, outbox_key

if TYPE_CHECKING:
    from botocore.client import BaseClient

# Answers that say the request itself is wrong (an item over 400 KB, an object too large).
_REFUSALS = {"ValidationException", "EntityTooLarge", "KeyTooLongError"}
# DynamoDB items stop at 400 KB; bodies above this many bytes go to S3 and the item points there.
BODY_INLINE_LIMIT = 200_000
PRESIGN_SECONDS = 900
MULTIPART_THRESHOLD = 8 * 1024 * 1024


@cache
def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    # Threads off: the pull already overlaps its writes; parts stream from the caller's buffer.
    return TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD, use_threads=False
    )


@cache
def _session() -> Any:
    import boto3

    # One session for every client: each new session loads botocore's endpoint data again.
    return boto3.session.Session()


@cache
def aws_client(service: str) -> BaseClient:
    from botocore.config import Config

    # The outbox writes from a small thread pool: room for its connections beside the caller's.
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=32,
    )
    return _session().client(service, config=config)


class AwsAdapter:
    """An adapter's AWS client: the one a test hands in, else the process's shared client of
    `service`, made on first use (a cold start pays only for the clients it uses)."""

    service: ClassVar[str]

    def __init__(self, client: BaseClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> BaseClient:
        return self._client or aws_client(self.service)


@contextmanager
def refusals_raised() -> Iterator[None]:
    """Raises StoreRefused for an AWS answer that will be the same on every retry."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in _REFUSALS:
            raise StoreRefused(
                f"{code}: {error.response.get('Error', {}).get('Message', '')}"[:300]
            ) from error
        raise


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


class S3Blobs(AwsAdapter):
    service = "s3"

    def __init__(self, bucket: str, client: BaseClient | None = None) -> None:
        self.bucket = bucket
        super().__init__(client)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with refusals_raised():
            self._put(key, data, content_type)

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        if len(data) <= MULTIPART_THRESHOLD:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
            return
        # A large message goes up in parts read from the one copy in memory (BytesIO shares
        # the bytes object), instead of one request body holding a second copy.
        self.client.upload_fileobj(
            io.BytesIO(data),
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type},
            Config=_transfer_config(),
        )

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def get_at_most(self, key: str, limit: int) -> bytes | None:
        # One GET: the size checked is the size read, even if the object is replaced meanwhile.
        answer = self.client.get_object(Bucket=self.bucket, Key=key)
        body = answer["Body"]
        if answer["ContentLength"] > limit:
            body.close()
            return None
        data: bytes = body.read(limit + 1)
        body.close()
        return None if len(data) > limit else data

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def download_url(self, key: str, *, filename: str, content_type: str) -> str:
        quoted = filename.replace("\\", "_").replace('"', "_")
        return self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentType": content_type,
                "ResponseContentDisposition": f'attachment; filename="{quoted}"',
            },
            ExpiresIn=PRESIGN_SECONDS,
        )

    def upload_url(self, key: str, *, content_type: str) -> str:
        return self.client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=PRESIGN_SECONDS,
        )


class DynamoMail(AwsAdapter):
    service = "dynamodb"

    def __init__(self, table: str, blobs: S3Blobs, client: BaseClient | None = None) -> None:
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
        self,
        mail_id: str,
        guard: Guard,
        *,
        assign: Mapping[str, Any],
        remove: Iterable[str] = (),
    ) -> Mail | None:
        client = self.client
        try:
            answer = client.update_item(
                **self._update(mail_id, guard, assign, remove), ReturnValues="ALL_NEW"
            )
        except client.exceptions.ConditionalCheckFailedException:
            return None
        return self._mail(answer["Attributes"])

    def transition_many(self, transitions: Sequence[Transition]) -> list[Mail | None]:
        # One conditional UpdateItem each, not TransactWriteItems: a transaction is all or
        # nothing (one mail another sender took cancels the whole batch), costs twice the write
        # units, and moto copies the whole table for each one (slow, and not thread-safe).
        return [self.transition(t.mail_id, t.guard, assign=t.assign, remove=t.remove) for t in transitions]

    def outbox(self, team: str, account: str, *, limit: int = 1000) -> list[Mail]:
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "Outbox",
            "KeyConditionExpression": "outbox = :key",
            "ExpressionAttributeValues": {":key": {"S": outbox_key(team, account)}},
        }
        return self._query_index(request, limit)

    def _query_index(self, request: dict[str, Any], limit: int) -> list[Mail]:
        found: list[Mail] = []
        while len(found) < limit:
            answer = self.client.query(**request, Limit=limit - len(found))
            found.extend(self._mail(item) for item in answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                break
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return found

    def due(self, team: str, account: str, now: str, *, limit: int = 1000) -> list[Mail]:
        return self._query_index(
            {
                "TableName": self.table,
                "IndexName": "Waiting",
                "KeyConditionExpression": "waiting = :key AND due_at <= :now",
                "ExpressionAttributeValues": {
                    ":key": {"S": outbox_key(team, account)},
                    ":now": {"S": now},
                },
            },
            limit,
        )

    def existing_ids(self, mail_ids: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(mail_ids))
        found: set[str] = set()
        for start in range(0, len(wanted), 100):
            request: dict[str, Any] = {
                self.table: {
                    "Keys": [{"id": {"S": mail_id}} for mail_id in wanted[start : start + 100]],
                    "ProjectionExpression": "id",
                    "ConsistentRead": True,
                }
            }
            while request:
                answer = self.client.batch_get_item(RequestItems=request)
                found.update(item["id"]["S"] for item in answer["Responses"].get(self.table, []))
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


class SqsDeadLetters(AwsAdapter):
    """The outbox's dead-letter queue: one JSON message per mail that ended failed after retries."""

    service = "sqs"

    def __init__(self, queue_url: str, client: BaseClient | None = None) -> None:
        self.queue_url = queue_url
        super().__init__(client)

    def put(self, body: dict[str, Any]) -> None:
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(body))


def aws_storage(settings: Settings) -> Storage:
    from mailcore.storage.pull_state import DynamoPullState

    blobs = S3Blobs(settings.bucket)
    return Storage(
        mail=DynamoMail(settings.mail_table, blobs),
        files=DynamoFiles(settings.files_table),
        blobs=blobs,
        pull_state=DynamoPullState(settings.pull_state_table),
    )
