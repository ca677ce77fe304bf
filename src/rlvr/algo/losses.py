"""Policy-gradient losses for GRPO and its variants, and the SFT loss.

Pure tensor functions. Shapes: ``N`` completions, ``T`` completion tokens (right-padded), ``V`` vocabulary,
``K`` tasks. Option names and semantics follow TRL's ``GRPOTrainer`` (``trl==1.16.0``; tests/test_trl_parity.py
checks equality); the per-task normaliser is our multitask extension.

Micro-batching is exact: call ``batch_totals`` once on the whole batch and pass its result to every
micro-batch call of ``policy_loss`` (``sft_loss`` likewise takes ``total_tokens``); the micro-batch losses then
sum to the full-batch loss for every ``loss_type``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlvr.algo.loss_metrics import policy_metrics


# ------------------------------------------------------------------ importance weights and per-token terms
def _token_log_weights(log_ratio: Tensor, mask: Tensor) -> Tensor:
    return log_ratio  # [N, T]


def _sequence_log_weights(log_ratio: Tensor, mask: Tensor) -> Tensor:
    # GSPO: one weight per sequence, the exp of its mean token log-ratio
    return (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)  # [N, 1]


IMPORTANCE_LEVELS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "token": _token_log_weights,
    "sequence": _sequence_log_weights,
}


def clipped_surrogate(
    ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float, delta: float | None
) -> Tensor:
    """PPO clipped surrogate loss -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), shaped like ``ratio``.

    ratio: [N, T] or [N, 1]; adv: [N, 1]. delta (dual clip): the unclipped r is first capped at delta, so a
    negative-advantage token whose ratio exploded adds at most -delta * A and no gradient.
    """
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    if delta is not None:
        ratio = ratio.clamp(max=delta)
    return -torch.minimum(ratio * adv, clipped * adv)


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 estimate of KL(pi_theta || pi_ref) per token [N, T]: exp(ref - logp) - (ref - logp) - 1 >= 0."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def off_policy_keep(
    adv: Tensor, logp: Tensor, behaviour_logp: Tensor, mask: Tensor, threshold: float
) -> Tensor:
    """DeepSeek-V3.2 off-policy sequence mask [N, 1]: 0 drops a sequence with advantage [N, 1] < 0 whose mean
    token log(pi_behaviour / pi_theta) over ``mask`` [N, T] exceeds ``threshold``, 1 keeps it."""
    kl = torch.nan_to_num(behaviour_logp - logp.detach(), nan=0.0)  # unscored tokens carry no evidence
    seq_kl = (kl * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
    return ((adv >= 0) | (seq_kl <= threshold)).to(mask.dtype)


def tis_weights(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float | None) -> Tensor:
    """Token importance weights pi_old / pi_sampler [N, T], truncated at ``cap`` (None: not truncated).

    Constant (no gradient); 1 on padding and where the sampler's log-prob is NaN (not scored).
    """
    w = torch.exp(torch.nan_to_num((old_logp.detach() - sampler_logp) * mask, nan=0.0))
    return w if cap is None else w.clamp(max=cap)


def high_entropy_mask(entropy: Tensor, mask: Tensor, quantile: float, cutoff: float | None = None) -> Tensor:
    """Bool [N, T]: tokens in ``mask`` whose entropy is >= ``cutoff``, by default the (1 - quantile) quantile of
    this call's masked entropies (pass the whole batch's cut-off when this call is one micro-batch)."""
    valid = mask > 0
    ent = entropy.detach()
    values = ent[valid].float()
    if values.numel() == 0:
        return torch.zeros_like(valid)
    if cutoff is None:
        cutoff = float(torch.quantile(values, 1.0 - quantile))
    return (ent * mask >= cutoff) & valid


# ------------------------------------------------------------------ loss_type: how token losses are summed
# Each returns per-token weights [N, T] so that loss = sum(per_token_loss * weights). ``seqs`` and ``toks``
# [N, 1] are the sequence and token counts of the (whole) batch -- or of the sample's task -- it is normalised by.
def _seq_mean_weights(mask: Tensor, seqs: Tensor, toks: Tensor, max_len: int | None) -> Tensor:
    return mask / mask.sum(-1, keepdim=True).clamp(min=1.0) / seqs  # mean over sequences of token means


def _token_mean_weights(mask: Tensor, seqs: Tensor, toks: Tensor, max_len: int | None) -> Tensor:
    return mask / toks  # mean over all tokens of the batch


def _constant_weights(mask: Tensor, seqs: Tensor, toks: Tensor, max_len: int | None) -> Tensor:
    return mask / (seqs * max_len)  # Dr. GRPO: a constant, so no length bias


LOSS_TYPES: dict[str, Callable[[Tensor, Tensor, Tensor, int | None], Tensor]] = {
    "grpo": _seq_mean_weights,
    "bnpo": _token_mean_weights,
    "dapo": _token_mean_weights,
    "dr_grpo": _constant_weights,
}


@dataclass
class PolicyLossConfig:
    """The policy-gradient objective (TRL ``GRPOConfig`` names and semantics unless noted).

    Attributes:
        loss_type: how token losses are averaged. "grpo": mean over sequences of each sequence's token mean
            (length bias); "bnpo"/"dapo": sum over tokens / number of tokens; "dr_grpo": sum over tokens /
            (sequences * max_completion_length). The normalising counts are the whole batch's (see
            ``batch_totals``). TRL's "bnpo" counts one micro-batch's tokens and "dapo" the whole generation
            batch's; here both use the batch totals the caller passes, so micro-batching stays exact. Under
            DDP pass, for "dapo", the all-rank token count / world size (DDP averages gradients) and, for
            "bnpo", this rank's count.
        epsilon: lower clip, ratio >= 1 - epsilon.
        epsilon_high: upper clip, ratio <= 1 + epsilon_high (DAPO clip-higher, e.g. 0.28); None = epsilon.
        delta: dual clip (INTELLECT-2): the unclipped ratio is capped at delta, bounding the loss of
            negative-advantage tokens whose ratio exploded; None = off. Should exceed 1 + epsilon_high.
        beta: coefficient of the k3 KL estimate against the reference policy (needs ``ref_logp``).
        importance_sampling_level: "token" (per-token ratio) or "sequence" (GSPO: exp of the mean token
            log-ratio of the sequence, shared by its tokens).
        use_bias_correction_kl: multiply the per-token KL by the importance ratio pi_theta / pi_old
            (DeepSeek-V3.2 unbiased KL). TRL defaults to True, we to False (the plain k3 of GRPO); on-policy
            (ratio = 1) the two agree in value but not in gradient.
        off_policy_mask_threshold: DeepSeek-V3.2 off-policy sequence masking: drop the policy term of
            sequences with negative advantage whose mean token KL(sampler || pi_theta) exceeds this; None = off.
            Uses ``sampler_logp`` when given, else ``old_logp`` (as TRL).
        entropy_coef: gamma in loss -= gamma * H, H the mean entropy of the tokens the policy term acts on.
        top_entropy_quantile: rho of "Beyond the 80/20 rule": only tokens whose entropy is in the top rho
            quantile get the policy gradient; 1 = all. The quantile is over this call's tokens unless the caller
            passes the whole batch's ``entropy_cutoff`` (the trainer does, so micro-batching stays exact).
        tis_cap: truncated importance sampling against the sampler's own log-probs: the policy term of each
            token is multiplied by min(pi_old / pi_sampler, tis_cap) (TRL ``vllm_importance_sampling_mode=
            "token_truncate"`` with ``vllm_importance_sampling_clip_max``); None = off.
        max_completion_length: the Dr. GRPO constant; required for loss_type="dr_grpo".
        per_task_normaliser: multitask extension: normalise each task's loss by that task's own counts
            (tokens for bnpo/dapo, sequences for grpo/dr_grpo), then combine tasks by ``task_weights``
            (renormalised over the tasks present in the batch), so long code completions do not drown short
            SQL ones. Needs ``task_ids``.
    """

    loss_type: str = "grpo"
    epsilon: float = 0.2
    epsilon_high: float | None = None
    delta: float | None = None
    beta: float = 0.0
    importance_sampling_level: str = "token"
    use_bias_correction_kl: bool = False
    off_policy_mask_threshold: float | None = None
    entropy_coef: float = 0.0
    top_entropy_quantile: float = 1.0
    tis_cap: float | None = None
    max_completion_length: int | None = None
    per_task_normaliser: bool = False

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"PolicyLossConfig: {msg}")

        need(
            self.loss_type in LOSS_TYPES, f"loss_type={self.loss_type!r}: choose one of {sorted(LOSS_TYPES)}"
        )
        need(
            self.importance_sampling_level in IMPORTANCE_LEVELS,
            f"importance_sampling_level={self.importance_sampling_level!r}: choose token or sequence",
        )
        need(
            0.0 <= self.epsilon < 1.0 and self.eps_high >= 0.0, "need 0 <= epsilon < 1 and epsilon_high >= 0"
        )
        need(
            self.delta is None or self.delta > 1.0,
            f"delta={self.delta} must be > 1 (typically > 1 + epsilon_high)",
        )
        need(self.beta >= 0.0, "beta must be >= 0")
        need(0.0 <= self.top_entropy_quantile <= 1.0, "top_entropy_quantile must be in [0, 1]")
        need(self.tis_cap is None or self.tis_cap > 0.0, "tis_cap must be > 0 (or None)")
        need(
            self.loss_type != "dr_grpo" or (self.max_completion_length or 0) > 0,
            "loss_type='dr_grpo' normalises by max_completion_length: set it (> 0)",
        )

    @property
    def eps_high(self) -> float:
        """The effective upper clip epsilon."""
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


def batch_totals(
    mask: Tensor, task_ids: Tensor | None = None, num_tasks: int | None = None
) -> dict[str, Any]:
    """The whole batch's normalisers, as keyword arguments for every micro-batch call of ``policy_loss``.

    mask: [N, T] loss mask of the whole batch; task_ids: [N] long in [0, num_tasks) (optional).
    Returns total_sequences (int), total_tokens (float) and, with task ids, task_sequence_totals [K] and
    task_token_totals [K] (float).
    """
    out: dict[str, Any] = {"total_sequences": mask.shape[0], "total_tokens": float(mask.sum())}
    if task_ids is not None:
        task_ids = task_ids.to(mask.device)
        k = int(num_tasks if num_tasks is not None else int(task_ids.max()) + 1)
        out["task_sequence_totals"] = torch.bincount(task_ids, minlength=k).float()
        out["task_token_totals"] = torch.zeros(k, device=mask.device).index_add_(
            0, task_ids, mask.float().sum(-1)
        )
    return out


def _denominators(
    mask: Tensor,
    cfg: PolicyLossConfig,
    total_sequences: int | None,
    total_tokens: float | None,
    task_ids: Tensor | None,
    task_weights: Tensor | None,
    task_sequence_totals: Tensor | None,
    task_token_totals: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample sequence count, token count and task weight, each [N, 1], that the sample's loss is scaled by."""
    ones = mask.new_ones(mask.shape[0], 1)
    if not cfg.per_task_normaliser:
        seqs = ones * (mask.shape[0] if total_sequences is None else total_sequences)
        toks = mask.sum() if total_tokens is None else mask.new_tensor(total_tokens)
        if task_weights is None:
            return seqs, ones * toks.clamp(min=1.0), ones
        if task_ids is None:
            raise ValueError("task_weights need task_ids [N]")
        # each sample's loss times its task's weight (weights are relative: 1 = unchanged)
        return seqs, ones * toks.clamp(min=1.0), task_weights.to(mask)[task_ids.to(mask.device)].unsqueeze(1)
    if task_ids is None:
        raise ValueError("per_task_normaliser=True needs task_ids [N]")
    task_ids = task_ids.to(mask.device)
    given = [x for x in (task_weights, task_sequence_totals, task_token_totals) if x is not None]
    k = given[0].numel() if given else int(task_ids.max()) + 1
    if task_sequence_totals is None:
        task_sequence_totals = torch.bincount(task_ids, minlength=k)
    if task_token_totals is None:
        task_token_totals = mask.new_zeros(k).index_add_(0, task_ids, mask.sum(-1))
    w = mask.new_ones(k) if task_weights is None else task_weights.to(mask)
    w = torch.where(task_sequence_totals.to(mask.device) > 0, w, torch.zeros_like(w))  # tasks present
    w = w / w.sum().clamp(min=torch.finfo(mask.dtype).tiny)  # a convex combination of the task losses
    seqs = task_sequence_totals.to(mask)[task_ids].clamp(min=1.0).unsqueeze(1)
    toks = task_token_totals.to(mask)[task_ids].clamp(min=1.0).unsqueeze(1)
    return seqs, toks, w[task_ids].unsqueeze(1)


def _check_inputs(cfg: PolicyLossConfig, ref_logp, entropy, sampler_logp) -> None:
    if cfg.beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (log-probs under the reference policy)")
    if (cfg.entropy_coef != 0 or cfg.top_entropy_quantile < 1.0) and entropy is None:
        raise ValueError("entropy_coef != 0 or top_entropy_quantile < 1 needs the per-token entropy")
    if cfg.tis_cap is not None and sampler_logp is None:
        raise ValueError("tis_cap needs sampler_logp (the sampler's own log-probs of the completion tokens)")


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: PolicyLossConfig,
    ref_logp: Tensor | None = None,
    entropy: Tensor | None = None,
    sampler_logp: Tensor | None = None,
    total_sequences: int | None = None,
    total_tokens: float | None = None,
    task_ids: Tensor | None = None,
    task_weights: Tensor | None = None,
    task_sequence_totals: Tensor | None = None,
    task_token_totals: Tensor | None = None,
    entropy_cutoff: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped policy-gradient loss (scalar) and detached metrics.

    logp: [N, T] log-probs of the completion tokens under pi_theta (with grad).
    old_logp: [N, T] under the policy that generated them (one update per rollout: ``logp.detach()``).
    advantages: [N]. mask: [N, T], 1 on tokens that count. ref_logp: [N, T], needed iff beta > 0.
    entropy: [N, T] per-token entropy (with grad if entropy_coef != 0). sampler_logp: [N, T] the sampler's
    own log-probs (TIS, off-policy masking, mismatch metrics; NaN = not scored, treated as no mismatch).
    total_sequences, total_tokens: the whole batch's counts when this call is one micro-batch (None: this
    call's; ``batch_totals`` computes them). task_ids [N], task_weights [K] (default: equal),
    task_sequence_totals [K], task_token_totals [K]: per-task normalisation (``cfg.per_task_normaliser``);
    there the task totals replace total_sequences/total_tokens in the policy and KL terms (total_tokens still
    scales the entropy bonus); they default to this call's counts.

    Metrics: scalars (masked means over this call) kl, entropy, clip_frac/{low,high,region},
    is_ratio/{mean,min,max}, and with sampler_logp mismatch/{abs_logp_diff_mean,abs_logp_diff_max,
    is_ratio_mean,is_ratio_min,is_ratio_max}, with off-policy masking off_policy/masked_frac; per sequence [N]:
    seq/tokens, seq/clip_frac, seq/is_ratio, seq/kl, seq/entropy.
    """
    _check_inputs(cfg, ref_logp, entropy, sampler_logp)
    valid = mask > 0
    mask = mask.to(logp.dtype)
    # padding may hold -inf log-probs (keep masks); zero them so they cannot turn into NaN through 0 * inf
    logp, old_logp = logp.masked_fill(~valid, 0.0), old_logp.masked_fill(~valid, 0.0)
    adv = advantages.to(logp).unsqueeze(1)  # [N, 1]

    log_w = IMPORTANCE_LEVELS[cfg.importance_sampling_level](logp - old_logp, mask)  # [N, T] or [N, 1]
    ratio = torch.exp(log_w)
    per_token = clipped_surrogate(ratio, adv, cfg.epsilon, cfg.eps_high, cfg.delta)  # [N, T] or [N, 1]

    keep = hi_mask = is_w = kl = None
    if cfg.off_policy_mask_threshold is not None:
        behaviour = old_logp if sampler_logp is None else sampler_logp.masked_fill(~valid, 0.0)
        keep = off_policy_keep(adv, logp, behaviour, mask, cfg.off_policy_mask_threshold)  # [N, 1]
        per_token = per_token * keep
    if cfg.top_entropy_quantile < 1.0:
        hi_mask = high_entropy_mask(entropy, mask, cfg.top_entropy_quantile, entropy_cutoff)  # [N, T] bool
        per_token = per_token * hi_mask
    if sampler_logp is not None:
        is_w = tis_weights(old_logp, sampler_logp, mask, cfg.tis_cap)  # [N, T]
        if cfg.tis_cap is not None:
            per_token = per_token * is_w
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp.masked_fill(~valid, 0.0))  # [N, T]
        if cfg.use_bias_correction_kl:
            kl = kl * ratio
        if cfg.beta > 0:
            per_token = per_token + cfg.beta * kl

    seqs, toks, task_w = _denominators(
        mask, cfg, total_sequences, total_tokens, task_ids, task_weights, task_sequence_totals, task_token_totals
    )  # fmt: skip
    weights = LOSS_TYPES[cfg.loss_type](mask, seqs, toks, cfg.max_completion_length) * task_w  # [N, T]
    loss = (per_token * weights).sum()

    if cfg.entropy_coef != 0:
        acts_on = mask if hi_mask is None else mask * hi_mask  # the tokens the policy term acts on
        share = mask.sum() / (total_tokens if total_tokens is not None else mask.sum().clamp(min=1.0))
        mean_entropy = (entropy * acts_on).sum() / acts_on.sum().clamp(min=1.0)
        loss = loss - cfg.entropy_coef * mean_entropy * share

    metrics = policy_metrics(
        ratio, adv, mask, cfg.epsilon, cfg.eps_high, cfg.delta, kl=kl, entropy=entropy, keep=keep,
        old_logp=old_logp, sampler_logp=sampler_logp, is_w=is_w,
    )  # fmt: skip
    return loss, metrics


def sft_loss(logp: Tensor, mask: Tensor, total_tokens: float | None = None) -> Tensor:
    """Token-level cross-entropy (scalar): -sum(log p(target) * mask) / total_tokens.

    logp: [N, T] log-probs of the target tokens. mask: [N, T], 1 on target tokens. total_tokens: the whole
    batch's target-token count when this call is one micro-batch (None: this call's), so micro-batch losses
    sum to the batch loss.
    """
    valid = mask > 0
    denom = total_tokens if total_tokens is not None else valid.sum().clamp(min=1)
    return -logp.masked_fill(~valid, 0.0).sum() / denom
