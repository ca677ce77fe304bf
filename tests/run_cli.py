"""The ``rlvr fit`` command line the subprocess tests run, as a user would type it."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fit_command(*configs: Path | str, extra: tuple[str, ...] = ()) -> list[str]:
    """``python -m rlvr fit --config configs/base.yaml --config <each of configs> <extra>``."""
    files = [REPO / "configs/base.yaml", *configs]
    return [sys.executable, "-m", "rlvr", "fit", *[a for f in files for a in ("--config", str(f))], *extra]
