"""Cold init of every function against the floor it cannot beat, measured in the same run.

Run: `make bench-cold` (or `.venv/bin/python -m bench.cold_init --runs 7`).

Each sample is a fresh interpreter started with `-S`, so nothing of the dev install (its
site-packages, the editable mailcore) is on the path; PYTHONPATH is the deployment layout
assembled in a temporary folder, in Lambda's order:

    function/  the function's CodeUri files               (/var/task)
    layer/     mailcore + the layer's runtime dependencies (/opt/python)
    runtime/   boto3 and what it needs                     (the runtime's own boto3)

`sam build` would give the same layout, but for arm64: its pydantic_core and nh3 wheels do not
load on this machine, so the layer is assembled from the dev venv's installed distributions.

A sample times (1) importing the handler module, which is what Lambda's INIT phase does, and
(2) that plus creating the AWS clients the function's policies grant, the way the handler
creates them on first use (`mailcore.storage.aws.aws_client`). The floor is a fresh process
doing only `import boto3` and creating the same clients from one session. Two layouts are
measured: with .pyc compiled by `compileall`, and without any .pyc under a read-only-like
PYTHONDONTWRITEBYTECODE, which is what `sam build` ships (Lambda's /opt and /var/task are
read-only, so nothing is cached between cold starts); the runtime's boto3 keeps its .pyc in both.
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

from local.template import FunctionSpec, Template

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
LAYER_SOURCE = ROOT / "layers" / "common"

# A policy template of SAM grants one service; its name says which.
_POLICY_TEMPLATE_SERVICES = {
    "DynamoDB": "dynamodb",
    "S3": "s3",
    "EventBridge": "events",
    "AWSSecretsManager": "secretsmanager",
    "SQS": "sqs",
    "SNS": "sns",
}

# Run with -S inside the sample process; argv: module attribute service...
_SAMPLE_CODE = """
import sys, time
started = time.perf_counter()
import importlib, resource
module = importlib.import_module(sys.argv[1])
getattr(module, sys.argv[2])
imported = time.perf_counter()
from mailcore.storage.aws import aws_client
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
session = boto3.session.Session()
for service in sys.argv[1:]:
    session.client(service)
ready = time.perf_counter()
print(ready - started, ready - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
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
    """The AWS services a function's Policies allow it to call, by boto3 client name."""
    services: set[str] = set()
    for policy in template.function_properties(logical_id).get("Policies") or []:
        if not isinstance(policy, dict):
            continue
        for name in policy:
            for prefix, service in _POLICY_TEMPLATE_SERVICES.items():
                if name.startswith(prefix):
                    services.add(service)
        for statement in policy.get("Statement") or []:
            actions = statement.get("Action") or []
            for action in [actions] if isinstance(actions, str) else actions:
                services.add(action.partition(":")[0])
    return tuple(sorted(services))


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


@dataclass(frozen=True)
class Dependencies:
    """Installed distributions by where Lambda finds them: the layer or the runtime."""

    layer: frozenset[str]
    runtime: frozenset[str]


def dependencies(template_subjects: Sequence[Subject]) -> Dependencies:
    """What importing the handlers and creating their clients loads, split like Lambda splits it."""
    all_services = sorted({service for subject in template_subjects for service in subject.services})
    # What the interpreter itself loads (site hooks of the dev venv) belongs to neither.
    interpreter = imported_distributions([], [], [])
    runtime = imported_distributions([], [], all_services) - interpreter
    handlers: set[str] = set()
    for subject in template_subjects:
        # mailcore.storage.aws is what the handlers import on first use, to create their clients.
        modules = [subject.spec.module, "mailcore.storage.aws"]
        handlers |= imported_distributions([subject.spec.code_dir, LAYER_SOURCE], modules, [])
    # mailcore itself is the editable dev install; the layer gets its source instead.
    return Dependencies(
        frozenset(handlers - runtime - interpreter - {_own_distribution()}), frozenset(runtime)
    )


def assemble(
    root: Path, template_subjects: Sequence[Subject], needs: Dependencies, *, bytecode: bool
) -> Layout:
    """Lays out every function, the layer and the runtime under root; compiles .pyc if asked."""
    layer = root / "layer"
    runtime = root / "runtime"
    functions: dict[str, Path] = {}
    for subject in template_subjects:
        destination = root / "functions" / subject.spec.logical_id
        shutil.copytree(subject.spec.code_dir, destination, ignore=shutil.ignore_patterns("__pycache__"))
        functions[subject.spec.logical_id] = destination
    shutil.copytree(
        LAYER_SOURCE / "mailcore", layer / "mailcore", ignore=shutil.ignore_patterns("__pycache__")
    )
    link_distributions(needs.layer, layer)
    link_distributions(needs.runtime, runtime)
    # The runtime's boto3 comes compiled in both layouts.
    _compile([runtime])
    if bytecode:
        _compile([layer, *functions.values()])
    return Layout(root, functions, layer, runtime)


def _own_distribution() -> str:
    owners = metadata.packages_distributions().get("mailcore") or ["mail-service"]
    return owners[0]


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


def run_sample(layout: Layout, subject: Subject | None, services: Sequence[str], *, bytecode: bool) -> Sample:
    """One fresh process: a function's handler import and clients, or (subject None) the floor."""
    environment = _aws_environment(subject.spec.environment if subject else {})
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
    imported: Sample  # medians, with .pyc
    imported_without_bytecode: Sample  # medians
    floor: Sample  # medians

    def cells(self) -> list[str]:
        with_pyc = self.imported.ready_seconds
        without_pyc = self.imported_without_bytecode.ready_seconds
        floor = self.floor.ready_seconds
        return [
            self.function,
            ",".join(self.services),
            f"{self.imported.import_seconds * 1000:.0f}",
            f"{with_pyc * 1000:.0f}",
            f"{without_pyc * 1000:.0f}",
            f"{floor * 1000:.0f}",
            f"{with_pyc / floor:.2f}x",
            f"{without_pyc / floor:.2f}x",
            f"{self.imported.peak_rss_kib / 1024:.0f}",
        ]


HEADERS = [
    "function",
    "clients",
    "import ms",
    "import+clients ms",
    "same, no .pyc",
    "floor ms",
    "ratio",
    "ratio no .pyc",
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
    measured = subjects(template)
    needs = dependencies(measured)
    compiled = assemble(workdir / "pyc", measured, needs, bytecode=True)
    source_only = assemble(workdir / "source", measured, needs, bytecode=False)
    floors = sorted({subject.services for subject in measured})
    with_pyc: dict[str, list[Sample]] = {subject.spec.logical_id: [] for subject in measured}
    without_pyc: dict[str, list[Sample]] = {subject.spec.logical_id: [] for subject in measured}
    floor_samples: dict[tuple[str, ...], list[Sample]] = {services: [] for services in floors}
    # One throw-away sample of each layout fills the page cache; then rounds interleave
    # everything, so that a slow moment of the (shared) machine spreads over all columns.
    run_sample(compiled, None, floors[0], bytecode=True)
    run_sample(compiled, measured[0], measured[0].services, bytecode=True)
    run_sample(source_only, measured[0], measured[0].services, bytecode=False)
    for _ in range(runs):
        for services in floors:
            floor_samples[services].append(run_sample(compiled, None, services, bytecode=True))
        for subject in measured:
            logical_id = subject.spec.logical_id
            with_pyc[logical_id].append(run_sample(compiled, subject, subject.services, bytecode=True))
            without_pyc[logical_id].append(run_sample(source_only, subject, subject.services, bytecode=False))
    return [
        Row(
            subject.spec.logical_id,
            subject.services,
            _median(with_pyc[subject.spec.logical_id]),
            _median(without_pyc[subject.spec.logical_id]),
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
        "import = Lambda's INIT (handler module); import+clients adds the first use of the AWS "
        "clients the policies grant;\nfloor = `import boto3` + the same clients from one session; "
        "ratio = import+clients / floor."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
