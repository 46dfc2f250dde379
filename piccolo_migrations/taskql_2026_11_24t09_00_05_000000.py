"""Row-level security on every table holding tenant or personal data, and the server grants."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration

ID = "2026-11-24T09:00:05:000000"
VERSION = "1.38.0"
DESCRIPTION = "row-level security (enabled and forced) and grants to taskql_server"

# The scalar sub-select makes each setting one InitPlan per statement, not a call per row;
# NULLIF turns the '' a pooled connection reads after a local setting ended into NULL, and
# NULL matches no row: no tenant set means no rows, never an error and never all rows.
ORG = "(SELECT NULLIF(current_setting('app.organization_id', true), '')::uuid)"
USER = "(SELECT NULLIF(current_setting('app.user_id', true), '')::uuid)"
LOGIN_EMAIL = "(SELECT NULLIF(current_setting('app.login_email', true), ''))"
TOKEN_HASH = "(SELECT decode(NULLIF(current_setting('app.session_token_hash', true), ''), 'hex'))"

TENANT_TABLES = ("projects", "tasks", "task_comments")
ALL_TABLES = (
    "users",
    "sessions",
    "organizations",
    "organization_members",
    *TENANT_TABLES,
    "audit_logs",
)

FORWARDS = (
    r"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'taskql_server') THEN
        RAISE EXCEPTION 'role taskql_server does not exist'
            USING HINT = 'Create the roles first: taskql db bootstrap --admin-url ... (see README)';
    END IF;
END
$$;
"""
    + "".join(
        f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;\nALTER TABLE {t} FORCE ROW LEVEL SECURITY;\n"
        for t in ALL_TABLES
    )
    + "".join(
        f"""
CREATE POLICY {t}_tenant_isolation ON {t}
    USING (organization_id = {ORG}) WITH CHECK (organization_id = {ORG});
"""
        for t in TENANT_TABLES
    )
    + f"""
-- Organizations: the current tenant, plus (read-only) those the current user belongs to.
CREATE POLICY organizations_current ON organizations
    USING (id = {ORG}) WITH CHECK (id = {ORG});
CREATE POLICY organizations_mine ON organizations FOR SELECT
    USING (EXISTS (SELECT 1 FROM organization_members m
                   WHERE m.organization_id = organizations.id AND m.user_id = {USER}));

-- Members: the current tenant's, plus (read-only) the current user's own memberships, which
-- is how a request resolves its tenant and role before a tenant is set.
CREATE POLICY organization_members_tenant_isolation ON organization_members
    USING (organization_id = {ORG}) WITH CHECK (organization_id = {ORG});
CREATE POLICY organization_members_mine ON organization_members FOR SELECT
    USING (user_id = {USER});

-- Users: yourself, and the members of the current tenant (members policy above narrows
-- the sub-select to it); log-in reads exactly the row of the e-mail being checked.
CREATE POLICY users_visible ON users FOR SELECT
    USING (id = {USER}
           OR lower(email) = lower({LOGIN_EMAIL})
           OR EXISTS (SELECT 1 FROM organization_members m
                      WHERE m.user_id = users.id AND m.organization_id = {ORG}));
CREATE POLICY users_insert_self ON users FOR INSERT WITH CHECK (id = {USER});
CREATE POLICY users_update_self ON users FOR UPDATE USING (id = {USER}) WITH CHECK (id = {USER});
CREATE POLICY users_delete_self ON users FOR DELETE USING (id = {USER});

-- Sessions: your own, and the one whose token is being authenticated.
CREATE POLICY sessions_own ON sessions
    USING (user_id = {USER} OR token_hash = {TOKEN_HASH})
    WITH CHECK (user_id = {USER});

-- Audit log: read your tenant's. Only the audit trigger (SECURITY DEFINER, owner) writes;
-- the server role has no INSERT privilege, so the write policy need not narrow further:
-- a trigger on another tenant's rows cannot fire, as RLS hides those rows.
CREATE POLICY audit_logs_tenant_read ON audit_logs FOR SELECT USING (organization_id = {ORG});
CREATE POLICY audit_logs_trigger_write ON audit_logs FOR INSERT WITH CHECK (true);

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO taskql_server;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    users, sessions, organizations, organization_members, projects, tasks, task_comments
    TO taskql_server;
GRANT SELECT ON audit_logs TO taskql_server;
GRANT EXECUTE ON FUNCTION app_setting(text) TO taskql_server;
"""
)

BACKWARDS = (
    f"""
REVOKE ALL ON {", ".join(ALL_TABLES)} FROM taskql_server;
REVOKE EXECUTE ON FUNCTION app_setting(text) FROM taskql_server;
REVOKE USAGE ON SCHEMA public FROM taskql_server;
GRANT USAGE ON SCHEMA public TO PUBLIC;
DROP POLICY audit_logs_trigger_write ON audit_logs;
DROP POLICY audit_logs_tenant_read ON audit_logs;
DROP POLICY sessions_own ON sessions;
DROP POLICY users_delete_self ON users;
DROP POLICY users_update_self ON users;
DROP POLICY users_insert_self ON users;
DROP POLICY users_visible ON users;
DROP POLICY organization_members_mine ON organization_members;
DROP POLICY organization_members_tenant_isolation ON organization_members;
DROP POLICY organizations_mine ON organizations;
DROP POLICY organizations_current ON organizations;
"""
    + "".join(f"DROP POLICY {t}_tenant_isolation ON {t};\n" for t in TENANT_TABLES)
    + "".join(
        f"ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY;\nALTER TABLE {t} DISABLE ROW LEVEL SECURITY;\n"
        for t in ALL_TABLES
    )
)


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
