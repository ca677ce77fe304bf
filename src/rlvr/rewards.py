"""Reward components of all tasks as one masked matrix, and the weighted total per sample.

Columns are the union of every task's components (a component shared by several tasks, such as
``strict_format``, is one column). ``mask[i, c]`` says whether component ``c`` applies to sample ``i``'s
task: a component that does not apply is *masked*, not zero — it takes no part in the total and its logged
mean is over the samples it applies to. Trainer-side components that apply to every task (DAPO's
``overlong`` penalty) are added with :func:`add_component`, so ``total == sum(weights * values)`` always holds
and every part of the reward is logged as ``reward/<task>/<component>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlvr.domains.base import Task, max_reward


@dataclass
class RewardBatch:
    names: list[str]  # C component names
    tasks: list[str]  # N task name per sample
    values: Tensor  # [N, C] component values (0 where masked)
    mask: Tensor  # [N, C] bool, component applies to the sample's task
    weights: Tensor  # [N, C] weight of each component in the sample's total (0 where masked)
    total: Tensor  # [N] sum_c w_c * r_c over the components that apply
    correct: Tensor  # [N] the task's accuracy component (1.0 = correct)
    max_total: Tensor  # [N] the largest total the sample's task can give (sum of its positive weights)

    def means(self) -> dict[str, float]:
        """``reward/total``, ``reward/<task>/total``, ``reward/<task>/normalised`` (total / the task's
        maximum, comparable across tasks whose reward scales differ), ``reward/<task>/<component>``,
        ``accuracy/<task>``: means over the samples each applies to, never diluted by other tasks' samples."""
        out = {"reward/total": self.total.mean().item()}
        for task in sorted(set(self.tasks)):
            rows = torch.tensor([t == task for t in self.tasks])
            out[f"reward/{task}/total"] = self.total[rows].mean().item()
            out[f"reward/{task}/normalised"] = (
                (self.total[rows] / self.max_total[rows].clamp(min=1e-9)).mean().item()
            )
            out[f"accuracy/{task}"] = self.correct[rows].mean().item()
            for c, name in enumerate(self.names):
                applies = rows & self.mask[:, c]
                if applies.any():
                    out[f"reward/{task}/{name}"] = self.values[applies, c].mean().item()
        return out


def component_columns(tasks: Mapping[str, Task]) -> list[str]:
    """The union of the tasks' component names, in first-seen order (tasks sorted by name)."""
    names: list[str] = []
    for name in sorted(tasks):
        names += [c for c in tasks[name].components if c not in names]
    return names


def assemble(
    tasks: Mapping[str, Task], sample_tasks: Sequence[str], scores: Sequence[Mapping[str, float]]
) -> RewardBatch:
    """Build the masked matrix from per-sample ``{component: value}`` dicts."""
    names = component_columns(tasks)
    col = {n: j for j, n in enumerate(names)}
    n = len(scores)
    values = torch.zeros(n, len(names))
    mask = torch.zeros(n, len(names), dtype=torch.bool)
    weights = torch.zeros(n, len(names))
    correct = torch.zeros(n)
    max_total = torch.tensor([max_reward(tasks[t].weights) for t in sample_tasks], dtype=torch.float32)
    for i, (task_name, comp) in enumerate(zip(sample_tasks, scores)):
        task = tasks[task_name]
        for c in task.components:
            j = col[c]
            values[i, j] = float(comp.get(c, 0.0))
            mask[i, j] = True
            weights[i, j] = float(task.weights.get(c, 0.0))
        correct[i] = float(comp.get(task.accuracy_component, 0.0))
    total = (values * weights).sum(-1)  # weights are 0 where masked
    return RewardBatch(names, list(sample_tasks), values, mask, weights, total, correct, max_total)


def add_component(rb: RewardBatch, name: str, values: Tensor, weight: float) -> RewardBatch:
    """``rb`` with one more component that applies to every sample (values [N], one weight), e.g. DAPO's
    ``overlong`` penalty in [-1, 0]; the total gains ``weight * values``."""
    if name in rb.names:
        raise ValueError(f"reward component {name!r} is added by the trainer: rename the task's component")
    n = len(rb.tasks)
    w = torch.full((n, 1), float(weight))
    return RewardBatch(
        names=[*rb.names, name], tasks=rb.tasks,
        values=torch.cat([rb.values, values.float().reshape(n, 1)], 1),
        mask=torch.cat([rb.mask, torch.ones(n, 1, dtype=torch.bool)], 1),
        weights=torch.cat([rb.weights, w], 1),
        total=rb.total + w.squeeze(1) * values.float().reshape(n), correct=rb.correct, max_total=rb.max_total,
    )  # fmt: skip


def _score_group(task: Task, completions: list[str], refs: list[Mapping[str, Any]]) -> list[dict[str, float]]:
    if hasattr(task, "judge_batch"):  # e.g. code: every program of the group runs concurrently in the sandbox
        return [j.components for j in task.judge_batch(completions, refs)]
    if hasattr(task, "score_batch"):  # the same, for a task that has no verdicts
        return [dict(c) for c in task.score_batch(completions, refs)]
    return [dict(task.score(c, r)) for c, r in zip(completions, refs)]


def score_async(
    executor: Executor,
    tasks: Mapping[str, Task],
    sample_tasks: Sequence[str],
    completions: Sequence[str],
    references: Sequence[Mapping[str, Any]],
) -> Callable[[], RewardBatch]:
    """Start scoring every sample (one job per task, in ``executor``) and return a function that waits for
    the result, so the caller can run its forward pass while verifiers execute."""
    jobs: list[tuple[list[int], Future]] = []
    for name in sorted(set(sample_tasks)):
        if name not in tasks:
            raise KeyError(f"sample of unknown task {name!r}; known tasks: {sorted(tasks)}")
        idx = [i for i, t in enumerate(sample_tasks) if t == name]
        fut = executor.submit(
            _score_group, tasks[name], [completions[i] for i in idx], [references[i] for i in idx]
        )
        jobs.append((idx, fut))

    def wait() -> RewardBatch:
        scores: list[Mapping[str, float]] = [{}] * len(completions)
        for idx, fut in jobs:
            for i, s in zip(idx, fut.result()):
                scores[i] = s
        return assemble(tasks, sample_tasks, scores)

    return wait
