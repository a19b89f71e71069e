"""The session book on its own: which sessions count as open, and when they stop."""

from __future__ import annotations

from typing import Any, cast

from tenure.api.mcp import ABANDONED_AFTER_S, SessionBook
from tenure.auth import Caller, Role
from tenure.service import Coordinator

AGENT = Caller(Role.AGENT, "b", "a")
KEY = Caller(Role.ENROLMENT, "b")


class Recorder:
    """Stands in for the Coordinator: records session opens and closes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    async def session_opened(self, caller: Caller) -> None:
        self.calls.append(("opened", caller.agent_id))

    async def session_closed(
        self, caller: Caller, *, dropped: bool = False, after_drop: bool = False
    ) -> None:
        kind = "closed after a drop" if after_drop else "dropped" if dropped else "closed"
        self.calls.append((kind, caller.agent_id))


def _book() -> tuple[SessionBook, Recorder]:
    recorder = Recorder()
    return SessionBook(cast(Coordinator, cast(Any, recorder))), recorder


async def test_an_agents_session_opens_and_closes_once() -> None:
    book, recorder = _book()
    await book.opened("s1", "digest", AGENT)
    await book.dropped("s1")
    await book.dropped("s1")
    await book.resumed("s1")
    await book.closed("s1")
    await book.closed("s1")
    assert recorder.calls == [("opened", "a"), ("dropped", "a"), ("opened", "a"), ("closed", "a")]


async def test_a_delete_after_a_drop_makes_the_close_explicit_once() -> None:
    book, recorder = _book()
    await book.opened("s1", "digest", AGENT)
    await book.dropped("s1")
    await book.closed("s1")
    await book.closed("s1")
    assert recorder.calls == [("opened", "a"), ("dropped", "a"), ("closed after a drop", "a")]


async def test_a_session_the_sdk_forgot_is_a_dropped_close() -> None:
    book, recorder = _book()
    await book.opened("s1", "digest", AGENT)
    await book.closed("s1", dropped=True)
    await book.closed("s1")
    assert recorder.calls == [("opened", "a"), ("dropped", "a")]


async def test_an_enrolment_session_counts_only_once_bound() -> None:
    book, recorder = _book()
    await book.opened("s1", "key-digest", KEY)
    await book.dropped("s1")
    assert recorder.calls == []
    await book.bind("s1", AGENT, "tnr_agent_new")
    assert book.caller_of("s1", "key-digest") == AGENT
    assert book.caller_of("s1", "someone-else") is None
    await book.closed("s1")
    assert recorder.calls == [("opened", "a"), ("closed", "a")]


async def test_a_shutting_down_server_closes_nothing() -> None:
    book, recorder = _book()
    await book.opened("s1", "digest", AGENT)
    book.shutting_down = True
    await book.dropped("s1")
    await book.closed("s1")
    assert recorder.calls == [("opened", "a")]


async def test_abandoned_sessions_are_forgotten_when_a_new_one_opens() -> None:
    book, recorder = _book()
    await book.opened("old", "digest", AGENT)
    await book.opened("streaming", "digest", AGENT)
    for entry in book.sessions.values():
        entry.seen_at -= ABANDONED_AFTER_S + 1
    book.sessions["streaming"].streams = 1  # a standing stream: the client is there
    await book.opened("new", "digest", AGENT)
    assert set(book.sessions) == {"streaming", "new"}
    assert recorder.calls.count(("dropped", "a")) == 1
    assert ("closed", "a") not in recorder.calls
