"""Which server holds how many of an agent's open MCP sessions (the
`agent_sessions` table, migration sqlite/0004 and postgres/0006).

A mixin of both stores' transactions: the statements are the same in both
dialects but for the parameter mark. An agent's `open_sessions` stays the
sum of its rows (the Coordinator writes both in one unit); the rows say
whose they are, so the sessions of a server that stopped without closing
them can be told apart and settled (`tenure.sessions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

_OPEN = (
    "INSERT INTO agent_sessions (board_id, agent_id, server_id, sessions) VALUES (?, ?, ?, 1) "
    "ON CONFLICT (board_id, agent_id, server_id) "
    "DO UPDATE SET sessions = agent_sessions.sessions + 1"
)
# Of a row at 1, the close deletes it; otherwise it counts one down.
_CLOSE_LAST = (
    "DELETE FROM agent_sessions "
    "WHERE board_id = ? AND agent_id = ? AND server_id = ? AND sessions = 1 RETURNING sessions"
)
_CLOSE_ONE = (
    "UPDATE agent_sessions SET sessions = sessions - 1 "
    "WHERE board_id = ? AND agent_id = ? AND server_id = ? RETURNING sessions"
)
_SERVERS = "SELECT DISTINCT server_id FROM agent_sessions"
_TAKE = "DELETE FROM agent_sessions WHERE server_id = ? RETURNING board_id, agent_id, sessions"
_FORGET = "DELETE FROM agent_sessions"


class SessionRows:
    """`agent_sessions` statements of an open transaction (`mark`: the
    dialect's parameter mark)."""

    if TYPE_CHECKING:
        _MARK: str

        def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

        def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...
    else:
        __slots__ = ()

    def _sessions_sql(self, sql: str) -> str:
        return sql if self._MARK == "?" else sql.replace("?", self._MARK)

    def open_session(self, board_id: str, agent_id: str, server_id: int) -> None:
        """Count one more open session of the agent on `server_id`."""
        self._exec(self._sessions_sql(_OPEN), (board_id, agent_id, server_id))

    def close_session(self, board_id: str, agent_id: str, server_id: int) -> bool:
        """Count one session of the agent on `server_id` fewer; False if that
        server held none of its sessions (they were settled or forgotten)."""
        key = (board_id, agent_id, server_id)
        if self._all(self._sessions_sql(_CLOSE_LAST), key):
            return True
        return bool(self._all(self._sessions_sql(_CLOSE_ONE), key))

    def session_servers(self) -> list[int]:
        """The servers holding any open session."""
        return [int(row[0]) for row in self._all(_SERVERS)]

    def take_sessions(self, server_id: int) -> list[tuple[str, str, int]]:
        """Delete the rows of `server_id`; (board, agent, sessions) of each."""
        rows = self._all(self._sessions_sql(_TAKE), (server_id,))
        return [(str(row[0]), str(row[1]), int(row[2])) for row in rows]

    def forget_sessions(self) -> int:
        """Delete every row (no server holds a session); how many there were."""
        return len(self._all(f"{_FORGET} RETURNING server_id"))
