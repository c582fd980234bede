"""Execution environments in worker processes, bounded by the function's MemorySize as Lambda is.

In Lambda each execution environment is its own micro-VM: one process of the runtime (and the
processes it starts), kept warm between invocations, killed when its memory goes over the
function's MemorySize ("Runtime exited with error: signal: killed") or its time over the Timeout,
and made again on the next invocation. Here each environment is a `python -m local.execution`
process of its own session (its children, the mail parser among them, are in that session):

- memory: one watcher thread of the stack sums the resident memory (RSS) of each busy worker's
  whole session every 50 ms and kills the session when the sum is over MemorySize. cgroups would
  count exactly, but these machines have cgroup v1 with the memory controller owned by their
  own supervisor (cgroup v2 is mounted without controllers), so the limit is watched, not set.
  Between two looks a process can grow by what it allocates in 50 ms: RLIMIT_AS on the worker
  (ADDRESS_SPACE_FACTOR times MemorySize: address space is far more than RSS in a Python process
  with threads) stops a runaway that would take the machine before the watcher sees it.
- time: the invocation's Timeout kills the worker (its next invocation starts a new one); the
  runtime (local/gateway.py FunctionRuntime) owns the Timeout for both isolations and calls stop().
- death while idle: a thread per worker waits for its process, and a worker that died between
  invocations is reaped and leaves its function's pool at once (`on_exit`).
- environment: the process gets the function's own variables (not the other functions'), the
  Lambda runtime's variables, and checks its AWS calls against the function's role (local/iam.py),
  reporting the calls it was allowed back to the stack (iam.usage() stays complete).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from local import iam
from local.gateway import (
    HandlerError,
    InvocationError,
    LambdaContext,
    ResponseError,
    _json_default,
    load_handler,
)
from local.template import FunctionSpec

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20
WATCH_SECONDS = 0.05
# RLIMIT_AS of a worker, in multiples of MemorySize (at least ADDRESS_SPACE_MIN): a warm PullFunction
# worker maps ~320 MiB of address space for ~92 MiB resident, and each thread of a pull may add a
# malloc arena of 64 MiB and a stack of 8 MiB: far more address space than memory.
ADDRESS_SPACE_FACTOR = 8
ADDRESS_SPACE_MIN = 2048 * MIB
_PAGE = os.sysconf("SC_PAGE_SIZE")
# How Lambda's runtime interface (Go) names the signal that ended a runtime process.
_SIGNAL_WORDS: dict[int, str] = {
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
}


class EnvironmentExited(InvocationError):
    """The execution environment's process died during the invocation (Lambda's Runtime.ExitError)."""

    error_type = "Runtime.ExitError"


class RemoteError(Exception):
    """A handler's exception that could not be sent over from its worker as it was."""


def lambda_variables(spec: FunctionSpec, region: str) -> dict[str, str]:
    """The variables Lambda's runtime sets in every execution environment."""
    name = spec.function_name or spec.logical_id
    return {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime or 'python3.13'}",
        # The template's functions are invoked through their alias (published versions): with
        # SnapStart every environment starts from a snap-start INIT, as here.
        "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start" if spec.snap_start else "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


def worker_environment(
    spec: FunctionSpec, region: str, foreign: frozenset[str] = frozenset()
) -> dict[str, str]:
    """This process's environment without the variables only other functions set (`foreign`),
    with the function's own and Lambda's."""
    base = {key: value for key, value in os.environ.items() if key not in foreign}
    return {**base, **spec.environment, **lambda_variables(spec, region)}


def session_memory() -> dict[int, int]:
    """Resident bytes per session id, summed over the session's processes (one pass over /proc)."""
    sessions: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            session, resident = int(fields[3]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        sessions[session] = sessions.get(session, 0) + resident * _PAGE
    return sessions


class _Watcher:
    """One thread for every worker of this process: looks at busy workers' memory only."""

    def __init__(self) -> None:
        self._busy: set[WorkerProcess] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def busy(self, worker: WorkerProcess, busy: bool) -> None:
        with self._lock:
            (self._busy.add if busy else self._busy.discard)(worker)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lambda-memory", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                workers = list(self._busy)
            if not workers:
                self._wake.wait()
                self._wake.clear()
                continue
            used = session_memory()
            for worker in workers:
                worker.measured(used.get(worker.pid, 0))
            time.sleep(WATCH_SECONDS)


_WATCHER = _Watcher()
_LIVE: set[WorkerProcess] = set()


@atexit.register
def _stop_all() -> None:
    for worker in list(_LIVE):
        worker.stop()


class WorkerProcess:
    """One execution environment of `spec`: `run(event, context)` as a handler call."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        role: iam.Principal | None,
        region: str,
        account_id: str,
        environment: Mapping[str, str],
        on_exit: Callable[[WorkerProcess], None] = lambda worker: None,
    ) -> None:
        self.spec = spec
        self.limit = spec.memory * MIB
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "local.execution", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=dict(environment),
                cwd=ROOT,
                start_new_session=True,
            )
        self.pid = self.process.pid
        self._connection = Connection(ours.detach())
        space = max(ADDRESS_SPACE_MIN, ADDRESS_SPACE_FACTOR * self.limit)
        self._connection.send((spec, role, region, account_id, space))
        self._ready = self._running = self._stopped = False
        self._stopping = threading.Lock()
        _LIVE.add(self)
        self._on_exit = on_exit
        threading.Thread(target=self._reap, name=f"reap-{self.pid}", daemon=True).start()

    def _reap(self) -> None:
        """Waits for the process to end (killed, or died on its own, even while idle): its session
        is stopped and its pool forgets it."""
        self.process.wait()
        self.stop()
        self._on_exit(self)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def measured(self, resident: int) -> None:
        if resident > self.limit and self.alive:
            print(
                f"local stack: {self.spec.logical_id} killed: {resident // MIB} MB resident of its "
                f"{self.spec.memory} MB (MemorySize)",
                file=sys.stderr,
            )
            self.stop()

    def stop(self) -> None:
        """Kills the environment's whole session (any thread may; the connection is closed by
        whoever is last to use it)."""
        with self._stopping:
            if self._stopped:
                return
            self._stopped = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait()
            _LIVE.discard(self)
            if not self._running:
                self._connection.close()

    def run(self, event: Any, context: LambdaContext) -> Any:
        """The handler's JSON result; raises HandlerError, ResponseError or EnvironmentExited
        (killed for memory or past its Timeout by the runtime, or died). Waits as long as it takes:
        the Timeout is the runtime's (FunctionRuntime.invoke stops the worker)."""
        with self._stopping:
            if self._stopped:
                raise EnvironmentExited("the execution environment was stopped")
            self._running = True
        _WATCHER.busy(self, True)
        try:
            if not self._ready:
                self._reply(context)  # the init phase counts against the invocation
                self._ready = True
            left = context.get_remaining_time_in_millis() / 1000
            self._connection.send((json.dumps(event), context.aws_request_id, left))
            return self._reply(context)
        finally:
            _WATCHER.busy(self, False)
            with self._stopping:
                self._running = False
                if self._stopped:
                    self._connection.close()

    def _reply(self, context: LambdaContext) -> Any:
        try:
            kind, *rest, usage = self._connection.recv()
        except (EOFError, OSError):
            self.stop()
            code = int(self.process.returncode or 0)
            how = f"signal: {_SIGNAL_WORDS.get(-code, str(-code))}" if code < 0 else f"exit status {code}"
            raise EnvironmentExited(
                f"RequestId: {context.aws_request_id} Error: Runtime exited with error: {how}"
            ) from None
        if usage:
            iam.add_usage(self.spec.logical_id, usage)
        if kind == "ready":
            return None
        if kind == "ok":
            return json.loads(rest[0]) if rest[0] is not None else None
        if kind == "marshal":
            raise ResponseError(f"Unable to marshal response: {rest[0]}")
        pickled, type_name, message, formatted = rest
        try:
            error = pickle.loads(pickled) if pickled else RemoteError(f"{type_name}: {message}")
        except Exception:
            error = RemoteError(f"{type_name}: {message}")
        failure = HandlerError(error, formatted)
        failure.error_type = type_name
        raise failure


# ---------------------------------------------------------------------------- the worker's side


def _error_reply(error: BaseException) -> tuple[Any, ...]:
    try:
        pickled: bytes | None = pickle.dumps(error)
        pickle.loads(pickled)  # type: ignore[arg-type]
    except Exception:
        pickled = None
    return ("error", pickled, type(error).__name__, str(error), traceback.format_exc())


class _UsageReport:
    """The (action, resource) pairs allowed since the last report."""

    def __init__(self, function_id: str) -> None:
        self.function_id = function_id
        self.sent: set[tuple[str, str]] = set()

    def new(self) -> list[tuple[str, str]]:
        pairs = iam.usage().get(self.function_id, set()) - self.sent
        self.sent |= pairs
        return sorted(pairs)


def serve(descriptor: int) -> None:
    connection = Connection(descriptor)
    spec, role, region, account_id, address_space = connection.recv()
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    usage = _UsageReport(spec.logical_id)
    if role is not None:
        iam.install()
    try:
        with iam.acting_as(role):
            handler = load_handler(spec)
    except BaseException as error:
        connection.send((*_error_reply(error), usage.new()))
        return
    connection.send(("ready", usage.new()))
    while True:
        try:
            payload, request_id, seconds = connection.recv()
        except EOFError:
            return
        context = LambdaContext(spec, region=region, account_id=account_id, request_id=request_id)
        context._deadline = time.monotonic() + seconds
        try:
            with iam.acting_as(role):
                result = handler(json.loads(payload), context)
        except BaseException as error:  # everything a handler raises is the invocation's error
            connection.send((*_error_reply(error), usage.new()))
            continue
        try:
            reply: tuple[Any, ...] = ("ok", json.dumps(result, default=_json_default))
        except (TypeError, ValueError) as error:
            reply = ("marshal", str(error))
        connection.send((*reply, usage.new()))


if __name__ == "__main__":
    serve(int(sys.argv[1]))
