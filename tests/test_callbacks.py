"""Callback logic on stand-in trainer/module objects: KL runaway handling and the SFT -> RL switch."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import pytest

from callbacks import KLMonitor, StageSwitch


class Module(SimpleNamespace):
    def log(self, *args, **kwargs):
        pass

    def override_sft_weight(self, lam):  # the public method StageSwitch drives (RLVRModule's)
        self.stage_sft_weight = lam


def test_kl_monitor_stops_after_patience_violations():
    cb = KLMonitor(max_kl=1.0, patience=2, stop=True)
    trainer = SimpleNamespace(callback_metrics={}, global_step=0, should_stop=False)
    for kl, expect_stop in [(5.0, False), (0.5, False), (5.0, False), (6.0, True)]:
        trainer.callback_metrics["train/kl"] = kl
        with pytest.warns(UserWarning) if expect_stop else nullcontext():
            cb.on_train_batch_end(trainer, Module(), None, None, 0)
        assert trainer.should_stop is expect_stop
    assert cb.peak == 6.0


def test_stage_switch_on_metric_or_at_the_latest_step():
    cb = StageSwitch(metric="val/format_rate", threshold=0.8, min_sft_steps=2, max_sft_steps=10)
    module = Module(stage_sft_weight=None)
    trainer = SimpleNamespace(global_step=1, callback_metrics={"val/format_rate": 0.9})
    cb.on_train_batch_start(trainer, module, None, 0)
    assert module.stage_sft_weight == 1.0  # SFT until the switch
    cb.on_validation_end(trainer, module)
    assert cb.switched_at is None  # metric reached, but before min_sft_steps
    trainer.global_step = 3
    cb.on_validation_end(trainer, module)
    assert cb.switched_at == 3 and module.stage_sft_weight == 0.0
    late = StageSwitch(max_sft_steps=5)
    module2 = Module(stage_sft_weight=None)
    late.on_train_batch_start(SimpleNamespace(global_step=5, callback_metrics={}), module2, None, 0)
    assert late.switched_at == 5 and module2.stage_sft_weight == 0.0


def test_progress_line_shows_only_the_current_stage():
    from callbacks.progress import ProgressLog

    sft = ProgressLog.format_line(
        3, 10, {"train/sft_weight": 1.0, "train/sft_loss": 1.25, "reward/total": 9.0}, 0.5
    )
    assert sft == "step 3/10 | sft | sft_loss 1.250 | 0.50 s/step"
    rl = ProgressLog.format_line(
        8, 10, {"train/sft_weight": 0.0, "reward/total": 1.5, "train/kl": 0.01, "accuracy/math": 0.25,
                "train/sft_loss": 2.0}, None,
    )  # fmt: skip
    assert rl == "step 8/10 | rl | reward 1.500 | kl 0.010 | acc/math 0.25"  # no stale sft_loss
    assert ProgressLog.format_line(1, -1, {"train/sft_weight": 0.5}, None) == "step 1/? | hybrid λ=0.50"


def test_progress_pace_is_timed_since_the_previous_line(monkeypatch, capsys):
    import callbacks.progress as progress

    clock = iter([0.0, 10.0, 12.0])  # start, line at step 10 (1 s/step), line at step 20 (0.2 s/step)
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock, 12.0))
    monkeypatch.setattr(progress.sys.stdout, "isatty", lambda: False, raising=False)
    cb = progress.ProgressLog(every_n_steps=10)
    trainer = SimpleNamespace(global_step=0, max_steps=20)
    cb.on_train_start(trainer, None)
    for step in (10, 20):
        trainer.global_step = step
        cb.on_train_batch_end(trainer, SimpleNamespace(step_log=None), None, None, 0)
    lines = capsys.readouterr().out.splitlines()
    # the second line is 0.20 s/step, not the run's mean 0.60
    assert lines[0].endswith("1.00 s/step") and lines[1].endswith("0.20 s/step"), lines
