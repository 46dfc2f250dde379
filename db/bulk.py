"""Bulk load of a realistic dataset with COPY, for benchmarks and query plans.

Tenants of skewed sizes (a few large, many small), members, projects, task trees (subtasks
up to four levels), unassigned tasks, comments, and dates spread over two years, audit rows
included so that the monthly audit partitions fill. Deterministic for a given ``seed``.

COPY FROM is refused on tables with row-level security, except to a role that bypasses it:
the load runs as ``taskql_maintenance`` (the owner becomes it). The audit triggers are
disabled for the load (the loader writes the audit rows itself, with their historical
dates) and enabled again after it: run this on a database being prepared, not a live one.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from db.passwords import hash_password

AUDITED = ("organizations", "organization_members", "projects", "tasks", "task_comments")
STATUSES = ("todo", "in_progress", "blocked", "done", "cancelled")
STATUS_WEIGHTS = (35, 20, 5, 35, 5)
WORDS = [
    "api",
    "billing",
    "cache",
    "deploy",
    "design",
    "docs",
    "email",
    "export",
    "fix",
    "import",
    "invoice",
    "login",
    "mobile",
    "onboarding",
    "payment",
    "performance",
    "refactor",
    "release",
    "report",
    "search",
    "security",
    "signup",
    "sync",
    "test",
    "ui",
    "upload",
    "webhook",
    "dashboard",
    "migration",
    "index",
    "backup",
    "alert",
    "audit",
]
SEED_PASSWORD = "taskql-seed"


@dataclass(frozen=True)
class SeedSpec:
    orgs: int = 20
    users: int = 2000
    projects_per_org: int = 10
    tasks_per_project: int = 5000
    comments_per_task: int = 3
    seed: int = 42

    @property
    def tasks(self) -> int:
        return self.orgs * self.projects_per_org * self.tasks_per_project


@dataclass
class SeedResult:
    counts: dict[str, int]
    seconds: float
    #: Slug of the largest and of the smallest organization, for plans and benchmarks.
    largest: str
    smallest: str


class Ids:
    """Deterministic UUIDv7s: the given time, then random bits from the seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def at(self, moment: datetime) -> uuid.UUID:
        value = int(moment.timestamp() * 1000) << 80 | self.rng.getrandbits(80)
        value = value & ~(0xF << 76) | 0x7 << 76
        value = value & ~(0x3 << 62) | 0x2 << 62
        return uuid.UUID(int=value)


def _weights(count: int, rng: random.Random) -> list[float]:
    """Zipf-like tenant sizes, normalized to average 1."""
    raw = [1 / (rank + 1) ** 0.9 for rank in range(count)]
    rng.shuffle(raw)
    mean = sum(raw) / count
    return [w / mean for w in raw]


def _title(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))).capitalize()


class Loader:
    def __init__(self, connection: asyncpg.Connection, spec: SeedSpec, progress: Progress) -> None:
        self.connection = connection
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.ids = Ids(self.rng)
        self.progress = progress
        self.now = datetime(2026, 11, 1, tzinfo=UTC)
        self.start = self.now - timedelta(days=730)
        self.counts: dict[str, int] = {}

    def moment(self, after: datetime | None = None) -> datetime:
        low = after or self.start
        span = (self.now - low).total_seconds()
        return low + timedelta(seconds=self.rng.random() * span)

    async def copy(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if rows:
            await self.connection.copy_records_to_table(table, records=rows, columns=list(columns))
            self.counts[table] = self.counts.get(table, 0) + len(rows)

    async def run(self) -> tuple[str, str]:
        spec, rng = self.spec, self.rng
        password_hash = hash_password(SEED_PASSWORD)
        users = []
        for i in range(spec.users):
            created = self.moment()
            users.append(
                (
                    self.ids.at(created),
                    f"user{i}@seed.test",
                    f"User {i}",
                    password_hash,
                    created,
                    created,
                )
            )
        await self.copy(
            "users",
            ("id", "email", "display_name", "password_hash", "created_at", "updated_at"),
            users,
        )
        user_ids = [u[0] for u in users]

        weights = _weights(spec.orgs, rng)
        tasks_task = self.progress.add_task("tasks", total=spec.tasks)
        sizes: dict[str, int] = {}
        for index in range(spec.orgs):
            slug = f"seed-{index:04d}"
            member_count = max(3, min(len(user_ids), int(12 * weights[index] ** 1.3)))
            members = rng.sample(user_ids, member_count)
            tasks_here = await self.organization(index, slug, members, weights[index])
            sizes[slug] = tasks_here
            self.progress.advance(tasks_task, tasks_here)
        # Tenant sizes are random around the nominal total: end on the real count.
        self.progress.update(tasks_task, total=sum(sizes.values()))
        largest = max(sizes, key=lambda s: sizes[s])
        smallest = min(sizes, key=lambda s: sizes[s])
        return largest, smallest

    async def organization(
        self, index: int, slug: str, members: list[uuid.UUID], weight: float
    ) -> int:
        spec, rng = self.spec, self.rng
        created = self.start + timedelta(days=rng.random() * 30)
        org_id = self.ids.at(created)
        audit: list[tuple[Any, ...]] = []
        await self.copy(
            "organizations",
            ("id", "name", "slug", "created_at", "updated_at"),
            [(org_id, f"Seed organization {index}", slug, created, created)],
        )
        roles = ["owner"] + [
            rng.choices(("admin", "member", "viewer"), (1, 6, 2))[0] for _ in members[1:]
        ]
        await self.copy(
            "organization_members",
            ("id", "organization_id", "user_id", "role", "created_at", "updated_at"),
            [
                (self.ids.at(created), org_id, u, r, created, created)
                for u, r in zip(members, roles, strict=True)
            ],
        )
        writers = [u for u, r in zip(members, roles, strict=True) if r != "viewer"]
        total = 0
        for p in range(spec.projects_per_org):
            p_created = self.moment(created)
            project_id = self.ids.at(p_created)
            await self.copy(
                "projects",
                (
                    "id",
                    "organization_id",
                    "name",
                    "description",
                    "status",
                    "created_by",
                    "created_at",
                    "updated_at",
                ),
                [
                    (
                        project_id,
                        org_id,
                        f"{_title(rng)} {p}",
                        _title(rng),
                        rng.choice(("active", "active", "planned", "on_hold")),
                        members[0],
                        p_created,
                        p_created,
                    )
                ],
            )
            count = max(1, int(spec.tasks_per_project * weight * rng.uniform(0.5, 1.5)))
            total += await self.project(
                org_id, project_id, p_created, count, writers, members, audit
            )
        await self.copy(
            "audit_logs",
            (
                "organization_id",
                "actor_id",
                "action",
                "entity_type",
                "entity_id",
                "changes",
                "created_at",
            ),
            audit,
        )
        return total

    async def project(
        self,
        org_id: uuid.UUID,
        project_id: uuid.UUID,
        created: datetime,
        count: int,
        writers: list[uuid.UUID],
        members: list[uuid.UUID],
        audit: list[tuple[Any, ...]],
    ) -> int:
        rng = self.rng
        moments = sorted(self.moment(created) for _ in range(count))
        tasks: list[tuple[Any, ...]] = []
        depth: list[int] = []
        comments: list[tuple[Any, ...]] = []
        for i, moment in enumerate(moments):
            task_id = self.ids.at(moment)
            parent = None
            level = 0
            if i and rng.random() < 0.35:
                j = rng.randrange(max(0, i - 200), i)
                if depth[j] < 3:
                    parent, level = tasks[j][0], depth[j] + 1
            status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
            updated = min(self.now, moment + timedelta(days=rng.random() * 60))
            tasks.append(
                (
                    task_id,
                    org_id,
                    project_id,
                    parent,
                    _title(rng),
                    None,
                    status,
                    rng.randrange(5),
                    rng.choice(writers) if rng.random() < 0.75 else None,
                    rng.choice(writers),
                    moment + timedelta(days=rng.randint(1, 90)) if rng.random() < 0.6 else None,
                    updated if status == "done" else None,
                    moment,
                    updated,
                )
            )
            depth.append(level)
            audit.append(
                (
                    org_id,
                    tasks[-1][9],
                    "insert",
                    "tasks",
                    task_id,
                    json.dumps({"after": {"title": tasks[-1][4]}}),
                    moment,
                )
            )
            for _ in range(self._poisson(self.spec.comments_per_task)):
                c_moment = min(self.now, moment + timedelta(days=rng.random() * 30))
                comments.append(
                    (
                        self.ids.at(c_moment),
                        org_id,
                        task_id,
                        rng.choice(members),
                        f"{_title(rng)}.",
                        c_moment,
                        c_moment,
                    )
                )
        await self.copy(
            "tasks",
            (
                "id",
                "organization_id",
                "project_id",
                "parent_task_id",
                "title",
                "description",
                "status",
                "priority",
                "assignee_id",
                "created_by",
                "due_date",
                "completed_at",
                "created_at",
                "updated_at",
            ),
            tasks,
        )
        await self.copy(
            "task_comments",
            (
                "id",
                "organization_id",
                "task_id",
                "author_id",
                "content",
                "created_at",
                "updated_at",
            ),
            comments,
        )
        return len(tasks)

    def _poisson(self, mean: float) -> int:
        """Knuth's method; small means only."""
        limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1


#: Tables whose secondary indexes (those behind no constraint) are dropped for the load and
#: built again after it: one sorted build is several times cheaper than maintaining the
#: index row by row (two GIN indexes on tasks). Indexes behind primary keys and unique
#: constraints stay: foreign keys are checked against them during the load.
REBUILT = ("tasks", "task_comments")


async def secondary_indexes(
    connection: asyncpg.Connection, tables: Sequence[str]
) -> list[tuple[str, str]]:
    """(name, definition) of the indexes of ``tables`` that back no constraint."""
    rows = await connection.fetch(
        """
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
        FROM pg_index AS i
        WHERE i.indrelid = ANY (SELECT to_regclass(t) FROM unnest($1::text[]) AS t)
          AND NOT EXISTS (SELECT FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
        ORDER BY 1
        """,
        list(tables),
    )
    return [(r["name"], r["definition"]) for r in rows]


async def rebuild_indexes(
    connection: asyncpg.Connection, indexes: Sequence[tuple[str, str]], show_progress: bool
) -> None:
    """Build ``indexes`` again from their definitions (with memory for a sorted build)."""
    await connection.execute("SET maintenance_work_mem = '512MB'")
    with Progress(
        TextColumn("indexes"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show_progress,
    ) as progress:
        task = progress.add_task("indexes", total=len(indexes))
        for _, definition in indexes:
            await connection.execute(definition)
            progress.advance(task)
    await connection.execute("RESET maintenance_work_mem")


async def seed(owner_dsn: str, spec: SeedSpec, show_progress: bool = True) -> SeedResult:
    """Load ``spec`` into the (migrated) database at ``owner_dsn``."""
    started = time.monotonic()
    connection = await asyncpg.connect(owner_dsn)
    try:
        await connection.execute(
            "SELECT audit_logs_create_partitions(27, (date '2026-11-01' - interval '25 months')::date)"
        )
        for table in AUDITED:
            await connection.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        indexes = await secondary_indexes(connection, REBUILT)
        for name, _ in indexes:
            await connection.execute(f"DROP INDEX {name}")
        try:
            await connection.execute("SET ROLE taskql_maintenance")
            with Progress(
                TextColumn("seed"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                disable=not show_progress,
            ) as progress:
                loader = Loader(connection, spec, progress)
                largest, smallest = await loader.run()
        finally:
            await connection.execute("RESET ROLE")
            await rebuild_indexes(connection, indexes, show_progress)
            for table in AUDITED:
                await connection.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        # The counting triggers were off too: the maintained task counts (migration 27).
        await connection.execute(
            "SET ROLE taskql_maintenance; SELECT task_counts_recompute(); RESET ROLE"
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return SeedResult(loader.counts, time.monotonic() - started, largest, smallest)
