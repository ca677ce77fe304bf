"""What an evaluation run produces, and how it is written to / read back from its directory.

A result directory holds:

* ``metrics.json``: ``{benchmark: {metric: value}}`` (plus ``n``, ``examples_per_s`` and counters);
* ``samples.jsonl``: one line per scored sample (:class:`SampleResult`), for error analysis and ``compare``;
* ``errors.json``: ``{benchmark: {category: {"count", "examples"}}}``;
* ``run.json``: how the run was made (model, adapter, arguments, unmatched predictions);
* ``report.md``: the metrics table and the error section, for people.

:func:`write_run` writes a complete directory or nothing: the files go into a hidden sibling first, which then
takes the result directory's place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlvr.domains.base import DataError

#: outcome categories of a sample, "correct" first; every other one is an error kind
CATEGORIES = (
    "correct", "format_error", "no_answer", "wrong_answer", "sql_error", "runtime_error", "syntax_error",
    "timeout",
)  # fmt: skip


@dataclass
class SampleResult:
    """One scored completion (or one multiple-choice question).

    Attributes:
        benchmark: benchmark name.
        id: the item's id in its benchmark (see the ``--predictions`` format), as a string.
        sample: index of this completion among the item's samples.
        completion: the generated (or given) text; for multiple choice the chosen option's label.
        correct: 1.0 when right, else 0.0.
        category: one of :data:`CATEGORIES`.
        detail: benchmark-specific facts (extracted answer, verdict message, log-likelihoods, ...).
    """

    benchmark: str
    id: str
    sample: int
    completion: str
    correct: float
    category: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """Everything one ``evaluate`` call produced."""

    metrics: dict[str, dict[str, float]]
    samples: list[SampleResult]
    errors: dict[str, dict[str, dict[str, Any]]]
    info: dict[str, Any] = field(default_factory=dict)


def check_out_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Raise a one-line :class:`DataError` unless :func:`write_run` may write ``out_dir``: it must be absent,
    an empty directory, or (with ``overwrite``) an earlier result directory."""
    out = Path(out_dir)
    if not out.exists():
        return out
    if not out.is_dir():
        raise DataError(f"--out {out} is a file, not a directory: pass another --out")
    if (out / "metrics.json").is_file():
        if not overwrite:
            raise DataError(
                f"{out} already holds an evaluation result: pass --overwrite to replace it or --out DIR"
            )
        return out
    if any(out.iterdir()):  # never replace (delete) a directory that is not ours
        raise DataError(
            f"{out} is not empty and holds no evaluation result (no metrics.json): pass another --out"
        )
    return out


def write_run(out_dir: str | Path, run: RunResult, report_markdown: str, *, overwrite: bool = True) -> Path:
    """Write the run's files as the directory ``out_dir`` (its parents created if needed); returns it.

    The files are written into a temporary sibling that then replaces ``out_dir``, so a crash leaves either
    the earlier state or the complete result, never a half-written directory. An earlier result there is
    replaced only with ``overwrite`` (``rlvr evaluate`` passes its ``--overwrite``; a callback re-evaluating
    a step keeps the default); a directory that holds other files is never replaced (:func:`check_out_dir`).
    """
    out = Path(out_dir)
    check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        (tmp / "metrics.json").write_text(json.dumps(_finite(run.metrics), indent=2) + "\n")
        (tmp / "errors.json").write_text(json.dumps(run.errors, indent=2) + "\n")
        (tmp / "run.json").write_text(json.dumps(run.info, indent=2, default=str) + "\n")
        with open(tmp / "samples.jsonl", "w", encoding="utf-8") as f:
            for s in run.samples:
                f.write(json.dumps(asdict(s), ensure_ascii=False, default=str) + "\n")
        (tmp / "report.md").write_text(report_markdown)
        _replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_dir(new: Path, out: Path, overwrite: bool) -> None:
    """Rename the complete directory ``new`` to ``out``; an existing ``out`` is moved aside first and deleted
    only once ``new`` is in its place (it is moved back if that fails)."""
    check_out_dir(out, overwrite)  # again: another run may have finished meanwhile
    if not out.exists() or not any(out.iterdir()):
        os.replace(new, out)  # POSIX: onto a missing or an empty directory, atomically
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def load_run(run_dir: str | Path) -> RunResult:
    """Read a directory written by :func:`write_run`; a missing ``metrics.json`` is a one-line error."""
    d = Path(run_dir)
    if not (d / "metrics.json").is_file():
        raise DataError(
            f"{d} is not an evaluation result directory (no metrics.json); run `rlvr evaluate` first"
        )
    metrics = json.loads((d / "metrics.json").read_text())
    samples = []
    if (d / "samples.jsonl").is_file():
        with open(d / "samples.jsonl", encoding="utf-8") as f:
            samples = [SampleResult(**json.loads(line)) for line in f if line.strip()]
    errors = json.loads((d / "errors.json").read_text()) if (d / "errors.json").is_file() else {}
    info = json.loads((d / "run.json").read_text()) if (d / "run.json").is_file() else {}
    return RunResult(metrics, samples, errors, info)


def _finite(metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """JSON has no NaN: undefined metrics (e.g. pass@k with too few samples) are written as null."""
    return {
        b: {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in m.items()}
        for b, m in metrics.items()
    }
