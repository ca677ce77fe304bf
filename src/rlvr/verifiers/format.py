"""Output-format checks shared by every task: ``<reasoning>…</reasoning><answer>…</answer>``."""

from __future__ import annotations

import re

DEFAULT_SYSTEM_PROMPT = (
    "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"
)

_STRICT = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n?$", re.DOTALL)
_SOFT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_REASONING = re.compile(r"<reasoning>(.*?)</reasoning>", re.DOTALL)


def strict_format(text: str) -> float:
    """1.0 when the whole completion is exactly reasoning block, newline, answer block."""
    return 1.0 if _STRICT.match(text.strip("\n") + "\n") else 0.0


def soft_format(text: str) -> float:
    """1.0 when a reasoning block is followed by an answer block anywhere in the text."""
    return 1.0 if _SOFT.search(text) else 0.0


def extract_answer(text: str) -> str | None:
    """Content of the last ``<answer>`` block, stripped; ``None`` when there is none."""
    found = _ANSWER.findall(text)
    return found[-1].strip() if found else None


def extract_reasoning(text: str) -> str | None:
    """Content of the first ``<reasoning>`` block, stripped; ``None`` when there is none."""
    m = _REASONING.search(text)
    return m.group(1).strip() if m else None


def extract_fenced(text: str, lang: str) -> str | None:
    """Body of the last fenced block tagged ``lang`` (or untagged if none is tagged); ``None`` if absent.

    An unterminated final fence (generation cut at max_new_tokens) yields ``None``: half a program is not
    an answer.
    """
    tagged = re.findall(rf"```[ \t]*{re.escape(lang)}[ \t]*\n(.*?)```", text, re.DOTALL | re.IGNORECASE)
    if tagged:
        return tagged[-1].strip()
    plain = re.findall(r"```[ \t]*\n(.*?)```", text, re.DOTALL)
    return plain[-1].strip() if plain else None


def format_answer(reasoning: str, answer: str) -> str:
    """A gold completion in the strict format (used to build SFT targets)."""
    return f"<reasoning>\n{reasoning.strip()}\n</reasoning>\n<answer>\n{answer.strip()}\n</answer>"
