"""Group advantages and the DAPO reward helpers against numbers worked out by hand."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlvr.algo.advantages import group_advantages, overlong_penalty, zero_std_groups

EPS = 1e-4


def test_group_scaling_by_hand():
    # group 0: rewards 1,0,0,0 -> mean 0.25, deviations .75,-.25,-.25,-.25, unbiased var (.5625+3*.0625)/3 = .25,
    # std .5; group 1 is constant -> exactly 0
    r = torch.tensor([1.0, 0, 0, 0, 2, 2, 2, 2])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    d = 0.5 + EPS
    want = torch.tensor([0.75 / d, -0.25 / d, -0.25 / d, -0.25 / d, 0, 0, 0, 0])
    assert torch.allclose(group_advantages(r, g, "group"), want, atol=1e-7)


def test_none_scaling_is_centring_only():
    r = torch.tensor([1.0, 0, 0, 0, 3, 1, 1, 1])  # means .25 and 1.5
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    want = torch.tensor([0.75, -0.25, -0.25, -0.25, 1.5, -0.5, -0.5, -0.5])
    assert torch.allclose(group_advantages(r, g, "none"), want, atol=1e-7)


def test_batch_scaling_by_hand():
    # batch of 1,0,0,0,3,1,1,1: mean 7/8; squared deviations .015625 + 3*.765625 + 4.515625 + 3*.015625 = 6.875
    # -> unbiased var 6.875/7, std .991031; centring is still per group (means .25 and 1.5)
    r = torch.tensor([1.0, 0, 0, 0, 3, 1, 1, 1])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    d = math.sqrt(6.875 / 7) + EPS
    want = torch.tensor([0.75, -0.25, -0.25, -0.25, 1.5, -0.5, -0.5, -0.5]) / d
    assert torch.allclose(group_advantages(r, g, "batch"), want, atol=1e-6)


def test_per_task_std_by_hand():
    # task 0 = group 0: 1,0,1,0 -> mean .5, var 4*.25/3, std sqrt(1/3)
    # task 1 = group 1: 4,0,0,0 -> mean 1, deviations 3,-1,-1,-1, var 12/3 = 4, std 2
    r = torch.tensor([1.0, 0, 1, 0, 4, 0, 0, 0])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    task = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    d0, d1 = math.sqrt(1 / 3) + EPS, 2 + EPS
    want = torch.tensor([0.5 / d0, -0.5 / d0, 0.5 / d0, -0.5 / d0, 3 / d1, -1 / d1, -1 / d1, -1 / d1])
    got = group_advantages(r, g, "batch", task_ids=task, per_task_std=True)
    assert torch.allclose(got, want, atol=1e-6)
    # with a single task it is plain batch scaling
    one = group_advantages(r, g, "batch", task_ids=torch.zeros(8, dtype=torch.long), per_task_std=True)
    assert torch.allclose(one, group_advantages(r, g, "batch"))


def test_per_task_std_needs_batch_scaling_and_task_ids():
    r, g = torch.rand(4), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="per_task_std"):
        group_advantages(r, g, "group", task_ids=g, per_task_std=True)
    with pytest.raises(ValueError, match="per_task_std"):
        group_advantages(r, g, "batch", per_task_std=True)
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(r, g, "std")


def test_group_ids_are_labels_not_positions():
    r = torch.tensor([1.0, 5.0, 0.0, 3.0])
    got = group_advantages(r, torch.tensor([7, 3, 7, 3]), "none")  # groups {1, 0} and {5, 3}
    assert torch.allclose(got, torch.tensor([0.5, 1.0, -0.5, -1.0]))


def test_nan_reward_is_unscorable():
    # group 1, 0, NaN, 0: mean over finite 1/3, var ((2/3)^2 + 2 (1/3)^2) / 2 = 1/3
    r = torch.tensor([1.0, 0.0, float("nan"), 0.0])
    d = math.sqrt(1 / 3) + EPS
    want = torch.tensor([(2 / 3) / d, (-1 / 3) / d, 0.0, (-1 / 3) / d])
    assert torch.allclose(group_advantages(r, torch.zeros(4, dtype=torch.long)), want, atol=1e-6)


@pytest.mark.parametrize(
    "scale,dtype", itertools.product(["group", "batch", "none"], [torch.float32, torch.float64])
)
def test_constant_reward_gives_exactly_zero(scale, dtype):
    # in float64 (0.1 + 0.1 + 0.1) / 3 != 0.1, yet the advantage of a constant group must be exactly 0
    r = torch.full((12,), 0.1, dtype=dtype)
    adv = group_advantages(r, torch.arange(12) // 3, scale)
    assert torch.equal(adv, torch.zeros(12, dtype=dtype))


def test_zero_std_groups():
    r = torch.tensor([1.0, 1, 0, 1, 2, 2, 5, float("nan"), 3])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3, 3])  # group 3: one NaN, one finite -> no spread
    want = torch.tensor([False, False, False, False, True, True, True, True, True])
    assert torch.equal(zero_std_groups(r, g), want)


def test_overlong_penalty_by_hand():
    # L_max 10, L_cache 4: no penalty up to 6, then (6 - |y|) / 4, -1 beyond 10
    lengths = torch.tensor([0, 5, 6, 7, 8, 10, 11])
    want = torch.tensor([0, 0, 0, -0.25, -0.5, -1.0, -1.0])
    assert torch.allclose(overlong_penalty(lengths, max_len=10, cache_len=4), want)
    with pytest.raises(ValueError, match="cache_len"):
        overlong_penalty(lengths, max_len=4, cache_len=5)
