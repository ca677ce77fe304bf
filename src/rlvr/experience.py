"""Experience: what one rollout leaves for the update — completions, rewards, advantages, loss masks.

Kept apart from the module so that sampling a batch (with DAPO's dynamic-sampling refills), merging rollouts
and cutting them into mini- and micro-batches are plain, testable functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from rlvr.algo.advantages import zero_std_groups
from rlvr.domains.base import Example
from rlvr.rewards import RewardBatch
from rlvr.rollout.base import Rollout


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
    if all(r.keep_count is not None for r in parts):
        merged.keep_count = torch.cat([_pad_cols(r.keep_count, t, 0) for r in parts])
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
    if r.keep_count is not None:
        out.keep_count = r.keep_count[rows]
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
        max_total=torch.cat([p.max_total for p in parts]),
    )


def select_rewards(rb: RewardBatch, rows: Tensor) -> RewardBatch:
    idx = rows.tolist()
    return replace(
        rb, tasks=[rb.tasks[i] for i in idx], values=rb.values[rows], mask=rb.mask[rows],
        weights=rb.weights[rows], total=rb.total[rows], correct=rb.correct[rows], max_total=rb.max_total[rows],
    )  # fmt: skip


def sample_batch(
    batch: list[Example],
    sample: Callable[[list[Example]], tuple[Rollout, RewardBatch]],
    draw: Callable[[int], list[Example]],
    *,
    group_size: int,
    dynamic_sampling: bool,
    max_rounds: int,
    pad_id: int,
    metrics: dict[str, float],
    agree: Callable[[int], int] = int,
) -> tuple[list[Example], Rollout, RewardBatch]:
    """Sample and score ``batch``; with DAPO dynamic sampling, drop groups whose rewards have zero variance
    and refill with groups of newly drawn prompts (``draw(k)``) for at most ``max_rounds`` extra rounds.

    ``agree(missing)`` returns the largest number of missing prompts over ranks (the identity in one
    process): every rank runs the same refill rounds and draws the same count, keeping what it is missing,
    so no rank waits on another and the refill stream stays at one position on all of them.
    Returns the kept prompts and their completions and rewards, group ids renumbered 0..P-1 in prompt order.
    If every group of every round was uninformative, the last round is kept (its advantages are zero).
    Adds ``rollout/frac_reward_zero_std`` (of the batch as drawn), ``rollout/sampling_rounds`` and, with
    dynamic sampling, ``rollout/dynamic_sampling_dropped_groups`` to ``metrics``.
    """
    examples: list[Example] = []
    rollouts: list[Rollout] = []
    rewards: list[RewardBatch] = []
    pending, rounds, last_round = list(batch), 0, None
    while True:
        if pending:
            r, rb = sample(pending)
            last_round = (pending, r, rb)
            zero_std = zero_std_groups(rb.total, r.group_ids)
            if rounds == 0:  # measured on the batch as drawn, before dynamic sampling drops anything
                metrics["rollout/frac_reward_zero_std"] = zero_std.float().mean().item()
            keep = ~zero_std if dynamic_sampling else torch.ones(len(r.texts), dtype=torch.bool)
            if dynamic_sampling:
                dropped = metrics.get("rollout/dynamic_sampling_dropped_groups", 0.0)
                metrics["rollout/dynamic_sampling_dropped_groups"] = (
                    dropped + float((~keep).sum()) / group_size
                )
            rows = torch.nonzero(keep).flatten()
            kept_prompts = sorted(set(r.group_ids[rows].tolist()))
            remap = {g: len(examples) + i for i, g in enumerate(kept_prompts)}
            kept = select_rollout(r, rows)
            kept.group_ids = torch.tensor([remap[int(g)] for g in kept.group_ids], dtype=torch.long)
            examples += [pending[g] for g in kept_prompts]
            rollouts.append(kept)
            rewards.append(select_rewards(rb, rows))
        if not dynamic_sampling:
            break
        missing = max(len(batch) - len(examples), 0)
        need = agree(missing if rounds < max_rounds else 0)
        if need <= 0:
            break
        rounds += 1
        pending = draw(need)[:missing]
    metrics["rollout/sampling_rounds"] = float(rounds)
    if not examples and last_round is not None:
        examples, rollouts, rewards = list(last_round[0]), [last_round[1]], [last_round[2]]
    return examples, concat_rollouts(rollouts, pad_id), concat_rewards(rewards)


@dataclass
class MicroBatch:
    """The rows of one forward/backward, on the training device. ``n`` completions, ``T`` tokens."""

    prompt_ids: Tensor  # [n, Lp] long, left-padded
    prompt_mask: Tensor  # [n, Lp]
    completion_ids: Tensor  # [n, T] long, right-padded
    completion_mask: Tensor  # [n, T] float
    keep_count: Tensor | None  # [n, T] long: how many top tokens the sampler kept (keep-sampling mask)
    old_logp: Tensor | None  # [n, T] π_old when stored (several updates per rollout)
    sampler_logp: Tensor  # [n, T]
    advantages: Tensor  # [n]
    loss_mask: Tensor  # [n, T]
    task_ids: Tensor  # [n] long

    @property
    def sequences(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(prompt_ids, prompt_mask, completion_ids, completion_mask): the arguments of a log-prob pass."""
        return self.prompt_ids, self.prompt_mask, self.completion_ids, self.completion_mask


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

    def micro_batch(self, rows: Tensor, device: torch.device | str) -> MicroBatch:
        """The completions at ``rows`` [n] (long) as a :class:`MicroBatch` on ``device``."""
        r = self.rollout

        def on(x: Tensor | None) -> Tensor | None:
            return x[rows].to(device) if x is not None else None

        return MicroBatch(
            prompt_ids=on(r.prompt_ids), prompt_mask=on(r.prompt_mask), completion_ids=on(r.completion_ids),
            completion_mask=on(r.completion_mask), keep_count=on(r.keep_count), old_logp=on(self.old_logp),
            sampler_logp=on(r.sampler_logp), advantages=on(self.advantages), loss_mask=on(self.loss_mask),
            task_ids=on(self.task_ids),
        )  # fmt: skip

    def minibatches(self, count: int) -> list[Tensor]:
        """Row indices of exactly ``count`` mini-batches that split the batch by prompt (a group stays
        together). Always ``count``, empty ones included, so every DDP rank takes the same number of optimizer
        steps whatever its batch size (dynamic sampling may leave a rank fewer prompts than steps)."""
        prompts = torch.arange(len(self.examples))
        return [
            torch.nonzero(torch.isin(self.prompt_index, chunk)).flatten()
            for chunk in prompts.tensor_split(count)
        ]


def split_evenly(items: list, parts: int) -> list[list]:
    """``items`` in at most ``parts`` consecutive chunks of near-equal size (the rollout's prompt chunks)."""
    k = max(1, min(parts, len(items)))
    size = -(-len(items) // k)
    return [items[i : i + size] for i in range(0, len(items), size)]


def task_index(tasks: Sequence[str], names: Sequence[str]) -> Tensor:
    """[N] long position of each sample's task in ``names``."""
    pos = {n: i for i, n in enumerate(names)}
    return torch.tensor([pos[t] for t in tasks], dtype=torch.long)
