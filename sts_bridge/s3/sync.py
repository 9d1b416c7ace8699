"""Sync a local folder and a workspace folder, both ways, deciding by content.

:func:`plan_sync` compares the two sides and returns a :class:`SyncPlan`
(one :class:`SyncAction` per object to upload, download or delete);
:func:`run_sync` carries it out and returns a :class:`SyncReport`. Nothing
is written before :func:`run_sync`: a plan is a dry run.

How "unchanged" is decided
--------------------------
Size and modification time never decide that a file is unchanged: a file
rewritten with the same size and mtime is found. The sides are compared by
content, without a request per object where the listing already tells it:

1. a different size: changed;
2. a single-part object (its listed ETag is 32 hex digits): the ETag is the
   MD5 the server computed over the bytes it stored; unchanged when it
   equals the MD5 of the local file. An object whose ETag looks like an MD5
   but is not one (SSE-KMS, SSE-C) never matches: it is transferred, never
   wrongly skipped;
3. a multipart object (ETag ``<hex>-<parts>``): one HEAD reads the digest
   that ``upload`` and ``sync`` record in the object's metadata: the
   composite SHA-256 and its part size (``x-amz-meta-sha256-composite``,
   ``x-amz-meta-sha256-part-size``), unchanged when it equals the composite
   of the local file cut in parts of that size; or, for objects uploaded by
   older versions, the whole-file SHA-256 (``x-amz-meta-sha256``),
   unchanged when it equals the SHA-256 of the local file;
4. anything else (a multipart object written by another tool, so with no
   recorded digest): transferred. Uploading it records the composite, so
   the next sync compares it by rule 3.

Local files are hashed (MD5 and SHA-256 in one streamed read) in a thread
pool while the listing pages arrive; hashing that the comparison turns out
not to need (a file missing on the other side, another size) is cancelled
when it has not started. A composite is computed only for a file whose
remote object records one, once per part size. The hashes are cached per
tree in the cache directory (one 0600 file written atomically, its format
versioned: a cache of another version is dropped), keyed by the relative
path and checked against ``(device, inode, size, mtime_ns, ctime_ns)``: a
rewrite changes ``ctime``, which no user tool can set back, so a same-size
same-mtime rewrite is hashed again. Files changed less than
:data:`RACY_WINDOW_NS` before the cache is written are not cached (their
ctime may not have ticked yet: git's "racily clean" problem).

Filters
-------
``include`` / ``exclude`` are globs on the path relative to the synced
folder (see :func:`sts_bridge.s3.upload.matches_filters`): a pattern without
``/`` also matches the file name alone; an exclude wins over an include; no
include means everything. They apply to both sides, so ``--delete`` never
touches what the filters leave out.

What is never synced
--------------------
A download's temp files (``.NAME.PID-XXXXXXXX.part``, left by a killed
sync or download) are never uploaded, never compared and never kept: the
ones whose process is gone are removed by the next run. What cannot be
transferred is listed in :attr:`SyncPlan.skipped` with the reason (a FIFO,
a socket, a dangling link or a link loop in the local source; a remote key
that cannot be a local file name, such as ``../../x``, ``a//b`` or one with
a newline), and the CLI says it on stderr and in its exit status.

An empty source is refused (:class:`ObjectNotFoundError` for a workspace
folder without objects, :class:`TransferError` for a local folder without
files) unless ``allow_empty_source``: a typo in the source folder must not
turn ``--delete`` into "delete everything".

Resuming
--------
A sync that stops (Ctrl-C, a killed process, a failure) is resumed by
running it again: what was transferred compares unchanged, and a large file
interrupted half-way continues its multipart upload (see
:mod:`sts_bridge.s3.upload`). Every request is signed with fresh credentials,
so a sync may outlive any number of STS credential lifetimes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sts_bridge.errors import InvalidKeyError, ObjectNotFoundError, TransferError
from sts_bridge.s3.config import TransferConfig
from sts_bridge.s3.digests import MIN_PART_SIZE, path_composite_sha256
from sts_bridge.s3.download import PART_FILE_NAME, DownloadEngine, stale_part_file
from sts_bridge.s3.keys import check_relative_key, workspace_key, workspace_prefix
from sts_bridge.s3.signed_http import MiB, strip_etag, xml_text
from sts_bridge.s3.transfer_types import Progress, UploadResult
from sts_bridge.s3.upload import (
    COMPOSITE_METADATA,
    PART_SIZE_METADATA,
    SHA256_METADATA,
    UploadEngine,
    UploadSpec,
    check_patterns,
    guess_content_type,
    matches_filters,
    skip_reason,
)

__all__ = [
    "RACY_WINDOW_NS",
    "LocalDigests",
    "SkippedPath",
    "SyncAction",
    "SyncPlan",
    "SyncReport",
    "plan_sync",
    "run_sync",
]

log = logging.getLogger(__name__)

#: Files whose ctime is this close to the time the hash cache is written are not cached.
RACY_WINDOW_NS = 2_000_000_000
_HASH_CHUNK = 1 * MiB
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_COMPOSITE = re.compile(r"[0-9a-f]{64}-([1-9][0-9]*)")
#: The format of the sync hash cache; a cache of another version is dropped.
_CACHE_VERSION = 2

SyncProgress = Callable[["SyncStatus"], None]
"""``progress(status)``; called after each action (and each MiB moved), serialised."""


# ----------------------------------------------------------------- the model
@dataclass(frozen=True)
class LocalDigests:
    """The MD5 and SHA-256 (hex) of one local file."""

    md5: str
    sha256: str


@dataclass(frozen=True)
class SkippedPath:
    """Something a sync leaves out, and why: ``path`` is relative to the synced folders."""

    path: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class _LocalFile:
    rel: str
    path: Path
    size: int
    ident: tuple[int, int, int, int, int]  # dev, inode, size, mtime_ns, ctime_ns


@dataclass(frozen=True)
class _RemoteObject:
    rel: str
    full_key: str
    size: int
    etag: str


@dataclass(frozen=True)
class SyncAction:
    """One thing to do: ``upload``, ``download`` or ``delete`` (``where``: ``local``/``remote``).

    ``key`` is the path relative to both synced folders (``/``-separated);
    ``reason`` is ``new``, ``changed (size)``, ``changed (content)``,
    ``no recorded checksum`` or ``gone from the source``.
    """

    action: str
    key: str
    size: int
    reason: str
    where: str

    def describe(self) -> str:
        return f"{self.action:<8} {self.key}  ({self.reason}, {self.size} bytes)"

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "key": self.key,
            "size": self.size,
            "reason": self.reason,
            "where": self.where,
        }


@dataclass
class SyncPlan:
    """What :func:`run_sync` would do; made by :func:`plan_sync`, changes nothing."""

    direction: str  # "upload" (local -> workspace) or "download"
    local_root: Path
    remote_prefix: str  # relative to the workspace prefix; "" or ends with "/"
    actions: list[SyncAction]
    unchanged: int
    skipped: list[SkippedPath] = field(default_factory=list)  # what cannot be transferred
    stale_parts: list[Path] = field(default_factory=list)  # temp files of dead downloads
    _local: dict[str, _LocalFile] = field(default_factory=dict, repr=False)
    _remote: dict[str, _RemoteObject] = field(default_factory=dict, repr=False)

    @property
    def bytes(self) -> int:
        return sum(a.size for a in self.actions if a.action != "delete")

    @property
    def deletes(self) -> list[SyncAction]:
        return [a for a in self.actions if a.action == "delete"]

    def as_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "local": str(self.local_root),
            "remote_prefix": self.remote_prefix,
            "actions": [a.as_json() for a in self.actions],
            "unchanged": self.unchanged,
            "bytes": self.bytes,
            "skipped": [s.as_json() for s in self.skipped],
            "stale_part_files": [str(p) for p in self.stale_parts],
        }


@dataclass
class SyncStatus:
    """Progress of a running sync (handed to the progress callback)."""

    actions_total: int
    bytes_total: int
    actions_done: int = 0
    bytes_done: int = 0
    failed: int = 0


@dataclass
class SyncReport:
    """What :func:`run_sync` did."""

    uploaded: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, message)
    skipped: list[SkippedPath] = field(default_factory=list)  # from the plan
    removed_part_files: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "skipped": [s.as_json() for s in self.skipped],
            "removed_part_files": self.removed_part_files,
            "uploaded": self.uploaded,
            "downloaded": self.downloaded,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "bytes": self.bytes,
            "failed": [{"key": k, "error": m} for k, m in self.failed],
        }


# ------------------------------------------------------------- local side
@dataclass
class _LocalTree:
    """What :func:`_walk` found under a local folder."""

    files: dict[str, _LocalFile] = field(default_factory=dict)  # regular files, filtered
    skipped: list[SkippedPath] = field(default_factory=list)  # not files, filtered
    stale_parts: list[Path] = field(default_factory=list)  # temp files of dead downloads
    holds_files: bool = False  # any file at all, before the filters


def _walk(root: Path, include: Sequence[str] | None, exclude: Sequence[str] | None) -> _LocalTree:
    """Regular files under ``root`` that pass the filters, by relative posix path;
    what is not a file (with the reason) and the download temp files left behind."""
    tree = _LocalTree()
    if not root.exists():
        return tree
    stack = [("", root)]
    while stack:
        rel_dir, directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                rel = rel_dir + entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((rel + "/", Path(entry.path)))
                    continue
                if PART_FILE_NAME.fullmatch(entry.name):  # never data, whatever the filters
                    if stale_part_file(entry.name) and not entry.is_symlink():
                        tree.stale_parts.append(Path(entry.path))
                    continue
                tree.holds_files = True
                if not matches_filters(rel, include, exclude):
                    continue
                try:
                    st = entry.stat()
                except OSError as exc:  # a dangling link, a loop: skip_reason says which
                    reason = skip_reason(entry.path, error=exc) or "gone meanwhile"
                    tree.skipped.append(SkippedPath(rel, reason))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    reason = skip_reason(entry.path, st) or "not a regular file"
                    tree.skipped.append(SkippedPath(rel, reason))
                    continue
                ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                tree.files[rel] = _LocalFile(rel, Path(entry.path), st.st_size, ident)
    tree.skipped.sort(key=lambda s: s.path)
    return tree


def hash_file(path: Path) -> LocalDigests:
    """MD5 and SHA-256 of a file in one streamed read (1 MiB at a time)."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while n := os.readv(fd, [buf]):
            md5.update(view[:n])
            sha.update(view[:n])
    finally:
        os.close(fd)
    return LocalDigests(md5.hexdigest(), sha.hexdigest())


def _cache_dir_of(ws: Any) -> Path:
    """The workspace's configured cache directory (a ``Workspace`` built by ``Client``
    carries it); the default one for other workspace objects."""
    configured = getattr(ws, "cache_dir", None)
    if configured is not None:
        return Path(configured)
    from sts_bridge.config import default_cache_dir

    return default_cache_dir()


class _HashCache:
    """Local hashes of one tree: ``<cache dir>/sync/<hash of the tree's path>.json`` (0600)."""

    def __init__(self, root: Path, cache_dir: Path) -> None:
        name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]
        self.path = cache_dir / "sync" / f"{name}.json"
        self._old: dict[str, Any] = {}
        self._new: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        with contextlib.suppress(OSError, ValueError, TypeError):
            from sts_bridge._files import read_private_json

            doc = read_private_json(self.path)
            if isinstance(doc, dict) and doc.get("version") == _CACHE_VERSION:
                entries = doc.get("files")
                if isinstance(entries, dict):
                    self._old = entries

    def get(self, f: _LocalFile) -> LocalDigests | None:
        entry = self._old.get(f.rel)
        if (
            isinstance(entry, list)
            and len(entry) == 8
            and tuple(entry[:5]) == f.ident
            and isinstance(entry[5], str)
            and isinstance(entry[6], str)
            and isinstance(entry[7], dict)
        ):
            with self._lock:
                # a copy: composites added in this run must not change the old entry
                self._new[f.rel] = [*entry[:7], dict(entry[7])]
            return LocalDigests(entry[5], entry[6])
        return None

    def put(self, f: _LocalFile, digests: LocalDigests) -> None:
        with self._lock:
            self._new[f.rel] = [*f.ident, digests.md5, digests.sha256, {}]

    def get_composite(self, f: _LocalFile, part_size: int) -> str | None:
        """The cached composite SHA-256 of ``f`` cut in ``part_size`` parts."""
        with self._lock:
            entry = self._new.get(f.rel)
            if entry is None or tuple(entry[:5]) != f.ident:
                return None
            value = entry[7].get(str(part_size))
        return value if isinstance(value, str) else None

    def put_composite(self, f: _LocalFile, part_size: int, composite: str) -> None:
        with self._lock:
            entry = self._new.get(f.rel)
            if entry is not None and tuple(entry[:5]) == f.ident:
                entry[7][str(part_size)] = composite

    def save(self) -> None:
        """Write the entries seen in this run (atomically, 0600); never raises."""
        import json

        from sts_bridge._files import atomic_write

        recent = time.time_ns() - RACY_WINDOW_NS
        with self._lock:
            files = {rel: e for rel, e in self._new.items() if e[4] < recent}
        if files == self._old:
            return  # nothing new: no write, no fsync
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(
                self.path, json.dumps({"version": _CACHE_VERSION, "files": files}).encode()
            )
        except OSError as exc:  # a cache, not the result: warn and go on
            log.warning("could not write the sync hash cache %s: %s", self.path, exc)


class _Hasher:
    """Hashes local files in a thread pool (cache first), while the caller lists."""

    def __init__(self, cache: _HashCache | None, threads: int) -> None:
        self.cache = cache
        self.pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="sts-bridge-hash")
        self.known: dict[str, LocalDigests] = {}  # cache hits: no future, no lock
        self.futures: dict[str, cf.Future[LocalDigests]] = {}

    def submit(self, files: dict[str, _LocalFile]) -> None:
        for rel, f in files.items():
            hit = self.cache.get(f) if self.cache is not None else None
            if hit is not None:
                self.known[rel] = hit
            else:
                self.futures[rel] = self.pool.submit(self._hash, f)

    def _hash(self, f: _LocalFile) -> LocalDigests:
        digests = hash_file(f.path)
        if self.cache is not None:
            self.cache.put(f, digests)
        return digests

    def result(self, rel: str) -> LocalDigests:
        hit = self.known.get(rel)
        return hit if hit is not None else self.futures[rel].result()

    def composite(self, f: _LocalFile, part_size: int) -> str:
        """The composite SHA-256 of ``f`` in ``part_size`` parts (cache first)."""
        self.result(f.rel)  # its cache entry exists once its digests do
        hit = self.cache.get_composite(f, part_size) if self.cache is not None else None
        if hit is not None:
            return hit
        composite = path_composite_sha256(f.path, part_size)
        if self.cache is not None:
            self.cache.put_composite(f, part_size, composite)
        return composite

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------ remote side
def _list_remote(engine: UploadEngine, full_prefix: str) -> Iterator[list[tuple[str, int, str]]]:
    """ListObjectsV2 pages under ``full_prefix``: ``(full key, size, etag)`` per object."""
    query = {"list-type": "2", "prefix": full_prefix, "max-keys": "1000"}
    while True:
        resp = engine.call("GET", "", f"listing {full_prefix!r}", query=query)
        data = resp.data
        yield [_listed(block) for block in _CONTENTS.findall(data or b"")]
        token = xml_text(data, "NextContinuationToken")
        if xml_text(data, "IsTruncated") != "true" or not token:
            return
        query = {**query, "continuation-token": token}


_CONTENTS = re.compile(rb"<Contents>(.*?)</Contents>", re.DOTALL)
_KEY = re.compile(rb"<Key>([^<]*)</Key>")
_SIZE = re.compile(rb"<Size>(\d+)</Size>")
_ETAG = re.compile(rb"<ETag>([^<]*)</ETag>")


def _listed(block: bytes) -> tuple[str, int, str]:
    """``(key, size, etag)`` of one ``<Contents>`` block (a page holds up to 1,000)."""
    key = _KEY.search(block)
    size = _SIZE.search(block)
    etag = _ETAG.search(block)
    return (
        _unescape(key.group(1) if key else b""),
        int(size.group(1)) if size else 0,
        strip_etag(_unescape(etag.group(1) if etag else b"")),
    )


def _unescape(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    if "&" in text:
        import html

        text = html.unescape(text)
    return text


@dataclass(frozen=True)
class _RecordedDigest:
    """The digest an object records: a composite SHA-256 and its part size, or a whole SHA-256."""

    value: str
    part_size: int | None = None  # None: the whole-file SHA-256


def _recorded_digest(engine: UploadEngine, full_key: str, size: int) -> _RecordedDigest | None:
    """The digest the object's metadata records (one HEAD); ``None`` when it records none
    usable (a composite whose part count does not fit its size is not used)."""
    resp = engine.call("HEAD", full_key, f"HeadObject {full_key!r}")
    composite = resp.headers.get(f"x-amz-meta-{COMPOSITE_METADATA}")
    part_size = resp.headers.get(f"x-amz-meta-{PART_SIZE_METADATA}")
    if isinstance(composite, str) and isinstance(part_size, str) and part_size.isdigit():
        composite, parts = composite.lower(), int(part_size)
        found = _COMPOSITE.fullmatch(composite)
        if found and parts >= MIN_PART_SIZE and int(found.group(1)) == max(1, -(-size // parts)):
            return _RecordedDigest(composite, parts)
    value = resp.headers.get(f"x-amz-meta-{SHA256_METADATA}")
    return _RecordedDigest(value.lower()) if isinstance(value, str) and value else None


def transfer_config_of(ws: Any) -> TransferConfig:
    """The workspace's ``transfer_config``; the defaults for a target without one."""
    config = getattr(ws, "transfer_config", None)
    return config if isinstance(config, TransferConfig) else TransferConfig()


def _engine(ws: Any, config: TransferConfig | None = None) -> UploadEngine:
    return UploadEngine(ws, transfer_config_of(ws) if config is None else config)


# ------------------------------------------------------------------ planning
def plan_sync(
    ws: Any,
    direction: str,
    local_root: str | os.PathLike[str],
    remote_prefix: str = "",
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    delete: bool = False,
    use_hash_cache: bool = True,
    hash_threads: int | None = None,
    allow_empty_source: bool = False,
) -> SyncPlan:
    """Compare a local folder with a workspace folder; return the plan (nothing is changed).

    ``direction`` is ``"upload"`` (the local folder is the source) or
    ``"download"``; ``remote_prefix`` is a folder relative to the workspace
    (``""`` = the whole workspace). With ``delete`` the plan also removes
    what is gone from the source. See the module docstring for how content
    is compared. Raises :class:`InvalidKeyError` for an unsafe prefix or
    local path and :class:`InvalidArgumentError` for an invalid
    include/exclude pattern (both before any request), :class:`TransferError`
    when the local source is not a folder or holds no file, and
    :class:`ObjectNotFoundError` when the workspace source folder holds no
    object (both unless ``allow_empty_source``), and the transfer errors of
    listing (:class:`StorageAccessDeniedError`, :class:`CredentialsError`...).
    """
    if direction not in ("upload", "download"):
        raise ValueError(f"direction must be 'upload' or 'download', not {direction!r}")
    check_patterns(include, exclude)
    if remote_prefix:
        check_relative_key(remote_prefix, allow_trailing_slash=True)
        if not remote_prefix.endswith("/"):
            remote_prefix += "/"
    root = Path(os.fspath(local_root))
    if direction == "upload" and not root.is_dir():
        raise TransferError(f"{root} is not a folder", hint="sync a folder (a file: use upload)")
    if direction == "download" and root.exists() and not root.is_dir():
        raise TransferError(f"{root} is not a folder", hint="sync into a folder")
    full_prefix = workspace_prefix(ws.prefix, remote_prefix)
    tree = _walk(root, include, exclude)
    if direction == "upload" and not tree.holds_files and not allow_empty_source:
        raise TransferError(
            f"{root} holds no file: refusing to sync from an empty folder",
            hint="check the path (is it mounted?); to make the workspace folder match an "
            "empty one on purpose, add --allow-empty-source (allow_empty_source=True)",
        )
    local = tree.files
    cache = _HashCache(root, _cache_dir_of(ws)) if use_hash_cache else None
    hasher = _Hasher(cache, hash_threads or min(4, os.cpu_count() or 1))
    engine = _engine(ws)
    try:
        hasher.submit(local)  # hashing runs while the pages arrive
        remote: dict[str, _RemoteObject] = {}
        skipped = tree.skipped if direction == "upload" else []
        remote_objects = 0
        for page in _list_remote(engine, full_prefix):
            for full_key, size, etag in page:
                rel = full_key[len(full_prefix) :]
                if not rel or rel.endswith("/"):
                    continue  # a "folder marker" object
                remote_objects += 1
                if not matches_filters(rel, include, exclude):
                    continue
                if direction == "download":
                    try:
                        check_relative_key(rel)
                    except InvalidKeyError as exc:
                        skipped.append(SkippedPath(rel, f"not a safe local name: {exc.message}"))
                        continue
                remote[rel] = _RemoteObject(rel, full_key, size, etag)
        if direction == "download" and not remote_objects and not allow_empty_source:
            raise ObjectNotFoundError(
                f"no object under workspace://{getattr(ws, 'name', '')}/{remote_prefix}: "
                "refusing to sync from an empty or missing workspace folder",
                key=remote_prefix,
                hint="check the folder with `sts-bridge ls`; to make the local folder match "
                "an empty one on purpose, add --allow-empty-source (allow_empty_source=True)",
            )
        actions: list[SyncAction] = []
        unchanged = 0
        verb, where = ("upload", "remote") if direction == "upload" else ("download", "local")
        source, target = (local, remote) if direction == "upload" else (remote, local)
        for rel in sorted(source):
            s = source[rel]
            t = target.get(rel)
            if t is None:
                actions.append(SyncAction(verb, rel, s.size, "new", where))
                continue
            reason = _difference(engine, hasher, local[rel], remote[rel])
            if reason:
                actions.append(SyncAction(verb, rel, s.size, reason, where))
            else:
                unchanged += 1
        if delete:
            for rel in sorted(set(target) - set(source)):
                actions.append(
                    SyncAction("delete", rel, target[rel].size, "gone from the source", where)
                )
        # The hashes the plan did not need (new files, other sizes) are
        # cancelled when not started: a first sync of a large tree reads each
        # file once, to upload it, not once more to hash it.
    finally:
        hasher.close()
        engine.close()
    if cache is not None:
        cache.save()
    return SyncPlan(
        direction, root, remote_prefix, actions, unchanged, skipped, tree.stale_parts, local, remote
    )


def _difference(engine: UploadEngine, hasher: _Hasher, f: _LocalFile, obj: _RemoteObject) -> str:
    """Why the two sides differ, or ``""`` when their content is the same."""
    if f.size != obj.size:
        return "changed (size)"
    digests = hasher.result(f.rel)
    if _MD5_HEX.fullmatch(obj.etag):
        return "" if obj.etag == digests.md5 else "changed (content)"
    recorded = _recorded_digest(engine, obj.full_key, obj.size)
    if recorded is None:
        return "no recorded checksum"
    if recorded.part_size is None:  # uploaded by an older sts-bridge: the whole-file SHA-256
        return "" if recorded.value == digests.sha256 else "changed (content)"
    local = hasher.composite(f, recorded.part_size)
    return "" if recorded.value == local else "changed (content)"


# ----------------------------------------------------------------- execution
class _Tracker:
    """Serialises progress for the callback."""

    def __init__(self, plan: SyncPlan, callback: SyncProgress | None) -> None:
        self.status = SyncStatus(len(plan.actions), plan.bytes)
        self.callback = callback
        self.lock = threading.Lock()

    def add(self, actions: int = 0, nbytes: int = 0, failed: int = 0) -> None:
        with self.lock:
            self.status.actions_done += actions
            self.status.bytes_done += nbytes
            self.status.failed += failed
            if self.callback is not None:
                self.callback(self.status)


def run_sync(
    ws: Any,
    plan: SyncPlan,
    *,
    progress: SyncProgress | None = None,
    config: TransferConfig | None = None,
) -> SyncReport:
    """Carry out ``plan`` (from :func:`plan_sync`); return what was done.

    ``config`` defaults to ``ws.transfer_config``. Small files go
    ``config.file_concurrency`` at a time; a large file goes alone with
    ``config.part_concurrency`` parts (``range_concurrency`` ranges) in flight.

    Transfers and deletes go on after a failure of one object; the failures
    are in :attr:`SyncReport.failed` (run again to retry them). Ctrl-C
    stops at once; running the same sync again resumes it.
    """
    config = transfer_config_of(ws) if config is None else config
    report = SyncReport(unchanged=plan.unchanged, skipped=list(plan.skipped))
    _remove_stale_parts(plan, report)
    tracker = _Tracker(plan, progress)
    transfers = [a for a in plan.actions if a.action != "delete"]
    deletes = plan.deletes
    if plan.direction == "upload":
        _run_uploads(ws, plan, transfers, report, tracker, config)
        _run_remote_deletes(ws, plan, deletes, report, tracker, config)
    else:
        _run_downloads(ws, plan, transfers, report, tracker, config)
        _run_local_deletes(plan, deletes, report, tracker)
    return report


def _byte_counter(tracker: _Tracker) -> Callable[[int, int | None], None]:
    """A progress callback that adds what one transfer moved since its last call."""
    moved = [0]

    def count(done: int, total: int | None) -> None:
        tracker.add(nbytes=done - moved[0])
        moved[0] = done

    return count


def _small_together_then_large(
    actions: list[SyncAction],
    one: Callable[[SyncAction], None],
    cutoff: int,
    threads: int,
    thread_name: str,
) -> None:
    """Files under ``cutoff`` ``threads`` at a time (each is one request), then the
    others one by one (each already moves its parts or ranges in parallel).

    The first exception cancels the small files not yet started and is raised.
    """
    small = [a for a in actions if a.size < cutoff]
    if small:
        with cf.ThreadPoolExecutor(
            min(threads, len(small)), thread_name_prefix=thread_name
        ) as pool:
            futures = [pool.submit(one, a) for a in small]
            try:
                for fut in cf.as_completed(futures):
                    fut.result()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    for action in actions:
        if action.size >= cutoff:
            one(action)


_report_lock = threading.Lock()


def _record(
    report: SyncReport, tracker: _Tracker, key: str, done: list[str], work: Callable[[], int]
) -> None:
    """Run one action's ``work`` (it returns the bytes it moved) and record the
    outcome in ``report``: a failed action is reported and the others go on."""
    try:
        moved = work()
    except Exception as exc:
        with _report_lock:
            report.failed.append((key, _message(exc)))
        tracker.add(failed=1)
        return
    with _report_lock:
        done.append(key)
        report.bytes += moved
    tracker.add(actions=1)


def _run_uploads(
    ws: Any,
    plan: SyncPlan,
    actions: list[SyncAction],
    report: SyncReport,
    tracker: _Tracker,
    config: TransferConfig,
) -> None:
    if not actions:
        return
    engine = _engine(ws, config)

    def one(action: SyncAction) -> None:
        f = plan._local[action.key]
        key = plan.remote_prefix + action.key
        spec = UploadSpec(
            source=f.path,
            stream=None,
            key=key,
            full_key=workspace_key(ws.prefix, key),
            size=f.size,
            content_type=guess_content_type(key),
            metadata={},
        )

        def upload() -> int:
            result: UploadResult = engine.upload_file(
                spec, Progress(_byte_counter(tracker), f.size)
            )
            return result.size

        _record(report, tracker, action.key, report.uploaded, upload)

    try:
        _small_together_then_large(
            actions, one, engine.threshold, config.file_concurrency, "sts-bridge-put"
        )
    finally:
        engine.close()


def _run_remote_deletes(
    ws: Any,
    plan: SyncPlan,
    actions: list[SyncAction],
    report: SyncReport,
    tracker: _Tracker,
    config: TransferConfig,
) -> None:
    if not actions:
        return
    engine = _engine(ws, config)

    def one(action: SyncAction) -> None:
        full_key = plan._remote[action.key].full_key

        def delete() -> int:
            engine.call("DELETE", full_key, f"deleting {action.key!r}", ok=frozenset({200, 204}))
            return 0

        _record(report, tracker, action.key, report.deleted, delete)

    try:
        with cf.ThreadPoolExecutor(
            min(config.file_concurrency, len(actions)),
            thread_name_prefix="sts-bridge-delete",
        ) as pool:
            list(pool.map(one, actions))
    finally:
        engine.close()


def _run_downloads(
    ws: Any,
    plan: SyncPlan,
    actions: list[SyncAction],
    report: SyncReport,
    tracker: _Tracker,
    config: TransferConfig,
) -> None:
    if not actions:
        return
    engine = DownloadEngine(ws, config)
    root = plan.local_root

    def one(action: SyncAction) -> None:
        obj = plan._remote[action.key]
        target = root.joinpath(*action.key.split("/"))

        def download() -> int:
            target.parent.mkdir(parents=True, exist_ok=True)
            engine.download(
                obj.full_key, plan.remote_prefix + action.key, target, _byte_counter(tracker)
            )
            return obj.size

        _record(report, tracker, action.key, report.downloaded, download)

    try:
        _small_together_then_large(
            actions, one, engine.part_size, config.file_concurrency, "sts-bridge-get-many"
        )
    finally:
        engine.close()


def _run_local_deletes(
    plan: SyncPlan, actions: list[SyncAction], report: SyncReport, tracker: _Tracker
) -> None:
    for action in actions:
        path = plan._local[action.key].path
        try:
            path.unlink()
        except OSError as exc:
            report.failed.append((action.key, f"could not delete {path}: {exc.strerror}"))
            tracker.add(failed=1)
            continue
        report.deleted.append(action.key)
        tracker.add(actions=1)


def _remove_stale_parts(plan: SyncPlan, report: SyncReport) -> None:
    """Remove the temp files that killed downloads left in the local folder."""
    for path in plan.stale_parts:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not remove the stale temp file %s: %s", path, exc.strerror)
            continue
        report.removed_part_files.append(str(path))
    if report.removed_part_files:
        log.info("removed %d stale temp file(s)", len(report.removed_part_files))


def _message(exc: BaseException) -> str:
    from sts_bridge.errors import StsBridgeError

    if isinstance(exc, StsBridgeError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
