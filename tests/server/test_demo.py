"""`tenure serve --demo` runs headless for a bounded time, and its event log
tells the story: a recovery, a handoff delivered, a refused stale completion
and a claim-back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from tests.support.server import ADMIN_TOKEN, free_port, tenure_command, wait_until

pytestmark = pytest.mark.xdist_group("server-demo")

DEMO_SECONDS = 16


def test_the_demo_shows_recovery_handoff_fencing_and_claim_back(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}
    env["TMPDIR"] = str(tmp_path)
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            tenure_command(
                "serve", "--demo", "--demo-seconds", str(DEMO_SECONDS), "--port", str(port)
            ),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        token = wait_until(
            lambda: (m := ADMIN_TOKEN.search(log.read_text(errors="replace"))) and m.group(0),
            20,
            what="the demo server's admin token",
        )
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )

        def story() -> list[dict] | None:
            try:
                events = api.get("/events", params={"board_id": "demo"}).json()["events"]
            except httpx.HTTPError:
                return None
            types = {e["type"] for e in events}
            handed_off = any(
                e["type"] == "lease.created" and e["data"].get("recovered") for e in events
            )
            wanted = {"lease.recovered", "lease.reclaimed", "lease.stale_refused", "lease.renewed"}
            return events if wanted <= types and handed_off else None

        events = wait_until(story, DEMO_SECONDS, 0.25, "the demo's story in its events")
        refused = [e for e in events if e["type"] == "lease.stale_refused"]
        assert refused[0]["agent_id"] == "carol"
        reclaimed = [e for e in events if e["type"] == "lease.reclaimed"]
        assert reclaimed[0]["agent_id"] == "dave"
        api.close()
        assert process.wait(DEMO_SECONDS + 15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    narrative = log.read_text(errors="replace")
    for line in ("CRASHED", "WITH A HANDOFF from carol", "REFUSED (lease_lost)", "CLAIMED BACK"):
        assert line in narrative, narrative
    assert "a part failed" not in narrative
