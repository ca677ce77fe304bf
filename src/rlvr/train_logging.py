"""What the trainer writes to TensorBoard: namespaced scalars, sample completions, validation metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MeanMetric

from rlvr.domains.base import Example
from rlvr.rewards import RewardBatch
from rlvr.rollout.base import Rollout

#: metrics also put in ``trainer.callback_metrics`` (callbacks such as KLMonitor read them)
CALLBACK_METRICS = ("reward/total", "train/kl", "train/sft_loss")
FORMAT_COMPONENT = "strict_format"
#: validation metrics, overall and per task: strict accuracy, lenient accuracy, strict-format rate
VAL_METRICS = ("accuracy", "lenient_accuracy", "format_rate")


def strict_and_lenient(rewards: RewardBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (lenient, strict, format) of a scored batch.

    lenient = the task's accuracy component: the answer found wherever the verifier can parse it (a last
    number, a stray fence, an unterminated answer block); strict = lenient and the completion is in the
    required format (its ``strict_format`` component is 1). A task without a ``strict_format`` component
    has no format to require: its strict figure is the lenient one and its format rate is 1.
    """
    lenient = rewards.correct
    if FORMAT_COMPONENT not in rewards.names:
        return lenient, lenient, torch.ones_like(lenient)
    col = rewards.names.index(FORMAT_COMPONENT)
    applies = rewards.mask[:, col]
    fmt = torch.where(applies, (rewards.values[:, col] >= 1.0).float(), torch.ones_like(lenient))
    return lenient, lenient * fmt, fmt


@dataclass
class StepRollout:
    """One step's rollout as scored: completion ``i`` answers ``examples[rollout.group_ids[i]]``."""

    step: int
    examples: list[Example]
    rollout: Rollout
    rewards: RewardBatch


def pick_samples(rewards: RewardBatch, task: str, k: int) -> list[int]:
    """Up to ``k`` indices of ``task``'s samples spread over their reward ranking: best first, worst last."""
    rows = sorted(
        (i for i, t in enumerate(rewards.tasks) if t == task), key=lambda i: -float(rewards.total[i])
    )
    if k <= 1 or len(rows) <= k:
        return rows[: max(k, 0)]
    return [rows[round(j * (len(rows) - 1) / (k - 1))] for j in range(k)]


def _code(text: str) -> str:
    """An indented markdown code block: safe for completions that contain code fences themselves."""
    return "\n".join("    " + line for line in (text or "(empty)").splitlines())


def sample_markdown(record: StepRollout, i: int) -> str:
    """Sample ``i`` as markdown: prompt, completion, total reward and every reward component with its weight
    (``n/a`` where the component does not apply to the sample's task), reference."""
    r, rb = record.rollout, record.rewards
    ex = record.examples[int(r.group_ids[i])]
    rows = [
        f"| {name} | {float(rb.values[i, c]):.3f} | {float(rb.weights[i, c]):g} |" if rb.mask[i, c]
        else f"| {name} | n/a | |"
        for c, name in enumerate(rb.names)
    ]  # fmt: skip
    cut = ", truncated" if bool(r.truncated[i]) else ""
    return (
        f"**prompt**\n\n{_code(ex.messages[-1]['content'])}\n\n"
        f"**completion** ({int(r.lengths[i])} tokens{cut})\n\n{_code(r.texts[i])}\n\n"
        f"**reward {float(rb.total[i]):.3f}**\n\n| component | value | weight |\n|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\n**reference**\n\n{_code(str(ex.reference)[:300])}"
    )


def write_samples(writer, record: StepRollout, per_task: int) -> None:
    """TensorBoard text ``samples/<task>`` at the record's step: ``per_task`` completions of each task."""
    for task in sorted(set(record.rewards.tasks)):
        picked = pick_samples(record.rewards, task, per_task)
        text = "\n\n---\n\n".join(sample_markdown(record, i) for i in picked)
        writer.add_text(f"samples/{task}", text, global_step=record.step)


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
        self.last_rollout: StepRollout | None = None  # the last rollout as scored (callbacks.SampleLogger)

    def setup_metrics(self, tasks: Mapping) -> None:
        names = [f"val/{m}" for m in VAL_METRICS]
        for task in sorted(tasks):
            names += [f"val/{task}/{m}" for m in VAL_METRICS]
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
        self.last_rollout = StepRollout(step, batch, rollout, rewards)
        writer = getattr(self.module.logger, "experiment", None)
        if self.samples_every and step % self.samples_every == 0 and hasattr(writer, "add_text"):
            write_samples(writer, self.last_rollout, per_task=1)

    def validation(self, batch: list[Example], rewards: RewardBatch) -> None:
        m = self.module
        lenient, strict, fmt = strict_and_lenient(rewards)
        rows = {"": torch.ones(len(batch), dtype=torch.bool)}
        rows.update({f"{t}/": torch.tensor([x == t for x in rewards.tasks]) for t in set(rewards.tasks)})
        values_of = {"accuracy": strict, "lenient_accuracy": lenient, "format_rate": fmt}
        for prefix, sel in rows.items():
            if not sel.any():
                continue
            for name, values in values_of.items():
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
