"""The spec validates, and the generated client keeps the real TerrAPI's names
and survives what a newer server may send."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import terrapi_client
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from terrapi_client.models import (
    AuthResourceType,
    IWorkspace,
    ResourceStatusCode,
    SelfInfo,
    StorageType,
    StsStorage,
)

SPEC = Path(__file__).resolve().parents[2] / "openapi" / "terrapi.yaml"


def test_spec_is_valid_openapi() -> None:
    spec, _ = read_from_filename(str(SPEC))
    validate(spec)


def test_every_response_has_an_example() -> None:
    spec, _ = read_from_filename(str(SPEC))
    shared = spec["components"]["responses"]
    missing = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if "$ref" in response:
                    response = shared[response["$ref"].rsplit("/", 1)[1]]
                if "content" in response:
                    for media in response["content"].values():
                        if "example" not in media and "examples" not in media:
                            missing.append(f"{method.upper()} {path} {status}")
                elif not any("example" in h for h in response.get("headers", {}).values()):
                    missing.append(f"{method.upper()} {path} {status}")
    assert missing == []


def test_seed_notebook_names_resolve() -> None:
    # The calls of ../shared/seeds/001 (Terradue's notebook), as written there.
    configuration = terrapi_client.Configuration(host="http://127.0.0.1:1/core")
    configuration.access_token = "not-a-real-token"
    configuration.verify_ssl = True
    with terrapi_client.ApiClient(configuration) as api_client:
        assert callable(terrapi_client.UserApi(api_client).v2_user_info_get)
        storage = terrapi_client.StorageApi(api_client)
        for name in ("get_workspaces", "get_workspace_by_id", "get_storage_sts", "download"):
            assert callable(getattr(storage, name))
    from terrapi_client.exceptions import ApiException as CaughtBySdk
    from terrapi_client.rest import ApiException

    # the notebook's name is the class sts_bridge.terrapi.api catches
    assert ApiException is CaughtBySdk
    assert AuthResourceType.URN_COLON_RESOURCE_COLON_STORAGE_COLON_WORKSPACE.value == (
        "urn:resource:storage:workspace"
    )
    assert StorageType.S3.value == "s3"
    assert ResourceStatusCode.OK.value == "OK"
    info = SelfInfo.from_dict(
        {"type": "urn:resource:storage:workspace", "name": "w", "self": "https://x/w"}
    )
    assert info.var_self == "https://x/w"


SEED_STS = {
    "storage": {
        "storage_type": "s3",
        "end_point": "https://s3.gep.example/",
        "owner": "ellip-bios-api",
        "type": "urn:resource:storage:workspace",
        "status": {"status_code": "OK", "message": "From Authorization Resource"},
        "resource_uris": ["s3://gep-processing-results/a2s/"],
        "scopes": ["s3:GetObject", "s3:PutObject"],
        "properties": {"bucket": ["gep-processing-results"], "key": ["a2s/"]},
        "name": "gep-processing-results-a2s-service-workspace",
    },
    "credentials": {
        "access_key": "AK",
        "secret_key": "SK",
        "use_token": True,
        "token": "T",
        "expiration": "2026-11-26T12:15:00Z",
    },
}


def test_seed_shaped_sts_response_parses() -> None:
    sts = StsStorage.from_json(json.dumps(SEED_STS))
    assert sts.storage.properties["bucket"] == ["gep-processing-results"]
    assert sts.credentials.expiration is not None
    assert sts.credentials.expiration.tzinfo is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [("storage_type", "azure-blob"), ("type", "urn:resource:storage:bucket")],
)
def test_unknown_enum_values_are_kept(field: str, value: str) -> None:
    doc = json.loads(json.dumps(SEED_STS["storage"]))
    doc[field] = value
    ws = IWorkspace.from_json(json.dumps(doc))
    assert getattr(ws, field).value == value
    assert ws.to_dict()[field] == value  # round-trips
    assert json.loads(ws.to_json())[field] == value


def test_unknown_status_code_and_extra_members_are_kept() -> None:
    doc = json.loads(json.dumps(SEED_STS))
    doc["storage"]["status"]["status_code"] = "MIGRATING"
    doc["storage"]["quota_bytes"] = 10**12
    doc["credentials"]["region_hint"] = "eu-central-1"
    sts = StsStorage.from_json(json.dumps(doc))
    assert sts.storage.status is not None
    assert sts.storage.status.status_code.value == "MIGRATING"
    assert sts.storage.additional_properties == {"quota_bytes": 10**12}
    assert sts.credentials.additional_properties == {"region_hint": "eu-central-1"}
    assert json.loads(sts.to_json())["storage"]["quota_bytes"] == 10**12


def test_one_unknown_item_does_not_fail_a_list() -> None:
    items = [
        {"type": "urn:resource:storage:workspace", "name": "a"},
        {"type": "urn:resource:compute:cluster", "name": "b"},
    ]
    parsed = [SelfInfo.from_dict(d) for d in items]
    assert [p.name for p in parsed] == ["a", "b"]
    assert parsed[1].type.value == "urn:resource:compute:cluster"
