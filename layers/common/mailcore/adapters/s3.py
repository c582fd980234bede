"""S3: the blob store of raw mail, bodies and files (port BlobStore)."""

from __future__ import annotations

import io
from functools import cache
from typing import TYPE_CHECKING, Any

from mailcore.adapters.base import AwsAdapter, refusals_raised

if TYPE_CHECKING:
    from botocore.client import BaseClient

PRESIGN_SECONDS = 900
MULTIPART_THRESHOLD = 8 * 1024 * 1024


@cache
def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    # Threads off: the pull already overlaps its writes; parts stream from the caller's buffer.
    return TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD, use_threads=False
    )


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
