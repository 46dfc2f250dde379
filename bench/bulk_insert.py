"""COPY against row-by-row INSERT and multi-row INSERT, on the same task rows.

The brief claims "bulk insert with COPY, 100x faster than individual INSERTs" (its example
is in fact a multi-row INSERT). This measures all three on one table, same rows, same
indexes and triggers, in one run, and prints the ratios.

    .venv/bin/python bench/bulk_insert.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import asyncpg

from db.bulk import Ids
from db.engine import DB
from db.migrate import runner
from db.settings import get_database_settings
from db.targets import scratch_database

COLUMNS = (
    "id",
    "organization_id",
    "project_id",
    "title",
    "status",
    "priority",
    "created_at",
    "updated_at",
)
BATCH = 1000  # 8 columns x 1000 rows = 8,000 parameters, under the 65,535 limit


async def main(count: int) -> None:
    settings = get_database_settings()
    targets = await scratch_database("taskql_bench_copy", settings)
    DB.configure(targets.require_owner(), settings)
    await runner.forwards()
    connection = await asyncpg.connect(targets.require_owner())
    rng = random.Random(1)
    ids = Ids(rng)
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    org, user = ids.at(now), ids.at(now)
    await connection.execute("SET ROLE taskql_maintenance")
    await connection.execute(
        "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, 'b@copy.test', 'B', 'x')",
        user,
    )
    await connection.execute(
        "INSERT INTO organizations (id, name, slug) VALUES ($1, 'Copy', 'copy')", org
    )

    def rows(project: Any) -> list[tuple[Any, ...]]:
        return [
            (ids.at(now), org, project, f"Task {i} {rng.random():.6f}", "todo", i % 5, now, now)
            for i in range(count)
        ]

    async def project() -> Any:
        project_id = ids.at(now)
        await connection.execute(
            "INSERT INTO projects (id, organization_id, name) VALUES ($1, $2, 'P')", project_id, org
        )
        return project_id

    async def row_by_row(data: list[tuple[Any, ...]]) -> None:
        sql = f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))})"
        async with connection.transaction():
            for row in data:
                await connection.execute(sql, *row)

    async def multi_row(data: list[tuple[Any, ...]]) -> None:
        width = len(COLUMNS)
        async with connection.transaction():
            for start in range(0, len(data), BATCH):
                chunk = data[start : start + BATCH]
                values = ", ".join(
                    "(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
                    for r in range(len(chunk))
                )
                await connection.execute(
                    f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES {values}",
                    *[v for row in chunk for v in row],
                )

    async def copy(data: list[tuple[Any, ...]]) -> None:
        await connection.copy_records_to_table("tasks", records=data, columns=list(COLUMNS))

    results = {}
    for name, method in (
        ("row-by-row INSERT", row_by_row),
        ("multi-row INSERT", multi_row),
        ("COPY", copy),
    ):
        data = rows(await project())
        started = time.perf_counter()
        await method(data)
        results[name] = time.perf_counter() - started
    print(f"{count:,} task rows each (indexes, generated search vector and audit trigger on)\n")
    print("| method              |  seconds |     rows/s | COPY is x faster |")
    print("|---------------------|---------:|-----------:|-----------------:|")
    for name, seconds in results.items():
        print(
            f"| {name:19} | {seconds:8.2f} | {count / seconds:10,.0f} | {seconds / results['COPY']:16.1f} |"
        )
    await connection.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().rows))
