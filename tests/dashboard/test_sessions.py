"""Dashboard sessions in-process: cookies, CSRF, origins, revocation, and the
files shipped with the package."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tenure.api.dashboard import COOKIE, STATIC, Sessions
from tenure.auth import Role
from tenure.server import create_app
from tenure.settings import load_settings

pytestmark = pytest.mark.xdist_group("dashboard")

Made = tuple[TestClient, str, dict[str, str]]


@pytest.fixture
def app_tokens(tmp_path: Path) -> Iterator[tuple[TestClient, str, dict[str, str]]]:
    """An app on a fresh SQLite file over https, its admin token, and the keys
    of its board `web` (`viewer_token`, `enrolment_key`)."""
    tokens: list[str] = []
    settings = load_settings({"TENURE_STORE_DATABASE_URL": f"sqlite:///{tmp_path}/t.db"})
    app = create_app(settings, announce=tokens.append)
    with TestClient(app, base_url="https://tenure.test") as client:
        admin = {"Authorization": f"Bearer {tokens[0]}"}
        board = client.post("/api/v1/boards", json={"id": "web"}, headers=admin)
        assert board.status_code == 201, board.text
        yield client, tokens[0], board.json()


def test_sign_in_over_https_sets_a_secure_strict_http_only_cookie(
    app_tokens: Made,
) -> None:
    client, admin, _ = app_tokens
    answer = client.post("/login", json={"token": admin})
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=strict" in cookie
    assert admin not in cookie
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_agent_and_enrolment_tokens_cannot_sign_in(app_tokens: Made) -> None:
    client, admin, keys = app_tokens
    headers = {"Authorization": f"Bearer {admin}"}
    agent = client.post(
        "/api/v1/agents", json={"agent_id": "a1", "board_id": "web"}, headers=headers
    ).json()["token"]
    enrolment = client.post("/login", json={"token": keys["enrolment_key"]})
    assert enrolment.status_code == 403
    refused = client.post("/login", json={"token": agent})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert client.post("/login", json={"token": "tnr_view_unknown"}).status_code == 401
    assert COOKIE not in client.cookies


def test_the_board_page_redirects_to_sign_in_without_a_session(
    app_tokens: Made,
) -> None:
    client, _, _ = app_tokens
    answer = client.get("/", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert client.get("/ui/api/session").status_code == 401


def test_a_rotated_admin_token_ends_its_sessions_at_once(
    app_tokens: Made,
) -> None:
    client, admin, _ = app_tokens
    assert client.post("/login", json={"token": admin}).status_code == 200
    assert client.get("/ui/api/session").status_code == 200
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    client.portal.call(runtime.coordinator.admin.rotate_admin_token)  # type: ignore[union-attr]
    assert client.get("/ui/api/session").status_code == 401
    assert client.get("/", follow_redirects=False).status_code == 303


def test_actions_need_the_csrf_token_and_this_origin(
    app_tokens: Made,
) -> None:
    client, admin, _ = app_tokens
    assert client.post("/login", json={"token": admin}).status_code == 200
    csrf = client.get("/ui/api/session").json()["csrf_token"]
    task = {"id": "t1", "title": "One"}
    assert client.post("/ui/api/boards/web/tasks", json=task).status_code == 403
    wrong = {"X-CSRF-Token": "nope"}
    assert client.post("/ui/api/boards/web/tasks", json=task, headers=wrong).status_code == 403
    elsewhere = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    assert client.post("/ui/api/boards/web/tasks", json=task, headers=elsewhere).status_code == 403
    good = {"X-CSRF-Token": csrf, "Origin": "https://tenure.test"}
    added = client.post("/ui/api/boards/web/tasks", json=task, headers=good)
    assert added.status_code == 200, added.text
    listed = client.get("/ui/api/boards/web/tasks", params={"ids": "t1,gone"}).json()
    assert [t["id"] for t in listed["tasks"]] == ["t1"] and listed["missing"] == ["gone"]
    assert client.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/ui/api/session").status_code == 401


def test_sessions_expire_and_the_oldest_go_first() -> None:
    sessions = Sessions(ttl_s=0.0, limit=2)
    first, _ = sessions.open(Role.ADMIN, "tnr_admin_x")
    assert sessions.get(first) is None  # a zero TTL: over at once
    kept = Sessions(limit=2)
    ids = [kept.open(Role.VIEWER, f"tnr_view_{n}")[0] for n in range(3)]
    assert kept.get(ids[0]) is None and kept.get(ids[2]) is not None and len(kept) == 2
    assert kept.get(None) is None and kept.get("unknown") is None


def test_every_web_file_ships_inside_the_package() -> None:
    web = resources.files("tenure.api").joinpath("web")
    for name in (*STATIC, "index.html", "login.html"):
        assert web.joinpath(name).read_bytes(), name
    page = web.joinpath("index.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing from the internet
