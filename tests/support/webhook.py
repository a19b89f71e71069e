"""A webhook receiver for tests: what a careful consumer of Tenure's hooks does."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return self.headers["idempotency-key"]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook endpoint that fails its first `failures` requests with 500, then
    accepts, and keeps each event once by its Idempotency-Key (as a careful
    receiver would)."""

    failures: int = 0
    hold: threading.Event | None = None
    requests: list[Received] = field(default_factory=list)
    accepted: dict[str, Received] = field(default_factory=dict)
    duplicates: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        seen = Received(headers, body)
        with self.lock:
            self.requests.append(seen)
            self.arrived.set()
            if len(self.requests) <= self.failures:
                return 500
        if self.hold is not None:
            self.hold.wait(timeout=10)
        with self.lock:
            if seen.key in self.accepted:
                self.duplicates += 1
            else:
                self.accepted[seen.key] = seen
        return 204
