"""The `taskql` command: help on every command, and one clear line for a bad database."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import pytest

from tests.conftest import ScratchDatabase, admin_url


def taskql(
    *args: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; ``env`` values override the environment, None removes a variable."""
    environment = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["migrate"],
        ["migrate", "forwards"],
        ["migrate", "backwards"],
        ["migrate", "status"],
        ["seed-demo"],
        ["db", "bootstrap"],
        ["db", "maintain"],
        ["db", "drop"],
        ["db", "health"],
        ["tenant", "export"],
        ["tenant", "delete"],
        ["tenant", "import"],
        ["db", "backup"],
        ["db", "restore"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = taskql(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("postgresql://taskql@127.0.0.1:9/taskql", "connection refused"),
        ("postgresql://taskql@no-such-host.invalid:5432/taskql", "host name not resolved"),
    ],
)
@pytest.mark.parametrize("command", [["migrate", "status"], ["serve"], ["seed-demo"]])
def test_an_unreachable_database_is_one_clear_line(
    url: str, cause: str, command: list[str]
) -> None:
    result = taskql(*command, env={"DATABASE_URL": url, "MIGRATION_DATABASE_URL": url})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, result.stderr
    host = url.split("@")[1].split("/")[0]
    assert error_lines[0].startswith(
        f"taskql: error: cannot connect to PostgreSQL at {host}/taskql"
    )
    assert cause in error_lines[0]


def test_serving_without_the_server_url_says_which_variable_is_missing() -> None:
    result = taskql(
        "seed-demo",
        env={"DATABASE_URL": None, "MIGRATION_DATABASE_URL": "postgresql://x@127.0.0.1:9/x"},
    )
    assert result.returncode == 1
    assert "DATABASE_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


COMMANDS_WITH_OPTIONS = [
    ["serve"],
    ["migrate", "backwards"],
    ["migrations", "lint"],
    ["db", "bootstrap"],
    ["db", "drop"],
    ["export-schema"],
]


@pytest.mark.parametrize("command", COMMANDS_WITH_OPTIONS)
def test_help_shows_flags_without_a_type_and_rewraps_paragraphs(command: list[str]) -> None:
    """Guards: rich's help printed `--yes <bool>` and kept the docstrings' line breaks."""
    result = taskql(*command, "--help", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert "<bool>" not in result.stdout
    assert "╭" not in result.stdout  # plain help, no panels


def test_help_paragraphs_are_rewrapped_not_broken_where_the_source_was() -> None:
    result = taskql("migrations", "lint", "--help", env={"COLUMNS": "80"})
    assert "plus our own\n  checks. Exit 1 on any finding" in result.stdout, result.stdout


def test_every_bootstrap_option_has_help() -> None:
    result = taskql("db", "bootstrap", "--help", env={"COLUMNS": "200"})
    for option in ("--owner-password", "--server-password"):
        line = next(line for line in result.stdout.splitlines() if option in line)
        assert "Password to set" in line, result.stdout


def test_reversing_everything_asks_a_question_that_reads() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "migrate", "backwards"],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Reverse every applied migration" in result.stdout
    assert "down to all" not in result.stdout
    to = subprocess.run(
        [
            sys.executable,
            "-m",
            "api.cli",
            "migrate",
            "backwards",
            "--to",
            "2026-11-24T09:00:05:000000",
        ],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "down to and including 2026-11-24T09:00:05:000000?" in to.stdout


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:9/postgres",
        "postgresql://postgres@no-such-host.invalid/postgres",
    ],
)
def test_dropping_with_an_unreachable_admin_url_is_one_clear_line(url: str) -> None:
    """Guards: an 83-line traceback."""
    result = taskql("db", "drop", "--admin-url", url, "--database", "nothing_here")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, result.stderr
    assert error_lines[0].startswith("taskql: error: cannot connect to PostgreSQL at ")


async def _roles(admin_url: str, *names: str) -> set[str]:
    connection = await asyncpg.connect(admin_url)
    try:
        rows = await connection.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])", list(names)
        )
        return {r["rolname"] for r in rows}
    finally:
        await connection.close()


@pytest.mark.parametrize("which", ["owner", "server-login", "both"])
async def test_drop_drops_the_roles_it_was_named(
    test_database: ScratchDatabase, which: str
) -> None:
    """Guards: `db drop --owner X` without `--server-login` kept both roles."""
    admin = admin_url(test_database)
    tag = f"{os.getpid()}_{which.replace('-', '_')}"
    database, owner, login = (
        f"taskql_drop_{tag}",
        f"taskql_drop_owner_{tag}",
        f"taskql_drop_app_{tag}",
    )
    created = taskql(
        "db",
        "bootstrap",
        "--admin-url",
        admin,
        "--database",
        database,
        "--owner",
        owner,
        "--server-login",
        login,
    )
    assert created.returncode == 0, created.stderr
    try:
        named = {"owner": [owner], "server-login": [login], "both": [owner, login]}[which]
        options = []
        if owner in named:
            options += ["--owner", owner]
        if login in named:
            options += ["--server-login", login]
        dropped = taskql("db", "drop", "--admin-url", admin, "--database", database, *options)
        assert dropped.returncode == 0, dropped.stderr
        assert await _roles(admin, owner, login) == {owner, login} - set(named)
    finally:
        taskql(
            "db",
            "drop",
            "--admin-url",
            admin,
            "--database",
            database,
            "--owner",
            owner,
            "--server-login",
            login,
        )
    assert await _roles(admin, owner, login) == set()


def test_served_processes_write_taskqls_own_log_lines_at_the_configured_level() -> None:
    """uvicorn configures only its own loggers: taskql's INFO lines (client errors) were
    dropped, and the rest went out without a level."""
    code = (
        "import logging, logging.config\n"
        "from api.cli import log_config\n"
        "logging.config.dictConfig(log_config('info'))\n"
        "logging.getLogger('taskql.graphql').info('client error [request r1] BAD_USER_INPUT: x')\n"
        "logging.getLogger('taskql.graphql').debug('not shown')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["INFO:     client error [request r1] BAD_USER_INPUT: x"]
