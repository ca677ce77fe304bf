"""Watch the policy's KL to the reference: warn, or stop training, when it runs away."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn


class KLMonitor(L.Callback):
    """Tracks ``train/kl`` after every step.

    Args:
        max_kl: KL above which a step counts as a violation (research runs saw KL jump to thousands).
        patience: consecutive violations before acting.
        stop: stop training (``trainer.should_stop``) instead of only warning.
    """

    def __init__(self, max_kl: float = 10.0, patience: int = 3, stop: bool = False):
        self.max_kl, self.patience, self.stop = max_kl, patience, stop
        self.violations = 0
        self.peak = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        kl = trainer.callback_metrics.get("train/kl")
        if kl is None:
            return
        kl = float(kl)
        self.peak = max(self.peak, kl)
        pl_module.log("train/kl_peak", self.peak)
        self.violations = self.violations + 1 if kl > self.max_kl else 0
        if self.violations >= self.patience:
            action = "stopping" if self.stop else "continuing"
            rank_zero_warn(
                f"step {trainer.global_step}: KL {kl:.3g} > {self.max_kl} for {self.violations} steps; {action} "
                "(lower the learning rate or raise loss.beta)"
            )
            trainer.should_stop = trainer.should_stop or self.stop
            self.violations = 0

    def state_dict(self) -> dict:
        return {"peak": self.peak}

    def load_state_dict(self, state: dict) -> None:
        self.peak = state.get("peak", 0.0)
