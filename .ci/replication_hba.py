"""CI set-up: let the PostgreSQL service accept the replica tests' physical replication.

    .venv/bin/python .ci/replication_hba.py add|remove ADMIN_URL TAG

``add``: when no rule of pg_hba.conf (the file ``SHOW hba_file`` names) matches the
``replication`` pseudo-database other than one this script added, append
``host replication all 127.0.0.1/32 trust  # taskql .ci/run TAG`` (the service's own rules
trust 127.0.0.1 already: this adds no access that ``all`` does not give, only the
replication protocol) and reload; then wait, at most 10 s, until a replication connection
is accepted. ``remove``: delete exactly the line tagged TAG and reload. Both are idempotent.

Done here, by CI as root, rather than by the test fixture: editing a server's pg_hba.conf is
machine set-up, undone in .ci/run's EXIT trap; a test suite on a developer's machine must
not rewrite the configuration of their PostgreSQL (tests/api/test_replicas.py skips there,
saying why, and fails in CI). Each run tags its own line, so runs sharing a machine never
remove the rule another run is using; a rule an administrator wrote is never touched.
Exit 0 when done or nothing to do, 1 with a message when it cannot (not root, unreachable).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

MARKER = "# taskql .ci/run"


def rule(tag: str) -> str:
    return f"host replication all 127.0.0.1/32 trust  {MARKER} {tag}"


async def hba(url: str) -> tuple[Path, list[int]]:
    """The hba file and the line numbers of its replication rules."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        path = Path(await connection.fetchval("SHOW hba_file"))
        lines = await connection.fetch(
            "SELECT line_number FROM pg_hba_file_rules "
            "WHERE error IS NULL AND 'replication' = ANY(database)"
        )
    finally:
        await connection.close(timeout=5)
    return path, [row[0] for row in lines]


async def reload(url: str) -> None:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close(timeout=5)


def replication_accepted(url: str) -> bool:
    psql = shutil.which("psql")
    if psql is None:
        time.sleep(1)  # no client to ask: give the postmaster a moment to reload
        return True
    separator = "&" if "?" in url else "?"
    result = subprocess.run(
        [psql, "-X", "-At", "-d", f"{url}{separator}replication=true", "-c", "IDENTIFY_SYSTEM"],
        capture_output=True,
        timeout=15,
        check=False,
    )
    return result.returncode == 0


def _dead_run(line: str) -> bool:
    """A line this script added for a .ci/run (``taskql_ci_<pid>``) whose process is gone."""
    found = re.search(rf"{re.escape(MARKER)} taskql_ci_(\d+)$", line)
    return found is not None and not Path(f"/proc/{found[1]}").exists()


def main(action: str, url: str, tag: str) -> int:
    path, numbers = asyncio.run(hba(url))
    if action == "add":
        text = path.read_text()
        lines = text.splitlines()
        stale = [line for line in lines if _dead_run(line)]
        if stale:  # left by runs killed before their EXIT trap (SIGKILL)
            text = "".join(f"{line}\n" for line in lines if line not in stale)
            with path.open("r+") as file:
                file.write(text)
                file.truncate()
            print(f"ci: removed {len(stale)} replication rule(s) of runs that are gone")
            return main(action, url, tag)
        theirs = [n for n in numbers if MARKER not in lines[n - 1]]
        if theirs:
            print(f"ci: {path} has a replication rule already (line {theirs[0]})")
            return 0
        if rule(tag) not in lines:
            if not os.access(path, os.W_OK):
                print(
                    f"ci: cannot add a replication rule to {path} (not writable)", file=sys.stderr
                )
                return 1
            with path.open("a") as file:
                file.write(("" if text.endswith("\n") or not text else "\n") + rule(tag) + "\n")
            print(f"ci: added to {path}: {rule(tag)}")
        asyncio.run(reload(url))
        deadline = time.monotonic() + 10
        while not replication_accepted(url):
            if time.monotonic() > deadline:
                print("ci: replication connections still refused after reload", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    if action == "remove":
        text = path.read_text()
        kept = [line for line in text.splitlines(keepends=True) if line.rstrip("\n") != rule(tag)]
        if len(kept) != len(text.splitlines(keepends=True)):
            with path.open("r+") as file:  # in place: owner and mode stay the service's
                file.write("".join(kept))
                file.truncate()
            asyncio.run(reload(url))
            print(f"ci: removed from {path}: {rule(tag)}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main(*sys.argv[1:]))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"ci: replication rule: {exc}", file=sys.stderr)
        sys.exit(1)
