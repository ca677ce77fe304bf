"""Run benchmarks on a model (batched generation, batched log-likelihoods) and summarise the samples."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rlvr.domains.format import strict_format
from rlvr.eval.analysis import error_summary
from rlvr.eval.benchmarks import get_benchmark
from rlvr.eval.multiple_choice import ChoiceQuestion, continuation_logliks, predictions
from rlvr.eval.spec import Benchmark, GenItem, Loaded, mean
from rlvr.eval.store import RunResult, SampleResult
from rlvr.rollout import build_engine
from rlvr.rollout.base import SamplingParams
from rlvr.sequences import encode_prompts


@dataclass(frozen=True)
class EvalSettings:
    """How generation and scoring run.

    Attributes:
        limit: the first ``limit`` items of each benchmark (all when None).
        n_samples: completions per generation item (pass@k needs k <= n_samples); 1 = greedy.
        temperature: sampling temperature when ``n_samples > 1`` (greedy always when 1).
        top_p: nucleus sampling when ``n_samples > 1``.
        max_new_tokens: generation budget; None = each benchmark's default.
        batch_size: prompts per ``generate`` call (each with ``n_samples`` completions).
        choice_batch_size: sequences (question x option) per log-likelihood forward.
        seed: seeds sampling, so a run is repeatable.
        engine: the rollout engine that generates (a name in :data:`rlvr.rollout.ENGINES` or a class path).
    """

    limit: int | None = None
    n_samples: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int | None = None
    batch_size: int = 16
    choice_batch_size: int = 32
    seed: int = 0
    engine: str = "hf"

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.batch_size < 1 or self.choice_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")


def load_benchmarks(names: Sequence[str], data_root: str | Path | None) -> dict[str, Loaded]:
    """Items of each named benchmark (unknown names and missing files fail before any model work)."""
    specs = [get_benchmark(n) for n in names]
    root = Path(data_root).expanduser() if data_root is not None else None
    return {spec.name: spec.load(root) for spec in specs}


def evaluate_model(
    model, tokenizer, loaded: Mapping[str, Loaded], settings: EvalSettings | None = None
) -> RunResult:
    """Score ``model`` on every benchmark in ``loaded`` (default :class:`EvalSettings`); metrics include
    ``examples_per_s``, the items scored per second of generation/forward plus verification."""
    settings = settings or EvalSettings()
    metrics, samples = {}, []
    for name, data in loaded.items():
        spec = get_benchmark(name)
        items = data.items[: settings.limit] if settings.limit else list(data.items)
        start = time.perf_counter()
        if spec.kind == "choice":
            got = score_choices(model, tokenizer, spec, items, settings.choice_batch_size)
        else:
            got = generate_and_judge(model, tokenizer, spec, items, settings)
        elapsed = time.perf_counter() - start
        metrics[name] = summarize(spec, got, data, len(items), elapsed)
        samples += got
    info = {"primary": {n: get_benchmark(n).primary for n in loaded}, "n_samples": settings.n_samples,
            "limit": settings.limit}  # fmt: skip
    return RunResult(metrics, samples, error_summary(samples), info)


def summarize(
    spec: Benchmark, samples: Sequence[SampleResult], data: Loaded, n_items: int, elapsed: float
) -> dict:
    """The benchmark's metrics plus ``n`` (items), ``samples``, skipped counts and ``examples_per_s``."""
    out: dict[str, float] = dict(spec.metrics(samples))
    if spec.kind == "generate" and samples:
        # lenient: the answer found wherever the verifier parses it; strict: also in the required format
        # (a benchmark may define its own strict reading, e.g. GSM8K's answer block or \boxed{})
        out.setdefault("lenient_accuracy", mean([s.correct for s in samples]))
        out.setdefault(
            "strict_accuracy", mean([s.correct * float(s.detail.get("strict_format", 0.0)) for s in samples])
        )
    out["n"] = n_items
    out["samples"] = len(samples)
    for reason, count in data.skipped.items():
        out[reason] = count
    truncated = [float(s.detail["truncated"]) for s in samples if "truncated" in s.detail]
    if truncated:
        out["truncated_rate"] = mean(truncated)
    if elapsed > 0:
        out["examples_per_s"] = n_items / elapsed
    return out


def score_choices(
    model, tokenizer, spec: Benchmark, questions: Sequence[ChoiceQuestion], batch_size: int
) -> list[SampleResult]:
    """Log-likelihood of every option of every question (batched across questions), then acc/acc_norm."""
    requests = [r for q in questions for r in q.requests()]
    lls = continuation_logliks(model, tokenizer, requests, batch_size=batch_size)
    out, pos = [], 0
    for q in questions:
        q_lls = lls[pos : pos + len(q.choices)]
        pos += len(q.choices)
        pred, pred_norm = predictions(q_lls, q.choices)
        acc, acc_norm = float(pred == q.gold), float(pred_norm == q.gold)
        detail = {"acc": acc, "acc_norm": acc_norm, "gold": q.labels[q.gold], "pred_norm": q.labels[pred_norm],
                  "logliks": [round(x, 4) for x in q_lls]}  # fmt: skip
        category = "correct" if acc else "wrong_answer"
        out.append(SampleResult(spec.name, q.uid, 0, q.labels[pred], acc, category, detail))
    return out


def generate_and_judge(
    model, tokenizer, spec: Benchmark, items: Sequence[GenItem], settings: EvalSettings
) -> list[SampleResult]:
    """``n_samples`` completions per item generated by the settings' engine, scored by the benchmark's judge."""
    if not items:
        return []
    max_new = settings.max_new_tokens or spec.max_new_tokens
    greedy = settings.n_samples == 1
    params = SamplingParams(
        max_new, 0.0 if greedy else settings.temperature, 1.0 if greedy else settings.top_p
    )
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    max_prompt = max(max_pos - max_new, 16) if max_pos else None  # prompt + completion must fit the model
    engine = build_engine(settings.engine, model, tokenizer, stop_token_ids=[tokenizer.pad_token_id])
    prompts = encode_prompts(tokenizer, [it.example for it in items], max_prompt)
    order = sorted(range(len(items)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    texts: list[list[str]] = [[] for _ in items]
    truncated: list[list[bool]] = [[] for _ in items]
    n = settings.n_samples
    device = next(model.parameters()).device
    # a private RNG stream: seeded sampling here must not reset the trainer's (PeriodicEval runs mid-fit)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        for start in range(0, len(order), settings.batch_size):
            chunk = order[start : start + settings.batch_size]
            rollout = engine.generate([prompts[i] for i in chunk], n, params)
            for j, i in enumerate(chunk):
                texts[i] = rollout.texts[j * n : (j + 1) * n]
                truncated[i] = rollout.truncated[j * n : (j + 1) * n].tolist()
    flat_items = [it for it in items for _ in range(n)]
    verdicts = spec.judge([t for ts in texts for t in ts], flat_items)
    out = []
    for k, (item, verdict) in enumerate(zip(flat_items, verdicts)):
        i, s = divmod(k, n)
        detail = {
            **verdict.detail,
            "truncated": bool(truncated[i][s]),
            "strict_format": strict_format(texts[i][s]),
        }
        out.append(
            SampleResult(spec.name, item.uid, s, texts[i][s], verdict.correct, verdict.category, detail)
        )
    return out
