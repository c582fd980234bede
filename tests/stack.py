"""What the tests read and change of the functions running in this process (tests/integration's
local stack): their composition roots (mailcore.wiring), built from the stack's environment."""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from unittest.mock import patch

import pytest
from mailcore.storage import Storage
from mailcore.teams import TeamDirectory
from mailcore.wiring import pull, store

if TYPE_CHECKING:
    from local.template import FunctionSpec

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


def resolved_function(function_id: str) -> FunctionSpec:
    """A function of template.yaml as the local stack reads it, every value resolved."""
    return _resolved_template().function(function_id)


@contextmanager
def function_environment(function_id: str) -> Iterator[dict[str, str]]:
    """The environment template.yaml gives a function (as the local stack resolves it, pointing
    at no running resource) for a test that imports its handler; the roots built from it are
    forgotten afterwards."""
    from mailcore import wiring

    environment = resolved_function(function_id).environment
    wiring.reset()
    try:
        with patch.dict(os.environ, environment):
            yield environment
    finally:
        wiring.reset()
