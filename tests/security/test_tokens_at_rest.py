"""Tokens at rest and in comparison: the database never holds a token, only
its digest, and every token kind that is compared against a stored digest
(the admin token, enrolment keys, viewer tokens) is compared in constant
time through `tenure.auth.same_digest`."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import pytest

from tenure import auth
from tenure.auth import ADMIN, token_hash
from tenure.clock import FakeClock
from tenure.core.errors import Unauthorized
from tenure.service import Coordinator
from tenure.store.sqlite import open_sqlite


async def _tokens(c: Coordinator) -> dict[str, str]:
    """Every kind of token Tenure makes, made once."""
    admin = await c.admin.ensure_admin_token()
    assert admin is not None
    board = await c.admin.create_board(ADMIN, "vault")
    agent = await c.admin.register_agent(ADMIN, {"agent_id": "keeper"}, "vault")
    rotated = await c.admin.rotate_agent_token(ADMIN, "vault", "keeper")
    return {
        "admin": admin,
        "enrolment": board["enrolment_key"],
        "viewer": board["viewer_token"],
        "agent (first)": agent["token"],
        "agent (rotated)": rotated["token"],
    }


async def test_the_database_file_holds_digests_and_never_a_token(tmp_path: Path) -> None:
    path = tmp_path / "tenure.db"
    store = await open_sqlite(path, FakeClock())
    c = Coordinator(store)
    tokens = await _tokens(c)
    for kind, token in tokens.items():  # each one works (the first agent token was rotated)
        if kind != "agent (first)":
            await c.authenticate(token)
    await store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("tenure.db"))
    for kind, token in tokens.items():
        assert token.encode() not in raw, f"the {kind} token is stored in the clear"
        secret = token.split("_", 2)[-1]
        assert secret.encode() not in raw, f"the random part of the {kind} token is stored"
    # The search can find what is there: the digests are.
    for kind in ("admin", "enrolment", "viewer", "agent (rotated)"):
        assert token_hash(tokens[kind]).encode() in raw, f"no digest of the {kind} token"


async def test_stored_digests_are_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_sqlite(tmp_path / "tenure.db", FakeClock())
    c = Coordinator(store)
    tokens = await _tokens(c)
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    try:
        for kind in ("admin", "enrolment", "viewer"):
            compared.clear()
            await c.authenticate(tokens[kind])
            assert (token_hash(tokens[kind]), token_hash(tokens[kind])) in compared, kind
            with pytest.raises(Unauthorized):  # a guess of the same kind
                await c.authenticate(tokens[kind][:-4] + "AAAA")
    finally:
        await store.close()
