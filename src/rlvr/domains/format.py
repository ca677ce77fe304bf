"""Output-format checks shared by every task: ``<reasoning>…</reasoning><answer>…</answer>``.

Every function here is linear in the length of the text: completions are hostile input, and a lazy regex
such as ``<answer>(.*?)</answer>`` is quadratic on thousands of unclosed tags. So they are written with
``str.find`` scans instead.
"""

from __future__ import annotations

import re

DEFAULT_SYSTEM_PROMPT = (
    "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"
)

R_OPEN, R_CLOSE, A_OPEN, A_CLOSE = "<reasoning>", "</reasoning>", "<answer>", "</answer>"
_CLOSE_THEN_ANSWER = re.compile(r"</reasoning>\s*<answer>")  # no nested quantifier: linear


def strict_format(text: str) -> float:
    """1.0 when the whole completion is ``<reasoning>\\n…\\n</reasoning>\\n<answer>\\n…\\n</answer>`` (leading
    and trailing newlines ignored), else 0.0."""
    t = text.strip("\n")
    head, mid, tail = f"{R_OPEN}\n", f"\n{R_CLOSE}\n{A_OPEN}\n", f"\n{A_CLOSE}"
    if not (t.startswith(head) and t.endswith(tail)):
        return 0.0
    i = t.find(mid, len(head))
    return 1.0 if i != -1 and i + len(mid) <= len(t) - len(tail) else 0.0


def soft_format(text: str) -> float:
    """1.0 when a reasoning block is followed (whitespace between) by an answer block anywhere, else 0.0."""
    a = text.find(R_OPEN)
    if a == -1:
        return 0.0
    m = _CLOSE_THEN_ANSWER.search(text, a + len(R_OPEN))
    return 1.0 if m is not None and text.find(A_CLOSE, m.end()) != -1 else 0.0


def extract_answer(text: str) -> str | None:
    """Content of the last complete ``<answer>`` block, stripped; ``None`` when there is none."""
    end = text.rfind(A_CLOSE)
    if end == -1:
        return None
    start = text.rfind(A_OPEN, 0, end)
    return text[start + len(A_OPEN) : end].strip() if start != -1 else None


def extract_reasoning(text: str) -> str | None:
    """Content of the first complete ``<reasoning>`` block, stripped; ``None`` when there is none."""
    start = text.find(R_OPEN)
    end = text.find(R_CLOSE, start + len(R_OPEN)) if start != -1 else -1
    return text[start + len(R_OPEN) : end].strip() if end != -1 else None


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(info, body)`` of every complete fenced block in order; ``info`` is the lower-cased tag after the
    opening fence. An unterminated final fence (generation cut at max_new_tokens) is not a block."""
    blocks, pos = [], 0
    while True:
        i = text.find("```", pos)
        line_end = text.find("\n", i + 3) if i != -1 else -1
        if line_end == -1:
            return blocks
        j = text.find("```", line_end + 1)
        if j == -1:
            return blocks
        blocks.append((text[i + 3 : line_end].strip().lower(), text[line_end + 1 : j]))
        pos = j + 3


def extract_fenced(text: str, lang: str) -> str | None:
    """Body of the last fenced block tagged ``lang`` (else of the last untagged one), stripped; ``None`` if
    absent. Half a program is not an answer, so unterminated fences do not count."""
    blocks = fenced_blocks(text)
    for wanted in (lang.lower(), ""):
        bodies = [body for info, body in blocks if info == wanted]
        if bodies:
            return bodies[-1].strip()
    return None


def format_answer(reasoning: str, answer: str) -> str:
    """A gold completion in the strict format (used to build SFT targets)."""
    return f"{R_OPEN}\n{reasoning.strip()}\n{R_CLOSE}\n{A_OPEN}\n{answer.strip()}\n{A_CLOSE}"
