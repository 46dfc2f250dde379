"""The acting user is set once per transaction; names, titles and comments need visible text.

- ``app_act_as(uuid)``: the one way the server's code names the acting user after the request
  began (sign-up and log-in, which run anonymously). It refuses when a user is already acting
  (``app.user_id`` set by ``app_begin_request`` or an earlier call): the audit trigger reads
  that setting, so a later change would let one mutation's audit rows name another account
  (issue 11, finding 1). The API also refuses an authentication mutation that is not alone in
  its operation (``api.cost``).
- ``app_has_visible_text(text)``: the blank rule of ``db.text`` (white space and invisible
  format characters do not count), and CHECK constraints using it on every required name,
  title and comment, added NOT VALID and then validated in a transaction of their own (reads
  and writes go on during the scan). The older ``*_present`` CHECKs stay: they also bound the
  lengths.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate.toolkit import AddConstraint, RawSql, toolkit_migration
from db.text import INVISIBLE_CLASS

ID = "2026-11-24T09:00:17:000000"
VERSION = "1.38.0"
DESCRIPTION = "app_act_as(): the actor is set once; visible-text CHECKs on names and titles"

FUNCTIONS = rf"""
CREATE FUNCTION app_has_visible_text(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.regexp_replace(value, '{INVISIBLE_CLASS}', '', 'g') <> '';
COMMENT ON FUNCTION app_has_visible_text(text) IS
    'True when the text holds a character that is neither white space nor an invisible format character (db/text.py).';
GRANT EXECUTE ON FUNCTION app_has_visible_text(text) TO taskql_server, taskql_maintenance;

CREATE FUNCTION app_act_as(p_user_id uuid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION 'app_act_as needs a user id' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF coalesce(current_setting('app.user_id', true), '') <> '' THEN
        RAISE EXCEPTION 'the acting user of this transaction is already set'
            USING ERRCODE = 'insufficient_privilege', CONSTRAINT = 'app_actor_fixed',
                  HINT = 'Sign up or log in in a request without a session token.';
    END IF;
    PERFORM set_config('app.user_id', p_user_id::text, true);
END
$$;
COMMENT ON FUNCTION app_act_as(uuid) IS
    'Name the acting user of a transaction that has none yet (sign-up, log-in); refuses to change it.';
REVOKE EXECUTE ON FUNCTION app_act_as(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_act_as(uuid) TO taskql_server;
"""

FUNCTIONS_BACKWARDS = """
DROP FUNCTION app_act_as(uuid);
DROP FUNCTION app_has_visible_text(text);
"""

VISIBLE = [
    ("users", "display_name"),
    ("organizations", "name"),
    ("projects", "name"),
    ("tasks", "title"),
    ("task_comments", "content"),
]

STEPS = [
    RawSql(FUNCTIONS, FUNCTIONS_BACKWARDS),
    *(
        AddConstraint(table, f"{table}_{column}_visible", f"CHECK (app_has_visible_text({column}))")
        for table, column in VISIBLE
    ),
]


async def forwards() -> MigrationManager:
    return toolkit_migration(ID, DESCRIPTION, STEPS)
