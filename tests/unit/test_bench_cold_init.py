"""bench.cold_init: what it measures is read from template.yaml, and a sample runs in the
assembled deployment layout, not in the dev install."""

from pathlib import Path

from bench.cold_init import TEMPLATE, assemble, dependencies, granted_services, run_sample, subjects
from local.template import Template


def test_clients_of_a_function_are_the_services_its_policies_grant() -> None:
    template = Template.load(TEMPLATE)

    assert granted_services(template, "SendFunction") == ("dynamodb", "events", "s3", "secretsmanager", "sqs")


def test_send_handler_imports_from_the_assembled_layout_in_a_fresh_process(tmp_path: Path) -> None:
    send = [
        subject for subject in subjects(Template.load(TEMPLATE)) if subject.spec.logical_id == "SendFunction"
    ]
    layout = assemble(tmp_path, send, dependencies(send), bytecode=False)

    sample = run_sample(layout, send[0], ("s3",), bytecode=False)

    assert (layout.layer / "mailcore" / "__init__.py").is_file()
    assert not list(layout.layer.rglob("*.pyc"))
    assert 0 < sample.import_seconds < sample.ready_seconds
    assert sample.peak_rss_kib > 0
