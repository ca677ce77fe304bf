"""``rlvr score``: score completions of any system offline with the trainer's verifiers.

    python -m rlvr score --input preds.jsonl --output scored.jsonl [--tasks my_tasks.yaml]

Input lines: ``{"task": NAME, "completion": "...", ...reference fields}``. Built-in tasks: math needs
``answer``; sql ``db_path`` and ``gold_sql``; code ``test`` + ``entry_point`` (HumanEval) or ``tests`` (list
of asserts, MBPP), optional ``setup_code``. ``--tasks`` adds (or overrides) tasks from a YAML file, in the
``data.tasks`` form of the training configs, so a plugin task's lines are scored by its own verifier.
Output lines: the input plus ``rewards`` {component: value}, ``reward`` (weighted total with the task's
weights), ``max_reward``, ``verdict`` (the task's verdict vocabulary) and ``error``. Every input line gets one
output line: a line that cannot be read or judged gets the verdict ``invalid_input`` and a reason; the
command itself never crashes or hangs, and the output file appears only when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlvr.domains.base import INVALID_INPUT, DataError, Judgement, judge_all, max_reward
from rlvr.domains.registry import DOMAINS, default_task, load_tasks_file

CHUNK = 256  # lines judged together (code runs concurrently in the sandbox pool)
MAX_LINE_BYTES = 8 << 20  # a longer line is not read into JSON at all


def parse_line(raw: bytes) -> tuple[dict | None, str | None]:
    """A JSON object from one input line, or ``None`` and why not (never raises)."""
    if len(raw) > MAX_LINE_BYTES:
        return None, f"line longer than {MAX_LINE_BYTES} bytes"
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 (byte {e.start})"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg})"
    except (RecursionError, ValueError) as e:  # nesting too deep; integers over the digit limit
        return None, f"unreadable JSON ({type(e).__name__}: {str(e)[:120]})"
    if not isinstance(record, dict):
        return None, "a line must be a JSON object"
    return record, None


def _problem(record: Mapping[str, Any], tasks: Mapping[str, Any]) -> str | None:
    name = record.get("task")
    if not isinstance(name, str) or name not in tasks:
        return f"unknown task {name!r}: use one of {sorted(tasks)} (or add yours with --tasks)"
    if not isinstance(record.get("completion"), str):
        return "'completion' must be a string"
    check = getattr(tasks[name], "check_reference", None)
    return check(record) if check is not None else None


def _invalid(reason: str) -> Judgement:
    return Judgement({}, INVALID_INPUT, reason)


def _judge_safely(
    task: Any, completions: Sequence[str], refs: Sequence[Mapping[str, Any]]
) -> list[Judgement]:
    """Judge a group together; if that raises, judge line by line so only the offending lines fail."""
    try:
        return judge_all(task, completions, refs)
    except Exception:
        out = []
        for c, r in zip(completions, refs):
            try:
                out.append(judge_all(task, [c], [r])[0])
            except Exception as e:  # a verifier bug or a reference it cannot read: that line only
                out.append(_invalid(f"verifier raised {type(e).__name__}: {str(e)[:160]}"))
        return out


def judge_records(records: Sequence[dict | None], tasks: Mapping[str, Any]) -> list[Judgement | None]:
    """Judgements of parsed lines (``None`` stays ``None``), grouped by task so batches run concurrently."""
    out: list[Judgement | None] = [None] * len(records)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        if rec is None:
            continue
        try:
            problem = _problem(rec, tasks)
        except Exception as e:
            problem = f"reference check raised {type(e).__name__}: {str(e)[:160]}"
        if problem:
            out[i] = _invalid(problem)
        else:
            groups[rec["task"]].append(i)
    for name, idx in groups.items():
        judged = _judge_safely(
            tasks[name], [records[i]["completion"] for i in idx], [records[i] for i in idx]
        )
        for i, j in zip(idx, judged):
            out[i] = j
    return out


def scored_line(record: dict | None, raw: bytes, j: Judgement, tasks: Mapping[str, Any]) -> bytes:
    """One output line (UTF-8; lone surrogates and other unencodable text fall back to ASCII escapes)."""
    row: dict[str, Any] = (
        dict(record) if record is not None else {"input": raw[:1000].decode("utf-8", "replace")}
    )
    task = tasks.get(row.get("task")) if j.verdict != INVALID_INPUT else None
    weights = task.weights if task is not None else {}
    total = sum(float(weights.get(c, 0.0)) * v for c, v in j.components.items())
    row.update(
        rewards=j.components, reward=total, max_reward=max_reward(weights), verdict=j.verdict, error=j.error
    )
    try:
        return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        try:
            return (json.dumps(row) + "\n").encode("ascii")
        except (ValueError, RecursionError):  # e.g. a huge int in an echoed field: keep only the verdict
            slim = {"verdict": j.verdict, "error": j.error, "rewards": j.components, "reward": total}
            return (json.dumps(slim) + "\n").encode("ascii")


def score_file(src: Path, dst: Path, tasks: Mapping[str, Any] | None = None) -> Counter:
    """Score ``src`` into ``dst`` (written to a temp file and renamed); returns verdict counts."""
    tasks = dict(tasks) if tasks is not None else {}
    for name in DOMAINS:
        tasks.setdefault(name, None)
    tasks = _Tasks(tasks)
    counts: Counter = Counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}-")
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            while True:
                lines = [ln for ln in (fin.readline() for _ in range(CHUNK)) if ln]
                if not lines:
                    break
                lines = [ln for ln in lines if ln.strip()]
                parsed = [parse_line(ln) for ln in lines]
                judged = judge_records([rec for rec, _ in parsed], tasks)
                for ln, (rec, err), j in zip(lines, parsed, judged):
                    j = j if rec is not None and j is not None else _invalid(err or "unreadable line")
                    counts[j.verdict] += 1
                    fout.write(scored_line(rec, ln, j, tasks))
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return counts


class _Tasks(dict):
    """Task name -> task; built-in tasks are created on first use (scoring math never starts the sandbox)."""

    def __getitem__(self, name: str) -> Any:
        task = super().__getitem__(name)
        if task is None:
            task = default_task(name)
            self[name] = task
        return task

    def get(self, name: Any, default: Any = None) -> Any:
        return self[name] if isinstance(name, str) and name in self else default


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rlvr score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="JSON-lines file of completions")
    parser.add_argument("--output", required=True, type=Path, help="where to write the scored lines")
    parser.add_argument(
        "--tasks", type=Path, help="YAML with extra tasks (data.tasks: [{class_path, init_args}])"
    )
    args = parser.parse_args(argv)
    if not args.input.is_file():
        print(f"rlvr score: error: input file not found: {args.input}", file=sys.stderr)
        return 2
    if args.output.is_dir():
        print(f"rlvr score: error: --output {args.output} is a directory: give a file path", file=sys.stderr)
        return 2
    try:
        extra = load_tasks_file(args.tasks) if args.tasks else {}
    except (DataError, ValueError, TypeError) as e:
        print(f"rlvr score: error: {e}", file=sys.stderr)
        return 2
    try:
        counts = score_file(args.input, args.output, extra)
    except OSError as e:  # cannot write the output (permissions, disk full): nothing half-written is left
        print(f"rlvr score: error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 2
    summary = ", ".join(f"{v} {k}" for k, v in counts.most_common())
    print(f"scored {sum(counts.values())} lines -> {args.output} ({summary})")
    return 0
