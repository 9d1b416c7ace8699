"""Range bounds of single-request reads (fsspec's slice-like start/end)."""

from __future__ import annotations

import pytest

from sts_bridge.s3.objects import empty_range, needs_size, range_header


@pytest.mark.parametrize(
    ("start", "end", "header"),
    [
        (None, None, None),
        (0, None, None),
        (None, 10, "bytes=0-9"),
        (5, 10, "bytes=5-9"),
        (5, None, "bytes=5-"),
        (-4, None, "bytes=-4"),
    ],
)
def test_range_header(start: int | None, end: int | None, header: str | None) -> None:
    assert range_header(start, end) == header


@pytest.mark.parametrize(("start", "end"), [(None, -1), (0, -3), (-4, 10), (-4, -1)])
def test_bounds_counted_from_the_end_need_the_size(start: int | None, end: int) -> None:
    assert needs_size(start, end)
    with pytest.raises(ValueError, match="needs the size"):
        range_header(start, end)


@pytest.mark.parametrize(
    ("start", "end", "empty"),
    [
        (0, 0, True),
        (5, 5, True),
        (7, 3, True),
        (None, 0, True),
        (0, 1, False),
        (None, None, False),
        (-4, None, False),
        (3, None, False),
    ],
)
def test_empty_range(start: int | None, end: int | None, empty: bool) -> None:
    assert empty_range(start, end) is empty
