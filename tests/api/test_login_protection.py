"""Log-in protection (issue 11, finding 6) and whose address the server believes (finding 5).

Limits: per (e-mail, address) pair, a slower ceiling per e-mail, a ceiling per address, for
logIn and changePassword alike; in Redis when REDIS_URL is set (the machine's real Redis,
under a prefix of each test's own), in memory otherwise. Addresses: X-Forwarded-For only from
TASKQL_TRUSTED_PROXIES, through a real uvicorn run with the options `taskql serve` uses.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from api.app import create_app
from api.cli import UVICORN_OPTIONS, limits_notice
from api.middleware import client_address
from api.ratelimit import LoginLimits
from api.settings import Settings
from db.engine import DB
from db.tenancy import TenantContext, request_transaction
from tests.api.conftest import Api
from tests.api.test_auth import LOG_IN, sign_up, unique_email
from tests.api.world import Org
from tests.conftest import RedisTarget, redis_keys

PASSWORD = "correct horse battery"
CHANGE_PASSWORD = """
mutation($current: String!) {
  changePassword(input: {currentPassword: $current, newPassword: "an entirely new passphrase"}) {
    token
    errors { __typename code path ... on RateLimitedError { retryAfterSeconds } }
  }
}"""
CREATE_TASK = """
mutation($p: ID!) { createTask(input: {projectId: $p, title: "Where from?"}) { task { id } errors { code } } }
"""


@asynccontextmanager
async def client(app: Starlette, address: str) -> AsyncIterator[Api]:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as http:
        yield Api(http)


async def log_in(api: Api, email: str, password: str = "not the password") -> dict[str, Any]:
    payload: dict[str, Any] = (await api(LOG_IN, {"email": email, "password": password}))["data"][
        "logIn"
    ]
    return payload


def proxies(trusted: str, **overrides: Any) -> Settings:
    """Settings with TASKQL_TRUSTED_PROXIES given as an operator writes it."""
    return Settings(taskql_trusted_proxies=trusted, **overrides)  # type: ignore[arg-type]


def codes(payloads: list[dict[str, Any]]) -> list[str]:
    return [p["errors"][0]["code"] if p["errors"] else "OK" for p in payloads]


async def close(app: Starlette) -> None:
    await app.state.login_limits.close()


# ------------------------------------------------------------------------- finding 6


async def test_a_guesser_at_one_address_cannot_lock_the_owner_out_from_another(
    org_a: Org, org_b: Org
) -> None:
    """Guards: ten wrong passwords from anywhere locked the e-mail for everyone for five
    minutes. Now the guesser's (e-mail, address) pair is refused, the owner elsewhere is not,
    and neither is the same guesser's address for another tenant's user."""
    app = create_app(Settings())
    email = org_a.emails["owner"]
    async with client(app, "203.0.113.66") as attacker, client(app, "198.51.100.20") as owner:
        guesses = [await log_in(attacker, email) for _ in range(12)]
        assert codes(guesses) == ["BAD_USER_INPUT"] * 10 + ["RATE_LIMITED"] * 2
        assert guesses[-1]["errors"][0]["retryAfterSeconds"] >= 1
        # The owner at their own address is still checked (not refused), and so is another
        # tenant's user from the guesser's address.
        assert codes([await log_in(owner, email)]) == ["BAD_USER_INPUT"]
        assert codes([await log_in(attacker, org_b.emails["owner"])]) == ["BAD_USER_INPUT"]


async def test_the_owner_logs_in_while_the_guesser_is_refused(pool: object) -> None:
    """Guards the lock-out itself: the owner's correct password works from their address
    after a guesser used up the e-mail's old limit (10) from another."""
    app = create_app(Settings())
    email = unique_email()
    async with client(app, "198.51.100.20") as owner, client(app, "203.0.113.67") as attacker:
        await sign_up(owner, email, PASSWORD)
        assert codes([await log_in(attacker, email) for _ in range(11)])[-1] == "RATE_LIMITED"
        result = await log_in(owner, email, PASSWORD)
    assert result["errors"] == []
    assert result["token"]


async def test_the_per_email_ceiling_holds_across_addresses_and_refusals_do_not_count(
    pool: object,
) -> None:
    """Guards the distributed guesser: a slower ceiling per e-mail from all addresses. An
    attempt refused by its pair limit does not use the ceiling up."""
    app = create_app(
        Settings(
            taskql_login_attempts_per_pair=2,
            taskql_login_attempts_per_email=5,
            taskql_login_email_window_seconds=600,
        )
    )
    email = unique_email()
    seen = []
    for address, attempts in (("203.0.113.1", 3), ("203.0.113.2", 2), ("203.0.113.3", 2)):
        async with client(app, address) as api:
            seen.append(codes([await log_in(api, email) for _ in range(attempts)]))
    assert seen == [
        ["BAD_USER_INPUT", "BAD_USER_INPUT", "RATE_LIMITED"],  # the pair limit
        ["BAD_USER_INPUT", "BAD_USER_INPUT"],
        ["BAD_USER_INPUT", "RATE_LIMITED"],  # the e-mail's ceiling: 5 counted attempts
    ]


async def test_change_password_guesses_are_limited_with_log_in_guesses(pool: object) -> None:
    """Guards: changePassword had no attempt limit (30 wrong current passwords, never
    RATE_LIMITED), so a stolen session could guess the password without end. Its guesses
    count with the e-mail's log-in guesses from that address; elsewhere the owner is fine."""
    app = create_app(Settings())
    email = unique_email()
    async with client(app, "203.0.113.70") as thief, client(app, "198.51.100.21") as owner:
        token = (await sign_up(thief, email, PASSWORD))["token"]
        results = [
            (await thief(CHANGE_PASSWORD, {"current": f"guess number {i}"}, token=token))["data"][
                "changePassword"
            ]
            for i in range(12)
        ]
        assert codes(results) == ["BAD_USER_INPUT"] * 10 + ["RATE_LIMITED"] * 2
        assert results[-1]["errors"][0]["path"] == []
        assert results[-1]["errors"][0]["retryAfterSeconds"] >= 1
        assert codes([await log_in(thief, email, PASSWORD)]) == ["RATE_LIMITED"]
        right = (await thief(CHANGE_PASSWORD, {"current": PASSWORD}, token=token))["data"]
        assert codes([right["changePassword"]]) == ["RATE_LIMITED"]
        assert (await log_in(owner, email, PASSWORD))["errors"] == []


async def test_two_limiters_share_their_counts_through_redis(redis_target: RedisTarget) -> None:
    """Guards: with several processes each counted alone (TASKQL_WORKERS=2 admitted 20
    attempts per e-mail, not 10). Two limiters on one Redis, as two processes have them."""
    settings = redis_target.settings(taskql_login_attempts_per_pair=3)
    first, second = LoginLimits(settings), LoginLimits(settings)
    assert first.shared
    assert second.shared
    try:
        results = [
            await limits.attempt("Someone@Example.test", "203.0.113.5")
            for limits in (first, second, first, second, first)
        ]
        assert results[:3] == [None, None, None]
        assert all(r is not None and 1 <= r <= 300 for r in results[3:])
        assert await redis_keys(redis_target)  # the counters really are in Redis
        await second.succeeded("someone@example.test", "203.0.113.5")
        assert await first.attempt("someone@example.test", "203.0.113.5") is None
    finally:
        await first.close()
        await second.close()


async def test_two_apps_on_one_redis_admit_ten_attempts_not_twenty(
    redis_target: RedisTarget, pool: object
) -> None:
    """The same through the HTTP API: two apps (two processes' worth) sharing one Redis."""
    apps = [create_app(redis_target.settings()) for _ in range(2)]
    email = unique_email()
    try:
        async with client(apps[0], "203.0.113.80") as one, client(apps[1], "203.0.113.80") as two:
            results = [await log_in((one, two)[i % 2], email) for i in range(12)]
    finally:
        for app in apps:
            await close(app)
    assert codes(results) == ["BAD_USER_INPUT"] * 10 + ["RATE_LIMITED"] * 2


async def test_an_unreachable_redis_refuses_log_in_with_a_code(pool: object) -> None:
    """Redis down: log-in is refused (never let through unlimited), with SERVICE_UNAVAILABLE,
    not a 500 or the driver's text."""
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    app = create_app(Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
    try:
        async with client(app, "203.0.113.90") as api:
            response = await api.post(LOG_IN, {"email": unique_email(), "password": "x" * 12})
    finally:
        await close(app)
    # SERVICE_UNAVAILABLE is a 503 with Retry-After (docs/architecture/api.md, "Errors and HTTP").
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["message"] == "log-in is unavailable for a moment; try again later"


def test_several_workers_without_redis_are_told_the_limits_are_per_process() -> None:
    assert limits_notice(Settings(), 1) == []
    assert limits_notice(Settings(redis_url="redis://127.0.0.1:6379/0"), 4) == []
    (notice,) = limits_notice(Settings(), 2)
    assert "per process" in notice
    assert "REDIS_URL" in notice


def test_settings_refuse_a_ceiling_one_address_could_reach() -> None:
    with pytest.raises(ValueError, match="one address alone"):
        Settings(taskql_login_attempts_per_pair=10, taskql_login_attempts_per_email=100)


# ------------------------------------------------------------------------- finding 5


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("127.0.0.1", ["203.0.113.9"], "", "127.0.0.1"),  # nobody trusted: the peer
        ("198.51.100.1", ["203.0.113.9"], "127.0.0.1", "198.51.100.1"),  # peer not trusted
        ("127.0.0.1", ["203.0.113.9"], "127.0.0.1", "203.0.113.9"),
        ("127.0.0.1", ["1.2.3.4, 203.0.113.9"], "127.0.0.1", "203.0.113.9"),  # right-most
        ("127.0.0.1", ["1.2.3.4, 203.0.113.9, 10.0.0.5"], "127.0.0.0/8,10.0.0.0/8", "203.0.113.9"),
        ("127.0.0.1", ["1.2.3.4", "203.0.113.9"], "127.0.0.1", "203.0.113.9"),  # two headers
        ("127.0.0.1", ["203.0.113.9:5555"], "127.0.0.1", "203.0.113.9"),
        ("127.0.0.1", ["[2001:db8::1]:443"], "127.0.0.1", "2001:db8::1"),
        ("127.0.0.1", ["1.2.3.4, bogus"], "127.0.0.1", "127.0.0.1"),  # garbage: last trusted
        ("127.0.0.1", [], "127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", ["10.0.0.6"], "127.0.0.1,10.0.0.0/8", "10.0.0.6"),  # all trusted
        ("::ffff:127.0.0.1", ["203.0.113.9"], "127.0.0.1", "203.0.113.9"),
        ("testclient", ["203.0.113.9"], "127.0.0.1", None),
    ],
)
def test_the_client_address_is_the_right_most_untrusted_hop(
    peer: str, forwarded: list[str], trusted: str, expected: str | None
) -> None:
    networks = proxies(trusted).taskql_trusted_proxies
    assert client_address(peer, forwarded, networks) == expected


@asynccontextmanager
async def uvicorn_server(settings: Settings) -> AsyncIterator[tuple[str, Starlette]]:
    """The app under a real uvicorn on a loopback port, with the options `taskql serve`
    passes (the test's clients are 127.0.0.1, as a local proxy or attacker would be)."""
    app = create_app(settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", **UVICORN_OPTIONS
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await task
        await close(app)


async def audited_ip(org: Org, request_id: str) -> str | None:
    async with request_transaction(TenantContext(organization_id=org.id, role="owner")) as (
        _,
        executor,
    ):
        value: str | None = await executor.fetchval(
            "SELECT host(ip_address) FROM audit_entries WHERE request_id = $1", request_id
        )
    return value


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [("", "127.0.0.1"), ("127.0.0.1", "203.0.113.44")],
    ids=["no-proxy-trusted", "loopback-trusted"],
)
async def test_the_audit_log_records_the_address_the_server_may_believe(
    org_a: Org, org_b: Org, trusted: str, expected: str
) -> None:
    """Guards: uvicorn believed X-Forwarded-For from loopback, so a forged address landed
    in the audit log. Now only a trusted proxy's header counts (right-most untrusted hop),
    and the other tenant's audit log holds nothing of the request."""
    settings = proxies(trusted)
    async with uvicorn_server(settings) as (base, _), httpx.AsyncClient(base_url=base) as http:
        request_id = f"xff{trusted.replace('.', '')}{org_a.slug.replace('-', '')}"
        response = await http.post(
            "/graphql",
            json={"query": CREATE_TASK, "variables": {"p": org_a.project}},
            headers={
                "Authorization": f"Bearer {org_a.tokens['member']}",
                "X-Organization": org_a.slug,
                "X-Request-Id": request_id,
                "X-Forwarded-For": "10.9.9.9, 203.0.113.44",
            },
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"]["createTask"]["errors"] == []
    assert await audited_ip(org_a, request_id) == expected
    assert await audited_ip(org_b, request_id) is None


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"], ids=["no-proxy-trusted", "loopback-trusted"])
async def test_the_per_address_limit_counts_the_address_the_server_may_believe(
    pool: object, trusted: str
) -> None:
    """Guards: a forged X-Forwarded-For per attempt bypassed the per-address log-in limit.
    Untrusted peers are counted as themselves whatever they send; behind a trusted proxy
    each forwarded client is counted as itself."""
    settings = proxies(trusted, taskql_login_attempts_per_ip=3)
    async with uvicorn_server(settings) as (base, _), httpx.AsyncClient(base_url=base) as http:
        results = []
        for i in range(5):
            response = await http.post(
                "/graphql",
                json={
                    "query": LOG_IN,
                    "variables": {"email": unique_email(), "password": "x" * 12},
                },
                headers={"X-Forwarded-For": f"203.0.113.{100 + i}"},
            )
            results.append(response.json()["data"]["logIn"])
        same = []
        for _ in range(4):
            response = await http.post(
                "/graphql",
                json={
                    "query": LOG_IN,
                    "variables": {"email": unique_email(), "password": "x" * 12},
                },
                headers={"X-Forwarded-For": "203.0.113.200"},
            )
            same.append(response.json()["data"]["logIn"])
    if trusted:
        assert codes(results) == ["BAD_USER_INPUT"] * 5  # five clients behind the proxy
        assert codes(same) == ["BAD_USER_INPUT"] * 3 + ["RATE_LIMITED"]
    else:
        assert codes(results) == ["BAD_USER_INPUT"] * 3 + ["RATE_LIMITED"] * 2
        assert codes(same) == ["RATE_LIMITED"] * 4


async def test_limits_come_first_a_refused_log_in_takes_no_connection(pool: asyncpg.Pool) -> None:
    """Issue 13: the limit was checked after the log-in took a pooled connection. With every
    pooled connection held elsewhere, a log-in over its limit is still answered RATE_LIMITED
    (it never asks for one), while one within its limit, and a sign-up, get the pool's 503."""
    app = create_app(Settings(taskql_login_attempts_per_pair=2))
    email = unique_email()
    async with client(app, "203.0.113.90") as guesser:
        assert codes([await log_in(guesser, email) for _ in range(2)]) == ["BAD_USER_INPUT"] * 2
        held = [await pool.acquire() for _ in range(pool.get_max_size())]
        timeout, DB.acquire_timeout = DB.acquire_timeout, 0.2
        try:
            assert codes([await log_in(guesser, email)]) == ["RATE_LIMITED"]
            for document, variables in (
                (LOG_IN, {"email": unique_email(), "password": "not the password"}),
                (
                    "mutation($e: String!) { signUp(input: {email: $e, password: "
                    '"long enough password", displayName: "S"}) { token errors { code } } }',
                    {"e": unique_email()},
                ),
            ):
                busy = await guesser.post(document, variables)
                assert busy.status_code == 503, busy.text
                assert busy.headers["retry-after"] == "1"
                assert busy.json()["errors"][0]["extensions"]["reason"] == "POOL_EXHAUSTED"
        finally:
            DB.acquire_timeout = timeout
            for connection in held:
                await pool.release(connection)
