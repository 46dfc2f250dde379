"""Log-in by e-mail and authentication by token hash use their indexes under row-level
security on tables large enough that the planner must choose (migration 28; issue 17).

A database of the test's own (the shared one's users and sessions stay small and its plans
unchanged): migrated, two tenants with members, 50,000 users and 200,000 sessions generated
in SQL, ANALYZEd; then the statements as the server role, through the query-plan report's
own function (``db.explain.log_in_and_authenticate``) and the API's query functions.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from uuid import UUID

import asyncpg
import pytest

from db.executor import Executor
from db.explain import Sample, log_in_and_authenticate
from db.queries import users
from tests.conftest import ScratchDatabase

USERS = 50_000
SESSIONS_PER_USER = 4

GENERATE = [
    "SET ROLE taskql_maintenance",
    f"""INSERT INTO users (id, email, display_name, password_hash)
        SELECT uuidv7(), 'Person' || g || '@Example.test', 'Person ' || g, 'not-a-hash'
        FROM generate_series(1, {USERS}) AS g""",
    f"""INSERT INTO sessions (user_id, token_hash, expires_at)
        SELECT u.id, sha256(convert_to(u.email || '/' || s, 'UTF8')), now() + interval '30 days'
        FROM users AS u CROSS JOIN generate_series(1, {SESSIONS_PER_USER}) AS s""",
    """INSERT INTO organizations (name, slug) VALUES ('Tenant A', 'plan-a'), ('Tenant B', 'plan-b')""",
    """INSERT INTO organization_members (organization_id, user_id, role)
        SELECT o.id, u.id, 'owner' FROM organizations AS o JOIN users AS u
          ON u.email = CASE o.slug WHEN 'plan-a' THEN 'Person1@Example.test' ELSE 'Person2@Example.test' END""",
    "RESET ROLE",
    "ANALYZE users",
    "ANALYZE sessions",
    "ANALYZE organizations",
    "ANALYZE organization_members",
]


def _migrate(database: ScratchDatabase) -> None:
    migrated = subprocess.run(
        [sys.executable, "-m", "api.cli", "migrate", "forwards"],
        env=database.env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr


@pytest.fixture
async def large(fresh_database: ScratchDatabase) -> ScratchDatabase:
    await asyncio.to_thread(_migrate, fresh_database)
    owner = await asyncpg.connect(fresh_database.owner_dsn)
    try:
        for statement in GENERATE:
            await owner.execute(statement)
    finally:
        await owner.close()
    return fresh_database


async def _sample(database: ScratchDatabase, slug: str, email: str) -> Sample:
    owner = await asyncpg.connect(database.owner_dsn)
    try:
        async with owner.transaction():
            await owner.execute("SET LOCAL ROLE taskql_maintenance")
            row = await owner.fetchrow(
                "SELECT o.id AS org, u.id AS user_id FROM organizations o, users u "
                "WHERE o.slug = $1 AND u.email = $2",
                slug,
                email,
            )
    finally:
        await owner.close()
    assert row is not None
    return Sample(slug, row["org"], slug, row["user_id"], email, row["org"])


async def test_log_in_and_authentication_use_their_indexes_at_scale(
    large: ScratchDatabase,
) -> None:
    server = await asyncpg.connect(large.server_dsn)
    try:
        assert await server.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        for slug, email in (("plan-a", "Person1@Example.test"), ("plan-b", "Person2@Example.test")):
            plans = await log_in_and_authenticate(server, await _sample(large, slug, email))
            by_name = {p.statement: p for p in plans}
            login = by_name["log-in: user by e-mail"]
            # seq_scans: users and sessions (and the tenant tables); a Seq Scan left in the
            # plan is the policy's sub-plan on two tenants' organization_members.
            assert login.seq_scans == [], login
            assert "users_email_lower_key" in login.indexes, login
            assert login.rows == 1
            session = by_name["authenticate: session by token hash"]
            assert session.seq_scans == [], session
            assert "sessions_token_hash_key" in session.indexes, session
            assert all(p.seq_scans == [] for p in plans), plans
    finally:
        await server.close()


async def test_log_in_finds_the_user_in_any_letter_case_and_nobody_else(
    large: ScratchDatabase,
) -> None:
    server = await asyncpg.connect(large.server_dsn)
    try:
        found: dict[str, UUID | None] = {}
        for typed in (
            "Person77@Example.test",
            "person77@example.test",
            "PERSON77@EXAMPLE.TEST",
            "nobody@example.test",
        ):
            async with server.transaction():
                row = await users.login_candidate(Executor(server), typed)
                found[typed] = row["id"] if row is not None else None
                # The setting is cleared again: nobody is visible after the lookup.
                assert await server.fetchval("SELECT count(*) FROM users") == 0
        ids = {found[t] for t in found if t != "nobody@example.test"}
        assert len(ids) == 1
        assert None not in ids
        assert found["nobody@example.test"] is None
        # No setting, no rows: the key alone shows nothing.
        assert (
            await server.fetchval(
                "SELECT count(*) FROM users WHERE email_key = 'person77@example.test'"
            )
            == 0
        )
        # Authentication by a real token of a user, through app_authenticate.
        token_hash = hashlib.sha256(b"Person77@Example.test/2").digest()
        async with server.transaction():
            row = await server.fetchrow(
                "SELECT user_id, email FROM app_authenticate($1, NULL, NULL)", token_hash
            )
        assert row is not None
        assert row["user_id"] == ids.pop()
        assert row["email"] == "Person77@Example.test"
    finally:
        await server.close()


async def test_the_key_follows_the_e_mail_and_cannot_be_forged(large: ScratchDatabase) -> None:
    owner = await asyncpg.connect(large.owner_dsn)
    try:
        async with owner.transaction():
            await owner.execute("SET LOCAL ROLE taskql_maintenance")
            key = await owner.fetchval(
                "UPDATE users SET email = 'Renamed.Person3@Example.test', email_key = 'x@y.test' "
                "WHERE email = 'Person3@Example.test' RETURNING email_key"
            )
            assert key == "renamed.person3@example.test"
            inserted = await owner.fetchval(
                "INSERT INTO users (email, display_name, password_hash, email_key) "
                "VALUES ('New.One@Example.test', 'New', 'h', 'forged@example.test') RETURNING email_key"
            )
            assert inserted == "new.one@example.test"
            with pytest.raises(asyncpg.UniqueViolationError, match="users_email_lower_key"):
                await owner.execute(
                    "INSERT INTO users (email, display_name, password_hash) "
                    "VALUES ('NEW.ONE@example.test', 'New', 'h')"
                )
    finally:
        await owner.close()
