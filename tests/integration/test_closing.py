"""Closing releases connection pools: ``Workspace.close()``, ``Client.close()``,
the async workspace, and the users a service's bounded cache drops.

Counted from this process's sockets (psutil): the TCP connections to the
store's port that the workspace opened are established after a listing and
gone after the close. The tests hold the workspace's S3 client, as its
users do, so that it is the close that closes them, not the garbage
collector. Nothing is timed.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import urlsplit

import psutil

from sts_bridge import Client, Workspace
from sts_bridge.aio import AsyncWorkspace
from sts_bridge.config import Settings
from sts_bridge.service import CallerVerifier
from sts_bridge.service.users import ServiceUsers


def open_to(port: int) -> set[tuple[str, int]]:
    """This process's established TCP connections to ``port`` (their local ends)."""
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }


def store_port(ws: Workspace) -> int:
    parts = urlsplit(ws.endpoint_url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def used(ws: Workspace) -> Any:
    """A listing and a delete: the workspace's S3 client (returned, to be held)
    keeps its connections."""
    base = f"closing/{uuid.uuid4().hex}/"
    ws.upload(b"x", base + "a")
    assert [o.key for o in ws.list(base)] == [base + "a"]
    assert ws.delete(base, recursive=True) == 1
    return ws.s3_client()


def connections_kept(ws: Workspace) -> tuple[int, Any, set[tuple[str, int]]]:
    """The store's port, the S3 client :func:`used` returns (to be held) and the
    connections to the store that using ``ws`` left open (there must be some)."""
    port = store_port(ws)
    before = open_to(port)
    held = used(ws)
    opened = open_to(port) - before
    assert opened, "the listing kept no connection open: nothing to check"
    return port, held, opened


def test_a_workspace_closes_its_connections(platform_env: dict[str, str]) -> None:
    ws = Client.from_env().workspace()
    port, held, opened = connections_kept(ws)
    ws.close()
    assert held is not ws.s3_client()
    assert not (open_to(port) & opened)
    ws.close()  # twice is fine
    used(ws)  # and it works again, on new connections


def test_a_workspace_as_a_context_manager(platform_env: dict[str, str]) -> None:
    with Client.from_env() as client:
        ws = client.workspace()
        port = store_port(ws)
        before = open_to(port)
        with ws as same:
            assert same is ws
            held = used(ws)
            opened = open_to(port) - before
            assert opened
        assert not (open_to(port) & opened)
        held = used(ws)  # reopened; the client's close below closes it again
        opened = open_to(port) - before
    assert not (open_to(port) & opened)
    assert held is not None


def test_an_async_workspace_closes_its_connections(platform_env: dict[str, str]) -> None:
    ws = Client.from_env().workspace()
    port = store_port(ws)
    before = open_to(port)

    held: list[Any] = []

    async def scenario() -> set[tuple[str, int]]:
        async with AsyncWorkspace(ws) as aws:
            base = f"closing/{uuid.uuid4().hex}/"
            await aws.upload(b"x", base + "a")
            assert [o.key async for o in aws.list(base)] == [base + "a"]
            await aws.delete(base, recursive=True)
            held.append(ws.s3_client())
            return open_to(port) - before

    opened = asyncio.run(scenario())
    assert opened
    assert not (open_to(port) & opened)


def test_a_service_closes_the_users_it_drops(local_platform: Any, tmp_path: Any) -> None:
    """A cache of one user: bob's arrival drops alice, and alice's connections close;
    the shared API pool stays open for bob."""
    audience = local_platform.exchange_audience
    verifier = CallerVerifier(local_platform.issuer, audience)
    alice, bob = (
        verifier.verify(local_platform.user_token(name, resource=audience))
        for name in ("alice", "bob")
    )
    settings = Settings(
        api_url=local_platform.api_url,
        issuer=local_platform.issuer,
        client_id=local_platform.exchange_client_id,
        client_secret=local_platform.exchange_client_secret,
        audience=local_platform.audience,
        scopes=("openid", "profile", "gep"),
        cache_dir=tmp_path / "cache",
    )
    users = ServiceUsers(settings, max_users=1)
    try:
        alice_ws = users.workspace(alice)
        port = store_port(alice_ws)
        before = open_to(port)
        held = [used(alice_ws)]
        alices = open_to(port) - before
        assert alices
        bob_ws = users.workspace(bob)  # alice dropped: the cache holds one user
        assert users.evictions == 1
        assert not (open_to(port) & alices)
        held.append(used(bob_ws))
        bobs = open_to(port) - before
        assert bobs
        assert users.forget(bob)
        assert not (open_to(port) & bobs)
    finally:
        users.close()


def test_refused_credentials_close_the_client_made_with_them(
    platform_env: dict[str, str],
) -> None:
    """The store refused the workspace's credentials: the S3 client signed with
    them is replaced, and its connections are closed then, not when collected."""
    ws = Client.from_env().workspace()
    port, held, opened = connections_kept(ws)
    refused = ws.credentials()
    renewed = ws.credentials_refused(refused)  # new ones from the reference API's STS
    assert renewed.access_key != refused.access_key
    assert held is not ws.s3_client()
    assert not (open_to(port) & opened)
    used(ws)  # the new client works, on new connections
    ws.close()
