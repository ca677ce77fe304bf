"""``rlvr score``: score completions of any system offline with the trainer's verifiers.

    python -m rlvr score --input preds.jsonl --output scored.jsonl

Input lines: ``{"task": "math"|"sql"|"code", "completion": "...", ...reference fields}``
  math: ``answer``;  sql: ``db_path``, ``gold_sql``;  code: ``test`` + ``entry_point`` (HumanEval) or
  ``tests`` (list of asserts, MBPP), optional ``setup_code``.
Output lines: the input plus ``rewards`` {component: value}, ``reward`` (weighted total with the task's default
weights), ``verdict`` and ``error``. Malformed or hostile lines get a verdict and an error; the command itself
never crashes or hangs, and the output file appears only when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from rlvr.tasks.code import CODE_WEIGHTS
from rlvr.tasks.math import DEFAULT_WEIGHTS as MATH_WEIGHTS
from rlvr.tasks.sql import SQL_WEIGHTS
from rlvr.verifiers.judge import Judgement, judge_batch

WEIGHTS = {"math": MATH_WEIGHTS, "sql": SQL_WEIGHTS, "code": CODE_WEIGHTS}
CHUNK = 256  # lines judged together (code runs concurrently in the sandbox pool)


def parse_line(line: str) -> tuple[dict | None, str | None]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg})"
    if not isinstance(record, dict):
        return None, "a line must be a JSON object"
    return record, None


def scored(record: dict | None, raw: str, parse_error: str | None, j: Judgement | None) -> dict:
    if record is None:
        return {
            "input": raw[:1000],
            "rewards": {},
            "reward": 0.0,
            "verdict": "invalid_input",
            "error": parse_error,
        }
    weights = WEIGHTS.get(record.get("task"), {})
    rewards = j.components if j else {}
    total = sum(weights.get(c, 0.0) * v for c, v in rewards.items())
    return {**record, "rewards": rewards, "reward": total, "verdict": j.verdict, "error": j.error}


def score_file(src: Path, dst: Path) -> Counter:
    """Score ``src`` into ``dst`` (written to a temp file and renamed); returns verdict counts."""
    counts: Counter = Counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}-")
    try:
        with (
            open(src, encoding="utf-8", errors="replace") as fin,
            os.fdopen(fd, "w", encoding="utf-8") as fout,
        ):
            while True:
                lines = [ln for ln in (fin.readline() for _ in range(CHUNK)) if ln]
                if not lines:
                    break
                lines = [ln for ln in lines if ln.strip()]
                parsed = [parse_line(ln) for ln in lines]
                ok = [i for i, (rec, _) in enumerate(parsed) if rec is not None]
                judged = judge_batch(
                    [parsed[i][0].get("task") for i in ok],
                    [parsed[i][0].get("completion") for i in ok],
                    [parsed[i][0] for i in ok],
                )
                by_line = dict(zip(ok, judged))
                for i, (ln, (rec, err)) in enumerate(zip(lines, parsed)):
                    out = scored(rec, ln, err, by_line.get(i))
                    counts[out["verdict"]] += 1
                    fout.write(json.dumps(out, ensure_ascii=False) + "\n")
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rlvr score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="JSON-lines file of completions")
    parser.add_argument("--output", required=True, type=Path, help="where to write the scored lines")
    args = parser.parse_args(argv)
    if not args.input.is_file():
        print(f"rlvr score: error: input file not found: {args.input}", file=sys.stderr)
        return 2
    counts = score_file(args.input, args.output)
    summary = ", ".join(f"{v} {k}" for k, v in counts.most_common())
    print(f"scored {sum(counts.values())} lines -> {args.output} ({summary})")
    return 0
