"""The one settings object: the database settings plus what the HTTP layer reads."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from db.settings import DatabaseSettings


class Settings(DatabaseSettings):
    """All configuration, from environment variables (names are the field names, upper-case)."""

    taskql_host: str = "127.0.0.1"
    taskql_port: int = Field(default=8000, ge=1, le=65535)
    #: uvicorn worker processes; more than one needs an external DATABASE_URL or shares the
    #: embedded server started by the parent.
    taskql_workers: int = Field(default=1, ge=1)
    #: Load the demo data at start-up (default: only on the embedded server).
    taskql_demo: bool | None = None
    taskql_log_level: str = "info"
    #: ``json``: one JSON object per line for every request (api.access_log); ``text``: a
    #: human-readable line, only for slow operations at the default level.
    taskql_log_format: Literal["text", "json"] = "text"
    #: Operations slower than this are logged as WARNING with their figures.
    taskql_slow_operation_ms: int = Field(default=500, ge=1)
    #: /readyz: seconds PostgreSQL has to answer (through the pool, or the check connection
    #: when every pooled connection is busy) before the process reports not ready.
    taskql_ready_timeout: float = Field(default=2.0, gt=0, le=60)

    #: Sessions (bearer tokens) expire after this many seconds.
    taskql_session_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    #: Invitations to an organization expire after this many seconds (default 7 days).
    taskql_invitation_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    #: Peers whose X-Forwarded-For is believed (IPs or CIDRs, comma-separated); none by
    #: default: the client address is the socket peer. See docs/architecture/api.md.
    taskql_trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()
    #: Origins whose pages may call the API from a browser (CORS), comma-separated, e.g.
    #: ``https://app.example.com``; ``*`` for any. None by default (no CORS headers).
    taskql_cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    #: How long a browser may cache a CORS preflight answer.
    taskql_cors_max_age_seconds: int = Field(default=600, ge=0)
    #: Shared rate-limit counters (``redis://host:port/db``); unset: in process memory,
    #: right only for one process.
    redis_url: str | None = None
    #: Prefix of every rate-limit key in Redis (one per deployment sharing a Redis).
    taskql_rate_limit_prefix: str = "taskql"
    #: Log-in protection (logIn and changePassword; docs/architecture/api.md): attempts per
    #: (e-mail, address) pair and per address per TASKQL_LOGIN_WINDOW_SECONDS, and a slower
    #: ceiling per e-mail from all addresses per TASKQL_LOGIN_EMAIL_WINDOW_SECONDS.
    taskql_login_attempts_per_pair: int = Field(default=10, ge=1)
    taskql_login_attempts_per_ip: int = Field(default=50, ge=1)
    taskql_login_window_seconds: int = Field(default=300, ge=1)
    taskql_login_attempts_per_email: int = Field(default=200, ge=1)
    taskql_login_email_window_seconds: int = Field(default=3600, ge=1)

    #: Limits on every operation.
    taskql_max_body_bytes: int = Field(default=1_000_000, ge=1024)
    taskql_max_depth: int = Field(default=12, ge=2)
    taskql_max_aliases: int = Field(default=30, ge=1)
    taskql_max_tokens: int = Field(default=5000, ge=100)
    #: GitHub-style node limit: the sum over connections of first x the parents' firsts.
    taskql_max_nodes: int = Field(default=20_000, ge=100)
    #: Operations one caller (a session; an anonymous address) runs at once per process, and
    #: how many more may wait before it gets 429 (api.fairness, bench/abuse.py).
    taskql_max_operations_per_caller: int = Field(default=2, ge=1)
    taskql_max_queued_per_caller: int = Field(default=64, ge=0)
    #: Field selections of an operation once its fragments are expanded (api.cost).
    taskql_max_fields: int = Field(default=2_000, ge=100)
    #: Introspection (`__schema`, `__type`) and the GraphiQL page for anonymous callers.
    #: Off in production if the schema is not public; signed-in callers keep introspection.
    taskql_public_introspection: bool = True
    #: statement_timeout inside a GraphQL operation's transaction.
    taskql_request_statement_timeout_ms: int = Field(default=3000, ge=0)
    #: Report the operation's SQL statement count in the response's `extensions`.
    taskql_sql_stats: bool = False
    #: Answer the queries api.compiler knows with one SQL statement (resolvers otherwise).
    taskql_compiled_queries: bool = True
    #: Answer a lone write by its resolver and the compiler's read-back, without GraphQL
    #: execution (api.direct); needs compiled queries. Off: Strawberry executes every write.
    taskql_direct_writes: bool = True
    #: Garbage collector generation-0 threshold for server processes (Python's default is
    #: 2,000); 0 leaves the collector alone. See docs/performance.md.
    taskql_gc_threshold: int = Field(default=5_000, ge=0)

    #: Prometheus metrics (api.metrics, docs/operations/monitoring.md). Off: nothing is
    #: counted or timed (the benchmark's comparison).
    taskql_metrics: bool = True
    #: A listener of its own for /metrics, run by `taskql serve` (unset: none).
    taskql_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    taskql_metrics_host: str = "127.0.0.1"
    #: Serve /metrics on the public port too, to callers with this bearer token (unset: 404).
    taskql_metrics_token: str | None = Field(default=None, min_length=16)
    #: The multiprocess folder of `taskql serve --workers N` (N > 1); its files are deleted
    #: at start. Unset: a temporary folder, removed at exit.
    taskql_metrics_dir: Path | None = None
    #: Distinct operation names labelled per process; the rest are counted as ``other``.
    taskql_metrics_max_operations: int = Field(default=100, ge=1, le=10_000)
    #: Realtime (GraphQL subscriptions over WebSocket, docs/architecture/realtime.md).
    #: The LISTEN connection's URL: a direct one when DATABASE_URL goes through PgBouncer in
    #: transaction mode (LISTEN needs a session); default DATABASE_URL.
    taskql_listen_database_url: str | None = None
    #: How long outbox events are kept: the window in which `after:` can resume, and what
    #: `taskql db maintain` prunes beyond.
    taskql_realtime_retention_seconds: int = Field(default=24 * 3600, ge=60)
    taskql_ws_max_subscriptions_per_connection: int = Field(default=20, ge=1)
    taskql_ws_max_subscriptions_per_user: int = Field(default=100, ge=1)
    #: Largest client message (bytes); a larger one closes the socket (4400).
    taskql_ws_max_message_bytes: int = Field(default=64 * 1024, ge=1024)
    #: The client must send connection_init within this many seconds (else 4408).
    taskql_ws_init_timeout_seconds: float = Field(default=5.0, gt=0)
    #: The server pings this often; no pong (or any message) within another interval closes it.
    taskql_ws_ping_seconds: float = Field(default=15.0, gt=0)
    #: A connection with no subscription and no message for this long is closed.
    taskql_ws_idle_seconds: float = Field(default=300.0, gt=0)
    #: Sessions and memberships are announced as they end or change; besides, every open
    #: connection re-authenticates this often (expiry, a listener that reconnected).
    taskql_ws_reauth_seconds: float = Field(default=30.0, gt=0)
    #: Payload reads of the realtime fan-out running at once (each holds a pooled connection).
    taskql_realtime_read_concurrency: int = Field(default=1, ge=1)

    #: Persisted operations (api.persisted, docs/architecture/api.md "Persisted operations").
    #: Automatic persisted queries (Apollo's `extensions.persistedQuery`).
    taskql_persisted_queries: bool = True
    #: The process's store of them: at most this many documents and bytes (LRU).
    taskql_persisted_queries_max_entries: int = Field(default=10_000, ge=1)
    taskql_persisted_queries_max_bytes: int = Field(default=20_000_000, ge=1024)
    #: With REDIS_URL they are shared in Redis, each kept this long after it was stored.
    taskql_persisted_queries_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    #: A manifest of trusted documents (id -> document: GraphQL Codegen's, Relay's or
    #: Apollo's format), re-read when the file changes.
    taskql_trusted_documents: Path | None = None
    #: Run only the manifest's documents (anything else: 400 PERSISTED_QUERY_NOT_IN_LIST).
    taskql_trusted_documents_only: bool = False
    #: Cache-Control max-age of a successful query over GET (private: per caller).
    taskql_get_max_age_seconds: int = Field(default=5, ge=0)

    @field_validator("taskql_trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if isinstance(value, list | tuple):
            return tuple(ip_network(str(part), strict=False) for part in value)
        return value

    @field_validator("taskql_cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if isinstance(value, list | tuple):
            return tuple(str(part).rstrip("/") for part in value)
        return value

    @model_validator(mode="after")
    def _trusted_only_needs_a_manifest(self) -> Settings:
        if self.taskql_trusted_documents_only and self.taskql_trusted_documents is None:
            raise ValueError(
                "TASKQL_TRUSTED_DOCUMENTS_ONLY needs TASKQL_TRUSTED_DOCUMENTS (the manifest)"
            )
        return self

    @model_validator(mode="after")
    def _one_address_cannot_reach_the_email_ceiling(self) -> Settings:
        """The per-e-mail ceiling must stay above what one address may send in its window:
        otherwise an attacker at one address could lock the owner out everywhere."""
        windows = -(-self.taskql_login_email_window_seconds // self.taskql_login_window_seconds)
        if self.taskql_login_attempts_per_pair * windows >= self.taskql_login_attempts_per_email:
            raise ValueError(
                "TASKQL_LOGIN_ATTEMPTS_PER_EMAIL must exceed TASKQL_LOGIN_ATTEMPTS_PER_PAIR "
                "times the pair windows in TASKQL_LOGIN_EMAIL_WINDOW_SECONDS "
                f"({self.taskql_login_attempts_per_pair} x {windows}): one address alone "
                "could lock an account out from everywhere"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
