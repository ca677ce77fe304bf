"""Validate at the moments a learning curve needs: before the first step and as SFT hands over to RL.

Lightning validates every ``val_check_interval`` steps and (rlvr's module makes sure) at the end; it never
validates the untrained model inside ``fit``, and an SFT→RL switch rarely falls on an interval. Without
those two points a curve cannot show what SFT bought and what RL added on top.
"""

from __future__ import annotations

import lightning as L
import torch


class ValidationPoints(L.Callback):
    """Runs the fit's validation loop before training step 0 and before the first RL step.

    The switch is read from the module's stage control (the ``hybrid`` schedule, or a
    :class:`callbacks.StageSwitch` override — list this callback after StageSwitch so it sees the override
    set for the same step). A step that was just validated is not validated again; a resumed run does not
    re-validate its start. Validation runs under a forked torch RNG, so adding these points does not change
    what training samples.

    Args:
        at_start: validate the untrained policy (global step 0).
        at_switch: validate the SFT policy right before its first RL step.
    """

    def __init__(self, at_start: bool = True, at_switch: bool = True):
        self.at_start, self.at_switch = at_start, at_switch
        self.validated_at: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.validated_at == step or trainer.limit_val_batches == 0:
            return
        if (self.at_start and step == 0) or (self.at_switch and self._entering_rl(trainer, pl_module)):
            self.run_validation(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validated_at = trainer.global_step

    def run_validation(self, trainer) -> None:
        """The fit loop's own validation (its metrics, loggers and callbacks), as an interval would run it."""
        loop = trainer.fit_loop.epoch_loop.val_loop
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        first_loop_iter = trainer._logger_connector._first_loop_iter  # as the epoch loop keeps it
        with torch.random.fork_rng(devices=devices):
            trainer.validating = True
            try:
                loop.run()
            finally:
                trainer.training = True
                trainer._logger_connector._first_loop_iter = first_loop_iter

    @staticmethod
    def _entering_rl(trainer, pl_module) -> bool:
        stages = getattr(pl_module, "stages", None)
        if stages is None or stages.previous is None:
            return False
        lam = stages.weight(trainer.global_step, trainer.max_steps)
        return stages.previous >= 1.0 > lam
