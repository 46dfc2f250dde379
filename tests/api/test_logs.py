"""What the logs say: one line per client error, a traceback only for a masked unexpected
error, and an outage in a line per interval rather than one per request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from graphql import GraphQLError

from api import extensions, middleware
from api.extensions import coded_errors
from api.logs import RateLimitedLog
from api.settings import Settings
from db.engine import DB
from tests.api.conftest import Api
from tests.api.world import Org

DEAD = "postgresql://taskql_app@127.0.0.1:9/taskql"


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Error lines (the per-request access line of ``taskql.access`` is another matter)."""
    return [
        r
        for r in caplog.records
        if r.name.startswith(("taskql", "strawberry")) and r.name != "taskql.access"
    ]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ viewer { nope } }", "BAD_USER_INPUT"),  # validation
        ("{ viewer { user { id } }", "BAD_USER_INPUT"),  # syntax
    ],
)
async def test_a_client_error_is_one_line_with_the_request_id_and_code(
    api: Api, caplog: pytest.LogCaptureFixture, query: str, code: str
) -> None:
    """Guards: Strawberry logged every error at ERROR (with a ~30-line traceback for
    resolver errors)."""
    with caplog.at_level(logging.DEBUG):
        response = await api.post(query, headers={"X-Request-Id": "req-client-1"})
    assert response.json()["errors"][0]["extensions"]["code"] == code
    logged = records(caplog)
    assert len(logged) == 1, [r.getMessage() for r in logged]
    (line,) = logged
    assert line.name == "taskql.graphql"
    assert line.levelno == logging.INFO
    assert "req-client-1" in line.getMessage()
    assert code in line.getMessage()
    assert "\n" not in line.getMessage()
    assert line.exc_info is None
    assert "Traceback" not in caplog.text


async def test_a_resolver_api_error_is_one_line_without_a_traceback(
    api: Api, org_a: Org, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        body = await api('{ project(id: "not-an-id") { id } }', as_=(org_a, "member"))
    code = body["errors"][0]["extensions"]["code"]
    assert code in ("BAD_USER_INPUT", "NOT_FOUND"), body
    logged = records(caplog)
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert code in logged[0].getMessage()
    assert logged[0].exc_info is None
    assert "Traceback" not in caplog.text


def test_an_unexpected_error_is_masked_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise ZeroDivisionError("a bug")
    except ZeroDivisionError as exc:
        error = GraphQLError("a bug", original_error=exc)
    with caplog.at_level(logging.DEBUG):
        (masked,) = coded_errors([error], "req-bug", Settings())
    assert masked.message == "Unexpected error."
    (line,) = records(caplog)
    assert line.levelno == logging.ERROR
    assert "req-bug" in line.getMessage()
    assert line.exc_info is not None
    assert "ZeroDivisionError" in caplog.text


def test_repeated_lines_are_rate_limited_with_a_count() -> None:
    now = [1000.0]
    logger = logging.getLogger("taskql.test-rate-limited")
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect()
    logger.addHandler(handler)
    try:
        log = RateLimitedLog(logger, interval=10, clock=lambda: now[0])
        for _ in range(100):
            log.error("db", "database unavailable: %s", "refused")
        log.error("other", "another kind")  # its own allowance
        now[0] += 9.9
        log.error("db", "database unavailable: %s", "refused")
        now[0] += 0.2
        log.error("db", "database unavailable: %s", "refused")
    finally:
        logger.removeHandler(handler)
    assert seen == [
        "database unavailable: refused",
        "another kind",
        "database unavailable: refused (100 similar line(s) suppressed in the last 10 s)",
    ]


@pytest.fixture
async def dead_pool(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    dead = await asyncpg.create_pool(DEAD, min_size=0, max_size=2)
    monkeypatch.setattr(DB, "pool", dead)
    # A fresh allowance: an earlier test's outage line must not hide this one's.
    for log in (middleware._outage, extensions._outage):
        monkeypatch.setattr(log, "_kinds", {})
    yield
    await dead.close()


async def test_an_outage_writes_one_line_not_one_per_request(
    api: Api, org_a: Org, dead_pool: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards: while PostgreSQL was down every request wrote a line labelled
    "authentication failed" (12,000 lines in 26 s)."""
    with caplog.at_level(logging.DEBUG):
        for _ in range(30):
            response = await api.post(
                "{ viewer { user { id } } }", token=org_a.tokens["member"], org=org_a.slug
            )
            assert response.status_code == 503
    logged = records(caplog)
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert "database unavailable" in logged[0].getMessage()
    assert "authentication failed" not in caplog.text
