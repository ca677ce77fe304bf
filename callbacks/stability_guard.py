"""Catch a diverging update, put back the last good weights and optimizer state, and retry more gently."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import deque

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

ACTIONS = ("lr", "beta")
MIN_HISTORY = 3  # good steps of KL needed before "a multiple of its median" means anything


class StabilityGuard(L.Callback):
    """After every training step, checks the update for signs of divergence; on a trip it restores the last
    good state and retries with a smaller learning rate or a larger KL coefficient β.

    A trip is any of: a non-finite loss or gradient (the module has already skipped that update on every
    rank, see ``RLVRModule.optimizer_step_guarded``, so the bad gradient never lands); ``train/kl`` that is
    non-finite, above ``max_kl``, or above ``kl_spike_factor`` × the median of the last ``kl_window`` good
    steps (and above ``min_kl``); ``train/is_ratio/max`` (π_θ / π_old, the importance ratio) non-finite or
    above ``max_is_ratio``. Then the policy's trainable parameters (with LoRA: the adapters only) and the
    optimizer state go back to the last good snapshot, the rollout engine gets those weights, and

    - ``action=lr``: the optimizer's learning rate and the scheduler's base learning rates are multiplied
      by ``lr_factor`` (warm-up and decay keep their shape);
    - ``action=beta``: ``model.loss.beta`` is multiplied by ``beta_factor`` (it needs ``beta > 0``: with
      β = 0 there is no reference policy to pull towards).

    Each trip warns once; after ``max_retries`` trips the next one restores the good state and stops
    training. ``stability/{trips,lr_scale,beta}`` are logged every step. With several updates per rollout
    (``steps_per_generation``, ``num_iterations``) a batch is checked once, on its last update's metrics and
    on whether any of its updates was skipped.

    Snapshots are CPU copies, taken every ``snapshot_every`` good steps; a snapshot becomes the restore
    point once the step trained from it passes the checks (a bad update shows in the metrics of the step
    after it). Trip counts, scales and the KL history are checkpointed; the learning rate and β are in the
    optimizer / scheduler / module state. A resumed run snapshots the state it resumed from. List this
    callback before checkpointing callbacks so a save after a trip holds the restored state. Sharded
    strategies (FSDP, DeepSpeed) are not supported: their parameters and optimizer state are per-rank shards.

    Args:
        max_kl: KL above which a step trips (None = no absolute limit).
        kl_spike_factor: a step trips when its KL exceeds this multiple of the running median (None = off).
        kl_window: good steps in the running median.
        min_kl: KL at or below this never counts as a spike (the median is ~0 at the start of RL).
        max_is_ratio: largest importance ratio π_θ / π_old before a step trips (None = off).
        snapshot_every: good steps between snapshots.
        action: ``lr`` (lower the learning rate) or ``beta`` (raise the KL coefficient) after a trip.
        lr_factor: learning-rate multiplier per trip (``action=lr``).
        beta_factor: β multiplier per trip (``action=beta``).
        max_retries: trips that are retried; the next one stops training.
    """

    def __init__(
        self,
        max_kl: float | None = None,
        kl_spike_factor: float | None = 10.0,
        kl_window: int = 20,
        min_kl: float = 0.1,
        max_is_ratio: float | None = 10.0,
        snapshot_every: int = 10,
        action: str = "lr",
        lr_factor: float = 0.5,
        beta_factor: float = 2.0,
        max_retries: int = 3,
    ):
        if action not in ACTIONS:
            raise ValueError(f"StabilityGuard action={action!r}: choose one of {list(ACTIONS)}")
        if not 0.0 < lr_factor < 1.0 or beta_factor <= 1.0:
            raise ValueError(f"StabilityGuard lr_factor={lr_factor}, beta_factor={beta_factor}: a trip must "
                             "lower the lr (0 < lr_factor < 1) or raise β (beta_factor > 1)")  # fmt: skip
        if min(kl_window, snapshot_every) < 1 or max_retries < 0:
            raise ValueError("StabilityGuard: kl_window and snapshot_every must be >= 1, max_retries >= 0")
        self.max_kl, self.kl_spike_factor, self.min_kl = max_kl, kl_spike_factor, min_kl
        self.max_is_ratio = max_is_ratio
        self.kl_window, self.snapshot_every, self.action = kl_window, snapshot_every, action
        self.lr_factor, self.beta_factor, self.max_retries = lr_factor, beta_factor, max_retries
        self.trips, self.lr_scale, self.good_steps = 0, 1.0, 0
        self.kl_history: deque[float] = deque(maxlen=kl_window)
        self._good: dict | None = None  # the restore point: {"step", "params", "optimizer"}
        self._candidate: dict | None = None  # the next restore point, once a step trained from it passes
        self._checked_step = self._skipped = 0

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self, trainer, pl_module) -> None:
        from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

        if isinstance(trainer.strategy, (FSDPStrategy, DeepSpeedStrategy)):
            raise ValueError("StabilityGuard restores whole parameters and optimizer state; under FSDP / "
                             "DeepSpeed they are per-rank shards: use strategy=ddp or drop the callback")  # fmt: skip
        if self.action == "beta" and pl_module.loss_cfg.beta <= 0:
            raise ValueError("StabilityGuard(action=beta) raises model.loss.beta, which is 0 (no KL term, no "
                             "reference policy): set model.loss.beta > 0 or use action=lr")  # fmt: skip

    def on_train_start(self, trainer, pl_module) -> None:
        self._good, self._candidate = self.snapshot(trainer, pl_module), None
        self._checked_step, self._skipped = trainer.global_step, pl_module.step_log.skipped

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._checked_step:  # no optimizer step in this batch
            return
        self._checked_step = trainer.global_step
        skipped, self._skipped = pl_module.step_log.skipped > self._skipped, pl_module.step_log.skipped
        reason = self.trip_reason(pl_module.step_log.last, skipped)
        if reason is not None:
            self.trip(trainer, pl_module, reason)
        else:
            self.good_step(trainer, pl_module)
        self.write_metrics(trainer, pl_module)

    # ---------------------------------------------------------------- checks
    def trip_reason(self, metrics: dict[str, float], skipped: bool) -> str | None:
        """Why the step's metrics show divergence, or None for a good step."""
        if skipped:
            return "non-finite loss or gradient (update skipped)"
        loss, kl, ratio = (metrics.get(k) for k in ("train/loss", "train/kl", "train/is_ratio/max"))
        if loss is not None and not math.isfinite(loss):
            return f"loss {loss}"
        if kl is not None:
            if not math.isfinite(kl) or (self.max_kl is not None and kl > self.max_kl):
                return f"KL {kl:.4g} (max_kl={self.max_kl})"
            relative = self.kl_spike_factor is not None and len(self.kl_history) >= MIN_HISTORY
            median = statistics.median(self.kl_history) if relative else 0.0
            if relative and kl > max(self.min_kl, self.kl_spike_factor * median):
                return f"KL spike {kl:.4g} > {self.kl_spike_factor} x median {median:.4g}"
        if ratio is not None and self.max_is_ratio is not None and not ratio <= self.max_is_ratio:
            return f"importance ratio max {ratio:.4g} > {self.max_is_ratio}"
        return None

    def good_step(self, trainer, pl_module) -> None:
        kl = pl_module.step_log.last.get("train/kl")
        if kl is not None:
            self.kl_history.append(float(kl))
        if self._candidate is not None:  # this step trained from it and passed: a restore point
            self._good, self._candidate = self._candidate, None
        self.good_steps += 1
        if self.good_steps % self.snapshot_every == 0:
            self._candidate = self.snapshot(trainer, pl_module)

    # ---------------------------------------------------------------- acting
    def trip(self, trainer, pl_module, reason: str) -> None:
        self.trips += 1
        step = trainer.global_step - 1
        self.restore(trainer, pl_module)
        where = f"StabilityGuard: step {step}: {reason}; restored the state of step {self._good['step']}"
        if self.trips > self.max_retries:
            rank_zero_warn(f"{where}; {self.max_retries} retries used, stopping training")
            trainer.should_stop = True
            return
        if self.action == "lr":
            self.scale_lr(trainer, self.lr_factor)
            change = f"lr x{self.lr_scale:.3g} of configured"
        else:
            beta = pl_module.loss_cfg.beta * self.beta_factor
            pl_module.loss_cfg = dataclasses.replace(pl_module.loss_cfg, beta=beta)
            change = f"beta {beta:.4g}"
        rank_zero_warn(f"{where}, {change} (retry {self.trips}/{self.max_retries})")

    def scale_lr(self, trainer, factor: float) -> None:
        self.lr_scale *= factor
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] *= factor
        for config in trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr * factor for lr in config.scheduler.base_lrs]

    def snapshot(self, trainer, pl_module) -> dict:
        """CPU copies of the trainable parameters and of the optimizer state."""
        trainable = (item for item in pl_module.policy.named_parameters() if item[1].requires_grad)
        params = {name: p.detach().to("cpu", copy=True) for name, p in trainable}
        optimizer = [_cpu_copy(opt.state_dict()) for opt in trainer.optimizers]
        return {"step": trainer.global_step, "params": params, "optimizer": optimizer}

    @torch.no_grad()
    def restore(self, trainer, pl_module) -> None:
        """Back to the restore point; the learning rate the optimizers run at now is kept (the snapshot's
        param groups carry the lr of their step)."""
        saved = self._good
        for name, p in pl_module.policy.named_parameters():
            if name in saved["params"]:
                p.copy_(saved["params"][name])
        for opt, state in zip(trainer.optimizers, saved["optimizer"]):
            lrs = [group["lr"] for group in opt.param_groups]
            opt.load_state_dict(_cpu_copy(state))  # a copy: load_state_dict keeps CPU tensors as they are
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr
        self._candidate, self.good_steps = None, 0
        engine = getattr(pl_module, "engine", None)
        if engine is not None:
            engine.update_weights(pl_module.policy)  # the next rollout samples from the restored weights

    def write_metrics(self, trainer, pl_module) -> None:
        values = {"stability/trips": float(self.trips), "stability/lr_scale": self.lr_scale,
                  "stability/beta": float(pl_module.loss_cfg.beta)}  # fmt: skip
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step - 1)

    # ---------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        return {"trips": self.trips, "lr_scale": self.lr_scale, "good_steps": self.good_steps,
                "kl_history": list(self.kl_history)}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.trips, self.lr_scale = state.get("trips", 0), state.get("lr_scale", 1.0)
        self.good_steps = state.get("good_steps", 0)
        self.kl_history = deque(state.get("kl_history", []), maxlen=self.kl_window)


def _cpu_copy(obj):
    """A deep copy of a (nested) state dict with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj
