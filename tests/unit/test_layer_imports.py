"""The layer's shape (docs/architecture.md): no import cycle, AWS only in the adapters, no test
fakes shipped, the domain free of its composition roots, settings checked at init, functions short."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from scripts.module_graph import (
    LAYER,
    cycles,
    function_lengths,
    graph,
    handler_modules,
    imported_names,
    layer_modules,
)
from tests.stack import function_environment

# Libraries that make AWS clients: only an adapter may import them.
AWS_LIBRARIES = ("boto3", "botocore", "aws_encryption_sdk", "aws_lambda_powertools.utilities.parameters")
ADAPTERS = "mailcore.adapters"
ROOTS = "mailcore.wiring"
# The mail-check command line builds what it uses, like a root.
ENTRY_POINTS = {"mailcore.check"}


def test_the_layer_has_no_import_cycle():
    assert cycles(graph()) == []


def test_every_function_of_the_layer_fits_a_screen():
    assert [row for row in function_lengths(list(layer_modules().values())) if row[0] > 60] == []


def test_every_function_of_a_handler_module_is_short():
    assert [row for row in function_lengths(handler_modules()) if row[0] > 30] == []


def test_a_long_function_is_measured_from_def_to_its_last_line(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("class A:\n    def f(self):\n        x = 1\n\n        return x\n")
    assert function_lengths([module]) == [(4, f"{module}:2 A.f")]


def test_a_new_cycle_is_found(tmp_path):
    package = tmp_path / "mailcore"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from mailcore import b\n")
    (package / "b.py").write_text("def f():\n    from mailcore.a import x\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mailcore import a\n"
    )
    (package / "d.py").write_text("from mailcore import c\n")
    assert cycles(graph(tmp_path)) == [["mailcore.a", "mailcore.b"]]


def test_only_adapters_import_the_libraries_that_make_aws_clients():
    offenders = {
        name: sorted(found)
        for name, path in layer_modules().items()
        if not name.startswith(ADAPTERS)
        if (
            found := {
                imported for imported in imported_names(name, path) if imported.startswith(AWS_LIBRARIES)
            }
        )
    }
    assert offenders == {}


def test_the_domain_imports_neither_adapters_nor_composition_roots():
    offenders = {
        name: sorted(found)
        for name, targets in graph().items()
        if not name.startswith((ADAPTERS, ROOTS)) and name not in ENTRY_POINTS
        if (found := {target for target in targets if target.startswith((ADAPTERS, ROOTS))})
    }
    assert offenders == {}


def test_the_layer_ships_no_in_memory_fakes():
    fakes = [
        f"{name}.{node.name}"
        for name, path in layer_modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name.startswith(("Memory", "Fake"))
    ]
    assert fakes == []
    assert not (LAYER / "mailcore" / "storage" / "memory.py").exists()


def test_a_missing_variable_fails_the_init_with_its_name(monkeypatch):
    from mailcore.settings import SendSettings, read

    monkeypatch.delenv("OUTBOX_DLQ_URL", raising=False)
    monkeypatch.setenv("MAIL_TABLE", "")
    with pytest.raises(ValueError) as failed:
        read(SendSettings)
    assert "OUTBOX_DLQ_URL" in str(failed.value) and "MAIL_TABLE" in str(failed.value)


def test_a_malformed_variable_fails_the_init_with_its_name(monkeypatch, send_environment):
    from mailcore.settings import SystemMailSettings, read

    monkeypatch.setenv("SYSTEM_MAIL_RECIPIENT_LIMIT", "five")
    with pytest.raises(ValueError, match="SYSTEM_MAIL_RECIPIENT_LIMIT"):
        read(SystemMailSettings)


@pytest.fixture
def send_environment():
    with function_environment("SendFunction") as environment:
        yield environment


def initialize_send_handler() -> None:
    """What Lambda's INIT does: imports the handler module (as a module of its own)."""
    path = Path(__file__).resolve().parents[2] / "functions" / "send" / "app.py"
    spec = importlib.util.spec_from_file_location("init_send_app", path)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_a_handlers_init_checks_its_settings_but_makes_no_client(send_environment):
    from mailcore.adapters.base import _session, aws_client
    from mailcore.wiring import send

    initialize_send_handler()
    assert send.root().idempotency_table == send_environment["IDEMPOTENCY_TABLE"]  # read at init
    assert aws_client.cache_info().currsize == 0
    assert _session.cache_info().currsize == 0  # an on-demand init loads nothing of boto3's


def test_a_snapstart_init_loads_the_clients_data_into_the_snapshot_but_makes_no_client(
    send_environment, monkeypatch
):
    from botocore.loaders import JSONFileLoader
    from mailcore.adapters.base import aws_client

    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    initialize_send_handler()
    assert aws_client.cache_info().currsize == 0  # no client, no credentials in the snapshot

    read_after_restore: list[str] = []
    load_file = JSONFileLoader.load_file

    def recorded(loader: JSONFileLoader, path: str) -> object:
        found = load_file(loader, path)
        if found is not None:  # a file read, not a look for an optional one
            read_after_restore.append(path)
        return found

    monkeypatch.setattr(JSONFileLoader, "load_file", recorded)
    for service in ("dynamodb", "s3", "secretsmanager", "events", "sqs"):
        aws_client(service)
    assert read_after_restore == []
