"""``sts_bridge.dask`` without a cluster: the worker-side source, the refresh timing, pickles.

The behaviour on real Dask processes is in tests/integration/test_dask_sharing.py
(another basename: pytest imports both folders as top-level modules).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("distributed")

from sts_bridge.credentials.refreshing import S3Credentials
from sts_bridge.credentials.sources import resolve_workspace
from sts_bridge.dask import (
    SharedWorkspaceSource,
    WorkspaceGrant,
    WorkspaceSharingPlugin,
    share_lead,
    shared_source,
    stop_sharing_here,
    usable_margin,
)
from sts_bridge.errors import SharedCredentialsExpiredError

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
SECRET = "wJalrXUtnFEMI-secret-key-never-shown"
TOKEN = "FwoGZXIvYXdzEB-session-token-never-shown"


def creds(lifetime: float, *, issued: datetime = T0, key: str = "ASIAKEY1") -> S3Credentials:
    return S3Credentials(key, SECRET, TOKEN, issued + timedelta(seconds=lifetime), issued)


def grant(c: S3Credentials, name: str = "ws-unit") -> WorkspaceGrant:
    return WorkspaceGrant(
        name=name,
        bucket="b",
        prefix="p/",
        endpoint_url="http://127.0.0.1:1",
        region="r",
        addressing_style="path",
        verify=True,
        credentials=c,
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_source_serves_the_snapshot_until_the_margin_then_the_clear_error() -> None:
    clock = Clock()
    c = creds(5)
    source = SharedWorkspaceSource(grant(c), clock=clock)
    assert usable_margin(c) == pytest.approx(0.5)
    clock.now = T0 + timedelta(seconds=4.4)
    assert source.credentials() is c
    clock.now = T0 + timedelta(seconds=4.6)
    with pytest.raises(SharedCredentialsExpiredError) as info:
        source.credentials()
    assert "the credentials shared by the client expired" in str(info.value)
    assert info.value.hint and "share()" in info.value.hint
    assert SECRET not in str(info.value) and TOKEN not in str(info.value)


def test_source_takes_newer_snapshots_only_and_a_retired_one_revives() -> None:
    clock = Clock()
    old = creds(900, key="ASIAOLD")
    new = creds(900, issued=T0 + timedelta(seconds=60), key="ASIANEW")
    source = SharedWorkspaceSource(grant(new), clock=clock)
    source.update(grant(old))  # a late push of an older snapshot changes nothing
    assert source.credentials().access_key == "ASIANEW"
    source.retire()
    with pytest.raises(SharedCredentialsExpiredError, match="stopped sharing"):
        source.credentials()
    source.update(grant(old))  # shared again: whatever the client sends now
    assert source.credentials().access_key == "ASIAOLD"


def test_the_lead_is_the_advisory_window_for_15_minutes_and_half_for_short_credentials() -> None:
    assert share_lead(creds(900)) == pytest.approx(120)
    assert share_lead(creds(5)) == pytest.approx(2.5)
    assert share_lead(creds(60)) == pytest.approx(30)
    assert share_lead(S3Credentials("k", "s")) == pytest.approx(120)  # static keys: no lifetime


def test_what_crosses_the_wire_is_the_grant_and_reprs_hide_the_secrets() -> None:
    plugin = WorkspaceSharingPlugin(grant(creds(900)))
    data = pickle.dumps(plugin)
    back = pickle.loads(data)  # noqa: S301 (our own bytes)
    assert back.grant == plugin.grant
    for shown in (repr(plugin), repr(plugin.grant), repr(SharedWorkspaceSource(plugin.grant))):
        assert SECRET not in shown and TOKEN not in shown


@pytest.fixture
def ws_plugin_unshared_afterwards() -> Iterator[None]:
    """The test shares "ws-plugin" in its own process (as a worker would); it is
    no longer shared when the test ends, however it ends."""
    yield
    stop_sharing_here("ws-plugin")


@pytest.mark.usefixtures("ws_plugin_unshared_afterwards")
def test_plugin_setup_registers_one_source_per_name_and_stop_retires_it() -> None:
    first = WorkspaceSharingPlugin(grant(creds(900, key="ASIAONE"), name="ws-plugin"))
    second = WorkspaceSharingPlugin(
        grant(creds(900, issued=T0 + timedelta(seconds=60), key="ASIATWO"), name="ws-plugin")
    )
    first.setup(worker=None)
    source = shared_source("ws-plugin")
    assert source is not None and resolve_workspace("ws-plugin") is source
    second.setup(worker=None)  # a refresh: the same object, the new snapshot
    assert shared_source("ws-plugin") is source and source.grant.credentials.access_key == "ASIATWO"
    assert stop_sharing_here("ws-plugin")
    assert shared_source("ws-plugin") is None
    assert not stop_sharing_here("ws-plugin")
    first.setup(worker=None)  # shared again: the object filesystems cached comes back
    assert shared_source("ws-plugin") is source
    assert stop_sharing_here("ws-plugin")
