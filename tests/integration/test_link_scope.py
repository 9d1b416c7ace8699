"""A link grants its one object and one method; workspace credentials never
publish (issue 20, item 1), on the local platform's radosgw.

radosgw 16 accepts unsigned ``x-amz-*`` headers on a presigned request, so
each header a link holder could add is sent here as raw bytes next to the
link (urllib3, no SDK in between), and the store is then asked, with the
workspace's credentials (radosgw's bucket owner cannot read objects written
by STS sessions) and anonymously, what the request did. Why the platform
refuses them where it does: ``devstack/s3.py``'s module docstring.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

import sts_bridge

pytestmark = [
    pytest.mark.integration,
    pytest.mark.requires_radosgw("presigned URLs and policy conditions"),
]

ALL_USERS = 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'
SECRET = b"private workspace data"
UPLOADED = b"the bytes the link holder uploads"

#: every header a link holder might add to a presigned PUT
ADDED_HEADERS: dict[str, dict[str, str]] = {
    "x-amz-copy-source": {"x-amz-copy-source": "{secret}"},
    "x-amz-copy-source+x-amz-acl": {"x-amz-copy-source": "{secret}", "x-amz-acl": "public-read"},
    "x-amz-copy-source+x-amz-metadata-directive": {
        "x-amz-copy-source": "{secret}",
        "x-amz-metadata-directive": "REPLACE",
    },
    "x-amz-acl:public-read": {"x-amz-acl": "public-read"},
    "x-amz-acl:public-read-write": {"x-amz-acl": "public-read-write"},
    "x-amz-acl:authenticated-read": {"x-amz-acl": "authenticated-read"},
    "x-amz-grant-read": {"x-amz-grant-read": ALL_USERS},
    "x-amz-grant-write": {"x-amz-grant-write": ALL_USERS},
    "x-amz-grant-read-acp": {"x-amz-grant-read-acp": ALL_USERS},
    "x-amz-grant-write-acp": {"x-amz-grant-write-acp": ALL_USERS},
    "x-amz-grant-full-control": {"x-amz-grant-full-control": ALL_USERS},
    "x-amz-metadata-directive": {"x-amz-metadata-directive": "REPLACE"},
    "x-amz-meta-*": {"x-amz-meta-planted": "by-the-link-holder"},
}


@pytest.fixture
def ws(platform_env: dict[str, str]) -> Any:
    return sts_bridge.Client.from_env().workspace()


@pytest.fixture
def folder(ws: Any) -> Iterator[str]:
    base = f"link-scope/{uuid.uuid4().hex}/"
    ws.s3_client().put_object(Bucket=ws.bucket, Key=ws.prefix + base + "secret.txt", Body=SECRET)
    yield base
    ws.delete(base, recursive=True)


def _anonymous_get(local_platform: Any, bucket: str, key: str) -> int:
    url = f"{local_platform.s3_endpoint}/{bucket}/{key}"
    return int(urllib3.request("GET", url, retries=False).status)


def _stored(ws: Any, key: str) -> tuple[bytes, dict[str, str]] | None:
    from botocore.exceptions import ClientError

    try:
        got = ws.s3_client().get_object(Bucket=ws.bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    return got["Body"].read(), dict(got.get("Metadata") or {})


@pytest.mark.parametrize("case", sorted(ADDED_HEADERS))
def test_a_put_link_writes_only_its_key_with_the_uploaded_bytes(
    local_platform: Any, ws: Any, folder: str, case: str
) -> None:
    link_key = folder + "upload-here.txt"
    secret_key = ws.prefix + folder + "secret.txt"
    link = ws.presign(link_key, "PUT", expires_in=600)
    headers = {
        name: value.format(secret=f"/{ws.bucket}/{secret_key}")
        for name, value in ADDED_HEADERS[case].items()
    }
    resp = urllib3.request("PUT", link.url, body=UPLOADED, headers=headers, retries=False)

    stored = _stored(ws, ws.prefix + link_key)
    if resp.status == 403:
        assert stored is None, f"{case}: refused, yet the link's key was written"
    else:
        assert resp.status == 200, (case, resp.status, resp.data[:200])
        assert stored is not None
        assert stored[0] == UPLOADED, f"{case}: the link's key holds other bytes"
    # nothing became readable without credentials, the link's key least of all
    assert _anonymous_get(local_platform, ws.bucket, ws.prefix + link_key) == 403
    assert _anonymous_get(local_platform, ws.bucket, secret_key) == 403
    assert _stored(ws, secret_key) == (SECRET, {})
    # and nothing else appeared in the folder
    keys = sorted(o.key for o in ws.list(folder))
    assert set(keys) <= {folder + "secret.txt", link_key}


def test_a_put_link_still_uploads(local_platform: Any, ws: Any, folder: str) -> None:
    link = ws.presign(folder + "plain.txt", "PUT", expires_in=600)
    resp = urllib3.request("PUT", link.url, body=UPLOADED, retries=False)
    assert resp.status == 200, resp.data[:200]
    assert _stored(ws, ws.prefix + folder + "plain.txt") == (UPLOADED, {})


PUBLISHING_CALLS: dict[str, dict[str, Any]] = {
    "put_object ACL=public-read": {"ACL": "public-read"},
    "put_object ACL=public-read-write": {"ACL": "public-read-write"},
    "put_object ACL=authenticated-read": {"ACL": "authenticated-read"},
    "put_object GrantRead=AllUsers": {"GrantRead": ALL_USERS},
    "put_object GrantFullControl=AllUsers": {"GrantFullControl": ALL_USERS},
    "copy_object ACL=public-read": {"ACL": "public-read", "copy": True},
    "copy_object GrantRead=AllUsers": {"GrantRead": ALL_USERS, "copy": True},
}


@pytest.mark.parametrize("case", sorted(PUBLISHING_CALLS))
def test_workspace_credentials_cannot_publish(
    local_platform: Any, ws: Any, folder: str, case: str
) -> None:
    from botocore.exceptions import ClientError

    s3 = ws.s3_client()
    kwargs = dict(PUBLISHING_CALLS[case])
    key = ws.prefix + folder + "published.txt"
    with pytest.raises(ClientError) as info:
        if kwargs.pop("copy", False):
            source = {"Bucket": ws.bucket, "Key": ws.prefix + folder + "secret.txt"}
            s3.copy_object(Bucket=ws.bucket, Key=key, CopySource=source, **kwargs)
        else:
            s3.put_object(Bucket=ws.bucket, Key=key, Body=SECRET, **kwargs)
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert _stored(ws, key) is None
    # the ACL itself is not the workspace's to change either
    with pytest.raises(ClientError):
        s3.put_object_acl(
            Bucket=ws.bucket, Key=ws.prefix + folder + "secret.txt", ACL="public-read"
        )
    assert _anonymous_get(local_platform, ws.bucket, ws.prefix + folder + "secret.txt") == 403


def test_a_public_acl_on_a_multipart_upload_is_ignored(
    local_platform: Any, ws: Any, folder: str
) -> None:
    """CreateMultipartUpload carries no ACL condition key in radosgw 16: the
    ACL is stored, and the buckets' public access block makes it ineffective."""
    s3 = ws.s3_client()
    key = ws.prefix + folder + "multipart.txt"
    upload = s3.create_multipart_upload(Bucket=ws.bucket, Key=key, ACL="public-read")["UploadId"]
    etag = s3.upload_part(Bucket=ws.bucket, Key=key, UploadId=upload, PartNumber=1, Body=SECRET)
    s3.complete_multipart_upload(
        Bucket=ws.bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": etag["ETag"], "PartNumber": 1}]},
    )
    assert _anonymous_get(local_platform, ws.bucket, key) == 403


def test_buckets_abort_incomplete_multipart_uploads_and_ignore_public_acls(
    local_platform: Any,
) -> None:
    from sts_bridge_devstack.s3 import ABORT_INCOMPLETE_UPLOADS_DAYS

    admin = local_platform.s3.client("s3")
    buckets = local_platform._buckets()
    assert buckets
    for bucket in buckets:
        rules = admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        aborts = [
            r
            for r in rules
            if r["Status"] == "Enabled"
            and r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
            == ABORT_INCOMPLETE_UPLOADS_DAYS
            and (r.get("Prefix", r.get("Filter", {}).get("Prefix")) == "")
        ]
        assert aborts, (bucket, rules)
        block = admin.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert block["IgnorePublicAcls"] is True


def test_a_copy_inside_the_workspace_goes_through_the_client(ws: Any, folder: str) -> None:
    """The role policy refuses server-side copies; workspace:// copies anyway."""
    import fsspec

    fs = fsspec.filesystem("workspace")
    source = f"workspace://{ws.name}/{folder}secret.txt"
    fs.cp(source, f"workspace://{ws.name}/{folder}copy.txt")
    assert fs.cat_file(f"workspace://{ws.name}/{folder}copy.txt") == SECRET
