"""The migration safety gate finds what it promises to find, and passes ours."""

from __future__ import annotations

import textwrap
from pathlib import Path

from db.migrate.lint import lint

HEADER = """
from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from db.migrate import sql_migration
from db.migrate.toolkit import toolkit_migration, AddColumn, CreateIndex, SetNotNull, AddConstraint
ID = "{id}"
DESCRIPTION = "test"
"""
SQL_BODY = '''
FORWARDS = """{forwards}"""
BACKWARDS = """{backwards}"""
async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
'''


def write(directory: Path, stamp: str, body: str, migration_id: str | None = None) -> str:
    date, time_ = stamp.split("T")
    y, m, d = date.split("-")
    hh, mm, ss = time_.split(":")
    name = f"taskql_{y}_{m}_{d}t{hh}_{mm}_{ss}_000000.py"
    content = HEADER.format(id=migration_id or f"{stamp}:000000") + textwrap.dedent(body)
    (directory / name).write_text(content)
    return name


def sql(forwards: str, backwards: str = "SELECT 1;") -> str:
    return SQL_BODY.format(forwards=forwards, backwards=backwards)


def rules(directory: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for finding in lint(directory):
        if finding.allowed_because is None:
            found.setdefault(finding.migration, set()).add(finding.rule)
    return found


def test_our_migrations_pass() -> None:
    failing = [f.describe() for f in lint() if f.allowed_because is None]
    assert failing == []


def test_blocking_ddl_is_found_with_its_recipe(tmp_path: Path) -> None:
    index = write(
        tmp_path,
        "2030-01-01T00:00:01",
        sql("CREATE INDEX tasks_title_idx ON tasks (title);", "DROP INDEX tasks_title_idx;"),
    )
    not_null = write(
        tmp_path,
        "2030-01-01T00:00:02",
        sql("ALTER TABLE tasks ALTER COLUMN description SET NOT NULL;"),
    )
    fk = write(
        tmp_path,
        "2030-01-01T00:00:03",
        sql(
            "ALTER TABLE tasks ADD CONSTRAINT t_fk FOREIGN KEY (created_by) REFERENCES users (id);"
        ),
    )
    found = rules(tmp_path)
    assert "require-concurrent-index-creation" in found[index]
    assert "adding-not-nullable-field" in found[not_null]
    assert (
        "adding-foreign-key-constraint" in found[fk] or "constraint-missing-not-valid" in found[fk]
    )
    described = "\n".join(f.describe() for f in lint(tmp_path))
    assert "safe recipe: CreateIndex(" in described
    assert "safe recipe: SetNotNull(" in described


def test_checks_squawk_cannot_know(tmp_path: Path) -> None:
    no_back = write(tmp_path, "2030-01-01T00:00:01", sql("SELECT 1;", backwards=""))
    concurrently = write(
        tmp_path,
        "2030-01-01T00:00:02",
        sql("CREATE INDEX CONCURRENTLY IF NOT EXISTS x ON tasks (title);", "DROP INDEX x;"),
    )
    wrong_id = write(
        tmp_path, "2030-01-01T00:00:03", sql("SELECT 1;"), migration_id="2029-01-01T00:00:00:000000"
    )
    generated = write(
        tmp_path,
        "2030-01-01T00:00:04",
        """
        from piccolo.columns import Varchar
        async def forwards() -> MigrationManager:
            manager = MigrationManager(migration_id=ID, app_name="taskql")
            manager.add_table(class_name="Label", tablename="labels")
            manager.add_column(table_class_name="Label", tablename="labels", column_name="name",
                               db_column_name="name", column_class_name="Varchar", column_class=Varchar,
                               params={"length": 50})
            async def raw() -> None:
                pass
            manager.add_raw(raw)
            manager.drop_column(table_class_name="Task", tablename="tasks", column_name="title")
            return manager
        """,
    )
    found = rules(tmp_path)
    assert "no-backwards" in found[no_back]
    assert "concurrently-in-transaction" in found[concurrently]
    assert "migration-id" in found[wrong_id]
    assert {"raw-before-generated", "no-backwards", "unrendered-operation"} <= found[generated]


def test_a_justified_exception_passes_and_an_unjustified_one_does_not(tmp_path: Path) -> None:
    body = sql("CREATE INDEX tasks_title_idx ON tasks (title);", "DROP INDEX tasks_title_idx;")
    write(
        tmp_path,
        "2030-01-01T00:00:01",
        'LINT_ALLOW = {"require-concurrent-index-creation": "tasks is empty in every environment at this point"}\n'
        + body,
    )
    write(
        tmp_path,
        "2030-01-01T00:00:02",
        'LINT_ALLOW = {"require-concurrent-index-creation": "ok"}\n'
        + body.replace("tasks_title_idx", "tasks_title2_idx"),
    )
    findings = [f for f in lint(tmp_path) if f.rule == "require-concurrent-index-creation"]
    assert [f.allowed_because is not None for f in findings] == [True, False]


def test_toolkit_migrations_pass_the_gate(tmp_path: Path) -> None:
    write(
        tmp_path,
        "2030-01-01T00:00:01",
        """
        STEPS = [
            AddColumn("tasks", "estimate_minutes", "bigint"),
            AddConstraint("tasks", "tasks_estimate_positive", "CHECK (estimate_minutes > 0)"),
            CreateIndex("tasks_estimate_idx", "tasks", "(organization_id, estimate_minutes)"),
            SetNotNull("tasks", "title"),
        ]
        async def forwards() -> MigrationManager:
            return toolkit_migration(ID, DESCRIPTION, STEPS)
        """,
    )
    assert rules(tmp_path) == {}


def test_a_snapshot_migration_passes_and_runs_nothing(tmp_path: Path) -> None:
    """Its records are not rendered (they never run); a step in it is a finding."""
    records = """
        from piccolo.columns import Text
        from db.migrate import snapshot_migration
        async def forwards() -> MigrationManager:
            manager = snapshot_migration(ID, DESCRIPTION)
            manager.add_column(table_class_name="Task", tablename="tasks", column_name="notes",
                               column_class=Text, params={"null": True, "default": None})
            {extra}
            return manager
        """
    quiet = write(tmp_path, "2030-01-01T00:00:01", records.replace("{extra}", "pass"))
    noisy = write(
        tmp_path,
        "2030-01-01T00:00:02",
        records.replace("{extra}", "manager.add_raw(lambda: None)"),
    )
    found = rules(tmp_path)
    assert quiet not in found
    assert found[noisy] == {"snapshot-runs-sql"}
