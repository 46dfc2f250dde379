"""Tenant-leading search indexes, built without blocking writes.

``search_hits`` filters by tenant; indexes led by ``organization_id`` (btree_gin) let one
GIN scan find a tenant's matches instead of every tenant's. Measured on the seeded dataset
(docs/query-plans.md): 30-40% less time for the largest tenant. Replaces the global GIN
indexes, concurrently: the table stays writable throughout.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate.toolkit import CreateIndex, DropIndex, RawSql, toolkit_migration

ID = "2026-11-24T09:00:09:000000"
VERSION = "1.38.0"
DESCRIPTION = "tenant-leading GIN indexes for task search (concurrently)"

STEPS = [
    RawSql("CREATE EXTENSION IF NOT EXISTS btree_gin", "DROP EXTENSION IF EXISTS btree_gin"),
    CreateIndex("tasks_tenant_search_idx", "tasks", "USING gin (organization_id, search_vector)"),
    CreateIndex(
        "tasks_tenant_title_trgm_idx", "tasks", "USING gin (organization_id, title gin_trgm_ops)"
    ),
    DropIndex(
        "tasks_search_idx", CreateIndex("tasks_search_idx", "tasks", "USING gin (search_vector)")
    ),
    DropIndex(
        "tasks_title_trgm_idx",
        CreateIndex("tasks_title_trgm_idx", "tasks", "USING gin (title gin_trgm_ops)"),
    ),
]


async def forwards() -> MigrationManager:
    return toolkit_migration(ID, DESCRIPTION, STEPS)
