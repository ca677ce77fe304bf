"""Which stage a step is in: λ of λ·L_SFT + (1−λ)·L_GRPO per optimizer step, and the SFT -> RL transition.

λ comes from the ``hybrid`` schedule unless a stage controller (``callbacks.StageSwitch``) overrides it.
Kept as plain state (numbers) so a checkpoint can hold it.
"""

from __future__ import annotations

from rlvr.algo.schedules import sft_weight
from rlvr.settings import HybridSchedule


class StageControl:
    """λ per step and the moment training leaves pure SFT.

    Args:
        hybrid: the λ schedule (``step`` with ``switch_fraction`` is an SFT warm-up followed by RL).
    """

    def __init__(self, hybrid: HybridSchedule):
        if hybrid.rl_warmup_steps < 0:
            raise ValueError(f"hybrid.rl_warmup_steps={hybrid.rl_warmup_steps}: must be >= 0")
        self.hybrid = hybrid
        self.override: float | None = None  # λ forced by a controller; None = the schedule decides
        self.previous: float | None = None  # λ of the last step taken

    def weight(self, step: int, max_steps: int | None) -> float:
        """λ of optimizer step ``step`` of a run of ``max_steps`` (the override when one is set)."""
        if self.override is not None:
            return self.override
        h = self.hybrid
        return sft_weight(h.schedule, step, self._total(max_steps), h.start, h.end, self._switch(max_steps))

    def sft_steps(self, max_steps: int | None) -> int:
        """Steps of the SFT stage as the schedule plans it: those before the ``step`` schedule's switch, or
        the whole run for the other schedules (where λ > 0 throughout)."""
        if self.starts_in_rl(max_steps):
            return 0
        return self._switch(max_steps) if self.hybrid.schedule == "step" else self._total(max_steps)

    def starts_in_rl(self, max_steps: int | None) -> bool:
        """Whether the schedule has no SFT stage: λ < 1 from the first step (pure GRPO, or a hybrid blend),
        so ``rl_lr`` and ``rl_warmup_steps`` apply from step 0."""
        return self.override is None and self.weight(0, max_steps) < 1.0

    def lr_plan(self, lr: float, warmup_steps: int, max_steps: int | None) -> tuple[float, int, dict]:
        """The optimizer's base lr, warm-up steps and :meth:`lr_decay` arguments: ``lr`` and ``warmup_steps``,
        or ``rl_lr`` (when set) and ``rl_warmup_steps`` (when > 0) for a run with no SFT stage."""
        h = self.hybrid
        if self.starts_in_rl(max_steps):
            return (lr if h.rl_lr is None else h.rl_lr), (h.rl_warmup_steps or warmup_steps), {}
        return lr, warmup_steps, self.lr_decay(max_steps)

    def lr_decay(self, max_steps: int | None) -> dict:
        """Keyword arguments of :func:`rlvr.models.adamw_with_warmup` for ``hybrid.sft_lr_floor`` and
        ``hybrid.rl_warmup_steps``: a cosine over the SFT stage, then factor 1 when ``rl_lr`` replaces the base
        lr at the switch, reached over ``rl_warmup_steps`` steps."""
        h = self.hybrid
        if h.sft_lr_floor is None and h.rl_warmup_steps <= 0:
            return {}
        floor = 1.0 if h.sft_lr_floor is None else h.sft_lr_floor
        after = 1.0 if h.rl_lr is not None else None
        return {"decay_steps": self.sft_steps(max_steps), "floor": floor, "after": after,
                "after_warmup": h.rl_warmup_steps}  # fmt: skip

    def _total(self, max_steps: int | None) -> int:
        return max_steps if max_steps and max_steps > 0 else max(1, self.hybrid.switch_step)

    def _switch(self, max_steps: int | None) -> int:
        h = self.hybrid
        return (
            h.switch_step if h.switch_fraction is None else round(h.switch_fraction * self._total(max_steps))
        )

    def enters_rl(self, lam: float) -> bool:
        """Record ``lam`` as this step's λ; True when it is the first step after pure SFT (λ left 1)."""
        entered = self.previous is not None and self.previous >= 1.0 > lam
        self.previous = lam
        return entered

    def state_dict(self) -> dict:
        return {"override": self.override, "previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.override, self.previous = state.get("override"), state.get("previous")
