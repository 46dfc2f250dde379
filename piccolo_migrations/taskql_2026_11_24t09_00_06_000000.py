"""Authentication in one round trip, and role rules enforced by row-level security."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:06:000000"
VERSION = "1.38.0"
DESCRIPTION = "app_authenticate(); restrictive per-role write policies"

ROLE = "(SELECT NULLIF(current_setting('app.role', true), ''))"
USER = "(SELECT NULLIF(current_setting('app.user_id', true), '')::uuid)"
ADMINS = f"{ROLE} IN ('owner', 'admin')"
WRITERS = f"{ROLE} IN ('owner', 'admin', 'member')"

# (table, policy suffix, command, USING, WITH CHECK): RESTRICTIVE policies are ANDed with
# the tenant policies, so each narrows what the current role may write in its tenant.
RULES = [
    ("organizations", "owner_updates", "UPDATE", f"{ROLE} = 'owner'", f"{ROLE} = 'owner'"),
    ("organizations", "owner_deletes", "DELETE", f"{ROLE} = 'owner'", None),
    ("organizations", "owner_creates", "INSERT", None, f"{ROLE} = 'owner'"),
    # Admins manage members; only owners touch owners; anyone may leave.
    (
        "organization_members",
        "admin_adds",
        "INSERT",
        None,
        f"{ADMINS} AND (role <> 'owner' OR {ROLE} = 'owner')",
    ),
    (
        "organization_members",
        "admin_changes",
        "UPDATE",
        f"{ADMINS} AND (role <> 'owner' OR {ROLE} = 'owner')",
        f"{ADMINS} AND (role <> 'owner' OR {ROLE} = 'owner')",
    ),
    (
        "organization_members",
        "admin_removes_or_self_leaves",
        "DELETE",
        f"user_id = {USER} OR ({ADMINS} AND (role <> 'owner' OR {ROLE} = 'owner'))",
        None,
    ),
    ("projects", "admin_creates", "INSERT", None, ADMINS),
    ("projects", "admin_changes", "UPDATE", ADMINS, ADMINS),
    ("projects", "admin_deletes", "DELETE", ADMINS, None),
    ("tasks", "writer_creates", "INSERT", None, WRITERS),
    ("tasks", "writer_changes", "UPDATE", WRITERS, WRITERS),
    ("tasks", "writer_deletes", "DELETE", WRITERS, None),
    # A comment is written by its author; edited by its author (or soft-deleted by an admin).
    ("task_comments", "author_creates", "INSERT", None, f"{WRITERS} AND author_id = {USER}"),
    (
        "task_comments",
        "author_or_admin_changes",
        "UPDATE",
        f"author_id = {USER} OR {ADMINS}",
        f"author_id = {USER} OR {ADMINS}",
    ),
    ("task_comments", "admin_deletes", "DELETE", ADMINS, None),
]


def _policy(table: str, name: str, command: str, using: str | None, check: str | None) -> str:
    sql = f"CREATE POLICY {table}_{name} ON {table} AS RESTRICTIVE FOR {command}"
    if using is not None:
        sql += f"\n    USING ({using})"
    if check is not None:
        sql += f"\n    WITH CHECK ({check})"
    return sql + ";\n"


FORWARDS = r"""
-- Resolve a bearer token, and the tenant a request names, in one round trip. Runs as the
-- caller (the server role), so every row it reads passes row-level security: the token
-- hash makes exactly its session visible, then the session's user makes that user's
-- memberships visible. Outside a transaction block the settings end with the statement.
CREATE FUNCTION app_authenticate(p_token_hash bytea, p_organization_id uuid, p_organization_slug text)
RETURNS TABLE (
    session_id uuid, user_id uuid, email text, display_name text, expires_at timestamptz,
    organization_id uuid, organization_slug text, organization_name text, role text
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
#variable_conflict use_column
DECLARE
    found_session sessions%ROWTYPE;
BEGIN
    PERFORM set_config('app.session_token_hash', encode(p_token_hash, 'hex'), true);
    SELECT s.* INTO found_session FROM sessions s
    WHERE s.token_hash = p_token_hash AND s.revoked_at IS NULL AND s.expires_at > now();
    PERFORM set_config('app.session_token_hash', '', true);
    IF found_session.id IS NULL THEN
        RETURN;
    END IF;
    PERFORM set_config('app.user_id', found_session.user_id::text, true);
    RETURN QUERY
        SELECT found_session.id, u.id, u.email, u.display_name, found_session.expires_at,
               o.id, o.slug, o.name, m.role
        FROM users u
        LEFT JOIN (organizations o
                   JOIN organization_members m
                     ON m.organization_id = o.id AND m.user_id = found_session.user_id)
               ON (o.id = p_organization_id OR o.slug = p_organization_slug)
        WHERE u.id = found_session.user_id;
END
$$;
GRANT EXECUTE ON FUNCTION app_authenticate(bytea, uuid, text) TO taskql_server;
""" + "".join(_policy(*rule) for rule in RULES)

BACKWARDS = "".join(f"DROP POLICY {table}_{name} ON {table};\n" for table, name, *_ in RULES) + (
    "DROP FUNCTION app_authenticate(bytea, uuid, text);\n"
)


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
