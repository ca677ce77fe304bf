"""``last.ckpt`` every N optimizer steps and when the run is interrupted (SIGINT / SIGTERM), for exact resume."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from rlvr.distributed import any_rank

NAME = "last.ckpt"
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def checkpoint_dir(trainer: L.Trainer) -> Path:
    """``<run folder>/checkpoints``: the folder of the logger's version (``runs/<task>/version_N``)."""
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"


class LastCheckpoint(L.Callback):
    """Keeps ``<run folder>/checkpoints/last.ckpt`` current: every ``every_n_steps`` optimizer steps, at the end
    of training, and on SIGINT / SIGTERM (a cluster's pre-emption notice, Ctrl-C): the signal is noted, the
    step in progress finishes, every rank agrees to stop at the same step, the checkpoint is written and the
    process exits with 128 + the signal number. A second Ctrl-C interrupts at once. ``rlvr fit ...
    --ckpt_path last`` continues from it in the same run folder. Lightning writes the file atomically (temp
    file + rename), so a SIGKILL mid-save leaves the previous ``last.ckpt`` intact.

    Args:
        every_n_steps: optimizer steps between saves (0 = only at the end and on a signal); the CLI flag is
            ``--checkpoint.every_n_steps``.
        on_signal: save and stop on SIGINT / SIGTERM.
    """

    def __init__(self, every_n_steps: int = 10, on_signal: bool = True):
        if every_n_steps < 0:
            raise ValueError(f"checkpoint.every_n_steps={every_n_steps}: use >= 0 (0 = at the end only)")
        self.every_n_steps, self.on_signal = every_n_steps, on_signal
        self.dirpath: Path | None = None
        self.received: int | None = None
        self._previous: dict = {}
        self._saved_step = -1
        self._after_validation = False

    @property
    def path(self) -> Path | None:
        return None if self.dirpath is None else self.dirpath / NAME

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.dirpath = checkpoint_dir(trainer)  # log_dir is a collective: resolved on every rank, here

    def on_train_start(self, trainer, pl_module) -> None:
        self._saved_step = trainer.global_step
        if self.on_signal:
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)

    def _note(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.received = signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, n = trainer.global_step, self.every_n_steps
        stop = any_rank(self.received is not None) if self.on_signal else False  # every rank, every batch
        due = n and step // n > self._saved_step // n
        if due and not stop and _validates_now(trainer):
            self._after_validation = True  # saved when it ends: a kill during it must not lose its metrics
        elif stop or due:
            self.save(trainer)
        if stop:
            sig = self.received or signal.SIGTERM
            rank_zero_info(
                f"LastCheckpoint: {signal.Signals(sig).name} received; saved step {step} to {self.path}"
            )
            raise SystemExit(128 + int(sig))

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._after_validation and not trainer.sanity_checking:
            self._after_validation = False
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._saved_step:
            self.save(trainer)
        self._restore_handlers()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore_handlers()

    def save(self, trainer) -> None:
        trainer.save_checkpoint(
            self.path, weights_only=False
        )  # every rank (state is gathered), rank 0 writes
        self._saved_step = trainer.global_step

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def _validates_now(trainer) -> bool:
    """Whether Lightning runs validation right after this training batch (its own rule, asked of the loop)."""
    loop = trainer.fit_loop
    try:
        return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
    except AttributeError:  # another Lightning version: save now (a kill during validation loses it)
        return False
