"""The Coordinator: every use case of Tenure, over one Store and the pure core.

Adapters (HTTP, MCP, CLI, dashboard, lab) hold no lease logic: they turn a
request into one call here and render the answer. Each call follows one
road: authenticate inside the transaction, read `now` from the store, load,
ask the core, write its decision conditional on the lease version, commit,
then publish metrics and telemetry. Every call by an agent touches every
live lease it holds, and every answer to an agent carries a notice of its
leases (and of any it lost).

Board, task and agent administration lives in `tenure.admin`; the monitor's
pass in `tenure.sweep`; this module holds the agent's side of the protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from tenure.auth import ADMIN_TOKEN_META, Caller, Role, role_of, same_digest, token_hash
from tenure.claims import NOTHING_READY, pick
from tenure.core import lease as rules
from tenure.core.decisions import Change, Evidence, Report, Subject
from tenure.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    TenureError,
    Unauthorized,
)
from tenure.core.model import Agent, Lease, Task, TaskStatus, check_id, is_id
from tenure.core.policy import Policy
from tenure.evidence import check_worktree
from tenure.inputs import PATH_MAX, text
from tenure.sessions import SessionCalls
from tenure.sinks import NullSink, Sink, publish
from tenure.store.base import Reads, Store, TransientFailure, Tx
from tenure.units import Effects, Held, RaceLost, merge, write
from tenure.views import LeaseViews, task_view

log = logging.getLogger("tenure.service")

T = TypeVar("T")

#: How often a unit of work that lost a version race is read and decided again.
RACE_RETRIES = 5


@dataclass(frozen=True, slots=True)
class Options:
    """The service's own settings (the core's numbers live in `Policy`)."""

    max_tasks_per_agent: int = 1
    claim_retry_after_s: float = 5.0
    monitor_batch_size: int = 200
    worktree_template: str = "{project_root}/../worktrees/{agent_id}"
    allowed_worktree_roots: tuple[str, ...] = ()


@dataclass
class Coordinator(SessionCalls):
    """Tenure's use cases. Create one per process over an open store."""

    store: Store
    policy: Policy = field(default_factory=Policy)
    options: Options = field(default_factory=Options)
    sink: Sink = field(default_factory=NullSink)

    def __post_init__(self) -> None:
        # Administration lives in its own module; it needs this object, so it
        # is imported here rather than at the top (tenure.admin imports us).
        from tenure.admin import Admin

        self.admin = Admin(self)

    # ------------------------------------------------------------------ running
    async def run(
        self,
        unit: Callable[[Tx, Effects], T],
        *,
        quick: bool = False,
        caller: Caller | None = None,
        task_id: str | None = None,
        claim_below: int | None = None,
    ) -> T:
        """Run `unit` in a transaction, retrying lost version races; then publish.

        `quick`: an agent's call, a few indexed statements (see `Store.run`).
        `caller`: the agent whose call this is, when `unit` starts by reading
        it and its leases (`_agent`, then `Held.read`); then, with `task_id`,
        that task of its board (`_task`); with `claim_below`, the first claim
        candidate (`pick`) when the agent holds fewer live leases than that.
        The store may read all of them with BEGIN.

        A refusal that recorded something (a late note) is raised here, after
        its record committed.
        """
        reads = None
        if caller is not None and caller.is_agent and caller.board_id and caller.agent_id:
            reads = Reads(
                caller.board_id,
                caller.agent_id,
                task_id=task_id,
                claim_below=claim_below,
            )
        for _attempt in range(RACE_RETRIES):
            effects = Effects()
            try:
                result = await self.store.run(
                    partial(_with_effects, unit, effects), quick=quick, reads=reads
                )
            except (RaceLost, TransientFailure):
                # Nothing of the attempt was kept: read again and decide again.
                await asyncio.sleep(0)
                continue
            self.publish(effects)
            if effects.error is not None:
                raise effects.error
            return result
        raise Conflict("the lease kept changing under this call; try again")

    def publish(self, effects: Effects) -> None:
        """Hand a committed unit of work's metrics and telemetry to the sink
        (`run` does it; the monitor's batches, run on the store directly, too)."""
        publish(self.sink, effects.changes)

    # ----------------------------------------------------------- authentication
    def authenticate_in(self, tx: Tx, token: str | None) -> Caller:
        """Who a bearer token belongs to, judged inside `tx`; `Unauthorized` if nobody."""
        if not token:
            raise Unauthorized("a bearer token is required")
        role = role_of(token)
        digest = token_hash(token)
        if role is Role.AGENT:
            agent = tx.agent_by_token_hash(digest)
            if agent is not None and not agent.revoked:
                return Caller(Role.AGENT, agent.board_id, agent.id)
        elif role is Role.ENROLMENT or role is Role.VIEWER:
            board = tx.board_by_key_hash(digest)
            if board is not None:
                hit = (
                    board.enrolment_key_hash if role is Role.ENROLMENT else board.viewer_token_hash
                )
                if same_digest(hit, token):
                    return Caller(role, board.id)
        elif role is Role.ADMIN and same_digest(tx.get_meta(ADMIN_TOKEN_META), token):
            # Compared in constant time: `==` would leak, by its timing, how much
            # of the stored digest a guess matches.
            return Caller(Role.ADMIN)
        raise Unauthorized("unknown or revoked token")

    async def authenticate(self, token: str | None) -> Caller:
        """Who a bearer token belongs to (a read; agents' calls re-check in their unit)."""
        return await self.store.read(lambda tx: self.authenticate_in(tx, token), quick=True)

    # ------------------------------------------------------------ agent helpers
    def _agent(self, tx: Tx, caller: Caller) -> Agent:
        if not caller.is_agent or caller.board_id is None or caller.agent_id is None:
            raise Forbidden("this call is for agents; register first with register_agent")
        agent = tx.get_agent(caller.board_id, caller.agent_id)
        if agent is None or agent.revoked:
            raise Unauthorized("this agent's token was revoked or the agent deregistered")
        return agent

    def _worktree(self, path: str | None) -> str | None:
        """An agent-named worktree, resolved and checked against the allowed roots."""
        if path is None:
            return None
        return check_worktree(
            text(path, "worktree", PATH_MAX, required=True), self.options.allowed_worktree_roots
        )

    def _task(self, tx: Tx, board_id: str, task_id: str, *, lock: bool = True) -> Task:
        check_id(task_id, "task_id")
        task = tx.get_task(board_id, task_id, for_update=lock)
        if task is None:
            raise NotFound(f"no task {task_id!r} on this board", details={"task_id": task_id})
        return task

    def _touch_others(
        self,
        tx: Tx,
        agent: Agent,
        effects: Effects,
        skip: str | None,
        held: Held | None = None,
    ) -> None:
        """Touch every live lease of `agent` except the one on task `skip`."""
        book = held if held is not None else Held.read(tx, agent)
        for lease in book.leases():
            if lease.task_id == skip:
                continue
            change = rules.touch(lease, tx.now, self.policy)
            if change.writes:
                write(tx, change, effects)
                book.apply(change)

    def _seen(
        self, tx: Tx, agent: Agent, held: Held | None = None, views: LeaseViews | None = None
    ) -> dict[str, Any]:
        """Record that the agent called, and build its notice of leases held and lost."""
        now = tx.now
        views = views or LeaseViews(now, self.policy)
        book = held if held is not None else Held.read(tx, agent)
        lost = [
            views.of(lease)
            for lease in book.ended
            if lease.end_reason is not None
            and str(lease.end_reason)
            in {"lease_expired", "agent_disconnected", "validation_timeout", "unassigned"}
        ]
        tx.mark_seen(agent.board_id, agent.id, now)
        notice: dict[str, Any] = {"leases": [views.of(lease) for lease in book.leases()]}
        if lost:
            notice["lost"] = lost
            notice["message"] = (
                "You lost a lease: the task was taken back. Stop working on it; your "
                "branch is preserved. Call request_next_task for new work."
            )
        return notice

    def _subject(self, tx: Tx, agent: Agent, task: Task, held: Held) -> Subject:
        # The caller's own live lease on the task is in `held` already; only
        # when it holds none is the task's live lease (another's) read.
        live = held.get(task.id)
        if live is None:
            live = tx.live_lease(task.board_id, task.id)
        callers_last = (
            live
            if live is not None and live.agent_id == agent.id
            else tx.last_lease_of(task.board_id, task.id, agent.id)
        )
        holds_other = any(lease.task_id != task.id for lease in held.leases())
        return Subject(task, live, callers_last, holds_other)

    def _answer(
        self, tx: Tx, change: Change, task: Task, held: Held, views: LeaseViews
    ) -> dict[str, Any]:
        """The common answer to an agent's act on a task, but its notice."""
        current = change.task or task
        mine = held.get(current.id)
        return {
            "ok": change.error is None,
            "result": str(change.kind),
            "task": task_view(current, tx.now, self.policy, mine, views=views),
            "lease": views.of(mine) if mine else None,
        }

    def _act(
        self,
        caller: Caller,
        task_id: str,
        decide: Callable[[Tx, Subject, Agent], Change],
        *,
        then_claim: bool = False,
    ) -> Callable[[Tx, Effects], dict[str, Any]]:
        """A unit of work for an agent's act on one of its board's tasks;
        with `then_claim`, a claim follows an act that was not refused, in the
        same unit, and its answer is the act's `next`."""

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            agent = self._agent(tx, caller)
            task = self._task(tx, agent.board_id, task_id)
            held = Held.read(tx, agent)
            subject = self._subject(tx, agent, task, held)
            change = decide(tx, subject, agent)
            write(tx, change, effects)
            held.apply(change)
            self._touch_others(tx, agent, effects, skip=task.id, held=held)
            views = LeaseViews(tx.now, self.policy)
            answer = self._answer(tx, change, task, held, views)
            if then_claim and change.error is None:
                answer["next"] = self._claim(tx, effects, agent, held, views)
            answer["notice"] = self._seen(tx, agent, held, views)
            if change.error is not None:
                # The refusal is raised after commit; carry the notice with it.
                change.error.details.setdefault("notice", answer["notice"])
            return answer

        return unit

    async def _run_act(
        self,
        caller: Caller,
        task_id: str,
        decide: Callable[[Tx, Subject, Agent], Change],
        *,
        then_claim: bool = False,
        may_end: bool = False,
    ) -> dict[str, Any]:
        """Run `_act`'s unit for an agent's call (its agent, leases and task
        may be read with BEGIN, and with `then_claim` and an act that `may_end`
        its lease, the first claim candidate too; a malformed task id is the
        unit's to refuse)."""
        read = task_id if is_id(task_id) else None
        # The candidate is read locked, so other claimers skip it meanwhile:
        # only for an act that may free the agent to take it. The act may end
        # one of the leases BEGIN would count.
        below = self.options.max_tasks_per_agent + 1 if then_claim and may_end else None
        return await self.run(
            self._act(caller, task_id, decide, then_claim=then_claim),
            quick=True,
            caller=caller,
            task_id=read,
            claim_below=below,
        )

    # -------------------------------------------------------------- agent calls
    async def touch(self, caller: Caller) -> dict[str, Any]:
        """Any authenticated call of an agent that is not about a task: touch its
        leases and return its notice. Callers that are not agents get {}."""
        if not caller.is_agent:
            return {}

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            agent = self._agent(tx, caller)
            held = Held.read(tx, agent)
            self._touch_others(tx, agent, effects, skip=None, held=held)
            return self._seen(tx, agent, held)

        return await self.run(unit, quick=True, caller=caller)

    async def request_next_task(
        self, caller: Caller, *, worktree: str | None = None
    ) -> dict[str, Any]:
        """Give the calling agent one ready task under a new lease (SPEC, Claiming).

        `worktree`, when given, becomes the agent's worktree first (checked
        against the allowed roots), so its evidence counts for this lease.
        """
        resolved = self._worktree(worktree)

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            agent = self._agent(tx, caller)
            if resolved is not None and resolved != agent.worktree:
                agent = replace(agent, worktree=resolved)
                tx.update_agent(agent)
            book = Held.read(tx, agent)
            self._touch_others(tx, agent, effects, skip=None, held=book)
            views = LeaseViews(tx.now, self.policy)
            answer = self._claim(tx, effects, agent, book, views)
            answer["notice"] = self._seen(tx, agent, book, views)
            return answer

        return await self.run(
            unit, quick=True, caller=caller, claim_below=self.options.max_tasks_per_agent
        )

    def _claim(
        self, tx: Tx, effects: Effects, agent: Agent, book: Held, views: LeaseViews
    ) -> dict[str, Any]:
        """A claim for `agent` within a unit (SPEC, Claiming): the answer of
        `request_next_task` but its notice, which the unit adds last."""
        held = book.leases()
        if len(held) >= self.options.max_tasks_per_agent:
            return self._nothing("agent_holds_a_task", held, views)
        task, reason = pick(tx, agent)
        if task is None:
            return self._nothing(reason, held, views)
        return self._grant(tx, effects, agent, task, views, book)

    async def assign(
        self, caller: Caller, board_id: str, task_id: str, agent_id: str
    ) -> dict[str, Any]:
        """Admin: give a named task to a named agent, through the claim path."""
        if not caller.is_admin:
            raise Forbidden("assigning a task needs the admin token")

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            agent = tx.get_agent(board_id, check_id(agent_id, "agent_id"))
            if agent is None or agent.revoked:
                raise NotFound(f"no agent {agent_id!r} on board {board_id!r}")
            task = self._task(tx, board_id, task_id)
            if task.status is not TaskStatus.TODO:
                raise Conflict(
                    f"task {task_id!r} is {task.status}, not todo",
                    details={"status": str(task.status)},
                )
            # An admin's call, not the agent's: the agent is not marked seen,
            # so its next call's notice still tells it what it lost before.
            return self._grant(tx, effects, agent, task, LeaseViews(tx.now, self.policy))

        return await self.run(unit, quick=True)

    def _grant(
        self,
        tx: Tx,
        effects: Effects,
        agent: Agent,
        task: Task,
        views: LeaseViews,
        held: Held | None = None,
    ) -> dict[str, Any]:
        """Give `task` to `agent` under a new lease; the answer, with no notice."""
        change = rules.create(task, agent.id, tx.now, self.policy)
        write(tx, change, effects)
        if held is not None:
            held.apply(change)
        granted = change.task or task
        lease = change.lease
        assert lease is not None  # create always makes a lease
        view = task_view(granted, tx.now, self.policy, lease, views=views)
        return {"ok": True, "task": view, "lease": views.of(lease), "handoff": view["handoff"]}

    def _nothing(self, reason: str, held: list[Lease], views: LeaseViews) -> dict[str, Any]:
        """A claim's answer when no task fits, with the reason; no notice."""
        return {
            "ok": True,
            "task": None,
            "reason": reason,
            "message": NOTHING_READY[reason],
            "retry_after_s": self.options.claim_retry_after_s,
            "held": [views.of(lease) for lease in held],
        }

    async def report_progress(
        self, caller: Caller, task_id: str, report: Report, *, claim_next: bool = False
    ) -> dict[str, Any]:
        """A progress report (in_progress, completed or blocked) by an agent.

        `claim_next`: when the report is not refused, `request_next_task`
        follows it in the same unit of work, and the answer carries the claim's
        answer as `next` (a task under a new lease, or none and why). An agent
        finishing a task and taking the next makes one call, and the database
        one commit, instead of two.
        """
        return await self._run_act(
            caller,
            task_id,
            lambda tx, subject, agent: rules.report(subject, agent.id, report, tx.now, self.policy),
            then_claim=claim_next,
            may_end=report.status != "in_progress" and not report.validate,
        )

    async def heartbeat(
        self,
        caller: Caller,
        task_id: str | None = None,
        *,
        epoch: int | None = None,
        evidence: Evidence | None = None,
    ) -> dict[str, Any]:
        """An explicit sign of life, optionally about one task and with worktree
        evidence from a remote agent (a conflict in its worktree extends the lease)."""
        if task_id is None:
            return await self.touch(caller)

        def decide(tx: Tx, subject: Subject, agent: Agent) -> Change:
            change = rules.heartbeat(subject, agent.id, tx.now, self.policy, epoch=epoch)
            lease = change.lease
            if (
                evidence is not None
                and evidence.conflict
                and change.error is None
                and lease is not None
                and lease.live
                and lease.conflict_extensions < self.policy.max_conflict_extensions
            ):
                return merge(change, rules.extend_for_conflict(lease, tx.now, self.policy))
            return change

        return await self._run_act(caller, task_id, decide)

    async def report_blocker(
        self,
        caller: Caller,
        task_id: str,
        description: str,
        severity: str = "medium",
        *,
        claim_next: bool = False,
    ) -> dict[str, Any]:
        """The holder cannot go on: the lease ends and the task is `blocked`
        (`claim_next` as for `report_progress`)."""
        reason = f"[{severity}] {description}" if severity else description
        return await self._run_act(
            caller,
            task_id,
            lambda tx, subject, agent: rules.block(
                subject, agent.id, tx.now, self.policy, reason=reason
            ),
            then_claim=claim_next,
            may_end=True,
        )

    async def release_task(self, caller: Caller, task_id: str, message: str = "") -> dict[str, Any]:
        """The holder gives the task back to the board, with a handoff."""
        return await self._run_act(
            caller,
            task_id,
            lambda tx, subject, agent: rules.release(
                subject, agent.id, tx.now, self.policy, message=message
            ),
        )

    async def validation_result(
        self,
        caller: Caller,
        task_id: str,
        passed: bool,
        note: str = "",
        *,
        board_id: str | None = None,
    ) -> dict[str, Any]:
        """The result of a validation window: by the holder, or by an admin/checker."""
        if caller.is_agent:
            return await self._run_act(
                caller,
                task_id,
                lambda tx, subject, agent: rules.validation_result(
                    subject, tx.now, self.policy, passed=passed, note=note, by_holder=True
                ),
            )
        if not caller.is_admin or board_id is None:
            raise Forbidden("a validation result comes from the holder or an admin")

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            task = self._task(tx, board_id, task_id)
            live = tx.live_lease(board_id, task_id)
            subject = Subject(task, live, live, False)
            change = rules.validation_result(
                subject, tx.now, self.policy, passed=passed, note=note, by_holder=False
            )
            write(tx, change, effects)
            current = change.task or task
            return {
                "ok": True,
                "result": str(change.kind),
                "task": task_view(current, tx.now, self.policy),
            }

        return await self.run(unit, quick=True)

    async def get_task_context(
        self, caller: Caller, task_id: str, board_id: str | None = None
    ) -> dict[str, Any]:
        """Everything an agent needs to work on a task: the task, its handoff,
        its comments and its dependencies with their state."""

        def unit(tx: Tx, effects: Effects) -> dict[str, Any]:
            notice: dict[str, Any] | None = None
            held: Held | None = None
            if caller.is_agent:
                agent = self._agent(tx, caller)
                scope = agent.board_id
                held = Held.read(tx, agent)
                self._touch_others(tx, agent, effects, skip=None, held=held)
            else:
                scope = self._board_scope(caller, board_id)
            task = self._task(tx, scope, task_id, lock=False)
            live = tx.live_lease(scope, task_id)
            now = tx.now
            statuses = tx.task_statuses(scope, task.dependencies) if task.dependencies else {}
            answer = {
                "task": task_view(
                    task, now, self.policy, live, include_expired_handoff=caller.is_admin
                ),
                "handoff": task_view(task, now, self.policy)["handoff"],
                "dependencies": [
                    {"id": dep, "status": str(statuses[dep]) if dep in statuses else "missing"}
                    for dep in task.dependencies
                ],
                "comments": [
                    {"at": c.at.isoformat(), "author": c.author, "body": c.body}
                    for c in tx.comments(scope, task_id)
                ],
            }
            if caller.is_agent:
                notice = self._seen(tx, self._agent(tx, caller), held)
                answer["notice"] = notice
            return answer

        return await self.run(unit, quick=True)

    def _board_scope(self, caller: Caller, board_id: str | None) -> str:
        """The board a non-agent caller may look at."""
        if caller.is_admin:
            if board_id is None:
                raise InvalidInput("board_id is required", details={"field": "board_id"})
            return check_id(board_id, "board_id")
        if caller.board_id is None:
            raise Forbidden("this token may not read boards")
        if board_id is not None and board_id != caller.board_id:
            raise NotFound(f"no board {board_id!r}")
        return caller.board_id


def _with_effects(unit: Callable[[Tx, Effects], T], effects: Effects, tx: Tx) -> T:
    # Task and lease writes travel with the commit (PostgreSQL: two round trips
    # fewer per claim); each is still checked, and a lost race is retried above.
    tx.write_together()
    return unit(tx, effects)


__all__ = ["Coordinator", "NullSink", "Options", "Sink", "TenureError"]
