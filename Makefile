# The two commands a newcomer needs: `make run` (the whole service on 127.0.0.1) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export SAM_CLI_TELEMETRY := 0
export PYTHONDONTWRITEBYTECODE :=

.PHONY: run stop test lint typecheck template unit integration openapi invoke check bench bench-cold bench-oauth2 bench-send bench-hostile bench-execution bench-pull fuzz fuzz-mail fuzz-api install clean screenshots deploy smoke

install:
	@bash scripts/bootstrap.sh

run: install
	@$(PY) -m local.stack

stop:
	@$(PY) -m local.stack --stop

test: install lint typecheck template
	@$(PY) -m pytest -q -p no:cacheprovider

lint:
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check . >/dev/null || { $(VENV)/bin/ruff format --diff . | head -40; exit 1; }

typecheck:
	@$(VENV)/bin/mypy layers/common/mailcore functions local

template:
	@bash scripts/validate-template

unit: install
	@$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: install
	@$(PY) -m pytest -q -p no:cacheprovider tests/integration

# schemathesis against the local stack, longer than in `make test` and with a random seed (its
# seed is printed: FUZZ_API_SEED=<seed> repeats a run). FUZZ_API_EXAMPLES / FUZZ_API_SECONDS bound it.
fuzz-api: install
	@FUZZ_API_SEED=$${FUZZ_API_SEED:-random} FUZZ_API_EXAMPLES=$${FUZZ_API_EXAMPLES:-100} \
	  FUZZ_API_SECONDS=$${FUZZ_API_SECONDS:-600} \
	  $(PY) -m pytest -q -p no:cacheprovider -s tests/integration/test_api_fuzz.py

openapi: install
	@$(PY) -m local.openapi --write docs/openapi.json

# The console's screenshots in docs/console/, taken by its browser test (docs/console.md).
screenshots: install
	@UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q -p no:cacheprovider tests/integration/test_console_browser.py

invoke:
	@test -n "$(FUNCTION)" -a -n "$(EVENT)" || { echo "usage: make invoke FUNCTION=SendFunction EVENT=event.json"; exit 2; }
	@$(PY) -m local.invoke "$(FUNCTION)" "$(EVENT)"

# Tests an account of the running local stack: make check PROTOCOL=pop3 TEAM=demo ACCOUNT=demo
# (or SYSTEM=1 for the system mail configuration; SEND_TO=address sends an SMTP test mail).
check:
	@test -n "$(PROTOCOL)" || { echo "usage: make check PROTOCOL=pop3|smtp TEAM=<team> ACCOUNT=<account> (or SYSTEM=1) [SEND_TO=<address>]"; exit 2; }
	@$(PY) -m local.check "$(PROTOCOL)" $(if $(TEAM),--team "$(TEAM)") $(if $(ACCOUNT),--account "$(ACCOUNT)") $(if $(SYSTEM),--system) $(if $(SEND_TO),--send-to "$(SEND_TO)")

# Deploys to your AWS account with the SAM CLI: guided the first time (it writes your answers
# to samconfig.toml), from samconfig.toml after that.
deploy: template
	@if grep -q '^parameter_overrides' samconfig.toml; then .venv-sam/bin/sam deploy; \
	 else .venv-sam/bin/sam deploy --guided; fi

# Smoke test of a deployment through its public API: make smoke API=<url> TOKEN=<id token> ACCOUNT=<account> [TO=<its address>]
smoke:
	@test -n "$(API)" -a -n "$(TOKEN)" -a -n "$(ACCOUNT)" || { echo "usage: make smoke API=<url> TOKEN=<id token> ACCOUNT=<account> [TO=<address>]"; exit 2; }
	@SMOKE_TOKEN='$(TOKEN)' $(PY) scripts/smoke.py --api "$(API)" --account "$(ACCOUNT)" $(if $(TO),--to "$(TO)")

bench: bench-cold bench-oauth2

# Cold init of every function as built (.aws-sam/build), with and without SnapStart, against `import boto3` + its clients (bench/cold_init.py).
bench-cold: install template
	@$(PY) -m bench.cold_init

# XOAUTH2 logins (both POP3 forms, SMTP through Postfix) against password logins (bench/oauth2_login.py).
bench-oauth2: install
	@$(PY) -m bench.oauth2_login
bench-send: install
	@$(PY) -m bench.send

# Preparing each hostile received-mail shape of issue 9 next to an ordinary mail of its size.
bench-hostile: install
	@$(PY) -m bench.hostile_mail

# A function in a worker process (make run) against in-process (the suite): cold start, warm invocation.
bench-execution: install
	@$(PY) -m bench.execution

# Both fuzz targets for longer than make test runs them, with random seeds.
fuzz: fuzz-mail fuzz-api

# The received-mail fuzz target for longer than make test runs it: FUZZ_EXAMPLES=2000 FUZZ_SEED=1.
fuzz-mail: install
	@FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} FUZZ_SEED=$${FUZZ_SEED:-$$RANDOM} $(PY) -m pytest -q -p no:cacheprovider tests/unit/test_fuzz_received_mail.py

clean:
	rm -rf .aws-sam .local .pytest_cache .mypy_cache .ruff_cache

# 1,000 messages from the real Dovecot, pulled three ways next to a raw poplib loop (~4 min).
bench-pull: install
	@$(PY) -m bench.pull
