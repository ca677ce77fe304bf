"""It learns: the default `make train TASK=math` run, read from its TensorBoard curves (slow: about 9-11 minutes on
2 CPU cores; `make test-learning`, run by `.ci/run`).

SFT on gold solutions must bring greedy validation accuracy (200 distinct held-out problems, strict format) from
the untrained model's ~0 to at least 20%; the GRPO stage after it, trained on nothing but the verifier's reward,
must not lose validation accuracy (2 points of slack: 4 of 200 prompts) and must raise the correctness reward
itself on its training rollouts. Measured on 2 cores with constraints.txt's package versions: 0.000 -> 0.290 at the
switch (step 300) -> 0.290 at the end (step 350) in a working checkout, 0.335 on a fresh clone (the RL steps are not
bit-identical between runs); correctness 0.539 -> 0.564 and 0.542 -> 0.569 (first -> last third of the RL steps).
(The +10-point RL gain the learning issue asks for is not reached: see the README's "What the default run learns".)
"""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlvr.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def curves(root: Path, *tags: str) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from every event file under ``root``."""
    out: dict[str, dict[int, float]] = {t: {} for t in tags}
    for path in sorted(glob.glob(str(root / "**" / "events.out.tfevents*"), recursive=True)):
        acc = EventAccumulator(path, size_guidance={"scalars": 0})
        acc.Reload()
        for tag in tags:
            if tag in acc.Tags()["scalars"]:
                out[tag].update({e.step: e.value for e in acc.Scalars(tag)})
    missing = [t for t, v in out.items() if not v]
    assert not missing, f"{missing} never logged under {root}"
    return out


@pytest.mark.slow
def test_default_math_run_learns_in_sft_and_rl_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    base = ["--config", str(CONFIGS / "base.yaml"), "--config", str(CONFIGS / "task" / "math.yaml")]
    assert main(["fit", *base, f"--trainer.logger.init_args.save_dir={tmp_path}"]) == 0
    c = curves(tmp_path, "val/math/accuracy", "val/math/lenient_accuracy", "reward/math/correctness",
               "train/pg_loss")  # fmt: skip
    acc, lenient = c["val/math/accuracy"], c["val/math/lenient_accuracy"]
    switch = min(c["train/pg_loss"])  # the first GRPO step; ValidationPoints validates right before it
    before = max(s for s in acc if s <= switch)  # Lightning logs a validation after step s at s - 1
    start, at_switch, end = acc[0], acc[before], acc[max(acc)]
    print(f"val/math/accuracy step 0: {start:.3f}  switch (step {switch}): {at_switch:.3f}  end: {end:.3f}; "
          f"lenient {lenient[0]:.3f} / {lenient[before]:.3f} / {lenient[max(lenient)]:.3f}")  # fmt: skip
    assert start <= 0.05, acc  # the untrained model
    assert at_switch >= 0.20, acc  # SFT
    assert end >= at_switch - 0.02, acc  # RL on the reward alone does not undo SFT
    correct = [v for s, v in sorted(c["reward/math/correctness"].items()) if s >= switch]
    k = len(correct) // 3  # the first and last third of the RL stage
    first, last = sum(correct[:k]) / k, sum(correct[-k:]) / k
    print(f"reward/math/correctness: first {k} RL steps {first:.3f}, last {k} {last:.3f}")
    assert last > first, (first, last)
