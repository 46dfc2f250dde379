"""Piccolo's configuration, so that `piccolo migrations forwards all` works from the root.

The engine is the one the whole project shares (``db.engine.DB``). When the Piccolo CLI
imports this module, the engine is pointed at the owner role: ``MIGRATION_DATABASE_URL``,
or the embedded PostgreSQL (started here) when no URL is set. A process that configured
the engine itself (the API, ``taskql migrate``) keeps its configuration.

Piccolo's forwards and backwards runners are made to hold the migration advisory lock
(``db.migrate.guard``), as ``taskql migrate`` does: two pipelines never migrate at once.
"""

from piccolo.conf.apps import AppRegistry

from db.engine import DB
from db.migrate import guard
from db.settings import get_database_settings
from db.targets import resolve

if DB.dsn is None:
    DB.configure(resolve().require_owner(), get_database_settings())

guard.install()

APP_REGISTRY = AppRegistry(apps=["piccolo_app"])
