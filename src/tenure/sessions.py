"""An agent's open MCP sessions: counted per server, and counted out when a
server is gone.

An agent whose last session closes has left: its leases turn suspect (an
explicit close, or a dropped connection that may come back). Each open
session is counted twice, by the same statements: in the agent's
`open_sessions`, and in the `agent_sessions` row of the server that holds
it (`tenure.store.session_rows`), each by adding to what is stored, so
sessions opening and closing at once never lose a count.

A server that stops closes none of its sessions in the database (a server
going away must never make leases suspect: its agents' clients reconnect,
to it or to another, and otherwise their leases expire). Its rows stay, and
would keep its agents' counts up for good: their later closes elsewhere
would never bring them to 0, and their leaving would go unnoticed. A server
that starts alone forgets every row (`tenure.api.mcp`); beside others that
still run, `GoneServers` notices servers that no longer run and counts
their sessions out (`count_out_sessions_of`), marking nothing suspect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from tenure.auth import Caller
from tenure.core import lease as rules
from tenure.core.errors import TenureError
from tenure.core.model import Agent
from tenure.units import Effects, write

if TYPE_CHECKING:
    from tenure.core.policy import Policy
    from tenure.store.base import Store, Tx

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a server must be seen not running before its sessions are
#: counted out, in seconds: longer than a running server takes to hold its
#: presence lock again after losing its connection (`postgres_presence.CHECK_S`
#: and a reconnect).
GONE_AFTER_S = 15.0

#: How often `GoneServers` looks, in seconds.
LOOK_EVERY_S = 5.0


class SessionCalls:
    """The Coordinator's calls about sessions (a mixin of `Coordinator`)."""

    if TYPE_CHECKING:
        store: Store
        policy: Policy

        async def run(self, unit: Callable[[Tx, Effects], T]) -> T: ...

        def _agent(self, tx: Tx, caller: Caller) -> Agent: ...

        def _touch_others(
            self, tx: Tx, agent: Agent, effects: Effects, skip: str | None
        ) -> None: ...

    async def session_opened(self, caller: Caller) -> None:
        """An MCP session (or stdio proxy) of an agent opened."""
        if not caller.is_agent:
            return
        server_id = self.store.server_id

        def unit(tx: Tx, effects: Effects) -> None:
            agent = self._agent(tx, caller)
            tx.open_session(agent.board_id, agent.id, server_id)
            self._touch_others(tx, agent, effects, skip=None)

        await self.run(unit)

    async def session_closed(
        self, caller: Caller, *, dropped: bool = False, after_drop: bool = False
    ) -> None:
        """An agent's session ended (never by a server shutting down). When it
        was its last open session, its leases turn suspect.

        `dropped`: its connection dropped with no DELETE (the client may come
        back) rather than being closed by the client (a DELETE, a stdio proxy
        whose agent exited). `after_drop`: an explicit close of a session
        already counted closed when its connection dropped; it only makes the
        suspicion explicit (`tenure.core.lease.session_closed`).
        """
        if not caller.is_agent:
            return
        server_id = self.store.server_id

        def unit(tx: Tx, effects: Effects) -> None:
            agent = self._agent(tx, caller)
            if after_drop:
                still_open = agent.open_sessions  # it was counted out at the drop
            else:
                still_open = tx.close_session(agent.board_id, agent.id, server_id)
            if still_open:
                return
            for held in tx.live_leases_of_agent(agent.board_id, agent.id):
                change = rules.session_closed(held, tx.now, self.policy, dropped=dropped)
                write(tx, change, effects)

        await self.run(unit)

    async def count_out_sessions_of(self, server_id: int) -> int:
        """Count out the open sessions of a server that is gone (it stopped
        without closing them), marking nothing suspect, as a server that
        starts alone forgets the sessions of its previous run. Returns how
        many agents had sessions there."""

        def unit(tx: Tx, effects: Effects) -> int:
            return len(tx.take_sessions(server_id))

        return await self.run(unit)


class GoneServers:
    """Counts out the sessions of servers that are gone (`look`), every
    LOOK_EVERY_S seconds while a server serves MCP (`run`).

    A server counts as gone once it has been seen not running for
    `gone_after` seconds by this one; until this one can tell which servers
    run (its own presence lock is held), it counts nothing out.
    """

    def __init__(
        self,
        coordinator: SessionCalls,
        *,
        gone_after: float = GONE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._coordinator = coordinator
        self._gone_after = gone_after
        self._clock = clock
        #: Server id -> when this one first saw it not running.
        self._missing: dict[int, float] = {}

    async def look(self) -> list[int]:
        """Count out the sessions of every server gone by now; their ids."""
        store = self._coordinator.store
        # Who holds sessions first, then who runs: a server takes its lock as
        # it starts serving MCP, before its first session as a rule, so one
        # that started in between is seen running.
        holding = set(await store.read(lambda tx: tx.session_servers()))
        running = await store.running_servers()
        if running is None:
            return []
        now = self._clock()
        self._missing = {s: self._missing.get(s, now) for s in holding - running}
        gone = sorted(s for s, since in self._missing.items() if now - since >= self._gone_after)
        for server_id in gone:
            agents = await self._coordinator.count_out_sessions_of(server_id)
            del self._missing[server_id]
            log.info("server %d is gone: counted out its sessions of %d agents", server_id, agents)
        return gone

    async def run(self, every: float = LOOK_EVERY_S) -> None:
        """Look every `every` seconds until cancelled; a failed look is
        logged and tried again at the next."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.look()
            except TenureError as err:
                log.warning("could not count out the sessions of gone servers: %s", err.message)
            except Exception:
                # Anything else would end the loop unseen, and surface only
                # when the server stops: say it, and look again next time.
                log.exception("could not count out the sessions of gone servers")
