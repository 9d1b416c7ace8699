"""TransferConfig: frozen, validated, the stall timeout read from the environment."""

from __future__ import annotations

import dataclasses

import pytest
from fake_targets import NoRequestTarget

from sts_bridge.errors import InvalidArgumentError
from sts_bridge.s3.config import DEFAULT_STALL_TIMEOUT, TransferConfig
from sts_bridge.s3.download import DownloadEngine
from sts_bridge.s3.upload import UploadEngine


def test_the_config_is_frozen() -> None:
    config = TransferConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.part_size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "knobs",
    [
        {"part_size": 0},
        {"multipart_threshold": -1},
        {"part_concurrency": 0},
        {"file_concurrency": 1.5},
        {"range_size": True},
        {"range_concurrency": 0},
        {"direct_io_min_size": -1},
        {"stall_timeout": 0},
        {"stall_timeout": float("nan")},
    ],
)
def test_a_bad_knob_is_refused_with_a_hint(knobs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError, match=next(iter(knobs))) as info:
        TransferConfig(**knobs)  # type: ignore[arg-type]
    assert info.value.hint and info.value.hint != InvalidArgumentError("x").hint


def test_the_stall_timeout_default_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STS_BRIDGE_STALL_TIMEOUT", "2")
    assert TransferConfig().stall_timeout == 2.0
    assert TransferConfig(stall_timeout=7).stall_timeout == 7
    monkeypatch.delenv("STS_BRIDGE_STALL_TIMEOUT")
    assert TransferConfig().stall_timeout == DEFAULT_STALL_TIMEOUT


def test_each_engine_takes_its_own_knobs() -> None:
    config = TransferConfig(
        part_size=6 << 20,
        multipart_threshold=7 << 20,
        part_concurrency=2,
        file_concurrency=3,
        range_size=9 << 20,
        range_concurrency=5,
        direct_io_min_size=None,
        stall_timeout=4,
    )
    up = UploadEngine(NoRequestTarget(), config, resumable=False)  # type: ignore[arg-type]
    assert (up.part_size, up.threshold, up.concurrency, up.small_concurrency) == (
        6 << 20,
        7 << 20,
        2,
        3,
    )
    assert up.resumable is False and up.stall == 4
    down = DownloadEngine(NoRequestTarget(), config)  # type: ignore[arg-type]
    assert (down.part_size, down.concurrency, down.small_concurrency) == (9 << 20, 5, 3)
    assert down.direct_io_min_size is None and down.stall == 4
    assert not hasattr(down, "threshold") and not hasattr(down, "resumable")


def test_the_part_size_is_chosen_per_file_unless_given() -> None:
    assert TransferConfig().part_size is None
    auto = UploadEngine(NoRequestTarget(), TransferConfig(), resumable=False)  # type: ignore[arg-type]
    assert auto.part_size is None  # choose_part_size(size, None) decides per file
    with pytest.raises(InvalidArgumentError, match="or None"):
        TransferConfig(part_size=0)
