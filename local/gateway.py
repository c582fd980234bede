"""An HTTP server on 127.0.0.1 that behaves like the template's API Gateway REST API.

Routes come from the API's OpenAPI body as the SAM translator writes it for API Gateway (the
function behind each Lambda proxy integration, its Cognito security scheme); a request reaches a
handler as a REST proxy (payload 1.0) event, after the Cognito authorizer checked the ID token where
the body asks for it, under the function's own role (local/iam.py), and the handler's answer goes back as API Gateway would send it. What API Gateway does on its
own is emulated too: 403 "Missing Authentication Token" for unknown routes, 401 for a missing or bad
token, 502 when the function fails or answers a malformed proxy response, 504 after the 29 s
integration timeout, 413 beyond the payload limits, the API's GatewayResponses templates.

Each function gets a pool of "execution environments", used by one invocation at a time (as in
Lambda, where module state such as a Powertools resolver is never shared by concurrent requests);
a concurrent request gets a fresh one (a cold start). With isolation "process" (`make run`) an
environment is a worker process bounded by the function's MemorySize (local/execution.py); with
"thread" (the integration suite, whose tests patch the service) a handler module imported in this
process by file path under a unique module name, and the environment variables of all functions
share os.environ, so functions must agree on every variable they both set (merged_environment).
So that a function cannot pass here on another's variable, a thread-mode start runs every
function's init first with only its own variables (start_every_function); each thread answers its
own request in Powertools' resolvers (powertools_events_per_thread).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import decimal
import fnmatch
import hashlib
import importlib.util
import json
import os
import re
import sys
import threading
import time
import traceback
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from local import iam
from local.template import ApiRoute, FunctionSpec, Template

__all__ = [
    "CognitoVerifier",
    "FunctionRuntime",
    "FunctionTimeout",
    "HandlerError",
    "InitError",
    "IntegrationTimeout",
    "InvocationError",
    "LambdaContext",
    "LocalGateway",
    "flatten_claims",
    "load_handler",
    "merged_environment",
    "powertools_events_per_thread",
]

LAMBDA_PAYLOAD_LIMIT = 6_291_556  # bytes of a synchronous invocation's event or result (6 MB)
ASYNC_EVENT_LIMIT = 262_144  # bytes of an asynchronous invocation's event (EventBridge targets)
API_PAYLOAD_LIMIT = 10_485_760  # bytes of a request body API Gateway accepts (10 MB)
INTEGRATION_TIMEOUT = 29.0  # seconds API Gateway REST waits for the function by default
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


# ---------------------------------------------------------------------------- running handlers


class InvocationError(Exception):
    """The invocation failed; `error_type` is what Lambda would report as errorType."""

    error_type = "Runtime.Unknown"


class HandlerError(InvocationError):
    """The handler raised; the exception is the `__cause__`."""

    def __init__(self, error: BaseException, formatted: str) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error
        self.formatted = formatted
        self.error_type = type(error).__name__


class FunctionTimeout(InvocationError):
    error_type = "Sandbox.Timedout"


class ResponseError(InvocationError):
    """The handler's result is not JSON (Runtime.MarshalError) or over 6 MB."""

    error_type = "Runtime.MarshalError"


class RequestTooLarge(InvocationError):
    error_type = "RequestEntityTooLargeException"


class InitError(Exception):
    """A function's init failed in the environment Lambda would give it (a thread-mode start)."""


class IntegrationTimeout(Exception):
    """API Gateway stopped waiting (the function may still be running)."""


class LambdaContext:
    """The context object a Python Lambda handler receives."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        request_id: str | None = None,
    ) -> None:
        name = spec.function_name or spec.logical_id
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{name}"
        self.memory_limit_in_mb = spec.memory
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = time.monotonic() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


_IMPORT_LOCK = threading.RLock()


def _module_dir(module: ModuleType) -> list[Path]:
    places = [getattr(module, "__file__", None), *list(getattr(module, "__path__", []) or [])]
    return [Path(place).resolve() for place in places if isinstance(place, str)]


def _provided_names(code_dir: Path) -> set[str]:
    """Top-level module names a code folder provides (its .py files and packages)."""
    names = set()
    for entry in code_dir.iterdir():
        if entry.suffix == ".py":
            names.add(entry.stem)
        elif entry.is_dir() and not entry.name.startswith((".", "__")):
            names.add(entry.name)
    return names


def load_handler(spec: FunctionSpec, instance: int = 0) -> Callable[[Any, Any], Any]:
    """Imports the handler module of `spec` by file path, under the unique module name
    `_local_lambda_<LogicalId>_<instance>`, and returns its handler function.

    The code folder is on sys.path only while the module is imported, so it can import its
    siblings; those sibling modules are then taken out of sys.modules again (the handler module
    keeps them), so that another function's `app`, `models`, ... load their own files. A sibling
    imported lazily inside a handler at call time is therefore not found. Local layer folders
    (`spec.layer_dirs`) are appended to sys.path for good, as Lambda mounts layers for the process.
    """
    relative = Path(*spec.module.split("."))
    file = spec.code_dir / relative.with_suffix(".py")
    if not file.is_file():
        file = spec.code_dir / relative / "__init__.py"
    if not file.is_file():
        raise InvocationError(f"{spec.logical_id}: no module {spec.module!r} in {spec.code_dir}")
    module_name = f"_local_lambda_{spec.logical_id}_{instance}"
    code_dir = spec.code_dir.resolve()
    with _IMPORT_LOCK:
        for layer_dir in spec.layer_dirs:
            if str(layer_dir) not in sys.path:
                sys.path.append(str(layer_dir))
        provided = _provided_names(code_dir)
        stashed = {
            name: sys.modules.pop(name)
            for name in list(sys.modules)
            if name.split(".")[0] in provided and name != module_name
        }
        before = set(sys.modules)
        sys.path.insert(0, str(code_dir))
        importlib.invalidate_caches()
        try:
            module_spec = importlib.util.spec_from_file_location(module_name, file)
            if module_spec is None or module_spec.loader is None:
                raise InvocationError(f"{spec.logical_id}: cannot import {file}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(code_dir))
            for name in set(sys.modules) - before:
                if name != module_name and any(
                    place.is_relative_to(code_dir) for place in _module_dir(sys.modules[name])
                ):
                    del sys.modules[name]
            sys.modules.update(stashed)
    handler = getattr(module, spec.attribute, None)
    if not callable(handler):
        raise InvocationError(f"{spec.logical_id}: {file} has no function {spec.attribute!r}")
    return handler


def _json_default(value: Any) -> Any:
    """The Python runtime's encoder turns Decimal into a number; anything else is an error."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


Isolation = Literal["thread", "process"]

_PER_INVOCATION = ("current_event", "lambda_context")


def powertools_events_per_thread() -> None:
    """Powertools' resolvers keep the request they answer on their base class (BaseRouter), which
    holds in Lambda (one request per process at a time) but not in thread mode, where functions
    answer concurrent requests in threads of one process: a request would then be answered with
    another's query or caller. Each thread (each invocation runs in its own) gets its own request."""
    try:
        from aws_lambda_powertools.event_handler import api_gateway
    except ImportError:  # no handler of this process can use a resolver
        return
    base = api_gateway.BaseRouter
    if getattr(base, "_per_thread", False):
        return
    local = threading.local()

    class PerThread:
        """The attribute, read from an instance or the class, as this thread set it."""

        def __init__(self, name: str) -> None:
            self.name = name

        def __get__(self, instance: Any, owner: Any = None) -> Any:
            try:
                return getattr(local, self.name)
            except AttributeError:
                raise AttributeError(self.name) from None

        def __set__(self, instance: Any, value: Any) -> None:
            setattr(local, self.name, value)

    class PerThreadClass(type(base)):  # type: ignore[misc]
        def __setattr__(cls, name: str, value: Any) -> None:  # BaseRouter.current_event = ...
            if name in _PER_INVOCATION:
                setattr(local, name, value)
            else:
                super().__setattr__(name, value)

    with _IMPORT_LOCK:
        if getattr(base, "_per_thread", False):
            return
        base.__class__ = PerThreadClass  # type: ignore[method-assign]
        for name in _PER_INVOCATION:
            type.__setattr__(base, name, PerThread(name))
        type.__setattr__(base, "_per_thread", True)


class _ThreadEnvironment:
    """An execution environment in this process: a copy of the handler module (see load_handler)."""

    alive = True

    def __init__(self, handler: Callable[[Any, Any], Any], role: iam.Principal | None) -> None:
        self.handler, self.role = handler, role

    def run(self, event: Any, context: LambdaContext) -> Any:
        with iam.acting_as(self.role):
            return self.handler(event, context)

    def stop(self) -> None:
        """A thread cannot be stopped: the environment is only never used again."""


@contextlib.contextmanager
def _process_environment(variables: dict[str, str] | None) -> Iterator[None]:
    """os.environ is `variables` while inside (None: unchanged)."""
    if variables is None:
        yield
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class FunctionRuntime:
    """Runs one function's handler like Lambda: a JSON copy of the event, a context, the
    function's Timeout, a JSON result; a pool of execution environments for concurrency.

    isolation "process" (`make run`): each environment is a worker process bounded by the
    function's MemorySize (local/execution.py). "thread": each environment is a copy of the
    handler module in this process, so that a test can patch what the handler uses; nothing
    bounds its memory there, and a timed-out invocation runs on (its environment is dropped)."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        role: iam.Principal | None = None,
        isolation: Isolation = "thread",
        foreign_variables: frozenset[str] = frozenset(),
    ) -> None:
        self.spec = spec
        self.region = region
        self.account_id = account_id
        # With a role, every AWS call of the function (its init included) is checked against it.
        self.role = role
        self.isolation = isolation
        self.foreign_variables = foreign_variables
        if isolation == "thread":
            powertools_events_per_thread()  # its environments share one process
            if role is not None:
                iam.install()
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._made: list[Any] = []

    @property
    def environments(self) -> int:
        """How many execution environments were created so far."""
        return len(self._made)

    def _acquire(self) -> Any:
        with self._lock:
            while self._idle:
                environment = self._idle.pop()
                if environment.alive:
                    return environment
        return self._make()

    def _make(self, *, own_variables_only: bool = False) -> Any:
        with self._lock:
            instance = len(self._made)
            self._made.append(None)
        from local.execution import WorkerProcess, worker_environment

        variables = worker_environment(self.spec, self.region, self.foreign_variables)
        if self.isolation == "process":
            made: Any = WorkerProcess(
                self.spec,
                role=self.role,
                region=self.region,
                account_id=self.account_id,
                environment=variables,
                on_exit=self._forget,
            )
        else:
            with iam.acting_as(self.role), _process_environment(variables if own_variables_only else None):
                made = _ThreadEnvironment(load_handler(self.spec, instance), self.role)
        with self._lock:
            self._made[instance] = made
        return made

    def _forget(self, environment: Any) -> None:
        """An environment that ended by itself (a worker process died while idle) is not reused."""
        with self._lock:
            if environment in self._idle:
                self._idle.remove(environment)

    @property
    def warm(self) -> int:
        """How many execution environments wait for an invocation now."""
        with self._lock:
            return len(self._idle)

    def start_environment(self) -> None:
        """Makes one execution environment now and keeps it warm. In thread mode its init (the
        handler's import) sees only the variables Lambda would give the function (its own,
        Lambda's, and this process's others that no function sets), as a worker process does: a
        variable only other functions have is missing, and an init that needs it fails as in AWS.
        Raises InitError; call it while nothing else runs (os.environ is the process's)."""
        try:
            made = self._make(own_variables_only=True)
        except Exception as error:
            raise InitError(f"{self.spec.logical_id}: its init failed: {error}") from error
        with self._lock:
            self._idle.append(made)

    def close(self) -> None:
        """Stops every execution environment (worker processes are killed)."""
        with self._lock:
            made, self._made, self._idle = self._made, [], []
        for environment in made:
            if environment is not None:
                environment.stop()

    def invoke(
        self,
        event: Any,
        *,
        wait: float | None = None,
        request_id: str | None = None,
        asynchronous: bool = False,
    ) -> Any:
        """Calls the handler and returns its JSON result. Raises HandlerError (the handler
        raised), FunctionTimeout (it ran past the function's Timeout; the environment is
        stopped), EnvironmentExited (its process died: over MemorySize), ResponseError,
        RequestTooLarge, or IntegrationTimeout when `wait` seconds (less than the Timeout) pass first."""
        payload = json.dumps(event, default=_json_default)
        size_limit = ASYNC_EVENT_LIMIT if asynchronous else LAMBDA_PAYLOAD_LIMIT
        if len(payload.encode()) > size_limit:
            raise RequestTooLarge(f"{self.spec.logical_id}: event over {size_limit} bytes")
        event_copy = json.loads(payload)
        environment = self._acquire()
        context = LambdaContext(
            self.spec, region=self.region, account_id=self.account_id, request_id=request_id
        )
        outcome: dict[str, Any] = {}
        finished = threading.Event()
        state = {"dropped": False}

        def run() -> None:
            try:
                outcome["result"] = environment.run(event_copy, context)
            except InvocationError as failure:  # the environment's own report (a worker process)
                outcome["failure"] = failure
            except BaseException as error:  # everything a handler raises is the invocation's error
                outcome["error"] = error
                outcome["formatted"] = traceback.format_exc()
            finally:
                with self._lock:
                    finished.set()
                    if not state["dropped"] and environment.alive:
                        self._idle.append(environment)

        worker = threading.Thread(
            target=run, name=f"lambda-{self.spec.logical_id}-{context.aws_request_id[:8]}", daemon=True
        )
        worker.start()
        timeout = float(self.spec.timeout)
        if wait is not None and wait < timeout:
            if not finished.wait(wait):
                # API Gateway stops waiting; the function runs on until its own Timeout.
                remaining = context.get_remaining_time_in_millis() / 1000
                expiry = threading.Timer(remaining, self._time_out, (environment, finished, state))
                expiry.daemon = True
                expiry.start()
                raise IntegrationTimeout(f"{self.spec.logical_id}: no answer within {wait:g} s")
        elif not finished.wait(timeout) and self._time_out(environment, finished, state):
            raise FunctionTimeout(f"Task timed out after {self.spec.timeout:.2f} seconds")
        return self._result(outcome)

    def _time_out(self, environment: Any, finished: threading.Event, state: dict[str, bool]) -> bool:
        """The one place the function's Timeout is enforced, in both isolations: an invocation
        still running is dropped with its environment (a worker process is killed; a thread
        cannot be, it only never serves again). False when it had finished meanwhile."""
        with self._lock:
            if finished.is_set():
                return False
            state["dropped"] = True
        environment.stop()
        return True

    def _result(self, outcome: dict[str, Any]) -> Any:
        if "failure" in outcome:
            raise outcome["failure"]
        if "error" in outcome:
            error: BaseException = outcome["error"]
            raise HandlerError(error, outcome["formatted"]) from error
        try:
            text = json.dumps(outcome["result"], default=_json_default)
        except (TypeError, ValueError) as error:
            raise ResponseError(f"Unable to marshal response: {error}") from error
        if len(text.encode()) > LAMBDA_PAYLOAD_LIMIT:
            raise ResponseError(
                f"Response payload size exceeded maximum allowed payload size ({LAMBDA_PAYLOAD_LIMIT} bytes)"
            )
        return json.loads(text)


def merged_environment(functions: Iterable[FunctionSpec]) -> dict[str, str]:
    """The environment variables of all functions together; raises ValueError when two functions
    set one variable differently (they share this process's os.environ)."""
    merged: dict[str, str] = {}
    owner: dict[str, str] = {}
    for spec in functions:
        for key, value in spec.environment.items():
            if key in merged and merged[key] != value:
                raise ValueError(
                    f"{owner[key]} and {spec.logical_id} set {key} differently ({merged[key]!r} vs "
                    f"{value!r}); the local stack runs every function in one process"
                )
            merged[key] = value
            owner.setdefault(key, spec.logical_id)
    return merged


# ---------------------------------------------------------------------------- Cognito authorizer

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _java_date(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return (
        f"{_DAYS[moment.weekday()]} {_MONTHS[moment.month - 1]} {moment.day:02d} "
        f"{moment:%H:%M:%S} UTC {moment.year}"
    )


def _claim_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return ",".join(_claim_string(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if value is None:
        return ""
    return str(value)


def flatten_claims(claims: dict[str, Any]) -> dict[str, str]:
    """Token claims as a REST API's Cognito authorizer hands them to the function: every value a
    string; exp and iat as Java dates ("Thu Dec 06 17:08:23 UTC 2018"), other numbers as
    digits (auth_time "1544112503"), booleans "true"/"false", lists joined with commas
    (cognito:groups ["admins", "team-a"] -> "admins,team-a"; one group -> "admins")."""
    flat: dict[str, str] = {}
    for key, value in claims.items():
        if key in ("exp", "iat") and isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = _java_date(value)
        else:
            flat[key] = _claim_string(value)
    return flat


def _token_kid(token: str) -> Any:
    segment = token.split(".", 1)[0]
    header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return header.get("kid") if isinstance(header, dict) else None


class CognitoVerifier:
    """Checks ID tokens of one user pool and app client the way the REST API's Cognito authorizer
    does: RS256 signature by a key of the pool's JWKS (fetched from moto over loopback, lazily,
    once; again when an unknown kid shows up), iss, token_use "id", aud, exp. The token is the
    whole header value; a "Bearer " prefix is accepted too."""

    EXPIRED = "The incoming token has expired"
    UNAUTHORIZED = "Unauthorized"

    def __init__(
        self,
        endpoint_url: str,
        pool_id: str,
        client_id: str,
        region: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool_id = pool_id
        self.client_id = client_id
        self.issuer = f"https://cognito-idp.{region}.amazonaws.com/{pool_id}"
        self.jwks_url = f"{endpoint_url.rstrip('/')}/{pool_id}/.well-known/jwks.json"
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = 0.0

    def _key_set(self, *, refresh: bool = False) -> KeySet:
        with self._lock:
            stale = refresh and time.monotonic() - self._fetched_at > 10
            if self._keys is None or stale:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
                with opener.open(self.jwks_url, timeout=10) as answer:
                    self._keys = KeySet.import_key_set(json.loads(answer.read()))
                self._fetched_at = time.monotonic()
            return self._keys

    def verify(self, authorization: str | None) -> tuple[dict[str, Any] | None, str]:
        """(the token's claims, "") when the token is good, else (None, the 401 message)."""
        token = (authorization or "").strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if not token:
            return None, self.UNAUTHORIZED
        try:
            try:
                decoded = jwt.decode(token, self._key_set(), algorithms=["RS256"])
            except JoseError:
                known = {key.kid for key in self._key_set().keys}
                if _token_kid(token) in known:
                    raise
                decoded = jwt.decode(token, self._key_set(refresh=True), algorithms=["RS256"])
        except (JoseError, ValueError, KeyError, TypeError, binascii.Error):
            return None, self.UNAUTHORIZED
        claims = decoded.claims
        if (
            claims.get("iss") != self.issuer
            or claims.get("token_use") != "id"
            or claims.get("aud") != self.client_id
        ):
            return None, self.UNAUTHORIZED
        expires = claims.get("exp")
        if not isinstance(expires, (int, float)) or isinstance(expires, bool):
            return None, self.UNAUTHORIZED
        if expires <= self._clock():
            return None, self.EXPIRED
        return claims, ""

    def claims(self, authorization_header: str | None) -> dict[str, str] | None:
        """The claims as strings (see `flatten_claims`), None if the token is missing or bad."""
        claims, _ = self.verify(authorization_header)
        return None if claims is None else flatten_claims(claims)


# ---------------------------------------------------------------------------- gateway responses

# type -> (status, default message, x-amzn-ErrorType)
_GATEWAY_ERRORS: dict[str, tuple[int, str, str]] = {
    "MISSING_AUTHENTICATION_TOKEN": (
        403,
        "Missing Authentication Token",
        "MissingAuthenticationTokenException",
    ),
    "UNAUTHORIZED": (401, "Unauthorized", "UnauthorizedException"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long", "BadRequestException"),
    # Function errors, timeouts and malformed proxy answers: 502 "Internal server error". Logs of
    # real APIs show the response type INTEGRATION_FAILURE for them (its templates fall back to
    # DEFAULT_5XX), with the status kept at 502.
    "INTEGRATION_FAILURE": (502, "Internal server error", "InternalServerErrorException"),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out", "InternalServerErrorException"),
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    gateway: LocalGateway


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "LocalApiGateway/1.0"

    def _serve(self) -> None:
        self.server.gateway._serve(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def __getattr__(self, name: str) -> Any:
        # Any other method (TRACE, QUERY, ...) is routed too, as API Gateway does (an undeclared
        # one answers 403 there), where http.server would answer 501.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.gateway.log_requests:
            super().log_message(format, *args)


class _Reply:
    """An answer to write: status, header list, body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def _media_type_matches(pattern: str, media_type: str) -> bool:
    return fnmatch.fnmatchcase(media_type.lower(), pattern.replace("~1", "/").lower())


class LocalGateway:
    """The template's REST API (stage `stage`) on http://127.0.0.1:<port>, served at the root and
    under /<stage>/ (as the deployed URL has it)."""

    def __init__(
        self,
        template: Template,
        *,
        host: str = "127.0.0.1",
        port: int = 3000,
        stage: str = "v1",
        authorizer: CognitoVerifier | None,
        extra_routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] | None = None,
        openapi_path: Path | None = None,
        api_id: str | None = None,
        integration_timeout: float = INTEGRATION_TIMEOUT,
        log_requests: bool = True,
        check_iam: bool = False,
        isolation: Isolation = "thread",
        forget_process_state: Callable[[], None] = lambda: None,
    ) -> None:
        if host not in _LOOPBACK:
            raise ValueError(f"the local gateway only binds loopback, not {host!r}")
        self.template = template
        self.host = "127.0.0.1" if host == "localhost" else host
        self.port = port
        self.stage = stage
        self.authorizer = authorizer
        self.extra_routes = dict(extra_routes or {})
        self.openapi_path = openapi_path
        self.integration_timeout = integration_timeout
        self.log_requests = log_requests
        self.check_iam = check_iam
        self.isolation: Isolation = isolation
        # What the functions' inits leave in this process for other functions to reuse (the
        # service's composition roots): forgotten between the inits of a thread-mode start.
        self.forget_process_state = forget_process_state
        self._memory: dict[str, int] = {}
        routes = template.api_routes()
        if api_id is not None:
            routes = [route for route in routes if route.api_id == api_id]
        self.routes = sorted(routes, key=ApiRoute.specificity)
        missing = [f"{r.method} {r.path}" for r in self.routes if r.authorized and authorizer is None]
        if missing:
            raise ValueError(f"routes need a Cognito authorizer but none was given: {', '.join(missing)}")
        apis = sorted({route.api_id for route in self.routes})
        self.api_id = api_id or (apis[0] if len(apis) == 1 else None)
        api = template.api_definition(self.api_id) if self.api_id else {}
        self.gateway_responses: dict[str, Any] = api.get("x-amazon-apigateway-gateway-responses") or {}
        self.binary_media_types: list[str] = [
            str(item) for item in api.get("x-amazon-apigateway-binary-media-types") or []
        ]
        self.rest_api_id = (
            str(template.resolve({"Ref": self.api_id})) if self.api_id in template.resources else "localapi01"
        )
        self._runtimes: dict[str, FunctionRuntime] = {}
        self._runtimes_lock = threading.Lock()
        self._saved_environment: dict[str, str | None] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        port = self._server.server_address[1] if self._server is not None else self.port
        return f"http://{self.host}:{port}"

    def apply_environment(self) -> None:
        """Puts every function's environment into os.environ (stop() restores the previous one)."""
        if self._saved_environment is not None:
            return
        environment = merged_environment(self.template.functions().values())
        environment.setdefault("AWS_REGION", os.environ.get("AWS_REGION", self.template.region))
        environment.setdefault(
            "AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION", self.template.region)
        )
        self._saved_environment = {key: os.environ.get(key) for key in environment}
        os.environ.update(environment)

    def start(self) -> None:
        """Sets the functions' environment (in thread mode, runs every function's init in its own
        first: start_every_function) and serves in a background thread."""
        if self._server is not None:
            return
        self.apply_environment()
        if self.isolation == "thread":
            self.start_every_function()
        server = _Server((self.host, self.port), _Handler)
        server.gateway = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="local-gateway", daemon=True)
        self._thread.start()

    def start_every_function(self) -> None:
        """Every function's init runs now, each seeing only its own variables (as in Lambda; see
        FunctionRuntime.start_environment), after the state earlier inits left is forgotten: a
        function whose template lacks a variable its init reads fails the start (InitError), as
        its first invocation (or its SnapStart version's publication) fails in AWS."""
        try:
            for function_id in self.template.functions():
                self.forget_process_state()
                self.runtime(function_id).start_environment()
        finally:
            self.forget_process_state()  # the functions rebuild it on use, from the shared os.environ

    def stop(self) -> None:
        self._close_runtimes()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._saved_environment is not None:
            for key, value in self._saved_environment.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_environment = None

    # ------------------------------------------------------------------ invoking

    def runtime(self, function_id: str) -> FunctionRuntime:
        with self._runtimes_lock:
            if function_id not in self._runtimes:
                functions = self.template.functions()
                spec = functions[function_id]
                if function_id in self._memory:
                    spec = dataclasses.replace(spec, memory=self._memory[function_id])
                others = {key for other in functions.values() for key in other.environment}
                self._runtimes[function_id] = FunctionRuntime(
                    spec,
                    region=self.template.region,
                    account_id=self.template.account_id,
                    role=self.template.execution_role(function_id) if self.check_iam else None,
                    isolation=self.isolation,
                    foreign_variables=frozenset(others - set(spec.environment)),
                )
            return self._runtimes[function_id]

    def _close_runtimes(self) -> None:
        with self._runtimes_lock:
            runtimes, self._runtimes = list(self._runtimes.values()), {}
        for runtime in runtimes:
            runtime.close()

    @contextlib.contextmanager
    def isolated(self, memory: dict[str, int] | None = None) -> Iterator[None]:
        """Every function runs in worker processes while inside (`memory`: MemorySize in MB
        instead of the template's, by function), for the tests of a suite that runs in-process."""
        saved, self.isolation, self._memory = self.isolation, "process", dict(memory or {})
        self._close_runtimes()
        try:
            yield
        finally:
            self._close_runtimes()
            self.isolation, self._memory = saved, {}

    def invoke(self, function_id: str, event: Any, *, asynchronous: bool = False) -> Any:
        """Invokes a function directly (schedules, queues, tests): returns its JSON result, raises
        what the handler raised, or FunctionTimeout / ResponseError / RequestTooLarge."""
        self.apply_environment()
        try:
            return self.runtime(function_id).invoke(event, asynchronous=asynchronous)
        except HandlerError as failure:
            raise failure.error from None

    # ------------------------------------------------------------------ HTTP

    def find_route(self, method: str, path: str) -> tuple[ApiRoute, dict[str, str], str] | None:
        """(route, path parameters, path without the stage) for a request, or None."""
        candidates = [path]
        prefix = f"/{self.stage}"
        if path == prefix or path.startswith(prefix + "/"):
            candidates.append(path[len(prefix) :] or "/")
        for candidate in candidates:
            for route in self.routes:
                params = route.match(method, candidate)
                if params is not None:
                    return route, params, candidate
        return None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        request_id = str(uuid.uuid4())
        started = time.time()
        method = handler.command.upper()
        split = urlsplit(handler.path)
        path = split.path or "/"
        try:
            extra = self.extra_routes.get(path)
            if extra is not None:
                extra(handler)
                return
            if (
                self.openapi_path is not None
                and method in ("GET", "HEAD")
                and path in ("/openapi.json", "/swagger")
            ):
                self._write(handler, self._docs(path))
                return
            body = self._read_body(handler)
            if body is None:
                handler.close_connection = True
                text = f"HTTP content length exceeded {API_PAYLOAD_LIMIT} bytes."
                reply = _Reply(413, [("Content-Type", "text; charset=utf-8")], text.encode())
                self._write(handler, reply)
                return
            reply = self._api_reply(handler, method, path, split.query, body, request_id, started)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            reply = self._gateway_error("INTEGRATION_FAILURE", request_id, None)
        reply.headers.append(("x-amzn-RequestId", request_id))
        self._write(handler, reply)

    def _docs(self, path: str) -> _Reply:
        assert self.openapi_path is not None
        if path == "/openapi.json":
            return _Reply(200, [("Content-Type", "application/json")], self.openapi_path.read_bytes())
        # Swagger UI from the assets Powertools ships: the page works with no network.
        from local.openapi import swagger_page

        page = swagger_page(self.openapi_path.read_text())
        return _Reply(200, [("Content-Type", "text/html; charset=utf-8")], page.encode())

    def _read_body(self, handler: BaseHTTPRequestHandler) -> bytes | None:
        """The request body; None when it is over API Gateway's 10 MB."""
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                line = handler.rfile.readline(65537)
                length = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if length == 0:
                    while handler.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                size += length
                if size > API_PAYLOAD_LIMIT:
                    return None
                chunks.append(handler.rfile.read(length))
                handler.rfile.readline(65537)
            return b"".join(chunks)
        length = int(handler.headers.get("Content-Length") or 0)
        if length > API_PAYLOAD_LIMIT:
            return None
        return handler.rfile.read(length) if length > 0 else b""

    def _api_reply(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        raw_path: str,
        query: str,
        body: bytes,
        request_id: str,
        started: float,
    ) -> _Reply:
        found = self.find_route(method, raw_path)
        if found is None:
            return self._gateway_error("MISSING_AUTHENTICATION_TOKEN", request_id, None)
        route, path_parameters, path = found
        claims: dict[str, str] | None = None
        if route.authorized:
            assert self.authorizer is not None
            token_claims, failure = self.authorizer.verify(handler.headers.get(route.identity_header))
            if token_claims is None:
                return self._gateway_error("UNAUTHORIZED", request_id, route, failure)
            claims = flatten_claims(token_claims)
        event = self._event(
            handler, route, method, path, path_parameters, query, body, claims, request_id, started
        )
        runtime = self.runtime(route.function_id)
        try:
            result = runtime.invoke(event, wait=self.integration_timeout, request_id=request_id)
        except RequestTooLarge:
            return self._gateway_error("REQUEST_TOO_LARGE", request_id, route)
        except IntegrationTimeout:
            print(
                f"local gateway: {route.function_id} did not answer within {self.integration_timeout:g} s",
                file=sys.stderr,
            )
            return self._gateway_error("INTEGRATION_TIMEOUT", request_id, route)
        except HandlerError as failure:
            print(f"local gateway: {route.function_id} raised:\n{failure.formatted}", file=sys.stderr, end="")
            return self._gateway_error("INTEGRATION_FAILURE", request_id, route)
        except InvocationError as failure:
            print(f"local gateway: {route.function_id} failed: {failure}", file=sys.stderr)
            return self._gateway_error("INTEGRATION_FAILURE", request_id, route)
        reply = self._proxy_reply(result, handler.headers.get("Accept", ""))
        if reply is None:
            print(
                f"local gateway: {route.function_id}: Malformed Lambda proxy response: {str(result)[:500]}",
                file=sys.stderr,
            )
            return self._gateway_error("INTEGRATION_FAILURE", request_id, route)
        return reply

    def _is_binary(self, content_type: str) -> bool:
        media_type = content_type.split(";", 1)[0].strip()
        return bool(media_type) and any(_media_type_matches(p, media_type) for p in self.binary_media_types)

    def _event(
        self,
        handler: BaseHTTPRequestHandler,
        route: ApiRoute,
        method: str,
        path: str,
        path_parameters: dict[str, str],
        query: str,
        body: bytes,
        claims: dict[str, str] | None,
        request_id: str,
        started: float,
    ) -> dict[str, Any]:
        """A REST API Lambda proxy event (payload format 1.0)."""
        client_ip = str(handler.client_address[0])
        header_items = [(name, value) for name, value in handler.headers.items()]
        names = {name.lower() for name, _ in header_items}
        port = self._server.server_address[1] if self._server is not None else self.port
        added = {
            "X-Forwarded-For": client_ip,
            "X-Forwarded-Port": str(port),
            "X-Forwarded-Proto": "http",
            "X-Amzn-Trace-Id": f"Root=1-{int(started):08x}-{uuid.uuid4().hex[:24]}",
        }
        header_items += [(name, value) for name, value in added.items() if name.lower() not in names]
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for name, value in header_items:
            headers[name] = value
            multi_headers.setdefault(name, []).append(value)
        query_parameters: dict[str, str] = {}
        multi_query: dict[str, list[str]] = {}
        for part in query.split("&"):
            if not part:
                continue
            name, _, value = part.partition("=")
            name, value = unquote(name), unquote(value)
            query_parameters[name] = value
            multi_query.setdefault(name, []).append(value)
        text: str | None = None
        encoded = False
        if body:
            if self._is_binary(headers.get("Content-Type", "") or handler.headers.get("Content-Type", "")):
                text, encoded = base64.b64encode(body).decode(), True
            else:
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError:
                    # API Gateway would mangle such a body unless BinaryMediaTypes lists its type.
                    text, encoded = base64.b64encode(body).decode(), True
        request_context: dict[str, Any] = {
            "resourceId": hashlib.sha256(route.path.encode()).hexdigest()[:6],
            "resourcePath": route.path,
            "httpMethod": method,
            "extendedRequestId": base64.b64encode(uuid.uuid4().bytes[:11]).decode().rstrip("="),
            "requestTime": datetime.fromtimestamp(started, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{self.stage}{path}",
            "accountId": self.template.account_id,
            "protocol": handler.request_version,
            "stage": self.stage,
            "domainPrefix": self.rest_api_id,
            "requestTimeEpoch": int(started * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": client_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": handler.headers.get("User-Agent"),
                "user": None,
            },
            "domainName": handler.headers.get("Host") or f"{self.host}:{port}",
            "apiId": self.rest_api_id,
        }
        if claims is not None:
            request_context["authorizer"] = {"claims": claims}
        return {
            "resource": route.path,
            "path": path,
            "httpMethod": method,
            "headers": headers or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": query_parameters or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
            "requestContext": request_context,
            "body": text,
            "isBase64Encoded": encoded,
        }

    def _proxy_reply(self, result: Any, accept: str) -> _Reply | None:
        """The HTTP answer for a Lambda proxy response, None when it is malformed (API Gateway
        REST then answers 502: unknown keys, a missing or bad statusCode, a non-string body)."""
        allowed = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"}
        if not isinstance(result, dict) or set(result) - allowed:
            return None
        try:
            status = int(result.get("statusCode"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        if not 100 <= status <= 599:
            return None
        single = result.get("headers") or {}
        multi = result.get("multiValueHeaders") or {}
        body = result.get("body")
        encoded = result.get("isBase64Encoded", False)
        if not isinstance(single, dict) or not isinstance(multi, dict) or not isinstance(encoded, bool):
            return None
        if body is not None and not isinstance(body, str):
            return None
        headers: list[tuple[str, str]] = []
        multi_names = {str(name).lower() for name in multi}
        for name, value in single.items():
            if isinstance(value, (dict, list)):
                return None
            if str(name).lower() not in multi_names:
                headers.append((str(name), _claim_string(value)))
        for name, values in multi.items():
            if not isinstance(values, list):
                return None
            headers.extend((str(name), _claim_string(value)) for value in values)
        hop_by_hop = {"content-length", "transfer-encoding", "connection"}
        headers = [(name, value) for name, value in headers if name.lower() not in hop_by_hop]
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))  # REST APIs' default
        payload = (body or "").encode()
        if encoded and body:
            # API Gateway REST turns a base64 body back into bytes only when the request's Accept
            # header names a type of the API's BinaryMediaTypes; otherwise the client gets base64.
            accepted = [part.split(";", 1)[0].strip() for part in accept.split(",") if part.strip()]
            if any(self._is_binary(media_type) for media_type in accepted):
                try:
                    payload = base64.b64decode(body, validate=True)
                except (binascii.Error, ValueError):
                    return None
            else:
                print(
                    "local gateway: a base64 body goes out as text, as on API Gateway: the request's "
                    f"Accept ({accept or 'none'}) matches no BinaryMediaTypes ({self.binary_media_types})",
                    file=sys.stderr,
                )
        return _Reply(status, headers, payload)

    def _gateway_error(
        self, response_type: str, request_id: str, route: ApiRoute | None, message: str | None = None
    ) -> _Reply:
        """An answer API Gateway gives by itself, shaped by the API's GatewayResponses if any."""
        status, default_message, error_type = _GATEWAY_ERRORS[response_type]
        message = message or default_message
        custom = self.gateway_responses.get(response_type) or self.gateway_responses.get(
            "DEFAULT_4XX" if status < 500 else "DEFAULT_5XX"
        )
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)]
        body = json.dumps({"message": message})
        if isinstance(custom, dict):  # as in the API's OpenAPI body
            if custom.get("statusCode"):
                status = int(custom["statusCode"])
            for name, value in (custom.get("responseParameters") or {}).items():
                if name.startswith("gatewayresponse.header."):
                    headers.append((name.removeprefix("gatewayresponse.header."), str(value).strip("'")))
            templates = custom.get("responseTemplates") or {}
            template = templates.get("application/json") or next(iter(templates.values()), None)
            if isinstance(template, str):
                body = self._render(template, response_type, message, request_id, route)
        return _Reply(status, headers, body.encode())

    def _render(
        self, template: str, response_type: str, message: str, request_id: str, route: ApiRoute | None
    ) -> str:
        """The $context variables of a gateway response template (a small part of VTL)."""
        values = {
            "error.responseType": response_type,
            "error.message": message,
            "error.messageString": json.dumps(message),
            "requestId": request_id,
            "extendedRequestId": request_id,
            "stage": self.stage,
            "apiId": self.rest_api_id,
            "accountId": self.template.account_id,
            "resourcePath": route.path if route else "",
            "httpMethod": route.method if route else "",
        }

        def replace(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            return values.get(name, match.group(0))

        return re.sub(
            r"\$!?\{context\.([A-Za-z.]+)\}|\$context\.([A-Za-z]+(?:\.[A-Za-z]+)*)", replace, template
        )

    def _write(self, handler: BaseHTTPRequestHandler, reply: _Reply) -> None:
        handler.send_response(reply.status)
        for name, value in reply.headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(reply.body)
