"""app_begin_request(): authenticate and set the tenant context in ONE statement.

Until now a request cost two transactions on two pooled connections: ``app_authenticate``
(its own implicit transaction, then the pool's reset), then the operation's transaction whose
first statement set the context. The middleware now opens the operation's transaction first
and calls this function as its first statement: it authenticates the session token, checks
the membership in the named tenant, and sets every transaction-local setting the policies
and the audit trigger read, exactly as ``SET_CONTEXT_SQL`` (``db/tenancy.py``) does, with
the user id and role taken from the database rather than from the caller. A session that is
not found sets nothing beyond ``app_authenticate``'s own user lookup, and the caller rolls the
transaction back; a tenant the user is not a member of gets no tenant setting.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:13:000000"
VERSION = "1.38.0"
DESCRIPTION = "app_begin_request(): authentication and tenant settings in one statement"

FORWARDS = r"""
CREATE FUNCTION app_begin_request(
    p_token_hash bytea, p_organization_id uuid, p_organization_slug text,
    p_request_id text, p_client_ip text, p_user_agent text, p_statement_timeout text
)
RETURNS TABLE (
    session_id uuid, user_id uuid, email text, display_name text, expires_at timestamptz,
    organization_id uuid, organization_slug text, organization_name text, role text
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
#variable_conflict use_column
DECLARE
    found record;
BEGIN
    SELECT * INTO found FROM app_authenticate(p_token_hash, p_organization_id, p_organization_slug);
    IF found.session_id IS NULL THEN
        PERFORM set_config('app.user_id', '', true);
        RETURN;
    END IF;
    PERFORM set_config('app.organization_id', coalesce(found.organization_id::text, ''), true),
            set_config('app.user_id', found.user_id::text, true),
            set_config('app.role', coalesce(found.role, ''), true),
            set_config('app.request_id', coalesce(p_request_id, ''), true),
            set_config('app.client_ip', coalesce(p_client_ip, ''), true),
            set_config('app.user_agent', coalesce(left(p_user_agent, 512), ''), true);
    IF coalesce(p_statement_timeout, '') <> '' THEN
        PERFORM set_config('statement_timeout', p_statement_timeout, true);
    END IF;
    RETURN QUERY SELECT found.session_id, found.user_id, found.email, found.display_name,
                        found.expires_at, found.organization_id, found.organization_slug,
                        found.organization_name, found.role;
END
$$;
REVOKE EXECUTE ON FUNCTION app_begin_request(bytea, uuid, text, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_begin_request(bytea, uuid, text, text, text, text, text) TO taskql_server;
"""

BACKWARDS = """
DROP FUNCTION app_begin_request(bytea, uuid, text, text, text, text, text);
"""


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
