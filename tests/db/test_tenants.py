"""`taskql tenant export|delete|import` on the real test database, with two tenants: a round
trip gives the same export back (but for the two audit records it must add), and the other
tenant is untouched throughout."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import asyncpg

from db import tables
from db.tenancy import TenantContext, tenant_transaction
from tests.conftest import ScratchDatabase
from tests.seed import Tenant

TENANT_TABLES = (
    "organization_members",
    "organization_invitations",
    "projects",
    "tasks",
    "task_comments",
    "audit_logs",
    "realtime_events",
)


async def taskql(database: ScratchDatabase, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "tenant", *args],
        env=database.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def export(database: ScratchDatabase, org: str, folder: Path) -> dict[str, list[str]]:
    result = await taskql(database, "export", org, "--out", str(folder))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    return {
        table: (folder / entry["file"]).read_text().splitlines()
        for table, entry in manifest["tables"].items()
    }


async def enrich(tenant: Tenant, guest_id: UUID) -> None:
    """More than the seed: a guest who is also another tenant's user, an invitation, an
    edited comment (content history), a finished task (completed_at)."""
    context = TenantContext(
        organization_id=tenant.organization_id, user_id=tenant.owner_id, role="owner"
    )
    async with tenant_transaction(context):
        await tables.OrganizationMember.insert(
            tables.OrganizationMember(
                organization_id=tenant.organization_id,
                user_id=guest_id,
                role="admin",
                invited_by=tenant.owner_id,
            )
        )
        await tables.OrganizationInvitation.insert(
            tables.OrganizationInvitation(
                organization_id=tenant.organization_id,
                email=f"invitee-{tenant.slug}@example.test",
                role="member",
                invited_by=tenant.owner_id,
                expires_at=datetime.now(UTC) + timedelta(days=7),
            )
        )
        await tables.Task.update({tables.Task.status: "done"}).where(
            tables.Task.id == tenant.child_task_id
        )
    member = TenantContext(
        organization_id=tenant.organization_id, user_id=tenant.member_id, role="member"
    )
    async with tenant_transaction(member):
        await tables.TaskComment.update({tables.TaskComment.content: "Edited"}).where(
            tables.TaskComment.id == tenant.comment_id
        )


async def rows_of(owner: asyncpg.Connection, org: UUID) -> dict[str, int]:
    await owner.execute("SET ROLE taskql_maintenance")
    try:
        counts = {
            t: await owner.fetchval(f"SELECT count(*) FROM {t} WHERE organization_id = $1", org)
            for t in TENANT_TABLES
        }
        counts["organizations"] = await owner.fetchval(
            "SELECT count(*) FROM organizations WHERE id = $1", org
        )
        return counts
    finally:
        await owner.execute("RESET ROLE")


async def test_export_delete_import_round_trip_leaves_the_other_tenant_untouched(
    test_database: ScratchDatabase,
    tenant_a: Tenant,
    tenant_b: Tenant,
    owner: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    # Tenant B's owner is a guest (admin) of A: one user record in both exports.
    await enrich(tenant_a, guest_id=tenant_b.owner_id)
    b_before = await export(test_database, tenant_b.slug, tmp_path / "b-before")
    first = await export(test_database, tenant_a.slug, tmp_path / "a-first")

    manifest = json.loads((tmp_path / "a-first" / "manifest.json").read_text())
    newest = await owner.fetchval("SELECT max(name) FROM migration WHERE app_name = 'taskql'")
    assert manifest["schema_version"] == newest
    assert manifest["organization"]["slug"] == tenant_a.slug
    counts = {t: e["rows"] for t, e in manifest["tables"].items()}
    assert counts["organizations"] == 1
    assert counts["users"] == 3  # owner, member, guest
    assert counts["organization_members"] == 3
    assert counts["organization_invitations"] == 1
    assert counts["projects"] == 1
    assert counts["tasks"] == 2
    assert counts["task_comments"] == 1
    assert counts["audit_logs"] >= 10
    users = [json.loads(line) for line in first["users"]]
    assert {u["id"] for u in users} == {
        str(tenant_a.owner_id),
        str(tenant_a.member_id),
        str(tenant_b.owner_id),
    }
    assert all("password_hash" not in u for u in users)
    assert "sessions" not in manifest["tables"]
    assert all("search_vector" not in json.loads(line) for line in first["tasks"])
    comment = json.loads(first["task_comments"][0])
    assert comment["content"] == "Edited"
    assert comment["content_history"]
    assert {json.loads(t)["completed_at"] is not None for t in first["tasks"]} == {True, False}
    assert all(
        json.loads(line)["organization_id"] == str(tenant_a.organization_id)
        for table in ("organization_members", "projects", "tasks", "audit_logs")
        for line in first[table]
    )

    deleted = await taskql(test_database, "delete", tenant_a.slug, "--yes", "--batch-size", "1")
    assert deleted.returncode == 0, deleted.stderr
    assert "batches" in deleted.stdout
    left = await rows_of(owner, tenant_a.organization_id)
    assert left == {**dict.fromkeys(left, 0), "audit_logs": 1}
    await owner.execute("SET ROLE taskql_maintenance")
    try:
        record = await owner.fetchrow(
            "SELECT action, entity_type, entity_id, actor_id, request_id, user_agent, changes "
            "FROM audit_logs WHERE organization_id = $1",
            tenant_a.organization_id,
        )
        assert record is not None
        assert (record["action"], record["entity_type"]) == ("delete", "organizations")
        assert record["entity_id"] == tenant_a.organization_id
        assert record["actor_id"] is None
        assert record["request_id"].startswith("tenant-delete-")
        assert record["user_agent"].startswith("taskql tenant delete (")
        assert json.loads(record["changes"])["before"]["slug"] == tenant_a.slug
        # User accounts are kept; the member's is purged here, so the import must create it.
        assert (
            await owner.fetchval(
                "SELECT count(*) FROM users WHERE id = ANY($1::uuid[])",
                [tenant_a.owner_id, tenant_a.member_id, tenant_b.owner_id],
            )
            == 3
        )
        await owner.execute("DELETE FROM users WHERE id = $1", tenant_a.member_id)
    finally:
        await owner.execute("RESET ROLE")

    imported = await taskql(test_database, "import", str(tmp_path / "a-first"))
    assert imported.returncode == 0, imported.stderr
    assert "2 matched by e-mail, 1 created" in imported.stdout
    again = await export(test_database, tenant_a.slug, tmp_path / "a-again")

    # Identical, file for file, but the audit log: it keeps the offboarding record and
    # gains the import's (the triggers' audit rows of the re-inserted rows are not kept).
    for table, lines in first.items():
        if table != "audit_logs":
            assert again[table] == lines, table
    added = [json.loads(line) for line in again["audit_logs"] if line not in first["audit_logs"]]
    assert [line for line in again["audit_logs"] if line in first["audit_logs"]] == first[
        "audit_logs"
    ]
    assert [(a["action"], a["entity_type"], a["user_agent"]) for a in added] == [
        ("delete", "organizations", record["user_agent"]),
        ("insert", "organizations", "taskql tenant import"),
    ]
    assert added[1]["changes"]["after"]["imported"]["rows"]["tasks"] == 2

    # The other tenant: byte for byte the same, audit log included.
    assert await export(test_database, tenant_b.slug, tmp_path / "b-after") == b_before

    # An organization that is not empty is refused, and nothing is written.
    before = await rows_of(owner, tenant_a.organization_id)
    refused = await taskql(test_database, "import", str(tmp_path / "a-first"))
    assert refused.returncode == 1
    assert "is not empty" in refused.stderr
    assert await rows_of(owner, tenant_a.organization_id) == before


async def test_import_refuses_a_tampered_export_and_delete_an_unknown_organization(
    test_database: ScratchDatabase, tenant_a: Tenant, tenant_b: Tenant, tmp_path: Path
) -> None:
    folder = tmp_path / "a"
    await export(test_database, tenant_a.slug, folder)
    tasks = folder / "tasks.ndjson"
    tasks.write_text(tasks.read_text().replace("Root", "Forged"))
    result = await taskql(test_database, "import", str(folder), "--into", tenant_b.slug)
    assert result.returncode == 1
    assert "checksum does not match" in result.stderr
    unknown = await taskql(test_database, "delete", "no-such-org", "--yes")
    assert unknown.returncode == 1
    assert "no organization 'no-such-org'" in unknown.stderr
    assert (
        await taskql(test_database, "export", tenant_a.slug, "--out", str(folder))
    ).returncode == 1


async def test_import_into_another_empty_organization_rewrites_the_tenant(
    test_database: ScratchDatabase,
    tenant_a: Tenant,
    tenant_b: Tenant,
    owner: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    b_before = await export(test_database, tenant_b.slug, tmp_path / "b-before")
    first = await export(test_database, tenant_a.slug, tmp_path / "a")
    target = UUID(int=tenant_a.organization_id.int ^ 1)
    slug = f"{tenant_a.slug}-moved"
    await owner.execute("SET ROLE taskql_maintenance")
    try:
        await owner.execute(
            "INSERT INTO organizations (id, name, slug) VALUES ($1, 'Moved', $2)", target, slug
        )
    finally:
        await owner.execute("RESET ROLE")
    # Still holding A's rows (their ids): refused, all or nothing.
    clash = await taskql(test_database, "import", str(tmp_path / "a"), "--into", slug)
    assert clash.returncode == 1
    assert f"already exist in organization {tenant_a.slug}" in clash.stderr
    assert (await rows_of(owner, target))["organization_members"] == 0

    assert (await taskql(test_database, "delete", tenant_a.slug, "--yes")).returncode == 0
    moved = await taskql(test_database, "import", str(tmp_path / "a"), "--into", slug)
    assert moved.returncode == 0, moved.stderr
    assert "2 matched by e-mail, 0 created" in moved.stdout
    again = await export(test_database, slug, tmp_path / "moved")
    old, new = str(tenant_a.organization_id), str(target)
    for table in ("organization_members", "projects", "tasks", "task_comments", "users"):
        assert again[table] == [line.replace(old, new) for line in first[table]], table
    assert json.loads(again["organizations"][0])["slug"] == slug
    assert (await rows_of(owner, tenant_a.organization_id))["audit_logs"] == 1
    assert await export(test_database, tenant_b.slug, tmp_path / "b-after") == b_before
