"""The tenant transaction: settings in one statement, transaction-local, per-request timeout."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from db.tenancy import TenantContext, request_transaction
from tests.seed import Tenant


async def test_a_request_statement_timeout_applies_to_its_transaction_only(
    tenant_a: Tenant, pool: asyncpg.Pool
) -> None:
    context = TenantContext(organization_id=tenant_a.organization_id, statement_timeout_ms=1234)
    async with request_transaction(context) as (_, executor):
        assert await executor.fetchval("SHOW statement_timeout") == "1234ms"
        with pytest.raises(asyncpg.QueryCanceledError):
            await executor.fetchval("SELECT pg_sleep(2)")
    async with pool.acquire() as connection:
        assert await connection.fetchval("SHOW statement_timeout") == "5s"


async def test_the_executor_serializes_concurrent_statements_and_counts_them(
    tenant_a: Tenant,
) -> None:
    async with request_transaction(tenant_a.context()) as (_, executor):
        results = await asyncio.gather(*(executor.fetchval("SELECT $1::int", i) for i in range(20)))
        assert results == list(range(20))
        assert executor.statements == 21  # the set-up statement, then the twenty


def test_a_malformed_client_address_is_refused_before_it_reaches_the_audit_trigger() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        TenantContext(client_ip="not-an-ip")


async def test_pooled_connections_write_timestamps_in_the_iso_form_cursors_are_checked_against(
    tenant_a: Tenant, tenant_b: Tenant, pool: asyncpg.Pool
) -> None:
    """DateStyle is pinned at connect: a cursor's key (a timestamp as PostgreSQL writes it)
    must read back through api.pagination's check, whatever the server's default."""
    from api.pagination import decode_cursor, encode_cursor

    for tenant in (tenant_a, tenant_b):
        async with request_transaction(tenant.context()) as (_, executor):
            assert await executor.fetchval("SHOW DateStyle") == "ISO, MDY"
            key = await executor.fetchval(
                "SELECT created_at::text FROM tasks WHERE id = $1", tenant.root_task_id
            )
        assert decode_cursor(encode_cursor(key, tenant.root_task_id), "timestamptz") == (
            key,
            tenant.root_task_id,
        )
