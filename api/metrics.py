"""Prometheus metrics of the API: GraphQL requests, latency, SQL statements per operation,
the path that answered (compiled or resolvers), authentication; and the /metrics exposition.

Several uvicorn workers: prometheus-client's multiprocess mode. ``taskql serve`` gives every
run a fresh ``PROMETHEUS_MULTIPROC_DIR`` before the workers start; each worker writes its
values to memory-mapped files there and whichever process answers a scrape sums them
(counters and histograms over every process that ever ran, gauges over the live ones). One
worker: the process's own registry. Where it is served (docs/operations/monitoring.md):

- ``TASKQL_METRICS_PORT``: a listener of its own on ``TASKQL_METRICS_HOST`` (127.0.0.1 by
  default), run by the ``taskql serve`` process, never on the public GraphQL port;
- ``TASKQL_METRICS_TOKEN``: ``GET /metrics`` on the public port with
  ``Authorization: Bearer <token>``; without a token configured that path is a 404.

Labels are bounded: operation names are the document's own (never a client's claim), the
first ``TASKQL_METRICS_MAX_OPERATIONS`` distinct ones per process, then ``other``; codes are
the closed list of ``api.errors``; no user, tenant, id or document text ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http.server
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors
from api.access_log import AccessLog
from db import metrics as db_metrics
from db.engine import DB

#: Resolves the 100 ms SLA: 0.1 is a bucket boundary, with 75 and 150 ms either side.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
STATEMENT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100)

REQUESTS = Counter(
    "taskql_graphql_requests",
    "GraphQL HTTP requests, by operation name and type, the path that answered (compiled, "
    "resolvers, none), HTTP status and error code (none when there was no error).",
    ["operation", "type", "path", "status", "code"],
)
LATENCY = Histogram(
    "taskql_graphql_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by operation.",
    ["operation", "type", "path"],
    buckets=LATENCY_BUCKETS,
)
STATEMENTS = Histogram(
    "taskql_graphql_sql_statements",
    "SQL statements one operation sent (its transaction's set-up included).",
    ["operation", "path"],
    buckets=STATEMENT_BUCKETS,
)
LOGINS = Counter(
    "taskql_auth_logins",
    "logIn attempts by result: ok, failed (bad credentials), rate_limited.",
    ["result"],
)
RATE_LIMITED = Counter(
    "taskql_auth_rate_limited",
    "Password attempts refused by the log-in limits, by operation (logIn, changePassword).",
    ["operation"],
)
SESSIONS_REVOKED = Counter(
    "taskql_auth_sessions_revoked",
    "Sessions revoked, by reason: log_out, password_change.",
    ["reason"],
)
REJECTED = Counter(
    "taskql_auth_rejected",
    "Requests refused before GraphQL: invalid_token (401), not_member (403), malformed (401).",
    ["reason"],
)
for _result in ("ok", "failed", "rate_limited"):
    LOGINS.labels(_result)
for _reason in ("log_out", "password_change"):
    SESSIONS_REVOKED.labels(_reason)
for _reason in ("invalid_token", "not_member", "malformed"):
    REJECTED.labels(_reason)

#: The classic text format (what generate_latest writes), understood by every Prometheus.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCOPE_KEY = "taskql.observation"
_CODES = frozenset(errors.CODES) | {"TIMEOUT"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(slots=True)
class Observation:
    """What the layers below learn about one request, recorded when its response ends."""

    operation: str = "none"
    type: str = "none"
    path: str = "none"
    code: str = "none"
    statements: int | None = None

    def error(self, code: object) -> None:
        """Keep the gravest code seen (a server fault over a client's mistake)."""
        name = code if isinstance(code, str) and code in _CODES else "OTHER"
        if self.code == "none" or name == errors.INTERNAL_SERVER_ERROR:
            self.code = name


class OperationNames:
    """The first ``limit`` distinct operation names of this process, then ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def label(self, name: str | None) -> str:
        if name is None:
            return "anonymous"
        if name in self._seen:
            return name
        if not _NAME.fullmatch(name):
            return "other"
        with self._lock:
            if len(self._seen) >= self.limit:
                return "other"
            self._seen.add(name)
        return name


#: This process's operation-name labels (its limit set by ``api.app.create_app``).
OPERATION_NAMES = OperationNames(100)


def observation(scope: Scope) -> Observation | None:
    found: Observation | None = scope.get(SCOPE_KEY)
    return found


class MetricsMiddleware:
    """Times every GraphQL request and counts it once its response has ended."""

    def __init__(
        self,
        app: ASGIApp,
        paths: tuple[str, ...] = ("/graphql",),
        count: bool = True,
        access_log: AccessLog | None = None,
    ) -> None:
        self.app = app
        self.paths = paths
        #: Off: nothing is counted (TASKQL_METRICS=0); the access log may still be written.
        self.count = count
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = Observation()
        scope[SCOPE_KEY] = seen
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            elapsed = time.perf_counter() - started
            if status >= 400 and seen.code == "none":
                # Refused by Strawberry in plain text (e.g. an unknown operationName: 400).
                seen.code = errors.INTERNAL_SERVER_ERROR if status >= 500 else errors.BAD_USER_INPUT
            if self.count:
                REQUESTS.labels(seen.operation, seen.type, seen.path, str(status), seen.code).inc()
                LATENCY.labels(seen.operation, seen.type, seen.path).observe(elapsed)
                if seen.statements is not None:
                    STATEMENTS.labels(seen.operation, seen.path).observe(seen.statements)
            if self.access_log is not None:
                self.access_log.record(scope, seen, status, elapsed)


# ---------------------------------------------------------------------------- exposition


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def reap_dead_processes(path: str) -> None:
    """Forget the live gauges of workers that died (uvicorn restarts them under a new pid):
    a dead worker's pool must not count as open. Its counters stay (they happened)."""
    pids = set()
    for file in Path(path).glob("gauge_live*_*.db"):
        with contextlib.suppress(ValueError):
            pids.add(int(file.stem.rsplit("_", 1)[1]))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


async def exposition() -> bytes:
    """The text format for one scrape: every process's metrics plus a database snapshot."""
    db_metrics.sample_pool(DB.pool)
    return render(await _snapshot())


async def _snapshot() -> db_metrics.Snapshot:
    if DB.dsn is None:
        return db_metrics.Snapshot(up=False, seconds=0.0)
    # Not taskql's connection class: the snapshot's own connection is not one of the pool's.
    return await db_metrics.snapshot(
        {k: v for k, v in DB.config.items() if k != "connection_class"}
    )


def render(found: db_metrics.Snapshot) -> bytes:
    registry: CollectorRegistry
    path = multiprocess_dir()
    if path is not None:
        reap_dead_processes(path)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(db_metrics.SnapshotCollector(found))
    return generate_latest(registry)


class _Forward:
    """Another registry's metrics inside this one (the process registry plus a snapshot)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Any:
        return self.source.collect()


def token_allows(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


async def endpoint(request: Request) -> Response:
    """``GET /metrics`` on the public port: only with TASKQL_METRICS_TOKEN, and its bearer."""
    token: str | None = request.app.state.metrics_token
    if token is None:
        return PlainTextResponse("Not Found", status_code=404)
    if not token_allows(request.headers.get("authorization"), token):
        return PlainTextResponse(
            "metrics need 'Authorization: Bearer <TASKQL_METRICS_TOKEN>'",
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(await exposition(), media_type=CONTENT_TYPE)


@contextlib.asynccontextmanager
async def pool_sampler(interval: float = 1.0) -> AsyncIterator[None]:
    """Copy this process's pool state into the gauges every ``interval`` seconds."""

    async def sample() -> None:
        while True:
            db_metrics.sample_pool(DB.pool)
            await asyncio.sleep(interval)

    task = asyncio.create_task(sample())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        db_metrics.sample_pool(None)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        body = render(asyncio.run(_snapshot()))
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # scrapes every 15 s would drown the log


def serve_in_thread(host: str, port: int) -> http.server.ThreadingHTTPServer:
    """The metrics listener of ``taskql serve``: a thread of the supervising process, which
    reads every worker's files (or, with one worker, this process's registry)."""
    server = http.server.ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="taskql-metrics", daemon=True).start()
    return server
