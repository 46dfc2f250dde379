"""The migration safety gate: ``taskql migrations lint``.

Renders every migration's forwards SQL exactly as the runner will send it (transactions,
lock and statement timeouts included), lints it with squawk for our minimum PostgreSQL
version, and adds the checks squawk cannot know about:

- ``raw-before-generated``: Piccolo runs ``add_raw`` BEFORE the generated table operations
  of the same migration, so raw SQL cannot use a table that migration creates;
- ``no-backwards``: every migration must be reversible;
- ``concurrently-in-transaction``: CONCURRENTLY cannot run inside a transaction;
- ``migration-id``: ids must be well formed, unique, and in file order;
- ``snapshot-runs-sql``: a snapshot migration (``snapshot_migration``) runs nothing; SQL
  lives in a module's ``FORWARDS``/``BACKWARDS`` or ``STEPS``, where it is linted.

A ``ReviewedMigrationManager`` (every sql, toolkit and snapshot migration) runs only its
steps; its Piccolo operations are snapshot records and are not rendered.

A finding fails the gate and prints the safe recipe. A deliberate exception is declared in
the migration module: ``LINT_ALLOW = {"rule-name": "why this is safe here"}``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from db.migrate import ReviewedMigrationManager
from db.migrate.locks import DEFAULT_POLICY
from db.migrate.runner import MIGRATIONS_DIR, _load

MIN_POSTGRES = "15"
_FILE_ID = re.compile(r"^taskql_(\d{4})_(\d{2})_(\d{2})t(\d{2})_(\d{2})_(\d{2})_(\d{6})\.py$")
_CONCURRENTLY = re.compile(r"\bCONCURRENTLY\b", re.IGNORECASE)
_COMMENT = re.compile(r"--[^\n]*")

RECIPES = {
    "require-concurrent-index-creation": "CreateIndex(...) in a toolkit migration: CREATE INDEX CONCURRENTLY, non-transactional.",
    "require-concurrent-index-deletion": "DropIndex(...): DROP INDEX CONCURRENTLY.",
    "adding-not-nullable-field": "SetNotNull(...): CHECK NOT VALID, VALIDATE, SET NOT NULL, DROP CHECK.",
    "adding-field-with-default": "AddColumn(...) with a constant default, or nullable + RunBackfill + SetDefault.",
    "adding-foreign-key-constraint": "AddConstraint(..., 'FOREIGN KEY ...'): NOT VALID, then VALIDATE separately.",
    "constraint-missing-not-valid": "AddConstraint(...): NOT VALID, then VALIDATE in its own transaction.",
    "disallowed-unique-constraint": "AddUniqueConstraint(...): concurrent unique index, then ADD CONSTRAINT USING INDEX.",
    "renaming-column": "ExpandColumn(...) now, ContractColumn(...) in a later migration after the deploy.",
    "renaming-table": "Create the new table, sync, switch readers, drop the old one later (expand/contract).",
    "changing-column-type": "ExpandColumn(..., new_type=..., to_new=..., to_old=...), then ContractColumn later.",
    "ban-drop-column": "ContractColumn(...) in a migration shipped after no code reads the column.",
    "require-lock-timeout": "Write SQL migrations with sql_migration/toolkit_migration: they set lock_timeout.",
    "raw-before-generated": "Move the raw SQL into a later migration than the one creating its table.",
    "no-backwards": "Give the migration a BACKWARDS (or use toolkit steps, which all have one).",
    "concurrently-in-transaction": "Use CreateIndex/DropIndex steps in a toolkit migration (non-transactional).",
    "unrendered-operation": "Write the change as SQL or toolkit steps, or justify it in LINT_ALLOW after review.",
    "snapshot-runs-sql": "Put the SQL in FORWARDS/BACKWARDS (sql_migration) or STEPS (toolkit_migration); snapshot records may follow on its manager.",
    "migration-id": "Create migrations with a fresh timestamp id (piccolo migrations new taskql), file named after it.",
}


@dataclass(frozen=True)
class Finding:
    migration: str
    rule: str
    message: str
    line: int | None = None
    allowed_because: str | None = None

    def describe(self) -> str:
        where = f"{self.migration}" + (f":{self.line}" if self.line else "")
        if self.allowed_because:
            return f"allowed  {where} {self.rule}: {self.allowed_because}"
        recipe = RECIPES.get(self.rule, "see docs/operations/migrations.md")
        return f"FAIL     {where} {self.rule}: {self.message}\n         safe recipe: {recipe}"


@dataclass(frozen=True)
class Rendered:
    path: Path
    module: ModuleType
    sql: str


def _timeouts(local: bool) -> str:
    scope = "LOCAL " if local else ""
    return (
        f"SET {scope}lock_timeout = {DEFAULT_POLICY.lock_timeout_ms};\n"
        f"SET {scope}statement_timeout = {DEFAULT_POLICY.statement_timeout_ms};\n"
    )


def render(module: ModuleType) -> str:
    """The forwards SQL of a migration as the runner sends it."""
    if hasattr(module, "STEPS"):
        parts = []
        for step in module.STEPS:
            for group in step.sql():
                if len(group) == 1 and not group[0].transactional:
                    parts.append(_timeouts(local=False) + group[0].sql + ";\n")
                else:
                    body = "".join(statement.sql + ";\n" for statement in group)
                    parts.append("BEGIN;\n" + _timeouts(local=True) + body + "COMMIT;\n")
        return "".join(parts)
    if hasattr(module, "FORWARDS"):
        forwards: str = module.FORWARDS
        return "BEGIN;\n" + _timeouts(local=True) + forwards.strip() + "\nCOMMIT;\n"
    if _snapshot_only(module):
        return ""
    return _preview(module)


def _snapshot_only(module: ModuleType) -> bool:
    """A snapshot migration (``db.migrate.snapshot_migration``): Piccolo operations that are
    records for the auto-migration snapshot only, and no SQL."""
    if hasattr(module, "FORWARDS") or hasattr(module, "STEPS"):
        return False
    manager = asyncio.run(module.forwards())
    return isinstance(manager, ReviewedMigrationManager)


def _preview(module: ModuleType) -> str:
    """SQL of a Piccolo-generated migration: its table and column additions, rendered by
    Piccolo's own query classes without a database. Other generated operations are flagged
    (``unrendered-operation``) so a person reviews them."""
    from piccolo.apps.migrations.auto.migration_manager import MigrationManager
    from piccolo.table import create_table_class

    from db.engine import DB

    manager: MigrationManager = asyncio.run(module.forwards())
    statements = []
    new_tables = {t.class_name for t in manager.add_tables}
    for table in manager.add_tables:
        columns = {
            c.column._meta.name: c.column
            for c in manager.add_columns.for_table_class_name(table.class_name)
        }
        cls = create_table_class(
            table.class_name,
            class_kwargs={"tablename": table.tablename, "db": DB},
            class_members=columns,
        )
        statements += [str(query) for query in cls.create_table().ddl]
    for added in manager.add_columns.add_columns:
        if added.table_class_name in new_tables:
            continue
        cls = create_table_class(
            added.table_class_name, class_kwargs={"tablename": added.tablename, "db": DB}
        )
        statements += [
            str(query)
            for query in cls.alter().add_column(added.column._meta.name, added.column).ddl
        ]
    sql = "".join(statement.rstrip(";") + ";\n" for statement in statements)
    wrap = getattr(manager, "wrap_in_transaction", True)
    return ("BEGIN;\n" + _timeouts(True) + sql + "COMMIT;\n") if wrap else sql


UNRENDERED = (
    "drop_tables",
    "rename_tables",
    "change_table_schemas",
    "drop_columns",
    "rename_columns",
    "alter_columns",
    "add_constraints",
    "drop_constraints",
)


def _structure_findings(path: Path, module: ModuleType, previous_id: str | None) -> list[Finding]:
    name = path.name
    findings = []
    migration_id = getattr(module, "ID", "")
    match = _FILE_ID.match(name)
    expected = "{}-{}-{}T{}:{}:{}:{}".format(*match.groups()) if match else None
    if expected != migration_id:
        findings.append(
            Finding(name, "migration-id", f"id {migration_id!r} does not match the file name")
        )
    if previous_id is not None and migration_id <= previous_id:
        findings.append(
            Finding(name, "migration-id", f"id {migration_id!r} is not after {previous_id!r}")
        )
    manager = asyncio.run(module.forwards())
    if hasattr(module, "FORWARDS"):
        if not getattr(module, "BACKWARDS", "").strip():
            findings.append(Finding(name, "no-backwards", "FORWARDS has no BACKWARDS"))
        if manager.wrap_in_transaction and _CONCURRENTLY.search(
            _COMMENT.sub("", module.FORWARDS + getattr(module, "BACKWARDS", ""))
        ):
            findings.append(
                Finding(
                    name,
                    "concurrently-in-transaction",
                    "CONCURRENTLY inside a transactional migration",
                )
            )
    elif hasattr(module, "STEPS"):
        pass  # toolkit steps all have their backwards
    elif isinstance(manager, ReviewedMigrationManager):
        # Its generated operations are snapshot records that never run: nothing to lint but
        # that it runs nothing either (a snapshot migration has no raw steps).
        if manager.raw or manager.raw_backwards:
            findings.append(
                Finding(
                    name,
                    "snapshot-runs-sql",
                    "steps the linter cannot render (no FORWARDS or STEPS in the module); "
                    "a snapshot migration runs nothing",
                )
            )
    else:
        if manager.raw and not manager.raw_backwards:
            findings.append(Finding(name, "no-backwards", "raw SQL without add_raw_backwards"))
        if manager.raw and manager.add_tables:
            findings.append(
                Finding(
                    name,
                    "raw-before-generated",
                    "add_raw runs before this migration's add_table operations",
                )
            )
        for operation in UNRENDERED:
            value = getattr(manager, operation)
            if getattr(value, operation, value):
                findings.append(
                    Finding(
                        name,
                        "unrendered-operation",
                        f"generated {operation} cannot be linted: review its SQL "
                        "(piccolo migrations forwards taskql --preview) and justify it",
                    )
                )
    return findings


def _squawk(rendered: list[Rendered]) -> list[Finding]:
    squawk = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    with tempfile.TemporaryDirectory() as directory:
        files = {}
        for item in rendered:
            target = Path(directory) / (item.path.stem + ".sql")
            target.write_text(item.sql)
            files[str(target)] = item.path.name
        result = subprocess.run(
            [squawk, "--pg-version", MIN_POSTGRES, "--reporter", "json", *files],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode not in (0, 1) or not result.stdout.strip().startswith("["):
        raise RuntimeError(f"squawk failed: {result.stderr.strip() or result.stdout.strip()}")
    return [
        Finding(
            files.get(item["file"], item["file"]),
            item["rule_name"],
            item["message"],
            item.get("line"),
        )
        for item in json.loads(result.stdout)
    ]


def lint(directory: Path = MIGRATIONS_DIR) -> list[Finding]:
    """Every finding for the migrations in ``directory``, allowed ones marked as such."""
    paths = sorted(p for p in directory.glob("*.py") if p.name != "__init__.py")
    modules = {path: _load(path) for path in paths}
    findings: list[Finding] = []
    previous: str | None = None
    rendered = []
    for path, module in modules.items():
        findings += _structure_findings(path, module, previous)
        previous = getattr(module, "ID", previous)
        rendered.append(Rendered(path, module, render(module)))
    findings += _squawk(rendered)
    allowed = {path.name: getattr(module, "LINT_ALLOW", {}) for path, module in modules.items()}
    result = []
    for finding in findings:
        reason = allowed.get(finding.migration, {}).get(finding.rule)
        if reason and len(reason.strip()) >= 10:
            finding = Finding(
                finding.migration, finding.rule, finding.message, finding.line, reason.strip()
            )
        result.append(finding)
    return result
