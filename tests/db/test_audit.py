"""The audit log: written by triggers with the actor, append-only for the server role,
partitioned by month, and never rejecting a row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from db import tables
from db.tenancy import SET_CONTEXT_SQL, tenant_transaction
from db.uuid7 import uuid7
from tests.seed import Tenant


def _month_start(months_ahead: int) -> datetime:
    now = datetime.now(UTC)
    year, month = divmod(now.month - 1 + months_ahead, 12)
    return datetime(now.year + year, month + 1, 1, tzinfo=UTC)


async def test_audit_rows_carry_actor_request_ip_and_user_agent(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    context = tenant_a.context(
        user_id=tenant_a.member_id,
        role="member",
        request_id="req-123",
        client_ip="203.0.113.7",
        user_agent="pytest/1.0",
    )
    async with tenant_transaction(context) as tx:
        await tx.connection.execute(
            "UPDATE tasks SET title = 'Renamed', priority = 3 WHERE id = $1", tenant_a.root_task_id
        )
    # The network details are for admins and owners (audit_entries, migration 15).
    async with tenant_transaction(tenant_a.context(role="admin")) as tx:
        row = await tx.connection.fetchrow(
            "SELECT actor_id, action, entity_type, changes, request_id, host(ip_address) AS ip, "
            "user_agent FROM audit_entries WHERE entity_id = $1 AND action = 'update'",
            tenant_a.root_task_id,
        )
    assert row["actor_id"] == tenant_a.member_id
    assert (row["action"], row["entity_type"]) == ("update", "tasks")
    assert (row["request_id"], row["ip"], row["user_agent"]) == (
        "req-123",
        "203.0.113.7",
        "pytest/1.0",
    )
    changes = json.loads(row["changes"])
    assert changes == {
        "before": {"title": "Root a", "priority": 0},
        "after": {"title": "Renamed", "priority": 3},
    }


async def test_inserts_and_deletes_are_audited_and_a_no_op_update_is_not(tenant_a: Tenant) -> None:
    async with tenant_transaction(tenant_a.context()) as tx:
        await tx.connection.execute(
            "UPDATE tasks SET title = title WHERE id = $1", tenant_a.child_task_id
        )
        await tx.connection.execute("DELETE FROM tasks WHERE id = $1", tenant_a.child_task_id)
        actions = [
            r["action"]
            for r in await tx.connection.fetch(
                "SELECT action FROM audit_logs WHERE entity_id = $1 ORDER BY created_at, id",
                tenant_a.child_task_id,
            )
        ]
    assert actions == ["insert", "delete"]


async def test_each_tenant_reads_only_its_own_audit_rows(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    for tenant, other in ((tenant_a, tenant_b), (tenant_b, tenant_a)):
        async with tenant_transaction(tenant.context()):
            ids = {
                r["organization_id"]
                for r in await tables.AuditLog.select(tables.AuditLog.organization_id)
            }
            foreign = await tables.AuditLog.count().where(
                tables.AuditLog.entity_id == other.root_task_id
            )
        assert ids == {tenant.organization_id}
        assert foreign == 0


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_logs SET action = 'delete'",
        "DELETE FROM audit_logs",
        "INSERT INTO audit_logs (organization_id, action, entity_type, entity_id, changes) "
        "VALUES (current_setting('app.organization_id')::uuid, 'insert', 'tasks', gen_random_uuid(), '{}')",
        "TRUNCATE audit_logs",
    ],
)
async def test_the_server_role_cannot_write_the_audit_log(statement: str, tenant_a: Tenant) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        async with tenant_transaction(tenant_a.context()) as tx:
            await tx.connection.execute(statement)


async def test_the_server_role_cannot_read_partitions_directly(tenant_a: Tenant) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(tenant_a.context()) as tx:
            await tx.connection.fetch("SELECT * FROM audit_logs_default")


async def _insert_dated(owner: asyncpg.Connection, tenant: Tenant, created_at: datetime) -> str:
    async with owner.transaction():
        await owner.execute(SET_CONTEXT_SQL, *tenant.context().parameters())
        return str(
            await owner.fetchval(
                "INSERT INTO audit_logs (organization_id, action, entity_type, entity_id, changes, "
                "created_at) VALUES ($1, 'insert', 'tasks', $2, '{}', $3) RETURNING tableoid::regclass::text",
                tenant.organization_id,
                uuid7(),
                created_at,
            )
        )


async def test_a_row_dated_next_month_lands_in_its_partition(
    owner: asyncpg.Connection, tenant_a: Tenant
) -> None:
    next_month = _month_start(1) + timedelta(days=3)
    partition = await _insert_dated(owner, tenant_a, next_month)
    assert partition == f"audit_logs_y{next_month:%Y}m{next_month:%m}"


async def test_a_row_outside_every_partition_is_kept_then_moved_then_expired(
    owner: asyncpg.Connection, tenant_a: Tenant
) -> None:
    old = datetime(2001, 3, 5, 12, tzinfo=UTC)
    assert await _insert_dated(owner, tenant_a, old) == "audit_logs_default"

    assert await owner.fetchval("SELECT audit_logs_create_partitions(0, $1::date)", old.date()) == 1
    async with owner.transaction():
        await owner.execute(SET_CONTEXT_SQL, *tenant_a.context().parameters())
        where = await owner.fetchval(
            "SELECT tableoid::regclass::text FROM audit_logs WHERE created_at = $1", old
        )
    assert where == "audit_logs_y2001m03"

    # Retention drops whole months that ended by the cutoff, and nothing newer.
    current = _month_start(0)
    assert await owner.fetchval("SELECT audit_logs_drop_partitions('2001-04-01')") == 1
    assert await owner.fetchval("SELECT to_regclass('audit_logs_y2001m03')") is None
    assert await owner.fetchval("SELECT to_regclass($1)", f"audit_logs_y{current:%Y}m{current:%m}")


# --- privacy inside a tenant (issue 11, finding 3) ----------------------------------------

_NETWORK = "SELECT request_id, ip_address, user_agent FROM audit_entries WHERE entity_id = $1"


@pytest.mark.parametrize("role", ["viewer", "member"])
async def test_the_server_role_reads_network_details_only_as_admin_or_owner(
    tenant_a: Tenant, tenant_b: Tenant, role: str
) -> None:
    writer = tenant_a.context(
        role="owner", request_id="req-net", client_ip="198.51.100.9", user_agent="net/1.0"
    )
    async with tenant_transaction(writer) as tx:
        await tx.connection.execute(
            "UPDATE tasks SET title = 'Network' WHERE id = $1", tenant_a.root_task_id
        )
    async with tenant_transaction(tenant_a.context(user_id=tenant_a.member_id, role=role)) as tx:
        rows = await tx.connection.fetch(_NETWORK, tenant_a.root_task_id)
        assert rows
        assert all(tuple(r) == (None, None, None) for r in rows)
        # The entries themselves stay readable; the network columns of the table do not.
        assert await tx.connection.fetchval(
            "SELECT count(*) FROM audit_logs WHERE entity_id = $1", tenant_a.root_task_id
        ) == len(rows)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await tx.connection.fetch("SELECT ip_address FROM audit_logs")
    for high in ("admin", "owner"):
        async with tenant_transaction(tenant_a.context(role=high)) as tx:
            rows = await tx.connection.fetch(_NETWORK, tenant_a.root_task_id)
        assert ("req-net", "198.51.100.9", "net/1.0") in [
            (r["request_id"], str(r["ip_address"]), r["user_agent"]) for r in rows
        ]
    # Another tenant's owner sees none of tenant a's entries.
    async with tenant_transaction(tenant_b.context(role="owner")) as tx:
        assert await tx.connection.fetch(_NETWORK, tenant_a.root_task_id) == []
    # No tenant at all: no rows, not an error.
    async with tenant_transaction(tenant_a.context(role="owner")) as tx:
        await tx.connection.execute("SELECT set_config('app.organization_id', '', true)")
        assert await tx.connection.fetch(_NETWORK, tenant_a.root_task_id) == []
