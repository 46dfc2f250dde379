"""Metrics from a real `taskql serve` with two uvicorn workers (counts add up across the
workers, on the metrics port and behind the token on the public port), and a real Prometheus
(Debian's package) scraping it with the alert rules loaded."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, multiprocess

from tests.api.test_metrics import Samples, parse, value
from tests.conftest import ScratchDatabase
from tests.test_serve import stop, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "a-metrics-token-of-the-test"


def port_in_range(low: int = 8600, high: int = 8700) -> int:
    """A free port of the range this project's servers use on shared machines."""
    for port in range(low, high):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {low}-{high - 1}")


def two_ports() -> tuple[int, int]:
    first = port_in_range()
    second = port_in_range(first + 1)
    return first, second


def per_worker(folder: Path, tmp_path: Path, name: str, **labels: str) -> dict[int, float]:
    """``name``'s value in each worker's own files (their pid is in the file name)."""
    found = {}
    pids = {int(f.stem.rsplit("_", 1)[1]) for f in folder.glob("counter_*.db")}
    for pid in pids:
        alone = tmp_path / f"worker-{pid}"
        alone.mkdir()
        for file in folder.glob(f"*_{pid}.db"):
            shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in registry.collect()
            for s in family.samples
        }
        found[pid] = value(samples, name, **labels)
    return found


@pytest.fixture
def two_workers(
    test_database: ScratchDatabase, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], int, int, Path]]:
    port, metrics_port = two_ports()
    folder = tmp_path / "metrics"
    env = {
        **test_database.env(),
        "TASKQL_WORKERS": "2",
        "DB_POOL_MAX_SIZE": "3",
        "TASKQL_METRICS_PORT": str(metrics_port),
        "TASKQL_METRICS_TOKEN": TOKEN,
        "TASKQL_METRICS_DIR": str(folder),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--no-demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_healthy(process, port)
        yield process, port, metrics_port, folder
    finally:
        if process.poll() is None:
            stop(process)


PING = "query Ping { __typename }"
LOG_IN = 'mutation LogIn { logIn(input: {email: "nobody@example.test", password: "wrong password"}) { token } }'


async def _send(port: int, query: str, count: int, concurrency: int = 8) -> None:
    """``count`` requests, each on a connection of its own (the kernel spreads new
    connections over the workers)."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate, httpx.AsyncClient(timeout=20) as client:
            response = await client.post(f"http://127.0.0.1:{port}/graphql", json={"query": query})
            assert response.status_code == 200, response.text

    await asyncio.gather(*(one() for _ in range(count)))


def _scrape(url: str, **headers: str) -> Samples:
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text)


def test_two_workers_counts_add_up_on_the_metrics_port_and_behind_the_token(
    two_workers: tuple[subprocess.Popen[str], int, int, Path], tmp_path: Path
) -> None:
    process, port, metrics_port, folder = two_workers
    asyncio.run(_send(port, PING, 60))
    asyncio.run(_send(port, LOG_IN, 4, concurrency=2))
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    # Both workers' pools are summed (3 connections max each) once both have sampled them.
    deadline = time.monotonic() + 20
    while True:
        samples = _scrape(url)
        if value(samples, "taskql_db_pool_max_size") == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert value(samples, "taskql_db_pool_max_size") == 6
    requests = "taskql_graphql_requests_total"
    assert value(samples, requests, operation="Ping", path="resolvers", status="200") == 60
    assert value(samples, "taskql_graphql_request_duration_seconds_count", operation="Ping") == 60
    assert value(samples, "taskql_auth_logins_total", result="failed") == 4
    assert value(samples, "taskql_db_up") == 1
    # The same sums from the public port, for a caller with the token; nothing without it.
    public = f"http://127.0.0.1:{port}/metrics"
    assert httpx.get(public, timeout=10).status_code == 401
    behind_token = _scrape(public, Authorization=f"Bearer {TOKEN}")
    assert value(behind_token, requests, operation="Ping") == 60
    # Each worker counted its own requests, and the two add up to what the scrape reports.
    split = per_worker(folder, tmp_path, requests, operation="Ping")
    assert len(split) == 2, split
    assert all(n > 0 for n in split.values()), split
    assert sum(split.values()) == 60
    output = stop(process)
    assert "Traceback" not in output
    assert f"Metrics: http://127.0.0.1:{metrics_port}/metrics" in output


def _prometheus(tmp_path: Path, target: str, port: int) -> subprocess.Popen[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is needed (apt-get install prometheus; .ci/run installs it)"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{ROOT / 'deploy' / 'prometheus' / 'rules.yml'}]\n"
        "scrape_configs:\n"
        "  - job_name: taskql\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    return subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_real_prometheus_scrapes_taskql_and_evaluates_the_rules(
    two_workers: tuple[subprocess.Popen[str], int, int, Path], tmp_path: Path
) -> None:
    _, port, metrics_port, _ = two_workers
    asyncio.run(_send(port, PING, 10))
    prometheus_port = port_in_range(metrics_port + 1)
    prometheus = _prometheus(tmp_path, f"127.0.0.1:{metrics_port}", prometheus_port)
    api = f"http://127.0.0.1:{prometheus_port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        found: list[dict[str, object]] = []
        groups: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            assert prometheus.poll() is None, prometheus.stdout.read() if prometheus.stdout else ""
            try:
                query = 'sum(taskql_graphql_requests_total{job="taskql", operation="Ping"})'
                found = httpx.get(f"{api}/query", params={"query": query}, timeout=5).json()[
                    "data"
                ]["result"]
                groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
            except httpx.HTTPError:
                pass
            evaluated = [
                rule
                for group in groups
                for rule in group["rules"]  # type: ignore[attr-defined]
                if rule.get("lastEvaluation", "").startswith("20")
                and not rule["lastEvaluation"].startswith("0001")
            ]
            if found and groups and len(evaluated) == 16:
                break
            time.sleep(0.5)
        assert found, "Prometheus found no taskql series"
        assert float(found[0]["value"][1]) == 10  # type: ignore[index]
        rules = [rule for group in groups for rule in group["rules"]]  # type: ignore[attr-defined]
        assert len(rules) == 16
        assert all(rule["health"] == "ok" for rule in rules), rules
        up = httpx.get(f"{api}/query", params={"query": "taskql_db_up"}, timeout=5).json()
        assert up["data"]["result"][0]["value"][1] == "1"
        # Nothing is wrong with this taskql: no alert fires.
        firing = httpx.get(f"{api}/alerts", timeout=5).json()["data"]["alerts"]
        assert [a for a in firing if a["state"] == "firing"] == []
    finally:
        prometheus.terminate()
        prometheus.communicate(timeout=30)
