"""Cold init of every function as built (`.aws-sam/build`), against the floor it cannot beat,
with and without SnapStart's preparation, measured in the same run.

Run: `make bench-cold` (it runs `sam build` and compiles the bytecode first), or
`.venv/bin/python -m bench.cold_init --runs 7` after `make template`.

Each sample is a fresh interpreter started with `-S`, so nothing of the dev install is on the
path; PYTHONPATH is Lambda's order:

    function/  .aws-sam/build/<Function>            (/var/task)
    layer/     .aws-sam/build/CommonLayer/python    (/opt/python)
    runtime/   boto3 and what it needs              (the runtime's own boto3)

The build is for arm64: its native packages (pydantic_core, nh3, cryptography, ...) do not load
on this x86 machine, so those alone are replaced by the dev venv's x86 builds of the same
versions. Two layouts: as built (with the compiled .pyc `make template` adds), and without any
.pyc, which is what `sam build` alone ships (Lambda's code folders are read-only: every cold
start compiles again).

A sample times (1) importing the handler module, Lambda's INIT phase, and (2) that plus creating
the AWS clients the function's policies grant, the way the handler does on first use. Without
SnapStart (AWS_LAMBDA_INITIALIZATION_TYPE=on-demand) the init is (2). With SnapStart the INIT runs
as `snap-start` (the roots then load botocore's data for their clients: mailcore.wiring) and (1) is
in the snapshot: what is left after restore is (2) minus (1) of such a sample. The floor is a
fresh process doing `import boto3` (in a snapshot too) and creating the same clients.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from local import iam
from local.aws import create_resources_elsewhere
from local.template import FunctionSpec, Template

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
BUILD = ROOT / ".aws-sam" / "build"

# Run with -S inside the sample process; argv: module attribute service...
_SAMPLE_CODE = """
import sys, time
started = time.perf_counter()
import importlib, resource
module = importlib.import_module(sys.argv[1])
getattr(module, sys.argv[2])
imported = time.perf_counter()
from mailcore.adapters.base import aws_client
for service in sys.argv[3:]:
    aws_client(service)
ready = time.perf_counter()
print(imported - started, ready - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

# argv: service...
_FLOOR_CODE = """
import sys, time
started = time.perf_counter()
import resource
import boto3
imported = time.perf_counter()
session = boto3.session.Session()
for service in sys.argv[1:]:
    session.client(service)
ready = time.perf_counter()
print(imported - started, ready - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

# Run with the dev venv's own site-packages; prints the distributions whose modules got imported.
_PROBE_CODE = """
import importlib, json, sys
from importlib import metadata
sys.path[:0] = json.loads(sys.argv[1])
for module in json.loads(sys.argv[2]):
    importlib.import_module(module)
services = json.loads(sys.argv[3])
if services:
    import boto3
    session = boto3.session.Session()
    for service in services:
        session.client(service)
owners = metadata.packages_distributions()
names = {name.partition(".")[0] for name in list(sys.modules)}
print(json.dumps(sorted({dist for name in names for dist in owners.get(name, [])})))
"""


@dataclass(frozen=True)
class Subject:
    """One function of the template and the AWS services its policies grant."""

    spec: FunctionSpec
    services: tuple[str, ...]


@dataclass(frozen=True)
class Layout:
    """A deployment layout on disk: one folder per function, the layer, the runtime's boto3."""

    root: Path
    functions: dict[str, Path]
    layer: Path
    runtime: Path

    def path_for(self, logical_id: str | None) -> list[Path]:
        head = [self.functions[logical_id], self.layer] if logical_id else []
        return [*head, self.runtime]


@dataclass(frozen=True)
class Sample:
    import_seconds: float
    ready_seconds: float
    peak_rss_kib: int


def granted_services(template: Template, logical_id: str) -> tuple[str, ...]:
    """The AWS services a function's role (from the translated template) allows it to call."""
    return tuple(
        sorted(
            {
                str(action).partition(":")[0]
                for document in template.execution_role(logical_id).policies
                for statement in iam.statements(document)
                if statement.get("Effect") == "Allow"
                for action in iam.listed(statement.get("Action", []))
            }
        )
    )


def subjects(template: Template) -> list[Subject]:
    return [
        Subject(spec, granted_services(template, logical_id))
        for logical_id, spec in sorted(template.functions().items())
    ]


def imported_distributions(
    paths: Sequence[Path], modules: Sequence[str], services: Sequence[str]
) -> set[str]:
    """The installed distributions whose modules the given imports and clients load."""
    argv = [json.dumps([str(path) for path in paths]), json.dumps(list(modules)), json.dumps(list(services))]
    result = subprocess.run(
        [sys.executable, "-c", _PROBE_CODE, *argv],
        env=_aws_environment({}),
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(result.stdout))


def link_distributions(names: Iterable[str], target: Path) -> None:
    """Links the installed files (and metadata) of distributions into target, without their .pyc."""
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
        distribution = metadata.distribution(name)
        for file in distribution.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts or file.suffix == ".pyc":
                continue  # console scripts outside site-packages; caches are made (or not) below
            source = Path(str(distribution.locate_file(file)))
            if source.is_file():
                destination = target / file
                destination.parent.mkdir(parents=True, exist_ok=True)
                # A link reads like a copy for the import system and makes assembly quick.
                destination.symlink_to(source)


def runtime_distributions(template_subjects: Sequence[Subject]) -> frozenset[str]:
    """What `import boto3` and the functions' clients load: the runtime's own distributions."""
    all_services = sorted({service for subject in template_subjects for service in subject.services})
    # What the interpreter itself loads (site hooks of the dev venv) belongs to neither.
    interpreter = imported_distributions([], [], [])
    return frozenset(imported_distributions([], [], all_services) - interpreter)


def _native(entry: Path) -> bool:
    files = [entry] if entry.is_file() else list(entry.rglob("*.so"))
    return any(file.suffix == ".so" for file in files)


def assemble(
    root: Path, template_subjects: Sequence[Subject], runtime: frozenset[str], *, bytecode: bool
) -> Layout:
    """Lays out the built functions and layer (with their .pyc or without) and the runtime."""
    if not (BUILD / "CommonLayer" / "python").is_dir():
        raise SystemExit(f"{BUILD} has no built layer: run `make template` (sam build) first")
    skip = [] if bytecode else ["__pycache__"]
    functions: dict[str, Path] = {}
    for subject in template_subjects:
        destination = root / "functions" / subject.spec.logical_id
        shutil.copytree(BUILD / subject.spec.logical_id, destination, ignore=shutil.ignore_patterns(*skip))
        functions[subject.spec.logical_id] = destination
    built_layer, layer = BUILD / "CommonLayer" / "python", root / "layer"
    native = {entry.name for entry in built_layer.iterdir() if _native(entry)}
    shutil.copytree(
        built_layer, layer, ignore=lambda _, names: [n for n in names if n in native or n in skip]
    )
    # The arm64 native packages are replaced by this machine's builds (no .pyc; compiled below).
    owners = metadata.packages_distributions()
    replaced = {dist for name in native for dist in owners.get(name.split(".")[0], [])}
    link_distributions(replaced, layer / ".native")
    for entry in (layer / ".native").iterdir():
        if not (layer / entry.name).exists():  # the build's own metadata of them stays
            entry.rename(layer / entry.name)
    shutil.rmtree(layer / ".native")
    link_distributions(runtime, root / "runtime")
    _compile([root / "runtime"])  # the runtime's boto3 comes compiled in both layouts
    if bytecode:
        _compile([layer / name for name in sorted(native) if (layer / name).is_dir()])
    return Layout(root, functions, layer, root / "runtime")


def _compile(folders: Sequence[Path]) -> None:
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *(str(folder) for folder in folders)],
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
    )


def _aws_environment(function_environment: dict[str, str]) -> dict[str, str]:
    """What Lambda sets, with fake credentials and no config files: creating clients stays offline."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        **function_environment,
    }


def run_sample(
    layout: Layout,
    subject: Subject | None,
    services: Sequence[str],
    *,
    bytecode: bool,
    initialization: str = "on-demand",
) -> Sample:
    """One fresh process: a function's handler import and clients, or (subject None) the floor."""
    environment = _aws_environment(subject.spec.environment if subject else {})
    environment["AWS_LAMBDA_INITIALIZATION_TYPE"] = initialization
    environment["PYTHONPATH"] = os.pathsep.join(
        str(path) for path in layout.path_for(subject.spec.logical_id if subject else None)
    )
    if not bytecode:
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
    argv: list[str] = [sys.executable, "-S", "-c"]
    if subject:
        argv += [_SAMPLE_CODE, subject.spec.module, subject.spec.attribute, *services]
    else:
        argv += [_FLOOR_CODE, *services]
    result = subprocess.run(argv, env=environment, cwd=layout.root, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"sample failed ({' '.join(argv[3:])}):\n{result.stderr}")
    imported, ready, rss = result.stdout.split()
    return Sample(float(imported), float(ready), int(rss))


@dataclass(frozen=True)
class Row:
    function: str
    services: tuple[str, ...]
    built: Sample  # medians, as built with .pyc
    without_bytecode: Sample  # medians, sam build alone
    snapshot: Sample  # medians, as built, its INIT a SnapStart one
    floor: Sample  # medians

    def cells(self) -> list[str]:
        built, bare, floor = (
            self.built.ready_seconds,
            self.without_bytecode.ready_seconds,
            self.floor.ready_seconds,
        )
        restored = self.snapshot.ready_seconds - self.snapshot.import_seconds
        floor_restored = self.floor.ready_seconds - self.floor.import_seconds
        return [
            self.function,
            ",".join(self.services),
            f"{built * 1000:.0f}",
            f"{built / floor:.2f}x",
            f"{bare * 1000:.0f}",
            f"{bare / floor:.2f}x",
            f"{floor * 1000:.0f}",
            f"{restored * 1000:.0f}",
            f"{restored / floor_restored:.2f}x",
            f"{floor_restored * 1000:.0f}",
            f"{self.built.peak_rss_kib / 1024:.0f}",
        ]


HEADERS = [
    "function",
    "clients",
    "init ms",
    "ratio",
    "init, no .pyc",
    "ratio no .pyc",
    "floor ms",
    "after restore ms",
    "ratio",
    "floor after restore",
    "peak RSS MiB",
]


def _median(samples: Sequence[Sample]) -> Sample:
    return Sample(
        statistics.median(sample.import_seconds for sample in samples),
        statistics.median(sample.ready_seconds for sample in samples),
        int(statistics.median(sample.peak_rss_kib for sample in samples)),
    )


def measure(runs: int, *, workdir: Path) -> list[Row]:
    template = Template.load(TEMPLATE)
    create_resources_elsewhere(template)  # the functions' environment names them
    measured = subjects(template)
    runtime = runtime_distributions(measured)
    built = assemble(workdir / "pyc", measured, runtime, bytecode=True)
    bare = assemble(workdir / "source", measured, runtime, bytecode=False)
    floors = sorted({subject.services for subject in measured})
    with_pyc: dict[str, list[Sample]] = {subject.spec.logical_id: [] for subject in measured}
    without_pyc: dict[str, list[Sample]] = {subject.spec.logical_id: [] for subject in measured}
    snapshot: dict[str, list[Sample]] = {subject.spec.logical_id: [] for subject in measured}
    floor_samples: dict[tuple[str, ...], list[Sample]] = {services: [] for services in floors}
    # One throw-away sample of each layout fills the page cache; then rounds interleave
    # everything, so that a slow moment of the (shared) machine spreads over all columns.
    run_sample(built, None, floors[0], bytecode=True)
    run_sample(built, measured[0], measured[0].services, bytecode=True)
    run_sample(bare, measured[0], measured[0].services, bytecode=False)
    for _ in range(runs):
        for services in floors:
            floor_samples[services].append(run_sample(built, None, services, bytecode=True))
        for subject in measured:
            logical_id = subject.spec.logical_id
            with_pyc[logical_id].append(run_sample(built, subject, subject.services, bytecode=True))
            without_pyc[logical_id].append(run_sample(bare, subject, subject.services, bytecode=False))
            snapshot[logical_id].append(
                run_sample(built, subject, subject.services, bytecode=True, initialization="snap-start")
            )
    return [
        Row(
            subject.spec.logical_id,
            subject.services,
            _median(with_pyc[subject.spec.logical_id]),
            _median(without_pyc[subject.spec.logical_id]),
            _median(snapshot[subject.spec.logical_id]),
            _median(floor_samples[subject.services]),
        )
        for subject in measured
    ]


def render(rows: Sequence[Row]) -> str:
    table = [HEADERS, *(row.cells() for row in rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(HEADERS))]
    lines = [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) + " |"
        for line in table
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="samples per cell; the median is shown")
    arguments: Any = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cold-init-") as workdir:
        rows = measure(max(1, arguments.runs), workdir=Path(workdir))
    print(f"Cold init, median of {arguments.runs} fresh processes (Python {sys.version.split()[0]})")
    print(render(rows))
    print(
        "init = importing the handler (Lambda's INIT) + the first use of the AWS clients its policies "
        "grant, from .aws-sam/build;\nfloor = `import boto3` + the same clients; after restore = "
        "what is left with SnapStart (the import is in the snapshot), against the floor's clients."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
