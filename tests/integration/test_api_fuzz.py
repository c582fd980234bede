"""The API as docs/openapi.json describes it, under any input: schemathesis runs every operation
against the local stack with a member's token (the demo account for `{account}`), checks for
server errors, undocumented statuses, content types and answer schemas, and follows the links
(store a file, then read it; queue a mail, then read it).

`make test` runs it with a fixed seed and few examples; `make fuzz-api` runs it longer with a
random seed (FUZZ_API_EXAMPLES, FUZZ_API_SEED, FUZZ_API_SECONDS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def schemathesis_command(stack, config: Path) -> list[str]:
    examples = os.environ.get("FUZZ_API_EXAMPLES", "8")
    seed = os.environ.get("FUZZ_API_SEED", "20261201")
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        str(ROOT / "docs" / "openapi.json"),
        "--url",
        stack.info["api_url"],
        "--header",
        f"Authorization: Bearer {stack.info['tokens']['member']}",
        "--checks",
        CHECKS,
        "--max-examples",
        examples,
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--no-color",
    ]
    if seed != "random":
        command += ["--seed", seed]
    if seconds := os.environ.get("FUZZ_API_SECONDS"):
        command += ["--max-time", seconds]
    return command


def test_every_operation_answers_any_request_as_the_document_says(stack, tmp_path):
    config = tmp_path / "schemathesis.toml"
    # Path and query parameters named `account` get the demo account, so the account routes
    # reach their work instead of answering 404 to every generated name.
    config.write_text(f'[parameters]\naccount = "{stack.info["account"]}"\n')
    result = subprocess.run(
        schemathesis_command(stack, config),
        capture_output=True,
        text=True,
        timeout=int(os.environ.get("FUZZ_API_SECONDS", "240")) + 120,
        cwd=tmp_path,
    )
    report = result.stdout[-12_000:] + result.stderr[-3_000:]
    print(report)
    assert result.returncode == 0, report
