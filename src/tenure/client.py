"""A small synchronous client of Tenure's HTTP API, for worker processes.

For workers that are not MCP agents: a script, a CI job, a batch worker.

    client = TenureClient("http://127.0.0.1:8321")
    client.register("worker-1", enrolment_key="tnr_enrol_...", skills=["python"])
    answer = client.claim()
    if answer["task"] is not None:
        client.report(40, "parsed the input")
        ...                                  # a long silent step: the heartbeat keeps the lease
        client.complete("all done")

While a task is held, a background thread sends a heartbeat about it every
third of the lease's remaining time (bounded), quoting the lease's epoch, so
a long silent step does not lose the lease and a fenced-off worker is told.
The moment the lease is lost (recovered and taken by another agent,
unassigned by an admin, ...) the next call raises `LeaseLostError`; when the
heartbeat thread learns it first, the next call raises at once, before
sending anything. A worker should then stop working on that task (its branch
is preserved) and claim another.

Errors are `tenure.core.errors.TenureError` subclasses rebuilt from the
server's answer (`error_from_dict`); network failures are httpx's own
`httpx.TransportError`s.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from tenure.core.errors import LeaseLost, NotFound, NotHolder, TenureError, error_from_dict

log = logging.getLogger("tenure.client")

__all__ = ["LeaseLostError", "TenureClient"]

Json = dict[str, Any]


class LeaseLostError(LeaseLost):
    """The worker's lease on `task_id` has ended: stop working on it.

    Raised by the call that learnt it, or by the first call after the
    background heartbeat learnt it. The server's answer is in `details`.
    """

    def __init__(
        self, message: str, *, details: dict[str, Any] | None = None, task_id: str | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.task_id = task_id


class TenureClient:
    """One worker's connection to a Tenure server.

    - `url`: the server (`http://127.0.0.1:8321`); `token`: the agent's token
      (None until `register`).
    - `heartbeat_min_s` / `heartbeat_max_s`: bounds of the heartbeat period,
      which is a third of the lease's seconds left.
    - `transport`: an httpx transport, for tests that need one.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        heartbeat_min_s: float = 0.2,
        heartbeat_max_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.heartbeat_min_s = heartbeat_min_s
        self.heartbeat_max_s = heartbeat_max_s
        self._http = httpx.Client(
            base_url=self.url + "/api/v1", timeout=timeout, transport=transport
        )
        self._lock = threading.Lock()
        self._task_id: str | None = None
        self._epoch: int | None = None
        self._seconds_left: float = 0.0
        self._lost: LeaseLostError | None = None
        self._closing: str | None = None
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.heartbeats_sent = 0

    # ----------------------------------------------------------------- state
    @property
    def task_id(self) -> str | None:
        """The task this worker holds, or None."""
        return self._task_id

    @property
    def epoch(self) -> int | None:
        """The epoch (fencing token) of the lease this worker holds."""
        return self._epoch

    # ------------------------------------------------------------------ calls
    def register(
        self,
        agent_id: str,
        *,
        enrolment_key: str | None = None,
        name: str = "",
        role: str = "",
        skills: Sequence[str] = (),
        worktree: str | None = None,
        board_id: str | None = None,
    ) -> Json:
        """Register this worker as `agent_id` with a board's enrolment key (or the
        client's token, when it is the admin's: name `board_id` then). The new
        agent token becomes this client's token."""
        body: Json = {"agent_id": agent_id, "name": name, "role": role, "skills": list(skills)}
        if worktree is not None:
            body["worktree"] = worktree
        if board_id is not None:
            body["board_id"] = board_id
        answer = self._call("POST", "/agents", body, token=enrolment_key or self.token)
        if "token" in answer:
            self.token = answer["token"]
        return answer

    def me(self) -> Json:
        """Who this client is, and (for an agent) its notice of leases; touches them."""
        return self._call("GET", "/me")

    def claim(self) -> Json:
        """Ask for the next task. `answer["task"]` is None when nothing is ready
        (`reason` and `retry_after_s` say why and when to ask again); otherwise the
        lease is held and the heartbeat starts. `answer["handoff"]` carries the
        previous holder's handoff for a recovered task."""
        answer = self._call("POST", "/claim")
        if answer.get("task") is not None and answer.get("lease") is not None:
            self._hold(answer["lease"])
        return answer

    def report(
        self,
        progress: int | None = None,
        message: str = "",
        *,
        branch: str | None = None,
        head_sha: str | None = None,
        task_id: str | None = None,
    ) -> Json:
        """A progress report about the held task: renews the lease."""
        return self._progress("in_progress", progress, message, branch, head_sha, task_id)

    def complete(
        self,
        message: str = "",
        *,
        progress: int | None = 100,
        validate: bool = False,
        claim_next: bool = False,
        branch: str | None = None,
        head_sha: str | None = None,
        task_id: str | None = None,
    ) -> Json:
        """The held task is done (or, with `validate`, awaits a validation result).

        `claim_next`: claim the next task in the same call; `answer["next"]` is
        what `claim` would have answered, and a task given there is held (its
        heartbeat starts) as after `claim`."""
        return self._progress(
            "completed",
            progress,
            message,
            branch,
            head_sha,
            task_id,
            validate=validate,
            claim_next=claim_next,
        )

    def block(
        self,
        description: str,
        severity: str = "medium",
        *,
        claim_next: bool = False,
        task_id: str | None = None,
    ) -> Json:
        """The worker cannot go on: the lease ends and the task is `blocked`
        (`claim_next` as for `complete`)."""
        target = self._target(task_id)
        body: Json = {"description": description, "severity": severity}
        if claim_next:
            body["claim_next"] = True
        answer = self._ending(target, lambda: self._call("POST", f"/tasks/{target}/block", body))
        self._take_next(answer)
        return answer

    def release(self, message: str = "", *, task_id: str | None = None) -> Json:
        """Give the held task back to the board, with a note for the next agent."""
        target = self._target(task_id)
        body = {"message": message}
        answer = self._ending(target, lambda: self._call("POST", f"/tasks/{target}/release", body))
        return answer

    def heartbeat(self, *, task_id: str | None = None) -> Json:
        """A sign of life about the held task (the background thread sends these)."""
        self._raise_lost()
        target = task_id or self._task_id
        if target is None:
            return self._call("POST", "/heartbeat")
        body: Json = {"epoch": self._epoch} if target == self._task_id and self._epoch else {}
        answer = self._call("POST", f"/tasks/{target}/heartbeat", body)
        self._follow(target, answer)
        return answer

    def context(self, task_id: str | None = None) -> Json:
        """The task, its handoff, comments and dependencies."""
        return self._call("GET", f"/tasks/{self._target(task_id)}/context")

    def close(self) -> None:
        """Stop the heartbeat and close the connection pool."""
        self._stop()
        self._http.close()

    def __enter__(self) -> TenureClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- internals
    def _progress(
        self,
        status: str,
        progress: int | None,
        message: str,
        branch: str | None,
        head_sha: str | None,
        task_id: str | None,
        *,
        validate: bool = False,
        claim_next: bool = False,
    ) -> Json:
        target = self._target(task_id)
        body: Json = {"status": status, "message": message}
        for key, value in (("progress", progress), ("branch", branch), ("head_sha", head_sha)):
            if value is not None:
                body[key] = value
        if validate:
            body["validate"] = True
        if claim_next:
            body["claim_next"] = True
        if target == self._task_id and self._epoch is not None:
            body["epoch"] = self._epoch
        path = f"/tasks/{target}/progress"
        if status == "in_progress":
            answer = self._call("POST", path, body)
            self._follow(target, answer)
            return answer
        answer = self._ending(target, lambda: self._call("POST", path, body), _still_held)
        self._follow(target, answer)
        self._take_next(answer)
        return answer

    def _ending(
        self,
        task_id: str,
        call: Callable[[], Json],
        still_held: Callable[[Json], bool] = lambda answer: False,
    ) -> Json:
        """Run a call that may end the lease on `task_id`, and drop the task unless
        the answer says it is still held. A heartbeat refused meanwhile is not a
        loss (the worker is finishing or handing back the task itself)."""
        with self._lock:
            self._closing = task_id
        try:
            answer = call()
            if not still_held(answer):
                self._drop(task_id)
            return answer
        finally:
            with self._lock:
                self._closing = None

    def _raise_lost(self) -> None:
        lost = self._lost
        if lost is not None:
            self._lost = None
            raise lost

    def _target(self, task_id: str | None) -> str:
        self._raise_lost()
        target = task_id or self._task_id
        if target is None:
            raise TenureError("this worker holds no task; claim one first")
        return target

    def _call(
        self, method: str, path: str, body: Json | None = None, *, token: str | None = None
    ) -> Json:
        """One request; raises the server's error, or the lease loss found earlier."""
        self._raise_lost()
        return self._request(method, path, body, token or self.token)

    def _request(
        self, method: str, path: str, body: Json | None, token: str | None, *, beat: bool = False
    ) -> Json:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self._http.request(method, path, json=body, headers=headers)
        if response.status_code == 204:
            return {}
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.is_success and isinstance(payload, dict):
            return payload
        if isinstance(payload, dict) and "error" in payload:
            error = error_from_dict(payload)
        else:
            error = TenureError(f"HTTP {response.status_code} from {method} {path}")
        if isinstance(error, LeaseLost):
            task_id = _task_of(path)
            if not beat:  # the heartbeat thread decides for itself (see `_beat`)
                self._drop(task_id)
                with self._lock:
                    # This answer tells the worker itself: a loss of the same task
                    # flagged by a heartbeat that crossed this call is no longer news
                    # (left pending, it would fail the worker's next, unrelated call).
                    if self._lost is not None and self._lost.task_id == task_id:
                        self._lost = None
            raise LeaseLostError(error.message, details=error.details, task_id=task_id) from None
        raise error

    def _hold(self, lease: Json) -> None:
        with self._lock:
            self._task_id = lease["task_id"]
            self._epoch = lease.get("epoch")
            self._seconds_left = float(lease.get("seconds_left") or 0.0)
            self._lost = None
        self._start()

    def _follow(self, task_id: str, answer: Json) -> None:
        """Keep the held lease's epoch and time left from an answer (a claim-back
        gives a new epoch)."""
        lease = answer.get("lease")
        if lease and lease.get("task_id") == task_id and lease.get("end_reason") is None:
            if task_id != self._task_id:
                self._hold(lease)
                return
            with self._lock:
                self._epoch = lease.get("epoch", self._epoch)
                self._seconds_left = float(lease.get("seconds_left") or 0.0)

    def _take_next(self, answer: Json) -> None:
        """Hold the task a `claim_next` gave, as `claim` does."""
        claimed = answer.get("next") or {}
        if claimed.get("task") is not None and claimed.get("lease") is not None:
            self._hold(claimed["lease"])

    def _drop(self, task_id: str | None) -> None:
        """The task is no longer held (finished, given back or lost)."""
        with self._lock:
            if task_id is not None and task_id != self._task_id:
                return
            self._task_id = None
            self._epoch = None
        self._stop()

    # -------------------------------------------------------------- heartbeat
    def _period(self) -> float:
        return min(self.heartbeat_max_s, max(self.heartbeat_min_s, self._seconds_left / 3))

    def _start(self) -> None:
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self._stop_heartbeat = threading.Event()
        thread = threading.Thread(
            target=self._beat, args=(self._stop_heartbeat,), name="tenure-heartbeat", daemon=True
        )
        self._heartbeat = thread
        thread.start()

    def _stop(self) -> None:
        self._stop_heartbeat.set()
        thread = self._heartbeat
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._heartbeat = None

    def _flag(self, stop: threading.Event, task_id: str, lost: LeaseLostError) -> None:
        """The heartbeat learnt that the lease on `task_id` is gone: the next call
        raises `lost`. Not when the worker itself is ending the lease (a heartbeat
        that crossed a completion or release is refused too) or already did."""
        with self._lock:
            genuine = not stop.is_set() and self._closing != task_id and self._task_id == task_id
            if genuine:
                self._lost = lost
        if genuine:
            self._drop(task_id)
            log.warning("lease on %s lost: %s", task_id, lost.message)

    def _beat(self, stop: threading.Event) -> None:
        """The heartbeat thread: one heartbeat per period while a task is held."""
        while not stop.wait(self._period()):
            with self._lock:
                task_id, epoch = self._task_id, self._epoch
            if task_id is None:
                return
            body: Json = {"epoch": epoch} if epoch is not None else {}
            try:
                answer = self._request(
                    "POST", f"/tasks/{task_id}/heartbeat", body, self.token, beat=True
                )
            except LeaseLostError as lost:
                # A heartbeat that crossed a completion or release in flight is
                # refused too; that is no loss to report.
                self._flag(stop, task_id, lost)
                return
            except (NotHolder, NotFound) as gone:
                self._flag(
                    stop,
                    task_id,
                    LeaseLostError(gone.message, details=gone.details, task_id=task_id),
                )
                return
            except (TenureError, httpx.HTTPError) as problem:
                # The server may be restarting; the lease lives on its side. Try again.
                log.warning("heartbeat on %s failed: %s", task_id, problem)
                continue
            self.heartbeats_sent += 1
            if not stop.is_set():
                self._follow(task_id, answer)


def _still_held(answer: Json) -> bool:
    """A completion that opened a validation window keeps the lease."""
    lease = answer.get("lease")
    return bool(
        lease and lease.get("end_reason") is None and "validating" in lease.get("flags", ())
    )


def _task_of(path: str) -> str | None:
    """The task id in a `/tasks/{id}/...` path."""
    parts = path.strip("/").split("/")
    return parts[1] if len(parts) >= 2 and parts[0] == "tasks" else None
