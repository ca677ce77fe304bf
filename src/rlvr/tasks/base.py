"""The task protocol: how a domain turns records into prompts and completions into rewards.

A task owns three things and nothing else:
  * its prompt format (chat messages built from a record, system prompt configurable),
  * its data sources (hub ids, local files, or a seeded generator) split into train / val,
  * its verifier, a pure function ``completion, reference -> {component: value}``.
Weighting, masking across tasks and batching live in :mod:`rlvr.rewards`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Example:
    """One prompt as it travels through rollout, scoring and loss.

    Attributes:
        task: name of the task that produced it (``"math"``, ``"sql"``, ``"code"``).
        messages: chat messages (``{"role", "content"}``), normally system + user.
        reference: everything the verifier needs (answer, gold SQL, db path, tests...). JSON-serialisable.
        solution: a gold completion in the expected output format, for SFT; ``None`` when there is none.
        uid: a stable identifier (source name + index), used in logs and error analysis.
    """

    task: str
    messages: list[dict[str, str]]
    reference: dict[str, Any]
    solution: str | None = None
    uid: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """What the trainer, the data modules and the scorer need from a domain."""

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
