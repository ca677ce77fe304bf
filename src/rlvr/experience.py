"""Experience: what one rollout leaves for the update — completions, rewards, advantages, loss masks.

Kept apart from the module so that merging rollouts (dynamic sampling refills) and cutting them into
mini-batches are plain, testable functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from rlvr.rewards import RewardBatch
from rlvr.rollout.base import Rollout
from rlvr.tasks.base import Example


def _pad_cols(x: Tensor, width: int, value: float, left: bool = False) -> Tensor:
    extra = width - x.shape[1]
    if extra <= 0:
        return x
    pad = torch.full((x.shape[0], extra, *x.shape[2:]), value, dtype=x.dtype, device=x.device)
    return torch.cat([pad, x] if left else [x, pad], 1)


def concat_rollouts(parts: Sequence[Rollout], pad_id: int) -> Rollout:
    """One rollout from several (prompts re-left-padded, completions re-right-padded); group ids renumbered
    so they stay unique."""
    lp = max(r.prompt_ids.shape[1] for r in parts)
    t = max(r.completion_ids.shape[1] for r in parts)
    groups, offset = [], 0
    for r in parts:
        groups.append(r.group_ids - r.group_ids.min() + offset if len(r.group_ids) else r.group_ids)
        offset = int(groups[-1].max()) + 1 if len(r.group_ids) else offset
    merged = Rollout(
        prompt_ids=torch.cat([_pad_cols(r.prompt_ids, lp, pad_id, left=True) for r in parts]),
        prompt_mask=torch.cat([_pad_cols(r.prompt_mask, lp, 0, left=True) for r in parts]),
        completion_ids=torch.cat([_pad_cols(r.completion_ids, t, pad_id) for r in parts]),
        completion_mask=torch.cat([_pad_cols(r.completion_mask, t, 0.0) for r in parts]),
        sampler_logp=torch.cat([_pad_cols(r.sampler_logp, t, 0.0) for r in parts]),
        truncated=torch.cat([r.truncated for r in parts]),
        texts=[s for r in parts for s in r.texts],
        group_ids=torch.cat(groups),
    )
    if all(r.keep_mask is not None for r in parts):
        merged.keep_mask = torch.cat([_pad_cols(r.keep_mask, t, True) for r in parts])
    return merged


def select_rollout(r: Rollout, rows: Tensor) -> Rollout:
    """The completions at ``rows`` [n] (long), keeping their group ids."""
    idx = rows.tolist()
    out = Rollout(
        prompt_ids=r.prompt_ids[rows],
        prompt_mask=r.prompt_mask[rows],
        completion_ids=r.completion_ids[rows],
        completion_mask=r.completion_mask[rows],
        sampler_logp=r.sampler_logp[rows],
        truncated=r.truncated[rows],
        texts=[r.texts[i] for i in idx],
        group_ids=r.group_ids[rows],
    )
    if r.keep_mask is not None:
        out.keep_mask = r.keep_mask[rows]
    return out


def concat_rewards(parts: Sequence[RewardBatch]) -> RewardBatch:
    """One reward batch from several scored with the same tasks (same columns)."""
    return RewardBatch(
        names=parts[0].names,
        tasks=[t for p in parts for t in p.tasks],
        values=torch.cat([p.values for p in parts]),
        mask=torch.cat([p.mask for p in parts]),
        weights=torch.cat([p.weights for p in parts]),
        total=torch.cat([p.total for p in parts]),
        correct=torch.cat([p.correct for p in parts]),
    )


def select_rewards(rb: RewardBatch, rows: Tensor) -> RewardBatch:
    idx = rows.tolist()
    return replace(
        rb, tasks=[rb.tasks[i] for i in idx], values=rb.values[rows], mask=rb.mask[rows],
        weights=rb.weights[rows], total=rb.total[rows], correct=rb.correct[rows],
    )  # fmt: skip


@dataclass
class Experience:
    """A scored rollout ready for the update. Completion ``i`` answers ``examples[prompt_index[i]]``."""

    examples: list[Example]  # P prompts
    rollout: Rollout  # N completions
    rewards: RewardBatch  # N
    advantages: Tensor  # [N]
    loss_mask: Tensor  # [N, T] tokens that take part in the loss
    task_ids: Tensor  # [N] long index into ``task_names``
    task_names: list[str]
    prompt_index: Tensor  # [N] long
    old_logp: Tensor | None = None  # [N, T] when there are several updates per rollout

    def minibatches(self, count: int) -> list[Tensor]:
        """Row indices of ``count`` mini-batches that split the batch by prompt (a group stays together)."""
        prompts = torch.arange(len(self.examples))
        return [
            torch.nonzero(torch.isin(self.prompt_index, chunk)).flatten()
            for chunk in prompts.tensor_split(min(count, len(self.examples)))
        ]


def task_index(tasks: Sequence[str], names: Sequence[str]) -> Tensor:
    """[N] long position of each sample's task in ``names``."""
    pos = {n: i for i, n in enumerate(names)}
    return torch.tensor([pos[t] for t in tasks], dtype=torch.long)
