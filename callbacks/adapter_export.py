"""Export the trained policy (LoRA adapter, or the full model) with its tokenizer, loadable by HF and vLLM."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only


class AdapterExport(L.Callback):
    """Writes ``save_pretrained`` output to ``dirpath`` (default: ``<log_dir>/export``) at the end of training
    and every ``every_n_steps`` steps (0 = only at the end). A LoRA policy exports its adapter only; a full
    policy exports the whole model. Written to a temporary directory and renamed: never half-written.

    Args:
        dirpath: target directory.
        every_n_steps: periodic export (0 = end only).
    """

    def __init__(self, dirpath: str | None = None, every_n_steps: int = 0):
        self.dirpath, self.every_n_steps = dirpath, every_n_steps
        self.last_export: Path | None = None

    def _target(self, trainer) -> Path:
        if self.dirpath:
            return Path(self.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir) / "export"

    def setup(self, trainer, pl_module, stage: str) -> None:
        # trainer.log_dir is a collective under DDP: resolve it here, on every rank, never in rank 0 alone
        self.target = self._target(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.export(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.export(trainer, pl_module)

    @rank_zero_only
    def export(self, trainer, pl_module) -> None:
        target = getattr(self, "target", None) or self._target(trainer)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            pl_module.policy.save_pretrained(tmp)
            pl_module.tokenizer.save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.last_export = target
        rank_zero_info(f"AdapterExport: policy written to {target} (step {trainer.global_step})")
