"""It learns: the default `make train TASK=math` run lifts validation accuracy well above the untrained
model's (slow: about 10 minutes on 2 CPU cores)."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlvr.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def last_scalar(root: Path, tag: str) -> float:
    events = sorted(glob.glob(str(root / "**" / "events.out.tfevents*"), recursive=True))
    values = []
    for path in events:
        acc = EventAccumulator(path)
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values += [(e.wall_time, e.value) for e in acc.Scalars(tag)]
    assert values, f"{tag} was never logged under {root}"
    return max(values)[1]


@pytest.mark.slow
def test_default_math_run_learns(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    base = ["--config", str(CONFIGS / "base.yaml"), "--config", str(CONFIGS / "task" / "math.yaml")]
    before_dir, after_dir = tmp_path / "before", tmp_path / "after"
    assert main(["validate", *base, f"--trainer.logger.init_args.save_dir={before_dir}"]) == 0
    untrained = last_scalar(before_dir, "val/accuracy")
    assert main(["fit", *base, f"--trainer.logger.init_args.save_dir={after_dir}"]) == 0
    trained = last_scalar(after_dir, "val/accuracy")
    print(f"val/accuracy untrained={untrained:.3f} trained={trained:.3f}")
    # 200 greedy val prompts: 0/200 -> >= 16/200 is far outside noise (the run measured ~0.1-0.17)
    assert trained >= untrained + 0.08, (untrained, trained)
