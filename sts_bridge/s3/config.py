"""``TransferConfig``: every knob of uploads, downloads and sync in one frozen value.

A :class:`~sts_bridge.Workspace` (and its
:class:`~sts_bridge.s3.transfers.TransferEngine`) is given one config and
uses it for every transfer; :meth:`sts_bridge.Workspace.with_transfer_config`
gives a workspace with other knobs. Upload knobs reach only the upload
engine, download knobs only the download engine.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

from sts_bridge.errors import InvalidArgumentError

# The engine logs under the public module's name.
log = logging.getLogger("sts_bridge.s3.transfers")

MiB = 1024 * 1024

#: Seconds without a byte moving (connect, send or receive) after which a
#: request to the store counts as stalled and is retried; with the 4 attempts
#: of :data:`~sts_bridge.retry.S3_RETRY` a dead endpoint is reported in about
#: two minutes.
DEFAULT_STALL_TIMEOUT = 25.0
STALL_TIMEOUT_ENV = "STS_BRIDGE_STALL_TIMEOUT"


def stall_timeout() -> float:
    """Seconds of no progress before a request to the store is retried.

    ``STS_BRIDGE_STALL_TIMEOUT`` overrides :data:`DEFAULT_STALL_TIMEOUT` (the
    fault tests use 2 s); a value that is not a positive number is ignored.
    It is the default of :attr:`TransferConfig.stall_timeout`.
    """
    text = os.environ.get(STALL_TIMEOUT_ENV, "").strip()
    if text:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if math.isfinite(value) and value > 0:
            return value
        log.warning("ignoring %s=%r: not a positive number of seconds", STALL_TIMEOUT_ENV, text)
    return DEFAULT_STALL_TIMEOUT


@dataclass(frozen=True)
class TransferConfig:
    """How transfers move bytes; every field has a default.

    :param part_size: bytes per part of a multipart upload (at least 5 MiB
        is used; more when the file would need over 10,000 parts).
        ``None`` (default): chosen per file, 8 MiB growing with the file so
        that it is cut into at most 32 parts, up to 64 MiB
        (:func:`~sts_bridge.s3.digests.choose_part_size`); streams, whose
        size is not known ahead, use 8 MiB. A resumed upload keeps the part
        size it started with.
    :param multipart_threshold: files this large or larger upload multipart.
    :param part_concurrency: parts of one upload in flight.
    :param file_concurrency: small files uploaded or downloaded at once
        (directory uploads, sync).
    :param range_size: bytes per ranged GET of a download.
    :param range_concurrency: ranges of one download in flight.
    :param direct_io_min_size: downloads this large or larger write with
        ``O_DIRECT`` where the file system allows it; ``None`` (default):
        never, every download writes through the page cache.
    :param stall_timeout: seconds without a byte moving before a request is
        retried (default: ``STS_BRIDGE_STALL_TIMEOUT`` or 25 s, read when
        the config is made).

    Raises :class:`~sts_bridge.errors.InvalidArgumentError` for a size or a
    concurrency below 1 (``part_size`` may also be ``None``), a negative
    ``direct_io_min_size`` or a stall timeout that is not a positive number.
    """

    part_size: int | None = None
    multipart_threshold: int = 16 * MiB
    part_concurrency: int = 4
    file_concurrency: int = 16
    range_size: int = 16 * MiB
    range_concurrency: int = 4
    direct_io_min_size: int | None = None
    stall_timeout: float = field(default_factory=stall_timeout)

    def __post_init__(self) -> None:
        for name in (
            *(() if self.part_size is None else ("part_size",)),
            "multipart_threshold",
            "part_concurrency",
            "file_concurrency",
            "range_size",
            "range_concurrency",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                automatic = " (or None: chosen per file)" if name == "part_size" else ""
                raise InvalidArgumentError(
                    f"TransferConfig.{name} must be a whole number of at least 1{automatic}, "
                    f"not {value!r}",
                    hint="give a positive integer (sizes are in bytes)",
                )
        direct = self.direct_io_min_size
        if direct is not None and (
            isinstance(direct, bool) or not isinstance(direct, int) or direct < 0
        ):
            raise InvalidArgumentError(
                f"TransferConfig.direct_io_min_size must be None or a size >= 0, not {direct!r}",
                hint="give a size in bytes, or None to never write with O_DIRECT",
            )
        stall = self.stall_timeout
        if (
            isinstance(stall, bool)
            or not isinstance(stall, (int, float))
            or not math.isfinite(stall)
            or stall <= 0
        ):
            raise InvalidArgumentError(
                f"TransferConfig.stall_timeout must be a positive number of seconds, not {stall!r}",
                hint="give seconds, e.g. 25",
            )
