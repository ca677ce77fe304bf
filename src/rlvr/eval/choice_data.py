"""ARC-Challenge and HellaSwag as :class:`~rlvr.eval.multiple_choice.ChoiceQuestion` lists.

Prompt formats are those of lm-evaluation-harness (zero-shot, no chat template):

* ARC: context ``"Question: {question}\\nAnswer:"``, options ``" {choice text}"``; gold is the index of
  ``answerKey`` among the choice labels (labels are ``A``-``E`` or ``1``-``5``).
* HellaSwag: context ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``, options
  ``" " + preprocess(ending)``, where ``preprocess`` strips, turns ``" [title]"`` into ``". "``, drops other
  ``[...]`` tags and collapses double spaces.

The local HellaSwag copy (``hellaswag_val_preprocessed.jsonl.gz``) is already preprocessed and has no
``ctx_a`` / ``ctx_b`` split, so ``ctx_b.capitalize()`` cannot be applied exactly: we upper-case the first
letter after the context's last sentence end when it is lower case (ActivityNet items end in a lower-case
fragment such as ``"... a roof. he"``, which the harness makes ``"He"``). Hub records (``Rowan/hellaswag``)
carry ``ctx_a`` / ``ctx_b`` and get the exact harness text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlvr.domains.base import DataError
from rlvr.domains.sources import load_records, read_json_records, require_fields
from rlvr.eval.multiple_choice import ChoiceQuestion
from rlvr.eval.spec import Benchmark, Loaded, local_file, mean
from rlvr.eval.store import SampleResult

ARC_HUB = ("allenai/ai2_arc", "ARC-Challenge", "test")
HELLASWAG_HUB = ("Rowan/hellaswag", None, "validation")
ARC_LOCAL = "arc_challenge/ARC-Challenge-Test.jsonl.gz"
HELLASWAG_LOCAL = "hellaswag/hellaswag_val_preprocessed.jsonl.gz"

_TAG = re.compile(r"\[.*?\]")
# a sentence end followed by a lower-case letter: where ctx_b started in an ActivityNet item
_LAST_SENTENCE = re.compile(r"([.!?]\s+)([a-z])(?=[^.!?]*$)")


def arc_question(record: dict[str, Any]) -> ChoiceQuestion:
    """A question from an AI2 release record (``question.stem``) or a hub record (``question`` str)."""
    require_fields(record, ("id", "question", "answerKey"), "ARC record")
    q = record["question"]
    if isinstance(q, dict):  # AI2 release: {"stem", "choices": [{"text", "label"}]}
        stem, texts, labels = q["stem"], [c["text"] for c in q["choices"]], [c["label"] for c in q["choices"]]
    else:  # hub: question str, choices {"text": [...], "label": [...]}
        require_fields(record, ("choices",), "ARC record")
        stem, texts, labels = q, list(record["choices"]["text"]), list(record["choices"]["label"])
    key = str(record["answerKey"])
    if key not in labels:
        raise DataError(f"ARC {record['id']}: answerKey {key!r} is not one of the labels {labels}")
    return ChoiceQuestion(
        uid=str(record["id"]),
        context=f"Question: {stem}\nAnswer:",
        choices=tuple(texts),
        gold=labels.index(key),
        labels=tuple(str(x) for x in labels),
    )


def hellaswag_preprocess(text: str) -> str:
    """The harness's clean-up of HellaSwag text (WikiHow items carry ``[title]``/``[step]`` tags)."""
    text = text.strip().replace(" [title]", ". ")
    return _TAG.sub("", text).replace("  ", " ")


def hellaswag_question(record: dict[str, Any], index: int) -> ChoiceQuestion:
    """A question from a hub record (``ctx_a``/``ctx_b``) or a preprocessed local record (``ctx``)."""
    require_fields(record, ("activity_label", "endings", "label"), f"HellaSwag record {index}")
    if "ctx_a" in record and "ctx_b" in record:
        ctx = record["ctx_a"] + " " + record["ctx_b"].capitalize()
    else:
        require_fields(record, ("ctx",), f"HellaSwag record {index}")
        ctx = _LAST_SENTENCE.sub(lambda m: m.group(1) + m.group(2).upper(), record["ctx"])
    endings = tuple(hellaswag_preprocess(e) for e in record["endings"])
    return ChoiceQuestion(
        uid=str(index),
        context=hellaswag_preprocess(record["activity_label"] + ": " + ctx),
        choices=endings,
        gold=int(record["label"]),
        labels=tuple(str(i) for i in range(len(endings))),
    )


def load_arc(data_root: str | Path | None) -> list[ChoiceQuestion]:
    """ARC-Challenge test questions from ``data_root`` (AI2 release layout) or the hub."""
    if data_root is not None:
        records = read_json_records(local_file(data_root, ARC_LOCAL))
    else:
        source, config, split = ARC_HUB
        records = load_records(source, split, config)
    return [arc_question(r) for r in records]


def load_hellaswag(data_root: str | Path | None) -> list[ChoiceQuestion]:
    """HellaSwag validation questions, id = 0-based position in the validation file."""
    if data_root is not None:
        records = read_json_records(local_file(data_root, HELLASWAG_LOCAL))
    else:
        source, config, split = HELLASWAG_HUB
        records = load_records(source, split, config)
    return [hellaswag_question(r, r.get("idx", i)) for i, r in enumerate(records)]


def choice_metrics_of(samples: Sequence[SampleResult]) -> dict[str, float]:
    """``acc`` and ``acc_norm`` over questions (for ``--predictions`` both are the given option's)."""
    return {
        "acc": mean([float(s.detail.get("acc", s.correct)) for s in samples]),
        "acc_norm": mean([float(s.detail.get("acc_norm", s.correct)) for s in samples]),
    }


ARC_CHALLENGE = Benchmark(
    name="arc_challenge", kind="choice", primary="acc_norm", load=lambda root: Loaded(load_arc(root)),
    metrics=choice_metrics_of,
)  # fmt: skip
HELLASWAG = Benchmark(
    name="hellaswag", kind="choice", primary="acc_norm", load=lambda root: Loaded(load_hellaswag(root)),
    metrics=choice_metrics_of,
)  # fmt: skip
