"""Benchmark the live policy every N training steps and log ``eval/<benchmark>/<metric>``."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from rlvr.eval.benchmarks import parse_names
from rlvr.eval.runner import EvalSettings, evaluate_model, load_benchmarks
from rlvr.eval.spec import Loaded

#: bookkeeping entries of a benchmark's metrics that are not worth a curve
_NOT_LOGGED = ("n", "samples", "missing_db")


class PeriodicEval(L.Callback):
    """Runs a cheap evaluation (a few benchmarks, the first ``limit`` items, greedy, short generations) on
    ``pl_module.policy`` / ``pl_module.tokenizer`` every ``every_n_steps`` optimizer steps, on global rank 0
    only, and writes the metrics to every logger at the current step (also into ``trainer.callback_metrics``
    so a checkpoint callback can monitor them). Data is loaded once, at fit start, so a bad benchmark name
    or data root fails before training rather than at the first evaluation.

    Args:
        benchmarks: benchmark names (see :mod:`rlvr.eval.benchmarks`).
        every_n_steps: evaluate each time ``trainer.global_step`` (optimizer steps) passes a multiple of it.
        limit: items per benchmark.
        data_root: local data laid out like shared/data; None = hub datasets.
        max_new_tokens: generation budget (kept short: this runs inside training).
        n_samples: completions per generation item (1 = greedy).
        batch_size: prompts per ``generate`` call.
        eval_at_end: also evaluate when training ends (if the last step was not just evaluated).
        out_dir: if set, each evaluation's result files go to ``out_dir/step_<N>`` (for ``rlvr compare``).
    """

    def __init__(
        self,
        benchmarks: list[str],
        every_n_steps: int,
        limit: int = 20,
        data_root: str | None = None,
        max_new_tokens: int = 128,
        n_samples: int = 1,
        batch_size: int = 16,
        eval_at_end: bool = True,
        out_dir: str | None = None,
    ):
        if every_n_steps < 1:
            raise ValueError(f"PeriodicEval every_n_steps must be >= 1, got {every_n_steps}")
        self.names = parse_names(",".join(benchmarks))
        self.every_n_steps = every_n_steps
        self.data_root = data_root
        self.settings = EvalSettings(
            limit=limit, n_samples=n_samples, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        self.eval_at_end = eval_at_end
        self.out_dir = out_dir
        self.loaded: dict[str, Loaded] | None = None
        self.last_step = -1
        self.history: list[tuple[int, dict[str, float]]] = []  # (step, flat metrics), rank 0 only

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.loaded is None:
            loaded = load_benchmarks(self.names, self.data_root)
            # keep only what is evaluated: HellaSwag has 10k items
            self.loaded = {k: Loaded(v.items[: self.settings.limit], v.skipped) for k, v in loaded.items()}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx
    ) -> None:
        step, n = trainer.global_step, self.every_n_steps
        # crossing a multiple of n, not landing on one: a batch may take several optimizer steps
        if step > 0 and step // n > max(self.last_step, 0) // n:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.eval_at_end and trainer.global_step != self.last_step:
            self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Evaluate now (rank 0) and log; returns the flat ``eval/...`` metrics (empty on other ranks)."""
        step = self.last_step = trainer.global_step
        if not trainer.is_global_zero:
            return {}
        if self.loaded is None:
            self.on_fit_start(trainer, pl_module)
        start = time.perf_counter()
        run = evaluate_model(pl_module.policy, pl_module.tokenizer, self.loaded, self.settings)
        flat = {
            f"eval/{bench}/{name}": float(value)
            for bench, metrics in run.metrics.items()
            for name, value in metrics.items()
            if name not in _NOT_LOGGED and isinstance(value, (int, float)) and value == value  # drop NaN
        }
        flat["timing_s/eval"] = time.perf_counter() - start
        for logger in trainer.loggers:
            logger.log_metrics(flat, step=step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in flat.items()})
        self.history.append((step, flat))
        if self.out_dir:
            from rlvr.eval.report import run_report
            from rlvr.eval.store import write_run

            run.info.update({"step": step, "benchmarks": self.names, "data_root": self.data_root})
            write_run(Path(self.out_dir) / f"step_{step}", run, run_report(run, f"Evaluation at step {step}"))
        summary = ", ".join(f"{k.removeprefix('eval/')}={v:.3f}" for k, v in flat.items() if k.startswith("eval/")
                            and not k.endswith("_per_s"))  # fmt: skip
        rank_zero_info(f"step {step} eval: {summary}")
        return flat

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = state.get("last_step", -1)
