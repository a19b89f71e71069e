"""Two server replicas on one PostgreSQL database: a page signed in on one
shows, live, the changes made through the other (the event stream tails the
store's log, not the process's memory). In an xdist group of its own, so
its PostgreSQL set-up runs beside the other dashboard tests, not after them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from tests.dashboard.conftest import sign_in_at
from tests.support.pg import fresh_postgres_dsn
from tests.support.server import ADMIN_TOKEN, free_port, tenure_command, wait_until

pytestmark = pytest.mark.xdist_group("dashboard-replicas")


def _url_of(dsn: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    return (
        f"postgresql://{parts.get('user', 'postgres')}@{parts.get('host', '127.0.0.1')}:"
        f"{parts.get('port', 5432)}/{parts['dbname']}"
    )


def _start(folder: Path, database_url: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = folder / f"replica-{port}.log"
    env = {"TENURE_LOG_LEVEL": "WARNING", "TENURE_MONITOR_INTERVAL": "0.2"}
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}, **env}
    with log.open("wb") as out:
        process = subprocess.Popen(
            tenure_command("serve", "--port", str(port), "--database-url", database_url),
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 30, 0.05, f"replica on {port}")
    return process, url, log


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    database_url = _url_of(fresh_postgres_dsn())
    first, url_a, log_a = _start(tmp_path, database_url)
    processes = [first]
    try:
        found = wait_until(lambda: ADMIN_TOKEN.search(log_a.read_text()), 10, 0.05, "token")
        second, url_b, _ = _start(tmp_path, database_url)
        processes.append(second)
        yield url_a, url_b, found.group(0)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_a_page_on_one_replica_shows_changes_made_through_another(
    browser: Any, replicas: tuple[str, str, str]
) -> None:
    url_a, url_b, admin = replicas
    api_a = httpx.Client(base_url=url_a + "/api/v1", headers={"Authorization": f"Bearer {admin}"})
    with api_a:
        assert api_a.post("/boards", json={"id": "shared"}).status_code == 201
        watched = sign_in_at(browser, url_b, admin)
        page = watched.page
        added = api_a.post("/boards/shared/tasks", json={"id": "via-a", "title": "Made on A"})
        assert added.status_code == 201, added.text
        card = page.locator('.column[data-status="todo"] .card[data-task-id="via-a"]')
        card.wait_for(timeout=15_000)
        agent = api_a.post("/agents", json={"agent_id": "w1", "board_id": "shared"}).json()
        worker = httpx.Client(
            base_url=url_a + "/api/v1", headers={"Authorization": f"Bearer {agent['token']}"}
        )
        with worker:
            assert worker.post("/claim").json()["task"]["id"] == "via-a"
            report = worker.post("/tasks/via-a/progress", json={"progress": 55, "message": "On A"})
            assert report.status_code == 200, report.text
        held = page.locator('.column[data-status="in_progress"] .card[data-task-id="via-a"]')
        held.locator(".note").wait_for(timeout=15_000)
        assert "w1" in held.inner_text() and "55%" in held.inner_text()
        assert watched.errors == []
        page.context.close()
