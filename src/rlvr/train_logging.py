"""What the trainer writes to TensorBoard: namespaced scalars, sample completions, validation metrics."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MeanMetric

from rlvr.domains.base import Example
from rlvr.rewards import RewardBatch
from rlvr.rollout.base import Rollout

#: metrics also put in ``trainer.callback_metrics`` (callbacks such as KLMonitor read them)
CALLBACK_METRICS = ("reward/total", "train/kl", "train/sft_loss")
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
        self.nonfinite_loss = False  # set by the module when a micro-batch loss is NaN/inf
        self.last: dict[str, float] = {}  # the last step's scalars (callbacks.ProgressLog prints them)

    def setup_metrics(self, tasks: Mapping) -> None:
        names = ["val/accuracy", "val/format_rate"]
        for task in sorted(tasks):
            names += [f"val/{task}/accuracy", f"val/{task}/format_rate"]
        self.module.val_metrics = torch.nn.ModuleDict({n.replace("/", "__"): MeanMetric() for n in names})

    def scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Write this step's scalars straight to the logger (``self.log`` would re-log stale values of keys
        a step does not produce, e.g. the SFT loss after the switch to RL)."""
        m = self.module
        self.last = {k: float(v) for k, v in metrics.items()}
        if m.logger is not None:
            m.logger.log_metrics(self.last, step=step)
        for name in CALLBACK_METRICS:
            if name in metrics:
                m.log(name, float(metrics[name]), logger=False, on_step=True, on_epoch=False)

    def rollout(self, batch: list[Example], rollout: Rollout, rewards: RewardBatch, metrics: dict) -> None:
        """Reward, accuracy and rollout statistics of one step (added to ``metrics``), samples as text."""
        metrics.update(rewards.means())
        lengths = rollout.lengths.float()
        truncated = rollout.truncated.float().mean().item()
        metrics["rollout/completion_len"] = lengths.mean().item()
        metrics["rollout/completion_len_max"] = lengths.max().item()
        metrics["rollout/truncated_frac"] = truncated
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
                m.log(key, metric, on_step=False, on_epoch=True, batch_size=int(sel.sum()))


PER_TASK = {
    "seq/kl": "kl",
    "seq/entropy": "entropy",
    "seq/clip_frac": "clip_frac",
    "seq/is_ratio": "is_ratio",
}


def reduce_metrics(parts: list[tuple[torch.Tensor, dict]], exp) -> dict[str, float]:
    """Combine the metrics of a mini-batch's micro-batches: losses add up (each is already normalised by
    the batch totals), ``*/min`` and ``*/max`` reduce by min/max, other scalars are token-weighted means.
    Per-sequence ``seq/*`` tensors become per-task means ``train/<task>/{kl,entropy,clip_frac,is_ratio}``
    (token-weighted over the task's sequences)."""
    if not parts:
        return {}
    tokens = [float(m["seq/tokens"].sum()) if "seq/tokens" in m else float(len(rows)) for rows, m in parts]
    share = [t / max(sum(tokens), 1e-9) for t in tokens]
    out: dict[str, float] = {}
    for key in parts[0][1]:
        if key.startswith("seq/"):
            continue
        vals = [float(m[key]) for _, m in parts if key in m]
        if key == "pg_loss":
            out["train/pg_loss"] = sum(vals)
        elif key.endswith("/min"):
            out[f"train/{key}"] = min(vals)
        elif key.endswith("/max"):
            out[f"train/{key}"] = max(vals)
        else:
            out[f"train/{key}"] = sum(w * float(m[key]) for w, (_, m) in zip(share, parts) if key in m)
    rows = torch.cat([r for r, _ in parts])
    seq_tokens = torch.cat([m["seq/tokens"].detach().float().cpu() for _, m in parts])
    tasks = exp.task_ids[rows]
    for key, name in PER_TASK.items():
        if key not in parts[0][1]:
            continue
        values = torch.cat([m[key].detach().float().cpu() for _, m in parts])
        for k, task in enumerate(exp.task_names):
            sel = (tasks == k) & (seq_tokens > 0)
            if sel.any():
                w = seq_tokens[sel]
                out[f"train/{task}/{name}"] = float((values[sel] * w).sum() / w.sum())
    return out
