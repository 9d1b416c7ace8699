"""The reference service's lag probe (examples/results_service.py, RESULTS_LAG_PROBE)
times garbage collections: a pause of the whole interpreter the loop's lag
could otherwise not be told apart from."""

from __future__ import annotations

import gc
import importlib.util
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "results_service.py"


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("results_service_probe_under_test", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_collection_is_counted_and_timed_by_generation() -> None:
    lag: dict[str, Any] = {"gc": {}}
    pauses = _example()._GcPauses(lag)
    gc.callbacks.append(pauses)
    try:
        gc.collect(2)
        gc.collect(2)
        gc.collect(0)
    finally:
        gc.callbacks.remove(pauses)
    assert lag["gc"]["2"][0] == 2 and lag["gc"]["0"][0] >= 1
    assert lag["gc"]["2"][1] > 0 and pauses.total_ms >= lag["gc"]["2"][1]
