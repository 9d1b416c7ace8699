"""StoragePoint.from_api: the seed's shape, list properties, refusals."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sts_bridge.errors import WorkspaceError
from sts_bridge.terrapi.storage_point import StoragePoint, normalise_prefix

SEED: dict[str, Any] = {
    "storage_type": "s3",
    "end_point": "https://s3.gep.terradue.com/",
    "owner": "ellip-bios-api",
    "type": "urn:resource:storage:workspace",
    "resource_uris": ["s3://gep-processing-results/a2s/"],
    "scopes": ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject"],
    "properties": {
        "bucket": ["gep-processing-results"],
        "storage_type": ["s3"],
        "service_url": ["https://s3.gep.terradue.com/"],
        "platform_id": ["gep"],
        "storage_url": ["s3://gep-processing-results/a2s/"],
        "key": ["a2s/"],
        "resource_server_id": ["ellip-bios-api"],
    },
    "platform_id": None,
    "name": "gep-processing-results-a2s-service-workspace",
}


def seed(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SEED)
    props = changes.pop("properties", None)
    if props is not None:
        data["properties"].update(props)
        data["properties"] = {k: v for k, v in data["properties"].items() if v is not None}
    data.update(changes)
    return data


def test_seed_shape() -> None:
    sp = StoragePoint.from_api(SEED)
    assert sp.name == "gep-processing-results-a2s-service-workspace"
    assert sp.bucket == "gep-processing-results"
    assert sp.prefix == "a2s/"
    assert sp.endpoint_url == "https://s3.gep.terradue.com"
    assert sp.region == "us-east-1"
    assert sp.addressing_style == "path"
    assert sp.platform_id == "gep"
    assert "s3:PutObject" in sp.scopes
    assert sp.url == "s3://gep-processing-results/a2s/"


def test_generated_model_is_accepted() -> None:
    from terrapi_client.models.i_workspace import IWorkspace

    sp = StoragePoint.from_api(IWorkspace.from_dict(SEED))
    assert (sp.bucket, sp.prefix) == ("gep-processing-results", "a2s/")


def test_region_property_and_end_point_fallback() -> None:
    sp = StoragePoint.from_api(seed(properties={"region": ["eu-central-1"], "service_url": None}))
    assert sp.region == "eu-central-1" and sp.endpoint_url == "https://s3.gep.terradue.com"


def test_aws_endpoint_is_virtual_hosted_with_its_region() -> None:
    sp = StoragePoint.from_api(
        seed(properties={"service_url": ["https://s3.eu-west-1.amazonaws.com/"]})
    )
    assert sp.addressing_style == "virtual" and sp.region == "eu-west-1"


def test_prefix_from_storage_url_when_no_key() -> None:
    sp = StoragePoint.from_api(seed(properties={"key": None, "bucket": None}))
    assert (sp.bucket, sp.prefix) == ("gep-processing-results", "a2s/")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("a2s", "a2s/"), ("/a/b//", "a/b/"), ("", ""), ("/", ""), (None, ""), ("a2s/", "a2s/")],
)
def test_normalise_prefix(raw: str | None, expected: str) -> None:
    assert normalise_prefix(raw) == expected


def test_scalar_property_values_are_tolerated() -> None:
    sp = StoragePoint.from_api(seed(properties={"bucket": "solo", "key": "x"}))
    assert (sp.bucket, sp.prefix) == ("solo", "x/")


def test_non_s3_is_refused_clearly() -> None:
    with pytest.raises(WorkspaceError, match="'ftp' storage point, not S3"):
        StoragePoint.from_api(seed(storage_type="ftp", properties={"storage_type": ["ftp"]}))


def test_missing_bucket_is_refused_clearly() -> None:
    data = seed(properties={"bucket": None, "storage_url": None}, resource_uris=[])
    with pytest.raises(WorkspaceError, match="has no bucket"):
        StoragePoint.from_api(data)


def test_round_trip() -> None:
    sp = StoragePoint.from_api(SEED)
    assert StoragePoint.from_dict(sp.to_dict()) == sp
    with pytest.raises(ValueError):
        StoragePoint.from_dict({"name": 1})
