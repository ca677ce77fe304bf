"""HF generate engine: shapes, masks, EOS handling, and sampler log-probs equal to a training forward."""

from __future__ import annotations

import pytest
import torch

from rlvr.models import build_tiny, load_causal_lm, load_tokenizer
from rlvr.rollout.base import SamplingParams, completion_mask_from_eos, left_pad
from rlvr.rollout.hf import HFEngine
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
