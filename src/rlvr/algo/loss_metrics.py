"""Detached diagnostics of the policy loss: clip fractions, importance ratios, KL, entropy, sampler mismatch.

Scalars are masked means over one ``policy_loss`` call (as TRL's logged metrics); ``seq/*`` tensors [N] let the
caller aggregate per task. Tensors shaped [N, 1] (sequence-level importance sampling) count once per sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["policy_metrics"]


def _stats(values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """mean, min, max of a 1-D tensor (zeros when empty)."""
    if values.numel() == 0:
        zero = values.new_zeros(())
        return zero, zero, zero
    return values.mean(), values.min(), values.max()


@torch.no_grad()
def policy_metrics(
    ratio: Tensor,
    adv: Tensor,
    mask: Tensor,
    eps_low: float,
    eps_high: float,
    delta: float | None,
    kl: Tensor | None = None,
    entropy: Tensor | None = None,
    keep: Tensor | None = None,
    old_logp: Tensor | None = None,
    sampler_logp: Tensor | None = None,
    is_w: Tensor | None = None,
) -> dict[str, Tensor]:
    """Metrics of one loss call.

    ratio: [N, T] or [N, 1] pi_theta / pi_old; adv: [N, 1]; mask: [N, T]; kl, entropy: [N, T]; keep: [N, 1]
    off-policy mask; old_logp, sampler_logp, is_w: [N, T] (sampler mismatch and its importance weights).
    Clip fractions count tokens whose gradient the clip removed (low: A < 0 and r < 1 - eps_low; high: A > 0 and
    r > 1 + eps_high, r after the dual-clip cap), as TRL's clip_ratio/*.
    """
    ratio = ratio.detach()
    valid = mask > 0
    tokens = mask.sum(-1)  # [N]

    def mean(x: Tensor) -> Tensor:
        return x.mean() if x.shape[1] == 1 else (x * mask).sum() / tokens.sum().clamp(min=1.0)

    def seq_mean(x: Tensor) -> Tensor:
        return x.squeeze(1) if x.shape[1] == 1 else (x * mask).sum(-1) / tokens.clamp(min=1.0)  # [N]

    capped = ratio if delta is None else ratio.clamp(max=delta)
    low = ((capped < 1.0 - eps_low) & (adv < 0)).to(mask.dtype)
    high = ((capped > 1.0 + eps_high) & (adv > 0)).to(mask.dtype)
    region = torch.maximum(low, high)
    r_mean, r_min, r_max = _stats(ratio.squeeze(1) if ratio.shape[1] == 1 else ratio[valid])
    out = {
        "clip_frac/low": mean(low),
        "clip_frac/high": mean(high),
        "clip_frac/region": mean(region),
        "is_ratio/mean": r_mean,
        "is_ratio/min": r_min,
        "is_ratio/max": r_max,
        "seq/tokens": tokens,
        "seq/clip_frac": seq_mean(region),
        "seq/is_ratio": seq_mean(ratio),
    }
    if kl is not None:
        out["kl"], out["seq/kl"] = mean(kl.detach()), seq_mean(kl.detach())
    if entropy is not None:
        out["entropy"], out["seq/entropy"] = mean(entropy.detach()), seq_mean(entropy.detach())
    if keep is not None:
        out["off_policy/masked_frac"] = 1.0 - keep.mean()
        out["seq/off_policy_kept"] = keep.squeeze(1)
    if sampler_logp is not None and old_logp is not None and is_w is not None:
        diff = (old_logp.detach() - sampler_logp).abs()
        d_mean, _, d_max = _stats(diff[valid & ~torch.isnan(diff)])
        w_mean, w_min, w_max = _stats(is_w[valid])
        out.update({
            "mismatch/abs_logp_diff_mean": d_mean,
            "mismatch/abs_logp_diff_max": d_max,
            "mismatch/is_ratio_mean": w_mean,
            "mismatch/is_ratio_min": w_min,
            "mismatch/is_ratio_max": w_max,
        })  # fmt: skip
    return out
