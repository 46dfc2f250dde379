"""Rules the API kept alone, now held by the database too: every organization keeps an owner,
and an audit entry's network details (request id, client address, user agent) are for
admins and owners only.

The last owner. ``organization_members_keep_an_owner`` is a constraint trigger, DEFERRABLE
INITIALLY DEFERRED: at commit, each organization that lost an owner row (demoted, removed,
moved) must still have one, so ownership can be handed over in either order inside one
transaction. It fires only for rows that were owners (``WHEN (OLD.role = 'owner')``). The
check runs as ``taskql_maintenance`` (BYPASSRLS): the transaction's tenant at commit may not
be the organization's (``createOrganization`` switches tenant and back), and RLS must not
hide its owners from the check. An organization that no longer exists (deleted, its members
cascaded) has nothing to check. It locks the organization's row (FOR NO KEY UPDATE) before
counting, so two transactions that each demote one of two owners cannot both commit. The
error is SQLSTATE 23000 with constraint ``organization_members_keep_an_owner``, which the API
maps to its CONFLICT error.

Network details. ``audit_entries`` is ``audit_logs`` with ``request_id``, ``ip_address`` and
``user_agent`` NULL unless ``app.role`` is admin or owner (one InitPlan per statement, so
the compiled history query stays one cheap statement). The server role loses SELECT on
those three columns of ``audit_logs`` (it keeps the others) and reads the view. The view is
owned by the owner role, not ``security_invoker``, so the server role needs no privilege on
the hidden columns; RLS still applies to every row it reads, because audit_logs' policies are
FORCEd on the owner too. It has no WHERE clause of its own, so it is inlined into the
caller's statement and its quals reach the audit_logs indexes as before.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:15:000000"
VERSION = "1.38.0"
DESCRIPTION = "last-owner constraint trigger; audit network details for admins only"

ROLE = "(SELECT NULLIF(current_setting('app.role', true), ''))"
#: Who may read an audit entry's network details (api/types/audit.py declares the same).
NETWORK_READERS = f"(SELECT {ROLE} IN ('owner', 'admin'))"
#: audit_logs' columns every member may read.
PUBLIC_COLUMNS = (
    "id, organization_id, actor_id, action, entity_type, entity_id, changes, created_at"
)

FORWARDS = rf"""
GRANT CREATE ON SCHEMA public TO taskql_maintenance;

CREATE FUNCTION organization_members_keep_an_owner() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    PERFORM FROM organizations o WHERE o.id = OLD.organization_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT FROM organization_members m
                   WHERE m.organization_id = OLD.organization_id AND m.role = 'owner') THEN
        RAISE EXCEPTION 'organization % would have no owner', OLD.organization_id
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'organization_members_keep_an_owner',
                  TABLE = 'organization_members',
                  HINT = 'Make someone else owner first.';
    END IF;
    RETURN NULL;
END
$$;
ALTER FUNCTION organization_members_keep_an_owner() OWNER TO taskql_maintenance;
REVOKE EXECUTE ON FUNCTION organization_members_keep_an_owner() FROM PUBLIC;

CREATE CONSTRAINT TRIGGER organization_members_keep_an_owner
    AFTER UPDATE OR DELETE ON organization_members
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.role = 'owner')
    EXECUTE FUNCTION organization_members_keep_an_owner();

REVOKE CREATE ON SCHEMA public FROM taskql_maintenance;

CREATE VIEW audit_entries AS
SELECT {PUBLIC_COLUMNS},
       CASE WHEN {NETWORK_READERS} THEN request_id END AS request_id,
       CASE WHEN {NETWORK_READERS} THEN ip_address END AS ip_address,
       CASE WHEN {NETWORK_READERS} THEN user_agent END AS user_agent
FROM audit_logs;
COMMENT ON VIEW audit_entries IS
    'audit_logs as the server reads it: network details only for admins and owners';

REVOKE SELECT ON audit_logs FROM taskql_server;
GRANT SELECT ({PUBLIC_COLUMNS}) ON audit_logs TO taskql_server;
GRANT SELECT ON audit_entries TO taskql_server;
"""

BACKWARDS = rf"""
REVOKE SELECT ON audit_entries FROM taskql_server;
REVOKE SELECT ({PUBLIC_COLUMNS}) ON audit_logs FROM taskql_server;
GRANT SELECT ON audit_logs TO taskql_server;
DROP VIEW audit_entries;
DROP TRIGGER organization_members_keep_an_owner ON organization_members;
DROP FUNCTION organization_members_keep_an_owner();
"""


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
