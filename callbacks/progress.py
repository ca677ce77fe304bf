"""The console view of a run: one line per N steps with what the current stage is doing."""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

#: (metric, label) shown per stage; a metric the step did not produce is left out, never shown stale
STAGE_FIELDS = {
    "sft": (("train/sft_loss", "sft_loss"),),
    "rl": (("reward/total", "reward"), ("train/kl", "kl"), ("train/entropy", "entropy")),
}


class ProgressLog(L.Callback):
    """Replaces Lightning's progress bar (set ``trainer.enable_progress_bar: false``).

    Every ``every_n_steps`` optimizer steps it prints ``step N/max | stage | metrics | s/step``: in SFT the SFT
    loss, in RL the reward, per-task accuracy, KL and entropy, in a hybrid stage both; s/step is the wall time
    per step since the previous line (a validation in between included). On a terminal the line
    is rewritten in place each step; otherwise (a log file, CI) a new line is printed every N steps. After
    every validation it prints the validation accuracies.

    Args:
        every_n_steps: steps between lines when stdout is not a terminal.
    """

    def __init__(self, every_n_steps: int = 10):
        self.every_n_steps = max(1, every_n_steps)
        self._t0: float | None = None
        self._step0 = self._printed = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0, self._step0 = time.perf_counter(), trainer.global_step
        self._printed = trainer.global_step // self.every_n_steps

    @rank_zero_only
    def on_train_end(self, trainer, pl_module) -> None:
        if sys.stdout.isatty():
            print(flush=True)  # leave the rewritten line in place

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, tty = trainer.global_step, sys.stdout.isatty()
        # a batch may take several optimizer steps (steps_per_generation): print when a multiple of N is passed
        due = step // self.every_n_steps > self._printed or step == trainer.max_steps
        if not tty and not due:
            return
        self._printed = step // self.every_n_steps
        metrics = getattr(getattr(pl_module, "step_log", None), "last", {}) or {}
        now = time.perf_counter()
        line = self.format_line(step, trainer.max_steps, metrics, self._seconds_per_step(step, now))
        print(("\r" + line.ljust(110)) if tty else line, end="" if tty else "\n", flush=True)
        # the next lines time the steps after this one, so an RL stage's pace is not averaged with SFT's
        if due:
            self._t0, self._step0 = now, step

    @rank_zero_only
    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        vals = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not vals:
            return
        parts = [f"{k[4:]} {v:.3f}" for k, v in sorted(vals.items()) if k.endswith("accuracy")]
        prefix = "\n" if sys.stdout.isatty() else ""
        print(f"{prefix}validation at step {trainer.global_step}: " + " | ".join(parts), flush=True)

    def _seconds_per_step(self, step: int, now: float) -> float | None:
        done = step - self._step0
        return (now - self._t0) / done if self._t0 is not None and done > 0 else None

    @staticmethod
    def format_line(step: int, max_steps: int, metrics: dict, s_per_step: float | None) -> str:
        """``step 12/440 | sft | sft_loss 1.234 | 0.41 s/step`` (fields of the stage the step was in)."""
        lam = float(metrics.get("train/sft_weight", 1.0))
        stage = "sft" if lam >= 1.0 else "rl" if lam <= 0.0 else f"hybrid λ={lam:.2f}"
        fields = STAGE_FIELDS["sft"] * (lam > 0) + STAGE_FIELDS["rl"] * (lam < 1)
        parts = [f"step {step}/{max_steps if max_steps and max_steps > 0 else '?'}", stage]
        parts += [f"{label} {float(metrics[key]):.3f}" for key, label in fields if key in metrics]
        if lam < 1:
            parts += [
                f"acc/{k.split('/', 1)[1]} {float(v):.2f}"
                for k, v in sorted(metrics.items())
                if k.startswith("accuracy/")
            ]
        if s_per_step is not None:
            parts.append(f"{s_per_step:.2f} s/step")
        return " | ".join(parts)
