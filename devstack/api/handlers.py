"""The operations of openapi/terrapi.yaml (resolved by operationId).

connexion validates every request and every response against the spec; the
handlers only apply the workspace policy. Errors are ProblemDetails.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import flask
from connexion.exceptions import ProblemException

from .auth import RAW_TOKEN_KEY
from .policy import (
    SHARED_FOLDER,
    WORKSPACE,
    PolicyError,
    Principal,
    StoragePoint,
    safe_relative_path,
)
from .state import ServerState, get_state
from .storage import StorageError

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    503: "Service Unavailable",
}


_JSON = {"Content-Type": "application/json"}


def _problem(status: int, detail: str) -> ProblemException:
    return ProblemException(status=status, title=_TITLES.get(status, "Error"), detail=detail)


def _principal(token_info: dict[str, Any]) -> Principal:
    return Principal.from_claims(token_info, get_state().policy.users)


class _guard:
    """Turns PolicyError / StorageError into ProblemDetails."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, (PolicyError, StorageError)):
            raise _problem(exc.status, exc.detail) from None


def _point_doc(state: ServerState, point: StoragePoint, *, self_link: bool) -> dict[str, Any]:
    pol = state.policy
    service_url = state.s3_public_url
    props: dict[str, list[Any]] = {
        "bucket": [point.bucket],
        "key": [point.prefix],
        "service_url": [service_url],
        "storage_url": [point.storage_url],
        "storage_type": ["s3"],
        "platform_id": [pol.platform_id],
        "resource_server_id": [pol.resource_server_id],
        "region": [pol.region],
    }
    doc: dict[str, Any] = {
        "storage_type": "s3",
        "end_point": service_url,
        "owner": point.owner,
        "type": point.type,
        "status": {"status_code": "OK", "message": "From Authorization Resource"},
        "resource_uris": [point.storage_url],
        "scopes": list(point.scopes),
        "properties": props,
        "name": point.name,
    }
    if self_link:
        doc["self"] = _self_link(state, point)
    return doc


def _self_link(state: ServerState, point: StoragePoint) -> str:
    kind = "workspaces" if point.type == WORKSPACE else "sharedfolders"
    return f"{state.public_url}/v2/storage/{kind}/{point.name}"


# ------------------------------------------------------------------ User
def v2_user_info_get(token_info: dict[str, Any]) -> Any:
    p = _principal(token_info)
    claims = []
    for k, v in p.claims.items():
        values = v if isinstance(v, list) else [v]
        for item in values:
            if isinstance(item, bool):
                item = str(item).lower()
            elif isinstance(item, dict):
                import json

                item = json.dumps(item, separators=(",", ":"))
            claims.append({"type": k, "value": None if item is None else str(item)})
    return {"name": p.username, "claims": claims}, 200, _JSON


def v2_user_platforms_get(token_info: dict[str, Any]) -> Any:
    pid = get_state().policy.platform_id
    return {pid: {"id": pid}}, 200, _JSON


# ------------------------------------------------------------------ Storage
def get_workspaces(token_info: dict[str, Any]) -> Any:
    state = get_state()
    p = _principal(token_info)
    return (
        [
            {"type": WORKSPACE, "name": ws.name, "self": _self_link(state, ws)}
            for ws in state.policy.workspaces_for(p)
        ],
        200,
        _JSON,
    )


def get_workspace_by_id(workspace_id: str, token_info: dict[str, Any]) -> Any:
    state = get_state()
    with _guard():
        ws = state.policy.workspace(_principal(token_info), workspace_id)
    return _point_doc(state, ws, self_link=True), 200, _JSON


def claim_workspace(workspace_id: str, token_info: dict[str, Any]) -> Any:
    state = get_state()
    with _guard():
        ws = state.policy.workspace(_principal(token_info), workspace_id)
    return _point_doc(state, ws, self_link=True), 202, _JSON


def share_folder(workspace_id: str, token_info: dict[str, Any], body: Any = None) -> Any:
    state = get_state()
    body = body or {}
    with _guard():
        sf = state.policy.share(
            _principal(token_info),
            workspace_id,
            body.get("path") or "",
            list(body.get("users") or []),
            list(body.get("groups") or []),
        )
    return _point_doc(state, sf.point, self_link=True), 201, _JSON


def get_shared_folders(token_info: dict[str, Any]) -> Any:
    state = get_state()
    p = _principal(token_info)
    return (
        [
            {"type": SHARED_FOLDER, "name": sf.point.name, "self": _self_link(state, sf.point)}
            for sf in state.policy.shared_folders_for(p)
        ],
        200,
        _JSON,
    )


def get_shared_folder_by_id(shared_folder_id: str, token_info: dict[str, Any]) -> Any:
    state = get_state()
    with _guard():
        sf = state.policy.shared_folder(_principal(token_info), shared_folder_id)
    return _point_doc(state, sf.point, self_link=True), 200, _JSON


def delete_shared_folder_by_id(shared_folder_id: str, token_info: dict[str, Any]) -> Any:
    state = get_state()
    with _guard():
        sf = state.policy.delete_shared_folder(_principal(token_info), shared_folder_id)
    return (
        {
            "id": str(uuid.uuid4()),
            "resource": sf.point.name,
            "status": {"status_code": "OK", "message": "deleted"},
        },
        202,
        _JSON,
    )


def get_storage_sts(token_info: dict[str, Any], storage_point_id: str | None = None) -> Any:
    state = get_state()
    p = _principal(token_info)
    with _guard():
        point = state.policy.storage_point(p, storage_point_id)
        creds = state.s3.assume_role(token_info[RAW_TOKEN_KEY], p.username, point)
    state.counters.count_sts()
    return {"storage": _point_doc(state, point, self_link=False), "credentials": creds}, 200, _JSON


def _parse_storage_url(state: ServerState, url: str) -> tuple[str, str] | None:
    """(bucket, key) when ``url`` names an object of this platform's storage."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        return parts.netloc, unquote(parts.path.lstrip("/"))
    if parts.scheme in ("http", "https"):
        ours = {urlsplit(state.s3_endpoint).netloc, urlsplit(state.s3_public_url).netloc}
        if parts.netloc in ours:
            bucket, _, key = unquote(parts.path.lstrip("/")).partition("/")
            return bucket, key
    return None


def download(token_info: dict[str, Any], url: str | None = None, redirect: bool = True) -> Any:
    state = get_state()
    if not url:
        raise _problem(400, "the url parameter is required")
    target = _parse_storage_url(state, url)
    if target is None:
        # not in the platform's storage: returned unchanged (as TerrAPI does)
        link, expiration = url, None
    else:
        bucket, key = target
        if not bucket or not key or key.endswith("/"):
            raise _problem(400, "the url must name an object: s3://<bucket>/<key>")
        p = _principal(token_info)
        if not safe_relative_path(key) or not any(
            sp.contains(bucket, key) for sp in state.policy.storage_points_for(p)
        ):
            raise _problem(403, f"{p.username} may not read s3://{bucket}/{key}")
        with _guard():
            link, expiration = state.s3.presign_get(
                token_info[RAW_TOKEN_KEY], p.username, bucket, key
            )
        state.counters.count_presign()
    if redirect:
        # no body; the content type only satisfies connexion's response check
        return flask.Response(
            status=302, headers={"Location": link}, content_type="application/json"
        )
    doc: dict[str, Any] = {"url": link}
    if expiration:
        doc["expiration"] = expiration
    return doc, 200, _JSON
