"""Which task a claim gives: SPEC's claiming order, dependencies and skills.

The store returns `todo` tasks in claim order (recovered first, then
priority, then oldest); this module judges each for the claiming agent and
says why nothing fits when nothing does.
"""

from __future__ import annotations

from tenure.core.model import Agent, Task, TaskStatus
from tenure.store.base import ClaimFilter, Tx

#: How many candidates a claim reads when the first does not fit; each page
#: is read only when the one before was full and nothing in it fitted.
CANDIDATE_PAGES = (64, 1024, 16384)

#: The "nothing ready" reasons an agent may be told, with their text.
NOTHING_READY = {
    "no_todo_tasks": "No task is waiting on this board.",
    "dependencies_pending": "Every waiting task depends on work not yet done.",
    "skills_unmatched": "The waiting tasks need skills this agent did not register.",
    "agent_holds_a_task": "This agent already holds a task; finish or release it first.",
}


def pick(tx: Tx, agent: Agent) -> tuple[Task | None, str]:
    """The first claimable task for `agent`, or None and why there is none.

    The first candidate in claim order usually fits (no skills asked, no
    dependencies pending), so it is read alone first: a claim then locks
    and decodes one task row, not a page of them. Only when it does not
    fit are pages read and walked, each larger than the last, so a task deep
    behind many the agent cannot take is still found.
    """
    skills = {skill.lower() for skill in agent.skills}
    first = tx.claim_candidates(ClaimFilter(agent.board_id, agent.skills, limit=1))
    if not first:
        return None, "no_todo_tasks"
    verdict = claimable(tx, first[0], skills)
    if verdict == "":
        return first[0], ""
    waiting_on_dependencies = verdict == "dependencies"
    judged = 1
    for page in CANDIDATE_PAGES:
        candidates = tx.claim_candidates(ClaimFilter(agent.board_id, agent.skills, limit=page))
        for task in candidates[judged:]:
            verdict = claimable(tx, task, skills)
            if verdict == "":
                return task, ""
            waiting_on_dependencies = waiting_on_dependencies or verdict == "dependencies"
        judged = len(candidates)
        if len(candidates) < page:
            break
    return None, "dependencies_pending" if waiting_on_dependencies else "skills_unmatched"


def claimable(tx: Tx, task: Task, skills: set[str]) -> str:
    """Why `task` may not go to an agent with `skills` ("" when it may)."""
    if task.dead_lettered:
        return "dead_lettered"
    needed = {skill.lower() for skill in task.required_skills}
    if needed and not needed <= skills:
        return "skills"
    if task.dependencies:
        statuses = tx.task_statuses(task.board_id, task.dependencies)
        if any(statuses.get(dep) is not TaskStatus.DONE for dep in task.dependencies):
            return "dependencies"
    return ""
