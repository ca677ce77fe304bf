"""Watch the policy's KL to the reference: warn, or stop training, when it runs away; optionally steer β to a
target KL."""

from __future__ import annotations

import dataclasses

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from rlvr.algo.schedules import adapt_kl_coef


class KLMonitor(L.Callback):
    """Tracks ``train/kl`` after every step.

    With ``target_kl`` set it is also the adaptive KL controller of Ziegler et al. 2019 (TRL's
    ``AdaptiveKLController``): after each step β (``model.loss.beta``, in place) is multiplied by
    ``1 + clip(kl / target_kl - 1, -0.2, 0.2) · n / horizon``, n the optimizer steps since the last update,
    and the β each step trained with is logged as ``train/beta``. β is part of the module's checkpoint, so a
    resumed run continues with the adapted value.

    Args:
        max_kl: KL above which a step counts as a violation (research runs saw KL jump to thousands).
        patience: consecutive violations before acting.
        stop: stop training (``trainer.should_stop``) instead of only warning.
        target_kl: KL the controller steers β towards (None = β stays as configured).
        horizon: optimizer steps over which the controller moves β by at most 20%.
    """

    def __init__(
        self,
        max_kl: float = 10.0,
        patience: int = 3,
        stop: bool = False,
        target_kl: float | None = None,
        horizon: int = 10000,
    ):
        if target_kl is not None and target_kl <= 0:
            raise ValueError(f"KLMonitor target_kl={target_kl}: use a KL > 0, or None for a fixed β")
        if horizon < 1:
            raise ValueError(f"KLMonitor horizon={horizon}: use >= 1 optimizer steps")
        self.max_kl, self.patience, self.stop = max_kl, patience, stop
        self.target_kl, self.horizon = target_kl, horizon
        self.violations = 0
        self.peak = 0.0
        self._adapted_at = 0  # global step of the last β update

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.target_kl is not None and pl_module.loss_cfg.beta <= 0:
            raise ValueError(
                f"KLMonitor(target_kl={self.target_kl}) adapts model.loss.beta, which is 0 (no KL term, no "
                "reference policy): set model.loss.beta > 0 as its starting value"
            )

    def on_train_start(self, trainer, pl_module) -> None:
        self._adapted_at = trainer.global_step

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
        if self.target_kl is not None:
            self.adapt_beta(trainer, pl_module, kl)

    def adapt_beta(self, trainer, pl_module, kl: float) -> None:
        """One controller update from this step's KL; logs the β the step trained with."""
        steps = trainer.global_step - self._adapted_at
        if steps <= 0:  # no optimizer step since the last update (the end of a rollout's updates)
            return
        self._adapted_at = trainer.global_step
        beta = pl_module.loss_cfg.beta
        for logger in trainer.loggers:
            logger.log_metrics({"train/beta": beta}, step=trainer.global_step - 1)
        new = adapt_kl_coef(beta, kl, self.target_kl, steps, self.horizon)
        pl_module.loss_cfg = dataclasses.replace(pl_module.loss_cfg, beta=new)

    def state_dict(self) -> dict:
        return {"peak": self.peak, "violations": self.violations}

    def load_state_dict(self, state: dict) -> None:
        self.peak, self.violations = state.get("peak", 0.0), state.get("violations", 0)
