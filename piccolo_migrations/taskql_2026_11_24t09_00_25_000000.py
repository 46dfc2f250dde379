"""The privilege the maintenance role lacked to offboard one tenant (``taskql tenant
delete``, db/tenants.py): DELETE on audit_logs, whose rows are the tenant's data too. The
server role's privileges do not change: it still cannot delete, update or forge an audit
row."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:25:000000"
VERSION = "1.38.0"
DESCRIPTION = "DELETE on audit_logs for taskql_maintenance (tenant offboarding)"

FORWARDS = r"""
GRANT DELETE ON audit_logs TO taskql_maintenance;
"""

BACKWARDS = r"""
REVOKE DELETE ON audit_logs FROM taskql_maintenance;
"""


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
