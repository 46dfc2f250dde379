"""The server role may read Piccolo's migration history (not change it).

``taskql serve`` with only ``DATABASE_URL`` (the server role, the deployment the docs
recommend) refuses to start on a database whose migrations are not those of its checkout,
and ``/readyz`` reports not ready: both read ``migration`` as the server role. The table is
created by Piccolo before the first migration runs, owned by the owner role.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:19:000000"
VERSION = "1.38.0"
DESCRIPTION = "the server role reads the migration history (serve and /readyz check it)"

FORWARDS = """
GRANT SELECT ON TABLE migration TO taskql_server;
"""

BACKWARDS = """
REVOKE SELECT ON TABLE migration FROM taskql_server;
"""


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
