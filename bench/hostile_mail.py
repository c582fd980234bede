"""Preparing one received message of each hostile shape of issue 9 (bench/hostile_shapes.py): time
and peak memory, next to an ordinary mail of the same size measured in the same run; and what the
isolation of parsing in a child process costs per message.

    .venv/bin/python -m bench.hostile_mail [--layer DIR] [--scale 1.0] [--timeout 120]

Each measurement runs in a fresh process (peak memory is that process's peak RSS above its RSS
after the imports), killed after --timeout seconds. --layer points at another copy of
layers/common (e.g. main's, from `git archive main layers/common`) to measure it the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure_one(shape: str, size: int) -> dict[str, float]:
    """In the measuring process: prepare one message as the pull does (parse, files, item)."""
    from mailcore.adapters.dynamodb import DynamoMail
    from mailcore.models import MailAccount
    from mailcore.services.pull import prepare_incoming
    from mailcore.teams import ResolvedAccount

    from bench import hostile_shapes
    from bench.item_size import item_size
    from tests.fakes import MemoryBlobs

    account = MailAccount.model_validate(
        {
            "mail_from": "box@example.test",
            "mail_username": "box@example.test",
            "mail_password": "x",
            "smtp": {"host": "mail.example.test", "port": 587, "security": "starttls"},
            "pop3": {"host": "mail.example.test", "port": 995, "security": "ssl"},
        }
    )
    generator = hostile_shapes.SHAPES[shape][0] if shape != "ordinary" else hostile_shapes.ordinary
    raw = generator(size)
    prepare_incoming(ResolvedAccount("t", "a", account), "warm-up", hostile_shapes.ordinary(1000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    incoming = prepare_incoming(ResolvedAccount("t", "a", account), "u1", raw)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    item = DynamoMail("mail", blobs=MemoryBlobs())._item(incoming.mail)  # type: ignore[arg-type]
    return {
        "bytes": len(raw),
        "seconds": seconds,
        "peak_mib": max(peak - before, 0) / 1024,
        "item_kb": item_size(item) / 1024,
        "files": len(incoming.files),
    }


def run(shape: str, size: int, layer: Path, timeout: float) -> dict[str, float] | None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(layer), str(ROOT)])}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.hostile_mail", "--one", shape, str(size)],
            env=env,
            capture_output=True,
            timeout=timeout,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return None
    return json.loads(done.stdout.decode().splitlines()[-1])


def isolation_cost(count: int = 200) -> tuple[float, float]:
    """Seconds per ordinary message parsed in-process and through the child process."""
    from mailcore.mime.isolated import IsolatedParser
    from mailcore.mime.parse import parse_message

    from bench.hostile_shapes import ordinary

    raw = ordinary(30_000)
    with IsolatedParser() as parser:
        parser.parse(raw)
        started = time.perf_counter()
        for _ in range(count):
            parser.parse(raw)
        isolated = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for _ in range(count):
        parse_message(raw)
    return (time.perf_counter() - started) / count, isolated


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layer", type=Path, default=ROOT / "layers" / "common")
    parser.add_argument("--scale", type=float, default=1.0, help="times the size the issue reported")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]))))
        return
    from bench.hostile_shapes import SHAPES

    print(f"layer {args.layer}, scale {args.scale}, timeout {args.timeout:g} s")
    print(
        f"{'shape':22} {'bytes':>9} {'seconds':>9} {'peak MiB':>9} {'item KB':>8} {'files':>6} {'x ordinary time':>16}"
    )
    for shape, (_, reported) in SHAPES.items():
        size = int(reported * args.scale)
        ordinary = run("ordinary", size, args.layer, args.timeout)
        found = run(shape, size, args.layer, args.timeout)
        if found is None or ordinary is None:
            print(f"{shape:22} {size:>9} {'>' + format(args.timeout, 'g'):>9}")
            continue
        ratio = found["seconds"] / max(ordinary["seconds"], 1e-6)
        print(
            f"{shape:22} {found['bytes']:>9.0f} {found['seconds']:>9.3f} {found['peak_mib']:>9.1f}"
            f" {found['item_kb']:>8.1f} {found['files']:>6.0f} {ratio:>16.1f}"
            f"   (ordinary: {ordinary['seconds']:.3f} s, {ordinary['peak_mib']:.1f} MiB)"
        )
    if args.layer == ROOT / "layers" / "common":
        direct, isolated = isolation_cost()
        print(
            f"isolation: {direct * 1000:.2f} ms in-process, {isolated * 1000:.2f} ms through the child "
            f"per 30 KB message ({isolated / direct:.2f}x)"
        )


if __name__ == "__main__":
    main()
