"""sts_bridge.aio on the local platform: every operation as a coroutine, and
cancellation that aborts a multipart upload before ``CancelledError`` arrives.

Waits are on events (the stream reached a point, the first part is stored),
never on wall-clock bounds.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sts_bridge import Client, TransferConfig
from sts_bridge.aio import AsyncClient, AsyncWorkspace

MiB = 1 << 20
SMALL_PARTS = TransferConfig(part_size=5 * MiB, multipart_threshold=5 * MiB, part_concurrency=2)


@pytest.fixture
def aws(platform_env: dict[str, str]) -> AsyncWorkspace:
    ws = Client.from_env().workspace().with_transfer_config(SMALL_PARTS)
    return AsyncWorkspace(ws)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def unfinished(platform: Any, ws: AsyncWorkspace, key: str) -> list[Any]:
    # the platform's admin keys: workspace credentials may not list uploads
    admin = platform.s3.client("s3")
    answer = admin.list_multipart_uploads(Bucket=ws.workspace.bucket, Prefix=ws.prefix + key)
    return list(answer.get("Uploads", []))


def test_every_operation(aws: AsyncWorkspace, tmp_path: Path) -> None:
    base = f"aio/{uuid.uuid4().hex}/"

    async def chunks() -> AsyncIterator[bytes]:
        for n in range(3):
            yield bytes([n]) * (4 * MiB)

    async def scenario() -> dict[str, Any]:
        source = tmp_path / "in.bin"
        source.write_bytes(b"x" * (6 * MiB))
        results = await asyncio.gather(
            aws.upload(source, base + "file.bin"),
            aws.upload(b"small", base + "bytes.txt"),
            aws.upload_stream(chunks(), base + "stream.bin"),
        )
        listed = [obj.key async for obj in aws.list(base)]
        paged = [obj.key async for obj in aws.list(base, page_size=1)]
        path = await aws.download(base + "stream.bin", tmp_path / "out.bin")
        link = await aws.presign(base + "bytes.txt", expires_in=600)
        fetched = await asyncio.to_thread(requests.get, link.url, timeout=10)
        links = await aws.presign_many([base + "bytes.txt", base + "file.bin"], expires_in=600)
        creds = await aws.credentials()
        deleted = await aws.delete(base, recursive=True)
        after = [obj.key async for obj in aws.list(base)]
        return locals()

    got = run(scenario())
    assert [r.size for r in got["results"]] == [6 * MiB, 5, 12 * MiB]
    names = ("file.bin", "bytes.txt", "stream.bin")
    assert sorted(got["listed"]) == sorted(base + k for k in names)
    assert sorted(got["paged"]) == sorted(got["listed"])
    assert got["path"].read_bytes() == b"".join(bytes([n]) * (4 * MiB) for n in range(3))
    assert got["fetched"].content == b"small"
    assert len(got["links"]) == 2
    assert got["creds"].expiry is not None
    assert got["deleted"] == 3 and got["after"] == []


def test_the_loop_runs_while_a_transfer_is_in_flight(aws: AsyncWorkspace) -> None:
    """An upload and a stream upload each hold their transfer at its first part
    until a callback of the event loop has run: a transfer that ran on the loop
    (or held it) would never see the callback, and the test would fail."""
    key = f"aio/{uuid.uuid4().hex}/"

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        held = {"upload": asyncio.Event(), "stream": asyncio.Event()}
        loop_ran = {name: threading.Event() for name in held}

        def holding(name: str) -> Any:
            def progress(done: int, total: int | None) -> None:
                if not loop_ran[name].is_set():
                    loop.call_soon_threadsafe(held[name].set)
                    # A guard, not a timing: it only ends a test that would hang.
                    assert loop_ran[name].wait(60), "the loop never ran during the transfer"

            return progress

        async def chunks() -> AsyncIterator[bytes]:
            for n in range(3):
                yield bytes([n]) * (3 * MiB)

        uploads = [
            asyncio.create_task(
                aws.upload(b"u" * (6 * MiB), key + "upload", progress=holding("upload"))
            ),
            asyncio.create_task(
                aws.upload_stream(chunks(), key + "stream", progress=holding("stream"))
            ),
        ]
        for name, event in held.items():
            await event.wait()  # the transfer is in flight, held in its worker
            ticks: list[float] = []
            loop.call_soon(ticks.append, loop.time())  # a plain loop callback
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert ticks, "the loop callback did not run"
            loop_ran[name].set()
        sizes = [result.size for result in await asyncio.gather(*uploads)]
        await aws.delete(key, recursive=True)
        return sizes

    assert run(scenario()) == [6 * MiB, 9 * MiB]


def test_an_async_client(platform_env: dict[str, str]) -> None:
    async def scenario() -> tuple[list[str], str]:
        client = AsyncClient(Client.from_env())
        ws = await client.workspace()
        return await client.workspaces(), ws.name

    names, name = run(scenario())
    assert name in names


def test_cancelling_a_stream_upload_aborts_its_multipart_upload(
    local_platform: Any, aws: AsyncWorkspace
) -> None:
    key = f"aio/{uuid.uuid4().hex}/cancelled.bin"

    async def scenario() -> None:
        third_part_read = asyncio.Event()
        never = asyncio.Event()

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"p" * (5 * MiB)
            third_part_read.set()  # the multipart upload exists, parts are in flight
            await never.wait()  # a caller that stops sending
            yield b"never"

        task = asyncio.create_task(aws.upload_stream(chunks(), key))
        await third_part_read.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    # the abort happened before CancelledError reached us: no upload, no object
    assert unfinished(local_platform, aws, key) == []
    assert listed(aws, key) == []


def test_cancelling_a_file_upload_aborts_its_multipart_upload(
    local_platform: Any, aws: AsyncWorkspace, tmp_path: Path
) -> None:
    key = f"aio/{uuid.uuid4().hex}/cancelled-file.bin"
    source = tmp_path / "big.bin"
    source.write_bytes(b"f" * (40 * MiB))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        first_part = asyncio.Event()
        seen = threading.Event()

        def progress(done: int, total: int | None) -> None:
            if not seen.is_set():
                seen.set()
                loop.call_soon_threadsafe(first_part.set)

        task = asyncio.create_task(aws.upload(source, key, progress=progress))
        await first_part.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert unfinished(local_platform, aws, key) == []
    assert listed(aws, key) == []


def listed(ws: AsyncWorkspace, prefix: str) -> list[str]:
    async def collect() -> list[str]:
        return [obj.key async for obj in ws.list(prefix)]

    return list(run(collect()))
