"""What a benchmark is to the runner: a loader, a prompt (inside the items), a scorer and its metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlvr.domains.base import DataError, Example
from rlvr.eval.multiple_choice import ChoiceQuestion
from rlvr.eval.store import CATEGORIES, SampleResult


@dataclass(frozen=True)
class Verdict:
    """How one completion scored: ``correct`` (0/1), an outcome category and benchmark-specific facts."""

    correct: float
    category: str
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(
                f"verdict category {self.category!r} is not one of {CATEGORIES}: map the verifier's verdict "
                "to a category (e.g. rlvr.domains.sql.verify.category_of)"
            )


@dataclass(frozen=True)
class GenItem:
    """One generation item: its id in the benchmark and the example (chat messages + verifier reference)."""

    uid: str
    example: Example


@dataclass
class Loaded:
    """A benchmark's items in file order, the items that could not be used counted by reason, and the ids of
    those unusable items (a prediction for one is skipped, not an unknown id)."""

    items: list[GenItem] | list[ChoiceQuestion]
    skipped: dict[str, int] = field(default_factory=dict)
    unusable_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Benchmark:
    """One benchmark.

    Attributes:
        name: the name used on the command line and in metrics.json.
        kind: ``"generate"`` (sampled completions scored by a verifier) or ``"choice"`` (log-likelihood).
        primary: the headline metric.
        load: ``data_root -> Loaded``; ``None`` reads the hub (or an installed package).
        judge: generation only, ``(completions, items) -> verdicts``, one per completion, batched so a
            verifier can run them concurrently.
        metrics: benchmark-specific metrics from the scored samples (common ones are added by the runner).
        max_new_tokens: default generation budget.
        normalize: leniency for ``--predictions``: turns a given answer (a bare number, bare SQL, a
            function body) into a completion the verifier reads. Never applied to generated text.
    """

    name: str
    kind: Literal["generate", "choice"]
    primary: str
    load: Callable[[Path | None], Loaded]
    metrics: Callable[[Sequence[SampleResult]], dict[str, float]]
    judge: Callable[[Sequence[str], Sequence[GenItem]], list[Verdict]] | None = None
    max_new_tokens: int = 512
    normalize: Callable[[str, GenItem], str] | None = None


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; ``nan`` for no values (metrics of an empty benchmark are undefined, not 0)."""
    return sum(values) / len(values) if values else float("nan")


def local_file(data_root: Path, relative: str) -> Path:
    """``data_root / relative``, or a one-line :class:`DataError` saying what the data root must hold."""
    path = Path(data_root).expanduser() / relative
    if not path.exists():
        raise DataError(f"missing {path}: --data-root must hold {relative} (laid out like shared/data)")
    return path
