"""Two CPU processes (gloo) through the CLI a user runs: a NaN on one rank's micro-batch cannot hang the run,
both ranks end with the same weights, and they equal the one-process run over the same prompts."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from run_cli import fit_command
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
STEPS = 4


def config(tmp: Path, prompts_per_rank: int, poison_rank: int, dynamic_sampling: bool) -> Path:
    cfg = {
        "trainer": {"max_steps": STEPS, "val_check_interval": 1000, "accelerator": "cpu",
                    "logger": {"init_args": {"save_dir": str(tmp / "runs"), "name": "t"}},
                    "callbacks": [
                        {"class_path": "tests.ddp_helpers.PoisonMicroBatch", "init_args": {"step": 1, "rank": poison_rank}},
                        {"class_path": "tests.ddp_helpers.DumpWeights", "init_args": {"out": str(tmp / "weights")}},
                    ]},
        "checkpoint": {"every_n_steps": 0},
        "model": {
            "tiny": {"vocab_size": 600, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1,
                     "intermediate_size": 128, "corpus_size": 300},
            "rollout": {"engine": "tests.ddp_helpers.ScriptedEngine"},
            "completions_per_prompt": 4, "micro_batch_size": 3, "max_new_tokens": 24, "lr": 1.0e-3,
            "log_samples_every_n_steps": 0, "scale_rewards": "batch",
            "loss": {"loss_type": "dapo", "beta": 0.04},
            "dapo": {"dynamic_sampling": dynamic_sampling, "max_sampling_rounds": 2},
            "hybrid": {"schedule": "constant", "start": 0.0},
        },
        "data": {"prompts_per_step": prompts_per_rank, "val_prompts_per_task": 4, "val_batch_size": 4,
                 "tasks": [{"class_path": "rlvr.domains.math.MathTask", "init_args": {"num_train": 64, "num_val": 4, "difficulty": 2}}]},
    }  # fmt: skip
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fit(tmp: Path, devices: int, **kw) -> tuple[dict[str, torch.Tensor], dict, float]:
    tmp.mkdir()
    cfg = config(tmp, **kw)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RLVR_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = fit_command(REPO / "configs/strategy/ddp.yaml", cfg, extra=(f"--trainer.devices={devices}",))
    t = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=400
    )  # a hang fails here
    wall = time.perf_counter() - t
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    weights = [torch.load(tmp / f"weights/rank{r}.pt", weights_only=True) for r in range(devices)]
    for other in weights[1:]:
        assert other.keys() == weights[0].keys()
        assert all(torch.equal(weights[0][k], other[k]) for k in other), "ranks ended with different weights"
    acc = EventAccumulator(str(tmp / "runs/t/version_0"))
    acc.Reload()
    logged = {t: {e.step: e.value for e in acc.Scalars(t)} for t in acc.Tags()["scalars"]}
    print(f"{devices} process(es), {kw}: {wall:.1f} s")
    return weights[0], logged, wall


@pytest.mark.slow
def test_two_ranks_with_a_nan_on_one_equal_the_one_process_run(tmp_path):
    one, logged_1, _ = fit(tmp_path / "one", 1, prompts_per_rank=4, poison_rank=0, dynamic_sampling=False)
    two, logged_2, _ = fit(tmp_path / "two", 2, prompts_per_rank=2, poison_rank=1, dynamic_sampling=False)
    assert logged_2["train/skipped_steps"][STEPS - 1] == 1.0  # rank 1's NaN skipped the step on both ranks
    assert logged_1["train/skipped_steps"][STEPS - 1] == 1.0
    initial = load_file(next((tmp_path / "one/cache").rglob("model.safetensors")))
    moved = max(float((one[k] - initial[k]).abs().max()) for k in initial if k in one)
    apart = max(float((two[k] - one[k]).abs().max()) for k in one)
    print(f"largest weight change {moved:.2e}, largest 2-rank vs 1-process difference {apart:.2e}")
    assert moved > 1e-3  # three real updates happened
    assert apart < 2e-5  # the same updates as one process over the union of the ranks' prompts
    for tag in ("reward/total", "train/pg_loss", "train/kl", "train/grad_norm"):
        for step, v in logged_1[tag].items():
            if step == 1:  # the skipped step: its loss is that of the micro-batches that stayed finite
                continue
            assert logged_2[tag][step] == pytest.approx(v, rel=1e-4, abs=1e-6), (tag, step)


@pytest.mark.slow
def test_dynamic_sampling_refills_on_two_ranks_do_not_hang(tmp_path):
    _, logged, _ = fit(tmp_path / "ds", 2, prompts_per_rank=2, poison_rank=0, dynamic_sampling=True)
    assert max(logged["rollout/dynamic_sampling_dropped_groups"].values()) > 0  # uneven refills happened
    assert logged["train/skipped_steps"][STEPS - 1] == 1.0
