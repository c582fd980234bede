"""The parser child process starts from a deployment-like layout (the layer's mailcore and only the
distributions it imports; no dev install on the path), as it must inside Lambda, and parses there."""

import shutil
import subprocess
import sys
from pathlib import Path

from bench.cold_init import ROOT, imported_distributions, link_distributions

LAYER_SOURCE = ROOT / "layers" / "common"

_PARSE_IN_CHILD = """
from mailcore.mime.isolated import IsolatedParser
with IsolatedParser() as parser:
    print(parser.parse(b"Subject: from the layer\\r\\n\\r\\nhello\\r\\n").subject)
"""


def test_the_parser_child_starts_from_the_layer_without_the_dev_install(tmp_path: Path) -> None:
    layer = tmp_path / "opt" / "python"
    shutil.copytree(
        LAYER_SOURCE / "mailcore", layer / "mailcore", ignore=shutil.ignore_patterns("__pycache__")
    )
    needed = imported_distributions([LAYER_SOURCE], ["mailcore.mime.isolated"], []) - {"mail-service"}
    link_distributions(needed, layer)

    done = subprocess.run(
        [sys.executable, "-S", "-c", _PARSE_IN_CHILD],
        env={"PYTHONPATH": str(layer), "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from the layer"
