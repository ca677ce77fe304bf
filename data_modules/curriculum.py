"""Per-task difficulty curriculum: keep each task's training success inside an informative band.

GRPO learns only from groups whose completions disagree: a task the policy always solves, or never solves,
gives zero advantages. The curriculum watches each task's success on its training rollouts and moves that
task's difficulty level up when success rises above the band and down when it falls below, so every task in
a mixture keeps producing signal at its own pace.

Levels come from a field of each example's ``meta`` (``difficulty`` by default, then ``level``: the generated
math task's ``train_difficulties``, the generated SQL templates' levels, MATH-500's "Level 3", ...). A task
whose examples carry fewer than two levels has no ladder: it is served as before and only its success is
logged.

Exact resume: a level change takes effect at the stream's current draw index (draws the loader already
prefetched keep the old level), and every change is kept with that index, so a resumed stream that replays
draws from its saved position serves each draw from the pool the uninterrupted run used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rlvr.domains.base import Example

SEP = "@level="


def level_of(example: Example, keys: Sequence[str]) -> Any:
    """The example's level: the first of ``keys`` present in its meta (``None`` when none is)."""
    meta = example.meta or {}
    return next((meta[k] for k in keys if k in meta), None)


def _sort_key(level: Any) -> tuple:
    text = str(level)
    digits = "".join(ch for ch in text if ch.isdigit())  # "Level 3" -> 3; numbers sort as numbers
    return (0, int(digits), text) if digits else (1, 0, text)


class Curriculum:
    """Moves each task's difficulty to keep its recent training success inside ``[low, high]``.

    Args:
        low: success below this (over ``window`` scored completions) moves the task one level down.
        high: success above this moves it one level up.
        window: scored completions of the current level per decision (summed over DDP ranks).
        keys: meta fields read as the level, first present wins.
        start: ``lowest`` level first, or ``highest``.
    """

    def __init__(
        self,
        low: float = 0.2,
        high: float = 0.8,
        window: int = 64,
        keys: Sequence[str] = ("difficulty", "level"),
        start: str = "lowest",
    ):
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"curriculum band [{low}, {high}] is empty: need 0 <= low < high <= 1")
        if window < 1:
            raise ValueError(f"curriculum window={window}: need at least 1 scored completion per decision")
        if start not in ("lowest", "highest"):
            raise ValueError(f"curriculum start={start!r}: choose lowest or highest")
        self.low, self.high, self.window, self.keys, self.start = low, high, window, tuple(keys), start
        self.levels: dict[str, list[Any]] = {}  # task -> its levels, easiest first
        # task -> [(draw index from which it applies, level index)], in order; the last one is current
        self.history: dict[str, list[tuple[int, int]]] = {}
        self.tally: dict[str, list[float]] = {}  # task -> [successes, count] at the current level
        self.last_success: dict[str, float] = {}

    # ---------------------------------------------------------------- pools
    def pools(self, data: Mapping[str, Sequence[Example]]) -> dict[str, list[Example]]:
        """Split every task's training examples into per-level pools (keys ``task@level=L``); a task without
        a ladder keeps one pool under its own name."""
        out: dict[str, list[Example]] = {}
        for task, examples in data.items():
            by_level: dict[Any, list[Example]] = {}
            for ex in examples:
                by_level.setdefault(level_of(ex, self.keys), []).append(ex)
            levels = sorted((lv for lv in by_level if lv is not None), key=_sort_key)
            self.tally.setdefault(task, [0.0, 0.0])
            if len(levels) < 2 or None in by_level:
                out[task] = list(examples)
                continue
            self.levels[task] = levels
            self.history.setdefault(task, [(0, 0 if self.start == "lowest" else len(levels) - 1)])
            out.update({f"{task}{SEP}{lv}": by_level[lv] for lv in levels})
        return out

    def pool(self, task: str, draw: int) -> str:
        """The pool draw number ``draw`` of ``task`` comes from."""
        if task not in self.levels:
            return task
        idx = next(i for at, i in reversed(self.history[task]) if at <= draw)
        return f"{task}{SEP}{self.levels[task][idx]}"

    def current(self, task: str) -> Any:
        return self.levels[task][self.history[task][-1][1]] if task in self.levels else None

    # ---------------------------------------------------------------- feedback
    def observe(
        self, examples: Sequence[Example], correct: Sequence[float], next_draw: int
    ) -> dict[str, float]:
        """Count one step's scored completions (one example per completion) and move levels; returns the
        ``curriculum/<task>/{difficulty,success}`` scalars. ``next_draw``: the stream's next draw index, where
        a change takes effect. Under DDP every rank calls this at the same step; counts are summed."""
        names = sorted(self.tally)
        counts = torch.zeros(len(names), 2, dtype=torch.float64)
        for ex, ok in zip(examples, correct):
            if ex.task in self.tally and level_of(ex, self.keys) == self.current(ex.task):
                counts[names.index(ex.task)] += torch.tensor([float(ok), 1.0], dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)  # gloo/nccl: same decisions on every rank
        metrics: dict[str, float] = {}
        for i, task in enumerate(names):
            tally = self.tally[task]
            tally[0] += float(counts[i, 0])
            tally[1] += float(counts[i, 1])
            if tally[1] > 0:
                self.last_success[task] = tally[0] / tally[1]
            if tally[1] >= self.window:
                self._decide(task, tally[0] / tally[1], next_draw)
            if task in self.last_success:
                metrics[f"curriculum/{task}/success"] = self.last_success[task]
            if task in self.levels:  # the level itself where it is a number, else its rung (1 = easiest)
                level = self.current(task)
                number = isinstance(level, (int, float)) and not isinstance(level, bool)
                metrics[f"curriculum/{task}/difficulty"] = float(
                    level if number else self.history[task][-1][1] + 1
                )
        return metrics

    def _decide(self, task: str, success: float, next_draw: int) -> None:
        self.tally[task] = [0.0, 0.0]
        if task not in self.levels:
            return
        idx = self.history[task][-1][1]
        step = 1 if success > self.high else -1 if success < self.low else 0
        new = min(max(idx + step, 0), len(self.levels[task]) - 1)
        if new != idx:
            self.history[task].append((next_draw, new))

    # ---------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": {t: [list(h) for h in hs] for t, hs in self.history.items()},
            "tally": {t: list(v) for t, v in self.tally.items()},
            "last_success": dict(self.last_success),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for task, hs in state.get("history", {}).items():
            if task in self.history:
                self.history[task] = [(int(a), int(b)) for a, b in hs]
        self.tally.update({t: list(v) for t, v in state.get("tally", {}).items() if t in self.tally})
        self.last_success.update(state.get("last_success", {}))
