"""The query-plan report: every hot statement the API issues, planned and timed by
PostgreSQL on a large dataset, as the server role with a tenant set (so with RLS).

The statements are not copies: the API's own query functions (``db.queries``) run through
an executor that first runs each statement under ``EXPLAIN (ANALYZE, BUFFERS, FORMAT
JSON)`` with the same parameters. A sequential scan of a large table, or a statement over
its budget, fails the report.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from db.executor import Executor
from db.queries import audit, comments, organizations, projects, search, tasks, users
from db.queries.connections import count_by_parent, page_by_parent
from db.sql import Order, Page
from db.tenancy import SET_CONTEXT_SQL, TenantContext

LARGE_TABLES = ("tasks", "task_comments", "audit_logs")
#: Log-in and authentication read users and sessions by one key (1M users and 5M sessions
#: at issue 17's scale): a sequential scan of either fails them once the table holds
#: KEYED_LARGE rows or more (migration 28 made log-in's e-mail an index condition under RLS).
#: Below that (the default dataset seeds 2,000 users and no sessions) a scan of a few pages
#: is what the planner should choose.
KEYED_TABLES = ("users", "sessions")
KEYED_LARGE = 10_000
DEFAULT_BUDGET_MS = 50.0


@dataclass
class Plan:
    statement: str
    tenant: str
    sql: str
    milliseconds: float
    rows: int
    nodes: list[str]
    indexes: list[str]
    seq_scans: list[str]
    shared_hit: int
    shared_read: int
    budget_ms: float

    @property
    def problems(self) -> list[str]:
        found = [f"sequential scan of {t}" for t in self.seq_scans]
        if self.milliseconds > self.budget_ms:
            found.append(f"{self.milliseconds:.1f} ms over its {self.budget_ms:.0f} ms budget")
        return found


def _walk(node: dict[str, Any], visit: Callable[[dict[str, Any]], None]) -> None:
    visit(node)
    for child in node.get("Plans", []):
        _walk(child, visit)


def summarize(
    statement: str,
    tenant: str,
    sql: str,
    explained: list[dict[str, Any]],
    budget: float,
    large: Sequence[str] = LARGE_TABLES,
) -> Plan:
    top = explained[0]
    nodes: list[str] = []
    indexes: list[str] = []
    seq_scans: list[str] = []

    def visit(node: dict[str, Any]) -> None:
        kind = node["Node Type"]
        nodes.append(kind)
        if "Index Name" in node:
            indexes.append(node["Index Name"])
        relation = node.get("Relation Name", "")
        if kind == "Seq Scan" and (relation in large or relation.startswith("audit_logs_")):
            seq_scans.append(relation)

    _walk(top["Plan"], visit)
    return Plan(
        statement=statement,
        tenant=tenant,
        sql=" ".join(sql.split()),
        milliseconds=top["Execution Time"] + top.get("Planning Time", 0.0),
        rows=top["Plan"].get("Actual Rows", 0),
        nodes=nodes,
        indexes=sorted(set(indexes)),
        seq_scans=sorted(set(seq_scans)),
        shared_hit=top["Plan"].get("Shared Hit Blocks", 0),
        shared_read=top["Plan"].get("Shared Read Blocks", 0),
        budget_ms=budget,
    )


class ExplainingExecutor(Executor):
    """Runs every statement twice: under EXPLAIN ANALYZE (recorded), then for real."""

    def __init__(self, connection: asyncpg.Connection, tenant: str) -> None:
        super().__init__(connection)
        self.connection = connection
        self.tenant = tenant
        self.plans: list[Plan] = []
        self.current: tuple[str, float] | None = None

    async def _explain(self, sql: str, args: tuple[Any, ...]) -> None:
        if self.current is None or sql.lstrip().upper().startswith(("SELECT SET_CONFIG", "SET ")):
            return
        raw = await self.connection.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args
        )
        name, budget = self.current
        self.plans.append(summarize(name, self.tenant, sql, json.loads(raw), budget))

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        await self._explain(sql, args)
        return await super().fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        await self._explain(sql, args)
        return await super().fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        await self._explain(sql, args)
        return await super().fetchval(sql, *args)


@dataclass
class Sample:
    """Representative ids of one tenant, found by the maintenance role."""

    label: str
    organization_id: UUID
    slug: str
    user_id: UUID
    email: str
    project_id: UUID
    task_ids: list[UUID] = field(default_factory=list)
    deep_task_id: UUID | None = None
    tasks_in_project: int = 0


async def find_sample(owner: asyncpg.Connection, slug: str, label: str) -> Sample:
    async with owner.transaction():
        await owner.execute("SET LOCAL ROLE taskql_maintenance")
        org = await owner.fetchrow("SELECT id FROM organizations WHERE slug = $1", slug)
        if org is None:
            raise LookupError(f"no organization {slug!r}: seed the database first (taskql seed)")
        org_id = org["id"]
        member = await owner.fetchrow(
            "SELECT u.id, u.email FROM organization_members m JOIN users u ON u.id = m.user_id "
            "WHERE m.organization_id = $1 AND m.role = 'owner'",
            org_id,
        )
        project = await owner.fetchrow(
            "SELECT project_id, count(*) AS n FROM tasks WHERE organization_id = $1 "
            "GROUP BY project_id ORDER BY n DESC LIMIT 1",
            org_id,
        )
        task_ids = [
            r["id"]
            for r in await owner.fetch(
                "SELECT id FROM tasks WHERE organization_id = $1 AND project_id = $2 ORDER BY created_at LIMIT 50",
                org_id,
                project["project_id"],
            )
        ]
        deep = await owner.fetchval(
            "SELECT c.id FROM tasks c JOIN tasks p ON p.organization_id = c.organization_id AND p.id = c.parent_task_id "
            "WHERE c.organization_id = $1 AND p.parent_task_id IS NOT NULL LIMIT 1",
            org_id,
        )
    return Sample(
        label,
        org_id,
        slug,
        member["id"],
        member["email"],
        project["project_id"],
        task_ids,
        deep,
        project["n"],
    )


async def tenant_task_counts(owner: asyncpg.Connection) -> list[tuple[str, int]]:
    """Every organization with tasks and its task count, the most tasks first."""
    async with owner.transaction():
        await owner.execute("SET LOCAL ROLE taskql_maintenance")
        rows = await owner.fetch(
            "SELECT o.slug, count(t.id) AS n FROM organizations o JOIN tasks t ON t.organization_id = o.id "
            "GROUP BY o.slug ORDER BY n DESC, o.slug"
        )
    if not rows:
        raise LookupError("no tasks: seed the database first (taskql seed)")
    return [(r["slug"], int(r["n"])) for r in rows]


async def tenant_slugs(owner: asyncpg.Connection) -> tuple[str, str]:
    """The organizations with the most and the fewest tasks."""
    counts = await tenant_task_counts(owner)
    return counts[0][0], counts[-1][0]


async def hot_paths(ex: ExplainingExecutor, s: Sample) -> None:
    """Every statement of the API's hot paths, with the parameters a request would send."""

    async def run(
        name: str, call: Callable[[], Awaitable[Any]], budget: float = DEFAULT_BUDGET_MS
    ) -> Any:
        ex.current = (name, budget)
        try:
            return await call()
        finally:
            ex.current = None

    org, ids = s.organization_id, s.task_ids
    for key, order in tasks.ORDERS.items():
        for descending in (False, True):
            page = Page(50, Order(order.key, order.type, descending))
            label = f"project tasks, first 50, {key} {'DESC' if descending else 'ASC'}"
            rows = await run(
                label,
                functools.partial(
                    page_by_parent, ex, tasks.PROJECT_TASKS, org, [s.project_id], page
                ),
            )
    last = rows[s.project_id][-1]
    after = Page(50, tasks.ORDERS["CREATED_AT"], (last["_key"], last["id"]))
    await run(
        "project tasks, next page (after cursor)",
        lambda: page_by_parent(ex, tasks.PROJECT_TASKS, org, [s.project_id], after),
    )
    first = Page(50, tasks.ORDERS["CREATED_AT"])
    filters = {
        "status in (todo, in_progress)": tasks.TaskFilter(statuses=("todo", "in_progress")),
        "assignee": tasks.TaskFilter(assignee_id=s.user_id),
        "priority 3..4": tasks.TaskFilter(priority_min=3, priority_max=4),
        "due before / after": tasks.TaskFilter(
            due_after=datetime(2025, 1, 1, tzinfo=UTC), due_before=datetime(2025, 6, 1, tzinfo=UTC)
        ),
        "root only": tasks.TaskFilter(root_only=True),
        "full-text search": tasks.TaskFilter(search="billing export"),
    }
    for label, where in filters.items():
        call = functools.partial(
            page_by_parent, ex, tasks.PROJECT_TASKS, org, [s.project_id], first, where
        )
        await run(f"project tasks, filter {label}", call, 100)
    await run(
        "project tasks, totalCount",
        lambda: count_by_parent(ex, tasks.PROJECT_TASKS, org, [s.project_id]),
        200,
    )
    await run("task counts by status", lambda: tasks.counts_by_status(ex, org, [s.project_id]), 200)
    await run("loader: tasks by id (50)", lambda: tasks.by_ids(ex, org, ids))
    await run("loader: users by id", lambda: users.by_ids(ex, [s.user_id]))
    await run("loader: projects by id", lambda: projects.by_ids(ex, org, [s.project_id]))
    await run("loader: organizations by id", lambda: organizations.by_ids(ex, [org]))
    await run(
        "loader: comments of 50 tasks, first 3 each",
        lambda: page_by_parent(
            ex, comments.TASK_COMMENTS, org, ids, Page(3, comments.OLDEST_FIRST), comments.live
        ),
    )
    await run(
        "loader: subtasks of 50 tasks, first 5 each",
        lambda: page_by_parent(ex, tasks.SUBTASKS, org, ids, Page(5, tasks.ORDERS["CREATED_AT"])),
    )
    await run(
        "loader: comment counts of 50 tasks",
        lambda: count_by_parent(ex, comments.TASK_COMMENTS, org, ids, comments.live),
    )
    await run(
        "loader: ancestors of 50 tasks",
        lambda: tasks.ancestors(ex, org, [*ids, *([s.deep_task_id] if s.deep_task_id else [])]),
    )
    await run(
        "organization members, first 20",
        lambda: page_by_parent(
            ex, organizations.MEMBERS, org, [org], Page(20, Order("t.created_at", "timestamptz"))
        ),
    )
    await run(
        "organization projects, first 20",
        lambda: page_by_parent(
            ex,
            projects.PROJECTS,
            org,
            [org],
            Page(20, Order("t.created_at", "timestamptz", True)),
            projects.ProjectFilter(),
        ),
    )
    await run(
        "viewer memberships (no tenant scope)",
        lambda: page_by_parent(
            ex,
            organizations.MEMBERSHIPS,
            None,
            [s.user_id],
            Page(20, Order("t.created_at", "timestamptz")),
        ),
    )
    await run(
        "search (full text + trigram), first 20",
        lambda: search.search(ex, org, "billing exprot", 20, None),
        300,
    )
    await run(
        "audit log page, newest first",
        lambda: page_by_parent(
            ex,
            audit.BY_ORGANIZATION,
            org,
            [org],
            Page(50, audit.NEWEST_FIRST),
            audit.EntityTypeFilter(None),
        ),
        100,
    )
    await run(
        "task history (audit by entity)",
        lambda: page_by_parent(
            ex,
            audit.BY_ENTITY,
            org,
            [ids[0]],
            Page(20, audit.NEWEST_FIRST),
            audit.EntityTypeFilter("tasks"),
        ),
    )
    await run(
        "membership of a user in a tenant", lambda: organizations.membership(ex, org, s.user_id)
    )


async def log_in_and_authenticate(connection: asyncpg.Connection, s: Sample) -> list[Plan]:
    """Log-in's lookup and the two statements inside app_authenticate, with the settings
    they run under."""
    plans = []
    statements = [
        (
            "log-in: user by e-mail",
            "app.login_email",
            s.email.upper(),  # as typed: log-in ignores case
            users.LOGIN_CANDIDATE_SQL,
            (s.email.upper(),),
        ),
        (
            "authenticate: session by token hash",
            "app.session_token_hash",
            "00" * 32,
            "SELECT s.* FROM sessions s WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()",
            (bytes(32),),
        ),
        (
            "authenticate: user and membership",
            "app.user_id",
            str(s.user_id),
            "SELECT u.id, o.id, o.slug, m.role FROM users u LEFT JOIN (organizations o JOIN organization_members m "
            "ON m.organization_id = o.id AND m.user_id = $1) ON (o.slug = $2) WHERE u.id = $1",
            (s.user_id, s.slug),
        ),
    ]
    large = await connection.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relname = ANY($1::text[]) AND reltuples >= $2",
        list(KEYED_TABLES),
        KEYED_LARGE,
    )
    keyed = tuple(r["relname"] for r in large)
    for name, setting, value, sql, args in statements:
        async with connection.transaction():
            await connection.execute("SELECT set_config($1, $2, true)", setting, value)
            raw = await connection.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
        plans.append(
            summarize(
                name,
                s.label,
                sql,
                json.loads(raw),
                DEFAULT_BUDGET_MS,
                large=(*LARGE_TABLES, *keyed),
            )
        )
    return plans


#: More statements to plan in the same tenant transaction (the API's compiled queries: the
#: CLI passes them, as the database layer does not know GraphQL).
ExtraPaths = Callable[[ExplainingExecutor, Sample], Awaitable[None]]


async def report(
    owner_dsn: str, server_dsn: str, extra: ExtraPaths | None = None
) -> tuple[list[Plan], list[tuple[str, str]]]:
    """Plans for the largest and the smallest tenant; and the indexes no hot path used."""
    owner = await asyncpg.connect(owner_dsn)
    server = await asyncpg.connect(server_dsn)
    plans: list[Plan] = []
    try:
        largest, smallest = await tenant_slugs(owner)
        for slug, label in (
            (largest, f"largest ({largest})"),
            (smallest, f"smallest ({smallest})"),
        ):
            sample = await find_sample(owner, slug, label)
            async with server.transaction():
                context = TenantContext(
                    organization_id=sample.organization_id, user_id=sample.user_id, role="owner"
                )
                await server.execute(SET_CONTEXT_SQL, *context.parameters())
                executor = ExplainingExecutor(server, label)
                await hot_paths(executor, sample)
                if extra is not None:
                    await extra(executor, sample)
                plans += executor.plans
            plans += await log_in_and_authenticate(server, sample)
        indexes = await owner.fetch(
            "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename IN ('users', 'sessions', 'organizations', 'organization_members', 'projects', "
            "'tasks', 'task_comments', 'audit_logs') ORDER BY 1, 2"
        )
    finally:
        await owner.close()
        await server.close()
    used = {index for plan in plans for index in plan.indexes}
    unused = [
        (r["tablename"], r["indexname"])
        for r in indexes
        if r["indexname"] not in used and not _partition_used(r["indexname"], used)
    ]
    return plans, unused


def _partition_used(index: str, used: set[str]) -> bool:
    """An index of the partitioned audit_logs shows in plans under its partitions' names."""
    if index == "audit_logs_pkey":
        return any(u.startswith("audit_logs_") and u.endswith("_pkey") for u in used)
    if index == "audit_logs_entity_idx":
        return any(u.startswith("audit_logs_") and "entity" in u for u in used)
    return False


#: Why an index no hot read path uses still earns its keep.
KEPT_FOR = {
    "users_pkey": "primary key; foreign keys from sessions, members, tasks, comments",
    "sessions_pkey": "primary key (revoking one session by id)",
    "sessions_user_id_idx": "revoking all sessions of a user (password change); ON DELETE CASCADE",
    "organizations_pkey": "primary key; target of every tenant foreign key",
    "organization_members_pkey": "primary key (organization_id, id): node(id:) of a Member",
    "organization_members_invited_by_idx": "ON DELETE SET NULL when a user is deleted",
    "projects_created_by_idx": "ON DELETE SET NULL when a user is deleted",
    "tasks_created_by_idx": "ON DELETE SET NULL when a user is deleted",
    "task_comments_author_idx": "ON DELETE SET NULL when a user is deleted",
    "tasks_project_task_key": "target of the parent foreign key (same tenant, same project)",
    "task_comments_pkey": "primary key; editComment/deleteComment by id",
    "projects_search_idx": "projects full-text search (search() and the projects search filter)",
    "projects_live_idx": "live projects of a tenant, newest first (200 seeded projects: the planner scans)",
    "sessions_token_hash_key": "unique token hash; the session lookup of every request (few sessions seeded: the planner may scan a small table)",
    "users_email_lower_key": "unique e-mail key (email_key = lower(email)); log-in lookup (few seeded users: the planner may scan a small table)",
    "tasks_tenant_lexemes_idx": "full-text search inside search_hits(), keys per tenant and word (SECURITY DEFINER: EXPLAIN shows the function, not its plan)",
    "tasks_tenant_lexemes_sample_idx": "the same keys for the 1/256 of each tenant's tasks whose id ends in `00`: the sample search_hits() ranks first for very common words (migration 29)",
    "tasks_tenant_title_trgm_idx": "typo-tolerant title search inside search_hits() (same)",
}


def markdown(plans: list[Plan], unused: list[tuple[str, str]], generated: str) -> str:
    lines = [
        "# Query plans of the hot paths",
        "",
        f"Generated by `taskql explain` on {generated}: every statement the API issues on its hot",
        "paths, run by the API's own query functions as the server role with a tenant set (RLS",
        "on), under `EXPLAIN (ANALYZE, BUFFERS)`, for the largest and the smallest tenant of the",
        "seeded dataset (`taskql seed`: about 1,000,000 tasks, 3,000,000 comments).",
        "A sequential scan of tasks, task_comments or audit_logs, or a statement over its budget,",
        "fails the command.",
        "",
    ]
    for tenant in dict.fromkeys(p.tenant for p in plans):
        lines += [
            f"## Tenant: {tenant}",
            "",
            "| statement | ms | budget | rows | buffers hit/read | indexes used | plan | verdict |",
            "|---|---:|---:|---:|---:|---|---|---|",
        ]
        for p in (p for p in plans if p.tenant == tenant):
            shape = " → ".join(dict.fromkeys(p.nodes))[:90]
            verdict = "; ".join(p.problems) or "ok"
            lines.append(
                f"| {p.statement} | {p.milliseconds:.2f} | {p.budget_ms:.0f} | {p.rows} | "
                f"{p.shared_hit}/{p.shared_read} | {', '.join(p.indexes) or '—'} | {shape} | {verdict} |"
            )
        lines.append("")
    lines += [
        "## Indexes no hot read path used",
        "",
        "Every other index appears in a plan above. These stay for the reason given:",
        "",
        "| table | index | kept for |",
        "|---|---|---|",
    ]
    for table, index in unused:
        lines.append(
            f"| {table} | {index} | {KEPT_FOR.get(index, '**no reason known: candidate for removal**')} |"
        )
    lines += ["", "## Statements", ""]
    for name, sql in dict.fromkeys((p.statement, p.sql) for p in plans):
        lines += [f"- **{name}**: `{sql[:600]}`"]
    return "\n".join(lines) + "\n"
