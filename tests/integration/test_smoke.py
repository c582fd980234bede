"""`make smoke` (scripts/smoke.py) against the local stack: the public API only, as against a deployment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "smoke.py"


def smoke(stack, account: str, *, to: str) -> subprocess.CompletedProcess[str]:
    """The smoke test against the stack as `make run` runs it: each function in worker processes."""
    environment = {**os.environ, "SMOKE_TOKEN": stack.info["tokens"]["member"]}
    command = [sys.executable, str(SCRIPT), "--api", stack.info["api_url"], "--account", account, "--to", to]
    with stack.gateway.isolated():
        return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=180)


def test_the_smoke_test_sends_pulls_and_reads_a_mail_and_its_attachment(stack):
    run = smoke(stack, stack.info["account"], to=stack.info["mailbox"])
    assert run.returncode == 0, run.stdout + run.stderr
    steps = [line.split()[1] for line in run.stdout.splitlines()]
    assert steps == ["upload", "send", "pull", "read", "attachment", "all"]
    assert stack.info["tokens"]["member"] not in run.stdout + run.stderr


def test_the_smoke_test_stops_at_the_first_failing_step(stack):
    run = smoke(stack, "no-such-account", to=stack.info["mailbox"])
    assert run.returncode == 1
    assert [line.split()[:2] for line in run.stdout.splitlines()] == [["ok", "upload"], ["FAIL", "send"]]
