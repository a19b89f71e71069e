"""Which server holds how many of an agent's open MCP sessions (the
`agent_sessions` table, migration sqlite/0004 and postgres/0006).

A mixin of both stores' transactions: the statements are the same in both
dialects but for the parameter mark. Each method moves a server's row and
the agent's `open_sessions` together, each by one statement that adds to
what is stored (never a count read earlier and written back), so two of
an agent's sessions opening or closing at once, on one server or on two,
never lose a count. The rows say whose sessions they are, so those of a
server that stopped without closing them can be counted out
(`tenure.sessions`).
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
# Never below 0, for a count written by hand or by an older Tenure.
_ADD = (
    "UPDATE agents SET open_sessions = CASE WHEN open_sessions + ? > 0 "
    "THEN open_sessions + ? ELSE 0 END WHERE board_id = ? AND id = ? RETURNING open_sessions"
)
_COUNT = "SELECT open_sessions FROM agents WHERE board_id = ? AND id = ?"
_SERVERS = "SELECT DISTINCT server_id FROM agent_sessions"
_TAKE = "DELETE FROM agent_sessions WHERE server_id = ? RETURNING board_id, agent_id, sessions"
_FORGET = "DELETE FROM agent_sessions"
_FORGET_COUNTS = "UPDATE agents SET open_sessions = 0 WHERE open_sessions <> 0 RETURNING id"


class SessionRows:
    """`agent_sessions` statements of an open transaction."""

    if TYPE_CHECKING:
        #: The dialect's parameter mark ("?" or "%s").
        _MARK: str

        def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

        def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...
    else:
        __slots__ = ()

    def _sessions_sql(self, sql: str) -> str:
        return sql if self._MARK == "?" else sql.replace("?", self._MARK)

    def _add_sessions(self, board_id: str, agent_id: str, by: int) -> int:
        """Add `by` to the agent's count; the count (0 for no such agent)."""
        if by:
            rows = self._all(self._sessions_sql(_ADD), (by, by, board_id, agent_id))
        else:
            rows = self._all(self._sessions_sql(_COUNT), (board_id, agent_id))
        return int(rows[0][0]) if rows else 0

    def open_session(self, board_id: str, agent_id: str, server_id: int) -> int:
        """Count one more open session of the agent on `server_id`; how many
        it has open now, on every server."""
        self._exec(self._sessions_sql(_OPEN), (board_id, agent_id, server_id))
        return self._add_sessions(board_id, agent_id, 1)

    def close_session(self, board_id: str, agent_id: str, server_id: int) -> int:
        """Count one session of the agent on `server_id` fewer (none if that
        server held none: they were counted out already); how many it has
        open now, on every server."""
        key = (board_id, agent_id, server_id)
        closed = self._all(self._sessions_sql(_CLOSE_LAST), key) or self._all(
            self._sessions_sql(_CLOSE_ONE), key
        )
        return self._add_sessions(board_id, agent_id, -1 if closed else 0)

    def session_servers(self) -> list[int]:
        """The servers holding any open session."""
        return [int(row[0]) for row in self._all(_SERVERS)]

    def take_sessions(self, server_id: int) -> list[tuple[str, str, int]]:
        """Count out every session `server_id` holds; (board, agent, sessions)
        of each agent it held some of."""
        rows = self._all(self._sessions_sql(_TAKE), (server_id,))
        taken = [(str(row[0]), str(row[1]), int(row[2])) for row in rows]
        for board_id, agent_id, sessions in taken:
            self._add_sessions(board_id, agent_id, -sessions)
        return taken

    def forget_sessions(self) -> int:
        """Count out every session of every server (none is open anywhere);
        how many agents had some."""
        self._exec(_FORGET)
        return len(self._all(_FORGET_COUNTS))
