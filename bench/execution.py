"""What running a function in a worker process (local/execution.py, `make run`) costs next to
running it in-process (the integration suite): a cold start, a warm invocation, and the memory
watcher's pass over /proc (next to a warm in-process invocation); all measured in the same run,
ratios printed.

    .venv/bin/python -m bench.execution [--invocations 200]

The function is the unit tests' echo handler (tests/unit/data/fn_echo), so the numbers are the
execution environment's own cost, not a handler's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from local.aws import create_resources_elsewhere
from local.execution import WATCH_SECONDS, session_memory
from local.gateway import FunctionRuntime
from local.template import Template

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "unit" / "data" / "template-sample.yaml"
EVENT = {"path": "/api/echo/x", "queryStringParameters": None}


def per_invocation(runtime: FunctionRuntime, count: int) -> tuple[float, float]:
    """(first invocation, median warm invocation) in milliseconds."""
    started = time.perf_counter()
    runtime.invoke(EVENT)
    first = (time.perf_counter() - started) * 1000
    warm = []
    for _ in range(count):
        started = time.perf_counter()
        runtime.invoke(EVENT)
        warm.append((time.perf_counter() - started) * 1000)
    return first, statistics.median(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invocations", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the SAM translator wants one
    template = Template.load(SAMPLE, stack_name="bench")
    create_resources_elsewhere(template)  # the function's values are worked out by moto
    spec = template.function("EchoFunction")
    results = {}
    for isolation in ("thread", "process"):
        runtime = FunctionRuntime(spec, isolation=isolation)  # type: ignore[arg-type]
        try:
            results[isolation] = per_invocation(runtime, args.invocations)
        finally:
            runtime.close()
    scans = []
    for _ in range(50):
        started = time.perf_counter()
        session_memory()
        scans.append((time.perf_counter() - started) * 1000)
    (thread_first, thread_warm), (process_first, process_warm) = results["thread"], results["process"]
    print(
        f"cold start: in-process {thread_first:.1f} ms, worker process {process_first:.1f} ms "
        f"({process_first / thread_first:.1f}x)"
    )
    print(
        f"warm invocation (median of {args.invocations}): in-process {thread_warm:.2f} ms, worker process "
        f"{process_warm:.2f} ms ({process_warm / thread_warm:.1f}x, +{process_warm - thread_warm:.2f} ms)"
    )
    scan = statistics.median(scans)
    # Its baseline is the warm in-process invocation measured above; its share of a core follows
    # from the interval it runs at while a worker is busy.
    print(
        f"memory watcher: one pass over /proc {scan:.2f} ms ({scan / thread_warm:.1f}x a warm in-process "
        f"invocation; {100 * scan / (WATCH_SECONDS * 1000):.1f}% of a core while a worker is busy, "
        f"one pass every {WATCH_SECONDS * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
