"""`syncd serve`'s interpreter settings (controllers.cli.tune_interpreter)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from controllers.cli import GC_YOUNG_THRESHOLD, SWITCH_INTERVAL_S, tune_interpreter


@pytest.fixture
def restored() -> Iterator[None]:
    """Put the test process back the way it was."""
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("restored")
def test_tune_interpreter_freezes_the_heap_and_sets_the_thresholds() -> None:
    before = gc.get_threshold()
    tune_interpreter()
    assert gc.get_freeze_count() > 1000  # the modules, classes and objects made so far
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
    assert SWITCH_INTERVAL_S < 0.005 and GC_YOUNG_THRESHOLD > 700  # CPython's defaults
