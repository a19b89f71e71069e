"""The Tenure server: a Runtime (store, Coordinator, monitor) inside a FastAPI app.

`create_app(settings)` builds the app; its lifespan opens the store named by
`store.database_url` (`sqlite:///path`, migrated at start, or
`postgresql://...`), refuses a database newer than this code, creates the
admin token at the first start and prints it once, then runs the monitor
(and the hook deliverer, when that module is present) in one task group. If
any of them dies the server logs why and shuts down: it never stays up half
alive, answering agents while nothing recovers their leases. `serve`
runs the app under uvicorn, on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tenure import __version__
from tenure.api.dashboard import install_dashboard
from tenure.api.http import install_routes
from tenure.auth import ADMIN
from tenure.core.errors import InvalidInput, TenureError
from tenure.monitor import EvidenceSource, Monitor, PassResult
from tenure.service import Coordinator, Options
from tenure.settings import Settings, load_settings
from tenure.sinks import Sink
from tenure.store.base import Store
from tenure.telemetry import CONTENT_TYPE_LATEST, LeaseGauges, Telemetry, configure_logging

log = logging.getLogger("tenure.server")

#: Seconds /readyz waits for the store before calling it unreachable.
READY_TIMEOUT_S = 2.0


def sqlite_path(database_url: str) -> str | None:
    """The file of a `sqlite:///path` URL (`sqlite:///./tenure.db` -> `./tenure.db`,
    `sqlite:////abs/tenure.db` -> `/abs/tenure.db`), or None for another scheme."""
    if not database_url.startswith("sqlite:"):
        return None
    rest = database_url[len("sqlite:") :]
    if rest.startswith("///"):
        rest = rest[3:]
    elif rest.startswith("//"):
        rest = rest[2:]
    path = unquote(rest)
    if not path:
        raise InvalidInput("store.database_url names no SQLite file (sqlite:///path/to/tenure.db)")
    return path


async def open_store(database_url: str, *, migrate: bool = True) -> Store:
    """Open the store a database URL names (SQLite or PostgreSQL)."""
    path = sqlite_path(database_url)
    if path is not None:
        from tenure.store.sqlite import open_sqlite

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return await open_sqlite(path, migrate=migrate)
    if urlsplit(database_url).scheme in {"postgres", "postgresql"}:
        from tenure.store.postgres import open_postgres

        return await open_postgres(database_url, migrate=migrate)
    raise InvalidInput(f"unsupported store.database_url scheme: {database_url.split(':', 1)[0]!r}")


def options_of(settings: Settings) -> Options:
    """The Coordinator's options from the settings."""
    return Options(
        max_tasks_per_agent=settings.max_tasks_per_agent,
        claim_retry_after_s=settings.claim_retry_after,
        monitor_batch_size=settings.monitor_batch_size,
        worktree_template=settings.worktree_template,
        allowed_worktree_roots=settings.allowed_worktree_roots,
    )


def _optional(module: str, name: str) -> Any:
    """`module.name` when that module exists (parts built in parallel plug in here)."""
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def _evidence(settings: Settings) -> EvidenceSource | None:
    git_evidence = _optional("tenure.evidence", "GitEvidence")
    if git_evidence is None:
        return None
    source: EvidenceSource = git_evidence(
        allowed_roots=settings.allowed_worktree_roots,
        template=settings.worktree_template,
        git_timeout=settings.git_timeout,
    )
    return source


class _TelemetrySink(Sink):
    """The Coordinator's post-commit effects, into the server's telemetry."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def count(self, counter: str, n: int = 1) -> None:
        self.telemetry.count(counter, n)

    def lease_expired(self, payload: dict[str, Any]) -> None:
        self.telemetry.lease_expired(payload)

    def detection(self, seconds: float) -> None:
        self.telemetry.observe_detection(seconds)


@dataclass
class Runtime:
    """Everything one server process runs: the store, the Coordinator, the monitor,
    telemetry, and the background workers supervised together."""

    settings: Settings
    store: Store
    coordinator: Coordinator
    monitor: Monitor
    telemetry: Telemetry
    workers: list[Any] = field(default_factory=list)
    #: Set when the server stops: event streams end, /readyz says unready.
    stopping: anyio.Event = field(default_factory=anyio.Event)
    #: Why the background workers stopped, if one of them failed.
    failure: BaseException | None = None
    #: Called when a background worker dies, to stop the server.
    on_fatal: Callable[[], None] | None = None
    #: The admin token, when this start created it (shown once).
    new_admin_token: str | None = None
    _supervisor: asyncio.Task[None] | None = None
    #: The lease gauges of /metrics, read at most once a second.
    lease_gauges: LeaseGauges = field(init=False)

    def __post_init__(self) -> None:
        self.lease_gauges = LeaseGauges(
            self.telemetry, lambda: self.coordinator.admin.statistics(ADMIN)
        )

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool | None = None) -> Runtime:
        """Open the store and build the Coordinator and monitor from `settings`
        (`migrate` None: apply the migrations `store.migrate` allows)."""
        if migrate is None:
            from tenure.upgrade import open_for_serving

            store = await open_for_serving(settings)
        else:
            store = await open_store(settings.database_url, migrate=migrate)
        telemetry = Telemetry()
        coordinator = Coordinator(
            store, settings.policy(), options_of(settings), _TelemetrySink(telemetry)
        )

        def observed(result: PassResult) -> None:
            telemetry.observe_pass(result.duration_s)

        monitor = Monitor(
            coordinator,
            interval=settings.monitor_interval,
            batch_size=settings.monitor_batch_size,
            evidence=_evidence(settings),
            probe_concurrency=settings.evidence_concurrency,
            on_pass=observed,
        )
        runtime = cls(settings, store, coordinator, monitor, telemetry)
        deliverer = _optional("tenure.hooks", "HookDeliverer")
        if deliverer is not None and settings.webhook_urls:
            runtime.workers.append(_hook_deliverer(deliverer, runtime))
        if settings.retention_days > 0:
            from tenure.retention import Pruner

            runtime.workers.append(
                Pruner(
                    store,
                    retention_days=settings.retention_days,
                    batch_size=int(settings["events.prune_batch_size"]),
                    interval=float(settings["events.prune_interval"]),
                )
            )
        return runtime

    async def start(self) -> None:
        """Create the admin token at the first start, then start the workers."""
        self.new_admin_token = await self.coordinator.admin.ensure_admin_token()
        self._supervisor = asyncio.create_task(self._supervise(), name="tenure-supervisor")

    async def _supervise(self) -> None:
        """Run the monitor and the other workers in one task group; if one fails,
        record it and stop the server."""
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self.monitor.run, name="tenure-monitor")
                for worker in self.workers:
                    group.start_soon(worker.run, name=f"tenure-{type(worker).__name__}")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failure = exc
            log.critical(
                "a background worker of the server died; stopping the server", exc_info=exc
            )
            self.stopping.set()
            if self.on_fatal is not None:
                self.on_fatal()
            return
        if not self.stopping.is_set():
            # The monitor returned without being asked to: no longer recovering anything.
            self.failure = RuntimeError("the monitor stopped on its own")
            log.critical("the monitor stopped on its own; stopping the server")
            self.stopping.set()
            if self.on_fatal is not None:
                self.on_fatal()

    @property
    def alive(self) -> bool:
        """The background workers run."""
        return self._supervisor is not None and not self._supervisor.done() and self.failure is None

    async def readiness(self) -> dict[str, dict[str, Any]]:
        """The checks behind /readyz."""
        checks: dict[str, dict[str, Any]] = {}
        stats = self.monitor.statistics()
        checks["monitor"] = {
            "ok": self.alive and not self.stopping.is_set(),
            "passes": stats.passes,
            "error": repr(self.failure) if self.failure else None,
        }
        try:
            with anyio.fail_after(READY_TIMEOUT_S):
                await self.store.read(lambda tx: tx.now)
            checks["store"] = {"ok": True, "dialect": self.store.dialect}
        except Exception as exc:
            checks["store"] = {"ok": False, "dialect": self.store.dialect, "error": str(exc)}
        return checks

    def monitor_statistics(self) -> dict[str, Any]:
        """The monitor's running figures, JSON-ready."""
        stats = self.monitor.statistics()
        return {
            "passes": stats.passes,
            "totals": dict(stats.totals),
            "last_pass_s": round(stats.last.duration_s, 6),
            "alive": self.alive,
        }

    async def stop(self) -> None:
        """Stop the workers (the pass in flight finishes), then close the store."""
        self.stopping.set()
        self.monitor.stop()
        for worker in self.workers:
            worker.stop()
        if self._supervisor is not None:
            try:
                with anyio.fail_after(10):
                    await asyncio.shield(self._supervisor)
            except TimeoutError:
                self._supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._supervisor
            except Exception:
                pass  # already logged by the supervisor
        await self.store.close()


def _hook_deliverer(cls: Any, runtime: Runtime) -> Any:
    """Build the hook deliverer from the settings, whatever keywords it takes."""
    s = runtime.settings
    return cls(
        store=runtime.store,
        webhook_urls=s.webhook_urls,
        secret=s.hooks_secret,
        max_attempts=s.hooks_max_attempts,
    )


def announce_admin_token(token: str, stream: Any = None) -> None:
    """Print the new admin token once, on stderr, where a person will see it."""
    out = stream or sys.stderr
    line = "=" * 72
    out.write(
        f"\n{line}\n"
        "Tenure created the admin token. It is shown ONCE and stored only hashed:\n\n"
        f"    {token}\n\n"
        "Keep it; the CLI reads it from TENURE_TOKEN:\n\n"
        f"    export TENURE_TOKEN={token}\n"
        f"{line}\n\n"
    )
    out.flush()


class _RequestTimer:
    """ASGI middleware: each request's duration into telemetry, by route template."""

    def __init__(self, app: ASGIApp, telemetry: Callable[[], Telemetry | None]) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            telemetry = self.telemetry()
            path = getattr(route, "path", None)
            if telemetry is not None and path and not path.endswith("/stream"):
                telemetry.observe_request(path, time.perf_counter() - started)


def create_app(
    settings: Settings | None = None, *, announce: Callable[[str], None] | None = None
) -> FastAPI:
    """The Tenure ASGI app over the settings (loaded from the environment if None)."""
    settings = settings or load_settings()
    state: dict[str, Runtime] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime = await Runtime.open(settings)
            stack.push_async_callback(runtime.stop)
            runtime.on_fatal = getattr(app.state, "on_fatal", None) or _signal_self
            app.state.runtime = runtime
            state["runtime"] = runtime
            await runtime.start()
            if runtime.new_admin_token is not None:
                (announce or announce_admin_token)(runtime.new_admin_token)
            mcp_extension = _optional("tenure.api.mcp", "mcp_extension")
            if mcp_extension is not None:
                await stack.enter_async_context(mcp_extension(app, runtime))
            log.info("tenure %s ready; store %s", __version__, runtime.store.dialect)
            yield
            runtime.stopping.set()
            log.info("tenure stopping")

    app = FastAPI(
        title="Tenure",
        version=__version__,
        description="Hands tasks to agents under leases; recovers dead agents' work.",
        lifespan=lifespan,
    )
    install_routes(app)
    install_dashboard(app)

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        # The lease gauges are a snapshot, taken at scrapes (at most once a second).
        await runtime.lease_gauges.refresh()
        return Response(runtime.telemetry.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(
        _RequestTimer, telemetry=lambda: getattr(state.get("runtime"), "telemetry", None)
    )
    return app


def _signal_self() -> None:
    """Ask the server to shut down as if it got SIGTERM (graceful under uvicorn)."""
    os.kill(os.getpid(), signal.SIGTERM)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    settings: Settings,
    *,
    app: FastAPI | None = None,
    on_started: Callable[[Callable[[], None]], None] | None = None,
) -> int:
    """Run the server until it is stopped; returns the exit status (1 if a
    background worker died). `on_started(stop)` is called from a thread once the
    server listens; calling `stop()` shuts the server down gracefully."""
    import uvicorn

    configure_logging(settings.log_format, settings.log_level)
    # httpx logs every request at INFO; the demo's agents and the hooks use it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings.log_effective(log)
    if not is_loopback(settings.host):
        log.warning(
            "listening on %s: reachable from other machines; every call still needs a token, "
            "but put TLS in front of Tenure before exposing it",
            settings.host,
        )
    try:
        # Open (and migrate) the store once before listening, so a database that
        # is unreachable or newer than this code stops the start with one clear line.
        asyncio.run(_check_store(settings))
    except TenureError as error:
        log.error("cannot start: %s", error.message)
        return 2
    app = app or create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # uvicorn's 5 s default races clients that keep idle connections as
        # long: a request sent as the server closes the socket is lost.
        timeout_keep_alive=settings.keep_alive,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    server = _draining_server(config)
    server.app_state = app.state

    def stop_server() -> None:
        server.should_exit = True

    app.state.on_fatal = stop_server
    if on_started is not None:
        _after_start(server, lambda: on_started(stop_server))
    server.run()
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    if runtime is not None and runtime.failure is not None:
        return 1
    return 0 if server.started else 1


def _draining_server(config: Any) -> Any:
    """A uvicorn Server that marks the runtime as stopping the moment a signal
    asks it to exit, before it drains connections.

    Streams end during the drain (sse-starlette ends its SSE answers at once)
    and clients close their MCP sessions: those closes must not count as
    agents leaving (SPEC: a server shutting down never marks anything
    suspect), so `runtime.stopping` is set first, and /readyz turns unready
    while requests in flight finish.
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        app_state: Any = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            runtime = getattr(self.app_state, "runtime", None)
            if runtime is not None:
                with contextlib.suppress(RuntimeError):
                    # A signal handler runs on the loop's thread, between two
                    # steps of the loop: hand the event to the loop to set.
                    asyncio.get_running_loop().call_soon_threadsafe(runtime.stopping.set)
            super().handle_exit(sig, frame)

    return DrainingServer(config)


async def _check_store(settings: Settings) -> None:
    from tenure.upgrade import open_for_serving

    store = await open_for_serving(settings)
    await store.close()


def _after_start(server: Any, callback: Callable[[], None]) -> None:
    """Call `callback` (from a thread) once uvicorn is listening."""

    def wait() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            callback()

    threading.Thread(target=wait, name="tenure-after-start", daemon=True).start()


# For ASGI servers started by path: `uvicorn --factory tenure.server:app_factory`.
def app_factory() -> FastAPI:
    """`create_app()` with the settings from the environment and tenure.toml."""
    return create_app(load_settings())


__all__ = [
    "Runtime",
    "announce_admin_token",
    "app_factory",
    "create_app",
    "is_loopback",
    "open_store",
    "serve",
]
