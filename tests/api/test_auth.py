"""Sign-up, log-in, log-out, password change, and what a token / tenant header unlocks."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from api.settings import Settings
from db.engine import DB, Engine
from db.queries.users import token_hash
from db.settings import get_database_settings
from db.tenancy import TenantContext, begin_request, request_transaction
from db.uuid7 import uuid7
from tests.api.conftest import Api
from tests.api.world import Org

SIGN_UP = """
mutation($email: String!, $password: String!) {
  signUp(input: {email: $email, password: $password, displayName: "New Person"}) {
    token user { id email displayName }
    errors { __typename message code path }
  }
}"""
LOG_IN = """
mutation($email: String!, $password: String!) {
  logIn(input: {email: $email, password: $password}) {
    token user { email }
    errors { __typename message code path ... on RateLimitedError { retryAfterSeconds } }
  }
}"""
VIEWER = "{ viewer { user { email } memberships(first: 10) { totalCount nodes { role organization { slug } } } } }"


def unique_email() -> str:
    return f"person-{uuid7().hex[-12:]}@example.test"


async def sign_up(api: Api, email: str, password: str = "correct horse battery") -> dict:  # type: ignore[type-arg]
    body = await api(SIGN_UP, {"email": email, "password": password})
    return body["data"]["signUp"]  # type: ignore[no-any-return]


async def test_sign_up_then_log_in_then_use_the_token(api: Api, org_a: Org) -> None:
    email = unique_email()
    created = await sign_up(api, email)
    assert created["errors"] == []
    assert created["user"]["email"] == email
    logged_in = (await api(LOG_IN, {"email": email.upper(), "password": "correct horse battery"}))[
        "data"
    ]["logIn"]
    assert logged_in["errors"] == []
    assert logged_in["token"] != created["token"]
    for token in (created["token"], logged_in["token"]):
        viewer = (await api(VIEWER, token=token))["data"]["viewer"]
        assert viewer["user"]["email"] == email
        assert viewer["memberships"] == {"totalCount": 0, "nodes": []}


async def test_sign_up_rejects_bad_input_with_field_paths(api: Api, pool: object) -> None:
    result = await sign_up(api, "not-an-email", "short")
    assert result["token"] is None
    assert {(e["__typename"], e["code"], tuple(e["path"])) for e in result["errors"]} == {
        ("ValidationError", "BAD_USER_INPUT", ("input", "email")),
        ("ValidationError", "BAD_USER_INPUT", ("input", "password")),
    }


async def test_an_email_is_taken_whatever_its_case(api: Api, org_a: Org) -> None:
    result = await sign_up(api, org_a.emails["member"].upper())
    assert result["token"] is None
    assert [(e["__typename"], e["code"], e["path"]) for e in result["errors"]] == [
        ("ConflictError", "CONFLICT", ["input", "email"])
    ]


async def test_unknown_email_and_wrong_password_get_the_same_answer(api: Api, pool: object) -> None:
    email = unique_email()
    await sign_up(api, email)
    wrong = (await api(LOG_IN, {"email": email, "password": "not the password"}))["data"]["logIn"]
    unknown = (await api(LOG_IN, {"email": unique_email(), "password": "not the password"}))[
        "data"
    ]["logIn"]
    assert wrong["token"] is None
    assert unknown["token"] is None
    assert wrong["errors"] == unknown["errors"]
    assert wrong["errors"][0]["message"] == "wrong e-mail or password"


async def test_log_in_attempts_are_rate_limited_per_email_and_address(pool: object) -> None:
    import httpx

    from api.app import create_app

    app = create_app(Settings(taskql_login_attempts_per_pair=3))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        api = Api(client)
        email = unique_email()
        codes = []
        for _ in range(5):
            result = (await api(LOG_IN, {"email": email, "password": "x" * 12}))["data"]["logIn"]
            codes.append(result["errors"][0]["code"])
        other = (await api(LOG_IN, {"email": unique_email(), "password": "x" * 12}))["data"][
            "logIn"
        ]
    assert codes == ["BAD_USER_INPUT"] * 3 + ["RATE_LIMITED"] * 2
    assert other["errors"][0]["code"] == "BAD_USER_INPUT"


async def test_log_in_attempts_are_rate_limited_per_client_address(pool: object) -> None:
    import httpx

    from api.app import create_app

    app = create_app(Settings(taskql_login_attempts_per_ip=2))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        api = Api(client)
        results = [
            (await api(LOG_IN, {"email": unique_email(), "password": "x" * 12}))["data"]["logIn"]
            for _ in range(3)
        ]
    assert [r["errors"][0]["code"] for r in results] == [
        "BAD_USER_INPUT",
        "BAD_USER_INPUT",
        "RATE_LIMITED",
    ]
    assert results[-1]["errors"][0]["retryAfterSeconds"] >= 1


async def test_log_out_revokes_the_token(api: Api, org_a: Org) -> None:
    token = org_a.tokens["viewer"]
    body = await api("mutation { logOut { ok errors { message } } }", token=token)
    assert body["data"]["logOut"] == {"ok": True, "errors": []}
    response = await api.post(VIEWER, token=token)
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_changing_the_password_revokes_every_session(api: Api, pool: object) -> None:
    email = unique_email()
    first = (await sign_up(api, email))["token"]
    second = (await api(LOG_IN, {"email": email, "password": "correct horse battery"}))["data"][
        "logIn"
    ]["token"]
    changed = (
        await api(
            'mutation { changePassword(input: {currentPassword: "correct horse battery", '
            'newPassword: "a much better passphrase"}) { token errors { message } } }',
            token=first,
        )
    )["data"]["changePassword"]
    assert changed["errors"] == []
    for old in (first, second):
        assert (await api.post(VIEWER, token=old)).status_code == 401
    assert (await api(VIEWER, token=changed["token"]))["data"]["viewer"]["user"]["email"] == email
    relog = (await api(LOG_IN, {"email": email, "password": "a much better passphrase"}))["data"][
        "logIn"
    ]
    assert relog["errors"] == []


async def test_a_wrong_current_password_changes_nothing(api: Api, org_a: Org) -> None:
    body = await api(
        'mutation { changePassword(input: {currentPassword: "nope nope nope", newPassword: "whatever it is now"}) '
        "{ token errors { code path } } }",
        token=org_a.tokens["member"],
    )
    assert body["data"]["changePassword"] == {
        "token": None,
        "errors": [{"code": "BAD_USER_INPUT", "path": ["input", "currentPassword"]}],
    }
    assert (await api.post(VIEWER, token=org_a.tokens["member"])).status_code == 200


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-real-token", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 300],
)
async def test_a_bad_token_is_401_with_a_graphql_shaped_error(
    api: Api, header: str, pool: object
) -> None:
    response = await api.post(VIEWER, headers={"Authorization": header})
    assert response.status_code == 401
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]


async def test_an_expired_session_is_401(api: Api, org_a: Org) -> None:
    owner = org_a.users["owner"]
    async with request_transaction(TenantContext(user_id=owner)) as (_, executor):
        await executor.execute(
            "UPDATE sessions SET created_at = now() - interval '2 days', expires_at = now() - interval '1 day' "
            "WHERE user_id = $1",
            owner,
        )
    assert (await api.post(VIEWER, token=org_a.tokens["owner"])).status_code == 401


async def test_a_tenant_you_are_not_a_member_of_is_403(api: Api, org_a: Org, org_b: Org) -> None:
    for org in (org_b.slug, str(org_b.id), "no-such-organization"):
        response = await api.post(VIEWER, token=org_a.tokens["owner"], org=org)
        assert response.status_code == 403
        assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_tenant_header_without_a_token_is_401(api: Api, org_a: Org) -> None:
    response = await api.post(VIEWER, org=org_a.slug)
    assert response.status_code == 401


async def test_without_a_tenant_only_tenant_free_fields_work(api: Api, org_a: Org) -> None:
    token = org_a.tokens["member"]
    viewer = (await api(VIEWER, token=token))["data"]["viewer"]
    assert viewer["memberships"]["nodes"] == [
        {"role": "MEMBER", "organization": {"slug": org_a.slug}}
    ]
    body = await api(
        "query($id: ID!) { project(id: $id) { name } }", {"id": org_a.project}, token=token
    )
    assert body["data"]["project"] is None
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    anonymous = await api("query($id: ID!) { project(id: $id) { name } }", {"id": org_a.project})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_one_statement_authenticates_and_sets_the_context(
    pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    """app_begin_request() (the first statement of every authenticated request) sets the
    tenant, user and role from the database, or nothing for a bad token or a foreign tenant."""
    settings = (
        "app.organization_id",
        "app.user_id",
        "app.role",
        "app.request_id",
        "app.client_ip",
        "app.user_agent",
    )
    context = TenantContext(
        request_id="req-1", client_ip="203.0.113.9", user_agent="probe", statement_timeout_ms=1234
    )

    async def begin(token: str, org: Org | None) -> tuple[asyncpg.Record | None, dict[str, str]]:
        opened, row = await begin_request(token_hash(token), org.id if org else None, None, context)
        try:
            assert opened.connection is not None
            values = {
                name: await opened.connection.fetchval("SELECT current_setting($1, true)", name)
                for name in (*settings, "statement_timeout")
            }
        finally:
            await opened.close()
        return row, values

    for org, other in ((org_a, org_b), (org_b, org_a)):
        row, values = await begin(org.tokens["admin"], org)
        assert row is not None
        assert row["organization_id"] == org.id
        assert row["role"] == "admin"
        assert values == {
            "app.organization_id": str(org.id),
            "app.user_id": str(org.users["admin"]),
            "app.role": "admin",
            "app.request_id": "req-1",
            "app.client_ip": "203.0.113.9",
            "app.user_agent": "probe",
            "statement_timeout": "1234ms",
        }
        foreign, values = await begin(org.tokens["admin"], other)
        assert foreign is not None
        assert foreign["organization_id"] is None
        assert values["app.organization_id"] == ""
        assert values["app.role"] == ""
    nobody, values = await begin("not-a-real-token", org_a)
    assert nobody is None
    assert all(values[name] in ("", None) for name in settings)


async def test_every_request_gives_its_connection_back_whatever_the_outcome(
    api: Api, pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    """The middleware opens the transaction; compiled queries, resolvers, refusals, errors
    and failed mutations all end it, and the connection returns to the pool."""
    outcomes = [
        ("{ organization { name } }", org_a, "viewer", None),  # compiled
        ("{ auditLog(first: 2) { totalCount } }", org_b, "admin", None),  # resolvers
        ('{ search(text: "task", first: 3) { totalCount } }', org_b, "viewer", None),  # compiled
        ("{ organization { nope } }", org_a, "viewer", None),  # validation error
        ("{ organization { name", org_a, "viewer", None),  # syntax error
        (
            'mutation { createProject(input: {name: ""}) { errors { code } } }',
            org_a,
            "viewer",
            None,
        ),  # forbidden mutation
        ("{ organization { name } }", org_a, "owner", org_b.slug),  # 403
    ]
    for query, org, role, tenant in outcomes:
        response = await api.post(query, token=org.tokens[role], org=tenant or org.slug)
        assert response.status_code in (200, 403), response.text
    response = await api.post("{ viewer { user { id } } }", token="not-a-real-token")
    assert response.status_code == 401
    assert pool.get_idle_size() == pool.get_size()


@pytest.mark.parametrize("commit", [True, False])
async def test_without_session_reset_a_request_is_begin_its_statements_and_the_end(
    pool: asyncpg.Pool, org_a: Org, org_b: Org, commit: bool
) -> None:
    """The API server's pool (DB_SESSION_RESET off): BEGIN, authentication, the operation,
    then a bare COMMIT (or ROLLBACK), and nothing when the connection goes back to the pool;
    the next request on it has no tenant, and the write is kept (or not) for its tenant."""
    engine = Engine()
    engine.configure(
        str(DB.dsn),
        (DB.settings or get_database_settings()).model_copy(
            update={"db_pool_min_size": 1, "db_pool_max_size": 1}
        ),
    )
    await engine.start_connection_pool(session_reset=False)
    assert engine.pool is not None
    try:
        sent: list[str] = []
        opened, row = await begin_request(
            token_hash(org_a.tokens["admin"]), org_a.id, None, TenantContext(), engine
        )
        assert row is not None
        connection = opened.connection
        assert connection is not None

        def log(logged: Any) -> None:
            sent.append(logged.query)

        connection.add_query_logger(log)
        await opened.executor.execute(
            "UPDATE tasks SET title = 'renamed without a reset' WHERE id = $1", org_a.task_ids[0]
        )
        await (opened.commit() if commit else opened.rollback())
        assert sent == [
            "UPDATE tasks SET title = 'renamed without a reset' WHERE id = $1",
            "COMMIT" if commit else "ROLLBACK",
        ]
        assert engine.pool.get_idle_size() == 1
        async with engine.pool.acquire() as again:
            again.remove_query_logger(log)
            assert await again.fetchval("SELECT current_setting('app.organization_id', true)") in (
                "",
                None,
            )
            assert await again.fetchval("SELECT count(*) FROM tasks") == 0
        titles = {}
        for org in (org_a, org_b):
            async with request_transaction(TenantContext(organization_id=org.id)) as (_, executor):
                titles[org.label] = await executor.fetchval(
                    "SELECT count(*) FROM tasks WHERE title = 'renamed without a reset'"
                )
        assert titles == {org_a.label: 1 if commit else 0, org_b.label: 0}
    finally:
        await engine.close_connection_pool()


@pytest.mark.parametrize("commit", [True, False])
async def test_a_request_ends_its_transaction_and_resets_its_connection_in_one_round_trip(
    pool: asyncpg.Pool, org_a: Org, org_b: Org, commit: bool
) -> None:
    """BEGIN, authentication, the operation, then COMMIT (or ROLLBACK) sent together with
    the pool's reset: the next request on the connection finds no session state left, and
    the write is kept (or not) for its own tenant only."""
    engine = Engine()
    engine.configure(
        str(DB.dsn),
        (DB.settings or get_database_settings()).model_copy(
            update={"db_pool_min_size": 1, "db_pool_max_size": 1}
        ),
    )
    await engine.start_connection_pool()
    assert engine.pool is not None
    try:
        sent: list[str] = []
        opened, row = await begin_request(
            token_hash(org_a.tokens["admin"]), org_a.id, None, TenantContext(), engine
        )
        assert row is not None
        assert row["organization_id"] == org_a.id
        connection = opened.connection
        assert connection is not None

        def log(logged: Any) -> None:
            sent.append(logged.query)

        connection.add_query_logger(log)
        await opened.executor.execute(
            "UPDATE tasks SET title = 'renamed in one round trip' WHERE id = $1", org_a.task_ids[0]
        )
        # Session state no request should leave behind (the pool's reset removes it).
        await connection.execute("SELECT set_config('app.leaked', 'yes', false)")
        await connection.execute("SELECT pg_advisory_lock(4242)")
        await (opened.commit() if commit else opened.rollback())
        # The operation's three statements, then ONE message: the end and the reset.
        assert len(sent) == 4, sent
        assert sent[3].startswith("COMMIT;\n" if commit else "ROLLBACK;\n")
        assert "RESET ALL" in sent[3]
        assert "pg_advisory_unlock_all" in sent[3]
        assert engine.pool.get_idle_size() == 1

        async with engine.pool.acquire() as again:
            again.remove_query_logger(log)
            assert await again.fetchval("SELECT current_setting('app.leaked', true)") in ("", None)
            assert not await again.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            )
        titles = {}
        for org in (org_a, org_b):
            async with request_transaction(TenantContext(organization_id=org.id)) as (_, executor):
                titles[org.label] = await executor.fetchval(
                    "SELECT count(*) FROM tasks WHERE title = 'renamed in one round trip'"
                )
        assert titles == {org_a.label: 1 if commit else 0, org_b.label: 0}
    finally:
        await engine.close_connection_pool()
