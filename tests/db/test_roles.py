"""The server role: cannot bypass row-level security, owns nothing, holds only its grants."""

from __future__ import annotations

import asyncpg

TABLES = (
    "users",
    "sessions",
    "organizations",
    "organization_members",
    "organization_invitations",
    "projects",
    "tasks",
    "task_comments",
    "audit_logs",
    "realtime_events",
)


async def test_the_server_role_cannot_bypass_rls(server_connection: asyncpg.Connection) -> None:
    rows = await server_connection.fetch(
        "SELECT rolname, rolbypassrls, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
        "WHERE rolname IN (current_user, 'taskql_server')"
    )
    assert len(rows) == 2
    for row in rows:
        assert not row["rolbypassrls"], row["rolname"]
        assert not row["rolsuper"], row["rolname"]
        assert not row["rolcreaterole"], row["rolname"]
        assert not row["rolcreatedb"], row["rolname"]


async def test_the_server_role_owns_nothing(server_connection: asyncpg.Connection) -> None:
    owned = await server_connection.fetch(
        "SELECT c.relname FROM pg_class c "
        "WHERE c.relowner IN (SELECT oid FROM pg_roles WHERE rolname IN (current_user, 'taskql_server'))"
    )
    functions = await server_connection.fetch(
        "SELECT proname FROM pg_proc "
        "WHERE proowner IN (SELECT oid FROM pg_roles WHERE rolname IN (current_user, 'taskql_server'))"
    )
    assert owned == []
    assert functions == []


async def test_rls_is_enabled_and_forced_on_every_table(owner: asyncpg.Connection) -> None:
    rows = await owner.fetch(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') "
        "AND relname NOT LIKE 'migration%' AND NOT relispartition"
    )
    assert {r["relname"] for r in rows} == set(TABLES)
    for row in rows:
        assert row["relrowsecurity"], row["relname"]
        assert row["relforcerowsecurity"], row["relname"]


async def test_every_table_with_a_tenant_column_has_a_policy_on_it(
    owner: asyncpg.Connection,
) -> None:
    unprotected = await owner.fetch(
        "SELECT DISTINCT c.table_name FROM information_schema.columns c "
        "WHERE c.table_schema = 'public' AND c.column_name = 'organization_id' "
        "AND NOT EXISTS (SELECT 1 FROM pg_policies p WHERE p.tablename = c.table_name "
        "                AND p.qual LIKE '%app.organization_id%')"
        "AND c.table_name NOT LIKE 'audit_logs\\_%'"
    )
    assert unprotected == []


async def test_the_server_role_has_only_the_grants_it_needs(owner: asyncpg.Connection) -> None:
    rows = await owner.fetch(
        "SELECT table_name, string_agg(privilege_type, ',' ORDER BY privilege_type) AS privileges "
        "FROM information_schema.role_table_grants WHERE grantee = 'taskql_server' GROUP BY table_name"
    )
    grants = {r["table_name"]: r["privileges"] for r in rows}
    writable = "DELETE,INSERT,SELECT,UPDATE"
    assert grants == {
        "users": writable,
        "sessions": writable,
        "organizations": writable,
        "organization_members": writable,
        # Invitations are answered or revoked, never deleted (history; CASCADE with the tenant).
        "organization_invitations": "INSERT,SELECT,UPDATE",
        "projects": writable,
        "tasks": writable,
        "task_comments": writable,
        "audit_logs": "SELECT",
        # Written only by the capture trigger; read under the subscriber's tenant.
        "realtime_events": "SELECT",
    }


async def test_the_server_role_cannot_touch_migration_history(
    server_connection: asyncpg.Connection,
) -> None:
    try:
        await server_connection.fetch("SELECT * FROM migration")
    except asyncpg.InsufficientPrivilegeError:
        return
    raise AssertionError("the server role can read the migration table")


async def test_only_the_owner_can_become_the_maintenance_role(owner: asyncpg.Connection) -> None:
    rows = await owner.fetch(
        "SELECT r.rolname, r.rolbypassrls, r.rolcanlogin, "
        "ARRAY(SELECT m.rolname FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member "
        "      WHERE a.roleid = r.oid ORDER BY 1) AS members "
        "FROM pg_roles r WHERE r.rolname = 'taskql_maintenance'"
    )
    assert len(rows) == 1
    assert rows[0]["rolbypassrls"]
    assert not rows[0]["rolcanlogin"]
    current = await owner.fetchval("SELECT current_user")
    assert current in rows[0]["members"]
    assert "taskql_server" not in rows[0]["members"]
    assert not any(m.endswith("_app") for m in rows[0]["members"])
