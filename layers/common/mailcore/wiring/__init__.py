"""Composition roots: one module per function (store, accounts, pull, outbox, send, system_mail)
builds that function's use cases from its validated settings (mailcore.settings) and the AWS
adapters (mailcore.adapters), every dependency required. A handler imports its root's module and
calls `root()`: once at import (the init: a missing variable fails it, with its name), then per
call. Building a root makes no client; each adapter makes its client on first use.

The one seam for tests that run the functions in this process (tests/integration, local/):
`clock`, the time of the outbox's schedules (patch it to move time by hours without sleeping);
a root module's `root` (patch it to hand a function other adapters); `reset()` after pointing
the environment at other resources."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any


def _utc_now() -> datetime:
    return datetime.now(UTC)


clock: Callable[[], datetime] = _utc_now

_roots: list[Any] = []


def process_root[**P, RootT](build: Callable[P, RootT]) -> Callable[P, RootT]:
    """`build` made once per process (a warm Lambda reuses its root), forgotten by reset().
    Built in a SnapStart INIT (the handler builds it at import), it also loads botocore's data for
    its adapters' clients, so the snapshot holds it; the clients themselves, and the credentials,
    are still made after restore, on first use."""

    @cache
    def made(*args: P.args, **kwargs: P.kwargs) -> RootT:
        root = build(*args, **kwargs)
        if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
            from mailcore.adapters.base import load_client_data

            load_client_data()
        return root

    _roots.append(made)
    return made  # type: ignore[return-value]


def reset() -> None:
    from mailcore.adapters.base import reset_clients
    from mailcore.protocols.tls import client_tls_context

    for made in _roots:
        made.cache_clear()
    reset_clients()
    client_tls_context.cache_clear()
