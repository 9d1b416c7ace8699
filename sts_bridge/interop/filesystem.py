"""``workspace://<workspace>/<key>``: a workspace as an fsspec filesystem.

Registered under the protocol ``workspace`` (the ``fsspec.specs`` entry
point), so fsspec, xarray/zarr, pandas, pyarrow (through fsspec), Dask and
universal_pathlib take the URLs unchanged.

Paths are ``<workspace>/<key>``, the key relative to the workspace prefix
and confined exactly as every other key (:mod:`sts_bridge.s3.keys`): a path
with ``..``, ``.`` or an empty segment is refused with
:class:`~sts_bridge.errors.InvalidKeyError` before any request.

Each workspace is served by two engines this filesystem owns (composition:
they do the S3 work, this class translates paths and confines keys):

- bytes in one request (``cat_file``, ``pipe_file`` below 100 MiB: Zarr
  chunks and small objects) through :class:`~sts_bridge.s3.objects.ObjectIO`,
  the SDK's own signed GET / PUT, a third to a half of aiobotocore's CPU per
  request (``docs/datastack.md``);
- local files (``put_file``) and big data (``pipe_file`` from 100 MiB)
  through the SDK's upload engine (:class:`~sts_bridge.s3.upload.UploadEngine`),
  whose multipart uploads are recorded before their first part
  (:mod:`sts_bridge.s3.upload_records`) and whose file uploads resume;
- everything else (listing, ``info``, ``open()``, deletes, and writes with
  boto's own arguments such as ``ACL``) through an ``s3fs.S3FileSystem``
  over an aiobotocore session whose only credential provider asks the
  workspace's :class:`~sts_bridge.credentials.sources.WorkspaceSource` for
  a snapshot; its multipart uploads are recorded too.

Both ask the same source for every request, so credentials refresh for as
long as the filesystem lives, through the same refreshing credentials as the
rest of the SDK (one STS exchange at a time, from threads and from asyncio
alike).

A filesystem pickles by reference: the TerrAPI URL and its options, never
a source, credentials or tokens. Unpickled, it finds each workspace again
with :func:`~sts_bridge.credentials.sources.resolve_workspace`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import io
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from fsspec.asyn import AsyncFileSystem, sync_wrapper
from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from s3fs import S3FileSystem

from sts_bridge._redact import guard_library_loggers
from sts_bridge.config import trusted_cas
from sts_bridge.credentials.sources import (
    WorkspaceSource,
    resolve_workspace,
    workspace_names,
)
from sts_bridge.errors import (
    ConfigurationError,
    PermissionDeniedError,
    StorageError,
    TransferError,
    WorkspaceNotFoundError,
)
from sts_bridge.interop.aiobotocore_session import refreshing_session
from sts_bridge.interop.workspace_file import WorkspaceFile, claim_key, storage_os_error
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.digests import choose_part_size
from sts_bridge.s3.keys import relative_key, workspace_key, workspace_prefix
from sts_bridge.s3.objects import ObjectIO, needs_size
from sts_bridge.s3.transfer_types import Progress
from sts_bridge.s3.upload import UploadEngine, UploadSpec, guess_content_type
from sts_bridge.s3.upload_records import recorded_upload, remove_record
from sts_bridge.urls import SCHEME, parse_workspace_url

__all__ = ["WorkspaceFileSystem"]

_S3_PREFIX = "s3://"
#: DELETEs in flight when a server refuses bulk deletes.
_DELETE_CONCURRENCY = 16
#: Seconds to wait for an HTTP session to close on its event loop.
_CLOSE_TIMEOUT = 2.0
#: Whole-object and ranged reads and single PUTs in flight per workspace (see ObjectIO).
_OBJECT_CONCURRENCY = 16
#: ``pipe_file`` stores smaller data in one PUT, as s3fs does (2 x its 50 MiB chunk).
_SINGLE_PUT_BELOW = 100 * 2**20
#: Part size of files written through ``open()`` (s3fs's block size).
_BLOCK_SIZE = 50 * 2**20
#: Readahead of files read through ``open()``: parquet readers (duckdb, pyarrow)
#: jump between column chunks, and each read fetches its size plus one block;
#: with s3fs's 50 MiB duckdb fetched 7x the file (bench/datastack.py).
_READ_BLOCK_SIZE = 4 * 2**20
#: The ``put_file`` / ``pipe_file`` arguments the upload engine takes; others
#: (``ACL``, ``StorageClass``, ...) are boto's, and s3fs builds their requests.
_ENGINE_ARGUMENTS = frozenset({"ContentType", "Metadata", "chunksize", "max_concurrency"})


class WorkspaceFileSystem(AsyncFileSystem):  # type: ignore[misc]
    """fsspec filesystem for ``workspace://<workspace>/<key>`` URLs (async-capable).

    :param source: a workspace (a :class:`~sts_bridge.Workspace` or any
        :class:`WorkspaceSource`) this filesystem uses for ``source.name``;
        other names are found with ``resolve_workspace``.
    :param api_url: the TerrAPI URL that ``resolve_workspace`` uses instead
        of ``TERRAPI_URL`` (default: the source's, else the configuration chain).
    :param s3_options: extra keyword arguments of ``s3fs.S3FileSystem``
        (``default_block_size``, ``max_concurrency``, ...); credentials,
        endpoint and session are set here and cannot be given.
    :param kwargs: fsspec options (``asynchronous``, ``loop``, ``skip_instance_cache``, ...).

    Raises :class:`~sts_bridge.errors.InvalidKeyError` for an unsafe path
    and the errors of ``resolve_workspace`` for a workspace it cannot find;
    S3 errors arrive as the built-ins fsspec users catch
    (``FileNotFoundError``, ``PermissionError``, ``OSError``); credentials
    that cannot be had as the SDK's :class:`~sts_bridge.errors.CredentialsError`.
    """

    protocol = (SCHEME,)
    root_marker = ""

    def __init__(
        self,
        source: WorkspaceSource | None = None,
        *,
        api_url: str | None = None,
        s3_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        forbidden = {"key", "secret", "token", "session", "endpoint_url", "anon", "asynchronous"}
        given = forbidden & set(s3_options or {})
        if given:
            raise TypeError(f"s3_options cannot set {', '.join(sorted(given))}")
        self._sources: dict[str, WorkspaceSource] = {}
        if source is not None:
            self._sources[source.name] = source
            api_url = api_url or getattr(source, "api_url", None)
        self.api_url = api_url
        self._s3_options = dict(s3_options or {})
        self._lock = threading.Lock()
        self._stores: dict[str, S3FileSystem] = {}
        self._objects: dict[str, ObjectIO] = {}
        self._uploads: dict[str, UploadEngine] = {}
        self._bulk_refused: set[str] = set()
        self._copy_refused: set[str] = set()

    def __reduce__(self) -> tuple[Any, ...]:
        # By reference: names and the platform URL; sources, sessions and
        # credentials stay behind.
        return (_rebuild, (self.api_url, self._s3_options, self.asynchronous))

    def __repr__(self) -> str:
        return (
            f"WorkspaceFileSystem(workspaces={sorted(self._sources)!r}, api_url={self.api_url!r})"
        )

    # -- paths -----------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        prefix = SCHEME + "://"
        if path.startswith(prefix):
            path = path[len(prefix) :]
        # A folder may be written with a trailing '/'; empty segments inside stay
        # and are refused by the key checks.
        if path.endswith("/") and not path.endswith("//"):
            path = path[:-1]
        return path

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        return {}

    def _split(self, path: str) -> tuple[str, str]:
        """``(workspace, relative key or "")`` of a stripped or full path (keys checked)."""
        stripped = self._strip_protocol(path)
        url = parse_workspace_url(stripped, allow_bare=True)
        return url.workspace, url.key

    def source(self, name: str) -> WorkspaceSource:
        """The source serving workspace ``name`` (resolved on first use).

        Raises ``FileNotFoundError`` for a workspace the platform does not
        know (or does not show this principal), ``PermissionError`` for one
        it refuses, and the other errors of ``resolve_workspace``.
        """
        with self._lock:
            known = self._sources.get(name)
        if known is not None:
            return known
        try:
            found = resolve_workspace(name, api_url=self.api_url)
        except WorkspaceNotFoundError as exc:
            raise FileNotFoundError(errno.ENOENT, str(exc), name) from exc
        except PermissionDeniedError as exc:
            raise PermissionError(errno.EACCES, str(exc), name) from exc
        with self._lock:
            return self._sources.setdefault(name, found)

    def _object(self, path: str) -> tuple[S3FileSystem, str, str]:
        """``(store, s3 path "bucket/full key", workspace)`` of an object path."""
        name, key = self._split(path)
        source = self.source(name)
        full = workspace_key(source.prefix, key)
        return self._store(source), f"{source.bucket}/{full}", name

    def _folder(self, path: str) -> tuple[S3FileSystem, str, str]:
        """Like :meth:`_object` for a folder (the workspace root included)."""
        name, key = self._split(path)
        source = self.source(name)
        full = workspace_prefix(source.prefix, key).rstrip("/")
        s3_path = f"{source.bucket}/{full}" if full else source.bucket
        return self._store(source), s3_path, name

    def _back(self, name: str, s3_path: str) -> str:
        """The ``<workspace>/<key>`` path of an s3fs path inside workspace ``name``."""
        source = self.source(name)
        bucket_part = source.bucket + "/"
        s3_path = s3_path.removeprefix(_S3_PREFIX)
        if s3_path == source.bucket or s3_path + "/" == bucket_part + source.prefix:
            return name
        key = relative_key(source.prefix, s3_path[len(bucket_part) :])
        return f"{name}/{key}".rstrip("/")

    def _back_info(self, name: str, info: dict[str, Any]) -> dict[str, Any]:
        out = dict(info)
        out["name"] = self._back(name, info["name"])
        if "Key" in out:
            out["Key"] = out["name"]
        return out

    def close_connections(self) -> None:
        """Close the connections of every workspace this filesystem has used (its
        s3fs sessions and its own object reads and writes); used again, it
        connects anew."""
        with self._lock:
            stores, self._stores = self._stores, {}
            objects, self._objects = self._objects, {}
        for object_io in objects.values():
            object_io.close()
        for store in stores.values():
            _close_store(store, getattr(store, "_loop", None))

    # -- the s3fs instance of each workspace --------------------------------

    def _store(self, source: WorkspaceSource) -> S3FileSystem:
        return self._connections(source)[0]

    def _objects_of(self, name: str) -> ObjectIO:
        """Workspace ``name``'s object reads and writes, made again when
        :meth:`close_connections` dropped them since its store was looked up."""
        return self._connections(self.source(name))[1]

    def _connections(self, source: WorkspaceSource) -> tuple[S3FileSystem, ObjectIO]:
        # Both are looked up (or made) under the lock, together: close_connections
        # may empty the mappings between one call's steps, on another thread.
        with self._lock:
            store = self._stores.get(source.name)
            if store is None:
                store = self._stores[source.name] = self._new_store(source)
                objects = self._objects[source.name] = ObjectIO(
                    source, concurrency=_OBJECT_CONCURRENCY
                )
                weakref.finalize(self, objects.close)
            return store, self._objects[source.name]

    def _new_store(self, source: WorkspaceSource) -> S3FileSystem:
        store = S3FileSystem(
            session=refreshing_session(source),
            endpoint_url=source.endpoint_url,
            client_kwargs={"region_name": source.region, "verify": trusted_cas(source.verify)},
            config_kwargs={
                "s3": {"addressing_style": source.addressing_style},
                "signature_version": "s3v4",
                # radosgw refuses the CRC trailers aiobotocore sends by default.
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            },
            asynchronous=self.asynchronous,
            loop=self._loop,
            # One s3fs per workspace per filesystem: this object is the cache.
            skip_instance_cache=True,
            **self._s3_options,
        )
        # aiobotocore's DEBUG records carry the signed headers, like botocore's.
        guard_library_loggers()
        if self.asynchronous:
            # s3fs leaves closing an asynchronous instance to its owner: close its
            # HTTP session on the loop that uses it when this filesystem goes away
            # (at the latest at interpreter exit), so aiohttp reports no leak.
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            weakref.finalize(self, _close_store, store, loop)
        return store

    # -- the fsspec primitives, delegated ------------------------------------

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        if self._strip_protocol(path) == "":
            return _directory("")
        name, key = self._split(path)
        if not key:
            self.source(name)  # FileNotFoundError for a workspace that does not exist
            return _directory(name)
        store, s3_path, name = self._object(path)
        with _in_workspace_terms(path):
            info = await store._info(s3_path, **kwargs)
        return self._back_info(name, info)

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        if self._strip_protocol(path) == "":
            names = self.workspace_names()
            return [_directory(n) for n in names] if detail else names
        store, s3_path, name = self._folder(path)
        try:
            with _in_workspace_terms(path):
                found = await store._ls(s3_path, detail=detail, **kwargs)
        except FileNotFoundError:
            if self._split(path)[1]:
                raise
            found = []  # an empty workspace, like an empty bucket
        if detail:
            return [self._back_info(name, info) for info in found]
        return [self._back(name, p) for p in found]

    def workspace_names(self) -> list[str]:
        """The workspaces ``ls("")`` shows: those this principal may use (the
        configuration chain's answer) and those registered in this process
        (a Dask worker's), plus those this filesystem was given; sorted."""
        with self._lock:
            given = set(self._sources)
        try:
            names = set(workspace_names(api_url=self.api_url))
        except ConfigurationError:
            if not given:
                raise
            names = set()
        return sorted(names | given)

    def modified(self, path: str) -> Any:
        """When the object was last written (``LastModified``, tz-aware UTC).

        Raises ``IsADirectoryError`` for a folder or a workspace, like s3fs.
        """
        info = self.info(path)
        if "LastModified" not in info:
            raise IsADirectoryError(errno.EISDIR, "a folder has no modification time", path)
        return info["LastModified"]

    def created(self, path: str) -> Any:
        """When the object was created: an S3 object is written whole, so its
        ``LastModified``."""
        return self.modified(path)

    async def _find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool | None = None,
        detail: bool = False,
        prefix: str = "",
        **kwargs: Any,
    ) -> Any:
        store, s3_path, name = self._folder(path)
        found = await store._find(
            s3_path, maxdepth=maxdepth, withdirs=withdirs, detail=True, prefix=prefix, **kwargs
        )
        out = {}
        for s3_name, info in found.items():
            path_back = self._back(name, s3_name)
            if path_back == name and s3_name.rstrip("/") != s3_path:
                continue  # the workspace prefix itself, listed as a folder
            out[path_back] = self._back_info(name, info)
        return out if detail else sorted(out)

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        if self._strip_protocol(path) == "":
            return True
        name, key = self._split(path)  # an unsafe key is an error, not "no"
        try:
            self.source(name)
        except (FileNotFoundError, PermissionError):
            return False  # no such workspace, or none for this principal
        if not key:
            return True
        store, s3_path, _ = self._object(path)
        with _in_workspace_terms(path):
            return bool(await store._exists(s3_path, **kwargs))

    async def _touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        """An empty object at ``path``. S3 cannot update a file's time:
        ``truncate=False`` on an existing object raises ``ValueError``, as s3fs does."""
        if not truncate and await self._exists(path):
            raise ValueError(f"S3 does not support touching existing files: {path}")
        await self._pipe_file(path, b"")

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        store, s3_path, name = self._object(path)
        if kwargs or needs_size(start, end):
            # Versions, and bounds counted from an end the size must tell: s3fs's way.
            with _in_workspace_terms(path):
                return bytes(await store._cat_file(s3_path, start=start, end=end, **kwargs))
        objects, full_key = self._objects_of(name), s3_path.partition("/")[2]
        with _as_os_errors(path):
            return await objects.run(objects.get, full_key, start, end)

    async def _pipe_file(
        self, path: str, data: bytes, mode: str = "overwrite", **kwargs: Any
    ) -> Any:
        store, s3_path, name = self._object(path)
        objects, full_key = self._objects_of(name), s3_path.partition("/")[2]
        body = data if isinstance(data, bytes) else bytes(data)
        try:
            if mode == "create":
                # One conditional PUT decides (radosgw honours If-None-Match on
                # PutObject only): small data in it, big data after it.
                if len(body) < _SINGLE_PUT_BELOW and not kwargs:
                    return {"ETag": await objects.run(claim_key, objects, full_key, path, body)}
                await objects.run(claim_key, objects, full_key, path)
            elif mode != "overwrite":
                raise ValueError(f"mode must be 'overwrite' or 'create', not {mode!r}")
            if len(body) < _SINGLE_PUT_BELOW:
                if kwargs:  # boto's arguments of one PUT: s3fs's way
                    with _in_workspace_terms(path):
                        return await store._pipe_file(s3_path, body, **kwargs)
                with _as_os_errors(path):
                    return {"ETag": await objects.run(objects.put, full_key, body)}
            if kwargs.keys() <= _ENGINE_ARGUMENTS:
                spec = self._upload_spec(path, full_key, None, io.BytesIO(body), kwargs)
                await self._upload(name, path, spec, len(body), DEFAULT_CALLBACK, kwargs)
                return None
            part_size = _boto_part_size(kwargs, len(body))

            async def part(start: int, end: int) -> bytes:
                return body[start:end]

            await self._recorded_multipart(name, path, s3_path, len(body), part_size, part, kwargs)
            return None
        finally:
            store.invalidate_cache(s3_path)

    async def _pipe(
        self, path: Any, value: Any = None, batch_size: int | None = None, **kwargs: Any
    ) -> Any:
        """Many objects at once (``fs.pipe({path: data, ...})``): the small ones
        of each workspace as one batch of PUTs from this event loop, hundreds
        in flight (:class:`~sts_bridge.s3.batch_puts.BatchPuts`), any one not
        stored there again on its :class:`~sts_bridge.s3.objects.ObjectIO`
        threads (retries, the error mapper). Boto's arguments, ``mode`` and
        big data take :meth:`_pipe_file`'s way, object by object. The first
        error is raised, as by fsspec, once the PUTs in flight are done."""
        if isinstance(path, str):
            path = {path: value}
        bodies = {p: d if isinstance(d, bytes) else bytes(d) for p, d in path.items()}
        if kwargs or any(len(body) >= _SINGLE_PUT_BELOW for body in bodies.values()):
            return await super()._pipe(bodies, batch_size=batch_size, **kwargs)
        batches: dict[str, list[tuple[ObjectIO, str, bytes, str]]] = {}
        written: list[tuple[str, int]] = []  # (workspace, index in its batch), in path order
        stores: list[tuple[S3FileSystem, str]] = []
        for p, body in bodies.items():
            store, s3_path, name = self._object(p)
            stores.append((store, s3_path))
            batch = batches.get(name)
            if batch is None:
                batch = batches[name] = []
                objects = self._objects_of(name)
            else:
                objects = batch[0][0]
            written.append((name, len(batch)))
            batch.append((objects, s3_path.partition("/")[2], body, p))
        try:
            done = await asyncio.gather(*(_stored_batch(b, batch_size) for b in batches.values()))
        finally:
            for store, s3_path in stores:
                store.invalidate_cache(s3_path)
        by_workspace = dict(zip(batches, done, strict=True))
        return [by_workspace[name][i] for name, i in written]

    async def _cat(
        self,
        path: Any,
        recursive: bool = False,
        on_error: str = "raise",
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Many objects at once (``fs.cat([...])``): each workspace's GETs on its
        :class:`~sts_bridge.s3.objects.ObjectIO` threads as one batch, as
        :meth:`_pipe` does; the answer as fsspec's (``on_error``: ``"raise"``
        the first error in path order, ``"omit"`` or ``"return"`` it)."""
        if kwargs:  # versions and the like: s3fs's way, object by object
            return await super()._cat(
                path, recursive=recursive, on_error=on_error, batch_size=batch_size, **kwargs
            )
        paths = await self._expand_path(path, recursive=recursive)
        out: list[Any] = [None] * len(paths)
        batches: dict[str, list[tuple[ObjectIO, str, str]]] = {}
        places: dict[str, list[int]] = {}
        for n, p in enumerate(paths):
            try:
                _, s3_path, name = self._object(p)
                objects = batches[name][0][0] if name in batches else self._objects_of(name)
            except Exception as exc:  # a key refused, a workspace not found: that path's answer
                out[n] = exc
                continue
            batches.setdefault(name, []).append((objects, s3_path.partition("/")[2], p))
            places.setdefault(name, []).append(n)
        done = await asyncio.gather(
            *(batch[0][0].run_each(_read, batch, limit=batch_size) for batch in batches.values())
        )
        for name, results in zip(batches, done, strict=True):
            for n, result in zip(places[name], results, strict=True):
                out[n] = result
        if on_error == "raise":
            failed = next((r for r in out if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
        if len(paths) > 1 or isinstance(path, list) or paths[0] != self._strip_protocol(path):
            return {
                p: r
                for p, r in zip(paths, out, strict=True)
                if on_error != "omit" or not isinstance(r, Exception)
            }
        return out[0]

    touch = sync_wrapper(_touch)

    async def _put_file(
        self,
        lpath: str,
        rpath: str,
        callback: Callback = DEFAULT_CALLBACK,
        mode: str = "overwrite",
        **kwargs: Any,
    ) -> Any:
        store, s3_path, name = self._object(rpath)
        if mode not in ("overwrite", "create"):
            raise ValueError(f"mode must be 'overwrite' or 'create', not {mode!r}")
        if os.path.isdir(lpath):
            return None  # a folder is no object (fsspec's put makes none either)
        size = os.path.getsize(lpath)  # FileNotFoundError naming lpath
        objects, full_key = self._objects_of(name), s3_path.partition("/")[2]
        if mode == "create":
            await objects.run(claim_key, objects, full_key, rpath)
        try:
            if kwargs.keys() <= _ENGINE_ARGUMENTS:
                spec = self._upload_spec(rpath, full_key, Path(lpath), None, kwargs, size)
                await self._upload(name, rpath, spec, size, callback, kwargs)
                return None
            part_size = _boto_part_size(kwargs, size)
            if size < 2 * part_size:  # boto's arguments of one PUT: s3fs's way
                with _in_workspace_terms(rpath):
                    return await store._put_file(lpath, s3_path, callback=callback, **kwargs)
            callback.set_size(size)

            async def part(start: int, end: int) -> bytes:
                data = await objects.run(_read_range, lpath, start, end)
                callback.relative_update(len(data))
                return data

            await self._recorded_multipart(name, rpath, s3_path, size, part_size, part, kwargs)
            return None
        finally:
            store.invalidate_cache(s3_path)

    def _upload_spec(
        self,
        path: str,
        full_key: str,
        source: Path | None,
        stream: io.BytesIO | None,
        kwargs: dict[str, Any],
        size: int | None = None,
    ) -> UploadSpec:
        """What the upload engine writes: the object, its content type (given,
        else guessed from the local file's name or the key, as s3fs and
        ``sts-bridge upload`` do) and its user metadata, checked before any request."""
        from sts_bridge.s3.transfers import checked_headers

        content_type = kwargs.get("ContentType")
        metadata = checked_headers(content_type, kwargs.get("Metadata"))
        if content_type is None:
            content_type = guess_content_type(source.name if source is not None else full_key)
        return UploadSpec(
            source=source,
            stream=stream,
            key=self._split(path)[1],
            full_key=full_key,
            size=size,
            content_type=content_type,
            metadata=metadata,
        )

    async def _upload(
        self,
        name: str,
        path: str,
        spec: UploadSpec,
        size: int,
        callback: Callback,
        kwargs: dict[str, Any],
    ) -> None:
        """Run one upload of the engine (a file, or bytes as a stream) on the
        workspace's threads; ``chunksize`` / ``max_concurrency`` (s3fs's names)
        set the part size and the parts in flight of this upload."""
        engine = self._uploader(name)
        names = {"chunksize": "part_size", "max_concurrency": "part_concurrency"}
        changes = {field: kwargs[given] for given, field in names.items() if kwargs.get(given)}
        own = None
        if changes:
            own = engine = self._new_uploader(name, changes)
        callback.set_size(size)
        progress = Progress(lambda done, _total: callback.absolute_update(done), size)
        run = engine.upload_stream if spec.stream is not None else engine.upload_file
        objects = self._objects_of(name)
        try:
            with _as_os_errors(path):
                await objects.run(run, spec, progress)
        finally:
            if own is not None:
                own.close()

    def _uploader(self, name: str) -> UploadEngine:
        """The upload engine of workspace ``name`` (one per workspace, its
        connections shared by every ``put_file`` / ``pipe_file``)."""
        with self._lock:
            engine = self._uploads.get(name)
        if engine is not None:
            return engine
        made = self._new_uploader(name)
        with self._lock:
            engine = self._uploads.setdefault(name, made)
        if engine is made:
            weakref.finalize(self, made.close)
        else:
            made.close()
        return engine

    def _new_uploader(self, name: str, changes: dict[str, Any] | None = None) -> UploadEngine:
        """An upload engine of workspace ``name``: its transfer configuration
        with ``changes`` (fields of :class:`TransferConfig`), its uploads recorded."""
        source = self.source(name)
        config = engine_config(source)
        if changes:
            config = dataclasses.replace(config, **changes)
        return UploadEngine(source, config, resumable=True, state_dir=self._records_dir(name))

    async def _get_file(self, rpath: str, lpath: str, **kwargs: Any) -> Any:
        store, s3_path, _ = self._object(rpath)
        with _in_workspace_terms(rpath):
            return await store._get_file(s3_path, lpath, **kwargs)

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> Any:
        store1, s3_path1, name1 = self._object(path1)
        _, s3_path2, name2 = self._object(path2)
        if name1 == name2 and name1 not in self._copy_refused:
            try:
                with _in_workspace_terms(path1):
                    return await store1._cp_file(s3_path1, s3_path2, **kwargs)
            except PermissionError:
                # A platform may refuse server-side copies to workspace
                # credentials (x-amz-copy-source can copy what a link or a
                # policy should not reach): the bytes go through here instead.
                self._copy_refused.add(name1)
        # Two workspaces have two sets of credentials: no server-side copy.
        await self._copy_through(path1, name1, s3_path1, path2, name2, s3_path2)

    async def _copy_through(
        self, path1: str, name1: str, s3_path1: str, path2: str, name2: str, s3_path2: str
    ) -> None:
        """Copy by reading and writing: one GET and one PUT below the single-PUT
        size, else ranged GETs into the parts of a multipart upload (aborted on failure)."""
        reader, key1 = self._objects_of(name1), s3_path1.partition("/")[2]
        writer, key2 = self._objects_of(name2), s3_path2.partition("/")[2]
        info = await self._info(path1)
        if info["type"] == "directory":
            # No object at that key (what s3fs's CopyObject answers, and what
            # fsspec's recursive copy skips).
            raise FileNotFoundError(errno.ENOENT, "a folder, not an object", path1)
        size = int(info["size"])
        try:
            if size < _SINGLE_PUT_BELOW:
                with _as_os_errors(path1):
                    data = await reader.run(reader.get, key1)
                with _as_os_errors(path2):
                    await writer.run(writer.put, key2, data)
                return

            async def part(start: int, end: int) -> bytes:
                with _as_os_errors(path1):
                    return await reader.run(reader.get, key1, start, end)

            await self._recorded_multipart(name2, path2, s3_path2, size, _BLOCK_SIZE, part, {})
        finally:
            with self._lock:
                written = self._stores.get(name2)
            if written is not None:  # none when close_connections dropped it meanwhile
                written.invalidate_cache(s3_path2)

    async def _recorded_multipart(
        self,
        name: str,
        path: str,
        s3_path: str,
        size: int,
        part_size: int,
        read: Callable[[int, int], Awaitable[bytes]],
        create_arguments: dict[str, Any],
    ) -> None:
        """A multipart upload through the workspace's s3fs, one part after the
        other (``read(start, end)`` gives each), for writes the upload engine
        cannot make (boto's own arguments, copies between two stores' worth of
        credentials): recorded before its first part, aborted on failure."""
        store = self._store(self.source(name))
        bucket, _, key = s3_path.partition("/")
        with _in_workspace_terms(path):
            upload = await store._call_s3(
                "create_multipart_upload", Bucket=bucket, Key=key, **create_arguments
            )
        upload_id = upload["UploadId"]
        record: Path | None = None
        with contextlib.ExitStack() as held:
            try:
                # recorded before the first part (see upload_records)
                record = held.enter_context(
                    recorded_upload(
                        self._records_dir(name), self.source(name).endpoint_url, bucket, key,
                        upload_id,
                    )
                )  # fmt: skip
                parts = []
                for number, start in enumerate(range(0, size, part_size), start=1):
                    data = await read(start, start + part_size)
                    with _in_workspace_terms(path):
                        answer = await store._call_s3(
                            "upload_part",
                            Bucket=bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=data,
                        )
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                with _in_workspace_terms(path):
                    await store._call_s3(
                        "complete_multipart_upload",
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )
            except BaseException:
                # not aborted (the store cannot be reached): the record stays,
                # for `sts-bridge uploads --abort`
                await store._call_s3(
                    "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id
                )
                if record is not None:
                    remove_record(record)
                raise
            remove_record(record)

    async def _rm_file(self, path: str, **kwargs: Any) -> Any:
        store, s3_path, _ = self._object(path)
        with _in_workspace_terms(path):
            return await store._rm_file(s3_path, **kwargs)

    async def _rm(
        self,
        path: str | list[str],
        recursive: bool = False,
        maxdepth: int | None = None,
        **kwargs: Any,
    ) -> Any:
        paths = await self._expand_path(path, recursive=recursive, maxdepth=maxdepth)
        by_workspace: dict[str, tuple[S3FileSystem, list[str]]] = {}
        for one in paths:
            name, key = self._split(one)
            if not key:
                continue  # the workspace itself is not an object
            try:
                store, s3_path, name = self._object(one)
            except ValueError:
                continue  # a folder found while expanding (``results``): nothing to delete
            by_workspace.setdefault(name, (store, []))[1].append(s3_path)
        for name, (store, s3_paths) in by_workspace.items():
            await self._delete(name, store, s3_paths)

    async def _delete(self, name: str, store: S3FileSystem, s3_paths: list[str]) -> None:
        if name not in self._bulk_refused:
            try:
                await store._rm(s3_paths)
                return
            except PermissionError:
                # radosgw 16 answers 403 to DeleteObjects under a prefix-scoped
                # session policy that allows DeleteObject: one DELETE per key,
                # whose own errors are then the real answer.
                self._bulk_refused.add(name)
        for start in range(0, len(s3_paths), _DELETE_CONCURRENCY):
            batch = s3_paths[start : start + _DELETE_CONCURRENCY]
            await asyncio.gather(*(store._rm_file(p) for p in batch))

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        # S3 has no folders; the path is still checked (and s3fs's _mkdir would create buckets).
        self._folder(path)

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        self._folder(path)

    async def _rmdir(self, path: str) -> None:
        self._folder(path)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> WorkspaceFile:
        store, s3_path, name = self._object(path)
        stripped = self._strip_protocol(path)
        size = kwargs.pop("size", None)
        if "r" in mode and size is None:
            info = self.info(stripped)
            if info["type"] == "directory":
                raise IsADirectoryError(errno.EISDIR, "a folder cannot be opened", stripped)
            size = info["size"]
        return WorkspaceFile(
            self,
            stripped,
            mode,
            objects=self._objects_of(name),
            store=store,
            bucket=s3_path.partition("/")[0],
            full_key=s3_path.partition("/")[2],
            endpoint=self.source(name).endpoint_url,
            records=self._records_dir(name),
            block_size=block_size
            or self._s3_options.get("default_block_size")
            or (_READ_BLOCK_SIZE if "r" in mode else _BLOCK_SIZE),
            autocommit=autocommit,
            cache_options=cache_options,
            size=size,
            **kwargs,
        )

    def _records_dir(self, name: str) -> Path:
        """Where the multipart uploads to workspace ``name`` are recorded: the
        folder ``sts-bridge uploads`` reads (the workspace's cache directory)."""
        from sts_bridge.s3.upload_records import records_dir

        cache_dir = getattr(self.source(name), "cache_dir", None)
        return records_dir(None if cache_dir is None else Path(cache_dir))

    def invalidate_cache(self, path: str | None = None) -> None:
        with self._lock:
            stores = list(self._stores.items())
        if path is None:
            for _, store in stores:
                store.invalidate_cache()
            return
        name, _ = self._split(path)
        for store_name, store in stores:
            if store_name == name:
                _, s3_path, _ = self._folder(path)
                store.invalidate_cache(s3_path)

    def stores(self) -> Iterable[tuple[str, S3FileSystem]]:
        """``(workspace, s3fs filesystem)`` pairs created so far (for diagnostics)."""
        with self._lock:
            return list(self._stores.items())


@contextlib.contextmanager
def _as_os_errors(path: str) -> Iterator[None]:
    """The store's answers about an object, and failed uploads, as the
    built-in errors fsspec users catch, with the SDK's message and the SDK's
    error as the cause. Credentials that cannot be had (``CredentialsError``:
    expired shared credentials, a login needed) stay the SDK's own error: its
    hint says what to do."""
    try:
        yield
    except StorageError as exc:
        raise storage_os_error(exc, path) from exc
    except TransferError as exc:  # a file changed while uploaded, or uploaded elsewhere now
        raise OSError(errno.EIO, str(exc), path) from exc


async def _stored_batch(
    batch: list[tuple[ObjectIO, str, bytes, str]], limit: int | None
) -> list[dict[str, str]]:
    """One workspace's PUTs of a :meth:`WorkspaceFileSystem._pipe`: from this
    event loop (:class:`~sts_bridge.s3.batch_puts.BatchPuts`), and each one
    that is not stored there again on the object's threads (:func:`_stored`)."""
    objects = batch[0][0]

    async def on_threads(i: int) -> str:
        return await objects.run(_stored, *batch[i])

    etags = await objects.batch_puts.put_each(
        [(full_key, body) for _, full_key, body, _ in batch],
        on_threads,
        limit=limit,
        stop_at_error=True,
    )
    return [{"ETag": etag} for etag in etags]


def _stored(objects: ObjectIO, full_key: str, body: bytes, path: str) -> str:
    """One PUT of a batch on the object's threads (retries, new credentials), its
    errors as ``_pipe_file``'s; returns the ETag."""
    with _as_os_errors(path):
        return objects.put(full_key, body)


def _read(objects: ObjectIO, full_key: str, path: str) -> bytes:
    """One GET of a batch (:meth:`WorkspaceFileSystem._cat`), its errors as ``_cat_file``'s."""
    with _as_os_errors(path):
        return objects.get(full_key)


def engine_config(source: WorkspaceSource) -> TransferConfig:
    """The transfer knobs of a workspace's uploads: a :class:`~sts_bridge.Workspace`'s
    own (``with_transfer_config``), else the defaults."""
    config = getattr(source, "transfer_config", None)
    return config if isinstance(config, TransferConfig) else TransferConfig()


def _boto_part_size(kwargs: dict[str, Any], size: int) -> int:
    """The part size of a multipart upload of ``size`` bytes with boto's own
    arguments: ``chunksize`` if given, else the SDK's choice. Takes the upload
    engine's two arguments out of ``kwargs``: the rest go to boto's
    ``create_multipart_upload``, which knows neither."""
    kwargs.pop("max_concurrency", None)
    return kwargs.pop("chunksize", None) or choose_part_size(size, _BLOCK_SIZE)


def _read_range(lpath: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of a local file (short at its end)."""
    with open(lpath, "rb") as f:
        f.seek(start)
        return f.read(end - start)


#: The errors s3fs raises about an object or folder, rewritten in workspace terms.
_PATH_ERRORS = {
    FileNotFoundError: (errno.ENOENT, "no such object or folder"),
    PermissionError: (errno.EACCES, "access denied"),
    FileExistsError: (errno.EEXIST, "exists already"),
    IsADirectoryError: (errno.EISDIR, "is a folder"),
    NotADirectoryError: (errno.ENOTDIR, "is not a folder"),
}


@contextlib.contextmanager
def _in_workspace_terms(path: str) -> Iterator[None]:
    """s3fs names ``bucket/prefix/key`` in its errors; the user named ``path``.
    An error about a local file (``get_file``'s target) keeps its own name."""
    try:
        yield
    except tuple(_PATH_ERRORS) as exc:
        if exc.filename is not None:
            raise  # about a local file
        for kind, (number, text) in _PATH_ERRORS.items():
            if isinstance(exc, kind):
                said = exc.strerror if exc.strerror and exc.strerror != "None" else text
                raise kind(number, said, path) from exc
        raise


def _directory(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


def _rebuild(
    api_url: str | None, s3_options: dict[str, Any], asynchronous: bool
) -> WorkspaceFileSystem:
    # fsspec's instance cache: the tasks of one Dask worker share one filesystem
    # (and its HTTP connections); workspaces are resolved on first use.
    return WorkspaceFileSystem(api_url=api_url, s3_options=s3_options, asynchronous=asynchronous)


def _close_store(store: S3FileSystem, loop: asyncio.AbstractEventLoop | None) -> None:
    creator = getattr(store, "_s3creator", None)
    if creator is None:
        return  # never connected
    if loop is not None and loop.is_running() and not loop.is_closed():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            future = asyncio.run_coroutine_threadsafe(creator.__aexit__(None, None, None), loop)
            try:
                future.result(timeout=_CLOSE_TIMEOUT)
                return
            except Exception:  # the loop is stopping: close the sockets below
                future.cancel()
    S3FileSystem.close_session(None, creator)
