"""Health endpoints for orchestrators: ``/livez`` (liveness) and ``/readyz`` (readiness).

- ``/livez``: the process answers HTTP. No database: a restart cannot fix PostgreSQL, and a
  liveness probe that fails with the database restarts every healthy pod during an outage.
- ``/readyz``: PostgreSQL answers within ``TASKQL_READY_TIMEOUT`` seconds and every migration
  of this checkout is recorded as applied. It first asks for a pooled connection for a short
  while; when every pooled connection is busy (the pool is exhausted, not the database
  dead) it asks on a check connection of its own, kept open between probes, so a busy pool
  does not take the process out of rotation.
- ``/healthz``: the old name of ``/readyz`` (deprecated; answers the same, with a
  ``Deprecation`` header).

Bodies never carry driver text: the cause is logged (rate-limited), the body says
``unreachable``, ``timeout`` or ``pending``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.logs import RateLimitedLog, failure_kind
from db.engine import DB
from db.errors import DatabaseError, unavailable
from db.migrate import runner

_log = logging.getLogger("taskql.health")

#: What a dead, restarting or refusing PostgreSQL raises on the way.
DATABASE_FAILURES = (
    DatabaseError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


class Health:
    def __init__(self, timeout: float = 2.0, log_interval: float = 10.0) -> None:
        self.timeout = timeout
        #: How long to wait for a pooled connection before using the check connection.
        self.pool_wait = min(0.25, timeout / 4)
        self._check_connection: asyncpg.Connection | None = None
        self._check_lock = asyncio.Lock()
        self._log = RateLimitedLog(_log, log_interval)

    async def livez(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def healthz(self, request: Request) -> JSONResponse:
        response = await self.readyz(request)
        response.headers["Deprecation"] = "true"
        response.headers["Link"] = '</readyz>; rel="successor-version"'
        return response

    async def readyz(self, request: Request) -> JSONResponse:
        body: dict[str, Any] = {"status": "ok", "database": "ok", "migrations": "current"}
        try:
            async with asyncio.timeout(self.timeout):
                via_pool, not_migrated = await self._check()
        except TimeoutError:
            self._log.warning(
                "timeout", "not ready: PostgreSQL did not answer within %g s", self.timeout
            )
            return JSONResponse({"status": "unavailable", "database": "timeout"}, 503)
        except DATABASE_FAILURES as exc:
            cause = unavailable(DB.dsn, exc) if isinstance(exc, OSError) and DB.dsn else exc
            self._log.warning(
                f"unreachable:{failure_kind(exc)}", "not ready: PostgreSQL unreachable: %s", cause
            )
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        pool = DB.pool
        body["pool"] = {
            "size": pool.get_size() if pool else 0,
            "idle": pool.get_idle_size() if pool else 0,
            "max": pool.get_max_size() if pool else 0,
            "busy": not via_pool,
        }
        if not_migrated is not None:
            self._log.warning("migrations", "not ready: %s", not_migrated)
            return JSONResponse({**body, "status": "unavailable", "migrations": "pending"}, 503)
        return JSONResponse(body)

    async def _check(self) -> tuple[bool, str | None]:
        """(answered through the pool, why not migrated): one round trip when migrated."""
        pool = DB.pool
        if pool is not None:
            try:
                connection = await pool.acquire(timeout=self.pool_wait)
            except TimeoutError:
                pass  # every connection busy (or connecting slowly): ask on our own
            else:
                try:
                    return True, await runner.not_current(connection)
                finally:
                    await pool.release(connection)
        return False, await self._on_check_connection()

    async def _on_check_connection(self) -> str | None:
        async with self._check_lock:
            connection = self._check_connection
            try:
                if connection is None or connection.is_closed():
                    connection = self._check_connection = await DB.get_new_connection()
                return await runner.not_current(connection)
            except BaseException:
                # Failed, or cancelled by the timeout mid-statement: never reuse it.
                self._check_connection = None
                if connection is not None:
                    connection.terminate()
                raise

    async def close(self) -> None:
        if self._check_connection is not None:
            await self._check_connection.close()
            self._check_connection = None
