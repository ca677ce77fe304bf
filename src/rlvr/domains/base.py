"""The task protocol: how a domain turns records into prompts and completions into rewards.

A task owns three things and nothing else:
  * its prompt format (chat messages built from a record, system prompt configurable),
  * its data sources (hub ids, local files, or a seeded generator) split into train / val,
  * its verifier, a pure function ``completion, reference -> {component: value}``.
Weighting, masking across tasks and batching live in :mod:`rlvr.rewards`.

This module is part of the public API (``from rlvr import Example, Task, Judgement``) and imports no torch.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

#: the verdict of a correct completion, in every domain's vocabulary
CORRECT = "correct"
#: the verdict of a line or reference that cannot be scored at all
INVALID_INPUT = "invalid_input"


@dataclass(frozen=True)
class Example:
    """One prompt as it travels through rollout, scoring and loss.

    Attributes:
        task: name of the task that produced it (``"math"``, ``"sql"``, ``"code"`` or a plugin's name).
        messages: chat messages (``{"role", "content"}``), normally system + user.
        reference: everything the verifier needs (answer, gold SQL, db path, tests...). JSON-serialisable.
        solution: a gold completion in the expected output format, for SFT; ``None`` when there is none.
        uid: a stable identifier (source name + index), used in logs and error analysis.
        meta: facts about the example that are not needed to score it (difficulty, source record id...).
    """

    task: str
    messages: list[dict[str, str]]
    reference: dict[str, Any]
    solution: str | None = None
    uid: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Judgement:
    """A verifier's full answer about one completion: its reward components, a verdict and why.

    Attributes:
        components: ``{component: value}``, exactly the task's ``components``.
        verdict: one word of the domain's verdict vocabulary; ``"correct"`` means the accuracy component is 1.
        error: a one-line reason for a verdict other than ``correct`` (``None`` when there is nothing to say).
        detail: facts for error analysis (extracted answer, executed query, tests passed, ...).
    """

    components: dict[str, float]
    verdict: str
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """What the trainer, the data modules and the scorer need from a domain.

    Any class with these attributes and methods is a task (duck typing; no base class to inherit). Optional,
    used when present: ``judge(completion, reference) -> Judgement`` (verdicts for ``rlvr score`` and error
    analysis; otherwise derived from the accuracy component), ``judge_batch(completions, references)`` (the
    same for many, e.g. concurrently in a sandbox), ``score_batch(completions, references)`` (components only) and ``check_reference(reference) -> str | None`` (why a
    reference cannot be scored; ``rlvr score`` reports it as ``invalid_input``).
    """

    #: unique name; metrics are logged as ``reward/<name>/<component>`` and ``val/<name>/accuracy``
    name: str
    #: reward component names in a fixed order; ``score`` returns exactly these keys
    components: tuple[str, ...]
    #: component -> weight in the sample's total reward (missing components weigh 0)
    weights: Mapping[str, float]
    #: the component whose value 1.0 means "the answer is correct" (validation accuracy)
    accuracy_component: str

    def examples(self, split: str) -> Sequence[Example]:
        """Prompts of ``split`` ("train" or "val"), deterministic for a given task configuration."""
        ...

    def score(self, completion: str, reference: Mapping[str, Any]) -> dict[str, float]:
        """Pure verifier: never raises on hostile or malformed completions, never hangs."""
        ...


class DataError(ValueError):
    """Bad data source or malformed record; the message is one line naming the problem and the fix."""


#: what :func:`check_task` requires of a task object (attribute name -> what it must be)
TASK_ATTRIBUTES = {
    "name": "a non-empty str",
    "components": "a tuple of component names",
    "weights": "a mapping component -> float",
    "accuracy_component": "one of its components",
    "examples": "a method examples(split) -> list of Example",
    "score": "a method score(completion, reference) -> {component: value}",
}


def check_task(task: Any) -> None:
    """Raise one :class:`ValueError` line naming every missing or malformed part of a duck-typed task."""
    problems = [f"{a} ({want})" for a, want in TASK_ATTRIBUTES.items() if not hasattr(task, a)]
    if not problems:
        if not isinstance(task.name, str) or not task.name:
            problems.append("name (a non-empty str)")
        if not callable(task.examples) or not callable(task.score):
            problems.append("examples/score (methods)")
        components = tuple(task.components) if isinstance(task.components, (tuple, list)) else ()
        if not components or not all(isinstance(c, str) for c in components):
            problems.append("components (a non-empty tuple of str)")
        elif task.accuracy_component not in components:
            problems.append(f"accuracy_component {task.accuracy_component!r} (one of {list(components)})")
        if not isinstance(task.weights, Mapping):
            problems.append("weights (a mapping component -> float)")
        elif components and sorted(set(task.weights) - set(components)):
            problems.append(f"weights name unknown components {sorted(set(task.weights) - set(components))}")
    if problems:
        raise ValueError(
            f"{type(task).__name__} is not a task: needs {'; '.join(problems)} (see 'Your own task' in README.md)"
        )


def merge_weights(
    task: str, defaults: Mapping[str, float], overrides: Mapping[str, float] | None, components: Sequence[str]
) -> dict[str, float]:
    """The task's reward weights: ``overrides`` merged over ``defaults`` (so ``{lcpo_max: 1.0}`` adds a
    component and keeps the rest; ``{soft_format: 0}`` drops one). Unknown component names are an error."""
    unknown = sorted(set(overrides or {}) - set(components))
    if unknown:
        raise ValueError(f"{task} weights name unknown component(s) {unknown}; known: {list(components)}")
    return {**{c: 0.0 for c in components}, **defaults, **(overrides or {})}


def max_reward(weights: Mapping[str, float]) -> float:
    """The largest total a sample can get when every component lies in [0, 1]: the sum of positive weights."""
    return float(sum(w for w in weights.values() if w > 0))


T = TypeVar("T")


def check_levels(
    difficulty: int, train_difficulties: list[int] | None, levels: Collection[int], source: str
) -> list[int] | None:
    """A generator task's ``difficulty`` and ``train_difficulties`` checked against its ``levels`` (one-line
    errors); returns the train ladder as a list, or ``None`` when not given."""
    if difficulty not in levels:
        raise ValueError(f"difficulty must be one of {sorted(levels)}, got {difficulty}")
    bad = [d for d in train_difficulties or () if d not in levels]
    if bad or train_difficulties == []:
        raise ValueError(
            f"train_difficulties must be a non-empty list of levels {sorted(levels)}, got {train_difficulties}"
        )
    if train_difficulties is not None and source != "generated":
        raise DataError("train_difficulties is only read by source 'generated'; drop it for datasets")
    return list(train_difficulties) if train_difficulties else None


def spread(items: list[T], n: int | None) -> list[T]:
    """``n`` items evenly spaced over ``items`` (all when ``n`` is None or not smaller)."""
    if n is None or n >= len(items):
        return items
    return [items[i * len(items) // n] for i in range(n)]


def judge_all(
    task: Any, completions: Sequence[str], references: Sequence[Mapping[str, Any]]
) -> list[Judgement]:
    """Judge completions with whatever the task offers: ``judge_batch`` (concurrent), else ``judge``, else
    ``score`` with the verdict read off the accuracy component (``correct`` at 1, else ``wrong_answer``)."""
    if hasattr(task, "judge_batch"):
        return list(task.judge_batch(completions, references))
    if hasattr(task, "judge"):
        return [task.judge(c, r) for c, r in zip(completions, references)]
    out = []
    for c, r in zip(completions, references):
        comps = dict(task.score(c, r))
        ok = float(comps.get(task.accuracy_component, 0.0)) >= 1.0
        out.append(Judgement(comps, CORRECT if ok else "wrong_answer"))
    return out
