"""Boards, tasks and agents: the administrative use cases of the Coordinator.

Kept apart from `tenure.service` (the agent's protocol) because these calls
change the board rather than a lease; those that end a lease (cancel,
unassign) still go through the core's one ending function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tenure.auth import ADMIN_TOKEN_META, Caller, Role, new_token, token_hash
from tenure.core import lease as rules
from tenure.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from tenure.core.model import (
    Agent,
    Board,
    Event,
    EventType,
    Task,
    TaskStatus,
    check_id,
)
from tenure.core.stats import summary_statistics
from tenure.core.timing import expiring_soon_before
from tenure.evidence import check_worktree
from tenure.inputs import (
    AgentProfile,
    TaskSpec,
    agent_profile,
    find_cycle,
    task_changes,
    task_spec,
    text,
)
from tenure.pages import cursor_after, page_size, place_of
from tenure.service import Coordinator
from tenure.store.base import Tx
from tenure.units import Effects, write
from tenure.views import agent_view, board_view, lease_view, task_view


def require_admin(caller: Caller, what: str) -> None:
    """Refuse anyone but the admin."""
    if not caller.is_admin:
        raise Forbidden(f"{what} needs the admin token")


#: A page of a listing, or a listing of one status (not in_progress), with at
#: most this many tasks reads their live leases one by one; a longer one reads
#: every live lease of the board at once, as a listing of every task does.
_OWN_LEASES_UP_TO = 500

#: Done tasks a board's overview shows at most, those completed last: a
#: board's done tasks only ever grow, and opening a board must not cost more
#: as they do.
DONE_SHOWN = 200
_OPEN = (TaskStatus.TODO, TaskStatus.IN_PROGRESS, TaskStatus.BLOCKED)


class Admin:
    """Administrative use cases over a Coordinator's store and policy."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator

    # ------------------------------------------------------------------ admin
    async def ensure_admin_token(self) -> str | None:
        """Create the admin token at first start; return it once (else None)."""

        def unit(tx: Tx, effects: Effects) -> str | None:
            if tx.get_meta(ADMIN_TOKEN_META) is not None:
                return None
            token = new_token(Role.ADMIN)
            tx.set_meta(ADMIN_TOKEN_META, token_hash(token))
            return token

        return await self.c.run(unit)

    async def rotate_admin_token(self) -> str:
        """Replace the admin token (from the server's own host, by the CLI)."""

        def unit(tx: Tx, effects: Effects) -> str:
            token = new_token(Role.ADMIN)
            tx.set_meta(ADMIN_TOKEN_META, token_hash(token))
            return token

        return await self.c.run(unit)

    # ----------------------------------------------------------------- boards
    async def create_board(
        self, caller: Caller, board_id: str, name: str = "", project_root: str | None = None
    ) -> dict[str, Any]:
        """A new board; its enrolment key and viewer token are shown once."""
        require_admin(caller, "creating a board")
        check_id(board_id, "board_id")
        name = text(name or board_id, "name", 200)
        root = text(project_root, "project_root", 4096) or None
        enrolment, viewer = new_token(Role.ENROLMENT), new_token(Role.VIEWER)

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            board = Board(board_id, name, tx.now, root, token_hash(enrolment), token_hash(viewer))
            tx.insert_board(board)
            return {"board": board_view(board), "enrolment_key": enrolment, "viewer_token": viewer}

        return await self.c.run(unit)

    async def list_boards(self, caller: Caller) -> list[dict[str, Any]]:
        """Boards the caller may see: all for admins, its own for others."""

        def unit(tx: Tx) -> list[dict[str, Any]]:
            boards = tx.list_boards()
            if not caller.is_admin:
                boards = [b for b in boards if b.id == caller.board_id]
            return [board_view(b) for b in boards]

        return await self.c.store.read(unit)

    def _board(self, tx: Tx, board_id: str) -> Board:
        board = tx.get_board(check_id(board_id, "board_id"))
        if board is None:
            raise NotFound(f"no board {board_id!r}")
        return board

    def _scope(self, caller: Caller, board_id: str | None) -> str:
        return self.c._board_scope(caller, board_id)

    # ------------------------------------------------------------------ tasks
    async def add_task(
        self, caller: Caller, board_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Add one task to a board (admin)."""
        added = await self.import_tasks(caller, board_id, [data])
        return added[0]

    async def import_tasks(
        self, caller: Caller, board_id: str, items: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Add several tasks at once; dependencies may point within the batch or
        at existing tasks; a cycle or an unknown dependency refuses the whole batch."""
        require_admin(caller, "adding tasks")
        if not isinstance(items, Sequence) or isinstance(items, str | bytes):
            raise InvalidInput("tasks must be a list")
        if len(items) > 10_000:
            raise InvalidInput("at most 10000 tasks per import")
        specs = [task_spec(item) for item in items]
        ids = [spec.id for spec in specs]
        if len(set(ids)) != len(ids):
            raise Conflict("the batch names a task id twice")

        def unit(tx: Tx, effects: Effects) -> list[dict[str, Any]]:
            self._board(tx, board_id)
            now = tx.now
            tasks = [self._new_task(board_id, spec, now) for spec in specs]
            for task in tasks:
                tx.insert_task(task)
            self._check_dependencies(tx, board_id, {t.id: t.dependencies for t in tasks})
            for task in tasks:
                tx.append_event(Event(EventType.TASK_CREATED, board_id, now, task.id))
            return [task_view(t, now, self.c.policy) for t in tasks]

        return await self.c.run(unit)

    @staticmethod
    def _new_task(board_id: str, spec: TaskSpec, now: Any) -> Task:
        return Task(
            board_id=board_id,
            id=spec.id,
            title=spec.title,
            created_at=now,
            updated_at=now,
            description=spec.description,
            priority=spec.priority,
            labels=spec.labels,
            required_skills=spec.required_skills,
            estimated_hours=spec.estimated_hours,
            dependencies=spec.dependencies,
        )

    def _check_dependencies(
        self, tx: Tx, board_id: str, changed: Mapping[str, Iterable[str]]
    ) -> None:
        """Refuse unknown dependencies and cycles, judged on the whole board."""
        edges = {t.id: t.dependencies for t in tx.list_tasks(board_id)}
        edges.update({k: tuple(v) for k, v in changed.items()})
        for task_id, deps in changed.items():
            for dep in deps:
                if dep == task_id:
                    raise Conflict(f"task {task_id!r} depends on itself")
                if dep not in edges:
                    raise InvalidInput(
                        f"task {task_id!r} depends on unknown task {dep!r}",
                        details={"task_id": task_id, "dependency": dep},
                    )
        cycle = find_cycle(edges)
        if cycle:
            raise Conflict(f"dependency cycle: {' -> '.join(cycle)}", details={"cycle": cycle})

    async def list_tasks(
        self,
        caller: Caller,
        board_id: str | None = None,
        status: str | None = None,
        *,
        limit: int | None = None,
        after: str | None = None,
    ) -> dict[str, Any]:
        """A board's tasks with their live leases: every one, or a page of
        `limit` after the cursor `after`. `next` is the cursor of the page
        that follows (None: this page is the last)."""
        scope = self._scope(caller, board_id) if not caller.is_agent else caller.board_id
        assert scope is not None
        wanted = TaskStatus(status) if status else None
        size = page_size(limit)
        place = None if after is None else place_of(after)

        def unit(tx: Tx) -> dict[str, Any]:
            self._board(tx, scope)
            # One task more than the page shows says whether another page follows.
            tasks = tx.list_tasks(scope, wanted, None if size is None else size + 1, after=place)
            more = size is not None and len(tasks) > size
            tasks = tasks[:size]
            whole = size is None and wanted in (None, TaskStatus.IN_PROGRESS)
            if whole or len(tasks) > _OWN_LEASES_UP_TO:
                # Most of the board's live leases are wanted, or the tasks are
                # many: read the live leases in one go.
                leases = {lease.task_id: lease for lease in tx.live_leases(scope)}
            else:
                # A page, or a few tasks of one status (a busy board's todo or
                # blocked ones): their own leases only, not every live lease.
                keys = [(scope, t.id) for t in tasks]
                leases = {key[1]: lease for key, lease in tx.live_leases_of_tasks(keys).items()}
            return {
                "tasks": [task_view(t, tx.now, self.c.policy, leases.get(t.id)) for t in tasks],
                "next": cursor_after(tasks[-1]) if more else None,
            }

        return await self.c.store.read(unit)

    async def overview(self, caller: Caller, board_id: str | None = None) -> dict[str, Any]:
        """A board as the dashboard and `tenure board watch` open it: every task
        not done, the DONE_SHOWN done last (newest first), how many are done
        in all, and the server's clock."""
        scope = self._scope(caller, board_id) if not caller.is_agent else caller.board_id
        assert scope is not None

        def unit(tx: Tx) -> dict[str, Any]:
            self._board(tx, scope)
            tasks = [task for status in _OPEN for task in tx.list_tasks(scope, status)]
            tasks += tx.recently_done(scope, DONE_SHOWN)
            leases = {lease.task_id: lease for lease in tx.live_leases(scope)}
            return {
                "tasks": [task_view(t, tx.now, self.c.policy, leases.get(t.id)) for t in tasks],
                "done_total": tx.task_counts(scope).get(TaskStatus.DONE, 0),
                "done_shown": DONE_SHOWN,
                "now": tx.now.isoformat(),
            }

        return await self.c.store.read(unit)

    async def show_task(self, caller: Caller, board_id: str | None, task_id: str) -> dict[str, Any]:
        """One task with its lease, comments and lease history."""
        scope = self._scope(caller, board_id) if not caller.is_agent else caller.board_id
        assert scope is not None

        def unit(tx: Tx) -> dict[str, Any]:
            task = tx.get_task(scope, check_id(task_id, "task_id"))
            if task is None:
                raise NotFound(f"no task {task_id!r} on this board")
            now = tx.now
            view = task_view(
                task,
                now,
                self.c.policy,
                tx.live_lease(scope, task_id),
                include_expired_handoff=True,
            )
            view["history"] = [
                lease_view(past, now, self.c.policy) for past in tx.lease_history(scope, task_id)
            ]
            view["comments"] = [
                {"at": c.at.isoformat(), "author": c.author, "body": c.body}
                for c in tx.comments(scope, task_id)
            ]
            return view

        return await self.c.store.read(unit)

    async def update_task(
        self, caller: Caller, board_id: str, task_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Edit a task's fields (dependencies re-checked for cycles)."""
        require_admin(caller, "editing a task")
        changes = task_changes(data)

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            task = self.c._task(tx, board_id, task_id)
            updated = replace(task, updated_at=tx.now, **changes)
            if "dependencies" in changes:
                self._check_dependencies(tx, board_id, {task_id: updated.dependencies})
            tx.update_task(updated)
            tx.append_event(
                Event(
                    EventType.TASK_UPDATED,
                    board_id,
                    tx.now,
                    task_id,
                    data={"fields": sorted(changes)},
                )
            )
            return task_view(updated, tx.now, self.c.policy, tx.live_lease(board_id, task_id))

        return await self.c.run(unit)

    async def cancel_task(self, caller: Caller, board_id: str, task_id: str) -> dict[str, Any]:
        """Take a task off the board's queue: any lease ends through the one path."""
        require_admin(caller, "cancelling a task")

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            task = self.c._task(tx, board_id, task_id)
            change = rules.cancel(task, tx.live_lease(board_id, task_id), tx.now, self.c.policy)
            write(tx, change, effects)
            return task_view(change.task or task, tx.now, self.c.policy)

        return await self.c.run(unit)

    async def delete_task(self, caller: Caller, board_id: str, task_id: str) -> None:
        """Delete a task; refused while it has a live lease or dependants."""
        require_admin(caller, "deleting a task")

        def unit(tx: Tx, effects: Effects) -> None:
            self.c._task(tx, board_id, task_id)
            if tx.live_lease(board_id, task_id) is not None:
                raise Conflict("the task has a live lease; unassign or cancel it first")
            dependants = [t.id for t in tx.list_tasks(board_id) if task_id in t.dependencies]
            if dependants:
                raise Conflict(
                    f"tasks depend on {task_id!r}: {dependants}", details={"dependants": dependants}
                )
            tx.delete_task(board_id, task_id)
            tx.append_event(Event(EventType.TASK_DELETED, board_id, tx.now, task_id))

        await self.c.run(unit)

    async def unassign(self, caller: Caller, board_id: str, task_id: str) -> dict[str, Any]:
        """Admin: end the live lease of a task and put it back on the board."""
        require_admin(caller, "unassigning a task")

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            task = self.c._task(tx, board_id, task_id)
            live = tx.live_lease(board_id, task_id)
            if live is None:
                raise Conflict(f"task {task_id!r} has no live lease")
            change = rules.unassign(task, live, tx.now, self.c.policy)
            write(tx, change, effects)
            return task_view(change.task or task, tx.now, self.c.policy)

        return await self.c.run(unit)

    async def requeue(self, caller: Caller, board_id: str, task_id: str) -> dict[str, Any]:
        """Admin: bring a dead-lettered or blocked task back to `todo`."""
        require_admin(caller, "requeueing a task")

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            task = self.c._task(tx, board_id, task_id)
            change = rules.requeue(task, tx.now, self.c.policy)
            write(tx, change, effects)
            return task_view(change.task or task, tx.now, self.c.policy)

        return await self.c.run(unit)

    # ----------------------------------------------------------------- agents
    async def register_agent(
        self, caller: Caller, data: Mapping[str, Any], board_id: str | None = None
    ) -> dict[str, Any]:
        """Register an agent (admin or enrolment key: returns its token once),
        or, under an agent's own token, update its profile."""
        profile = agent_profile(data)
        if profile.worktree is not None:
            # Stored resolved, and only under a configured root (tenure.evidence).
            resolved = check_worktree(profile.worktree, self.c.options.allowed_worktree_roots)
            profile = replace(profile, worktree=resolved)
        if caller.is_agent:
            return await self._update_profile(caller, profile)
        if caller.role is Role.ENROLMENT:
            target = caller.board_id
        elif caller.is_admin:
            target = board_id
        else:
            raise Forbidden("registering an agent needs an enrolment key or the admin token")
        if target is None:
            raise InvalidInput("board_id is required", details={"field": "board_id"})
        token = new_token(Role.AGENT)

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            self._board(tx, target)
            agent = Agent(
                board_id=target,
                id=profile.id,
                name=profile.name,
                token_hash=token_hash(token),
                created_at=tx.now,
                role=profile.role,
                skills=profile.skills,
                worktree=profile.worktree,
            )
            tx.insert_agent(agent)
            return {"agent": agent_view(agent), "token": token}

        return await self.c.run(unit)

    async def _update_profile(self, caller: Caller, profile: AgentProfile) -> dict[str, Any]:
        if profile.id != caller.agent_id:
            raise Forbidden("an agent may only update its own profile")

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            agent = self.c._agent(tx, caller)
            updated = replace(
                agent,
                name=profile.name,
                role=profile.role,
                skills=profile.skills,
                worktree=profile.worktree,
            )
            tx.update_agent(updated)
            self.c._touch_others(tx, updated, effects, skip=None)
            return {"agent": agent_view(updated), "notice": self.c._seen(tx, updated)}

        return await self.c.run(unit)

    async def list_agents(
        self, caller: Caller, board_id: str | None = None
    ) -> list[dict[str, Any]]:
        """A board's agents (never their tokens)."""
        scope = self._scope(caller, board_id) if not caller.is_agent else caller.board_id
        assert scope is not None
        return await self.c.store.read(lambda tx: [agent_view(a) for a in tx.list_agents(scope)])

    async def _agent_op(
        self, caller: Caller, board_id: str, agent_id: str, what: str, fn: Any
    ) -> Any:
        require_admin(caller, what)

        def unit(tx: Tx, effects: Effects) -> Any:
            agent = tx.get_agent(board_id, check_id(agent_id, "agent_id"))
            if agent is None:
                raise NotFound(f"no agent {agent_id!r} on board {board_id!r}")
            return fn(tx, effects, agent)

        return await self.c.run(unit)

    async def revoke_agent(self, caller: Caller, board_id: str, agent_id: str) -> dict[str, Any]:
        """Revoke an agent's token at once; its leases run on to expiry and recovery."""

        def fn(tx: Tx, effects: Effects, agent: Agent) -> dict[str, Any]:
            revoked = replace(agent, revoked=True)
            tx.update_agent(revoked)
            return agent_view(revoked)

        result: dict[str, Any] = await self._agent_op(
            caller, board_id, agent_id, "revoking a token", fn
        )
        return result

    async def rotate_agent_token(
        self, caller: Caller, board_id: str, agent_id: str
    ) -> dict[str, Any]:
        """A new token for an agent; the old one stops working at once."""
        token = new_token(Role.AGENT)

        def fn(tx: Tx, effects: Effects, agent: Agent) -> dict[str, Any]:
            rotated = replace(agent, token_hash=token_hash(token), revoked=False)
            tx.update_agent(rotated)
            return {"agent": agent_view(rotated), "token": token}

        result: dict[str, Any] = await self._agent_op(
            caller, board_id, agent_id, "rotating a token", fn
        )
        return result

    async def deregister_agent(self, caller: Caller, board_id: str, agent_id: str) -> None:
        """Remove an agent; refused while it holds a live lease."""

        def fn(tx: Tx, effects: Effects, agent: Agent) -> None:
            if tx.live_leases_of_agent(board_id, agent_id):
                raise Conflict("the agent holds a live lease; unassign it first")
            tx.delete_agent(board_id, agent_id)

        await self._agent_op(caller, board_id, agent_id, "deregistering an agent", fn)

    # ------------------------------------------------------------ observation
    async def list_leases(
        self, caller: Caller, board_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The live leases of a board (all boards for an admin who names none)."""
        scope = (
            None
            if caller.is_admin and board_id is None
            else (caller.board_id if caller.is_agent else self._scope(caller, board_id))
        )

        def unit(tx: Tx) -> list[dict[str, Any]]:
            return [lease_view(lease, tx.now, self.c.policy) for lease in tx.live_leases(scope)]

        return await self.c.store.read(unit)

    async def statistics(self, caller: Caller, board_id: str | None = None) -> dict[str, Any]:
        """Leases by state and flag, average renewals, and the counters."""
        scope = (
            None
            if caller.is_admin and board_id is None
            else (caller.board_id if caller.is_agent else self._scope(caller, board_id))
        )

        def unit(tx: Tx) -> dict[str, Any]:
            # Counted by the database: loading every live lease took seconds at 100k.
            soon = expiring_soon_before(tx.now, self.c.policy)
            summary = tx.lease_summary(scope, tx.now, soon)
            figures = summary_statistics(summary, tx.counters(scope))
            figures["board_id"] = scope
            return figures

        return await self.c.store.read(unit)

    async def events(
        self,
        caller: Caller,
        board_id: str | None = None,
        *,
        after: int = 0,
        task_id: str | None = None,
        agent_id: str | None = None,
        since: Any = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """The event log, filtered; ordered by id (resume with `after`)."""
        scope = (
            None
            if caller.is_admin and board_id is None
            else (caller.board_id if caller.is_agent else self._scope(caller, board_id))
        )
        if not 1 <= limit <= 5000:
            raise InvalidInput("limit must be between 1 and 5000", details={"field": "limit"})
        rows = await self.c.store.events_after(
            after, board_id=scope, task_id=task_id, agent_id=agent_id, since=since, limit=limit
        )
        return [row.to_dict() for row in rows]
