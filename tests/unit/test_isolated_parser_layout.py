"""The parser child process starts from a deployment-like layout (the layer's mailcore and only the
distributions it imports; no dev install on the path), as it must inside Lambda, and parses there."""

import json
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


def _interpreter_needing(variable: str, marker: str, tmp_path: Path) -> Path:
    """A python that starts only with `marker` in `variable`, as Lambda's /var/lang/bin/python
    finds its libpython only through LD_LIBRARY_PATH (the loader fails before Python runs)."""
    real = Path(sys.base_prefix) / "bin" / Path(sys.executable).name
    if not real.exists():
        real = Path(sys.executable).resolve()
    wrapper = tmp_path / "bin" / "python3"
    wrapper.parent.mkdir()
    wrapper.write_text(
        "#!/bin/bash\n"
        f'case "${variable}" in *{marker}*) exec -a "$0" {real} "$@";; esac\n'
        'echo "python3: error while loading shared libraries: libpython3.13.so.1.0" >&2\n'
        "exit 127\n"
    )
    wrapper.chmod(0o755)
    return wrapper


def test_the_parser_child_gets_the_library_path_the_interpreter_needs_and_no_credentials(
    tmp_path: Path,
) -> None:
    python = _interpreter_needing("LD_LIBRARY_PATH", "/var/lang/lib", tmp_path)
    show_child_environment = (
        _PARSE_IN_CHILD
        + "import json\n"
        + "from mailcore.mime.isolated import _child_environment\n"
        + "print(json.dumps(sorted(_child_environment('x'))))\n"
    )
    done = subprocess.run(
        [str(python), "-S", "-c", show_child_environment],
        env={
            "PYTHONPATH": str(LAYER_SOURCE) + ":" + ":".join(p for p in sys.path if p),
            "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/opt/lib",
            "AWS_SECRET_ACCESS_KEY": "do-not-hand-me-down",
            "AWS_SESSION_TOKEN": "nor-me",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "from the layer"
    assert not any(name.startswith("AWS_") for name in json.loads(lines[1]))
