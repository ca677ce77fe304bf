"""Scalar schedules of the trainer: the SFT weight lambda of the hybrid loss and the adaptive entropy and KL
coefficients."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["SFT_SCHEDULES", "adapt_entropy_coef", "adapt_kl_coef", "sft_weight"]


def _constant(step: int, total: int, start: float, end: float, switch: int) -> float:
    return start


def _linear(step: int, total: int, start: float, end: float, switch: int) -> float:
    return start + (end - start) * min(step / max(total, 1), 1.0)


def _cosine(step: int, total: int, start: float, end: float, switch: int) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(step / max(total, 1), 1.0)))


def _step(step: int, total: int, start: float, end: float, switch: int) -> float:
    return start if step < switch else end


SFT_SCHEDULES: dict[str, Callable[[int, int, float, float, int], float]] = {
    "constant": _constant,
    "linear": _linear,
    "cosine": _cosine,
    "step": _step,
}


def sft_weight(
    schedule: str, step: int, total_steps: int, start: float, end: float, switch_step: int
) -> float:
    """lambda of the hybrid loss at ``step``: constant (start) | linear or cosine from start to end over
    ``total_steps`` (then held at end) | step (start before ``switch_step``, end from it on)."""
    if schedule not in SFT_SCHEDULES:
        raise ValueError(f"schedule={schedule!r}: choose one of {sorted(SFT_SCHEDULES)}")
    return SFT_SCHEDULES[schedule](step, total_steps, start, end, switch_step)


def adapt_entropy_coef(
    coef: float, entropy: float, target: float, lr: float, coef_min: float, coef_max: float
) -> float:
    """One step of the adaptive entropy coefficient (Skywork-OR1; TRL ``use_adaptive_entropy``).

    Raise ``coef`` by ``lr`` when the measured mean entropy is at or below ``target``, lower it otherwise,
    clamped to [coef_min, coef_max]. TRL applies the coefficient only while entropy <= target; the caller
    decides that gating.
    """
    step = lr if entropy <= target else -lr
    return min(max(coef + step, coef_min), coef_max)


def adapt_kl_coef(beta: float, kl: float, target: float, n_steps: int, horizon: int) -> float:
    """One update of the adaptive KL coefficient (Ziegler et al. 2019; TRL's ``AdaptiveKLController``).

    β moves by the proportional error ``clip(kl / target - 1, -0.2, 0.2)`` scaled by ``n_steps / horizon``:
    up while the measured KL is above ``target``, down while below, at most 20% per ``horizon`` steps.
    """
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_steps / horizon)
