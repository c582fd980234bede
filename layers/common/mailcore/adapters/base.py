"""The shared base of the AWS adapters: one boto3 session per process, one client per service,
each made on first use (never at import: a cold start, and a SnapStart snapshot, pay only for the
clients a function uses)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from mailcore.errors import StoreRefused

if TYPE_CHECKING:
    from botocore.client import BaseClient

# Answers that say the request itself is wrong (an item over 400 KB, an object too large).
_REFUSALS = {"ValidationException", "EntityTooLarge", "KeyTooLongError"}


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


def reset_clients() -> None:
    """Forgets the process's session and clients (tests pointing boto3 at another endpoint)."""
    aws_client.cache_clear()
    _session.cache_clear()
