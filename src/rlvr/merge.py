"""``rlvr merge``: combine LoRA adapters trained on one base into one adapter, with PEFT's weighted-adapter merge.

    rlvr merge --base runs/tiny-base --adapters runs/math/version_0/export runs/sql/version_0/export \\
        --method ties --weights 0.5 0.5 --density 0.5 --out runs/merged/math+sql

Methods (PEFT ``add_weighted_adapter``): ``linear`` (weighted sum of the A and of the B matrices; same rank),
``cat`` (A and B stacked: exactly Σ wᵢ·Bᵢ·Aᵢ, rank adds up), ``svd`` (Σ wᵢ·Bᵢ·Aᵢ re-factorised at the largest
rank), ``ties``, ``dare_linear``, ``dare_ties``, ``magnitude_prune`` (task-vector pruning at ``--density``).
The result is a plain PEFT adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``, the
tokenizer of the first adapter, and ``merge.json`` with the recipe): it loads with ``PeftModel.from_pretrained``,
``rlvr evaluate --adapter`` and vLLM's ``LoRARequest``. It is written to a temporary folder and renamed into
place, so a failed merge leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

METHODS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")
NEEDS_DENSITY = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
MERGED = "merged"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlvr merge", description="Merge LoRA adapters of one base model.")
    p.add_argument(
        "--base", required=True, help="the base model the adapters were trained on (dir or hub id)"
    )
    p.add_argument("--adapters", nargs="+", required=True, help="adapter directories (rlvr's export folders)")
    p.add_argument("--method", default="linear", choices=METHODS)
    p.add_argument("--weights", nargs="+", type=float, help="one per adapter (default: 1/n each)")
    p.add_argument(
        "--density", type=float, help="fraction of each task vector kept (ties, dare_*, magnitude_prune)"
    )
    p.add_argument("--majority-sign-method", default="total", choices=("total", "frequency"), help="ties")
    p.add_argument("--out", required=True, help="directory of the merged adapter")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


def check(args) -> list[float]:
    """The merge weights; ``ValueError`` naming the problem and the fix for anything that cannot merge."""
    for a in args.adapters:
        if not (Path(a) / "adapter_config.json").is_file():
            raise ValueError(f"--adapters {a}: no adapter_config.json there (give a LoRA adapter directory)")
    if len(set(map(str, args.adapters))) < len(args.adapters):
        raise ValueError("--adapters: the same adapter is given twice")
    weights = args.weights if args.weights is not None else [1.0 / len(args.adapters)] * len(args.adapters)
    if len(weights) != len(args.adapters):
        raise ValueError(f"--weights: {len(weights)} given for {len(args.adapters)} adapters (give one each)")
    if args.method in NEEDS_DENSITY and args.density is None:
        raise ValueError(f"--method {args.method} prunes task vectors: give --density (e.g. 0.5)")
    if args.density is not None and not 0.0 < args.density <= 1.0:
        raise ValueError(f"--density {args.density}: must be in (0, 1]")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ValueError(f"--out {out} exists: pass --overwrite to replace it")
    return weights


def merge(args) -> Path:
    from peft import PeftModel

    from rlvr.models import load_causal_lm

    weights = check(args)
    names = [f"a{i}" for i in range(len(args.adapters))]
    model = PeftModel.from_pretrained(load_causal_lm(args.base), str(args.adapters[0]), adapter_name=names[0])
    for name, path in zip(names[1:], args.adapters[1:]):
        model.load_adapter(str(path), adapter_name=name)
    kw = {"density": args.density} if args.method in NEEDS_DENSITY else {}
    if args.method in ("ties", "dare_ties"):
        kw["majority_sign_method"] = args.majority_sign_method
    model.add_weighted_adapter(names, weights, MERGED, combination_type=args.method, **kw)
    for name in names:
        model.delete_adapter(name)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        model.save_pretrained(str(tmp), selected_adapters=[MERGED])
        saved = tmp / MERGED if (tmp / MERGED / "adapter_config.json").is_file() else tmp
        first = Path(args.adapters[0])
        for f in first.iterdir():  # the tokenizer the adapters were trained with
            if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges")):
                shutil.copy2(f, saved / f.name)
        recipe = {"base": str(args.base), "adapters": [str(a) for a in args.adapters], "weights": weights,
                  "method": args.method, "density": args.density}  # fmt: skip
        (saved / "merge.json").write_text(json.dumps(recipe, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        saved.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    out = merge(args)
    print(f"rlvr merge: {args.method} of {len(args.adapters)} adapters written to {out}")
    return 0
