"""Privileges of the maintenance role (BYPASSRLS), which the owner becomes for backfills and
bulk loads: every tenant's rows, in tables the owner creates now and later."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:07:000000"
VERSION = "1.38.0"
DESCRIPTION = "grants to taskql_maintenance (backfills, bulk loads)"

FORWARDS = r"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'taskql_maintenance') THEN
        RAISE EXCEPTION 'role taskql_maintenance does not exist'
            USING HINT = 'Create the roles first: taskql db bootstrap --admin-url ... (see README)';
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO taskql_maintenance;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    users, sessions, organizations, organization_members, projects, tasks, task_comments
    TO taskql_maintenance;
GRANT SELECT, INSERT ON audit_logs TO taskql_maintenance;
"""

BACKWARDS = r"""
REVOKE ALL ON users, sessions, organizations, organization_members, projects, tasks,
    task_comments, audit_logs FROM taskql_maintenance;
REVOKE USAGE ON SCHEMA public FROM taskql_maintenance;
"""


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
