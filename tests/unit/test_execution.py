"""local.execution: each function's execution environments are worker processes, kept warm,
bounded by the function's MemorySize (the whole process tree counts) and its Timeout, as Lambda
bounds them, and made again after they die."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from pathlib import Path

import pytest

from local.execution import EnvironmentExited
from local.gateway import FunctionRuntime, FunctionTimeout, IntegrationTimeout
from tests.support import wait_until
from tests.unit.test_gateway import call, stack  # noqa: F401 (the module's moto, template, gateway)


@pytest.fixture
def hoard(stack):  # noqa: F811
    """A function of 128 MB whose handler holds as many megabytes as its event asks for."""
    spec = dataclasses.replace(stack.template.function("EchoFunction"), attribute="hoard", memory=128)
    runtime = FunctionRuntime(spec, isolation="process")
    yield runtime
    runtime.close()


def test_an_environment_is_a_process_kept_warm_between_invocations(hoard):
    first, second = hoard.invoke({"megabytes": 1}), hoard.invoke({"megabytes": 1})

    assert first["pid"] == second["pid"] and hoard.environments == 1
    assert first["memory_limit_in_mb"] == 128


def test_an_environment_over_its_memory_size_is_killed_and_the_next_invocation_gets_a_new_one(hoard):
    before = hoard.invoke({"megabytes": 1})["pid"]

    with pytest.raises(EnvironmentExited, match="Runtime exited with error: signal: killed"):
        hoard.invoke({"megabytes": 300})

    assert hoard.invoke({"megabytes": 1})["pid"] != before
    assert hoard.environments == 2


def test_the_memory_of_the_processes_an_environment_starts_counts_too(hoard):
    with pytest.raises(EnvironmentExited, match="signal: killed"):
        hoard.invoke({"megabytes": 200, "child": True})


def test_an_invocation_over_its_timeout_stops_its_environment(stack):  # noqa: F811
    runtime = FunctionRuntime(stack.template.function("SlowFunction"), isolation="process")
    try:
        with pytest.raises(FunctionTimeout):
            runtime.invoke({})
        (environment,) = runtime._made
        assert not environment.alive
    finally:
        runtime.close()


def test_an_environment_that_dies_while_idle_is_reaped_and_leaves_the_pool(hoard):
    pid = hoard.invoke({"megabytes": 1})["pid"]
    assert hoard.warm == 1

    os.kill(pid, signal.SIGKILL)

    wait_until(lambda: hoard.warm == 0, timeout=5, failure="the dead environment stayed in the pool")
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=5, failure=f"{pid} was not reaped")


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_an_invocation_the_caller_stopped_waiting_for_still_ends_at_its_timeout(stack, isolation):  # noqa: F811
    runtime = FunctionRuntime(stack.template.function("SlowFunction"), isolation=isolation)  # Timeout 1 s
    try:
        with pytest.raises(IntegrationTimeout):
            runtime.invoke({}, wait=0.2)  # API Gateway stops waiting; the function runs on
        (environment,) = runtime._made

        wait_until(
            lambda: (
                not any(thread.name.startswith("lambda-SlowFunction") for thread in threading.enumerate())
            ),
            timeout=5,
        )
        assert runtime.warm == 0  # Lambda stopped it at its Timeout: never used again
        assert isolation == "thread" or not environment.alive
    finally:
        runtime.close()


def test_the_gateway_answers_502_when_the_environment_is_killed_for_memory_and_recovers(stack):  # noqa: F811
    with stack.gateway.isolated(memory={"EchoFunction": 128}):
        status, _, data = call(stack, "POST", "/api/echo/x?hold=300", token=stack.token)
        assert status == 502 and json.loads(data) == {"message": "Internal server error"}

        status, _, data = call(stack, "POST", "/api/echo/x", token=stack.token)
        assert status == 200
        body = json.loads(data)
        assert body["context"]["memory_limit_in_mb"] == 128
        assert body["env"]["AWS_LAMBDA_FUNCTION_NAME"] == stack.template.physical_name("EchoFunction")


def test_what_a_handler_raises_in_its_worker_reaches_the_caller(stack):  # noqa: F811
    with stack.gateway.isolated(), pytest.raises(RuntimeError, match="boom"):
        stack.gateway.invoke("BoomFunction", {})


def test_an_environment_of_the_template_starts_from_a_snap_start_init_as_deployed():
    from local.execution import lambda_variables
    from tests.stack import resolved_function

    spec = resolved_function("SendFunction")
    on_demand = dataclasses.replace(spec, snap_start=False)

    assert lambda_variables(spec, "us-east-1")["AWS_LAMBDA_INITIALIZATION_TYPE"] == "snap-start"
    assert lambda_variables(on_demand, "us-east-1")["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
