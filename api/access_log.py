"""One line per GraphQL request: who, what, how long, which path, what came of it.

Written when the response has ended (``api.metrics.MetricsMiddleware`` calls ``record``),
from what the layers below noted on the request (``api.metrics.Observation``) and the
request's identity (``api.auth.Auth``): request id, tenant id, user id, operation name (the
bounded label the metrics use) and type, duration, statement count, path (compiled or
resolvers), HTTP status and error code. ``TASKQL_LOG_FORMAT=json`` writes each as one JSON
object per line (structlog's JSON renderer), for a log pipeline; the default, for the
embedded start, is a human-readable line, and then only slow operations are written at
INFO (every request is at DEBUG). An operation slower than ``TASKQL_SLOW_OPERATION_MS`` is
a WARNING with ``slow: true`` in either format; for its plans, see auto_explain in
docs/operations/monitoring.md.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog

from api.auth import SCOPE_KEY, Auth

_log = logging.getLogger("taskql.access")


class AccessLog:
    def __init__(self, json_lines: bool, slow_ms: int) -> None:
        self.json_lines = json_lines
        self.slow_ms = slow_ms
        renderer: Any = (
            structlog.processors.JSONRenderer(sort_keys=True)
            if json_lines
            else structlog.dev.ConsoleRenderer(colors=False)
        )
        self._render = renderer

    def fields(
        self, scope: MutableMapping[str, Any], seen: Any, status: int, seconds: float
    ) -> dict[str, Any]:
        auth: Auth | None = scope.get(SCOPE_KEY)
        return {
            "event": "graphql request",
            "request_id": auth.request_id if auth else None,
            "tenant_id": str(auth.tenant.organization_id) if auth and auth.tenant else None,
            "user_id": str(auth.viewer.user_id) if auth and auth.viewer else None,
            "operation": seen.operation,
            "type": seen.type,
            "path": seen.path,
            "status": status,
            "code": None if seen.code == "none" else seen.code,
            "statements": seen.statements,
            "duration_ms": round(seconds * 1000, 2),
            "slow": seconds * 1000 >= self.slow_ms,
        }

    def record(
        self, scope: MutableMapping[str, Any], seen: Any, status: int, seconds: float
    ) -> None:
        slow = seconds * 1000 >= self.slow_ms
        level = logging.WARNING if slow else logging.INFO if self.json_lines else logging.DEBUG
        if not _log.isEnabledFor(level):
            return
        event = self.fields(scope, seen, status, seconds)
        line = self._render(None, "info", dict(event))
        _log.log(level, "%s", line)
