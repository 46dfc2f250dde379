"""The embedded server refuses a data folder it cannot use, with a message saying why."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from db import embedded


def test_a_cluster_of_another_major_version_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    data.mkdir()
    (data / "PG_VERSION").write_text("9\n")
    with pytest.raises(
        embedded.EmbeddedPostgresError, match=r"holds a PostgreSQL 9 cluster .* PostgreSQL 1\d"
    ):
        embedded.start(data)


def test_a_folder_that_is_not_a_cluster_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    data.mkdir()
    (data / "notes.txt").write_text("not a database")
    with pytest.raises(embedded.EmbeddedPostgresError, match="holds no PostgreSQL cluster"):
        embedded.start(data)


def test_a_corrupt_cluster_is_reported_with_the_server_log(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    data.mkdir()
    (data / "PG_VERSION").write_text(embedded.bundled_major_version() + "\n")
    with pytest.raises(
        embedded.EmbeddedPostgresError, match="could not start the embedded PostgreSQL"
    ) as error:
        embedded.start(data)
    assert str(data) in str(error.value)


def test_processes_that_died_without_clean_up_are_forgotten(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".handle_pids.json").write_text(json.dumps([dead.pid, os.getpid()]))
    embedded._forget_dead_users(tmp_path)
    assert json.loads((tmp_path / ".handle_pids.json").read_text()) == [os.getpid()]
