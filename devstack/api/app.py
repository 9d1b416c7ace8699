"""The app factory: connexion 3, spec-first, strict request validation and
response validation, wrapped in the devstack middleware (counting, one log
line per request, ``/__devstack/stats``)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import connexion
from connexion.resolver import RelativeResolver

from .auth import TokenVerifier, bearer_handler_class
from .policy import WorkspacePolicy, load_policy
from .state import Counters, ServerState, set_state
from .storage import S3Backend

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi" / "terrapi.yaml"
API_BASE_PATH = "/core"

log = logging.getLogger("sts_bridge_devstack.api")


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class DevstackMiddleware:
    """Outermost ASGI layer: ``GET /__devstack/stats``, ``POST
    /__devstack/stats/reset``; counts and logs every other request (method,
    path, status, operation, duration; never headers, query strings or tokens)."""

    def __init__(self, app: Any, counters: Counters) -> None:
        self.app = app
        self.counters = counters

    async def _json(
        self, send: Any, status: int, body: Any, content_type: bytes = b"application/json"
    ) -> None:
        raw = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(raw)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": raw})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        if path.startswith("/__devstack/"):
            if path == "/__devstack/stats" and method == "GET":
                await self._json(send, 200, self.counters.snapshot())
            elif path == "/__devstack/stats/reset" and method == "POST":
                self.counters.reset()
                await self._json(send, 200, {"reset": True})
            else:
                await self._json(send, 404, {"detail": "unknown devstack endpoint"})
            return
        if _CONTROL_CHARACTERS.search(path):
            # No identifier contains control characters; refusing them here also
            # keeps them out of the log, and spares connexion's Flask adapter,
            # which answers an unroutable "\n" in a path with a 500.
            self.counters.count_request(method, "<path with control characters>", None, 400)
            await self._json(
                send,
                400,
                {
                    "type": "about:blank",
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "the request path contains control characters",
                },
                content_type=b"application/problem+json",
            )
            return
        scope.setdefault("extensions", {})
        started = time.monotonic()
        counted = {"done": False}

        def account(status: int) -> None:
            # counted before the response leaves, so a client that reads the
            # stats right after its call sees it
            if counted["done"]:
                return
            counted["done"] = True
            routing = scope.get("extensions", {}).get("connexion_routing") or {}
            op = routing.get("operation_id")
            if op:
                op = op.rsplit(".", 1)[-1]
            self.counters.count_request(method, path, op, status)
            log.info(
                "%s %s %d %.0fms%s",
                method,
                path,
                status,
                (time.monotonic() - started) * 1000,
                f" op={op}" if op else "",
            )

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                account(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            account(500)


def create_app(config: dict[str, Any]) -> Any:
    """The ASGI app of the reference server.

    ``config`` keys: ``issuer``, ``audience``, ``jwks_uri`` (optional),
    ``leeway`` (s), ``s3_endpoint``, ``s3_public_url`` (optional),
    ``role_arn``, ``s3_backend`` (``radosgw`` by default; ``moto``: the fallback,
    which also needs ``s3_admin_access_key``/``s3_admin_secret_key``, see
    :class:`~sts_bridge_devstack.api.storage.S3Backend`),
    ``sts_duration`` (optional, overrides the policy), ``public_url`` (the API
    base, ``.../core``), ``users`` (username -> groups), ``policy`` (mapping)
    or ``policy_file`` (path; default ``devstack/platform.yaml``).
    """
    policy_doc = config.get("policy") or load_policy(config.get("policy_file"))
    policy = WorkspacePolicy(policy_doc, config.get("users") or {})
    sts_cfg = policy_doc.get("sts") or {}
    duration = int(config.get("sts_duration") or sts_cfg.get("duration_seconds") or 900)
    s3_endpoint = str(config["s3_endpoint"]).rstrip("/")
    backend = S3Backend(
        endpoint_url=s3_endpoint,
        region=policy.region,
        role_arn=str(config["role_arn"]),
        duration_seconds=duration,
        download_expires_in=int((policy_doc.get("download") or {}).get("expires_in", 3600)),
        admin_keys=(
            (str(config["s3_admin_access_key"]), str(config["s3_admin_secret_key"]))
            if config.get("s3_backend") == "moto"
            else None
        ),
    )
    counters = Counters()
    state = ServerState(
        policy=policy,
        s3=backend,
        public_url=str(config["public_url"]).rstrip("/"),
        s3_endpoint=s3_endpoint,
        s3_public_url=str(config.get("s3_public_url") or s3_endpoint).rstrip("/") + "/",
        counters=counters,
    )
    set_state(state)
    verifier = TokenVerifier(
        issuer=str(config["issuer"]),
        audience=config.get("audience"),
        jwks_uri=config.get("jwks_uri"),
        leeway=float(config.get("leeway", 2.0)),
    )
    app = connexion.FlaskApp(
        __name__,
        specification_dir=str(SPEC_PATH.parent),
        security_map={"bearer": bearer_handler_class(verifier)},
    )
    app.add_api(
        SPEC_PATH.name,
        base_path=API_BASE_PATH,
        resolver=RelativeResolver("sts_bridge_devstack.api.handlers"),
        strict_validation=True,
        validate_responses=True,
        pythonic_params=True,
        swagger_ui_options=None,
    )
    app.add_error_handler(UnicodeDecodeError, _undecodable_body)
    return DevstackMiddleware(app, counters)


def _undecodable_body(request: Any, exc: Exception) -> Any:
    # connexion decodes JSON bodies as UTF-8 and lets the error escape as a 500
    from connexion.lifecycle import ConnexionResponse

    body = {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "the request body is not valid UTF-8 JSON",
    }
    return ConnexionResponse(
        status_code=400, body=json.dumps(body), content_type="application/problem+json"
    )


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("terrapi-api: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    # connexion logs every ProblemException (401/403/404...) as a warning:
    # keep only real errors, the one line per request above says the rest
    logging.getLogger("connexion").setLevel(logging.ERROR)
