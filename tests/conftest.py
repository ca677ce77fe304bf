"""Shared fixtures: the real benchmark data in ../shared/data (skip with a reason when absent)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see rlvr/__init__.py)
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RLVR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real benchmark data; tests using it skip when it is absent (a user's own clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (set RLVR_SHARED_DATA)")
    return SHARED_DATA
