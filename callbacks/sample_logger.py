"""Sample completions in TensorBoard: what the policy wrote and what each reward component made of it."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from rlvr.train_logging import write_samples


class SampleLogger(L.Callback):
    """Every ``every_n_steps`` steps, writes ``per_task`` completions of each task in that step's rollout as
    TensorBoard text under ``samples/<task>``: the prompt, the completion (its length, whether it was
    truncated), the total reward, every reward component with its weight (``n/a`` where the component does
    not apply to the task) and the reference. The completions shown span the task's reward ranking, best
    first and worst last. The first rollout of a run is always written; SFT steps have none.

    It takes over the module's built-in sample logging (``model.log_samples_every_n_steps``, one completion
    per task), so nothing is written twice. The rendering is :func:`rlvr.train_logging.write_samples`, shared
    by both.

    Args:
        every_n_steps: optimizer steps between written rollouts.
        per_task: completions shown per task.
    """

    def __init__(self, every_n_steps: int = 25, per_task: int = 2):
        if every_n_steps < 1 or per_task < 1:
            raise ValueError(f"SampleLogger every_n_steps={every_n_steps}, per_task={per_task}: use >= 1")
        self.every_n_steps, self.per_task = every_n_steps, per_task
        self._written = -1  # step of the last rollout written

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.step_log.samples_every = 0  # one writer of samples/<task>

    def on_train_start(self, trainer, pl_module) -> None:
        self._written = trainer.global_step - 1  # a resumed run keeps the schedule: nothing written twice

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = pl_module.step_log.last_rollout
        n = self.every_n_steps
        if record is None or record.step // n <= self._written // n:
            return
        self._written = record.step
        for logger in trainer.loggers:
            writer = getattr(logger, "experiment", None)
            if hasattr(writer, "add_text"):
                write_samples(writer, record, self.per_task)
