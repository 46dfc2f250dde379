"""The schema can be distributed by tenant with Citus (docs/operations/sharding.md).

Citus is not installable here, so this reads the migrated catalog and checks what Citus would
refuse or get wrong: every tenant table keyed and uniquely constrained with
``organization_id``, every foreign key between tenant tables carrying it on both sides, no
global (reference) table pointing at a tenant table, and the runbook's statements naming
exactly the catalog's tenant and global tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import asyncpg

from db.settings import PROJECT_ROOT

RUNBOOK = PROJECT_ROOT / "docs" / "operations" / "sharding.md"
#: Tables that stay on the coordinator, outside Citus's metadata.
LOCAL_TABLES = {"migration", "migration_backfill_progress"}
TENANT_COLUMN = "organization_id"

TABLES_SQL = """
SELECT c.oid, c.relname,
       EXISTS (SELECT 1 FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = $1 AND NOT a.attisdropped) AS tenant,
       EXISTS (SELECT 1 FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = $1 AND a.attnotnull) AS not_null
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""

#: Every unique index (primary keys and unique constraints have one): its table, its name,
#: and the names of its key columns (expressions have none).
UNIQUE_SQL = """
SELECT t.relname AS table_name, i.relname AS index_name, x.indisprimary AS primary_key,
       ARRAY(SELECT a.attname FROM unnest(x.indkey[:x.indnkeyatts - 1]) AS k(attnum)
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) AS key_columns
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = 'public' AND x.indisunique AND NOT t.relispartition AND t.relkind IN ('r', 'p')
"""

#: Foreign keys as (referencing table, referenced table, column pairs in order).
FOREIGN_KEYS_SQL = """
SELECT con.conname, src.relname AS source, dst.relname AS target,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.i) AS source_columns,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
             ORDER BY k.i) AS target_columns
FROM pg_constraint con
JOIN pg_class src ON src.oid = con.conrelid
JOIN pg_class dst ON dst.oid = con.confrelid
JOIN pg_namespace n ON n.oid = src.relnamespace
WHERE con.contype = 'f' AND n.nspname = 'public' AND NOT src.relispartition
  AND con.conparentid = 0
"""


def runbook_tables() -> tuple[set[str], set[str]]:
    """(distributed, reference) tables named by the runbook's statements."""
    text = RUNBOOK.read_text()
    distributed = re.findall(r"create_distributed_table\('(\w+)',\s*'(\w+)'", text)
    for table, column in distributed:
        assert column == TENANT_COLUMN, f"the runbook distributes {table} by {column}"
    reference = re.findall(r"create_reference_table\('(\w+)'\)", text)
    return {table for table, _ in distributed}, set(reference)


async def tables(connection: asyncpg.Connection) -> tuple[set[str], set[str]]:
    """(tenant, global) tables of the catalog; tenant ones must have organization_id NOT NULL."""
    rows = await connection.fetch(TABLES_SQL, TENANT_COLUMN)
    tenant = {row["relname"] for row in rows if row["tenant"]}
    nullable = sorted(row["relname"] for row in rows if row["tenant"] and not row["not_null"])
    assert not nullable, f"tenant tables with a nullable {TENANT_COLUMN}: {nullable}"
    global_ = {row["relname"] for row in rows if not row["tenant"]} - LOCAL_TABLES
    return tenant, global_


def _listed(problems: Iterable[str]) -> str:
    return "\n  " + "\n  ".join(problems)


async def test_every_table_is_tenant_global_or_local_as_the_runbook_says(
    owner: asyncpg.Connection,
) -> None:
    tenant, global_ = await tables(owner)
    distributed, reference = runbook_tables()
    assert tenant, "no tenant table found: is the database migrated?"
    assert distributed == tenant, (
        f"tenant tables the runbook does not distribute: {sorted(tenant - distributed)}; "
        f"distributed there but not tenant tables here: {sorted(distributed - tenant)}"
    )
    assert reference == global_, (
        f"global tables the runbook does not make reference tables: {sorted(global_ - reference)};"
        f" reference tables there but not global here: {sorted(reference - global_)}"
    )
    assert {"users", "sessions", "organizations"} <= reference


async def test_every_tenant_key_and_unique_constraint_includes_organization_id(
    owner: asyncpg.Connection,
) -> None:
    tenant, _ = await tables(owner)
    rows = await owner.fetch(UNIQUE_SQL)
    with_primary_key = {row["table_name"] for row in rows if row["primary_key"]}
    assert tenant <= with_primary_key, f"tenant tables without a key: {tenant - with_primary_key}"
    problems = [
        f"{row['table_name']}.{row['index_name']} {row['key_columns']}"
        for row in rows
        if row["table_name"] in tenant and TENANT_COLUMN not in row["key_columns"]
    ]
    assert not problems, f"unique without {TENANT_COLUMN} (Citus refuses):" + _listed(problems)


async def test_foreign_keys_between_tenant_tables_include_organization_id(
    owner: asyncpg.Connection,
) -> None:
    tenant, global_ = await tables(owner)
    problems = []
    for row in await owner.fetch(FOREIGN_KEYS_SQL):
        source, target = row["source"], row["target"]
        pairs = list(zip(row["source_columns"], row["target_columns"], strict=True))
        if source in tenant and target in tenant:
            if (TENANT_COLUMN, TENANT_COLUMN) not in pairs:
                problems.append(f"{row['conname']}: {source} {pairs} -> {target}")
        elif source in global_ and target in tenant:
            problems.append(f"{row['conname']}: reference table {source} -> tenant {target}")
        elif source in tenant and target not in global_:
            problems.append(f"{row['conname']}: {source} -> {target}, neither tenant nor global")
    assert not problems, "foreign keys Citus cannot keep in one shard:" + _listed(problems)


async def test_the_checks_catch_a_table_that_is_not_distributable(
    owner: asyncpg.Connection,
) -> None:
    """The catalog queries see what is wrong with a bad tenant table (rolled back after)."""
    transaction = owner.transaction()
    await transaction.start()
    try:
        await owner.execute(
            "CREATE TABLE citus_probe (id uuid PRIMARY KEY, organization_id uuid NOT NULL,"
            " project_id uuid, task_id uuid, name text UNIQUE)"
        )
        await owner.execute(
            "ALTER TABLE citus_probe ADD CONSTRAINT citus_probe_good_fk FOREIGN KEY"
            " (organization_id, project_id, task_id)"
            " REFERENCES tasks (organization_id, project_id, id)"
        )
        await owner.execute(
            "ALTER TABLE citus_probe ADD CONSTRAINT citus_probe_bad_fk FOREIGN KEY"
            " (project_id, organization_id, task_id)"
            " REFERENCES tasks (organization_id, project_id, id)"
        )
        tenant, _ = await tables(owner)
        assert "citus_probe" in tenant
        unique = [
            row["index_name"]
            for row in await owner.fetch(UNIQUE_SQL)
            if row["table_name"] == "citus_probe" and TENANT_COLUMN not in row["key_columns"]
        ]
        assert sorted(unique) == ["citus_probe_name_key", "citus_probe_pkey"]
        bad = [
            row["conname"]
            for row in await owner.fetch(FOREIGN_KEYS_SQL)
            if row["source"] == "citus_probe"
            and (TENANT_COLUMN, TENANT_COLUMN)
            not in list(zip(row["source_columns"], row["target_columns"], strict=True))
        ]
        assert bad == ["citus_probe_bad_fk"]
        assert "citus_probe" not in runbook_tables()[0]
    finally:
        await transaction.rollback()
