"""`make check`: runs mail-check (mailcore.check) against the running local stack.

    python -m local.check pop3 --team demo --account demo [--stack-json .local/stack.json]

The moto endpoint, the region and the functions' environment (secret names, the local CA) come
from .local/stack.json, which `make run` writes; every other argument goes to mail-check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from local.environment import use_local_aws

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    stack_json = ROOT / ".local" / "stack.json"
    if "--stack-json" in args:
        at = args.index("--stack-json")
        stack_json = Path(args[at + 1])
        del args[at : at + 2]
    if not stack_json.exists():
        print(f"{stack_json} not found: start the local stack first (make run)", file=sys.stderr)
        return 2
    stack = json.loads(stack_json.read_text(encoding="utf-8"))
    region = str(stack.get("region") or "us-east-1")
    use_local_aws(region, str(stack["aws_endpoint"]), stack.get("environment"))

    from mailcore.check import main as check

    return check(args)


if __name__ == "__main__":
    sys.exit(main())
