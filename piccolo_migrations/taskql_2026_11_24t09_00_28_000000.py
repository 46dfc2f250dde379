"""Log-in by e-mail uses an index under row-level security: ``users.email_key``.

Log-in ran ``SELECT … FROM users WHERE lower(email) = lower($1)`` with ``app.login_email``
set, and ``users_visible`` (migration 5) is ``id = <user> OR lower(email) = lower(<login
e-mail>) OR EXISTS (<shared membership>)``. ``lower()`` is not LEAKPROOF, so PostgreSQL may
not evaluate the query's own ``lower(email) = …`` before the policy (it could leak other
rows' e-mails through an error), hence may not use it as an index condition; and the
policy's OR with an EXISTS is no index condition either. Every log-in was a sequential scan
of users: 406 ms at 1,000,000 users (EXPLAIN in docs/architecture/database.md).

The fix: a stored lower-case key, ``email_key = lower(email)``, compared with text ``=``,
which is LEAKPROOF, so ``WHERE email_key = lower($1)`` is an index condition under RLS
(``lower($1)`` is applied to the parameter, not to a column). The policy compares the same
column: ``email_key = (SELECT lower(<login e-mail>))``. Log-in still shows exactly the one
row whose e-mail is being checked, and nothing when there is none: what a log-in reveals
about other users does not change.

Why not the alternatives:

- Lower-casing e-mails on write (``email = $1``): it changes the stored data (the address as
  the user typed it, shown back to them), needs a backfill UPDATE of ``email`` itself, and
  every writer (sign-up, invitations, imports) must remember to normalize; a missed one is a
  user who cannot log in. The key is kept by a trigger: no writer can forget it or forge it.
- A SECURITY DEFINER lookup: it must bypass RLS (be owned by ``taskql_maintenance``) and
  would hand the server role a function that reads any user's password hash by e-mail; the
  policy already says exactly which row log-in may see, and with a leakproof comparison the
  planner can use the index without anyone bypassing RLS.
- A generated column: ``ADD COLUMN … GENERATED ALWAYS AS (lower(email)) STORED`` rewrites
  users under an ACCESS EXCLUSIVE lock (downtime); virtual generated columns (PG 18) cannot
  be indexed, and PostgreSQL 15-17 have none.

The steps (toolkit, each in its own short transaction or none; no long lock):

1. ``ADD COLUMN email_key text`` (nullable, no default: catalog only).
2. ``users_set_email_key``: BEFORE INSERT OR UPDATE, ``NEW.email_key := lower(NEW.email)``
   on every write (so it cannot be set to anything else), in place before the backfill.
3. Backfill in committed keyset batches (``db.migrate.backfill``). The rows' ``updated_at``
   moves to the backfill's time (``set_updated_at`` fires on every UPDATE).
4. ``CHECK (email_key IS NOT NULL)`` added NOT VALID, then VALIDATEd in a transaction of
   its own (reads and writes go on during the scan). It stays a CHECK, not ``SET NOT
   NULL``: the column is written by the trigger only, and Piccolo's ``required`` (which a
   NOT NULL column without a default gets in db/tables.py) would refuse every insert that
   does not name it.
5. ``CREATE UNIQUE INDEX CONCURRENTLY users_email_key_key ON users (email_key)``; the old
   expression index ``users_email_lower_key ON users (lower(email))`` is dropped
   CONCURRENTLY (it would duplicate it: same values) and the new one takes its name
   (``ALTER INDEX … RENAME``: SHARE UPDATE EXCLUSIVE), so the unique violation the API maps
   to its CONFLICT error keeps its name, for the code deployed before and after.
6. ``ALTER POLICY users_visible``: the log-in arm compares ``email_key`` (ACCESS EXCLUSIVE,
   catalog only, under the lock timeout with retries). Code deployed before this migration
   (``lower(email) = lower($1)``) still finds its row; the new query needs the column, so it
   ships with or after this migration.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Text
from piccolo.columns.indexes import IndexMethod

from db.migrate.backfill import Backfill
from db.migrate.toolkit import (
    AddColumn,
    AddConstraint,
    CreateIndex,
    DropIndex,
    RawSql,
    RunBackfill,
    toolkit_migration,
)

ID = "2026-11-24T09:00:28:000000"
VERSION = "1.38.0"
LINT_ALLOW = {
    "renaming-object": "an index, not a table or column: no client names it; the new index takes "
    "the name of the one it replaces so that the unique violation the API maps to CONFLICT "
    "(api/mutations/base.py) keeps its name for code deployed before and after",
}
DESCRIPTION = "users.email_key = lower(email): log-in by e-mail uses an index under RLS"

ORG = "(SELECT NULLIF(current_setting('app.organization_id', true), '')::uuid)"
USER = "(SELECT NULLIF(current_setting('app.user_id', true), '')::uuid)"
LOGIN_EMAIL = "(SELECT NULLIF(current_setting('app.login_email', true), ''))"
LOGIN_KEY = "(SELECT lower(NULLIF(current_setting('app.login_email', true), '')))"


def _users_visible(login_arm: str) -> str:
    return f"""ALTER POLICY users_visible ON users
    USING (id = {USER}
           OR {login_arm}
           OR EXISTS (SELECT 1 FROM organization_members m
                      WHERE m.user_id = users.id AND m.organization_id = {ORG}))"""


TRIGGER = """
CREATE OR REPLACE FUNCTION users_set_email_key() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    NEW.email_key := lower(NEW.email);
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION users_set_email_key() IS
    'Keeps users.email_key = lower(email): the log-in key, compared with leakproof text =.';
DROP TRIGGER IF EXISTS users_set_email_key ON users;
CREATE TRIGGER users_set_email_key BEFORE INSERT OR UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_set_email_key();
"""

TRIGGER_BACKWARDS = """
DROP TRIGGER IF EXISTS users_set_email_key ON users;
DROP FUNCTION IF EXISTS users_set_email_key();
"""

OLD_INDEX = CreateIndex("users_email_lower_key", "users", "(lower(email))", unique=True)

STEPS = [
    AddColumn("users", "email_key", "text"),
    RawSql(TRIGGER, TRIGGER_BACKWARDS),
    RunBackfill(
        Backfill(
            name="users_email_key",
            table="users",
            assignments="email_key = lower(t.email)",
            pending="t.email_key IS DISTINCT FROM lower(t.email)",
            batch_size=10_000,
        )
    ),
    AddConstraint("users", "users_email_key_present", "CHECK (email_key IS NOT NULL)"),
    CreateIndex("users_email_key_key", "users", "(email_key)", unique=True),
    DropIndex("users_email_lower_key", OLD_INDEX),
    RawSql(
        "ALTER INDEX users_email_key_key RENAME TO users_email_lower_key",
        "ALTER INDEX users_email_lower_key RENAME TO users_email_key_key",
    ),
    RawSql(
        _users_visible(f"email_key = {LOGIN_KEY}"),
        _users_visible(f"lower(email) = lower({LOGIN_EMAIL})"),
    ),
]


async def forwards() -> MigrationManager:
    manager = toolkit_migration(ID, DESCRIPTION, STEPS)
    manager.add_column(
        table_class_name="User",
        tablename="users",
        column_name="email_key",
        db_column_name="email_key",
        column_class_name="Text",
        column_class=Text,
        params={
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )
    return manager
