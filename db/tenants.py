"""One tenant's data out, away, and back: ``taskql tenant export|delete|import``.

Everything runs as the owner become ``taskql_maintenance`` (BYPASSRLS, db/roles.py): RLS
would show the owner no tenant's rows. Tenant context settings are still set
transaction-locally, so the audit and realtime triggers see the organization.

- **Export**: one REPEATABLE READ, READ ONLY transaction (one consistent snapshot) writes
  one NDJSON file per table (``organizations``, ``users``, ``organization_members``,
  ``organization_invitations``, ``projects``, ``tasks``, ``task_comments``, ``audit_logs``),
  each row PostgreSQL's own ``to_jsonb`` of the row in UTC, in primary-key order, and
  ``manifest.json`` (row counts, SHA-256 of each file, the database's newest migration).
  ``users`` holds every user a row of the tenant names (members, authors, assignees,
  inviters, audit actors) without ``password_hash``; sessions are never exported;
  generated columns (``search_vector``) are left out (recomputed on import); realtime
  outbox events are transient and left out.
- **Delete**: in batches (each its own short transaction under a ``lock_timeout``, retried),
  children before parents; the organization row last, with its remaining owners, so the
  last-owner rule holds to the end. The tenant's audit rows go too, except the one the
  organization's own delete writes: that record (actor none, ``request_id``
  ``tenant-delete-…``, ``user_agent`` naming the operator) stays, as the proof of
  offboarding. User accounts are global and are kept (see docs/operations/tenants.md).
- **Import**: into an organization that is missing (created from the export: same id, name,
  slug) or empty (no members, invitations, projects, tasks or comments; ``into``). Users
  are matched by e-mail (case-insensitively) or created (with the exported id when free and
  an unusable random password: they reset it). The rows keep their ids; the triggers' own
  audit rows for the inserted rows are replaced by one import record.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from db.errors import unavailable
from db.passwords import hash_password
from db.uuid7 import uuid7

FORMAT = "taskql-tenant-export/1"
MANIFEST = "manifest.json"
#: Tables in import order (parents first); users is handled apart.
TENANT_TABLES = (
    "organizations",
    "organization_members",
    "organization_invitations",
    "projects",
    "tasks",
    "task_comments",
    "audit_logs",
)
FILES = ("organizations", "users", *TENANT_TABLES[1:])
#: Columns naming a user, per table (rewritten when an imported user matches another id).
USER_COLUMNS = {
    "organization_members": ("user_id", "invited_by"),
    "organization_invitations": ("invited_by",),
    "projects": ("created_by",),
    "tasks": ("assignee_id", "created_by"),
    "task_comments": ("author_id",),
    "audit_logs": ("actor_id",),
}
#: Never exported.
EXCLUDED = {"users": ("password_hash",)}
TENANT_COLUMN = {"organizations": "id"}
ORDER = {"audit_logs": "created_at, id"}
BATCH = 1000


class TenantError(ValueError):
    """The organization or the export is not what the command needs."""


@dataclass
class Outcome:
    organization_id: UUID
    slug: str
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: Import: users matched to an existing account, and created.
    users_matched: int = 0
    users_created: int = 0
    #: Delete: batches run (transactions).
    batches: int = 0


@asynccontextmanager
async def _maintenance(owner_dsn: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A connection as the owner become taskql_maintenance, in UTC, and the database's schema
    version (read first: the migration history is the owner's, not the maintenance role's)."""
    try:
        conn = await asyncpg.connect(owner_dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise unavailable(owner_dsn, exc) from None
    try:
        version = await schema_version(conn)
        await conn.execute("SET ROLE taskql_maintenance; SET TimeZone = 'UTC'")
        yield conn, version
    finally:
        await conn.close()


async def _organization(conn: asyncpg.Connection, org: str) -> asyncpg.Record:
    """The organization named by slug or id."""
    try:
        by_id: UUID | None = UUID(org)
    except ValueError:
        by_id = None
    row = await conn.fetchrow(
        "SELECT id, slug, name FROM organizations WHERE slug = $1 OR id = $2", org, by_id
    )
    if row is None:
        raise TenantError(f"no organization {org!r} (give its slug or id)")
    return row


async def schema_version(conn: asyncpg.Connection) -> str:
    """The newest migration applied to this database."""
    version = await conn.fetchval("SELECT max(name) FROM migration WHERE app_name = 'taskql'")
    if version is None:
        raise TenantError("the database is not migrated")
    return str(version)


async def _columns(conn: asyncpg.Connection, table: str, exported: bool = True) -> list[str]:
    """Stored columns of ``table`` (not generated; not excluded, if ``exported``), in order."""
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        f"public.{table}",
    )
    excluded = EXCLUDED.get(table, ()) if exported else ()
    return [r["attname"] for r in rows if r["attname"] not in excluded]


def _select(table: str, columns: list[str], where: str) -> str:
    pairs = ", ".join(f"'{c}', t.{c}" for c in columns)
    order = ORDER.get(table, "id")
    return (
        f"SELECT jsonb_build_object({pairs})::text AS line FROM {table} t WHERE {where} "
        f"ORDER BY {order}"
    )


def _empty_folder(out: Path) -> None:
    """The CLI's files are small and local: plain blocking I/O."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise TenantError(f"{out} is not empty")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- export

USERS_WHERE = """t.id IN (
    SELECT user_id FROM organization_members WHERE organization_id = $1
    UNION SELECT invited_by FROM organization_members WHERE organization_id = $1
    UNION SELECT invited_by FROM organization_invitations WHERE organization_id = $1
    UNION SELECT created_by FROM projects WHERE organization_id = $1
    UNION SELECT assignee_id FROM tasks WHERE organization_id = $1
    UNION SELECT created_by FROM tasks WHERE organization_id = $1
    UNION SELECT author_id FROM task_comments WHERE organization_id = $1
    UNION SELECT actor_id FROM audit_logs WHERE organization_id = $1)"""


async def export(owner_dsn: str, org: str, out: Path) -> Outcome:
    """Write organization ``org`` (slug or id) to the folder ``out`` (created; must be empty)."""
    started = time.perf_counter()
    _empty_folder(out)
    async with (
        _maintenance(owner_dsn) as (conn, version),
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        found = await _organization(conn, org)
        outcome = Outcome(found["id"], found["slug"])
        files: dict[str, dict[str, Any]] = {}
        for table in FILES:
            column = TENANT_COLUMN.get(table, "organization_id")
            where = USERS_WHERE if table == "users" else f"t.{column} = $1"
            sql = _select(table, await _columns(conn, table), where)
            path = out / f"{table}.ndjson"
            count = 0
            with path.open("w", encoding="utf-8") as f:
                async for record in conn.cursor(sql, found["id"], prefetch=BATCH):
                    f.write(record["line"] + "\n")
                    count += 1
            outcome.counts[table] = count
            files[table] = {"file": path.name, "rows": count, "sha256": _sha256(path)}
        manifest = {
            "format": FORMAT,
            "organization": {
                "id": str(found["id"]),
                "slug": found["slug"],
                "name": found["name"],
            },
            "schema_version": version,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "excluded": {
                "users.password_hash": "secret",
                "sessions": "secret (log-in tokens)",
                "search_vector": "generated",
                "realtime_events": "transient outbox",
            },
            "tables": files,
        }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    outcome.seconds = time.perf_counter() - started
    return outcome


# ---------------------------------------------------------------------------- delete


def _operator() -> str:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return f"taskql tenant delete ({who}@{socket.gethostname()})"


async def _set_context(conn: asyncpg.Connection, org: UUID, request_id: str, agent: str) -> None:
    await conn.execute(
        "SELECT set_config('app.organization_id', $1, true), "
        "set_config('app.request_id', $2, true), set_config('app.user_agent', $3, true), "
        "set_config('lock_timeout', '2s', true)",
        str(org),
        request_id,
        agent,
    )


async def _retrying(conn: asyncpg.Connection, work: Any, *context: Any) -> Any:
    """Run ``work(conn)`` in a transaction with the tenant context; retry a lock timeout."""
    for attempt in range(5):
        try:
            async with conn.transaction():
                await _set_context(conn, *context)
                return await work(conn)
        except asyncpg.LockNotAvailableError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


#: One batch of each table, children first. ``$1`` the organization, ``$2`` the batch size.
DELETE_BATCHES = (
    (
        "task_comments",
        "DELETE FROM task_comments WHERE organization_id = $1 AND id IN "
        "(SELECT id FROM task_comments WHERE organization_id = $1 LIMIT $2)",
    ),
    (
        # Newest first: subtasks before their parents, so a batch rarely cascades.
        "tasks",
        "DELETE FROM tasks WHERE organization_id = $1 AND id IN "
        "(SELECT id FROM tasks WHERE organization_id = $1 ORDER BY id DESC LIMIT $2)",
    ),
    (
        "projects",
        "DELETE FROM projects WHERE organization_id = $1 AND id IN "
        "(SELECT id FROM projects WHERE organization_id = $1 LIMIT $2)",
    ),
    (
        "organization_invitations",
        "DELETE FROM organization_invitations WHERE organization_id = $1 AND id IN "
        "(SELECT id FROM organization_invitations WHERE organization_id = $1 LIMIT $2)",
    ),
    (
        "organization_members",
        "DELETE FROM organization_members WHERE organization_id = $1 AND id IN "
        "(SELECT id FROM organization_members WHERE organization_id = $1 AND role <> 'owner' "
        "LIMIT $2)",
    ),
    (
        "realtime_events",
        "DELETE FROM realtime_events WHERE organization_id = $1 AND id IN "
        "(SELECT id FROM realtime_events WHERE organization_id = $1 LIMIT $2)",
    ),
    (
        "audit_logs",
        "DELETE FROM audit_logs WHERE organization_id = $1 AND (created_at, id) IN "
        "(SELECT created_at, id FROM audit_logs WHERE organization_id = $1 LIMIT $2)",
    ),
)


def _deleted(status: str) -> int:
    return int(status.split()[-1])


async def delete(owner_dsn: str, org: str, batch: int = BATCH) -> Outcome:
    """Remove organization ``org`` and everything it owns, in batches of ``batch`` rows."""
    started = time.perf_counter()
    request_id = f"tenant-delete-{uuid7()}"
    agent = _operator()
    async with _maintenance(owner_dsn) as (conn, _):
        found = await _organization(conn, org)
        org_id = found["id"]
        outcome = Outcome(org_id, found["slug"])
        context = (org_id, request_id, agent)
        for table, sql in DELETE_BATCHES:
            while True:

                async def one(c: asyncpg.Connection, sql: str = sql) -> int:
                    return _deleted(await c.execute(sql, org_id, batch))

                n = await _retrying(conn, one, *context)
                outcome.batches += 1
                outcome.counts[table] = outcome.counts.get(table, 0) + n
                if n < batch:
                    break

        async def last(c: asyncpg.Connection) -> tuple[int, int, int, int]:
            # The owners, the audit and outbox rows the batches above wrote, then the
            # organization: its delete trigger writes the one audit record that stays.
            owners = _deleted(
                await c.execute(
                    "DELETE FROM organization_members WHERE organization_id = $1", org_id
                )
            )
            audit = _deleted(
                await c.execute("DELETE FROM audit_logs WHERE organization_id = $1", org_id)
            )
            events = _deleted(
                await c.execute("DELETE FROM realtime_events WHERE organization_id = $1", org_id)
            )
            orgs = _deleted(await c.execute("DELETE FROM organizations WHERE id = $1", org_id))
            return owners, audit, events, orgs

        owners, audit, events, orgs = await _retrying(conn, last, *context)
        outcome.batches += 1
        outcome.counts["organization_members"] += owners
        outcome.counts["audit_logs"] += audit
        outcome.counts["realtime_events"] += events
        outcome.counts["organizations"] = orgs
    outcome.seconds = time.perf_counter() - started
    return outcome


# ---------------------------------------------------------------------------- import


def read_manifest(folder: Path) -> dict[str, Any]:
    """The export's manifest, with every file's row count and checksum verified."""
    path = folder / MANIFEST
    if not path.exists():
        raise TenantError(f"{folder} holds no {MANIFEST}: not a tenant export")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise TenantError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    for table in FILES:
        entry = manifest["tables"].get(table)
        if entry is None:
            raise TenantError(f"{path}: no entry for {table}")
        data = folder / entry["file"]
        if not data.exists() or _sha256(data) != entry["sha256"]:
            raise TenantError(f"{data}: missing or its checksum does not match the manifest")
    return manifest


def _lines(folder: Path, manifest: dict[str, Any], table: str) -> list[dict[str, Any]]:
    with (folder / manifest["tables"][table]["file"]).open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if len(rows) != manifest["tables"][table]["rows"]:
        raise TenantError(f"{table}: {len(rows)} rows, the manifest says otherwise")
    return rows


def _parents_first(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks ordered so that every parent precedes its subtasks (the foreign key and the depth
    trigger need the parent)."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    ids = {t["id"] for t in tasks}
    for task in tasks:
        parent = task["parent_task_id"] if task["parent_task_id"] in ids else None
        children.setdefault(parent, []).append(task)
    ordered: list[dict[str, Any]] = []
    level = children.get(None, [])
    while level:
        ordered.extend(level)
        level = [c for t in level for c in children.get(t["id"], [])]
    if len(ordered) != len(tasks):
        raise TenantError("tasks: the export's task tree has a cycle or a dangling parent")
    return ordered


EMPTY_SQL = """
SELECT (SELECT count(*) FROM organization_members WHERE organization_id = $1)
     + (SELECT count(*) FROM organization_invitations WHERE organization_id = $1)
     + (SELECT count(*) FROM projects WHERE organization_id = $1)
     + (SELECT count(*) FROM tasks WHERE organization_id = $1)
     + (SELECT count(*) FROM task_comments WHERE organization_id = $1)
"""


async def _refuse_ids_in_use(
    conn: asyncpg.Connection, data: dict[str, list[dict[str, Any]]]
) -> None:
    """Keys are (organization_id, id), so another tenant could take the same ids; refuse it:
    an id names one row of one tenant (global ids, audit entity ids, realtime topics)."""
    for table in (
        "organization_members",
        "organization_invitations",
        "projects",
        "tasks",
        "task_comments",
    ):
        ids = [UUID(r["id"]) for r in data[table]]
        holder = await conn.fetchval(
            f"SELECT o.slug FROM {table} t JOIN organizations o ON o.id = t.organization_id "
            "WHERE t.id = ANY($1::uuid[]) LIMIT 1",
            ids,
        )
        if holder is not None:
            raise TenantError(
                f"{table}: rows of the export already exist in organization {holder}: delete "
                "it first (an export restores a tenant, it does not copy one)"
            )


async def _insert(conn: asyncpg.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = [c for c in await _columns(conn, table, exported=False) if c in rows[0]]
    names = ", ".join(columns)
    sql = (
        f"INSERT INTO {table} ({names}) SELECT {names} "
        f"FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb)"
    )
    for start in range(0, len(rows), BATCH):
        await conn.execute(sql, json.dumps(rows[start : start + BATCH]))


async def import_(owner_dsn: str, folder: Path, into: str | None = None) -> Outcome:
    """Restore the export in ``folder`` into its organization (created when missing) or into
    the existing empty organization ``into`` (slug or id). One transaction: all or nothing."""
    started = time.perf_counter()
    manifest = read_manifest(folder)
    data = {table: _lines(folder, manifest, table) for table in FILES}
    source_org = UUID(manifest["organization"]["id"])
    request_id = f"tenant-import-{uuid7()}"
    async with _maintenance(owner_dsn) as (conn, version):
        if version != manifest["schema_version"]:
            raise TenantError(
                f"the export is of schema {manifest['schema_version']}, this database is at "
                f"{version}: import into a database at the same migration"
            )
        async with conn.transaction():
            target = await conn.fetchrow(
                "SELECT id, slug FROM organizations WHERE id = $1",
                source_org if into is None else None,
            )
            if into is not None:
                target = await _organization(conn, into)
            org_id: UUID = target["id"] if target is not None else source_org
            await _set_context(conn, org_id, request_id, "taskql tenant import")
            if target is not None and await conn.fetchval(EMPTY_SQL, org_id):
                raise TenantError(
                    f"organization {target['slug']} is not empty: import only into an "
                    "organization without members, invitations, projects, tasks or comments"
                )
            await _refuse_ids_in_use(conn, data)
            outcome = Outcome(
                org_id, target["slug"] if target else manifest["organization"]["slug"]
            )
            if target is None:
                await _insert(conn, "organizations", data["organizations"])
            # Users: matched by e-mail, else created (exported id when free).
            user_ids: dict[str, str] = {}
            for user in data["users"]:
                existing = await conn.fetchval(
                    "SELECT id FROM users WHERE email_key = lower($1)", user["email"]
                )
                if existing is not None:
                    user_ids[user["id"]] = str(existing)
                    outcome.users_matched += 1
                    continue
                taken = await conn.fetchval("SELECT 1 FROM users WHERE id = $1", UUID(user["id"]))
                new_id = str(uuid7()) if taken else user["id"]
                await _insert(
                    conn,
                    "users",
                    [
                        {
                            **user,
                            "id": new_id,
                            "password_hash": hash_password(secrets.token_urlsafe(32)),
                        }
                    ],
                )
                user_ids[user["id"]] = new_id
                outcome.users_created += 1
            for table in TENANT_TABLES[1:]:
                rows = data[table]
                for row in rows:
                    row["organization_id"] = str(org_id)
                    for column in USER_COLUMNS.get(table, ()):
                        if row.get(column) is not None:
                            row[column] = user_ids.get(row[column], row[column])
                if table == "tasks":
                    rows = _parents_first(rows)
                try:
                    await _insert(conn, table, rows)
                except asyncpg.UniqueViolationError as exc:
                    raise TenantError(
                        f"{table}: a row of the export already exists ({exc.constraint_name}): "
                        "the exported tenant still exists in this database"
                    ) from None
                outcome.counts[table] = len(rows)
            # The triggers audited every inserted row as new; the history came with the
            # export. Their rows give way to one record of the import.
            await conn.execute(
                "DELETE FROM audit_logs WHERE organization_id = $1 AND request_id = $2",
                org_id,
                request_id,
            )
            await conn.execute(
                "INSERT INTO audit_logs (organization_id, action, entity_type, entity_id, "
                "changes, request_id, user_agent) "
                "VALUES ($1, 'insert', 'organizations', $1, $2::jsonb, $3, 'taskql tenant import')",
                org_id,
                json.dumps(
                    {
                        "after": {
                            "imported": {
                                "from": manifest["organization"],
                                "exported_at": manifest["exported_at"],
                                "rows": {t: len(data[t]) for t in FILES},
                            }
                        }
                    }
                ),
                request_id,
            )
            outcome.counts["organizations"] = 0 if target is not None else 1
            outcome.counts["users"] = len(data["users"])
    outcome.seconds = time.perf_counter() - started
    return outcome
