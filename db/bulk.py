"""Bulk load of a realistic dataset with COPY, for benchmarks and query plans.

Tenants of skewed sizes (a few large, many small), members, projects, task trees (subtasks
up to four levels), unassigned tasks, comments, and dates spread over two years, audit rows
included so that the monthly audit partitions fill; users and, optionally, live sessions.
Deterministic for a given ``seed``, whatever the number of worker processes (``jobs``):
each project draws from a random stream of its own (``Random(f"{seed}/project/{org}/{p}")``),
each organization from its own, and users and sessions are pure functions of their index.
The users and the projects are loaded by ``jobs`` processes, each with its own connection
(binary COPY through asyncpg), largest projects first; organizations and members, which
the projects reference, by the coordinating connection in between.

COPY FROM is refused on tables with row-level security, except to a role that bypasses it:
the load runs as ``taskql_maintenance`` (the owner becomes it). The audit triggers are
disabled for the load (the loader writes the audit rows itself, with their historical
dates) and enabled again after it: run this on a database being prepared, not a live one.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import multiprocessing
import random
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
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


#: The dataset's clock: two years of history ending here (fixed, so a seed gives the same rows).
NOW = datetime(2026, 11, 1, tzinfo=UTC)
START = NOW - timedelta(days=730)
#: Seeded sessions expire long after NOW, so that they authenticate (benchmarks log in by token).
SESSION_LIFETIME = timedelta(days=1095)
#: Distinct titles per seed: tasks, projects and comments draw from this pool (one draw per
#: row instead of two to six word choices), same word frequencies as drawing them one by one.
TITLE_POOL = 65_536
#: Tasks per COPY batch (tasks, their comments and audit rows): bounds a worker's memory.
BATCH_TASKS = 20_000
USERS_PER_UNIT = 50_000


@dataclass(frozen=True)
class SeedSpec:
    orgs: int = 20
    users: int = 2000
    projects_per_org: int = 10
    tasks_per_project: int = 5000
    comments_per_task: int = 3
    seed: int = 42
    #: Tenant sizes: the tenant of rank r gets a share proportional to 1 / r ** skew.
    skew: float = 0.9
    #: If set, the skew exponent is solved so that the largest tenant's expected share of the
    #: tasks is this (e.g. 0.25: 2.5M of 10M); ``skew`` is then ignored.
    largest_share: float | None = None
    #: Live sessions per user (token of session k of user i: ``session_token(seed, i, k)``).
    sessions_per_user: int = 0
    #: Worker processes (each its own connection). Does not change the data: every project
    #: and every block of users has its own random stream, derived from ``seed``.
    jobs: int = field(default=1, compare=False)

    @property
    def tasks(self) -> int:
        return self.orgs * self.projects_per_org * self.tasks_per_project

    @property
    def exponent(self) -> float:
        if self.largest_share is None:
            return self.skew
        return solve_exponent(self.orgs, self.largest_share)


@dataclass
class SeedResult:
    counts: dict[str, int]
    seconds: float
    #: Slug of the largest and of the smallest organization, for plans and benchmarks.
    largest: str
    smallest: str


def _uuid7(milliseconds: int, bits: int) -> uuid.UUID:
    value = milliseconds << 80 | (bits & ((1 << 80) - 1))
    value = value & ~(0xF << 76) | 0x7 << 76
    value = value & ~(0x3 << 62) | 0x2 << 62
    return uuid.UUID(int=value)


class Ids:
    """Deterministic UUIDv7s: the given time, then random bits from the seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def at(self, moment: datetime) -> uuid.UUID:
        return _uuid7(int(moment.timestamp() * 1000), self.rng.getrandbits(80))


def share_of_largest(count: int, exponent: float) -> float:
    total = math.fsum(math.pow(rank, -exponent) for rank in range(1, count + 1))
    return 1.0 / total


def solve_exponent(count: int, share: float) -> float:
    """The Zipf exponent giving the largest of ``count`` tenants ``share`` of the total."""
    if count <= 1 or share <= 1 / count:
        return 0.0
    low, high = 0.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        if share_of_largest(count, middle) < share:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _weights(count: int, rng: random.Random, exponent: float = 0.9) -> list[float]:
    """Zipf-like tenant sizes, normalized to average 1."""
    raw = [1 / (rank + 1) ** exponent for rank in range(count)]
    rng.shuffle(raw)
    mean = sum(raw) / count
    return [w / mean for w in raw]


def _title(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))).capitalize()


@functools.lru_cache(maxsize=4)
def _pools(seed: int) -> tuple[list[str], list[str], list[str]]:
    """Titles, comment texts and the audit ``changes`` of a task with each title."""
    rng = random.Random(f"{seed}/titles")
    titles = [_title(rng) for _ in range(TITLE_POOL)]
    return (
        titles,
        [f"{t}." for t in titles],
        [json.dumps({"after": {"title": t}}) for t in titles],
    )


def _hash(*parts: object) -> int:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=16).digest()
    return int.from_bytes(digest, "big")


_SPAN_MS = int((NOW - START).total_seconds() * 1000)
_START_MS = int(START.timestamp() * 1000)


def user_row(seed: int, index: int, password_hash: str) -> tuple[Any, ...]:
    """User ``index``: a pure function of the seed and the index (no shared random stream), so
    that the organizations' members are known without generating every user."""
    n = _hash(seed, "user", index)
    milliseconds = _START_MS + (n >> 64) % _SPAN_MS
    created = datetime.fromtimestamp(milliseconds / 1000, UTC)
    email = f"user{index}@seed.test"
    return (
        _uuid7(milliseconds, n),
        email,
        email.lower(),
        f"User {index}",
        password_hash,
        created,
        created,
    )


def user_id(seed: int, index: int) -> uuid.UUID:
    return user_row(seed, index, "")[0]  # type: ignore[no-any-return]


def session_token(seed: int, user_index: int, k: int) -> str:
    """The bearer token of seeded session ``k`` of user ``user_index`` (benchmarks use it)."""
    return f"seed-{seed}-{user_index}-{k}"


USER_COLUMNS = (
    "id",
    "email",
    "email_key",
    "display_name",
    "password_hash",
    "created_at",
    "updated_at",
)
SESSION_COLUMNS = ("id", "user_id", "token_hash", "created_at", "expires_at", "user_agent")
PROJECT_COLUMNS = (
    "id",
    "organization_id",
    "name",
    "description",
    "status",
    "created_by",
    "created_at",
    "updated_at",
)
TASK_COLUMNS = (
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
)
COMMENT_COLUMNS = (
    "id",
    "organization_id",
    "task_id",
    "author_id",
    "content",
    "created_at",
    "updated_at",
)
AUDIT_COLUMNS = (
    "organization_id",
    "actor_id",
    "action",
    "entity_type",
    "entity_id",
    "changes",
    "created_at",
)

Counts = dict[str, int]


async def _copy(
    connection: asyncpg.Connection,
    counts: Counts,
    table: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
) -> None:
    if rows:
        await connection.copy_records_to_table(table, records=rows, columns=list(columns))
        counts[table] = counts.get(table, 0) + len(rows)


@dataclass(frozen=True)
class Users:
    """Users ``start`` to ``stop`` (exclusive)."""

    seed: int
    start: int
    stop: int
    password_hash: str

    async def load(self, connection: asyncpg.Connection) -> Counts:
        counts: Counts = {}
        rows = [user_row(self.seed, i, self.password_hash) for i in range(self.start, self.stop)]
        await _copy(connection, counts, "users", USER_COLUMNS, rows)
        return counts


@dataclass(frozen=True)
class Sessions:
    """``per_user`` live sessions of each of users ``start`` to ``stop``."""

    seed: int
    start: int
    stop: int
    per_user: int

    async def load(self, connection: asyncpg.Connection) -> Counts:
        counts: Counts = {}
        rows = []
        for i in range(self.start, self.stop):
            user = user_row(self.seed, i, "")
            low = user[5].timestamp()
            for k in range(self.per_user):
                n = _hash(self.seed, "session", i, k)
                created = datetime.fromtimestamp(
                    low + (n >> 80) % 1_000_000 / 1_000_000 * (NOW.timestamp() - low), UTC
                )
                rows.append(
                    (
                        _uuid7(int(created.timestamp() * 1000), n),
                        user[0],
                        hashlib.sha256(session_token(self.seed, i, k).encode()).digest(),
                        created,
                        NOW + SESSION_LIFETIME,
                        "taskql-seed",
                    )
                )
        await _copy(connection, counts, "sessions", SESSION_COLUMNS, rows)
        return counts


@dataclass(frozen=True)
class Organization:
    """An organization and its members (loaded by the coordinating connection, before the
    projects that reference them)."""

    index: int
    slug: str
    id: uuid.UUID
    created: datetime
    members: tuple[uuid.UUID, ...]
    roles: tuple[str, ...]
    member_ids: tuple[uuid.UUID, ...]
    weight: float

    @property
    def writers(self) -> tuple[uuid.UUID, ...]:
        return tuple(u for u, r in zip(self.members, self.roles, strict=True) if r != "viewer")

    async def load(self, connection: asyncpg.Connection) -> Counts:
        counts: Counts = {}
        await _copy(
            connection,
            counts,
            "organizations",
            ("id", "name", "slug", "created_at", "updated_at"),
            [(self.id, f"Seed organization {self.index}", self.slug, self.created, self.created)],
        )
        await _copy(
            connection,
            counts,
            "organization_members",
            ("id", "organization_id", "user_id", "role", "created_at", "updated_at"),
            [
                (m, self.id, u, r, self.created, self.created)
                for m, u, r in zip(self.member_ids, self.members, self.roles, strict=True)
            ],
        )
        return counts


def plan_organization(spec: SeedSpec, index: int, weight: float) -> Organization:
    rng = random.Random(f"{spec.seed}/organization/{index}")
    ids = Ids(rng)
    created = START + timedelta(days=rng.random() * 30)
    member_count = max(3, min(spec.users, int(12 * weight**1.3)))
    members = tuple(user_id(spec.seed, i) for i in rng.sample(range(spec.users), member_count))
    roles = ("owner", *rng.choices(("admin", "member", "viewer"), (1, 6, 2), k=member_count - 1))
    return Organization(
        index=index,
        slug=f"seed-{index:04d}",
        id=ids.at(created),
        created=created,
        members=members,
        roles=roles,
        member_ids=tuple(ids.at(created) for _ in members),
        weight=weight,
    )


def _poisson_weights(mean: float) -> tuple[list[int], list[float]]:
    top = int(mean * 4 + 10)
    pmf, p = [], math.exp(-mean)
    for k in range(top + 1):
        pmf.append(p)
        p *= mean / (k + 1)
    return list(range(top + 1)), pmf


@dataclass(frozen=True)
class Project:
    """One project of an organization, its tasks (trees up to four levels), their comments and
    the tasks' audit rows, from a random stream of its own."""

    seed: int
    organization: Organization
    index: int
    tasks_per_project: int
    comments_per_task: float

    @property
    def estimate(self) -> float:
        return self.tasks_per_project * self.organization.weight

    async def load(self, connection: asyncpg.Connection) -> Counts:
        org = self.organization
        rng = random.Random(f"{self.seed}/project/{org.index}/{self.index}")
        ids = Ids(rng)
        titles, contents, changes = _pools(self.seed)
        counts: Counts = {"projects": 0}
        low = org.created.timestamp()
        p_created = datetime.fromtimestamp(low + rng.random() * (NOW.timestamp() - low), UTC)
        project_id = ids.at(p_created)
        await _copy(
            connection,
            counts,
            "projects",
            PROJECT_COLUMNS,
            [
                (
                    project_id,
                    org.id,
                    f"{_title(rng)} {self.index}",
                    _title(rng),
                    rng.choice(("active", "active", "planned", "on_hold")),
                    org.members[0],
                    p_created,
                    p_created,
                )
            ],
        )
        count = max(1, int(self.tasks_per_project * org.weight * rng.uniform(0.5, 1.5)))
        start, now = p_created.timestamp(), NOW.timestamp()
        span = now - start
        stamps = sorted(start + rng.random() * span for _ in range(count))
        writers = list(org.writers)
        members = list(org.members)
        assignee_pool: list[uuid.UUID | None] = [*writers, None]
        assignee_weights = [0.75 / len(writers)] * len(writers) + [0.25]
        due_days: list[int | None] = [*range(1, 91), None]
        due_weights = [0.6 / 90] * 90 + [0.4]
        comment_counts, comment_weights = _poisson_weights(self.comments_per_task)
        task_ids: list[uuid.UUID] = []
        depth: list[int] = []
        day = 86_400.0
        for first in range(0, count, BATCH_TASKS):
            n = min(BATCH_TASKS, count - first)
            title_of = rng.choices(range(TITLE_POOL), k=n)
            statuses = rng.choices(STATUSES, STATUS_WEIGHTS, k=n)
            priorities = rng.choices(range(5), k=n)
            assignees = rng.choices(assignee_pool, assignee_weights, k=n)
            creators = rng.choices(writers, k=n)
            dues = rng.choices(due_days, due_weights, k=n)
            per_task = rng.choices(comment_counts, comment_weights, k=n)
            tasks: list[tuple[Any, ...]] = []
            comments: list[tuple[Any, ...]] = []
            audit: list[tuple[Any, ...]] = []
            for j in range(n):
                i = first + j
                stamp = stamps[i]
                moment = datetime.fromtimestamp(stamp, UTC)
                task_id = _uuid7(int(stamp * 1000), rng.getrandbits(80))
                parent = None
                level = 0
                if i and rng.random() < 0.35:
                    k = rng.randrange(max(0, i - 200), i)
                    if depth[k] < 3:
                        parent, level = task_ids[k], depth[k] + 1
                task_ids.append(task_id)
                depth.append(level)
                status = statuses[j]
                updated = datetime.fromtimestamp(min(now, stamp + rng.random() * 60 * day), UTC)
                due = dues[j]
                title = title_of[j]
                tasks.append(
                    (
                        task_id,
                        org.id,
                        project_id,
                        parent,
                        titles[title],
                        None,
                        status,
                        priorities[j],
                        assignees[j],
                        creators[j],
                        moment + timedelta(days=due) if due is not None else None,
                        updated if status == "done" else None,
                        moment,
                        updated,
                    )
                )
                audit.append(
                    (org.id, creators[j], "insert", "tasks", task_id, changes[title], moment)
                )
                c = per_task[j]
                if c:
                    authors = rng.choices(members, k=c)
                    for author in authors:
                        c_stamp = min(now, stamp + rng.random() * 30 * day)
                        c_moment = datetime.fromtimestamp(c_stamp, UTC)
                        comments.append(
                            (
                                _uuid7(int(c_stamp * 1000), rng.getrandbits(80)),
                                org.id,
                                task_id,
                                author,
                                contents[rng.randrange(TITLE_POOL)],
                                c_moment,
                                c_moment,
                            )
                        )
            await _copy(connection, counts, "tasks", TASK_COLUMNS, tasks)
            await _copy(connection, counts, "task_comments", COMMENT_COLUMNS, comments)
            await _copy(connection, counts, "audit_logs", AUDIT_COLUMNS, audit)
        return counts


Unit = Users | Sessions | Project

# ------------------------------------------------------------------ worker processes

_worker: tuple[asyncio.AbstractEventLoop, asyncpg.Connection] | None = None


async def _connect(dsn: str) -> asyncpg.Connection:
    connection = await asyncpg.connect(dsn)
    await connection.execute("SET ROLE taskql_maintenance")
    await connection.execute("SET synchronous_commit = off")
    return connection


def _start_worker(dsn: str) -> None:
    global _worker
    loop = asyncio.new_event_loop()
    _worker = (loop, loop.run_until_complete(_connect(dsn)))


def _run_in_worker(unit: Unit) -> tuple[Unit, Counts]:
    assert _worker is not None
    loop, connection = _worker
    return unit, loop.run_until_complete(unit.load(connection))


class Loader:
    """Plans the dataset (tenant sizes, members) from ``spec.seed`` and loads it: users, then
    organizations and members, then projects (largest first) and sessions; with
    ``spec.jobs`` > 1 the users, projects and sessions are loaded by worker processes."""

    def __init__(
        self,
        connection: asyncpg.Connection,
        spec: SeedSpec,
        progress: Progress,
        dsn: str | None = None,
    ) -> None:
        self.connection = connection
        self.spec = spec
        self.progress = progress
        self.dsn = dsn
        self.counts: dict[str, int] = {}

    def _add(self, counts: Counts) -> None:
        for table, n in counts.items():
            self.counts[table] = self.counts.get(table, 0) + n

    async def _load(
        self, units: Sequence[Unit], pool: ProcessPoolExecutor | None
    ) -> list[tuple[Unit, Counts]]:
        task = self.progress.add_task("rows", total=len(units))
        done: list[tuple[Unit, Counts]] = []
        if pool is None:
            for unit in units:
                done.append((unit, await unit.load(self.connection)))
                self._add(done[-1][1])
                self.progress.advance(task)
            return done
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(pool, _run_in_worker, unit) for unit in units]
        for future in asyncio.as_completed(futures):
            done.append(await future)
            self._add(done[-1][1])
            self.progress.advance(task)
        return done

    async def run(self) -> tuple[str, str]:
        spec = self.spec
        password_hash = hash_password(SEED_PASSWORD)
        user_units: list[Unit] = [
            Users(spec.seed, start, min(spec.users, start + USERS_PER_UNIT), password_hash)
            for start in range(0, spec.users, USERS_PER_UNIT)
        ]
        weights = _weights(spec.orgs, random.Random(spec.seed), spec.exponent)
        organizations = [plan_organization(spec, i, weights[i]) for i in range(spec.orgs)]
        projects = [
            Project(spec.seed, org, p, spec.tasks_per_project, spec.comments_per_task)
            for org in organizations
            for p in range(spec.projects_per_org)
        ]
        # Largest first: the long units start early and the short ones fill in.
        projects.sort(key=lambda p: -p.estimate)
        sessions: list[Unit] = [
            Sessions(
                spec.seed, start, min(spec.users, start + USERS_PER_UNIT), spec.sessions_per_user
            )
            for start in range(0, spec.users if spec.sessions_per_user else 0, USERS_PER_UNIT)
        ]
        pool = None
        if spec.jobs > 1:
            if self.dsn is None:
                raise ValueError("jobs > 1 needs the database URL for the workers")
            pool = ProcessPoolExecutor(
                spec.jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.dsn,),
            )
        await self.connection.execute("SET synchronous_commit = off")
        try:
            await self._load(user_units, pool)
            for org in organizations:
                self._add(await org.load(self.connection))
            loaded = await self._load([*projects, *sessions], pool)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        sizes = {org.slug: 0 for org in organizations}
        for unit, counts in loaded:
            if isinstance(unit, Project):
                sizes[unit.organization.slug] += counts.get("tasks", 0)
        largest = max(sizes, key=lambda s: sizes[s])
        smallest = min(sizes, key=lambda s: sizes[s])
        return largest, smallest


#: Tables whose secondary indexes (those behind no constraint) are dropped for the load and
#: built again after it: one sorted build is several times cheaper than maintaining the
#: index row by row (two GIN indexes on tasks). Indexes behind primary keys and unique
#: constraints stay: foreign keys are checked against them during the load.
REBUILT = ("tasks", "task_comments", "sessions", "users")


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


async def drop_foreign_keys(
    connection: asyncpg.Connection, tables: Sequence[str]
) -> list[tuple[str, str, str]]:
    """Drop the foreign keys of ``tables`` for the load; returns (table, name, definition).

    Checked row by row, each is a query per row and a KEY SHARE lock on the parent row (the
    project, the member, the user): about half of PostgreSQL's work in the load, and with
    several workers locking the same parents, MultiXacts. Added again after the load, each
    is validated by one join over the table instead."""
    rows = await connection.fetch(
        """
        SELECT c.conrelid::regclass::text AS "table", c.conname AS name,
               pg_get_constraintdef(c.oid) AS definition
        FROM pg_constraint AS c
        WHERE c.contype = 'f'
          AND c.conrelid = ANY (SELECT to_regclass(t) FROM unnest($1::text[]) AS t)
        ORDER BY 1, 2
        """,
        list(tables),
    )
    keys = [(r["table"], r["name"], r["definition"]) for r in rows]
    for table, name, _ in keys:
        await connection.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    return keys


async def restore_foreign_keys(
    connection: asyncpg.Connection, keys: Sequence[tuple[str, str, str]]
) -> None:
    """Add the foreign keys dropped by ``drop_foreign_keys`` again, validated."""
    await connection.execute("SET maintenance_work_mem = '1GB'")
    for table, name, definition in keys:
        await connection.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    await connection.execute("RESET maintenance_work_mem")


async def rebuild_indexes(
    connection: asyncpg.Connection, indexes: Sequence[tuple[str, str]], show_progress: bool
) -> None:
    """Build ``indexes`` again from their definitions (with memory for a sorted build)."""
    # A sorted build per index, with a parallel worker beside the leader (the builds run one
    # after another: two at once would just share the same two cores).
    await connection.execute("SET maintenance_work_mem = '1GB'")
    await connection.execute("SET max_parallel_maintenance_workers = 2")
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
    await connection.execute("RESET max_parallel_maintenance_workers")


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
        keys = await drop_foreign_keys(connection, REBUILT)
        try:
            await connection.execute("SET ROLE taskql_maintenance")
            with Progress(
                TextColumn("seed"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                disable=not show_progress,
            ) as progress:
                loader = Loader(connection, spec, progress, owner_dsn)
                largest, smallest = await loader.run()
        finally:
            await connection.execute("RESET ROLE")
            await rebuild_indexes(connection, indexes, show_progress)
            await restore_foreign_keys(connection, keys)
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
