"""The realtime outbox (migration 22): events written by triggers in the changing transaction,
announced on commit and only then, readable only under their own tenant, pruned by the
maintenance role."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from db import tables
from db.tenancy import tenant_transaction
from db.uuid7 import uuid7
from tests.conftest import ScratchDatabase
from tests.seed import Tenant

CHANNEL = "taskql_realtime"


class Listener:
    """A LISTEN connection as the server role, collecting every notification's payload."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.payloads: list[dict[str, Any]] = []

    def __call__(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.append(json.loads(payload))

    async def settle(self) -> None:
        """Wait until a round trip on the listening connection has delivered what is pending."""
        await self.connection.execute("SELECT 1")
        await asyncio.sleep(0.05)

    def events(self) -> list[tuple[str, str, Any, Any]]:
        return [
            (p["t"], p["a"], entity, scope)
            for p in self.payloads
            if "e" in p
            for _id, _org, entity, scope in p["e"]
        ]


async def _listen(dsn: str) -> Listener:
    connection = await asyncpg.connect(dsn)
    listener = Listener(connection)
    await connection.add_listener(CHANNEL, listener)
    return listener


async def test_a_committed_change_is_written_and_announced_and_a_rolled_back_one_is_not(
    test_database: ScratchDatabase, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    listener = await _listen(test_database.server_dsn)
    try:
        async with tenant_transaction(tenant_a.context()) as tx:
            await tx.connection.execute(
                "UPDATE tasks SET title = 'Moved on' WHERE id = $1", tenant_a.root_task_id
            )
            inside = await tx.connection.fetch(
                "SELECT topic, action, entity_id, scope_id FROM realtime_events "
                "WHERE entity_id = $1 AND action = 'update'",
                tenant_a.root_task_id,
            )
            await listener.settle()
            # Written in the same transaction, announced only once it commits.
            assert [tuple(r) for r in inside] == [
                ("task", "update", tenant_a.root_task_id, tenant_a.project_id)
            ]
            assert listener.payloads == []
        await listener.settle()
        assert listener.events() == [
            ("task", "update", str(tenant_a.root_task_id), str(tenant_a.project_id))
        ]

        listener.payloads.clear()
        failing = tenant_transaction(tenant_b.context())
        try:
            async with failing as tx:
                await tx.connection.execute(
                    "UPDATE tasks SET title = 'Never' WHERE id = $1", tenant_b.root_task_id
                )
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        await listener.settle()
        assert listener.payloads == []
        async with tenant_transaction(tenant_b.context()) as tx:
            left = await tx.connection.fetchval(
                "SELECT count(*) FROM realtime_events WHERE entity_id = $1 AND action = 'update'",
                tenant_b.root_task_id,
            )
        assert left == 0
    finally:
        await listener.connection.close()


async def test_moving_a_task_tells_both_projects_and_a_bulk_insert_is_chunked(
    test_database: ScratchDatabase, tenant_a: Tenant
) -> None:
    listener = await _listen(test_database.server_dsn)
    try:
        other_project = uuid7()
        async with tenant_transaction(tenant_a.context()) as tx:
            await tx.connection.execute(
                "INSERT INTO projects (id, organization_id, name, created_by) "
                "VALUES ($1, $2, 'Other', $3)",
                other_project,
                tenant_a.organization_id,
                tenant_a.owner_id,
            )
            await tx.connection.execute(
                "INSERT INTO tasks (organization_id, project_id, title, created_by) "
                "SELECT $1, $2, 'bulk ' || i, $3 FROM generate_series(1, 100) AS i",
                tenant_a.organization_id,
                other_project,
                tenant_a.owner_id,
            )
        await listener.settle()
        inserted = [e for e in listener.events() if e[:2] == ("task", "insert")]
        assert len(inserted) == 100
        # 40 events a notification at most: well under the 8,000-byte payload limit.
        assert max(len(json.dumps(p)) for p in listener.payloads) < 8000
        assert sum(1 for p in listener.payloads if p.get("t") == "task") == 3

        listener.payloads.clear()
        async with tenant_transaction(tenant_a.context()) as tx:
            await tx.connection.execute(
                "UPDATE tasks SET project_id = $1, parent_task_id = NULL WHERE id = $2",
                other_project,
                tenant_a.child_task_id,
            )
        await listener.settle()
        scopes = {e[3] for e in listener.events() if e[2] == str(tenant_a.child_task_id)}
        assert scopes == {str(other_project), str(tenant_a.project_id)}
    finally:
        await listener.connection.close()


async def test_events_are_visible_only_to_their_tenant_and_cannot_be_forged(
    tenant_a: Tenant, tenant_b: Tenant, server_connection: asyncpg.Connection
) -> None:
    async with tenant_transaction(tenant_a.context()) as tx:
        await tx.connection.execute(
            "UPDATE projects SET name = 'Renamed A' WHERE id = $1", tenant_a.project_id
        )
    async with tenant_transaction(tenant_b.context()) as tx:
        seen_by_b = await tx.connection.fetch(
            "SELECT organization_id FROM realtime_events WHERE organization_id <> $1",
            tenant_b.organization_id,
        )
        own_by_b = await tx.connection.fetchval("SELECT count(*) FROM realtime_events")
    async with tenant_transaction(tenant_a.context()) as tx:
        seen_by_a = await tx.connection.fetchval(
            "SELECT count(*) FROM realtime_events WHERE entity_id = $1", tenant_a.project_id
        )
    assert seen_by_b == []
    assert own_by_b > 0  # tenant b's own seeding
    assert seen_by_a >= 1
    # No tenant: no rows. And no INSERT, UPDATE or DELETE for the server role at all.
    assert await server_connection.fetchval("SELECT count(*) FROM realtime_events") == 0
    for statement in (
        "INSERT INTO realtime_events (organization_id, topic, action, entity_id, scope_id, "
        "horizon) VALUES (gen_random_uuid(), 'task', 'insert', gen_random_uuid(), "
        "gen_random_uuid(), '1')",
        "DELETE FROM realtime_events",
        "UPDATE realtime_events SET action = 'delete'",
    ):
        try:
            await server_connection.execute(statement)
        except asyncpg.InsufficientPrivilegeError:
            continue
        raise AssertionError(f"the server role could run: {statement}")


async def test_a_user_reads_their_own_membership_events_in_every_tenant(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    async with tenant_transaction(tenant_b.context()):
        await tables.OrganizationMember.insert(
            tables.OrganizationMember(
                organization_id=tenant_b.organization_id, user_id=tenant_a.member_id, role="viewer"
            )
        )
    event = tables.RealtimeEvent
    # Tenant a's member, in tenant a's context, sees their membership of tenant b arrive...
    async with tenant_transaction(tenant_a.context(user_id=tenant_a.member_id, role="member")):
        mine = await event.select(event.organization_id, event.action, event.xid).where(
            (event.topic == "member") & (event.scope_id == tenant_a.member_id)
        )
        others = await event.count().where(
            (event.organization_id == tenant_b.organization_id)
            & ((event.topic != "member") | (event.scope_id != tenant_a.member_id))
        )
    assert (tenant_b.organization_id, "insert") in [
        (r["organization_id"], r["action"]) for r in mine
    ]
    assert all(isinstance(r["xid"], int) for r in mine)  # xid8, read through db.columns.Xid8
    # ... and nothing else of tenant b's.
    assert others == 0


async def test_ending_a_session_is_announced_by_id_only(
    test_database: ScratchDatabase, tenant_a: Tenant
) -> None:
    listener = await _listen(test_database.server_dsn)
    owner = await asyncpg.connect(test_database.owner_dsn)
    try:
        session_id = uuid7()
        await owner.execute("SET ROLE taskql_maintenance")
        await owner.execute(
            "INSERT INTO sessions (id, user_id, token_hash, expires_at) "
            "VALUES ($1, $2, sha256($3::bytea), now() + interval '1 hour')",
            session_id,
            tenant_a.owner_id,
            session_id.bytes,
        )
        await owner.execute("UPDATE sessions SET user_agent = 'x' WHERE id = $1", session_id)
        await owner.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", session_id)
        await listener.settle()
        assert listener.payloads == [{"revoked": [str(session_id)]}]
    finally:
        await owner.close()
        await listener.connection.close()


async def test_pruning_deletes_old_events_of_every_tenant_and_keeps_young_ones(
    test_database: ScratchDatabase, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    owner = await asyncpg.connect(test_database.owner_dsn)
    ours = [tenant_a.organization_id, tenant_b.organization_id]
    count = "SELECT count(*) FROM realtime_events WHERE organization_id = ANY($1::uuid[])"
    try:
        await owner.execute("SET ROLE taskql_maintenance")
        before = await owner.fetchval(count, ours)
        await owner.execute("RESET ROLE")
        await owner.fetchval("SELECT realtime_events_prune(interval '1 hour')")
        await owner.execute("SET ROLE taskql_maintenance")
        kept = await owner.fetchval(count, ours)
        await owner.execute("RESET ROLE")
        pruned = await owner.fetchval("SELECT realtime_events_prune(interval '0 seconds')")
        await owner.execute("SET ROLE taskql_maintenance")
        left = await owner.fetchval(count, ours)
    finally:
        await owner.close()
    assert before > 0
    assert kept == before
    assert pruned >= before
    assert left == 0


def test_db_maintain_prunes_the_outbox(test_database: ScratchDatabase) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "db", "maintain"],
        env={**test_database.env(), "TASKQL_REALTIME_RETENTION_SECONDS": "60"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "realtime_events: " in result.stdout
    assert "event(s) pruned" in result.stdout
