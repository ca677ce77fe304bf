"""HF engine: shapes, masks, EOS handling, greedy equal to ``generate``, sampler log-probs and keep mask equal to a
training forward."""

from __future__ import annotations

import pytest
import torch

from rlvr.models import build_tiny, load_causal_lm, load_tokenizer
from rlvr.rollout.base import SamplingParams, completion_mask_from_eos, left_pad
from rlvr.rollout.hf import (
    HFEngine,
    PreallocatedLayer,
    preallocated_cache,
    sample_categorical,
    sample_next,
    truncate_logits,
)
from rlvr.sequences import completion_logprobs

CORPUS = [f"Ann has {i} cats and {i + 2} dogs. How many pets? {2 * i + 2}" for i in range(200)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = build_tiny(CORPUS, vocab_size=400, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=2,
                      intermediate_size=128, cache_dir=tmp_path_factory.mktemp("tiny"))  # fmt: skip
    torch.manual_seed(0)
    return HFEngine(load_causal_lm(str(path)), load_tokenizer(str(path)))


def test_eos_mask_by_hand():
    ids = torch.tensor([[5, 6, 9, 7, 7], [5, 6, 5, 6, 5], [9, 1, 1, 1, 1]])
    mask, truncated = completion_mask_from_eos(ids, [9])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def test_left_pad():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_generate_groups_and_masks(engine):
    tok = engine.tokenizer
    prompts = [tok("Ann has 3 cats")["input_ids"], tok("How many")["input_ids"]]
    r = engine.generate(prompts, 3, SamplingParams(max_new_tokens=12, temperature=1.0))
    assert r.completion_ids.shape[0] == 6 and r.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert r.completion_ids.shape[1] <= 12 and len(r.texts) == 6
    ended = ~r.truncated
    assert torch.all(r.lengths[r.truncated] == r.completion_ids.shape[1])
    # a completion that ended carries its EOS as the last counted token
    for i in torch.nonzero(ended).flatten().tolist():
        last = int(r.lengths[i]) - 1
        assert int(r.completion_ids[i, last]) in engine.eos_ids
    assert torch.all(r.sampler_logp[r.completion_mask == 0] == 0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_match_training_forward(engine, temperature):
    """The rollout's log-probs are the ones a training forward computes (so μ=1 needs no extra pass)."""
    tok = engine.tokenizer
    prompts = [tok("Ann has 3 cats and")["input_ids"], tok("dogs")["input_ids"]]
    torch.manual_seed(1)
    r = engine.generate(prompts, 2, SamplingParams(max_new_tokens=10, temperature=temperature))
    with torch.no_grad():
        logp, _ = completion_logprobs(
            engine.model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, temperature
        )
    m = r.completion_mask.bool()
    assert torch.allclose(logp[m], r.sampler_logp[m], atol=1e-4)


# ---------------------------------------------------------------- the decode loop against generate


def _prompts(tok):
    """Prompts of different lengths, so rows are left-padded."""
    texts = ["Ann has 3 cats and 5 dogs. How many pets?", "How many", "Ann has 12 cats and", "dogs"]
    return [tok(t)["input_ids"] for t in texts]


def _generate_greedy(engine, prompts, n, max_new_tokens):
    """The reference: HF ``generate`` on every prompt repeated n times, as the engine used to run it."""
    ids, mask = left_pad(prompts, engine.pad_id)
    ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    out = engine.model.generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
        eos_token_id=engine.eos_ids, pad_token_id=engine.pad_id, temperature=None, top_p=None, top_k=None,
        output_scores=True, return_dict_in_generate=True,
    )  # fmt: skip
    completion = out.sequences[:, ids.shape[1] :]
    logp = torch.log_softmax(torch.stack(out.scores, 1).float(), -1).gather(-1, completion[..., None])[..., 0]
    return completion, logp


def _stop_engine(engine, stop_ids):
    return HFEngine(engine.model, engine.tokenizer, stop_token_ids=stop_ids)


def test_greedy_matches_generate_token_for_token(engine):
    prompts = _prompts(engine.tokenizer)
    free, _ = _generate_greedy(engine, prompts, 2, 24)
    # a token that greedy emits mid-way in one row becomes a stop token: rows now end at different steps,
    # which exercises dropping finished rows from the batch (and generate's padding of them)
    stopper = _stop_engine(engine, [int(free[0, 6])])
    ref_ids, ref_logp = _generate_greedy(stopper, prompts, 2, 24)
    r = stopper.generate(prompts, 2, SamplingParams(max_new_tokens=24, temperature=0.0))
    assert r.truncated.any() and not r.truncated.all()
    mask, _ = completion_mask_from_eos(ref_ids, stopper.eos_ids)
    assert r.completion_ids.shape == ref_ids.shape
    assert torch.equal(r.completion_ids[mask.bool()], ref_ids[mask.bool()])
    assert torch.equal(r.completion_mask, mask)
    assert torch.allclose(r.sampler_logp, ref_logp * mask, atol=1e-5)


def test_eos_ends_the_completion(engine):
    prompts = _prompts(engine.tokenizer)
    free, _ = _generate_greedy(engine, prompts, 1, 16)
    stop = int(free[0, 3])
    stopper = _stop_engine(engine, [stop])
    r = stopper.generate(prompts, 1, SamplingParams(max_new_tokens=16, temperature=0.0))
    end = int((free[0] == stop).nonzero()[0])  # row 0 meets its stop token here first
    assert int(r.completion_ids[0, end]) == stop and not r.truncated[0]
    assert r.completion_mask[0].tolist() == [1.0] * (end + 1) + [0.0] * (r.completion_ids.shape[1] - end - 1)
    assert torch.all(r.completion_ids[0, end + 1 :] == stopper.pad_id)
    assert torch.all(r.sampler_logp[0, end + 1 :] == 0) and torch.all(r.sampler_logp[0, : end + 1] < 0)
    for i in range(len(prompts)):  # a row without the stop token runs to the limit and is truncated
        assert bool(r.truncated[i]) == (stop not in free[i].tolist())
        if r.truncated[i]:
            assert r.lengths[i] == 16


def test_sampling_reproducible_with_seed(engine):
    prompts = _prompts(engine.tokenizer)
    params = SamplingParams(max_new_tokens=12, temperature=1.0)
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        runs.append(engine.generate(prompts, 3, params))
    assert torch.equal(runs[0].completion_ids, runs[1].completion_ids)
    assert torch.equal(runs[0].sampler_logp, runs[1].sampler_logp)
    assert not torch.equal(runs[0].completion_ids, runs[2].completion_ids)


# ---------------------------------------------------------------- truncation and the keep mask


def test_truncation_by_hand():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    keep = lambda **kw: (truncate_logits(logits, **kw) > float("-inf")).tolist()  # noqa: E731
    # ascending cumulative probs 0.05, 0.20, 0.50, 1.0: top_p 0.75 drops those <= 0.25 (HF's TopPLogitsWarper)
    assert keep(top_p=0.75) == [[True, True, False, False]]
    assert keep(top_p=0.4) == [[True, False, False, False]]
    assert keep(top_k=3) == [[True, True, True, False]]
    assert keep(top_k=3, top_p=0.75) == [[True, True, False, False]]
    assert keep() == [[True] * 4]
    token, logp, count = sample_next(logits, SamplingParams(temperature=1.0, top_p=0.75))
    assert count.tolist() == [2] and int(token) in (0, 1)
    assert sample_next(logits, SamplingParams(temperature=1.0))[2].tolist() == [0]  # nothing cut
    assert torch.allclose(logp.exp(), torch.tensor([0.5, 0.3])[token] / 0.8)


def test_sample_categorical_frequencies():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0]).expand(20000, 5)
    torch.manual_seed(0)
    counts = torch.bincount(sample_categorical(probs), minlength=5).float() / 20000
    assert counts[1] == 0 and counts[4] == 0  # zero-probability tokens are never drawn
    assert torch.allclose(counts, probs[0], atol=0.015)


def test_keep_count_recorded_and_used_by_training_forward(engine):
    """top-p sampling: the recorded count (one number per position, not a [N, T, V] mask) defines the nucleus
    at each step, and with it the training forward gives the sampler's log-probs (without it they differ)."""
    keeper = HFEngine(engine.model, engine.tokenizer, record_keep_mask=True)
    prompts = _prompts(engine.tokenizer)
    params = SamplingParams(max_new_tokens=10, temperature=0.7, top_p=0.9)
    torch.manual_seed(2)
    r = keeper.generate(prompts, 2, params)
    n, t = r.completion_ids.shape
    assert r.keep_count.shape == (n, t) and r.keep_count.dtype == torch.long
    m = r.completion_mask.bool()
    assert torch.all(r.keep_count[~m] == 0)  # nothing cut past the end
    assert (r.keep_count[m] > 0).any()  # top-p did truncate
    with torch.no_grad():
        args = (keeper.model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask, 0.7)
        logp, _ = completion_logprobs(*args, keep_count=r.keep_count)
        full, _ = completion_logprobs(*args)
        ids = torch.cat([r.prompt_ids, r.completion_ids], 1)
        attn = torch.cat([r.prompt_mask, r.completion_mask.long()], 1)
        logits = keeper.model(
            input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)
        )
    assert torch.allclose(logp[m], r.sampler_logp[m], atol=1e-4)
    assert not torch.allclose(full[m], r.sampler_logp[m], atol=1e-4)
    # the count is the size of the nucleus of the training forward's distribution at each position
    z = logits.logits[:, r.prompt_ids.shape[1] - 1 : -1].float() / 0.7  # [N, T, V]
    nucleus = (truncate_logits(z.flatten(0, 1), top_p=0.9).view_as(z) > float("-inf")).sum(-1)
    cut = r.keep_count > 0
    assert (nucleus[m & cut] - r.keep_count[m & cut]).abs().max() <= 1  # equal but for boundary near-ties


def test_keep_count_cuts_nothing_without_truncation(engine):
    keeper = HFEngine(engine.model, engine.tokenizer, record_keep_mask=True)
    r = keeper.generate(_prompts(engine.tokenizer), 1, SamplingParams(max_new_tokens=5, temperature=1.0))
    assert torch.all(r.keep_count == 0)
    assert engine.generate([[1, 2]], 1, SamplingParams(max_new_tokens=2)).keep_count is None


def test_the_drawn_token_is_kept_when_this_forward_ranks_it_just_outside_the_count():
    from rlvr.algo.logprobs import token_logprobs

    logits = torch.tensor([[[2.0, 1.0, 1.0 + 1e-6, 0.0]]])  # the sampler had token 1 second; here it is third
    ids = torch.tensor([[1]])
    kept = token_logprobs(logits, ids, keep_count=torch.tensor([[2]]))
    assert torch.isfinite(kept).all()
    by_mask = token_logprobs(logits, ids, keep_mask=torch.tensor([[[True, True, True, False]]]))
    torch.testing.assert_close(kept, by_mask)  # token 1 kept alongside the top two
    everything = token_logprobs(
        logits, torch.tensor([[0]]), keep_count=torch.tensor([[0]])
    )  # 0 = nothing cut
    torch.testing.assert_close(everything, torch.log_softmax(logits, -1)[..., 0])


def test_cache_layers_are_preallocated(engine):
    """Guards the speed-up: a transformers change that left plain DynamicLayers would re-concatenate per step."""
    cache = preallocated_cache(engine.model.config, 8)
    assert len(cache.layers) == engine.model.config.num_hidden_layers
    assert all(isinstance(layer, PreallocatedLayer) for layer in cache.layers)


def test_vllm_engine_refuses_what_it_cannot_do_in_one_line(engine):
    # checked before vLLM is imported, so these hold in the main venv too (the engine itself: tests/test_vllm.py)
    from rlvr.models import add_lora
    from rlvr.rollout import build_engine

    model, tok = engine.model, engine.tokenizer
    with pytest.raises(ValueError, match="keep_sampling_mask.*rollout.engine=hf"):
        build_engine("vllm", model, tok, record_keep_mask=True)
    with pytest.raises(ValueError, match="sync=lora needs a LoRA policy"):
        build_engine("vllm", model, tok, options={"sync": "lora"})
    lora = add_lora(
        load_causal_lm(model.config._name_or_path), r=4, alpha=8, dropout=0.0, target_modules="all-linear"
    )
    with pytest.raises(ValueError, match="sleep_level=2"):
        build_engine("vllm", lora, tok, options={"enable_sleep_mode": True, "sleep_level": 2})


def test_shared_prompt_pass_equals_the_joint_forward_with_gradients(engine):
    """The G completions of a prompt share its forward (prompt KV cache repeated): log-probs and gradients are
    those of one forward over prompt + completion per row."""
    from rlvr.sequences import completion_logits

    model, tok = engine.model, engine.tokenizer
    torch.manual_seed(0)
    r = engine.generate(_prompts(tok), 3, SamplingParams(max_new_tokens=8, temperature=1.0))
    seqs = (r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    results = []
    for shared in (True, False):
        model.zero_grad(set_to_none=True)
        if shared:
            logp, _ = completion_logprobs(model, *seqs)
        else:  # distinct prompt rows (one padding column more) make completion_logits take the joint path
            p_ids = torch.cat([torch.full_like(seqs[0][:, :1], tok.pad_token_id), seqs[0]], 1)
            p_mask = torch.cat([torch.zeros_like(seqs[1][:, :1]), seqs[1]], 1)
            p_ids[:, 0] = torch.arange(len(p_ids))  # unique rows; masked out, so the model never sees them
            logp, _ = completion_logprobs(model, p_ids, p_mask, *seqs[2:])
        (logp * seqs[3]).sum().backward()
        results.append((logp.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (shared_lp, shared_g), (joint_lp, joint_g) = results
    m = seqs[3].bool()
    torch.testing.assert_close(shared_lp[m], joint_lp[m], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shared_g, joint_g, rtol=1e-3, atol=1e-6)
    assert completion_logits(model, *seqs).shape == (*seqs[2].shape, len(tok))
    model.zero_grad(set_to_none=True)
