"""One line per request (issue 14, "Logs"): request id, tenant, user, operation, duration,
statements, path and code; JSON with TASKQL_LOG_FORMAT=json; slow operations as warnings."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import Api
from tests.api.world import Org


@pytest.fixture
async def json_api(pool: asyncpg.Pool) -> AsyncIterator[Api]:
    settings = Settings(taskql_log_format="json", taskql_sql_stats=True)
    transport = httpx.ASGITransport(app=create_app(settings), client=("198.51.100.8", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        yield Api(client)


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "taskql.access"]


async def test_each_request_is_one_json_line_with_its_tenant_and_user(
    json_api: Api, org_a: Org, org_b: Org, caplog: pytest.LogCaptureFixture
) -> None:
    query = "query ProjectName($id: ID!) { project(id: $id) { name } }"
    with caplog.at_level(logging.INFO, logger="taskql.access"):
        for org in (org_a, org_b):
            await json_api(query, {"id": org.project}, as_=(org, "viewer"))
        await json_api("{ nope }", as_=(org_a, "viewer"))
    first, second, bad = lines(caplog)
    for line, org in ((first, org_a), (second, org_b)):
        assert line["tenant_id"] == str(org.id)
        assert line["user_id"] == str(org.users["viewer"])
        assert line["operation"] == "ProjectName"
        assert line["type"] == "query"
        assert line["path"] == "compiled"
        assert line["status"] == 200
        assert line["code"] is None
        assert line["statements"] >= 1
        assert line["duration_ms"] > 0
        assert len(line["request_id"]) == 32
    assert first["request_id"] != second["request_id"]
    assert bad["code"] == "BAD_USER_INPUT"
    assert bad["tenant_id"] == str(org_a.id)


async def test_a_slow_operation_is_a_warning_in_either_format(
    pool: asyncpg.Pool, org_a: Org, caplog: pytest.LogCaptureFixture
) -> None:
    for log_format in ("text", "json"):
        settings = Settings(taskql_log_format=log_format, taskql_slow_operation_ms=1)
        transport = httpx.ASGITransport(app=create_app(settings), client=("198.51.100.8", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="taskql.access"):
                await Api(client)(
                    "{ organization { projects(first: 5) { nodes { name } } } }",
                    as_=(org_a, "owner"),
                )
        (record,) = [r for r in caplog.records if r.name == "taskql.access"]
        assert record.levelno == logging.WARNING
        text = record.getMessage()
        if log_format == "json":
            assert json.loads(text)["slow"] is True
        else:
            assert "slow=True" in text
            assert str(org_a.id) in text
