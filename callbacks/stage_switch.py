"""Switch from the SFT stage to RL once the model has learnt the output format."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class StageSwitch(L.Callback):
    """Ends SFT (λ forced to 0, pure GRPO) when ``metric`` reaches ``threshold`` after a validation, or at
    ``max_sft_steps`` whichever comes first; never before ``min_sft_steps``. Until then λ is forced to 1.

    Args:
        metric: a validation metric, e.g. ``val/format_rate`` (the research: RL without SFT collapses format).
        threshold: switch when ``metric >= threshold``.
        min_sft_steps: earliest switch.
        max_sft_steps: latest switch.
    """

    def __init__(
        self,
        metric: str = "val/format_rate",
        threshold: float = 0.8,
        min_sft_steps: int = 0,
        max_sft_steps: int = 1000,
    ):
        self.metric, self.threshold = metric, threshold
        self.min_sft_steps, self.max_sft_steps = min_sft_steps, max_sft_steps
        self.switched_at: int | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        max_steps = trainer.max_steps
        if self.switched_at is None and max_steps and 0 < max_steps <= self.max_sft_steps:
            rank_zero_warn(
                f"StageSwitch: max_sft_steps={self.max_sft_steps} >= trainer.max_steps={max_steps}, so this run "
                f"reaches RL only if {self.metric} >= {self.threshold} at a validation; lower max_sft_steps"
            )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.switched_at is None and trainer.global_step >= self.max_sft_steps:
            self._switch(trainer, pl_module, f"max_sft_steps={self.max_sft_steps}")
        pl_module.override_sft_weight(1.0 if self.switched_at is None else 0.0)

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.metric)
        ready = (
            trainer.global_step >= self.min_sft_steps and value is not None and float(value) >= self.threshold
        )
        if self.switched_at is None and ready:
            self._switch(trainer, pl_module, f"{self.metric}={float(value):.3f} >= {self.threshold}")

    def _switch(self, trainer, pl_module, why: str) -> None:
        self.switched_at = trainer.global_step
        pl_module.override_sft_weight(0.0)
        rank_zero_info(f"StageSwitch: SFT -> RL at step {trainer.global_step} ({why})")

    def state_dict(self) -> dict:
        return {"switched_at": self.switched_at}

    def load_state_dict(self, state: dict) -> None:
        self.switched_at = state.get("switched_at")
