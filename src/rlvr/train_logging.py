"""What the trainer writes to TensorBoard: namespaced scalars, sample completions, validation metrics."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MeanMetric

from rlvr.rewards import RewardBatch
from rlvr.rollout.base import Rollout
from rlvr.tasks.base import Example

PROGRESS_BAR = ("reward/total", "train/kl", "train/sft_loss")
FORMAT_COMPONENT = "strict_format"


class StepLogger:
    """Logging for :class:`rlvr.module.RLVRModule`; keeps the module's step code about the algorithm.

    Validation metrics are torchmetrics ``MeanMetric`` objects registered on the module, so their values are
    reduced correctly across DDP ranks.
    """

    def __init__(self, module, samples_every_n_steps: int, truncation_warn_frac: float):
        self.module = module
        self.samples_every = samples_every_n_steps
        self.truncation_warn_frac = truncation_warn_frac
        self.skipped = 0

    def setup_metrics(self, tasks: Mapping) -> None:
        names = ["val/accuracy", "val/format_rate"]
        for task in sorted(tasks):
            names += [f"val/{task}/accuracy", f"val/{task}/format_rate"]
        self.module.val_metrics = torch.nn.ModuleDict({n.replace("/", "__"): MeanMetric() for n in names})

    def scalars(self, metrics: Mapping[str, float]) -> None:
        m = self.module
        for name, value in metrics.items():
            m.log(name, float(value), prog_bar=name in PROGRESS_BAR, on_step=True, on_epoch=False)

    def rollout(self, batch: list[Example], rollout: Rollout, rewards: RewardBatch, metrics: dict) -> None:
        """Reward, accuracy and rollout statistics of one step (added to ``metrics``), samples as text."""
        metrics.update(rewards.means())
        lengths = rollout.lengths.float()
        truncated = rollout.truncated.float().mean().item()
        metrics["rollout/completion_len"] = lengths.mean().item()
        metrics["rollout/completion_len_max"] = lengths.max().item()
        metrics["rollout/truncated_frac"] = truncated
        metrics["rollout/frac_reward_zero_std"] = _frac_zero_std(rewards.total, rollout.group_ids.cpu())
        if truncated > self.truncation_warn_frac:
            rank_zero_warn(
                f"step {self.module.global_step}: {truncated:.0%} of completions hit max_new_tokens="
                f"{rollout.completion_ids.shape[1]}; rewards are mostly about truncated text — raise "
                "max_new_tokens or penalise length"
            )
        step = self.module.global_step
        if self.samples_every and step % self.samples_every == 0:
            self._write_sample(batch, rollout, rewards, step)

    def _write_sample(self, batch, rollout: Rollout, rewards: RewardBatch, step: int) -> None:
        writer = getattr(self.module.logger, "experiment", None)
        if writer is None or not hasattr(writer, "add_text"):
            return
        g = rollout.completion_ids.shape[0] // len(batch)
        for task in sorted(set(rewards.tasks)):
            i = rewards.tasks.index(task)
            ex = batch[i // g]
            text = (
                f"**prompt**\n\n```\n{ex.messages[-1]['content']}\n```\n\n**completion** "
                f"(reward {rewards.total[i]:.3f})\n\n```\n{rollout.texts[i]}\n```\n\n**reference**: "
                f"`{str(ex.reference)[:300]}`"
            )
            writer.add_text(f"samples/{task}", text, global_step=step)

    def validation(self, batch: list[Example], rewards: RewardBatch) -> None:
        m = self.module
        fmt_col = rewards.names.index(FORMAT_COMPONENT) if FORMAT_COMPONENT in rewards.names else None
        fmt = rewards.values[:, fmt_col] if fmt_col is not None else torch.zeros_like(rewards.correct)
        rows = {"": torch.ones(len(batch), dtype=torch.bool)}
        rows.update({f"{t}/": torch.tensor([x == t for x in rewards.tasks]) for t in set(rewards.tasks)})
        for prefix, sel in rows.items():
            if not sel.any():
                continue
            for name, values in (("accuracy", rewards.correct), ("format_rate", fmt)):
                key = f"val/{prefix}{name}"
                metric = m.val_metrics[key.replace("/", "__")]
                metric.update(values[sel].to(m.device))
                m.log(key, metric, on_step=False, on_epoch=True, prog_bar=key == "val/accuracy",
                      batch_size=int(sel.sum()))  # fmt: skip


def _frac_zero_std(total: torch.Tensor, groups: torch.Tensor) -> float:
    """Fraction of prompt groups whose completions all got the same reward (they carry no signal)."""
    zero = [total[groups == g].std(unbiased=False).item() < 1e-8 for g in groups.unique()]
    return sum(zero) / max(1, len(zero))
