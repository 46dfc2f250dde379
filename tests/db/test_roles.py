"""The server role: cannot bypass row-level security, owns nothing, holds only its grants."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from db import roles
from tests.conftest import ScratchDatabase, admin_url

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
    "task_counts",
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
        "AND c.table_name NOT LIKE 'audit_logs\\_%' "
        "AND c.table_name IN (SELECT tablename FROM pg_tables WHERE schemaname = 'public')"
    )
    assert unprotected == []


async def test_views_read_tenant_tables_under_their_policies(owner: asyncpg.Connection) -> None:
    """A view runs with its owner's privileges: that owner must be subject to the tables'
    (FORCEd) policies, never a role that bypasses them."""
    rows = await owner.fetch(
        "SELECT DISTINCT v.relname, o.rolname, o.rolbypassrls, o.rolsuper, t.relname AS reads, "
        "t.relforcerowsecurity "
        "FROM pg_class v JOIN pg_roles o ON o.oid = v.relowner "
        "JOIN pg_rewrite w ON w.ev_class = v.oid "
        "JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid "
        "JOIN pg_class t ON t.oid = d.refobjid AND t.oid <> v.oid "
        "WHERE v.relkind = 'v' AND v.relnamespace = 'public'::regnamespace"
    )
    assert {(r["relname"], r["reads"]) for r in rows} == {("audit_entries", "audit_logs")}
    for row in rows:
        assert not row["rolbypassrls"], row["rolname"]
        assert not row["rolsuper"], row["rolname"]
        assert row["relforcerowsecurity"], row["reads"]


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
        "migration": "SELECT",  # migration 19: serve and /readyz check the history
        "audit_entries": "SELECT",
        # Written only by the capture trigger; read under the subscriber's tenant.
        "realtime_events": "SELECT",
        # Written only by the counting triggers on tasks (migration 27).
        "task_counts": "SELECT",
    }
    # audit_logs: every column but the network details (admins read those through the view).
    columns = await owner.fetch(
        "SELECT column_name FROM information_schema.column_privileges "
        "WHERE grantee = 'taskql_server' AND table_name = 'audit_logs' AND privilege_type = 'SELECT'"
    )
    assert {c["column_name"] for c in columns} == {
        "id",
        "organization_id",
        "actor_id",
        "action",
        "entity_type",
        "entity_id",
        "changes",
        "created_at",
    }


async def test_the_server_role_reads_but_cannot_change_migration_history(
    server_connection: asyncpg.Connection,
) -> None:
    """It reads it (migration 19: `taskql serve` and /readyz check the migrations as the
    server role); it may not write it."""
    assert await server_connection.fetchval("SELECT count(*) FROM migration") > 0
    for statement in (
        "INSERT INTO migration (name, app_name, ran_on) VALUES ('x', 'taskql', now())",
        "UPDATE migration SET name = name",
        "DELETE FROM migration",
        "TRUNCATE migration",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await server_connection.execute(statement)


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


# --- roles per database (issue 11, finding 7) ---------------------------------------------


def _admin_dsn(test_database: ScratchDatabase) -> str:
    """A superuser URL of the cluster the tests run on (``tests.conftest.admin_url``)."""
    return admin_url(test_database)


async def _connects(dsn: str) -> bool:
    try:
        connection = await asyncpg.connect(dsn, timeout=10)
    except asyncpg.InsufficientPrivilegeError:
        return False
    try:
        assert await connection.fetchval("SELECT 1") == 1
    finally:
        await connection.close()
    return True


@pytest.fixture
async def two_databases(
    test_database: ScratchDatabase,
) -> AsyncIterator[tuple[str, dict[str, roles.RoleNames]]]:
    admin = _admin_dsn(test_database)
    suffix = os.getpid()
    names = {
        f"taskql_iso{suffix}_{side}": roles.RoleNames.for_database(f"taskql_iso{suffix}_{side}")
        for side in ("a", "b")
    }
    for database, role_names in names.items():
        await roles.drop_database(admin, database, (role_names.owner, role_names.server_login))
        await roles.bootstrap(admin, database, role_names)
    yield admin, names
    for database, role_names in names.items():
        await roles.drop_database(admin, database, (role_names.owner, role_names.server_login))


async def test_a_database_login_cannot_connect_to_another_database_of_the_cluster(
    two_databases: tuple[str, dict[str, roles.RoleNames]],
) -> None:
    admin, names = two_databases
    (db_a, roles_a), (db_b, roles_b) = names.items()
    for own, mine, other in ((db_a, roles_a, db_b), (db_b, roles_b, db_a)):
        for login in (mine.server_login, mine.owner):
            assert await _connects(roles.role_url(admin, login, None, own)), (login, own)
            assert not await _connects(roles.role_url(admin, login, None, other)), (login, other)


async def test_bootstrap_again_revokes_connect_a_database_gave_the_shared_group(
    two_databases: tuple[str, dict[str, roles.RoleNames]],
) -> None:
    admin, names = two_databases
    (_db_a, roles_a), (db_b, roles_b) = names.items()
    # As bootstrap did before roles were per database: CONNECT for the shared group.
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'GRANT CONNECT ON DATABASE "{db_b}" TO {roles.SERVER_GROUP}')
    finally:
        await conn.close()
    assert await _connects(roles.role_url(admin, roles_a.server_login, None, db_b))
    await roles.bootstrap(admin, db_b, roles_b)
    assert not await _connects(roles.role_url(admin, roles_a.server_login, None, db_b))
    assert await _connects(roles.role_url(admin, roles_b.server_login, None, db_b))


async def test_bootstrap_refuses_a_login_that_serves_another_database(
    two_databases: tuple[str, dict[str, roles.RoleNames]],
) -> None:
    admin, names = two_databases
    (db_a, roles_a), (db_b, roles_b) = names.items()
    shared = roles.RoleNames(owner=roles_b.owner, server_login=roles_a.server_login)
    with pytest.raises(roles.RoleInUse, match=db_a):
        await roles.bootstrap(admin, db_b, shared)
    assert not await _connects(roles.role_url(admin, roles_a.server_login, None, db_b))


async def test_the_server_group_holds_connect_on_no_database(owner: asyncpg.Connection) -> None:
    granted = await owner.fetch(
        "SELECT d.datname FROM pg_database d, aclexplode(d.datacl) a "
        "WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)",
        roles.SERVER_GROUP,
    )
    assert granted == []


async def test_the_server_login_plans_its_statements_generically(
    server_connection: asyncpg.Connection, owner: asyncpg.Connection
) -> None:
    """The server login's sessions in its database use generic plans (``bootstrap``: one
    plan per prepared statement, no re-planning per execution); other roles keep the
    server's default, and the setting is the role's, not a session's leftover."""
    assert await server_connection.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    assert await owner.fetchval("SHOW plan_cache_mode") == "auto"
    setting = await owner.fetchval(
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
        "JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE r.rolname = $1 AND d.datname = current_database()",
        await server_connection.fetchval("SELECT current_user"),
    )
    assert setting == ["plan_cache_mode=force_generic_plan"]
