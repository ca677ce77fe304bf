"""`rlvr evaluate --predictions`: gold answers score 1.0 and wrong ones 0.0 on every benchmark (real data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.cli import main as rlvr_main
from rlvr.domains.code.task import humaneval_path
from rlvr.domains.sources import read_json_records
from rlvr.eval.predictions import score_predictions

N = 30  # items per benchmark (all 164 for HumanEval)


def write_preds(path: Path, rows: list[tuple[str, object, str]]) -> Path:
    with open(path, "w") as f:
        for bench, uid, completion in rows:
            f.write(json.dumps({"benchmark": bench, "id": uid, "completion": completion}) + "\n")
    return path


def score(tmp_path: Path, data: Path, rows: list[tuple[str, object, str]]):
    return score_predictions(write_preds(tmp_path / "preds.jsonl", rows), data)


def gsm8k_records(data: Path) -> list[dict]:
    return read_json_records(data / "gsm8k" / "test.jsonl.gz")[:N]


def test_gsm8k_gold_scores_one_and_wrong_zero(shared_data, tmp_path):
    recs = gsm8k_records(shared_data)
    final = [r["answer"].split("####")[-1].strip().replace(",", "") for r in recs]
    # bare answers, full solutions ending in "#### N", and the answer in the trained format
    gold = [("gsm8k", i, final[i] if i % 3 == 0 else r["answer"]) for i, r in enumerate(recs)]
    gold += [
        ("gsm8k", i, f"<reasoning>\nsee\n</reasoning>\n<answer>\n{final[i]}\n</answer>") for i in range(5)
    ]
    m = score(tmp_path, shared_data, gold).metrics["gsm8k"]
    assert m["accuracy"] == 1.0 and m["fallback_accuracy"] == 1.0 and m["n"] == N
    wrong = [("gsm8k", i, str(int(float(final[i])) + 1)) for i in range(N)]
    m = score(tmp_path, shared_data, wrong).metrics["gsm8k"]
    assert m["accuracy"] == 0.0 and m["fallback_accuracy"] == 0.0


def test_math500_gold_scores_one_and_wrong_zero(shared_data, tmp_path):
    recs = read_json_records(shared_data / "math500" / "test.jsonl.gz")[:N]
    gold = [("math500", r["unique_id"], [r["answer"], r["solution"], f"\\boxed{{{r['answer']}}}"][i % 3])
            for i, r in enumerate(recs)]  # fmt: skip
    m = score(tmp_path, shared_data, gold).metrics["math500"]
    assert m["accuracy"] == 1.0 and m["n"] == N
    wrong = [("math500", r["unique_id"], "\\boxed{-98765.4321}") for r in recs]
    assert score(tmp_path, shared_data, wrong).metrics["math500"]["accuracy"] == 0.0


def test_humaneval_gold_bodies_and_functions_pass_and_pass_at_k(shared_data, tmp_path):
    recs = read_json_records(humaneval_path())
    # the canonical body (appended to the prompt), and for some items the full function
    gold = [("humaneval", r["task_id"], r["canonical_solution"]) for r in recs]
    gold += [("humaneval", r["task_id"], r["prompt"] + r["canonical_solution"]) for r in recs[:10]]
    run = score(tmp_path, shared_data, gold)
    assert run.metrics["humaneval"]["pass@1"] == 1.0 and run.metrics["humaneval"]["n"] == 164
    # 2 right + 1 wrong sample per item: pass@1 = 2/3, pass@2 = 1 - C(1,2)/C(3,2) = 1, pass@3 = 1
    rows = []
    for r in recs[:8]:
        rows += [("humaneval", r["task_id"], r["canonical_solution"])] * 2
        rows += [("humaneval", r["task_id"], "    raise NotImplementedError\n")]
    m = score(tmp_path, shared_data, rows).metrics["humaneval"]
    assert m["pass@1"] == pytest.approx(2 / 3) and m["pass@3"] == 1.0 and m["n"] == 8


def test_humaneval_wrong_scores_zero(shared_data, tmp_path):
    recs = read_json_records(humaneval_path())[:N]
    run = score(tmp_path, shared_data, [("humaneval", r["task_id"], "    return None\n") for r in recs])
    assert run.metrics["humaneval"]["pass@1"] == 0.0
    assert set(run.errors["humaneval"]) <= {"wrong_answer", "runtime_error"}


def test_mbpp_gold_scores_one_and_wrong_zero(shared_data, tmp_path):
    recs = read_json_records(shared_data / "mbpp" / "mbpp.jsonl.gz")
    recs = [r for r in recs if 11 <= r["task_id"] <= 510][:N]  # the test split
    run = score(tmp_path, shared_data, [("mbpp", r["task_id"], r["code"]) for r in recs])
    assert run.metrics["mbpp"]["pass@1"] == 1.0
    wrong = "def unrelated():\n    return 0\n"
    run = score(tmp_path, shared_data, [("mbpp", r["task_id"], wrong) for r in recs])
    assert run.metrics["mbpp"]["pass@1"] == 0.0
    assert "runtime_error" in run.errors["mbpp"]  # the tests call a function that is not defined


def test_spider_gold_sql_scores_one_wrong_zero_and_errors_are_categorised(shared_data, tmp_path):
    dev = json.loads((shared_data / "spider" / "dev.json").read_text())
    idx = [i for i, r in enumerate(dev) if r["db_id"] != "wta_1"][:N]
    gold = [("spider", i, dev[i]["query"] if i % 2 else f"```sql\n{dev[i]['query']}\n```") for i in idx]
    m = score(tmp_path, shared_data, gold).metrics["spider"]
    assert m["execution_accuracy"] == 1.0 and m["n"] == N and m["missing_db"] == 62
    wrong = [("spider", i, "SELECT 'not an answer'") for i in idx[:10]]
    wrong += [
        ("spider", idx[10], "SELEC name FROM"),
        ("spider", idx[11], "SELECT nope FROM nowhere"),
        ("spider", idx[12], ""),
    ]
    run = score(tmp_path, shared_data, wrong)
    assert run.metrics["spider"]["execution_accuracy"] == 0.0
    assert {"wrong_answer", "syntax_error", "sql_error", "no_answer"} <= set(run.errors["spider"])


@pytest.mark.parametrize("bench", ["arc_challenge", "hellaswag"])
def test_multiple_choice_gold_labels_score_one_and_wrong_zero(bench, shared_data, tmp_path):
    if bench == "arc_challenge":
        recs = read_json_records(shared_data / "arc_challenge" / "ARC-Challenge-Test.jsonl.gz")[:N]
        labels = [[c["label"] for c in r["question"]["choices"]] for r in recs]
        ids, gold = [r["id"] for r in recs], [r["answerKey"] for r in recs]
    else:
        recs = read_json_records(shared_data / "hellaswag" / "hellaswag_val_preprocessed.jsonl.gz")[:N]
        labels = [["0", "1", "2", "3"]] * N
        ids, gold = list(range(N)), [str(r["label"]) for r in recs]
    m = score(tmp_path, shared_data, [(bench, i, g) for i, g in zip(ids, gold)]).metrics[bench]
    assert m["acc"] == 1.0 and m["acc_norm"] == 1.0 and m["n"] == N
    wrong = [(bench, i, next(x for x in ls if x != g)) for i, g, ls in zip(ids, gold, labels)]
    m = score(tmp_path, shared_data, wrong).metrics[bench]
    assert m["acc"] == 0.0 and m["acc_norm"] == 0.0


def test_cli_counts_unknown_ids_benchmarks_and_malformed_lines(shared_data, tmp_path, capsys):
    preds = write_preds(
        tmp_path / "p.jsonl", [("hellaswag", 0, "3"), ("hellaswag", 10**9, "1"), ("nope", 1, "x")]
    )
    with open(preds, "a") as f:
        f.write("not json\n")
    out = tmp_path / "out"
    assert (
        rlvr_main(
            ["evaluate", "--predictions", str(preds), "--data-root", str(shared_data), "--out", str(out)]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {"hellaswag": pytest.approx({"acc": 1.0, "acc_norm": 1.0, "n": 1, "samples": 1,
                                                   "unknown_ids": 1, "skipped_predictions": 0, "examples_per_s": metrics["hellaswag"]["examples_per_s"]})}  # fmt: skip
    info = json.loads((out / "run.json").read_text())
    assert info["unknown_benchmarks"] == {"nope": 1} and info["malformed_lines"] == 1
    assert (out / "samples.jsonl").is_file() and "hellaswag" in (out / "report.md").read_text()
