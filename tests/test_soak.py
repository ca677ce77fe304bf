"""10,000 programs through one pool: memory, descriptors and leftover processes stay flat (make test-slow)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak_sandbox.py"


@pytest.mark.slow
def test_soak_of_10000_programs_leaks_nothing():
    spec = importlib.util.spec_from_file_location("soak_sandbox", SCRIPT)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    start, end, _, correct = soak.soak(10_000, 2)
    assert correct == 5_000  # the four right solutions of every eight
    assert (end["rss_kb"] - start["rss_kb"]) / 1024 < 50, (start, end)
    assert end["fds"] <= start["fds"], (start, end)
    assert end["leftovers"] == 0, end
