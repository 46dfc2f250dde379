"""Apollo Client's persisted-queries link (npm, run by node) against a real `taskql serve`:
the hash alone first (over GET for queries), the document once when the server does not
know it, the hash alone afterwards, for two tenants; mutations always over POST.

npm installs ``@apollo/client`` and ``graphql`` into a temporary folder (nothing vendored);
without node and npm the test fails: it is never skipped."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from tests.api.world import Org
from tests.conftest import ScratchDatabase
from tests.test_serve import stop, wait_healthy

SCRIPT = Path(__file__).parent / "js" / "apollo_persisted.cjs"
PACKAGES = ("@apollo/client@3.14.1", "graphql@16")


def port_in_range(first: int = 8800, last: int = 8899) -> int:
    for port in range(first + os.getpid() % 50, last + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 8800-8899")


def npm_install(folder: Path) -> None:
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed for this test"
    assert shutil.which("node"), "node is needed for this test"
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(folder), *PACKAGES],
        check=True,
        capture_output=True,
        timeout=300,
    )


def start(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--no-demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_client(folder: Path, url: str, callers: list[dict[str, str]]) -> dict[str, Any]:
    script = folder / SCRIPT.name
    shutil.copy(SCRIPT, script)
    done = subprocess.run(
        ["node", str(script), url, json.dumps(callers)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def test_apollo_clients_persisted_queries_link_against_taskql_serve(
    tmp_path: Path, test_database: ScratchDatabase, pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    await asyncio.to_thread(npm_install, tmp_path)
    port = port_in_range()
    env = {**test_database.env(), "TASKQL_GET_MAX_AGE_SECONDS": "30"}
    process = await asyncio.to_thread(start, env, port)
    try:
        await asyncio.to_thread(wait_healthy, process, port)
        callers = [
            {"token": org.tokens[role], "org": org.slug}
            for org, role in ((org_a, "admin"), (org_b, "member"))
        ]
        out = await asyncio.to_thread(
            run_client, tmp_path, f"http://127.0.0.1:{port}/graphql", callers
        )
    finally:
        output = stop(process)
    assert "Traceback" not in output
    steps = {step["name"]: step for step in out["steps"]}

    def seen(name: str) -> list[tuple[str, bool, int]]:
        return [(r["method"], r["withQuery"], r["status"]) for r in steps[name]["requests"]]

    # Unknown hash over GET: 404 PERSISTED_QUERY_NOT_FOUND; the link sends the document
    # (over POST), which the server checks and stores.
    assert seen("first") == [("GET", False, 404), ("POST", True, 200)]
    assert steps["first"]["requests"][0]["cacheControl"] == "no-store"
    # A new client: the hash alone, over GET, answered with cache headers.
    assert seen("again") == [("GET", False, 200)]
    assert steps["again"]["requests"][0]["cacheControl"] == "private, max-age=30"
    assert steps["again"]["data"] == steps["first"]["data"]
    # The other tenant runs the same stored document and sees its own organization.
    assert seen("other tenant") == [("GET", False, 200)]
    mine = steps["first"]["data"]["organization"]
    theirs = steps["other tenant"]["data"]["organization"]
    assert mine["name"] != theirs["name"]
    assert not {p["id"] for p in mine["projects"]["nodes"]} & {
        p["id"] for p in theirs["projects"]["nodes"]
    }
    # Mutations never go over GET: the hash over POST, then the document.
    assert seen("mutation") == [("POST", False, 404), ("POST", True, 200)]
    assert seen("mutation again") == [("POST", False, 200)]
    assert steps["mutation again"]["data"]["createProject"]["project"]["name"] == "by hash"
    assert len({r["hash"] for r in steps["first"]["requests"]}) == 1
