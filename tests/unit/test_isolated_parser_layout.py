"""The parser child process starts from the deployment layout (function folder, layer, runtime; no
dev install), as it must inside Lambda, and parses a message there."""

import subprocess
import sys
from pathlib import Path

from bench.cold_init import TEMPLATE, assemble, dependencies, subjects
from local.template import Template

_PARSE_IN_CHILD = """
from mailcore.mime.isolated import IsolatedParser
with IsolatedParser() as parser:
    print(parser.parse(b"Subject: from the layer\\r\\n\\r\\nhello\\r\\n").subject)
"""


def test_the_pull_functions_parser_child_starts_from_the_deployment_layout(tmp_path: Path) -> None:
    pull = [
        subject for subject in subjects(Template.load(TEMPLATE)) if subject.spec.logical_id == "PullFunction"
    ]
    layout = assemble(tmp_path, pull, dependencies(pull), bytecode=False)
    path = ":".join(str(folder) for folder in layout.path_for("PullFunction"))

    done = subprocess.run(
        [sys.executable, "-S", "-c", _PARSE_IN_CHILD],
        env={"PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from the layer"
