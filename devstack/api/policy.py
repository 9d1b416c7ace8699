"""Who may use which storage point: the workspace policy and shared folders.

One config (``devstack/platform.yaml``) names every workspace:

* each user ``u``: ``<platform>-<u>-private-workspace`` (bucket, prefix ``u/``);
* each group ``g`` of a user: ``<platform>-<g>-shared-workspace``;
* each service workspace: for the service accounts of the listed client ids
  (``preferred_username == service-account-<client id>``, or ``azp``).

Shared folders live in memory: a member of a workspace shares a sub-prefix
with users and groups (read-only for them).
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_POLICY_FILE = Path(__file__).resolve().parents[1] / "platform.yaml"

WORKSPACE = "urn:resource:storage:workspace"
SHARED_FOLDER = "urn:resource:storage:sharedfolder"
SERVICE_ACCOUNT_PREFIX = "service-account-"


def load_policy(path: str | Path | None = None) -> dict[str, Any]:
    """The policy mapping from ``path`` (default: ``devstack/platform.yaml``)."""
    with open(path or DEFAULT_POLICY_FILE, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping")
    return data


@dataclass(frozen=True)
class Principal:
    username: str
    sub: str
    client_id: str | None
    groups: tuple[str, ...]
    claims: dict[str, Any]

    @property
    def service_client_id(self) -> str | None:
        """The client id when this principal is a service account, else None."""
        if self.username.startswith(SERVICE_ACCOUNT_PREFIX):
            return self.username[len(SERVICE_ACCOUNT_PREFIX) :] or self.client_id
        return None

    @classmethod
    def from_claims(cls, claims: dict[str, Any], known_groups: dict[str, list[str]]) -> Principal:
        username = str(claims.get("preferred_username") or claims.get("sub") or "")
        client_id = claims.get("azp") or claims.get("client_id")
        groups = claims.get("groups")
        if not isinstance(groups, list):
            groups = known_groups.get(username, [])
        public = {k: v for k, v in claims.items() if not k.startswith("__")}
        return cls(
            username=username,
            sub=str(claims.get("sub") or ""),
            client_id=str(client_id) if client_id else None,
            groups=tuple(str(g) for g in groups),
            claims=public,
        )


@dataclass(frozen=True)
class StoragePoint:
    name: str
    type: str
    bucket: str
    prefix: str
    owner: str
    scopes: tuple[str, ...]
    read_only: bool = False

    @property
    def storage_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def contains(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


@dataclass
class SharedFolder:
    point: StoragePoint
    workspace: str
    owner: str
    users: tuple[str, ...]
    groups: tuple[str, ...]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


class PolicyError(Exception):
    """Maps to a ProblemDetails response."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def safe_relative_path(path: str) -> bool:
    """True when ``path`` stays below its base (no absolute path, no dot segments)."""
    if path.startswith("/") or "\\" in path:
        return False
    return all(seg not in (".", "..") for seg in path.split("/"))


class WorkspacePolicy:
    """The workspace rules of one platform plus the in-memory shared folders."""

    def __init__(self, policy: dict[str, Any], users: dict[str, list[str]] | None = None) -> None:
        self.policy = policy
        self.platform_id = str(policy.get("platform_id", "gep"))
        self.resource_server_id = str(policy.get("resource_server_id", "terrapi"))
        self.region = str(policy.get("region", "us-east-1"))
        self.scopes = tuple(policy.get("scopes") or ())
        self.shared_scopes = tuple(policy.get("shared_folder_scopes") or ("s3:GetObject",))
        ws = policy.get("workspaces") or {}
        self.private_rule: dict[str, str] | None = ws.get("private")
        self.group_rule: dict[str, str] | None = ws.get("group")
        self.service_rules: list[dict[str, Any]] = list(ws.get("services") or [])
        self.users = dict(users or {})  # username -> groups (the IdP's accounts)
        self._shared: dict[str, SharedFolder] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------- buckets
    def buckets(self) -> list[str]:
        names = []
        for rule in (self.private_rule, self.group_rule, *self.service_rules):
            if rule and rule.get("bucket") and rule["bucket"] not in names:
                names.append(str(rule["bucket"]))
        return names

    # -------------------------------------------------------------- workspaces
    def _fmt(self, template: str, **kw: str) -> str:
        return template.format(platform=self.platform_id, **kw)

    def private_workspace(self, username: str) -> StoragePoint | None:
        r = self.private_rule
        if not r or not username:
            return None
        return StoragePoint(
            name=self._fmt(r["name"], username=username),
            type=WORKSPACE,
            bucket=r["bucket"],
            prefix=self._fmt(r["prefix"], username=username),
            owner=username,
            scopes=self.scopes,
        )

    def group_workspace(self, group: str) -> StoragePoint | None:
        r = self.group_rule
        if not r or not group:
            return None
        return StoragePoint(
            name=self._fmt(r["name"], group=group),
            type=WORKSPACE,
            bucket=r["bucket"],
            prefix=self._fmt(r["prefix"], group=group),
            owner=group,
            scopes=self.scopes,
        )

    def service_workspace(self, rule: dict[str, Any]) -> StoragePoint:
        return StoragePoint(
            name=str(rule["name"]),
            type=WORKSPACE,
            bucket=str(rule["bucket"]),
            prefix=str(rule["prefix"]),
            owner=self.resource_server_id,
            scopes=self.scopes,
        )

    def workspaces_for(self, p: Principal) -> list[StoragePoint]:
        """The principal's workspaces, its default one first."""
        service = p.service_client_id
        if service is not None:
            return [
                self.service_workspace(r)
                for r in self.service_rules
                if service in (r.get("clients") or [])
            ]
        out = []
        private = self.private_workspace(p.username)
        if private:
            out.append(private)
        for g in p.groups:
            ws = self.group_workspace(g)
            if ws and ws not in out:
                out.append(ws)
        return out

    def all_workspaces(self) -> dict[str, StoragePoint]:
        """Every workspace that exists (for telling 403 from 404)."""
        found: dict[str, StoragePoint] = {}
        for username, groups in self.users.items():
            for ws in (self.private_workspace(username), *map(self.group_workspace, groups)):
                if ws:
                    found[ws.name] = ws
        for rule in self.service_rules:
            ws = self.service_workspace(rule)
            found[ws.name] = ws
        return found

    def workspace(self, p: Principal, name: str) -> StoragePoint:
        """The principal's workspace ``name``; PolicyError 403 / 404 otherwise."""
        for ws in self.workspaces_for(p):
            if ws.name == name:
                return ws
        if name in self.all_workspaces():
            raise PolicyError(403, f"{p.username} may not use workspace {name}")
        raise PolicyError(404, f"no workspace named {name}")

    # -------------------------------------------------------------- shared folders
    def _may_see(self, p: Principal, sf: SharedFolder) -> bool:
        if any(ws.name == sf.workspace for ws in self.workspaces_for(p)):
            return True
        return p.username in sf.users or any(g in sf.groups for g in p.groups)

    def _may_manage(self, p: Principal, sf: SharedFolder) -> bool:
        return any(ws.name == sf.workspace for ws in self.workspaces_for(p))

    def share(
        self, p: Principal, workspace: str, path: str, users: list[str], groups: list[str]
    ) -> SharedFolder:
        ws = self.workspace(p, workspace)
        path = (path or "").lstrip()
        if not safe_relative_path(path):
            raise PolicyError(403, "the shared path must stay inside the workspace")
        if path and not path.endswith("/"):
            path += "/"
        name = f"{ws.name}-{_slug(path)}" if _slug(path) else f"{ws.name}-shared"
        point = StoragePoint(
            name=name,
            type=SHARED_FOLDER,
            bucket=ws.bucket,
            prefix=ws.prefix + path,
            owner=p.username,
            scopes=self.shared_scopes,
            read_only=True,
        )
        sf = SharedFolder(
            point=point,
            workspace=ws.name,
            owner=p.username,
            users=tuple(users),
            groups=tuple(groups),
        )
        with self._lock:
            self._shared[name] = sf  # sharing the same path again replaces the audience
        return sf

    def shared_folders_for(self, p: Principal) -> list[SharedFolder]:
        with self._lock:
            folders = list(self._shared.values())
        return [sf for sf in folders if self._may_see(p, sf)]

    def shared_folder(self, p: Principal, name: str, *, manage: bool = False) -> SharedFolder:
        with self._lock:
            sf = self._shared.get(name)
        if sf is None:
            raise PolicyError(404, f"no shared folder named {name}")
        allowed = self._may_manage(p, sf) if manage else self._may_see(p, sf)
        if not allowed:
            verb = "delete" if manage else "use"
            raise PolicyError(403, f"{p.username} may not {verb} shared folder {name}")
        return sf

    def delete_shared_folder(self, p: Principal, name: str) -> SharedFolder:
        sf = self.shared_folder(p, name, manage=True)
        with self._lock:
            self._shared.pop(name, None)
        return sf

    # -------------------------------------------------------------- any storage point
    def storage_points_for(self, p: Principal) -> list[StoragePoint]:
        return self.workspaces_for(p) + [sf.point for sf in self.shared_folders_for(p)]

    def storage_point(self, p: Principal, name: str | None) -> StoragePoint:
        """Workspace or shared folder ``name`` (default: the principal's first workspace)."""
        if not name:
            mine = self.workspaces_for(p)
            if not mine:
                raise PolicyError(404, f"{p.username} has no workspace")
            return mine[0]
        with self._lock:
            is_shared = name in self._shared
        if is_shared:
            return self.shared_folder(p, name).point
        return self.workspace(p, name)
