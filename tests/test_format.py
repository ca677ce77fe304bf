"""Format checks: exact semantics by table, and linear time on hostile completions."""

from __future__ import annotations

import time

import pytest

from rlvr.domains.format import (
    extract_answer,
    extract_fenced,
    extract_reasoning,
    format_answer,
    soft_format,
    strict_format,
)

GOOD = "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"


@pytest.mark.parametrize(
    "text, strict, soft",
    [
        (GOOD, 1.0, 1.0),
        (GOOD + "\n", 1.0, 1.0),
        ("\n" + GOOD, 1.0, 1.0),
        ("<reasoning>\n\n</reasoning>\n<answer>\n\n</answer>", 1.0, 1.0),  # empty blocks are still the format
        ("<reasoning>3 + 4 = 7</reasoning><answer>7</answer>", 0.0, 1.0),  # no newlines: soft only
        ("<reasoning>\nx\n</reasoning>\n\n<answer>\n7\n</answer>", 0.0, 1.0),  # blank line between
        ("Sure! " + GOOD, 0.0, 1.0),  # text before
        (GOOD + " and more", 0.0, 1.0),
        ("<answer>\n7\n</answer>", 0.0, 0.0),
        ("<reasoning>\nx\n</reasoning>", 0.0, 0.0),
        ("<reasoning>\nx\n</reasoning>\n<answer>\n7", 0.0, 0.0),  # cut off
        ("<answer>7</answer><reasoning>x</reasoning>", 0.0, 0.0),  # wrong order
        ("", 0.0, 0.0),
        ("<reasoning>\n</reasoning>\n<answer>\n7\n</answer>", 0.0, 1.0),  # one newline is not "\n…\n"
        ("<reasoning>\nx\n</reasoning>\n<answer>\n</answer>", 0.0, 1.0),
    ],
)
def test_format_table(text, strict, soft):
    assert strict_format(text) == strict
    assert soft_format(text) == soft


def test_extraction_table():
    assert extract_answer(GOOD) == "7"
    assert extract_answer("<answer>1</answer> then <answer> 2 </answer>") == "2"
    assert extract_answer("<answer>1</answer><answer>unclosed") == "1"
    assert extract_answer("no tags") is None
    assert extract_reasoning(GOOD) == "3 + 4 = 7"
    assert format_answer(" 3 + 4 = 7 ", "7") == GOOD
    code = "<answer>\n```python\ndef f():\n    return 1\n```\n</answer>"
    assert extract_fenced(code, "python") == "def f():\n    return 1"
    assert extract_fenced("```sql\nSELECT 1\n``` and ```SQL\nSELECT 2\n```", "sql") == "SELECT 2"
    assert extract_fenced("```\nSELECT 3\n```", "sql") == "SELECT 3"  # untagged fallback
    assert extract_fenced("```python\nx = 1\n```", "sql") is None
    assert extract_fenced("```python\ndef f(:\n", "python") is None  # unterminated


HOSTILE = [
    "<answer>" * 20000,
    "<reasoning>" * 20000,
    "<reasoning>x</reasoning><answer>" * 5000,
    "</reasoning> " * 10000 + "<answer>",
    "```sql\n" * 20000,
    "```" * 30000,
    "<reasoning>\n" + "\n</reasoning>\n<answer>\n" * 5000,
    "a" * 200000,
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_is_linear(text):
    t = time.perf_counter()
    for fn in (strict_format, soft_format, extract_answer, extract_reasoning):
        fn(text)
    extract_fenced(text, "sql")
    assert time.perf_counter() - t < 1.0
