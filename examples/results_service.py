"""A reference service on sts-bridge: results stored in each caller's own workspace.

* ``POST /results`` stores the request body (streamed, multipart when it is
  large) in the caller's workspace under ``results/`` and answers ``201``
  with the key, the size and a presigned GET link;
* ``GET /results`` lists the caller's results;
* ``DELETE /results`` deletes them, for members of the ``RESULTS_CURATORS``
  group only (default ``curators``; 403 ``insufficient_scope`` otherwise);
* ``GET /healthz`` answers ``ok`` (no token needed).

Every request carries the caller's bearer token, addressed to this service
(``RESULTS_AUDIENCE``); it is checked by :class:`CallerVerifier` (401/403
with an RFC 6750 header otherwise; an opaque token is introspected at the
issuer as the service's client, :class:`TokenIntrospection`) and exchanged (RFC 8693) for a token to
the API by :class:`ServiceUsers`, which keeps each user's token, workspace
and STS credentials in a bounded cache. A token the issuer refuses to
exchange (revoked since it was checked, say) is answered 401 too; an issuer
or a store that cannot be reached or fails is 502.

Configuration (environment): the service's own ``TERRAPI_URL``,
``TERRAPI_ISSUER``, ``TERRAPI_CLIENT_ID``, ``TERRAPI_CLIENT_SECRET`` (a
client allowed to exchange tokens), ``TERRAPI_AUDIENCE`` (the API's),
``TERRAPI_SCOPES``; and ``RESULTS_AUDIENCE`` (required), ``RESULTS_SCOPES``
(scopes every caller needs, space-separated), ``RESULTS_GROUPS`` (the caller
needs one of these ``groups``, comma-separated), ``RESULTS_MAX_USERS``,
``RESULTS_IDLE_SECONDS``, ``RESULTS_CURATORS``, ``RESULTS_LINK_SECONDS`` (default 900; a link
never outlives the credentials that sign it, so it may be shorter);
``RESULTS_FORWARD_TOKEN`` (default off; ``1``: on, the SDK's ``forward_token``):
hand the caller's token to the API unchanged instead of exchanging it, for a
platform whose API accepts the tokens callers send this service (then
``RESULTS_AUDIENCE`` is the API's audience); a forwarded token that has
expired (the check admits 30 s of clock skew) is answered 401 ``invalid_token``;
``RESULTS_THREADS`` (default 2 per CPU, at most 32): the worker threads that carry out
transfers (fewer runnable threads leave the event loop more CPU on a small
machine: on 2 CPUs, 50 uploads of 8 MiB lagged the loop 11-44 ms with 4
threads, 25-81 ms with 8; more keep slow uploaders from queueing others);
``RESULTS_TRANSFER_NICE`` (default 10, ``0``: off): the nice value of those
threads on Linux (``sts_bridge.aio.transfer_executor``), so that the event
loop gets a core first when both wait for one;
``RESULTS_LAG_PROBE=1`` measures the event loop's lag (a task that sleeps
5 ms and records how late it wakes; ``GET /__lag``, ``POST /__lag/reset``;
for bench/service_load.py).

Run it::

    uvicorn --app-dir examples results_service:app --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from sts_bridge.aio import transfer_executor
from sts_bridge.clock import utc_now
from sts_bridge.config import load_settings
from sts_bridge.errors import CallerRefusedError, StsBridgeError
from sts_bridge.service import (
    Caller,
    CallerRequirements,
    CallerVerifier,
    TokenIntrospection,
    any_of,
)
from sts_bridge.service.fastapi_auth import caller_dependency, caller_refused_handler
from sts_bridge.service.users import ServiceUsers

logger = logging.getLogger("results_service")

RESULTS_PREFIX = "results/"


def create_app(environ: dict[str, str] | None = None) -> FastAPI:
    """The application, configured from ``environ`` (default ``os.environ``)."""
    env = dict(os.environ if environ is None else environ)
    settings = load_settings()
    audience = env["RESULTS_AUDIENCE"]
    groups = [g for g in env.get("RESULTS_GROUPS", "").split(",") if g]
    requirements = CallerRequirements(
        scopes=tuple(env.get("RESULTS_SCOPES", "").split()),
        claims=(any_of("groups", *groups),) if groups else (),
    )
    assert settings.issuer is not None, "TERRAPI_ISSUER is required"
    assert settings.client_secret, "TERRAPI_CLIENT_SECRET is required"
    verifier = CallerVerifier(
        settings.issuer,
        audience,
        requirements=requirements,
        verify=settings.verify,
        introspection=TokenIntrospection(
            settings.issuer, settings.client_id, settings.client_secret, verify=settings.verify
        ),
    )
    users = ServiceUsers(
        settings,
        forward_token=_flag(env, "RESULTS_FORWARD_TOKEN"),
        max_users=int(env.get("RESULTS_MAX_USERS", "1000")),
        idle_seconds=float(env.get("RESULTS_IDLE_SECONDS", "900")),
    )
    link_seconds = int(env.get("RESULTS_LINK_SECONDS", "900"))
    transfer_nice = int(env.get("RESULTS_TRANSFER_NICE", "10"))
    transfers = transfer_executor(
        int(env.get("RESULTS_THREADS") or min(32, 2 * (os.cpu_count() or 1))),
        nice=transfer_nice,
        thread_name_prefix="results-transfer",
    )
    caller_of = caller_dependency(verifier)
    curators = env.get("RESULTS_CURATORS", "curators")
    curator_of = caller_dependency(
        verifier, CallerRequirements(claims=(any_of("groups", curators),))
    )

    lag: dict[str, Any] = {"max_ms": 0.0, "samples": 0, "late_ms": [], "worst": {}, "gc": {}}
    probe = bool(env.get("RESULTS_LAG_PROBE"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_measure_lag(lag)) if probe else None
        yield
        if task is not None:
            task.cancel()
        users.close()
        if verifier.introspection is not None:
            verifier.introspection.close()
        transfers.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="sts-bridge results service", lifespan=lifespan)
    app.state.users = users
    app.state.verifier = verifier

    # The identity provider refused the caller's token at exchange: 401, like the
    # verifier's refusals (the most specific handler wins over StsBridgeError's).
    app.add_exception_handler(CallerRefusedError, caller_refused_handler)

    @app.exception_handler(StsBridgeError)
    async def sdk_error(request: Request, exc: StsBridgeError) -> JSONResponse:
        # The service's own trouble (the issuer or the store unreachable or
        # broken): 502, one line, already redacted; never a traceback to the caller.
        logger.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
        return JSONResponse({"detail": exc.message}, status_code=502)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/results", status_code=201)
    async def store(request: Request, caller: Caller = Depends(caller_of)) -> dict[str, Any]:  # noqa: B008
        ws = await users.async_workspace(caller, executor=transfers)
        key = f"{RESULTS_PREFIX}{uuid.uuid4().hex}"
        result = await ws.upload_stream(
            request.stream(),
            key,
            content_type=request.headers.get("content-type") or "application/octet-stream",
        )
        # A link cannot outlive the credentials that sign it; asking for more
        # would make every request buy fresh credentials (an STS call each).
        creds = await ws.credentials()
        left = (creds.expiry - utc_now()).total_seconds() if creds.expiry else link_seconds
        link = await ws.presign(key, expires_in=max(1, min(link_seconds, int(left))))
        return {
            "key": key,
            "size": result.size,
            "url": link.url,
            "expires_at": link.expires_at.isoformat(),
        }

    @app.get("/results")
    async def listing(caller: Caller = Depends(caller_of)) -> dict[str, Any]:  # noqa: B008
        ws = await users.async_workspace(caller, executor=transfers)
        found = [{"key": o.key, "size": o.size} async for o in ws.list(RESULTS_PREFIX)]
        return {"workspace": ws.name, "results": found}

    @app.delete("/results")
    async def clear(caller: Caller = Depends(curator_of)) -> dict[str, Any]:  # noqa: B008
        ws = await users.async_workspace(caller, executor=transfers)
        return {"deleted": await ws.delete(RESULTS_PREFIX, recursive=True)}

    if probe:

        @app.get("/__lag")
        async def loop_lag() -> dict[str, Any]:
            return _lag_summary(lag)

        @app.post("/__lag/reset")
        async def reset_lag() -> dict[str, Any]:
            lag.update(max_ms=0.0, samples=0, late_ms=[], worst={}, gc={})
            return _lag_summary(lag)

    return app


def _flag(env: dict[str, str], name: str) -> bool:
    """An on/off setting: ``1``/``true``/``yes``/``on``, or ``0``/``false``/``no``/``off``/unset."""
    word = env.get(name, "").strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("", "0", "false", "no", "off"):
        return False
    raise SystemExit(f"results service: {name}={env[name]!r} is neither on nor off (use 1 or 0)")


async def _measure_lag(lag: dict[str, Any], period: float = 0.005) -> None:
    """Record how late a 5 ms sleep wakes (the loop's lag), and for the latest
    worst wake-up where its time went: the loop thread on a CPU (its own
    callbacks), waiting for a CPU (the kernel's run queue), or neither (blocked:
    waiting for the GIL or another lock), and the garbage collections meanwhile.
    Linux only for the split (``/proc/thread-self/schedstat``)."""
    loop = asyncio.get_running_loop()
    schedstat = Path("/proc/thread-self/schedstat")
    split = schedstat.exists()
    gc_pauses = _GcPauses(lag)
    gc.callbacks.append(gc_pauses)

    def thread_times() -> tuple[float, float]:
        if not split:
            return 0.0, 0.0
        on_cpu, queued = schedstat.read_text().split()[:2]
        return int(on_cpu) / 1e6, int(queued) / 1e6

    try:
        while True:
            cpu_before, queued_before = thread_times()
            gc_before = gc_pauses.total_ms
            before = loop.time()
            await asyncio.sleep(period)
            late = (loop.time() - before - period) * 1000
            cpu_after, queued_after = thread_times()
            lag["samples"] += 1
            lag["late_ms"].append(round(late, 2))
            if late > lag["max_ms"]:
                lag["max_ms"] = late
                lag["worst"] = {
                    "late_ms": round(late, 2),
                    "loop_on_cpu_ms": round(cpu_after - cpu_before, 2),
                    "run_queue_ms": round(queued_after - queued_before, 2),
                    # garbage collection in any thread holds the GIL throughout
                    "gc_ms": round(gc_pauses.total_ms - gc_before, 2),
                }
    finally:
        gc.callbacks.remove(gc_pauses)


class _GcPauses:
    """A ``gc.callbacks`` entry timing every collection (any thread; a collection
    holds the GIL, so the loop cannot run meanwhile): the running total, the
    count and the longest pause per generation into ``lag["gc"]``."""

    def __init__(self, lag: dict[str, Any]) -> None:
        self.lag = lag
        self.total_ms = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = (time.perf_counter() - self._started) * 1000
        self.total_ms += pause
        entry = self.lag["gc"].setdefault(str(info["generation"]), [0, 0.0])
        entry[0] += 1
        entry[1] = max(entry[1], round(pause, 2))


def _lag_summary(lag: dict[str, Any]) -> dict[str, Any]:
    late = sorted(lag["late_ms"])

    def quantile(q: float) -> float:
        return late[min(len(late) - 1, int(q * len(late)))] if late else 0.0

    return {
        "max_ms": lag["max_ms"],
        "samples": lag["samples"],
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "over_10ms": sum(1 for x in late if x > 10),
        "worst": lag["worst"],
        # per generation: [collections, longest pause in ms]
        "gc": lag["gc"],
    }


def _app_from_environment() -> FastAPI:
    level = os.environ.get("RESULTS_LOG_LEVEL")
    if level:
        logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return create_app()


if os.environ.get("RESULTS_AUDIENCE"):
    app = _app_from_environment()
