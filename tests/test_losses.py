"""Policy, SFT and hybrid losses against numbers worked out by hand (torchtune-style), plus the invariants:
zero gradient for a constant reward, exact micro-batching, the on-policy gradient -A * grad(logp) / normaliser."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlvr.algo.advantages import group_advantages
from rlvr.algo.losses import (
    PolicyLossConfig,
    batch_totals,
    high_entropy_mask,
    off_policy_keep,
    policy_loss,
    sft_loss,
    tis_weights,
)
from rlvr.algo.schedules import adapt_entropy_coef, sft_weight

LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo"]
LEVELS = ["token", "sequence"]


def _leaf(ratios: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """logp (leaf, with grad) and old_logp = 0, so that exp(logp - old_logp) = ``ratios`` [N, T]."""
    return torch.tensor(ratios).log().requires_grad_(True), torch.zeros(len(ratios), len(ratios[0]))


def _loss(ratios, adv, cfg, mask=None, **kw):
    logp, old = _leaf(ratios)
    mask = torch.ones_like(old) if mask is None else torch.tensor(mask)
    loss, metrics = policy_loss(logp, old, torch.tensor(adv), mask, cfg, **kw)
    loss.backward()
    return loss.item(), logp.grad, metrics


# ------------------------------------------------------------------ clipping
def test_clip_positive_advantage_by_hand():
    # A = 1, eps 0.2, r = 1, 1.3, 0.7: token losses -min(r, clip r) = -1, -1.2, -0.7 -> grpo mean -2.9 / 3.
    # d/dlogp = -r / 3 where unclipped; r = 1.3 is clipped (no gradient); r = 0.7 < 0.8 keeps r (pessimistic min)
    loss, grad, m = _loss([[1.0, 1.3, 0.7]], [1.0], PolicyLossConfig())
    assert loss == pytest.approx(-2.9 / 3)
    assert torch.allclose(grad, torch.tensor([[-1 / 3, 0.0, -0.7 / 3]]))
    assert m["clip_frac/high"].item() == pytest.approx(1 / 3) and m["clip_frac/low"].item() == 0


def test_clip_negative_advantage_by_hand():
    # A = -1: token losses max(r, clip r) = 1, 1.3, 0.8 -> mean 3.1 / 3; r = 0.7 is clipped, r = 1.3 is not
    loss, grad, m = _loss([[1.0, 1.3, 0.7]], [-1.0], PolicyLossConfig())
    assert loss == pytest.approx(3.1 / 3)
    assert torch.allclose(grad, torch.tensor([[1 / 3, 1.3 / 3, 0.0]]))
    assert m["clip_frac/low"].item() == pytest.approx(1 / 3) and m["clip_frac/high"].item() == 0
    assert m["clip_frac/region"].item() == pytest.approx(1 / 3)


@pytest.mark.parametrize("adv,inside,outside", [(1.0, 1.199, 1.201), (-1.0, 0.801, 0.799)])
def test_clip_boundaries(adv, inside, outside):
    _, grad, _ = _loss([[inside, outside]], [adv], PolicyLossConfig(epsilon=0.2))
    assert grad[0, 0] != 0 and grad[0, 1] == 0


def test_clip_higher():
    # r = 1.25, A = 1: clipped at 1 + 0.2, free with epsilon_high = 0.28
    assert _loss([[1.25]], [1.0], PolicyLossConfig())[1].item() == 0
    assert _loss([[1.25]], [1.0], PolicyLossConfig(epsilon_high=0.28))[1].item() == pytest.approx(-1.25)


def test_dual_clip_by_hand():
    # A = -1, delta 1.5: token losses max(min(r, 1.5), clip r): r = 2 -> 1.5 (no gradient), r = 1.4 -> 1.4
    loss, grad, _ = _loss([[2.0, 1.4]], [-1.0], PolicyLossConfig(delta=1.5))
    assert loss == pytest.approx((1.5 + 1.4) / 2)
    assert torch.allclose(grad, torch.tensor([[0.0, 1.4 / 2]]))
    assert _loss([[2.0, 1.4]], [-1.0], PolicyLossConfig())[0] == pytest.approx((2.0 + 1.4) / 2)  # without


def test_sequence_level_ratio_by_hand():
    # GSPO: log-ratios .2, -.1 (pad .5 ignored) -> s = exp(.05), unclipped for A = 1; every token's loss is -s,
    # so the grpo mean is -s, and d/dlogp_t = -s / 2 on the two real tokens
    logp = torch.tensor([[0.2, -0.1, 0.5]], requires_grad=True)
    cfg = PolicyLossConfig(importance_sampling_level="sequence")
    loss, m = policy_loss(logp, torch.zeros(1, 3), torch.tensor([1.0]), torch.tensor([[1.0, 1, 0]]), cfg)
    loss.backward()
    s = math.exp(0.05)
    assert loss.item() == pytest.approx(-s)
    assert torch.allclose(logp.grad, torch.tensor([[-s / 2, -s / 2, 0.0]]))
    assert m["seq/is_ratio"].item() == pytest.approx(s)
    # log-ratios .5, .5 -> s = e^.5 > 1.2: clipped for A = 1, loss -1.2, no gradient
    loss, grad, _ = _loss([[math.exp(0.5), math.exp(0.5)]], [1.0], cfg)
    assert loss == pytest.approx(-1.2) and (grad == 0).all()


# ------------------------------------------------------------------ normalisers
def _on_policy_grad(loss_type: str, **kw) -> torch.Tensor:
    torch.manual_seed(0)
    logp = torch.randn(3, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0], [1, 1, 0]])  # lengths 3, 1, 2; 6 tokens
    cfg = PolicyLossConfig(loss_type=loss_type, max_completion_length=4)
    loss, _ = policy_loss(logp, logp.detach(), torch.tensor([1.0, -2.0, 0.5]), mask, cfg, **kw)
    loss.backward()
    return logp.grad


@pytest.mark.parametrize(
    "loss_type,norm",
    [
        ("grpo", [[3 * 3.0] * 3, [3 * 1.0] * 3, [3 * 2.0] * 3]),  # N * length_i
        ("bnpo", [[6.0] * 3] * 3),  # tokens
        ("dapo", [[6.0] * 3] * 3),
        ("dr_grpo", [[3 * 4.0] * 3] * 3),  # N * max_completion_length
    ],
)
def test_ratio_one_gradient_is_minus_advantage_over_normaliser(loss_type, norm):
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0], [1, 1, 0]])
    adv = torch.tensor([1.0, -2.0, 0.5]).unsqueeze(1)
    assert torch.allclose(_on_policy_grad(loss_type), -adv * mask / torch.tensor(norm))


def test_batch_totals_override_this_calls_counts():
    # as one micro-batch of a batch of 6 sequences and 20 tokens
    assert torch.allclose(_on_policy_grad("dapo", total_tokens=20.0), _on_policy_grad("dapo") * 6 / 20)
    assert torch.allclose(_on_policy_grad("grpo", total_sequences=6), _on_policy_grad("grpo") / 2)
    assert torch.allclose(_on_policy_grad("dr_grpo", total_sequences=6), _on_policy_grad("dr_grpo") / 2)


def _batch(n: int = 10, t: int = 6, seed: int = 0, dtype=torch.float64) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 1, 0, 4, 6, 2, 5, 3, 6, 1])[:n]  # a zero-length completion too
    mask = (torch.arange(t)[None] < lengths[:, None]).to(dtype)
    logp = -torch.rand(n, t, generator=g, dtype=dtype) * 2
    return {
        "logp": logp,
        "old": logp + 0.3 * torch.randn(n, t, generator=g, dtype=dtype),
        "ref": logp + 0.2 * torch.randn(n, t, generator=g, dtype=dtype),
        "sampler": logp + 0.4 * torch.randn(n, t, generator=g, dtype=dtype),
        "entropy": torch.rand(n, t, generator=g, dtype=dtype),
        "adv": torch.randn(n, generator=g, dtype=dtype),
        "mask": mask,
        "task": torch.tensor([0, 1, 1, 0, 2, 1, 0, 0, 2, 1])[:n],
    }


@pytest.mark.parametrize("loss_type,level,per_task", itertools.product(LOSS_TYPES, LEVELS, [False, True]))
def test_micro_batches_sum_to_the_full_batch(loss_type, level, per_task):
    x = _batch()
    cfg = PolicyLossConfig(
        loss_type=loss_type, importance_sampling_level=level, epsilon_high=0.28, delta=1.6, beta=0.05,
        use_bias_correction_kl=True, off_policy_mask_threshold=0.1, entropy_coef=0.01, tis_cap=1.5,
        max_completion_length=8, per_task_normaliser=per_task,
    )  # fmt: skip
    weights = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)

    def run(sl, totals):
        logp = x["logp"][sl].clone().requires_grad_(True)
        loss, _ = policy_loss(
            logp, x["old"][sl], x["adv"][sl], x["mask"][sl], cfg, ref_logp=x["ref"][sl],
            entropy=x["entropy"][sl], sampler_logp=x["sampler"][sl], task_ids=x["task"][sl],
            task_weights=weights, **totals,
        )  # fmt: skip
        loss.backward()
        return loss, logp.grad

    full_loss, full_grad = run(slice(None), {})
    totals = batch_totals(x["mask"], x["task"], num_tasks=3)
    parts = [run(sl, totals) for sl in (slice(0, 3), slice(3, 6), slice(6, 10))]  # unequal sizes
    assert torch.allclose(sum(p[0] for p in parts), full_loss, atol=1e-12)
    assert torch.allclose(torch.cat([p[1] for p in parts]), full_grad, atol=1e-12)


@pytest.mark.parametrize("loss_type,level", itertools.product(LOSS_TYPES, LEVELS))
def test_constant_reward_gives_exactly_zero_policy_gradient(loss_type, level):
    x = _batch(dtype=torch.float32)
    adv = group_advantages(torch.full((10,), 0.7), torch.arange(10) // 5)
    assert torch.equal(adv, torch.zeros(10))
    cfg = PolicyLossConfig(
        loss_type=loss_type, importance_sampling_level=level, epsilon_high=0.28, delta=1.6,
        off_policy_mask_threshold=0.1, tis_cap=1.5, max_completion_length=8,
    )  # fmt: skip
    logp = x["logp"].clone().requires_grad_(True)
    loss, _ = policy_loss(
        logp, x["old"], adv, x["mask"], cfg, entropy=x["entropy"], sampler_logp=x["sampler"]
    )
    loss.backward()
    assert loss.item() == 0 and torch.equal(logp.grad, torch.zeros_like(logp))


# ------------------------------------------------------------------ multitask
def _two_tasks(loss_type: str, **kw) -> float:
    # on-policy, so each token's loss is -A. Task 0: one sequence of 4 tokens, A = 1 (token losses -1);
    # task 1: one sequence of 1 token, A = -1 (token loss +1)
    logp = torch.zeros(2, 4, requires_grad=True)
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 0, 0, 0]])
    cfg = PolicyLossConfig(loss_type=loss_type, max_completion_length=4, per_task_normaliser="task_ids" in kw)
    return policy_loss(logp, logp.detach(), torch.tensor([1.0, -1.0]), mask, cfg, **kw)[0].item()


def test_per_task_normaliser_by_hand():
    ids = torch.tensor([0, 1])
    # dapo: plain (-4 + 1) / 5; per task .5 * (-4 / 4) + .5 * (1 / 1); weights 3:1 -> .75 * -1 + .25 * 1
    assert _two_tasks("dapo") == pytest.approx(-0.6)
    assert _two_tasks("dapo", task_ids=ids) == pytest.approx(0.0)
    assert _two_tasks("dapo", task_ids=ids, task_weights=torch.tensor([3.0, 1.0])) == pytest.approx(-0.5)
    # grpo: the sequence means are -1 and 1 either way
    assert _two_tasks("grpo") == pytest.approx(0.0)
    assert _two_tasks("grpo", task_ids=ids, task_weights=torch.tensor([3.0, 1.0])) == pytest.approx(-0.5)
    # dr_grpo (L = 4): per task -4 / (1 * 4) and 1 / (1 * 4) -> .75 * -1 + .25 * .25
    assert _two_tasks("dr_grpo") == pytest.approx(-3 / 8)
    assert _two_tasks("dr_grpo", task_ids=ids, task_weights=torch.tensor([3.0, 1.0])) == pytest.approx(
        -0.6875
    )
    # a task absent from the batch takes no weight (weights renormalised over the tasks present)
    w = torch.tensor([3.0, 1.0, 100.0])
    assert _two_tasks("dapo", task_ids=ids, task_weights=w) == pytest.approx(-0.5)


def test_per_task_normaliser_needs_task_ids():
    with pytest.raises(ValueError, match="task_ids"):
        policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2),
                    PolicyLossConfig(per_task_normaliser=True))  # fmt: skip


# ------------------------------------------------------------------ KL, entropy, off-policy terms
def test_kl_and_bias_correction_by_hand():
    # A = 0, ref - logp = ln 2: k3 = 2 - ln 2 - 1; beta .1 -> loss .1 * (1 - ln 2); d k3 / d logp = 1 - 2 = -1
    k3 = 1 - math.log(2)
    logp = torch.zeros(1, 1, requires_grad=True)
    ref = torch.full((1, 1), math.log(2))
    loss, m = policy_loss(
        logp, logp.detach(), torch.zeros(1), torch.ones(1, 1), PolicyLossConfig(beta=0.1), ref
    )
    loss.backward()
    assert loss.item() == pytest.approx(0.1 * k3) and logp.grad.item() == pytest.approx(-0.1)
    assert m["kl"].item() == pytest.approx(k3)
    # off-policy ratio 2 (old = -ln 2): the unbiased KL weighs k3 by it
    cfg = PolicyLossConfig(beta=0.1, use_bias_correction_kl=True)
    old = torch.full((1, 1), -math.log(2))
    loss, m = policy_loss(torch.zeros(1, 1), old, torch.zeros(1), torch.ones(1, 1), cfg, ref)
    assert loss.item() == pytest.approx(0.1 * 2 * k3) and m["kl"].item() == pytest.approx(2 * k3)


def test_entropy_bonus_and_top_entropy_quantile_by_hand():
    ent = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    logp = torch.zeros(2, 2, requires_grad=True)
    # A = 0: only the bonus, -0.1 * mean entropy of the 3 tokens (2)
    loss, m = policy_loss(
        logp, logp.detach(), torch.zeros(2), mask, PolicyLossConfig(entropy_coef=0.1), entropy=ent
    )
    assert loss.item() == pytest.approx(-0.2) and m["entropy"].item() == pytest.approx(2.0)
    # top half by entropy: the median of 1, 2, 3 is 2 -> tokens with 2 and 3; bonus over them: 2.5
    cfg = PolicyLossConfig(entropy_coef=0.1, top_entropy_quantile=0.5)
    assert policy_loss(logp, logp.detach(), torch.zeros(2), mask, cfg, entropy=ent)[
        0
    ].item() == pytest.approx(-0.25)
    # and only they get policy gradient (A = 1, on-policy, grpo: -1 / (2 * length))
    cfg = PolicyLossConfig(top_entropy_quantile=0.5)
    policy_loss(logp, logp.detach(), torch.ones(2), mask, cfg, entropy=ent)[0].backward()
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.25], [-0.5, 0.0]]))


def test_high_entropy_mask_by_hand():
    # sorted 0.1, 0.3, 0.5, 0.9: the 0.5-quantile is 0.4 and the 0.75-quantile 0.5 + 0.25 * 0.4 = 0.6
    ent, mask = torch.tensor([[0.1, 0.5, 0.9, 0.3]]), torch.ones(1, 4)
    assert high_entropy_mask(ent, mask, 0.5).tolist() == [[False, True, True, False]]
    assert high_entropy_mask(ent, mask, 0.25).tolist() == [[False, False, True, False]]


def test_off_policy_keep_by_hand():
    # mean log(pi_sampler / pi_theta) over the sequence: (.5 + .25) / 2 = .375; dropped only if A < 0 and > delta
    behaviour, logp, mask = torch.tensor([[0.5, 0.25]]), torch.zeros(1, 2), torch.ones(1, 2)
    neg, pos = torch.tensor([[-1.0]]), torch.tensor([[1.0]])
    assert off_policy_keep(neg, logp, behaviour, mask, 0.375).item() == 1  # at the threshold: kept
    assert off_policy_keep(neg, logp, behaviour, mask, 0.25).item() == 0
    assert off_policy_keep(pos, logp, behaviour, mask, 0.25).item() == 1


def test_tis_weights_by_hand():
    old = torch.tensor([[math.log(2), math.log(0.5), 0.0]])
    sampler = torch.tensor([[0.0, 0.0, float("nan")]])  # NaN: the sampler could not score it -> weight 1
    assert torch.allclose(tis_weights(old, sampler, torch.ones(1, 3), 1.5), torch.tensor([[1.5, 0.5, 1.0]]))
    # in the loss (A = 1, on-policy): token losses -w -> grpo mean -(1.5 + .5 + 1) / 3
    logp = old.clone().requires_grad_(True)
    loss, m = policy_loss(logp, old, torch.ones(1), torch.ones(1, 3), PolicyLossConfig(tis_cap=1.5),
                          sampler_logp=sampler)  # fmt: skip
    assert loss.item() == pytest.approx(-1.0)
    assert m["mismatch/is_ratio_max"].item() == pytest.approx(1.5)
    assert m["mismatch/abs_logp_diff_mean"].item() == pytest.approx(math.log(2))


def test_metrics_shapes_and_values():
    x = _batch(dtype=torch.float32)
    cfg = PolicyLossConfig(beta=0.1, off_policy_mask_threshold=0.1)
    _, m = policy_loss(x["logp"], x["old"], x["adv"], x["mask"], cfg, ref_logp=x["ref"], entropy=x["entropy"],
                       sampler_logp=x["sampler"])  # fmt: skip
    for k, v in m.items():
        assert v.shape == ((10,) if k.startswith("seq/") else ()), k
        assert not v.requires_grad and torch.isfinite(v).all(), k
    assert m["seq/tokens"].tolist() == [6, 1, 0, 4, 6, 2, 5, 3, 6, 1]
    assert m["is_ratio/min"] <= m["is_ratio/mean"] <= m["is_ratio/max"]


def test_config_and_input_checks():
    with pytest.raises(ValueError, match="max_completion_length"):
        PolicyLossConfig(loss_type="dr_grpo")
    with pytest.raises(ValueError, match="loss_type"):
        PolicyLossConfig(loss_type="ppo")
    with pytest.raises(ValueError, match="importance_sampling_level"):
        PolicyLossConfig(importance_sampling_level="prefix")
    z = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(z, z, torch.zeros(1), z + 1, PolicyLossConfig(beta=0.1))
    with pytest.raises(ValueError, match="sampler_logp"):
        policy_loss(z, z, torch.zeros(1), z + 1, PolicyLossConfig(tis_cap=2.0))
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(z, z, torch.zeros(1), z + 1, PolicyLossConfig(entropy_coef=0.1))
    assert PolicyLossConfig(epsilon=0.3).eps_high == 0.3


# ------------------------------------------------------------------ SFT and the hybrid mix
def test_sft_loss_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, float("-inf"), 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert sft_loss(logp, mask).item() == pytest.approx((1 + 2 + 4) / 3)
    # micro-batches with the batch's token count sum to the batch loss
    halves = sft_loss(logp[:1], mask[:1], total_tokens=3.0) + sft_loss(logp[1:], mask[1:], total_tokens=3.0)
    assert halves.item() == pytest.approx((1 + 2 + 4) / 3)


@pytest.mark.parametrize(
    "schedule,step,want",
    [
        ("constant", 7, 0.8),
        ("linear", 0, 0.8), ("linear", 5, 0.5), ("linear", 10, 0.2), ("linear", 30, 0.2),
        # cosine: end + (start - end) (1 + cos(pi step / total)) / 2; step 5 of 10 -> midpoint;
        # step 2.5/10 -> .2 + .6 * (1 + cos(pi / 4)) / 2
        ("cosine", 0, 0.8), ("cosine", 5, 0.5), ("cosine", 10, 0.2), ("cosine", 11, 0.2),
        ("step", 2, 0.8), ("step", 3, 0.2), ("step", 9, 0.2),
    ],
)  # fmt: skip
def test_sft_weight_schedules(schedule, step, want):
    assert sft_weight(schedule, step, 10, 0.8, 0.2, 3) == pytest.approx(want)


def test_cosine_quarter_point_and_unknown_schedule():
    assert sft_weight("cosine", 1, 4, 1.0, 0.0, 0) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    with pytest.raises(ValueError, match="schedule"):
        sft_weight("exp", 0, 1, 1.0, 0.0, 0)


def test_adapt_entropy_coef():
    assert adapt_entropy_coef(0.1, 0.1, 0.2, 0.05, 0.0, 1.0) == pytest.approx(0.15)  # entropy low: raise
    assert adapt_entropy_coef(0.1, 0.2, 0.2, 0.05, 0.0, 1.0) == pytest.approx(0.15)  # at target: raise
    assert adapt_entropy_coef(0.1, 0.3, 0.2, 0.05, 0.0, 1.0) == pytest.approx(0.05)  # entropy high: lower
    assert adapt_entropy_coef(0.02, 0.3, 0.2, 0.05, 0.0, 1.0) == 0.0  # clamped
    assert adapt_entropy_coef(0.98, 0.1, 0.2, 0.05, 0.0, 1.0) == 1.0
