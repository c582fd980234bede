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

# The services of the adapters made in this process: the clients the function may make.
_adapter_services: set[str] = set()

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
        if client is None:
            _adapter_services.add(self.service)

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


def load_client_data() -> None:
    """Reads into the process's session what making the adapters' clients reads from botocore's
    data files (service models, endpoint rules, partitions), making no client and resolving no
    credentials. In a SnapStart INIT this lands in the snapshot: after a restore a client then
    takes ~25-40 ms to make instead of ~130-230 ms (bench/cold_init.py)."""
    session = _session()._session
    loader = session.get_component("data_loader")
    for service in sorted(_adapter_services):
        for kind in ("service-2", "endpoint-rule-set-1"):
            loader.load_service_model(service, kind)
    loader.load_data("partitions")
    loader.load_data("sdk-default-configuration")
    loader.load_data("endpoints")


def reset_clients() -> None:
    """Forgets the process's session and clients (tests pointing boto3 at another endpoint)."""
    aws_client.cache_clear()
    _session.cache_clear()
