"""`taskql serve` as a user runs it: a real uvicorn process, on the embedded PostgreSQL
(fresh data folder: initdb, roles, migrations, demo data, a printed token) and on an
external database named by DATABASE_URL. It answers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from db.migrate import runner
from db.settings import pool_size_for
from tests.conftest import RedisTarget, ScratchDatabase, redis_keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, port


def wait_healthy(process: subprocess.Popen[str], port: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("taskql serve did not become healthy")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    return output


def test_serve_on_a_fresh_embedded_postgres_with_demo_data_and_a_token(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL", "DB_POOL_MAX_SIZE")
    }
    env["TASKQL_DATA_DIR"] = str(tmp_path / "pgdata")
    process, port = serve(env)
    try:
        wait_healthy(process, port)
        pid_file = tmp_path / "pgdata" / "postmaster.pid"
        assert pid_file.exists()
        # The embedded server shares this machine's cores: the pool is sized to them.
        health = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert health["pool"]["max"] == pool_size_for(os.cpu_count() or 1, 1)
        assert health["migrations"] == "current"
        assert httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5).json() == {"status": "ok"}
    finally:
        output = stop(process)
    assert f"data in {tmp_path / 'pgdata'}" in output
    assert f"GraphiQL: http://127.0.0.1:{port}/graphql" in output
    assert f"http://127.0.0.1:{port}/readyz (readiness)" in output
    printed = re.search(r"^\s+(\{\"Authorization\".*\})$", output, re.MULTILINE)
    assert printed is not None, output
    headers = json.loads(printed.group(1))
    assert headers["X-Organization"] == "acme"
    # The embedded server stopped with its last user.
    deadline = time.monotonic() + 10
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_file.exists()


def test_serve_on_an_external_database_answers_queries(test_database: ScratchDatabase) -> None:
    env = {**test_database.env(), "TASKQL_WORKERS": "2"}
    process, port = serve(env, "--no-demo")
    try:
        wait_healthy(process, port)
        response = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={
                "query": 'mutation { logIn(input: {email: "nobody@example.test", password: "wrong password"}) { token errors { code } } }'
            },
            timeout=10,
        )
        assert response.status_code == 200
        assert response.json()["data"]["logIn"] == {
            "token": None,
            "errors": [{"code": "BAD_USER_INPUT"}],
        }
        assert response.headers["x-request-id"]
        unauthenticated = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={"query": "{ viewer { user { id } } }"},
            headers={"Authorization": "Bearer nope"},
            timeout=10,
        )
        assert unauthenticated.status_code == 401
    finally:
        output = stop(process)
    assert "Traceback" not in output
    # Two workers and no REDIS_URL: the operator is told the limits are per process.
    assert "log-in limits are counted per process" in output


def serve_only_as_the_server_role(database: ScratchDatabase) -> subprocess.CompletedProcess[str]:
    """`taskql serve` with only DATABASE_URL, as the deployment docs recommend."""
    env = {k: v for k, v in database.env().items() if k != "MIGRATION_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(free_port()), "--no-demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, result.stderr
    assert error_lines[0].startswith(
        "taskql: error: not starting, the database is not migrated: "
    ), error_lines
    assert reason in error_lines[0]
    assert "Ready for uvicorn" not in result.stdout


def test_serve_with_only_the_server_url_refuses_an_unmigrated_database(
    fresh_database: ScratchDatabase,
) -> None:
    """Guards: it started, answered /healthz ok, and then failed every log-in."""
    assert_refused(serve_only_as_the_server_role(fresh_database), "no migration has been applied")


async def test_serve_with_only_the_server_url_refuses_a_partly_migrated_database(
    test_database: ScratchDatabase,
) -> None:
    newest = runner.migration_ids()[-1]
    owner = await asyncpg.connect(test_database.owner_dsn)
    try:
        ran_on = await owner.fetchval("SELECT ran_on FROM migration WHERE name = $1", newest)
        await owner.execute("DELETE FROM migration WHERE name = $1", newest)
        try:
            result = await asyncio.to_thread(serve_only_as_the_server_role, test_database)
        finally:
            await owner.execute(
                "INSERT INTO migration (name, app_name, ran_on) VALUES ($1, 'taskql', $2)",
                newest,
                ran_on,
            )
    finally:
        await owner.close()
    assert_refused(result, f"1 of {len(runner.migration_ids())} migration(s) pending")


LOG_IN = """mutation($email: String!) {
  logIn(input: {email: $email, password: "wrong password"}) { token errors { code } }
}"""


async def test_two_workers_share_the_log_in_limits_through_redis(
    test_database: ScratchDatabase, redis_target: RedisTarget
) -> None:
    """Guards: with TASKQL_WORKERS=2 each worker counted alone (20 attempts admitted per
    e-mail, not 10), and a forged X-Forwarded-For from loopback was believed. A real
    `taskql serve` with two workers and REDIS_URL: each attempt on a new connection (the
    kernel spreads them over both workers), each with another forged address."""
    env = {**test_database.env(), "TASKQL_WORKERS": "2", **redis_target.env()}
    process, port = serve(env, "--no-demo")
    try:
        wait_healthy(process, port)
        email = f"victim-{os.getpid()}-{port}@example.test"
        seen = []
        for i in range(12):
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(
                    f"http://127.0.0.1:{port}/graphql",
                    json={"query": LOG_IN, "variables": {"email": email}},
                    headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
                )
            assert response.status_code == 200, response.text
            seen.append(response.json()["data"]["logIn"]["errors"][0]["code"])
        assert await redis_keys(redis_target)
    finally:
        output = stop(process)
    assert seen == ["BAD_USER_INPUT"] * 10 + ["RATE_LIMITED"] * 2
    assert "Traceback" not in output
    assert "per process" not in output


def test_pools_together_keep_about_two_connections_per_database_core() -> None:
    assert pool_size_for(2, 2) == 2  # this benchmark machine: 4 connections in all
    assert pool_size_for(2, 1) == 4
    assert pool_size_for(16, 4) == 8
    assert pool_size_for(4, 3) == 3  # rounded up
    assert pool_size_for(1, 8) == 2  # never fewer than 2 per process
    assert pool_size_for(0, 0) == 2
