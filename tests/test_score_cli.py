"""`python -m rlvr score`: gold scores 1, wrong 0, hostile and malformed lines get a verdict, never a crash."""

from __future__ import annotations

import json
import sqlite3

import pytest

from rlvr.cli import main

ANS = "<reasoning>\n{r}\n</reasoning>\n<answer>\n{a}\n</answer>"


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE items (name TEXT, price INT)")
        c.executemany("INSERT INTO items VALUES (?, ?)", [("pen", 2), ("book", 12), ("bag", 30)])
    return str(path)


def lines(db):
    sql_ok = ANS.format(r="filter", a="```sql\nSELECT name FROM items WHERE price > 10\n```")
    return [
        {"task": "math", "completion": ANS.format(r="16 - 3 - 4 = 9\n9 * 2 = 18", a="18"), "answer": "18"},
        {"task": "math", "completion": ANS.format(r="x", a="17"), "answer": "18"},
        {"task": "math", "completion": "The answer is \\boxed{\\frac{1}{2}}", "answer": "0.5"},
        {"task": "sql", "completion": sql_ok, "db_path": db, "gold_sql": "SELECT name FROM items WHERE price >= 12"},
        {"task": "sql", "completion": sql_ok.replace("> 10", "> 1"), "db_path": db,
         "gold_sql": "SELECT name FROM items WHERE price >= 12"},
        {"task": "sql", "completion": ANS.format(r="x", a="```sql\nDROP TABLE items\n```"), "db_path": db,
         "gold_sql": "SELECT 1"},
        {"task": "code", "completion": ANS.format(r="add", a="```python\ndef add(a, b):\n    return a + b\n```"),
         "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
        {"task": "code", "completion": "```python\ndef inc(x):\n    return x + 1\n```", "entry_point": "inc",
         "test": "def check(candidate):\n    assert candidate(1) == 2\n"},
        {"task": "code", "completion": "```python\ndef add(a, b):\n    while True:\n        pass\n```",
         "tests": ["assert add(1, 2) == 3"]},
        {"task": "code", "completion": "```python\nimport os\ndef add(a, b):\n    os.system('rm -rf /')\n    return 3\n```",
         "tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]},
        {"task": "poetry", "completion": "roses"},
        {"task": "math", "completion": 42, "answer": "42"},
        {"task": "sql", "completion": "SELECT 1"},
    ]  # fmt: skip


def test_score_cli_end_to_end(tmp_path, db, capsys):
    src, dst = tmp_path / "preds.jsonl", tmp_path / "out" / "scored.jsonl"
    with open(src, "w") as f:
        for rec in lines(db):
            f.write(json.dumps(rec) + "\n")
        f.write("{not json\n")
        f.write("[1, 2]\n")
    before = open(db, "rb").read()
    assert main(["score", "--input", str(src), "--output", str(dst)]) == 0
    out = [json.loads(x) for x in dst.read_text().splitlines()]
    assert len(out) == 15
    v = [o["verdict"] for o in out]
    assert out[0]["rewards"]["correctness"] == 1.0 and out[0]["rewards"]["strict_format"] == 1.0
    assert out[0]["reward"] > out[1]["reward"]
    assert out[1]["rewards"]["correctness"] == 0.0 and v[1] == "wrong_answer"
    assert out[2]["rewards"]["correctness"] == 1.0  # boxed latex fraction == 0.5
    assert out[3]["rewards"]["sql_result_match"] == 1.0 and v[3] == "correct"
    assert out[4]["rewards"]["sql_result_match"] == 0.0 and out[4]["rewards"]["sql_executes"] == 1.0
    assert v[5] == "denied" and open(db, "rb").read() == before
    assert out[6]["rewards"]["all_tests_pass"] == 1.0 and out[7]["rewards"]["all_tests_pass"] == 1.0
    assert v[8] == "timeout" and out[8]["rewards"]["all_tests_pass"] == 0.0
    assert out[9]["rewards"]["tests_passed_fraction"] == 0.5
    assert v[10:] == ["invalid_input"] * 5 and all(o["error"] for o in out[10:])
    assert all(o["error"] is None for o in (out[0], out[3], out[6]))
    assert "scored 15 lines" in capsys.readouterr().out


def test_missing_input_is_one_line(tmp_path, capsys):
    assert (
        main(["score", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "not found" in err and "\n" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_every_hostile_line_gets_its_own_invalid_input_row(tmp_path):
    """Lone surrogates, JSON nested 100,000 deep, an integer over Python's 4,300-digit limit, bytes that are
    not UTF-8 and a non-string field: each is its line's problem, the rest of the file is scored."""
    good = json.dumps({"task": "math", "completion": ANS.format(r="1 + 1 = 2", a="2"), "answer": "2"})
    raw = [
        good.encode(),
        b'{"task": "math", "completion": "\\ud800 <answer>2</answer>", "answer": "2"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"task": "math", "completion": "x", "answer": ' + b"9" * 5000 + b"}",
        b'{"task": "math", "completion": "\xff\xfe caf\xe9", "answer": "2"}',
        b'{"task": "sql", "completion": "x", "db_path": 3, "gold_sql": "SELECT 1"}',
        good.encode(),
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"\n".join(raw) + b"\n")
    assert main(["score", "--input", str(src), "--output", str(dst)]) == 0
    out = [json.loads(x) for x in dst.read_text(encoding="utf-8").splitlines()]
    assert len(out) == len(raw)
    verdicts = [o["verdict"] for o in out]
    assert verdicts[0] == verdicts[-1] == "correct"
    assert (
        verdicts[1] == "correct"
    )  # a lone surrogate is text like any other: scored, and written back safely
    assert verdicts[2:6] == ["invalid_input"] * 4, verdicts
    assert "nested" in out[2]["error"] or "RecursionError" in out[2]["error"]
    assert "digit" in out[3]["error"] or "ValueError" in out[3]["error"]
    assert "UTF-8" in out[4]["error"] and "db_path" in out[5]["error"]
