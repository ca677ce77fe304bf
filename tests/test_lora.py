"""LoRA and QLoRA for real: GRPO steps through the module train only the adapters (on the target modules asked
for) and leave every base weight bit-identical, over a full-precision, a 4-bit NF4 and an 8-bit base; the
reference is exactly the base; the exported adapter reloads with peft and scores as the trained policy."""

from __future__ import annotations

import types
from pathlib import Path

import lightning as L
import pytest
import torch
from peft import PeftModel

from callbacks.adapter_export import AdapterExport
from data_modules.mixture import MixtureDataModule
from rlvr.algo.losses import PolicyLossConfig
from rlvr.cli import build_cli
from rlvr.domains.math.task import MathTask
from rlvr.models import build_policy, load_causal_lm
from rlvr.module import RLVRModule
from rlvr.sequences import completion_logprobs, reference_logprobs, sft_micro_batches
from rlvr.settings import HybridSchedule, LoraSettings, TinyModelSettings

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = TinyModelSettings(vocab_size=600, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                         intermediate_size=128, corpus_size=300)  # fmt: skip
ALL_LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
TEMPERATURE = 1.0
# name -> (target_modules, the module names they must resolve to, quantization, bitsandbytes layer class)
VARIANTS = {
    "lora-qv": (["q_proj", "v_proj"], {"q_proj", "v_proj"}, None, None),
    "lora-all-linear": ("all-linear", ALL_LINEAR, None, None),
    "qlora-nf4": ("all-linear", ALL_LINEAR, "4bit", "Linear4bit"),
    "lora-int8": (
        ["q_proj", "v_proj", "down_proj"],
        {"q_proj", "v_proj", "down_proj"},
        "8bit",
        "Linear8bitLt",
    ),
}


class VariedRewardTask(MathTask):
    """A reward that differs between completions of one prompt (the untrained model never solves a problem,
    so real math rewards would all be 0: zero advantages, zero gradient, nothing to test)."""

    def score(self, completion, reference):
        return dict.fromkeys(self.components, (len(completion) % 5) / 4)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One RLVR cache for the file: the tiny checkpoint (same settings, same corpus) is built once."""
    root = tmp_path_factory.mktemp("rlvr-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLVR_CACHE", str(root))
        yield root


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def trained(request, cache, tmp_path_factory):
    """Two GRPO optimizer steps (one rollout, two mini-batches) with the module's own fit, snapshotting the
    policy's whole state dict (weights, biases, quantization states) just before the first step."""
    target, _, bits, _ = VARIANTS[request.param]
    out = tmp_path_factory.mktemp(request.param)
    m = RLVRModule(
        tiny=TINY, lora=LoraSettings(r=4, alpha=8, target_modules=target), load_in_4bit=bits == "4bit",
        load_in_8bit=bits == "8bit",
        hybrid=HybridSchedule("constant", 0.0, 0.0, 0), loss=PolicyLossConfig(beta=0.04),  # the KL pass runs
        completions_per_prompt=4, steps_per_generation=2, max_new_tokens=12, lr=1e-2,
        log_samples_every_n_steps=0,
    )  # fmt: skip
    before: dict[str, torch.Tensor] = {}

    class Snapshot(L.Callback):
        def on_train_start(self, trainer, pl_module):
            before.update({k: v.detach().clone() for k, v in pl_module.policy.state_dict().items()})

    dm = MixtureDataModule([VariedRewardTask(num_train=64, num_val=4)], prompts_per_step=4)
    trainer = L.Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu", devices=1,
        callbacks=[Snapshot(), AdapterExport(dirpath=str(out / "export"))], default_root_dir=str(out),
    )  # fmt: skip
    trainer.fit(m, dm)
    assert trainer.global_step == 2
    return types.SimpleNamespace(name=request.param, module=m, before=before, dm=dm, export=out / "export")


def base_path(m: RLVRModule) -> str:
    return m.policy.peft_config["default"].base_model_name_or_path


def fresh_base(trained):
    """The base as the trainer loaded it (same quantization), built again from its files."""
    bits = VARIANTS[trained.name][2]
    model = load_causal_lm(
        base_path(trained.module), load_in_4bit=bits == "4bit", load_in_8bit=bits == "8bit"
    )
    return model.eval()


def sequences(trained):
    """Prompts and gold solutions of 4 training examples, each prompt twice (so the shared-prefix path of
    ``completion_logits`` runs too): (p_ids, p_mask, c_ids, c_mask)."""
    examples = [ex for ex in trained.dm.draw(4) for _ in range(2)]
    (batch,), _ = sft_micro_batches(trained.module.tokenizer, examples, 256, 24, micro_batch_size=64)
    return batch


@torch.no_grad()
def logprobs(model, seq) -> torch.Tensor:
    return completion_logprobs(model, *seq, TEMPERATURE)[0]


def test_a_grpo_step_changes_only_the_adapters_of_the_target_modules(trained):
    target, expected, bits, layer_class = VARIANTS[trained.name]
    policy = trained.module.policy
    after = policy.state_dict()
    assert after.keys() == trained.before.keys()
    lora = {k for k in after if "lora_" in k}
    adapted = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in lora}
    assert adapted == expected, (target, adapted)
    assert len(lora) == 2 * len(expected) * TINY.num_layers  # A and B of each target module in every layer
    unchanged = sorted(k for k in lora if torch.equal(after[k], trained.before[k]))
    assert not unchanged, (
        unchanged
    )  # every adapter matrix moved (A too: it gets a gradient once B is non-zero)
    moved = sorted(k for k in after if k not in lora and not torch.equal(after[k], trained.before[k]))
    assert not moved, moved  # not a bit of the base changed, quantized weights and their states included
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    if layer_class is not None:  # the quantized path really ran
        layers = {type(mod).__name__ for mod in policy.modules()}
        assert layer_class in layers and getattr(policy, f"is_loaded_in_{bits}")


def test_the_reference_is_the_base_model_with_adapters_disabled(trained):
    seq = sequences(trained)
    m = trained.module
    mb = types.SimpleNamespace(sequences=seq, keep_count=None)  # the micro-batch fields it reads
    ref = reference_logprobs(m.policy, m.ref_policy, mb, TEMPERATURE)
    assert m.ref_policy is None  # no second copy of the model: the reference is the policy's own base
    base = logprobs(fresh_base(trained), seq)
    torch.testing.assert_close(ref, base, rtol=0, atol=1e-6)
    # the trained adapters do move the policy, so equality with the base is not a trivial one
    assert (logprobs(m.policy, seq) - base).abs().max() > 1e-2


def test_the_exported_adapter_reloads_with_peft_and_scores_as_the_trained_policy(trained):
    assert (trained.export / "adapter_config.json").is_file() and (
        trained.export / "tokenizer.json"
    ).is_file()
    seq = sequences(trained)
    reloaded = PeftModel.from_pretrained(fresh_base(trained), str(trained.export)).eval()
    torch.testing.assert_close(
        logprobs(reloaded, seq), logprobs(trained.module.policy, seq), rtol=0, atol=1e-6
    )


# ---------------------------------------------------------------- configuration
def test_quantizing_the_base_twice_or_without_lora_is_a_one_line_error():
    with pytest.raises(ValueError, match="load_in_4bit and load_in_8bit are both set") as both:
        load_causal_lm("no/such-model", load_in_4bit=True, load_in_8bit=True)  # before any loading
    assert "\n" not in str(both.value)
    for bits in (4, 8):
        with pytest.raises(ValueError, match=f"load_in_{bits}bit needs LoRA: set lora.r > 0"):
            build_policy("no/such-model", TINY, None, dtype="float32", load_in_4bit=bits == 4,
                         load_in_8bit=bits == 8, lora=LoraSettings(r=0), frozen_reference=True)  # fmt: skip


def test_the_qlora_7b_config_instantiates_offline(cache, monkeypatch):
    monkeypatch.setenv(
        "RLVR_CPU_BF16", "1"
    )  # the GPU config as written (a CPU without bf16 would train in fp32)
    cli = build_cli(["--config", str(CONFIGS / "base.yaml"), "--config", str(CONFIGS / "task/code.yaml"),
                     "--config", str(CONFIGS / "model/qwen2.5-coder-7b-qlora.yaml")], run=False)  # fmt: skip
    m = cli.model
    assert m.name_or_path == "Qwen/Qwen2.5-Coder-7B-Instruct" and m.load_in_4bit
    assert m.lora.r > 0 and m.lora.target_modules == "all-linear" and m.lora.alpha == 2 * m.lora.r
    assert cli.trainer.precision == "bf16-mixed" and m.policy is None  # parsed and built, no weights loaded


def test_module_rejects_both_quantizations_at_construction():
    with pytest.raises(ValueError, match="both set"):
        RLVRModule(tiny=TINY, lora=LoraSettings(r=4, alpha=8), load_in_4bit=True, load_in_8bit=True)
    with pytest.raises(ValueError, match="needs LoRA"):
        RLVRModule(tiny=TINY, load_in_8bit=True)
