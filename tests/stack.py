"""What the tests read and change of the functions running in this process (tests/integration's
local stack): their composition roots (mailcore.wiring), built from the stack's environment."""

from __future__ import annotations

import dataclasses
import os
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest.mock import patch

import pytest
from mailcore.storage import Storage
from mailcore.teams import TeamDirectory
from mailcore.wiring import pull, store

ROOT = Path(__file__).resolve().parents[1]


def stack_storage() -> Storage:
    """The stack's storage, as the functions use it (DynamoDB and S3 in moto)."""
    return store.root().storage


def stack_directory() -> TeamDirectory:
    return store.root().directory


def stack_tls_context() -> ssl.SSLContext:
    """The TLS context the functions reach the stack's mail servers with (its own CA)."""
    return pull.root().tls_context()


def replace_in_root(monkeypatch: pytest.MonkeyPatch, module: ModuleType, **changes: Any) -> None:
    """For this test, the functions built by `module` (a mailcore.wiring root module) use
    `changes` (e.g. events=MemoryPublisher()) instead of their adapters."""
    changed = dataclasses.replace(module.root(), **changes)
    monkeypatch.setattr(module, "root", lambda *args: changed)


@cache
def _resolved_template() -> Any:
    """template.yaml with its resources created in a moto server of their own (once per process;
    a stack name of its own, since moto's state is the process's), so every value resolves."""
    from local.aws import create_resources_elsewhere
    from local.template import Template

    template = Template.load(ROOT / "template.yaml", stack_name="function-environment")
    create_resources_elsewhere(template)
    return template


@contextmanager
def function_environment(function_id: str) -> Iterator[dict[str, str]]:
    """The environment template.yaml gives a function (as the local stack resolves it, pointing
    at no running resource) for a test that imports its handler; the roots built from it are
    forgotten afterwards."""
    from mailcore import wiring

    environment = _resolved_template().function(function_id).environment
    wiring.reset()
    try:
        with patch.dict(os.environ, environment):
            yield environment
    finally:
        wiring.reset()


_PER_INVOCATION = ("current_event", "lambda_context")


def powertools_events_per_thread() -> None:
    """Powertools' resolvers keep the request they answer on their base class (BaseRouter), which
    holds in Lambda (one request per process at a time) but not here, where the functions answer
    concurrent requests in threads of one process: a request would then be answered with another's
    query or caller. Each thread (each invocation runs in its own) gets its own request instead."""
    from aws_lambda_powertools.event_handler import api_gateway

    base = api_gateway.BaseRouter
    if getattr(base, "_per_thread", False):
        return
    local = threading.local()

    class PerThread:
        """The attribute, read from an instance or the class, as this thread set it."""

        def __init__(self, name: str) -> None:
            self.name = name

        def __get__(self, instance: Any, owner: Any = None) -> Any:
            try:
                return getattr(local, self.name)
            except AttributeError:
                raise AttributeError(self.name) from None

        def __set__(self, instance: Any, value: Any) -> None:
            setattr(local, self.name, value)

    class PerThreadClass(type(base)):  # type: ignore[misc]
        def __setattr__(cls, name: str, value: Any) -> None:  # BaseRouter.current_event = ...
            if name in _PER_INVOCATION:
                setattr(local, name, value)
            else:
                super().__setattr__(name, value)

    base.__class__ = PerThreadClass
    for name in _PER_INVOCATION:
        type.__setattr__(base, name, PerThread(name))
    type.__setattr__(base, "_per_thread", True)
