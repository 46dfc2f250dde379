"""The `taskql` command: help on every command, and one clear line for a bad database."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


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
