"""Rollout speed: ``HFEngine`` against plain ``model.generate`` as the engine used to call it.

Usage: python benchmarks/bench_rollout.py [--prompts 8] [--n 8] [--max-new-tokens 128] [--repeats 3]

Both sides get the same tiny Qwen2 (the default ``build_tiny`` shape: hidden 256, 4 layers, vocab 2048), the
same chat-template prompts (~60 tokens) and the same settings, and both return the sampler's log-probs. The
reference is ``generate(num_return_sequences via repeat_interleave, output_scores=True)`` followed by a
log-softmax of the stacked scores. Timings alternate between the two and report the best of ``--repeats``, so
load from other processes hits both alike; the ratio is the number to read (on a busy machine, ``--threads 1``
gives steadier ratios: two OpenMP threads stall whenever one is descheduled). Two settings: completions that all
run to ``--max-new-tokens`` (the untrained model almost never samples EOS), and varied lengths (extra stop
tokens), where dropping finished rows counts too. Greedy outputs of both must be token-identical.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import torch

from rlvr.models import build_tiny, load_causal_lm, load_tokenizer
from rlvr.rollout.base import SamplingParams, completion_mask_from_eos, left_pad
from rlvr.rollout.hf import HFEngine

SYSTEM = "You are a careful assistant. Think step by step, then give the final answer after 'Answer:'."


def synthetic_corpus(size: int = 3000, seed: int = 0) -> list[str]:
    """Word problems (the prompts) plus sentences over made-up words: enough for a 2048-token BPE vocabulary."""
    rng = random.Random(seed)
    names, things = (
        ["Ann", "Bo", "Cy", "Di", "Eve", "Flo"],
        ["cats", "dogs", "apples", "pens", "coins", "books"],
    )
    problems = [
        f"{rng.choice(names)} has {rng.randint(2, 99)} {rng.choice(things)} and buys {rng.randint(2, 99)} more "
        f"{rng.choice(things)}, then gives away {rng.randint(1, 20)}. How many are left?"
        for _ in range(size)
    ]
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(4000)]
    filler = [" ".join(rng.choices(words, k=rng.randint(8, 30))) for _ in range(size)]
    return problems + [SYSTEM] * 50 + filler


def make_prompts(tokenizer, corpus: list[str], count: int) -> list[list[int]]:
    """Chat-template prompts of slightly different lengths (so left padding is exercised)."""
    out = []
    for i in range(count):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": corpus[i]}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        out.append(list(ids["input_ids"] if not isinstance(ids, list) else ids))
    return out


@torch.no_grad()
def reference_generate(model, prompts, n: int, params: SamplingParams, eos_ids: list[int], pad_id: int):
    """The previous engine: ``generate`` on every prompt repeated n times, log-probs from ``output_scores``."""
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    greedy = params.temperature <= 0
    sampling = dict(temperature=None, top_p=None, top_k=None)
    if not greedy:
        sampling = dict(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
    out = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=not greedy, max_new_tokens=params.max_new_tokens,
        eos_token_id=eos_ids, pad_token_id=pad_id, output_scores=True, return_dict_in_generate=True,
        use_cache=True, **sampling,
    )  # fmt: skip
    completion = out.sequences[:, ids.shape[1] :]  # [N, T]
    scores = torch.stack(out.scores, 1).float()  # [N, T, V]
    logp = torch.log_softmax(scores, -1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    comp_mask, _ = completion_mask_from_eos(completion, eos_ids)
    return completion, logp * comp_mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=8, help="completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    corpus = synthetic_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(build_tiny(corpus, cache_dir=tmp))
        tokenizer, model = load_tokenizer(path), load_causal_lm(path).eval()
    prompts = make_prompts(tokenizer, corpus, args.prompts)
    params = SamplingParams(args.max_new_tokens, args.temperature, args.top_p)
    lens = [len(p) for p in prompts]
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, vocab {len(tokenizer)}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"rollout: {args.prompts} prompts x {args.n} completions, prompt tokens {min(lens)}-{max(lens)}, "
          f"max_new_tokens {args.max_new_tokens}, temperature {args.temperature}, top_p {args.top_p}")  # fmt: skip

    # An untrained model rarely samples a stop token, so in the first setting most completions run to the limit.
    # The second makes ~1/64 of the vocabulary stop tokens (on both sides): lengths then vary as in training.
    extra_stops = list(range(100, 100 + len(tokenizer) * 2 // args.max_new_tokens))
    all_same = True
    for label, stops in (("few stops (untrained model)", []), ("varied lengths", extra_stops)):
        engine = HFEngine(model, tokenizer, stop_token_ids=[tokenizer.pad_token_id, *stops])
        same = greedy_identical(engine, prompts, args.n, args.max_new_tokens)
        all_same &= same
        rates, lengths = time_both(engine, prompts, args.n, params, args.repeats)
        print(f"-- {label}: greedy token-identical {same}; mean completion length " + ", ".join(
            f"{k} {v:.1f}" for k, v in lengths.items()))  # fmt: skip
        for name, rate in rates.items():
            print(f"{name:>9}: best {rate:8.1f} completion tokens/s")
        print(
            f"speed-up HFEngine / generate: {rates['HFEngine'] / rates['generate']:.2f}x (best of {args.repeats})"
        )
    if not all_same:
        raise SystemExit("greedy outputs differ")


def greedy_identical(engine: HFEngine, prompts, n: int, max_new_tokens: int) -> bool:
    greedy = SamplingParams(max_new_tokens, 0.0)
    ref_ids, _ = reference_generate(engine.model, prompts, n, greedy, engine.eos_ids, engine.pad_id)
    ids = engine.generate(prompts, n, greedy).completion_ids
    return ref_ids.shape == ids.shape and torch.equal(ref_ids, ids)


def time_both(engine: HFEngine, prompts, n: int, params: SamplingParams, repeats: int) -> tuple[dict, dict]:
    """Best completion tokens/s of each side over ``repeats`` alternating runs, and mean completion lengths.

    Rates, not times: the two samplers draw different tokens from the same seed, so with stop tokens the
    sides generate different numbers of tokens.
    """
    rates = {"generate": 0.0, "HFEngine": 0.0}
    counts = {name: [] for name in rates}
    for rep in range(repeats):
        for name in rates:
            torch.manual_seed(rep)
            start = time.perf_counter()
            if name == "generate":
                ids, _ = reference_generate(engine.model, prompts, n, params, engine.eos_ids, engine.pad_id)
            else:
                ids = engine.generate(prompts, n, params).completion_ids
            secs = time.perf_counter() - start
            tokens = int(completion_mask_from_eos(ids, engine.eos_ids)[0].sum())
            rates[name] = max(rates[name], tokens / secs)
            counts[name].append(tokens / ids.shape[0])
    return rates, {name: sum(c) / len(c) for name, c in counts.items()}


if __name__ == "__main__":
    main()
