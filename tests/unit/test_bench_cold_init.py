"""bench.cold_init: what it measures is read from the translated template, and a sample runs in
the built artifact (.aws-sam/build), not in the dev install."""

from pathlib import Path

import pytest

from bench.cold_init import (
    BUILD,
    TEMPLATE,
    assemble,
    granted_services,
    run_sample,
    runtime_distributions,
    subjects,
)
from local.aws import create_resources_elsewhere
from local.template import Template


@pytest.fixture(scope="module")
def template() -> Template:
    template = Template.load(TEMPLATE, stack_name="bench")
    create_resources_elsewhere(template)
    return template


def test_clients_of_a_function_are_the_services_its_role_grants(template: Template) -> None:
    assert granted_services(template, "SendFunction") == ("dynamodb", "events", "s3", "secretsmanager", "sqs")
    assert granted_services(template, "StoreFunction") == ("dynamodb", "s3", "secretsmanager")


@pytest.mark.skipif(not (BUILD / "CommonLayer").is_dir(), reason="needs `make template` (sam build) first")
def test_send_handler_imports_from_the_built_artifact_in_a_fresh_process(
    template: Template, tmp_path: Path
) -> None:
    send = [subject for subject in subjects(template) if subject.spec.logical_id == "SendFunction"]
    layout = assemble(tmp_path, send, runtime_distributions(send), bytecode=False)

    sample = run_sample(layout, send[0], ("s3",), bytecode=False)

    assert (layout.layer / "mailcore" / "__init__.py").is_file()
    assert not list(layout.functions["SendFunction"].rglob("*.pyc"))
    assert 0 < sample.import_seconds < sample.ready_seconds
    assert sample.peak_rss_kib > 0
