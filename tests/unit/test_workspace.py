"""Client + Workspace over a fake TerrapiApi: discovery, defaults, cache, contract."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from sts_bridge.client import Client, choose_default_workspace
from sts_bridge.config import Settings
from sts_bridge.errors import (
    NotFoundError,
    PermissionDeniedError,
    WorkspaceError,
    WorkspaceNotFoundError,
)
from sts_bridge.workspace import Workspace


def storage(name: str, bucket: str = "gep-alice", prefix: str = "") -> dict[str, Any]:
    return {
        "storage_type": "s3",
        "type": "urn:resource:storage:workspace",
        "resource_uris": [f"s3://{bucket}/{prefix}"],
        "properties": {
            "bucket": [bucket],
            "key": [prefix],
            "service_url": ["http://127.0.0.1:7480/"],
            "storage_type": ["s3"],
        },
        "name": name,
    }


class FakeApi:
    api_url = "http://api.test/core"

    def __init__(self, *names: str, forbidden: tuple[str, ...] = ()) -> None:
        self.names = list(names)
        self.forbidden = set(forbidden)
        self.calls: list[str] = []

    def storage_sts(self, name: str) -> Any:
        self.calls.append(f"sts:{name}")
        if name in self.forbidden:
            raise PermissionDeniedError(f"you may not use workspace {name!r} (403)", status=403)
        if name not in self.names:
            raise NotFoundError(f"workspace {name!r} does not exist (404)", status=404)
        n = len(self.calls)
        creds = SimpleNamespace(
            access_key=f"AK{n}",
            secret_key="secret",
            use_token=True,
            token="session-token",
            expiration=datetime.now(timezone.utc) + timedelta(minutes=15),
        )
        return SimpleNamespace(storage=storage(name), credentials=creds)

    def workspace_names(self) -> list[str]:
        self.calls.append("list")
        return sorted(self.names)

    def user_info(self) -> Any:
        self.calls.append("user_info")
        return SimpleNamespace(name="alice", claims=[])


class FakeCredentials:
    def __init__(self, username: str | None = "alice") -> None:
        self.subject = "sub-alice"
        self.claims: dict[str, Any] = {"scope": "openid gep"}
        if username:
            self.claims["preferred_username"] = username
        self.cache = None

    def token(self) -> str:
        return "access-token"

    def invalidate(self) -> None:
        pass


def client(api: FakeApi, tmp_path: Any, workspace: str | None = None, **kw: Any) -> Client:
    settings = Settings(api_url=api.api_url, cache_dir=tmp_path, workspace=workspace)
    return Client(settings, credentials=FakeCredentials(), api=api, **kw)  # type: ignore[arg-type]


def test_workspace_by_name_and_contract_members(tmp_path: Any) -> None:
    api = FakeApi("gep-alice-private-workspace")
    ws = client(api, tmp_path).workspace("gep-alice-private-workspace")
    assert isinstance(ws, Workspace)
    assert (ws.name, ws.bucket, ws.prefix) == ("gep-alice-private-workspace", "gep-alice", "")
    assert (ws.endpoint_url, ws.region, ws.addressing_style) == (
        "http://127.0.0.1:7480",
        "us-east-1",
        "path",
    )
    assert ws.verify is True
    creds = ws.credentials()
    assert creds.access_key == "AK1"
    assert ws.credentials_for(60) is creds
    assert api.calls == ["sts:gep-alice-private-workspace"]  # one call: description + creds
    text = repr(ws)
    assert "secret" not in text and "session-token" not in text
    assert "secret" not in str(ws.describe())


def test_warm_second_client_makes_no_api_call(tmp_path: Any) -> None:
    api = FakeApi("gep-alice-private-workspace")
    client(api, tmp_path).workspace("gep-alice-private-workspace").credentials()
    api2 = FakeApi("gep-alice-private-workspace")
    ws = client(api2, tmp_path).workspace("gep-alice-private-workspace")
    assert ws.credentials().access_key == "AK1"
    assert ws.bucket == "gep-alice"
    assert api2.calls == []


def test_without_cache_nothing_is_written(tmp_path: Any) -> None:
    api = FakeApi("w")
    client(api, tmp_path, cache=False).workspace("w").credentials()
    assert not (tmp_path / "sts").exists()


def test_default_workspace_is_the_private_one(tmp_path: Any) -> None:
    api = FakeApi("gep-alice-private-workspace", "gep-team-a-workspace")
    assert client(api, tmp_path).workspace().name == "gep-alice-private-workspace"
    # remembered: a second run does not list again
    api2 = FakeApi("gep-alice-private-workspace", "gep-team-a-workspace")
    assert client(api2, tmp_path).workspace().name == "gep-alice-private-workspace"
    assert api2.calls == []


def test_terrapi_workspace_setting_wins(tmp_path: Any) -> None:
    api = FakeApi("gep-alice-private-workspace", "gep-team-a-workspace")
    ws = client(api, tmp_path, workspace="gep-team-a-workspace").workspace()
    assert ws.name == "gep-team-a-workspace" and "list" not in api.calls


def test_choose_default_rules() -> None:
    names = ["ellip-alice-private-workspace", "gep-alice-private-workspace", "gep-team-a"]
    assert choose_default_workspace(names, usernames=["alice"], platforms=["gep"]) == (
        "gep-alice-private-workspace"
    )
    assert choose_default_workspace(["only-one"], usernames=["bob"], platforms=[]) == "only-one"
    with pytest.raises(WorkspaceError, match="cannot choose a default workspace"):
        choose_default_workspace(["a", "b"], usernames=["bob"], platforms=[])
    with pytest.raises(WorkspaceError, match="no workspace"):
        choose_default_workspace([], usernames=["bob"], platforms=[])


def test_unknown_workspace_lists_names_and_suggests(tmp_path: Any) -> None:
    api = FakeApi("gep-alice-private-workspace", "gep-team-a-workspace")
    with pytest.raises(WorkspaceNotFoundError) as info:
        client(api, tmp_path).workspace("gep-alice-privat-workspace")
    err = info.value
    assert err.suggestion == "gep-alice-private-workspace"
    assert err.available == ["gep-alice-private-workspace", "gep-team-a-workspace"]
    assert "did you mean 'gep-alice-private-workspace'" in str(err)
    assert isinstance(err, NotFoundError)


def test_someone_elses_workspace_is_permission_denied(tmp_path: Any) -> None:
    api = FakeApi("gep-bob-private-workspace", forbidden=("gep-bob-private-workspace",))
    with pytest.raises(PermissionDeniedError, match="gep-bob-private-workspace"):
        client(api, tmp_path).workspace("gep-bob-private-workspace")


def test_workspace_objects_are_shared_per_client(tmp_path: Any) -> None:
    c = client(FakeApi("w"), tmp_path)
    assert c.workspace("w") is c.workspace("w")
