"""Hook delivery: what Tenure tells the outside world, from the store's outbox.

Recoveries, escalations and dead letters are written to the outbox in the
same transaction as the change itself (see `tenure.units`), so a crash after
commit loses none. A `HookDeliverer` runs as its own task in every server
replica and works the outbox in three steps:

1. **Take** the due rows in one short transaction, and push each row's next
   attempt a visibility timeout ahead: another replica skips the row (locked
   meanwhile by SKIP LOCKED on PostgreSQL, then not yet due) until this one
   is done with it or has died.
2. **Deliver** outside every transaction: POST the JSON body to each webhook
   URL and call each Python hook with `(kind, payload)`, all at once, each
   bounded by `timeout`.
3. **Record** the outcome in a second short transaction: delivered when every
   target accepted (a 2xx answer, a callable that returned); otherwise the
   next attempt after an exponential backoff with jitter, and after
   `max_attempts` attempts the row is given up (dead) with its last error.

Delivery is at least once: a target may see an event twice (a retry after a
partial failure, a replica that died mid-delivery), always with the same
`Idempotency-Key` header and the same body, so it can drop repeats. Nothing a
hook does, or fails to do, ever changes anything else in Tenure.

Webhook requests carry:

    Content-Type: application/json
    Idempotency-Key: <kind>:<board>:<task>:<epoch>
    X-Tenure-Event: recovered | escalated | dead_lettered
    X-Tenure-Attempt: <n>
    X-Tenure-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>
                        (only when a secret is configured)

and the body `{"event", "board_id", "idempotency_key", "created_at", "data"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tenure.core.errors import StoreUnavailable
from tenure.store.base import OutboxRow, Store, Tx

log = logging.getLogger("tenure.hooks")

#: A Python hook: called with the event kind and a copy of its payload; may be async.
HookCallable = Callable[[str, dict[str, Any]], Awaitable[object] | object]

#: The next attempt of a row that was given up: never due again. The row stays
#: in the outbox, undelivered, with its last error, for people to look at.
GAVE_UP_AT = datetime(9999, 1, 1, tzinfo=UTC)

#: Error text kept in the outbox at most.
MAX_ERROR_CHARS = 2000


def sign(body: bytes, secret: str) -> str:
    """The `X-Tenure-Signature` value of `body`: `sha256=<hex HMAC>`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(body: bytes, secret: str, signature: str) -> bool:
    """True when `signature` is `sign(body, secret)` (compared in constant time)."""
    return hmac.compare_digest(sign(body, secret), signature)


def body_of(row: OutboxRow) -> bytes:
    """The JSON body posted for `row`: the same bytes on every attempt."""
    document = {
        "event": row.kind,
        "board_id": row.board_id,
        "idempotency_key": row.idempotency_key,
        "created_at": row.created_at.isoformat(),
        "data": row.payload,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()


def attempts_made(row: OutboxRow) -> int:
    """Delivery attempts started on `row` before now.

    The Store counts every `mark_hook` call in `attempts`, and the deliverer
    marks a row twice per attempt: once to take it, once with the outcome. A
    take whose outcome never came (a replica died) still counts, since the
    request may have gone out.
    """
    return (row.attempts + 1) // 2


@dataclass
class DeliveryStats:
    """Running figures of a `HookDeliverer`."""

    taken: int = 0
    delivered: int = 0
    retried: int = 0
    gave_up: int = 0
    passes: int = 0


@dataclass(frozen=True, slots=True)
class _Outcome:
    row: OutboxRow
    attempt: int
    error: str | None


class HookDeliverer:
    """Delivers outbox rows to webhook URLs and Python callables (module docstring).

    - `store`: the outbox's store; `now` comes from its clock, so backoff
      follows a FakeClock in tests.
    - `webhook_urls`, `callables`: the targets; every row goes to all of them.
    - `secret`: signs webhook bodies; None or "" sends no signature.
    - `max_attempts`: attempts per row before it is given up.
    - `base_delay`, `max_delay`: the backoff after attempt n is
      min(max_delay, base_delay x 2^(n-1)), of which a random half is kept.
    - `batch`: rows taken per pass; `interval`: seconds between passes when
      the outbox is idle; `timeout`: seconds one target may take.
    - `client`: an httpx client to use (else one is made and closed here);
      `rng`: the jitter's random source.
    """

    def __init__(
        self,
        *,
        store: Store,
        webhook_urls: Sequence[str] = (),
        callables: Sequence[HookCallable] = (),
        secret: str | None = None,
        max_attempts: int = 8,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        batch: int = 50,
        interval: float = 1.0,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if timeout <= 0 or interval <= 0 or base_delay < 0 or max_delay < base_delay:
            raise ValueError("timeout and interval must be positive, 0 <= base_delay <= max_delay")
        self.store = store
        self.webhook_urls = tuple(webhook_urls)
        self.callables = tuple(callables)
        self.secret = secret or None
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.batch = max(1, batch)
        self.interval = interval
        self.timeout = timeout
        # Targets of a row run at once, each within `timeout`; twice that and
        # a margin covers a busy event loop before another replica may retry.
        self.visibility = timedelta(seconds=2 * timeout + 30.0)
        self.stats = DeliveryStats()
        self._client = client
        self._own_client = client is None
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ loop
    def statistics(self) -> DeliveryStats:
        """What this deliverer did so far."""
        return self.stats

    def notify(self) -> None:
        """Look at the outbox now rather than at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the pass in flight, then return from `run`."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Deliver until `stop()`: a full batch is followed at once by the next,
        an idle outbox is looked at again every `interval` seconds."""
        try:
            while not self._stopping.is_set():
                try:
                    taken = await self.deliver_once()
                except StoreUnavailable as exc:
                    # The rows stay in the outbox; try again after a pause.
                    log.warning("hook delivery paused: %s", exc)
                    taken = 0
                if taken >= self.batch:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this deliverer made it."""
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # ----------------------------------------------------------------- a pass
    async def deliver_once(self) -> int:
        """Take the rows due now, deliver them, record the outcomes; return how many.

        With no target configured nothing is taken: the rows wait in the outbox
        for a deliverer that has somewhere to send them.
        """
        if not self.webhook_urls and not self.callables:
            return 0
        rows = await self.store.run(self._take)
        self.stats.passes += 1
        if not rows:
            return 0
        self.stats.taken += len(rows)
        if self.webhook_urls and self._client is None:
            self._client = httpx.AsyncClient()
        outcomes = await asyncio.gather(*(self._deliver(row) for row in rows))
        await self.store.run(lambda tx: self._record(tx, outcomes))
        return len(rows)

    def _take(self, tx: Tx) -> list[OutboxRow]:
        rows = tx.due_hooks(tx.now, self.batch)
        for row in rows:
            tx.mark_hook(
                row.id,
                delivered=False,
                next_attempt_at=tx.now + self.visibility,
                error=row.last_error,
            )
        return rows

    def _record(self, tx: Tx, outcomes: Sequence[_Outcome]) -> None:
        for outcome in outcomes:
            row, attempt = outcome.row, outcome.attempt
            if outcome.error is None:
                tx.mark_hook(row.id, delivered=True)
                self.stats.delivered += 1
            elif attempt >= self.max_attempts:
                error = f"gave up after {attempt} attempts: {outcome.error}"
                tx.mark_hook(row.id, delivered=False, next_attempt_at=GAVE_UP_AT, error=error)
                self.stats.gave_up += 1
                log.error("hook %s given up: %s", row.idempotency_key, error)
            else:
                delay = self.backoff(attempt)
                tx.mark_hook(
                    row.id,
                    delivered=False,
                    next_attempt_at=tx.now + timedelta(seconds=delay),
                    error=outcome.error,
                )
                self.stats.retried += 1
                log.info(
                    "hook %s attempt %d failed (%s); next in %.1f s",
                    row.idempotency_key,
                    attempt,
                    outcome.error,
                    delay,
                )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 60))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    # ------------------------------------------------------------ delivering
    async def _deliver(self, row: OutboxRow) -> _Outcome:
        attempt = attempts_made(row) + 1
        body = body_of(row)
        jobs = [self._post(url, row, body, attempt) for url in self.webhook_urls]
        jobs += [self._call(fn, row) for fn in self.callables]
        errors = [error for error in await asyncio.gather(*jobs) if error is not None]
        return _Outcome(row, attempt, "; ".join(errors)[:MAX_ERROR_CHARS] if errors else None)

    async def _post(self, url: str, row: OutboxRow, body: bytes, attempt: int) -> str | None:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": row.idempotency_key,
            "X-Tenure-Event": row.kind,
            "X-Tenure-Attempt": str(attempt),
        }
        if self.secret is not None:
            headers["X-Tenure-Signature"] = sign(body, self.secret)
        assert self._client is not None  # made by deliver_once
        try:
            answer = await self._client.post(
                url, content=body, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            return f"{url}: {type(exc).__name__}: {exc}"
        if not 200 <= answer.status_code < 300:
            return f"{url}: HTTP {answer.status_code}"
        return None

    async def _call(self, fn: HookCallable, row: OutboxRow) -> str | None:
        name = getattr(fn, "__qualname__", repr(fn))
        result: object
        try:
            async with asyncio.timeout(self.timeout):
                if inspect.iscoroutinefunction(fn):
                    result = fn(row.kind, dict(row.payload))
                else:
                    # A plain function runs on a worker thread, so a slow hook
                    # never stalls the event loop (and with it the monitor).
                    result = await asyncio.to_thread(fn, row.kind, dict(row.payload))
                if inspect.isawaitable(result):
                    await result
        except TimeoutError:
            return f"{name}: no answer within {self.timeout:g} s"
        except Exception as exc:  # a hook's failure is reported, never propagated
            log.warning("hook %s raised on %s", name, row.idempotency_key, exc_info=True)
            return f"{name}: {type(exc).__name__}: {exc}"
        return None


__all__ = [
    "GAVE_UP_AT",
    "DeliveryStats",
    "HookCallable",
    "HookDeliverer",
    "attempts_made",
    "body_of",
    "sign",
    "verify",
]
