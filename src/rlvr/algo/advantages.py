"""Group-relative advantages and the reward shaping that feeds them (DAPO helpers).

Pure tensor functions. ``N`` is the number of completions in the batch; completions of the same prompt share a
group id. Semantics follow TRL's ``GRPOTrainer`` (``scale_rewards``, the additive ``1e-4`` epsilon, NaN rewards
marking unscorable completions); ``per_task_std`` is our multitask extension.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["SCALE_REWARDS", "group_advantages", "overlong_penalty", "zero_std_groups"]


def _segment_ids(ids: Tensor, device: torch.device) -> tuple[Tensor, int]:
    """Dense ids 0..K-1 [N] on ``device`` for arbitrary (possibly sparse) long ids [N], and K."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    return inverse.to(device), uniq.numel()


def _segment_mean_std(values: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """NaN-aware mean and Bessel-corrected std [N] of ``values`` [N] over the samples sharing an id.

    Segments with fewer than two finite values get std 0 (TRL: a group of one has no spread to scale by).
    """
    seg, k = _segment_ids(ids, values.device)
    valid = ~torch.isnan(values)  # [N]
    # float64: sums of float32 rewards are exact, so a constant group's mean is its value
    v = torch.where(valid, values, torch.zeros_like(values)).double()
    zeros = torch.zeros(k, dtype=torch.float64, device=values.device)
    count = zeros.index_add(0, seg, valid.double())  # [K]
    total = zeros.index_add(0, seg, v)
    mean = total / count.clamp(min=1)  # [K]
    dev2 = torch.where(valid, (v - mean[seg]) ** 2, torch.zeros_like(v))
    ss = zeros.index_add(0, seg, dev2)
    std = torch.where(count > 1, (ss / (count - 1).clamp(min=1)).sqrt(), torch.zeros_like(ss))
    return mean[seg], std[seg]


def _std_group(rewards: Tensor, group_ids: Tensor, task_ids: Tensor | None) -> Tensor:
    return _segment_mean_std(rewards, group_ids)[1]


def _std_batch(rewards: Tensor, group_ids: Tensor, task_ids: Tensor | None) -> Tensor:
    # with per_task_std the "batch" is the task's share of the batch
    ids = torch.zeros_like(group_ids) if task_ids is None else task_ids
    return _segment_mean_std(rewards, ids)[1]


def _std_none(rewards: Tensor, group_ids: Tensor, task_ids: Tensor | None) -> Tensor:
    return torch.ones_like(rewards, dtype=torch.float64)


# scale_rewards -> std [N] that divides (reward - group mean); "none" divides by 1 and adds no epsilon
SCALE_REWARDS: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "group": _std_group,
    "batch": _std_batch,
    "none": _std_none,
}


def zero_std_groups(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Bool [N]: True where the sample's group has zero reward variance (all finite rewards equal).

    rewards: [N] (NaN = unscorable, ignored); group_ids: [N] long. Groups of one count as zero-variance.
    These groups carry no GRPO signal: DAPO's dynamic sampling drops them, and their mean is the
    ``frac_reward_zero_std`` metric. Exact equality, so float noise in a mean cannot hide a constant group.
    """
    seg, k = _segment_ids(group_ids, rewards.device)
    valid = ~torch.isnan(rewards)
    big = torch.finfo(rewards.dtype).max
    hi = torch.full((k,), -big, dtype=rewards.dtype, device=rewards.device)
    lo = torch.full((k,), big, dtype=rewards.dtype, device=rewards.device)
    hi = hi.scatter_reduce(0, seg, torch.where(valid, rewards, -big), reduce="amax")  # [K]
    lo = lo.scatter_reduce(0, seg, torch.where(valid, rewards, big), reduce="amin")  # [K]
    return (hi <= lo)[seg]


def group_advantages(
    rewards: Tensor,
    group_ids: Tensor,
    scale_rewards: str = "group",
    task_ids: Tensor | None = None,
    per_task_std: bool = False,
    eps: float = 1e-4,
) -> Tensor:
    """GRPO advantages [N]: (reward - mean of its group) / (std + eps).

    rewards: [N] total reward per completion (NaN = unscorable: excluded from means/stds, advantage 0).
    group_ids: [N] long; completions of the same prompt share an id (any values, any order).
    scale_rewards: TRL semantics. "group": std within the group; "batch": std of all rewards in the batch
        (PPO-Lite); "none": no division (Dr. GRPO).
    task_ids, per_task_std: multitask extension of "batch" scaling: the std is taken over the samples of the
        sample's own task in this batch, so a task with a wide reward range does not shrink the advantages of
        a task with a narrow one. Needs ``task_ids`` [N] and ``scale_rewards="batch"``.
    eps: added to the std (TRL uses 1e-4).

    Samples of zero-variance groups get exactly 0 (TRL gets float-rounding noise of order 1e-7/eps there).
    Computed in float64 and returned in ``rewards.dtype``.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={scale_rewards!r}: choose one of {sorted(SCALE_REWARDS)}")
    if per_task_std and (task_ids is None or scale_rewards != "batch"):
        raise ValueError(
            "per_task_std=True is the per-task form of scale_rewards='batch': pass task_ids and "
            f"scale_rewards='batch' (got scale_rewards={scale_rewards!r}, task_ids={'set' if task_ids is not None else None})"
        )
    mean, _ = _segment_mean_std(rewards, group_ids)  # [N] float64
    std = SCALE_REWARDS[scale_rewards](rewards, group_ids, task_ids if per_task_std else None)  # [N]
    centred = rewards.double() - mean
    adv = centred if scale_rewards == "none" else centred / (std + eps)
    adv = torch.where(zero_std_groups(rewards, group_ids), torch.zeros_like(adv), adv)
    return torch.nan_to_num(adv, nan=0.0).to(rewards.dtype)


def overlong_penalty(lengths: Tensor, max_len: int, cache_len: int) -> Tensor:
    """DAPO soft overlong punishment [N] for completion lengths [N] (added to the reward).

    With L_max = ``max_len`` and L_cache = ``cache_len``:
    0 if |y| <= L_max - L_cache; (L_max - L_cache - |y|) / L_cache inside the cache window; -1 if |y| > L_max.
    The penalty falls linearly from 0 to -1 across the last ``cache_len`` tokens before ``max_len``.
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(f"need 0 < cache_len <= max_len, got cache_len={cache_len}, max_len={max_len}")
    n = lengths.double()
    expected = max_len - cache_len
    soft = (expected - n) / cache_len
    pen = torch.where(
        n <= expected, torch.zeros_like(n), torch.where(n <= max_len, soft, -torch.ones_like(n))
    )
    return pen.float()
