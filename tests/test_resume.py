"""Exact resume through the CLI a user runs: last.ckpt is written, loads with weights_only=True, and after a
SIGKILL (or SIGTERM) ``--ckpt_path last`` continues in the same run folder with the same curves."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from run_cli import fit_command
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]


def config(tmp_path: Path, max_steps: int, switch_step: int, every: int, val_every: int) -> Path:
    cfg = {
        "trainer": {"max_steps": max_steps, "val_check_interval": val_every,
                    "logger": {"init_args": {"save_dir": str(tmp_path / "runs"), "name": "t"}}},
        "checkpoint": {"every_n_steps": every},
        "model": {
            "tiny": {"vocab_size": 600, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1,
                     "intermediate_size": 128, "corpus_size": 300},
            "completions_per_prompt": 4, "max_new_tokens": 24, "lr": 1.0e-3, "log_samples_every_n_steps": 0,
            "hybrid": {"schedule": "step", "start": 1.0, "end": 0.0, "switch_step": switch_step},
            "entropy_control": {"target": 10.0, "lr": 0.01},  # its state must survive the resume too
        },
        "data": {"prompts_per_step": 4, "val_prompts_per_task": 8, "val_batch_size": 8,
                 "tasks": [{"class_path": "rlvr.domains.math.MathTask", "init_args": {"num_train": 64, "num_val": 8}}]},
    }  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def rlvr_fit(cfg: Path, *extra: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RLVR_CACHE": str(cwd / "cache"), "HF_HUB_OFFLINE": "1"}
    cmd = fit_command(cfg, extra=extra)
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def saved_step(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir))  # every event file of the folder, orphaned events purged
    acc.Reload()
    return {
        t: [(e.step, e.value) for e in acc.Scalars(t)]
        for t in acc.Tags()["scalars"]
        if not t.startswith("timing_s/")
    }


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_curves(tmp_path):
    # 12 steps, last.ckpt every 3, killed after the step-6 checkpoint, SFT -> RL switch at step 8 (after the kill)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    finish(rlvr_fit(config(tmp_path / "a", 12, 8, 3, 6), cwd=tmp_path / "a"))
    cfg_b = config(tmp_path / "b", 12, 8, 3, 6)
    ckpt = tmp_path / "b/runs/t/version_0/checkpoints/last.ckpt"
    proc = rlvr_fit(cfg_b, cwd=tmp_path / "b")
    deadline = time.time() + 600
    while saved_step(ckpt) < 6:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = saved_step(ckpt)
    assert 6 <= killed_at < 12
    out = finish(rlvr_fit(cfg_b, "--ckpt_path", "last", cwd=tmp_path / "b"))
    assert "Restored all states" in out or "Restoring states" in out, out[-2000:]
    assert sorted(p.name for p in (tmp_path / "b/runs/t").iterdir()) == ["version_0"]  # the same run folder

    full, resumed = scalars(tmp_path / "a/runs/t/version_0"), scalars(tmp_path / "b/runs/t/version_0")
    assert set(full) == set(resumed)
    assert "reward/total" in full and "train/pg_loss" in full and "val/math/accuracy" in full
    for tag in full:
        assert [s for s, _ in full[tag]] == [s for s, _ in resumed[tag]], tag  # no step twice, none missing
    differ = [(tag, step, a, b) for tag in sorted(full) for (step, a), (_, b) in zip(full[tag], resumed[tag])
              if a != pytest.approx(b, rel=1e-5, abs=1e-6)]  # fmt: skip
    assert not differ, (killed_at, differ[:10])
    worst = max(abs(a - b) for tag in full for (_, a), (_, b) in zip(full[tag], resumed[tag]))
    print(
        f"killed after step {killed_at}; {sum(map(len, full.values()))} points on {len(full)} curves; "
        f"largest difference {worst:.3g}"
    )
    after = [s for s, _ in full["train/pg_loss"]]
    assert min(after) == 8 and max(after) == 11  # RL steps, all after the resume point


def test_sigterm_saves_last_ckpt_and_resume_continues_in_the_same_folder(tmp_path):
    cfg = config(tmp_path, 400, 2, 0, 1000)  # no periodic checkpoint: only the signal writes one
    proc = rlvr_fit(cfg, cwd=tmp_path)
    run = tmp_path / "runs/t/version_0"
    deadline = time.time() + 300
    while not list(run.glob("events.out.tfevents*")) or not (run / "hparams.yaml").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(3.0)  # into the RL steps (~0.2 s each: the run would take over a minute)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    ckpt = run / "checkpoints/last.ckpt"
    step = saved_step(ckpt)  # loads with weights_only=True
    assert 0 < step < 400, out[-2000:]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert {"optimizer_states", "lr_schedulers", "MixtureDataModule", "rlvr", "loops"} <= set(state)
    assert {"torch", "numpy", "python"} <= set(state["rlvr"]["rng"][0])
    assert state["MixtureDataModule"]["stream"]["draws"] == 4 * step  # the consumed position, not prefetched
    out = finish(rlvr_fit(cfg, "--ckpt_path", "last", "--trainer.max_steps", str(step + 2), cwd=tmp_path))
    assert sorted(p.name for p in (tmp_path / "runs/t").iterdir()) == ["version_0"]
    assert saved_step(ckpt) == step + 2


def test_resume_names_the_model_settings_that_differ_from_the_checkpoint(tmp_path):
    cfg = config(tmp_path, 2, 1, 1, 1000)
    finish(rlvr_fit(cfg, cwd=tmp_path))
    out = finish(rlvr_fit(cfg, "--ckpt_path", "last", "--trainer.max_steps", "3", cwd=tmp_path))
    assert "model settings" not in out  # same settings: nothing to say
    # 'last' resumes with the command line's settings, and says which differ from the checkpoint's
    out = finish(
        rlvr_fit(cfg, "--ckpt_path", "last", "--trainer.max_steps", "4", "--model.lr", "0.002", cwd=tmp_path)
    )
    assert "will not repeat the interrupted run: model.lr: 0.001 -> 0.002" in out, out[-2000:]
    # a checkpoint file: Lightning restores the saved settings (now lr 0.002), dropping the given 0.003
    ckpt = tmp_path / "runs/t/version_0/checkpoints/last.ckpt"
    out = finish(
        rlvr_fit(
            cfg, "--ckpt_path", str(ckpt), "--trainer.max_steps", "5", "--model.lr", "0.003", cwd=tmp_path
        )
    )
    assert "replace the ones given (checkpoint -> given): model.lr: 0.002 -> 0.003" in out, out[-2000:]
    assert "will not repeat" not in out
