"""``rlvr evaluate``, ``rlvr compare`` and ``rlvr report``: each a ``main(argv) -> int``.

    rlvr evaluate --model Qwen/Qwen2.5-0.5B-Instruct --benchmarks gsm8k,arc_challenge --limit 100
    rlvr evaluate --model CKPT --adapter runs/math/version_3/export --data-root ../shared/data --n-samples 10
    rlvr evaluate --predictions preds.jsonl --data-root ../shared/data --out runs/eval/preds --overwrite
    rlvr compare runs/eval/base runs/eval/rl --out runs/eval/compare
    rlvr report runs/eval/base runs/eval/rl --out runs/eval/report

Without ``--out`` a run is written to ``runs/eval/<name>`` (:func:`default_run_name`: the first two above go
to ``runs/eval/Qwen2.5-0.5B-Instruct`` and ``runs/eval/math-version_3``); an existing result is never replaced
unless ``--overwrite`` is given. Bad input (unknown benchmark, missing data files, a hub id
while offline, an existing result) raises ``ValueError`` / ``DataError`` / ``ModelLoadError``;
``rlvr.cli.main`` prints it as one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePath

from rlvr.domains.base import DataError
from rlvr.eval.benchmarks import BENCHMARKS, parse_names


def _evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rlvr evaluate", description="Evaluate a model (or given predictions) on benchmarks."
    )
    p.add_argument("--model", help="hub id or checkpoint directory (not needed with --predictions)")
    p.add_argument("--adapter", help="directory of a peft (LoRA) adapter loaded on top of --model")
    p.add_argument(
        "--benchmarks", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}"
    )
    p.add_argument("--limit", type=int, help="evaluate only the first N items of each benchmark")
    p.add_argument(
        "--n-samples", type=int, default=1, help="completions per generation item (pass@k); 1 = greedy"
    )
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature when --n-samples > 1")
    p.add_argument("--max-new-tokens", type=int, help="generation budget (default: per benchmark)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    p.add_argument("--choice-batch-size", type=int, default=32, help="sequences per log-likelihood forward")
    p.add_argument("--data-root", help="local data laid out like shared/data (default: hub datasets)")
    p.add_argument("--predictions", help="JSONL of {benchmark, id, completion}: score these, no model")
    p.add_argument(
        "--dtype", default="auto", help="float32 | bfloat16 | float16 | auto (bf16 on GPU, else fp32)"
    )
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--engine", default="hf", help="rollout engine: hf | vllm (or pkg.module.Class of your own)"
    )
    p.add_argument(
        "--out",
        help="result directory (metrics.json, samples.jsonl, errors.json, report.md); "
        "default: OUT_ROOT/<name of the adapter, model or predictions file>",
    )
    p.add_argument(
        "--out-root",
        default=DEFAULT_OUT_ROOT,
        help=f"parent of the default --out (default: {DEFAULT_OUT_ROOT})",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing result in the --out directory"
    )
    return p


#: where ``rlvr evaluate`` writes without ``--out``: ``runs/eval/<default_run_name(...)>``
DEFAULT_OUT_ROOT = "runs/eval"
#: path components that name no run: the log root before it and the export folder after it
_LEADING, _TRAILING = ("runs",), ("export",)


def default_run_name(model: str | None, adapter: str | None, predictions: str | None) -> str:
    """The result directory's name for a run: from ``predictions`` (its file stem), else ``adapter``, else
    ``model``.

    A path names the run by its parts joined with ``-``, without a leading ``runs`` and a trailing ``export``
    (``runs/math/version_3/export`` -> ``math-version_3``); a model hub id ``owner/name`` (not on disk) by
    its ``name`` (``Qwen/Qwen2.5-0.5B-Instruct`` -> ``Qwen2.5-0.5B-Instruct``).
    """
    if predictions:
        return _safe(re.sub(r"(\.jsonl|\.json)?(\.gz)?$", "", PurePath(predictions).name)) or "predictions"
    source = adapter or model
    if not source:
        raise ValueError("evaluate needs --model (or --predictions FILE to score given completions)")
    if not adapter and _is_hub_id(source):  # an adapter is always a local directory (load_adapter)
        return _safe(PurePath(source).name)
    path = Path(source).expanduser()
    if path.is_absolute():  # a path under the working directory is named as if given relative to it
        try:
            path = path.resolve().relative_to(Path.cwd().resolve())
        except ValueError:
            pass
    parts = [q for q in path.parts if q not in (path.anchor, ".", "..", "")]
    if parts and parts[0] in _LEADING and len(parts) > 1:
        parts = parts[1:]
    if parts and parts[-1] in _TRAILING and len(parts) > 1:
        parts = parts[:-1]
    return _safe("-".join(parts)) or "model"


def _is_hub_id(source: str) -> bool:
    """``owner/name`` (or a bare ``name``) that is not on disk and not spelled like a path."""
    if os.path.exists(os.path.expanduser(source)) or source.startswith((".", "/", "~")):
        return False
    parts = PurePath(source).parts
    return len(parts) == 1 or (len(parts) == 2 and parts[0] not in _LEADING)


def _safe(name: str) -> str:
    """A directory name: characters other than letters, digits, ``._-`` become ``_``."""
    return re.sub(r"[^\w.-]", "_", name).strip(".")


def evaluate_main(argv: Sequence[str]) -> int:
    """``rlvr evaluate``: writes ``OUT/metrics.json`` (``{benchmark: {metric: value}}``) and friends."""
    from rlvr.eval.report import metrics_table, run_report
    from rlvr.eval.store import check_out_dir, write_run

    args = _evaluate_parser().parse_args(list(argv))
    if not args.predictions and not args.model:
        raise ValueError("evaluate needs --model (or --predictions FILE to score given completions)")
    out_dir = args.out or Path(args.out_root) / default_run_name(args.model, args.adapter, args.predictions)
    check_out_dir(out_dir, args.overwrite)  # before any model or data loads: refuse to replace a result
    names = parse_names(args.benchmarks)
    if args.data_root is not None and not Path(args.data_root).expanduser().is_dir():
        raise DataError(f"--data-root {args.data_root} is not a directory")
    if args.predictions:
        from rlvr.eval.predictions import score_predictions

        run = score_predictions(args.predictions, args.data_root, names)
    else:
        run = _evaluate_model(args, names)
    run.info.update({"model": args.model, "adapter": args.adapter, "data_root": args.data_root,
                     "benchmarks": names})  # fmt: skip
    out = write_run(out_dir, run, run_report(run), overwrite=args.overwrite)
    print(metrics_table({"value": run.metrics}), end="")
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return 0


def _evaluate_model(args: argparse.Namespace, names: list[str]):
    import torch

    from rlvr.eval.runner import EvalSettings, evaluate_model, load_benchmarks
    from rlvr.models import load_causal_lm, load_tokenizer

    settings = EvalSettings(
        limit=args.limit, n_samples=args.n_samples, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, choice_batch_size=args.choice_batch_size, seed=args.seed, engine=args.engine,
    )  # fmt: skip
    loaded = load_benchmarks(names, args.data_root)  # data problems surface before the model loads
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    dtype = ("bfloat16" if device.startswith("cuda") else "float32") if args.dtype == "auto" else args.dtype
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, dtype=dtype)
    if args.adapter:
        model = load_adapter(model, args.adapter)
    model.to(device).eval()
    return evaluate_model(model, tokenizer, loaded, settings)


def load_adapter(model, adapter_dir: str):
    """``model`` with the peft adapter in ``adapter_dir`` on top (merged for faster inference)."""
    from peft import PeftModel

    from rlvr.models import ModelLoadError

    if not (Path(adapter_dir).expanduser() / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"--adapter {adapter_dir}: no adapter_config.json there (pass a peft adapter directory)"
        )
    try:
        return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    except Exception as e:  # peft raises ValueError/KeyError/RuntimeError for mismatched adapters
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelLoadError(f"cannot load adapter {adapter_dir} onto the model: {first}") from None


def compare_main(argv: Sequence[str]) -> int:
    """``rlvr compare BEFORE AFTER [--out DIR]``: metric deltas and the items that flipped either way."""
    from rlvr.eval.analysis import compare_runs, flip_examples
    from rlvr.eval.report import compare_markdown
    from rlvr.eval.store import load_run

    p = argparse.ArgumentParser(prog="rlvr compare", description="Compare two evaluation result directories.")
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--out", help="directory for compare.md and compare.json (default: print only)")
    p.add_argument(
        "--examples", type=int, default=5, help="flipped examples shown per benchmark and direction"
    )
    args = p.parse_args(list(argv))
    before, after = load_run(args.before), load_run(args.after)
    comp = compare_runs(before, after)
    fixed = flip_examples(comp.fixed, before, after, args.examples)
    broken = flip_examples(comp.broken, before, after, args.examples)
    text = compare_markdown(comp, fixed, broken, (args.before, args.after))
    print(text, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(text)
        payload = {"deltas": [dict(zip(("benchmark", "metric", "before", "after", "delta"), d)) for d in comp.deltas],
                   "fixed": fixed, "broken": broken, "n_fixed": len(comp.fixed), "n_broken": len(comp.broken),
                   "common_items": comp.common}  # fmt: skip
        (out / "compare.json").write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {out / 'compare.md'}")
    return 0


def report_main(argv: Sequence[str]) -> int:
    """``rlvr report DIR [DIR ...] --out OUT``: markdown tables and PNG charts from result directories."""
    from rlvr.eval.report import write_report
    from rlvr.eval.store import load_run

    p = argparse.ArgumentParser(
        prog="rlvr report", description="Markdown + PNG report of evaluation results."
    )
    p.add_argument("dirs", nargs="+", help="result directories written by `rlvr evaluate`")
    p.add_argument("--out", required=True, help="output directory (report.md, metrics.png, errors_<i>.png)")
    args = p.parse_args(list(argv))
    runs = {}
    for d in args.dirs:
        name = Path(d).name or str(d)
        runs[name if name not in runs else str(d)] = load_run(d)
    path = write_report(runs, args.out)
    print(f"wrote {path}")
    return 0
