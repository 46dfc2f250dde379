"""Piccolo's app config for taskql: where the migrations and tables are."""

from pathlib import Path

from piccolo.conf.apps import AppConfig, table_finder

APP_CONFIG = AppConfig(
    app_name="taskql",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=table_finder(modules=["db.tables"], exclude_imported=True),
    migration_dependencies=[],
    commands=[],
)
