"""Parity with TRL's real GRPOTrainer code: identical tensors in, equal advantages, loss, gradient and metrics out.

TRL has no standalone advantage function (advantages are computed inline in
``GRPOTrainer._generate_and_score_completions``), so instead of re-implementing it we run that real method on a
bare trainer built with ``object.__new__(GRPOTrainer)``: generation, reward functions and the model forward are
replaced by stubs returning our tensors, and the accelerator by a single-process identity. Its output batch then
goes through the real ``GRPOTrainer._compute_loss``. Checked against trl==1.16.0 (``TRL_VERSION`` below).

Shared options tested: loss_type x scale_rewards x importance_sampling_level x epsilon_high x beta x
use_bias_correction_kl x off_policy_mask_threshold x delta (the full product less use_bias_correction_kl with
beta=0, where it is inert: 576 cases), plus entropy_coef, top_entropy_quantile and tis_cap (TRL:
vllm_importance_sampling_mode="token_truncate" with vllm_importance_sampling_clip_max) per loss_type,
one update per rollout (TRL skips old log-probs and uses logp.detach()), and unscorable (NaN) rewards.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
import trl
from trl.trainer import grpo_trainer
from trl.trainer.grpo_trainer import GRPOTrainer

from rlvr.algo.advantages import group_advantages, zero_std_groups
from rlvr.algo.losses import PolicyLossConfig, policy_loss

TRL_VERSION = trl.__version__  # tested against 1.16.0
ATOL = 1e-6

G, T = 4, 7  # completions per prompt, longest completion
REWARDS = (0.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.9, 0.4, 0.1)  # group 2 is constant: zero advantage
LENGTHS = [7, 3, 1, 5, 6, 2, 7, 4, 5, 7, 2, 6]
N = len(REWARDS)
MAX_COMPLETION_LENGTH = 8


class _Accelerator:
    """Single process: every collective is the identity."""

    device = torch.device("cpu")
    num_processes, process_index, sync_gradients = 1, 0, True

    def gather(self, x):
        return x

    def gather_for_metrics(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x

    def unwrap_model(self, model):
        return model

    def autocast(self):
        return nullcontext()


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Log-probs [N, T] of pi_theta (leaf), pi_old, the sampler and the reference, entropies, mask."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]).float()
    logp = -torch.rand(N, T, generator=g) * 3 - 0.05
    old = logp + 0.35 * torch.randn(N, T, generator=g)  # ratios well outside 1 +- 0.28, some beyond delta
    sampler = old + 0.3 * torch.randn(N, T, generator=g)
    ref = logp + 0.2 * torch.randn(N, T, generator=g)
    entropy = torch.rand(N, T, generator=g) * 2
    return {"logp": logp, "old": old, "sampler": sampler * mask, "ref": ref, "entropy": entropy, "mask": mask}


X = _tensors()  # shared by every test, never modified


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    """TRL gathers log columns with accelerate's gather_object; in one process that is the identity."""
    monkeypatch.setattr(grpo_trainer, "gather_object", lambda obj: obj)


def _trl_trainer(cfg: PolicyLossConfig, scale_rewards: str, on_policy: bool, rewards: tuple) -> GRPOTrainer:
    """A GRPOTrainer with exactly the attributes the two methods read, set from ``cfg``."""
    tr = object.__new__(GRPOTrainer)
    use_tis = cfg.tis_cap is not None
    tr.args = SimpleNamespace(
        delta=cfg.delta,
        use_bias_correction_kl=cfg.use_bias_correction_kl,
        steps_per_generation=1,
        gradient_accumulation_steps=1,
        per_device_train_batch_size=N,
        gradient_checkpointing_kwargs=None,
        entropy_target=0.2,
    )
    tr.accelerator = _Accelerator()
    tr.model = SimpleNamespace(training=True, is_gradient_checkpointing=False)
    tr.ref_model = SimpleNamespace(name="ref")
    tr.environment_factories, tr.tools, tr.environments = None, None, None
    tr._tokenizer = SimpleNamespace(pad_token_id=0)
    tr.pad_to_multiple_of, tr.mask_truncated_completions = None, False
    # num_iterations=2 makes TRL compute old log-probs (several updates per rollout); 1 skips them
    tr.num_iterations = 1 if on_policy and not use_tis else 2
    tr.use_vllm = tr.vllm_importance_sampling_correction = use_tis
    tr.vllm_importance_sampling_mode = "token_truncate"
    tr.vllm_importance_sampling_clip_max, tr.vllm_importance_sampling_clip_min = cfg.tis_cap, None
    tr.beta, tr.loss_type, tr.scale_rewards = cfg.beta, cfg.loss_type, scale_rewards
    tr.num_generations, tr.multi_objective_aggregation = G, "sum_then_normalize"
    tr.reward_weights, tr.reward_func_names = torch.ones(1), ["r"]
    tr._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    tr._logs = {
        "prompt": [], "completion": [], "rewards": defaultdict(list), "advantages": [], "extra": defaultdict(list)
    }  # fmt: skip
    tr._pending_extra_logs, tr._pending_metrics, tr.log_multimodal = {}, {}, False
    tr.epsilon_low, tr.epsilon_high = cfg.epsilon, cfg.eps_high
    tr.importance_sampling_level = cfg.importance_sampling_level
    tr.off_policy_mask_threshold = cfg.off_policy_mask_threshold
    tr.top_entropy_quantile = cfg.top_entropy_quantile
    tr.max_completion_length = MAX_COMPLETION_LENGTH
    tr.current_gradient_accumulation_steps = 1
    tr.aux_loss_enabled = False
    tr.entropy_coef, tr.use_adaptive_entropy = cfg.entropy_coef, False
    tr._entropy_bonus_enabled = cfg.entropy_coef != 0.0

    ids = [list(range(1, n + 1)) for n in LENGTHS]
    sampler = [X["sampler"][i, :n].tolist() for i, n in enumerate(LENGTHS)]
    tr._generate = lambda prompts: ([[5, 6]] * N, ids, None, ["c"] * N, sampler, {}, None, None)
    tr._calculate_rewards = lambda *args: torch.tensor(rewards).unsqueeze(1)

    def logps(model, *args, compute_entropy=False, **kwargs):
        if compute_entropy:  # the training forward in _compute_loss
            return tr.logp_leaf, X["entropy"], None
        return (X["ref"] if model is tr.ref_model else X["old"]), None, None

    tr._get_per_token_logps_and_entropies = logps
    return tr


@functools.cache
def _trl_generation(scale_rewards: str, beta: float, tis_cap: float | None, on_policy: bool, rewards: tuple):
    """TRL's generation batch (advantages, old/ref/sampler log-probs, IS ratios) and the metrics it logged.

    Only these options affect it, so it is computed once per combination and shared by the loss options.
    """
    tr = _trl_trainer(PolicyLossConfig(beta=beta, tis_cap=tis_cap), scale_rewards, on_policy, rewards)
    batch = tr._generate_and_score_completions([{"prompt": "p"}] * N)
    return batch, {k: v[-1] for k, v in tr._metrics["train"].items()}


def _run_both(cfg: PolicyLossConfig, scale_rewards: str, on_policy: bool = False, rewards: tuple = REWARDS):
    batch, trl_metrics = _trl_generation(scale_rewards, cfg.beta, cfg.tis_cap, on_policy, rewards)
    tr = _trl_trainer(cfg, scale_rewards, on_policy, rewards)
    tr.logp_leaf = X["logp"].clone().requires_grad_(True)
    trl_loss = tr._compute_loss(None, batch)
    trl_loss.backward()
    trl_metrics = {**trl_metrics, **{k: v[-1] for k, v in tr._metrics["train"].items()}}

    logp = X["logp"].clone().requires_grad_(True)
    adv = group_advantages(torch.tensor(rewards), torch.arange(N) // G, scale_rewards=scale_rewards)
    old = logp.detach() if on_policy else X["old"]
    ours, metrics = policy_loss(
        logp, old, adv, X["mask"], cfg, ref_logp=X["ref"], entropy=X["entropy"], sampler_logp=X["sampler"]
    )
    ours.backward()
    return SimpleNamespace(
        trl_adv=batch["advantages"], adv=adv, trl_loss=trl_loss, loss=ours, trl_grad=tr.logp_leaf.grad,
        grad=logp.grad, trl_metrics=trl_metrics, metrics=metrics, scale=scale_rewards, rewards=rewards,
    )  # fmt: skip


def _close(a, b, what: str) -> None:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert torch.allclose(a, b, rtol=0, atol=ATOL), f"{what}: ours {a} vs TRL {b}"


METRIC_NAMES = {  # TRL's logged name -> ours
    "kl": "kl",
    "entropy": "entropy",
    "clip_ratio/low_mean": "clip_frac/low",
    "clip_ratio/high_mean": "clip_frac/high",
    "clip_ratio/region_mean": "clip_frac/region",
    "sampling/sampling_logp_difference/mean": "mismatch/abs_logp_diff_mean",
    "sampling/sampling_logp_difference/max": "mismatch/abs_logp_diff_max",
    "sampling/importance_sampling_ratio/min": "mismatch/is_ratio_min",
    "sampling/importance_sampling_ratio/mean": "mismatch/is_ratio_mean",
    "sampling/importance_sampling_ratio/max": "mismatch/is_ratio_max",
}


def _assert_parity(r, case: str = "") -> None:
    _close(r.adv, r.trl_adv, f"advantages {case}")
    _close(r.loss.detach(), r.trl_loss.detach(), f"loss {case}")
    _close(r.grad, r.trl_grad, f"d loss / d logp {case}")
    for trl_name, name in METRIC_NAMES.items():
        if trl_name in r.trl_metrics:
            _close(r.metrics[name], r.trl_metrics[trl_name], f"{name} {case}")
    if r.scale != "batch":  # with batch scaling TRL's frac_reward_zero_std tests the batch std instead
        frac = zero_std_groups(torch.tensor(r.rewards), torch.arange(N) // G).float().mean()
        _close(frac, r.trl_metrics["frac_reward_zero_std"], f"frac_reward_zero_std {case}")


# use_bias_correction_kl acts only through the KL term: with beta = 0 it changes nothing TRL computes
# The options that change the loss, crossed inside each test (one pytest item per outer combination keeps the
# file fast): use_bias_correction_kl acts only through the KL term, so with beta = 0 only False is run.
INNER = [
    combo
    for combo in itertools.product(
        [None, 0.28],  # epsilon_high
        [0.0, 0.04],  # beta
        [False, True],  # use_bias_correction_kl
        [None, 0.05],  # off_policy_mask_threshold
        [None, 1.5],  # delta
    )
    if combo[1] > 0 or not combo[2]
]


@pytest.mark.parametrize("level", ["token", "sequence"])  # importance_sampling_level
@pytest.mark.parametrize("scale", ["group", "batch", "none"])  # scale_rewards
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_shared_options_match_trl(loss_type, scale, level):
    for eps_high, beta, bias_kl, opm, delta in INNER:
        cfg = PolicyLossConfig(
            loss_type=loss_type, epsilon_high=eps_high, beta=beta, use_bias_correction_kl=bias_kl,
            off_policy_mask_threshold=opm, importance_sampling_level=level, delta=delta,
            max_completion_length=MAX_COMPLETION_LENGTH,
        )  # fmt: skip
        _assert_parity(_run_both(cfg, scale), f"{cfg} scale_rewards={scale}")


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize(
    "entropy_coef,quantile,tis_cap", [(0.01, 1.0, None), (0.01, 0.3, None), (0.0, 0.5, 1.5), (0.0, 1.0, 1.2)]
)
def test_entropy_and_tis_options_match_trl(loss_type, entropy_coef, quantile, tis_cap):
    cfg = PolicyLossConfig(
        loss_type=loss_type, epsilon_high=0.28, beta=0.04, entropy_coef=entropy_coef,
        top_entropy_quantile=quantile, tis_cap=tis_cap, max_completion_length=MAX_COMPLETION_LENGTH,
    )  # fmt: skip
    _assert_parity(_run_both(cfg, "group"))


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_one_update_per_rollout_matches_trl(loss_type, level):
    """mu = 1: TRL skips old log-probs and uses logp.detach(); so do we."""
    cfg = PolicyLossConfig(
        loss_type=loss_type, beta=0.04, use_bias_correction_kl=True, importance_sampling_level=level,
        max_completion_length=MAX_COMPLETION_LENGTH,
    )  # fmt: skip
    _assert_parity(_run_both(cfg, "group", on_policy=True))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_unscorable_rewards_match_trl(scale):
    """NaN rewards (every reward function returned None) leave the baselines and get advantage 0 in both."""
    rewards = list(REWARDS)
    rewards[1] = rewards[9] = float("nan")
    r = _run_both(PolicyLossConfig(loss_type="dapo", beta=0.04), scale, rewards=tuple(rewards))
    _close(r.adv, r.trl_adv, "advantages")
    _close(r.loss.detach(), r.trl_loss.detach(), "loss")
    assert r.adv[1] == 0 and r.adv[9] == 0


def test_fixture_exercises_every_branch():
    """The shared tensors really clip (both sides), hit the dual clip and drop off-policy sequences."""
    cfg = PolicyLossConfig(epsilon_high=0.28, delta=1.5, off_policy_mask_threshold=0.05)
    m = _run_both(cfg, "group").metrics
    assert m["clip_frac/low"] > 0 and m["clip_frac/high"] > 0
    assert m["is_ratio/max"] > 1.5
    assert 0 < m["off_policy/masked_frac"] < 1
    tis = _run_both(PolicyLossConfig(tis_cap=1.5), "group").metrics
    assert tis["mismatch/is_ratio_max"] == 1.5  # the cap binds
