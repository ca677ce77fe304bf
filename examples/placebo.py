"""A placebo control for the RL stage: the task's real verifier still decides validation accuracy, but the
training reward is a coin flip that ignores whether the completion is right.

A placebo run has everything of the real run but the information in its reward: the same learning rate, warm-up,
KL anchor, number of GRPO steps and completions, so the policy moves as far (its KL to the reference grows like
the real run's) in directions the verifier did not choose. The real run's gain over the placebo's is what the
verifier's reward is worth. Used as ``--config examples/placebo_math.yaml`` with ``PYTHONPATH=examples``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from rlvr.domains.code import CodeTask
from rlvr.domains.math import MathTask

COIN = "coin"


def coin(completion: str, reference: Mapping[str, Any], p: float) -> float:
    """1 with probability ``p``, a fixed function of the completion and its prompt's reference (so a run is
    reproducible and two identical completions get the same reward, as a verifier gives them)."""
    key = completion + "\x00" + json.dumps(reference, sort_keys=True, default=str)
    draw = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return 1.0 if draw < p else 0.0


class _Placebo:
    """Adds the ``coin`` component and makes it the whole training reward; ``accuracy_component`` stays the
    real one, so validation and evaluation are the task's own."""

    p: float

    def _as_placebo(self, p: float) -> None:
        if not 0.0 < p < 1.0:
            raise ValueError(f"p must be in (0, 1), got {p}")
        self.p = p
        self.components = (*type(self).components, COIN)
        self.weights = {c: 0.0 for c in self.components} | {COIN: 1.0}


class PlaceboMath(_Placebo, MathTask):
    """:class:`rlvr.domains.math.MathTask` (generated problems) with a coin-flip training reward.

    Args:
        p: the coin's chance of 1; match the real run's sampled accuracy (the default run's is ~0.75) so as
            many groups carry a (random) signal as in the real run.
        difficulty, num_train: as in ``MathTask``.
    """

    def __init__(self, p: float = 0.75, difficulty: int = 1, num_train: int | None = None) -> None:
        super().__init__(source="generated", difficulty=difficulty, num_train=num_train)
        self._as_placebo(p)

    def score(self, completion: str, reference: Mapping[str, Any]) -> dict[str, float]:
        return {**super().score(completion, reference), COIN: coin(completion, reference, self.p)}

    def judge(self, completion: str, reference: Mapping[str, Any]):
        j = super().judge(completion, reference)
        return dataclasses.replace(j, components={**j.components, COIN: coin(completion, reference, self.p)})


class PlaceboCode(_Placebo, CodeTask):
    """:class:`rlvr.domains.code.CodeTask` (generated tasks, real sandbox) with a coin-flip training reward."""

    def __init__(self, p: float = 0.5, difficulty: int = 1) -> None:
        super().__init__(source="generated", difficulty=difficulty)
        self._as_placebo(p)

    def judge_batch(self, completions, references):
        judged = super().judge_batch(completions, references)
        return [
            dataclasses.replace(j, components={**j.components, COIN: coin(c, r, self.p)})
            for j, c, r in zip(judged, completions, references)
        ]
