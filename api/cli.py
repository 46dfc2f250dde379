"""The ``taskql`` command: serve, migrate, seed-demo, and database administration."""

from __future__ import annotations

import asyncio
import functools
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import date
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import asyncpg
import typer

from api.settings import Settings, get_settings
from db import demo, roles
from db.engine import DB
from db.errors import DatabaseError, describe_target
from db.migrate import runner
from db.settings import pool_size_for
from db.targets import Targets, resolve

#: Plain click help: flags without a ``<bool>`` metavar, and docstring paragraphs re-wrapped
#: to the terminal (rich's panels kept the source's line breaks).
HELP_STYLE: dict[str, Any] = {"rich_markup_mode": None, "no_args_is_help": True}

app = typer.Typer(
    help="taskql: multi-tenant work management, GraphQL on PostgreSQL.",
    pretty_exceptions_enable=False,
    **HELP_STYLE,
)
migrate_app = typer.Typer(
    help="Apply, reverse and inspect schema migrations (owner role).", **HELP_STYLE
)
db_app = typer.Typer(help="Database administration: roles, partitions, health.", **HELP_STYLE)
migrations_app = typer.Typer(help="Check migrations before they reach a database.", **HELP_STYLE)
app.add_typer(migrations_app, name="migrations")
app.add_typer(migrate_app, name="migrate")
app.add_typer(db_app, name="db")
tenant_app = typer.Typer(
    help="One organization's data: export, delete (offboarding), import (owner role).",
    **HELP_STYLE,
)
app.add_typer(tenant_app, name="tenant")

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str) -> typer.Exit:
    typer.secho(f"taskql: error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def clear_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Expected failures (database unreachable, bad state) end as one line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except (DatabaseError, RuntimeError, ValueError, asyncpg.PostgresError) as exc:
            raise fail(
                str(exc).splitlines()[0] if isinstance(exc, asyncpg.PostgresError) else str(exc)
            ) from None

    return wrapper


def run(coro: Coroutine[Any, Any, R]) -> R:
    return asyncio.run(coro)


def _as_owner(targets: Targets, settings: Settings) -> None:
    DB.pool = None
    DB.configure(targets.require_owner(), settings)


async def _create_partitions(months_ahead: int) -> int:
    connection = await DB.get_new_connection()
    try:
        return int(
            await connection.fetchval("SELECT audit_logs_create_partitions($1)", months_ahead)
        )
    finally:
        await connection.close()


async def _migrate_forwards(months_ahead: int = 3) -> None:
    await runner.forwards()
    await _create_partitions(months_ahead)


# ---------------------------------------------------------------------------------- serve


@app.command()
@clear_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (TASKQL_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (TASKQL_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="uvicorn workers (TASKQL_WORKERS).")] = None,
    demo_data: Annotated[
        bool | None,
        typer.Option("--demo/--no-demo", help="Load demo data once (default: embedded only)."),
    ] = None,
) -> None:
    """Start the API. Without DATABASE_URL: embedded PostgreSQL, migrations and demo data.
    Refuses to start on a database whose migrations are behind this checkout."""
    import uvicorn

    started = time.perf_counter()
    settings = get_settings()
    host = host or settings.taskql_host
    port = port or settings.taskql_port
    workers = workers or settings.taskql_workers
    targets = resolve(settings)
    if targets.embedded is not None:
        typer.echo(f"PostgreSQL: embedded, data in {targets.embedded.data_dir}")
    else:
        typer.echo(f"PostgreSQL: {describe_target(targets.require_server())}")

    if targets.owner_dsn is not None:
        _as_owner(targets, settings)
        if targets.embedded is not None:
            run(_migrate_forwards())
        else:
            state = run(runner.status(targets.owner_dsn))
            if not state.up_to_date:
                raise fail("; ".join(runner.describe(state)[-3:]))

    if targets.embedded is not None and "DB_POOL_MAX_SIZE" not in os.environ:
        # The embedded server shares this machine's cores: size the pools to them.
        size = pool_size_for(os.cpu_count() or 1, workers)
        settings = settings.model_copy(
            update={
                "db_pool_max_size": size,
                "db_pool_min_size": min(settings.db_pool_min_size, size),
            }
        )
        os.environ["DB_POOL_MAX_SIZE"] = str(size)
        os.environ["DB_POOL_MIN_SIZE"] = str(settings.db_pool_min_size)
        typer.echo(
            f"Pool: {size} connections per worker ({workers} workers, {os.cpu_count()} cores)"
        )
    DB.configure(targets.require_server(), settings)
    version = run(DB.ping())
    typer.echo(f"Connected as the server role to PostgreSQL {version}")
    # With only DATABASE_URL (no owner URL to ask), the server role reads the history itself.
    not_migrated = run(runner.server_check(targets.require_server()))
    if not_migrated is not None:
        raise fail(f"not starting, the database is not migrated: {not_migrated}")
    load = demo_data if demo_data is not None else settings.taskql_demo
    if load is None:
        load = targets.embedded is not None
    if load:
        summary = run(demo.load_demo())
        if summary is not None:
            typer.echo(
                f"Demo data loaded: {summary.organizations} organizations, {summary.users} users, "
                f"{summary.projects} projects, {summary.tasks} tasks, {summary.comments} comments, "
                f"{summary.invitations} pending invitation{'' if summary.invitations == 1 else 's'}"
            )
        typer.echo(
            f"Demo users: {', '.join(demo.USERS)}; password: {demo.DEMO_PASSWORD}; "
            f"organizations (X-Organization): {', '.join(demo.ORGANIZATIONS)}"
        )
        email, slug, token = run(demo.demo_session())
        typer.echo(f"Paste into GraphiQL's Headers ({email}, owner of {slug}):")
        typer.echo(f'  {{"Authorization": "Bearer {token}", "X-Organization": "{slug}"}}')
    # Workers (and uvicorn's reloader) are separate processes: hand them the resolved URL,
    # so they join the embedded server this process started instead of starting another.
    os.environ["DATABASE_URL"] = targets.require_server()
    if targets.owner_dsn is not None:
        os.environ["MIGRATION_DATABASE_URL"] = targets.owner_dsn
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through SystemExit
    # instead lets atexit stop the embedded PostgreSQL.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    typer.echo(
        "Log-in limits: "
        + (
            f"in Redis at {_redis_place(settings.redis_url)}"
            if settings.redis_url
            else "in process memory"
        )
        + (
            f"; X-Forwarded-For believed from {', '.join(map(str, settings.taskql_trusted_proxies))}"
            if settings.taskql_trusted_proxies
            else "; client address: the socket peer (no trusted proxies)"
        )
    )
    for line in limits_notice(settings, workers):
        typer.secho(f"taskql: warning: {line}", fg=typer.colors.YELLOW, err=True)
    _metrics_files(workers, settings.taskql_metrics_dir)
    if settings.taskql_metrics_port is not None:
        _metrics_listener(settings.taskql_metrics_host, settings.taskql_metrics_port)
    typer.echo(f"Ready for uvicorn in {time.perf_counter() - started:.1f} s")
    base = f"http://{host}:{port}"
    typer.echo(f"GraphiQL: {base}/graphql")
    typer.echo(f"Health: {base}/livez (liveness), {base}/readyz (readiness)")
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.taskql_log_level,
        log_config=log_config(settings.taskql_log_level, settings.taskql_log_format == "json"),
        # Subscriptions (api.realtime): websockets' sans-I/O implementation; a frame over the
        # message limit is refused by uvicorn before it is buffered whole.
        ws="websockets-sansio",
        ws_max_size=settings.taskql_ws_max_message_bytes,
        **UVICORN_OPTIONS,
    )


def log_config(level: str, json_lines: bool = False) -> dict[str, Any]:
    """uvicorn's logging configuration, with taskql's own loggers (``taskql.*``: client
    errors in one line, outages rate-limited, masked errors with their traceback) written
    by the same handler at TASKQL_LOG_LEVEL. With ``json_lines`` (TASKQL_LOG_FORMAT=json)
    the request lines of ``taskql.access`` go to stdout bare: one JSON object per line."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["taskql"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    if json_lines:
        config["formatters"]["bare"] = {"format": "%(message)s"}
        config["handlers"]["json_lines"] = {
            "formatter": "bare",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
        }
        config["loggers"]["taskql.access"] = {
            "handlers": ["json_lines"],
            "level": level.upper(),
            "propagate": False,
        }
    return config


def _metrics_files(workers: int, given: Path | None) -> None:
    """Several workers count into files of one folder (prometheus-client's multiprocess
    mode: PROMETHEUS_MULTIPROC_DIR, handed to the workers), which the process answering a
    scrape sums. It must start empty every run: TASKQL_METRICS_DIR's files are deleted, a
    temporary folder is removed at exit."""
    if workers <= 1:
        return
    import atexit
    import shutil
    import tempfile

    if given is not None:
        folder = given
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
    else:
        folder = Path(tempfile.mkdtemp(prefix="taskql-metrics-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    typer.echo(f"Metrics: {workers} workers count into {folder}")


def _metrics_listener(host: str, port: int) -> None:
    from api import metrics

    try:
        metrics.serve_in_thread(host, port)
    except OSError as exc:
        raise fail(f"cannot listen for metrics on {host}:{port}: {exc.strerror or exc}") from None
    typer.echo(f"Metrics: http://{host}:{port}/metrics")


#: uvicorn must leave ``scope["client"]`` the socket peer: whom to believe about forwarded
#: addresses is decided in one place, the middleware, from TASKQL_TRUSTED_PROXIES (uvicorn's
#: default believes X-Forwarded-For from 127.0.0.1, which let any local caller forge it).
UVICORN_OPTIONS: dict[str, Any] = {"proxy_headers": False, "server_header": False}


def _redis_place(url: str) -> str:
    """Where Redis is, without the password a URL may carry."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path}"


def limits_notice(settings: Settings, workers: int) -> list[str]:
    """What an operator must know about the log-in limits of this start-up."""
    if workers > 1 and not settings.redis_url:
        return [
            f"{workers} workers and no REDIS_URL: log-in limits are counted per process, "
            f"so each limit admits up to {workers} times its attempts; set REDIS_URL to "
            "share them"
        ]
    return []


# -------------------------------------------------------------------------------- migrate


@migrate_app.command("forwards")
@clear_errors
def migrate_forwards() -> None:
    """Apply every pending migration, then create the coming months' audit partitions."""
    settings = get_settings()
    _as_owner(resolve(settings), settings)
    run(_migrate_forwards())


@migrate_app.command("backwards")
@clear_errors
def migrate_backwards(
    to: Annotated[
        str, typer.Option(help="Reverse down to and including this id, or 'all'.")
    ] = "all",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Reverse applied migrations (destroys the data of dropped tables)."""
    question = (
        "Reverse every applied migration (drops all of taskql's tables and their data)?"
        if to == "all"
        else f"Reverse the applied migrations down to and including {to}?"
    )
    if not yes and not typer.confirm(question):
        raise typer.Exit(code=1)
    settings = get_settings()
    _as_owner(resolve(settings), settings)
    run(runner.backwards(to))


@migrate_app.command("status")
@clear_errors
def migrate_status() -> None:
    """Show applied and pending migrations; exit 1 if any is pending or the database does
    not match this checkout."""
    targets = resolve(get_settings())
    state = run(runner.status(targets.require_owner()))
    for line in runner.describe(state):
        typer.echo(line)
    if not state.up_to_date:
        raise typer.Exit(code=1)


@migrations_app.command("lint")
@clear_errors
def migrations_lint(
    directory: Annotated[
        Path | None, typer.Option(help="Migrations folder (default: the project's).")
    ] = None,
) -> None:
    """The safety gate: squawk on the SQL every migration sends, plus our own checks.
    Exit 1 on any finding not justified in the migration's LINT_ALLOW."""
    from db.migrate.lint import lint

    findings = lint(directory) if directory else lint()
    for finding in findings:
        typer.echo(finding.describe())
    failing = [f for f in findings if f.allowed_because is None]
    if failing:
        raise fail(
            f"{len(failing)} finding(s): fix them with the recipes above, or justify in LINT_ALLOW"
        )
    typer.echo(f"migrations lint: ok ({len(findings)} justified exception(s))")


# ------------------------------------------------------------------------------ seed-demo


@app.command("seed-demo")
@clear_errors
def seed_demo() -> None:
    """Load the demo organizations, users, projects, tasks and comments (once)."""
    settings = get_settings()
    DB.configure(resolve(settings).require_server(), settings)
    summary = run(demo.load_demo())
    if summary is None:
        typer.echo("Demo data is already loaded.")
    else:
        typer.echo(f"Loaded {summary}")
    typer.echo(f"Demo users: {', '.join(demo.USERS)}; password: {demo.DEMO_PASSWORD}")


@app.command("seed")
def seed_bulk(
    orgs: Annotated[int, typer.Option(help="Organizations (tenants), of skewed sizes.")] = 20,
    users: Annotated[int, typer.Option(help="Users, spread over the organizations.")] = 2000,
    projects_per_org: Annotated[int, typer.Option(help="Projects per organization.")] = 10,
    tasks_per_project: Annotated[int, typer.Option(help="Tasks per project, on average.")] = 5000,
    comments_per_task: Annotated[int, typer.Option(help="Comments per task, on average.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same data.")] = 42,
    skew: Annotated[
        float,
        typer.Option(help="Tenant sizes: the tenant of rank r gets a share ~ 1 / r ** SKEW."),
    ] = 0.9,
    largest_share: Annotated[
        float | None,
        typer.Option(
            help="Solve the skew so that the largest tenant's expected share of the tasks is "
            "this (0.25: 2.5M of 10M tasks); overrides --skew."
        ),
    ] = None,
    sessions_per_user: Annotated[
        int,
        typer.Option(
            help="Live sessions per user (the token of session K of user I is seed-SEED-I-K)."
        ),
    ] = 0,
    jobs: Annotated[
        int,
        typer.Option(
            help="Worker processes, each with its own connection; the data does not depend on it."
        ),
    ] = 1,
) -> None:
    """Load a large realistic dataset with COPY (into a database being prepared, not a live
    one). On the embedded server, name a database of its own: TASKQL_DATABASE=taskql_large.

    Issue 17's dataset (10M tasks, 30M comments, 100 tenants, the largest 2.5M tasks, 1M
    users, 5M sessions): TASKQL_DATABASE=taskql_10m taskql seed --orgs 100
    --projects-per-org 10 --tasks-per-project 10000 --comments-per-task 3 --users 1000000
    --sessions-per-user 5 --largest-share 0.25 --jobs 2
    """
    from db.bulk import SeedSpec
    from db.bulk import seed as load

    if jobs < 1:
        raise fail("--jobs must be at least 1")
    settings = get_settings()
    targets = resolve(settings)
    _as_owner(targets, settings)
    run(_migrate_forwards())
    spec = SeedSpec(
        orgs,
        users,
        projects_per_org,
        tasks_per_project,
        comments_per_task,
        seed,
        skew=skew,
        largest_share=largest_share,
        sessions_per_user=sessions_per_user,
        jobs=jobs,
    )
    result = run(load(targets.require_owner(), spec))
    rate = sum(result.counts.values()) / result.seconds
    typer.echo(
        "loaded "
        + ", ".join(f"{n:,} {t}" for t, n in result.counts.items())
        + f" in {result.seconds:.1f} s ({rate:,.0f} rows/s); largest tenant {result.largest}, "
        f"smallest {result.smallest}"
    )


#: The compiled statements of the load benchmark's operations (bench/load.py).
COMPILED_PATHS = {
    "compiled: main query (50 tasks, assignee, 3 comments + authors)": """query($p: ID!) {
      project(id: $p) { name tasks(first: 50) { edges { node { id title status priority
      assignee { id displayName } comments(first: 3) { nodes { id content author { id displayName } } } } } } } }""",
    "compiled: project tasks by priority with totalCount": """query($p: ID!) { project(id: $p) {
      tasks(first: 50, orderBy: PRIORITY, direction: DESC) { totalCount nodes { id title priority status } } } }""",
    "compiled: task detail (ancestors, subtasks, history)": """query($t: ID!) { task(id: $t) {
      title ancestors { title } subtasks(first: 10) { nodes { title } } history(first: 5) { nodes { action createdAt } } } }""",
    "compiled: viewer with memberships": """{ viewer { user { email }
      memberships(first: 10) { nodes { role organization { slug } } } } }""",
    "compiled: search, first 20": """{ search(text: "billing export", first: 20) {
      nodes { rank node { __typename } } } }""",
    "compiled: audit log page (newest 20, with actor)": """{ auditLog(first: 20) { edges { cursor
      node { action entityType changes createdAt actor { displayName } } } pageInfo { hasNextPage endCursor } } }""",
}


async def compiled_paths(executor: Any, sample: Any) -> None:
    """Plan the statements api.compiler renders for the benchmark's operations."""
    from api.compiler import Compiler
    from api.ids import to_global_id
    from api.schema import schema

    compiler = Compiler(schema._schema, get_settings())
    variables = {
        "p": to_global_id("Project", sample.project_id),
        "t": to_global_id("Task", sample.deep_task_id or sample.task_ids[0]),
    }
    for name, query in COMPILED_PATHS.items():
        used = {k: v for k, v in variables.items() if f"${k}" in query}
        prepared = compiler.prepare(
            query, None, used, sample.organization_id, sample.user_id, "owner"
        )
        if prepared is None:
            raise fail(f"{name}: not compiled")
        sql, params = prepared
        executor.current = (name, 50.0)
        try:
            await executor.fetchval(sql, *params)
        finally:
            executor.current = None


@app.command("explain")
@clear_errors
def explain(
    output: Annotated[Path, typer.Option(help="Where to write the report.")] = Path(
        "docs/query-plans.md"
    ),
) -> None:
    """Plan and time every hot statement on the seeded database (largest and smallest tenant);
    exit 1 on a sequential scan of a large table or a statement over its budget."""
    from datetime import UTC, datetime

    from db.explain import markdown, report

    targets = resolve(get_settings())
    plans, unused = run(
        report(targets.require_owner(), targets.require_server(), extra=compiled_paths)
    )
    output.write_text(markdown(plans, unused, datetime.now(UTC).strftime("%Y-%m-%d")))
    failing = [p for p in plans if p.problems]
    for plan in plans:
        mark = "FAIL" if plan.problems else "ok  "
        typer.echo(
            f"{mark} {plan.tenant:28.28} {plan.statement:52.52} {plan.milliseconds:8.2f} ms  {', '.join(plan.problems)}"
        )
    typer.echo(f"report written to {output}")
    if failing:
        raise fail(f"{len(failing)} statement(s) scan a large table or exceed their budget")


# ------------------------------------------------------------------------------ schema


@app.command("export-schema")
def export_schema(
    check: Annotated[
        bool, typer.Option("--check", help="Fail if schema.graphql is stale.")
    ] = False,
) -> None:
    """Write the GraphQL SDL to schema.graphql at the project root (or check it)."""
    from api.schema import SDL_PATH, sdl

    current = sdl()
    if check:
        if not SDL_PATH.exists() or SDL_PATH.read_text() != current:
            raise fail(f"{SDL_PATH.name} is stale: run `taskql export-schema`")
        typer.echo(f"{SDL_PATH.name} is up to date")
        return
    SDL_PATH.write_text(current)
    typer.echo(f"wrote {SDL_PATH}")


# ------------------------------------------------------------------------------------- db


@db_app.command("bootstrap")
@clear_errors
def db_bootstrap(
    admin_url: Annotated[str, typer.Option(help="Superuser URL of the cluster.")],
    database: Annotated[str, typer.Option(help="Database to create (if missing).")] = "taskql",
    owner: Annotated[str, typer.Option(help="Owner login role.")] = roles.DEFAULT_OWNER,
    server_login: Annotated[
        str, typer.Option(help="Server login role.")
    ] = roles.DEFAULT_SERVER_LOGIN,
    owner_password: Annotated[
        str | None,
        typer.Option(
            envvar="TASKQL_OWNER_PASSWORD",
            help="Password to set for the owner login role (default: leave it unchanged).",
        ),
    ] = None,
    server_password: Annotated[
        str | None,
        typer.Option(
            envvar="TASKQL_SERVER_PASSWORD",
            help="Password to set for the server login role (default: leave it unchanged).",
        ),
    ] = None,
    print_env: Annotated[
        bool, typer.Option("--print-env", help="Print DATABASE_URL and MIGRATION_DATABASE_URL.")
    ] = False,
) -> None:
    """Create the owner and server roles and the database, once, as a superuser."""
    names = roles.RoleNames(owner=owner, server_login=server_login)
    run(roles.bootstrap(admin_url, database, names, owner_password, server_password))
    if print_env:
        server_url = roles.role_url(admin_url, server_login, server_password, database)
        owner_url = roles.role_url(admin_url, owner, owner_password, database)
        typer.echo(f"export DATABASE_URL={shlex.quote(server_url)}")
        typer.echo(f"export MIGRATION_DATABASE_URL={shlex.quote(owner_url)}")
    else:
        typer.echo(
            f"roles {owner}, {server_login} (in {roles.SERVER_GROUP}) and database {database} ready"
        )


@db_app.command("drop")
@clear_errors
def db_drop(
    admin_url: Annotated[str, typer.Option(help="Superuser URL of the cluster.")],
    database: Annotated[str, typer.Option(help="Database to drop.")],
    owner: Annotated[str | None, typer.Option(help="Also drop this owner login role.")] = None,
    server_login: Annotated[
        str | None, typer.Option(help="Also drop this server login role.")
    ] = None,
) -> None:
    """Drop a database (and optionally its login roles): for CI and scratch databases."""
    logins = [name for name in (server_login, owner) if name]
    run(roles.drop_database(admin_url, database, logins))
    typer.echo(f"dropped {database}" + (f" and role(s) {', '.join(logins)}" if logins else ""))


@db_app.command("maintain")
@clear_errors
def db_maintain(
    months_ahead: Annotated[int, typer.Option(help="Audit partitions to create ahead.")] = 3,
    drop_before: Annotated[
        str | None, typer.Option(help="Drop audit partitions ending on or before YYYY-MM-DD.")
    ] = None,
) -> None:
    """Create the coming months' audit-log partitions; optionally drop old ones (retention);
    prune realtime outbox events older than TASKQL_REALTIME_RETENTION_SECONDS."""
    settings = get_settings()
    _as_owner(resolve(settings), settings)
    pruned = 0

    async def maintain() -> tuple[int, int]:
        nonlocal pruned
        pruned = await _prune_realtime_events(settings.taskql_realtime_retention_seconds)
        created = await _create_partitions(months_ahead)
        dropped = 0
        if drop_before is not None:
            cutoff = date.fromisoformat(drop_before)
            connection = await DB.get_new_connection()
            try:
                dropped = int(
                    await connection.fetchval("SELECT audit_logs_drop_partitions($1)", cutoff)
                )
            finally:
                await connection.close()
        return created, dropped

    created, dropped = run(maintain())
    typer.echo(f"audit_logs: {created} partition(s) created, {dropped} dropped")
    typer.echo(f"realtime_events: {pruned} event(s) pruned")


@db_app.command("health")
@clear_errors
def db_health(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    long_transaction_seconds: Annotated[
        float, typer.Option(help="A transaction open longer than this is a problem.")
    ] = 300.0,
    partitions_ahead: Annotated[
        int, typer.Option(help="Fewer audit partitions ahead (months) than this is a problem.")
    ] = 1,
    replication_lag_seconds: Annotated[
        float, typer.Option(help="A replica replaying further behind is a problem.")
    ] = 60.0,
    top: Annotated[int, typer.Option(help="Statements and bloated relations to list.")] = 10,
) -> None:
    """Check the database's health as the owner role: top statements (pg_stat_statements),
    unused and duplicate indexes, bloat estimates, dead tuples and vacuum, long transactions,
    audit partitions ahead, sequences, replication slots and lag. Exit 1 on a problem (cron)."""
    from db import health

    limits = health.Limits(
        long_transaction_seconds=long_transaction_seconds,
        partitions_ahead=partitions_ahead,
        replication_lag_seconds=replication_lag_seconds,
        top=top,
    )
    report = run(health.check(resolve(get_settings()).require_owner(), limits))
    if as_json:
        typer.echo(health.render_json(report))
    else:
        from rich.console import Console

        health.render(report, Console())
    if not report.ok:
        raise typer.Exit(code=1)


def _embedded_data_dir() -> Path:
    from db.settings import get_database_settings

    settings = get_database_settings()
    if not settings.embedded:
        raise fail(
            "db backup and db restore manage the embedded server; for an external PostgreSQL "
            "see docs/operations/backup.md (pgBackRest)"
        )
    return settings.taskql_data_dir


@db_app.command("backup")
@clear_errors
def db_backup() -> None:
    """Take a base backup of the embedded server (starting it if needed) and switch on WAL
    archiving beside its data folder (TASKQL_DATA_DIR/../backup): every later moment can then
    be restored with `taskql db restore --to`."""
    from db import backup, embedded

    server = embedded.start(_embedded_data_dir())
    made = backup.backup(server)
    typer.echo(backup.describe(made))
    typer.echo(f"WAL archived to {embedded.wal_archive(server.data_dir)}")


@db_app.command("restore")
@clear_errors
def db_restore(
    to: Annotated[
        str, typer.Option(help="Restore to this moment (ISO 8601 with its zone), inclusive.")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Move an existing data folder aside first.")
    ] = False,
) -> None:
    """Rebuild the embedded server's data folder from the newest base backup before --to and
    replay the archived WAL up to that moment. Every process using the server must be
    stopped first."""
    from datetime import datetime

    from db import backup

    try:
        moment = datetime.fromisoformat(to)
    except ValueError:
        raise fail(f"--to {to!r} is not an ISO 8601 time") from None
    restored = backup.restore(_embedded_data_dir(), moment, force)
    if restored.moved_aside is not None:
        typer.echo(f"the previous data folder was moved to {restored.moved_aside}")
    typer.echo(
        f"restored to {restored.target.isoformat()} from base backup {restored.backup.label} "
        f"in {restored.seconds:.1f} s"
    )


async def _prune_realtime_events(keep_seconds: int) -> int:
    """Delete outbox events older than the resume window, in batches (each its own
    transaction, so pruning a large backlog holds no long lock)."""
    connection = await DB.get_new_connection()
    try:
        total = 0
        while True:
            deleted = int(
                await connection.fetchval(
                    "SELECT realtime_events_prune(make_interval(secs => $1))", float(keep_seconds)
                )
            )
            total += deleted
            if deleted == 0:
                return total
    finally:
        await connection.close()


# --------------------------------------------------------------------------------- tenant


def _tenant_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {table}" for table, n in counts.items())


@tenant_app.command("export")
@clear_errors
def tenant_export(
    org: Annotated[str, typer.Argument(help="The organization's slug or id.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Folder to write (must be empty; default ./tenant-<slug>-<time>)."),
    ] = None,
) -> None:
    """Write every row of one organization (members' user records included, password hashes
    and sessions excluded) as NDJSON, one file per table, with manifest.json (row counts,
    SHA-256 checksums, schema version)."""
    from datetime import UTC, datetime

    from db import tenants

    folder = out or Path(f"tenant-{org}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")
    outcome = run(tenants.export(resolve(get_settings()).require_owner(), org, folder))
    typer.echo(
        f"exported {outcome.slug} ({outcome.organization_id}) to {folder} in "
        f"{outcome.seconds:.2f} s: {_tenant_counts(outcome.counts)}"
    )


@tenant_app.command("delete")
@clear_errors
def tenant_delete(
    org: Annotated[str, typer.Argument(help="The organization's slug or id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    batch_size: Annotated[int, typer.Option(help="Rows per transaction.", min=1)] = 1000,
) -> None:
    """Remove the organization and everything it owns, in short batches (no long lock),
    leaving one audit record of the deletion. User accounts are kept. Export it first."""
    from db import tenants

    if not yes and not typer.confirm(
        f"Delete organization {org} and all its projects, tasks, comments, members and audit log?"
    ):
        raise typer.Exit(code=1)
    outcome = run(tenants.delete(resolve(get_settings()).require_owner(), org, batch_size))
    typer.echo(
        f"deleted {outcome.slug} ({outcome.organization_id}) in {outcome.batches} batches, "
        f"{outcome.seconds:.2f} s: {_tenant_counts(outcome.counts)}"
    )


@tenant_app.command("import")
@clear_errors
def tenant_import(
    folder: Annotated[Path, typer.Argument(help="A folder written by `taskql tenant export`.")],
    into: Annotated[
        str | None,
        typer.Option(help="An existing empty organization (slug or id) to import into."),
    ] = None,
) -> None:
    """Restore an export into its organization (created when missing) or into an existing
    empty one; users are matched by e-mail or created. All or nothing."""
    from db import tenants

    outcome = run(tenants.import_(resolve(get_settings()).require_owner(), folder, into))
    typer.echo(
        f"imported into {outcome.slug} ({outcome.organization_id}) in {outcome.seconds:.2f} s: "
        f"{_tenant_counts(outcome.counts)}; users: {outcome.users_matched} matched by e-mail, "
        f"{outcome.users_created} created (they must reset their password)"
    )


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="taskql")


if __name__ == "__main__":  # pragma: no cover
    main()
