"""Loading the policy: hub id or local checkpoint, optional LoRA / 4- or 8-bit base, the built-in tiny model.

The tiny model is a real Qwen2-architecture checkpoint built from a config, with a byte-level BPE tokenizer
trained on the task corpus. It is saved with ``save_pretrained`` into a cache directory keyed by its settings
(and the corpus), so ``AutoTokenizer`` / ``AutoModelForCausalLM`` (and vLLM) load it like any other checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from rlvr.domains.sources import cache_root, go_offline_if_unreachable

TINY = "tiny"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# ChatML, as Qwen2 uses it; generation stops at <|im_end|>.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)
# Qwen2's pre-tokenizer split; reproduced so transformers' Qwen2Tokenizer re-creates our tokenizer exactly.
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message is one line naming the cause and the fix."""


def default_cache_dir() -> Path:
    return cache_root()


def train_tiny_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE with Qwen2's normalizer and pre-tokenizer, trained on ``texts``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def build_tiny(
    corpus: Sequence[str],
    *,
    vocab_size: int = 2048,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 704,
    max_positions: int = 1024,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Build (once) and return the directory of a tiny Qwen2 checkpoint trained-tokenizer on ``corpus``.

    The directory name hashes every setting and the corpus, so a changed corpus gives a new checkpoint. It is
    written into a temporary directory and renamed into place: a crash leaves nothing half-written.
    """
    import safetensors.torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    head_dim = hidden_size // num_heads
    if head_dim < 32:  # vLLM's CPU attention needs head_dim >= 32
        raise ValueError(f"tiny model head_dim={head_dim} < 32: use fewer heads or a larger hidden_size")
    settings = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
        num_kv_heads=num_kv_heads, intermediate_size=intermediate_size, max_positions=max_positions, seed=seed,
    )  # fmt: skip
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for text in corpus:
        digest.update(text.encode())
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "tiny"
    out = root / digest.hexdigest()[:16]
    if (out / "config.json").is_file():
        return out

    tok = train_tiny_tokenizer(corpus, vocab_size)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(hf_tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=hf_tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=hf_tok.pad_token_id,
    )
    # seeded on a forked generator: building must leave torch's global one (seeded by the trainer) as loading the
    # cached checkpoint does, or a run's samples would depend on whether the model was already in the cache
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        # not model.save_pretrained: under torch.distributed it writes on global rank 0 only, and every
        # process (each node's too) builds its own copy here
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        # tied embeddings: stored once under the embedding's name, as save_pretrained does (vLLM reads it)
        weights = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        safetensors.torch.save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        hf_tok.save_pretrained(tmp)
        _mark_qwen2_tokenizer(tmp)
        tmp.rename(out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "config.json").is_file():  # lost a race to another process: theirs is complete
            raise
    return out


def _mark_qwen2_tokenizer(path: Path) -> None:
    """Declare the tokenizer class Qwen2Tokenizer, as a real Qwen2 checkpoint does (same ids: tested)."""
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg_path.write_text(json.dumps(cfg, indent=2))


def resolve_model_path(name_or_path: str) -> str:
    """A local directory as is; ``"tiny"`` is resolved by the caller; anything else is treated as a hub id."""
    p = Path(name_or_path).expanduser()
    if p.exists() and not p.is_dir():
        raise ModelLoadError(f"model path {p} is a file: pass the checkpoint directory")
    if p.is_dir():
        return str(p)
    go_offline_if_unreachable()  # a hub id: with no network, fail in seconds, not after minutes of retries
    return name_or_path


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise ModelLoadError(_load_error(path, e)) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: str = "float32",
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
):
    """``AutoModelForCausalLM`` from a hub id or directory; a 4-bit NF4 or 8-bit base (bitsandbytes) if asked."""
    from transformers import AutoModelForCausalLM

    quantization = bnb_config(load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit)
    path = resolve_model_path(name_or_path)
    kwargs: dict = {"dtype": getattr(torch, dtype)}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as e:
        raise ModelLoadError(_load_error(path, e)) from None
    if quantization is not None:
        disable_bnb_cpu_repack(model)
    return model


def bnb_config(*, load_in_4bit: bool, load_in_8bit: bool):
    """The ``BitsAndBytesConfig`` of a quantized base (None for none): 4-bit NF4 with double quantization and
    bf16 compute (QLoRA's recipe), or LLM.int8()."""
    if load_in_4bit and load_in_8bit:
        raise ValueError(
            "load_in_4bit and load_in_8bit are both set: choose one (4-bit NF4 for QLoRA, or 8-bit)"
        )
    if not (load_in_4bit or load_in_8bit):
        return None
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )


def disable_bnb_cpu_repack(model: torch.nn.Module) -> None:
    """bitsandbytes 0.50 on AVX512-BF16 CPUs repacks a Linear4bit weight on its first no-grad eval forward,
    after which backward crashes (with bias) or passes no gradient (without): switch that path off."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def add_lora(model, *, r: int, alpha: int, dropout: float, target_modules: str | list[str] = "all-linear"):
    """Wrap ``model`` with trainable LoRA adapters (peft); the base weights stay frozen.

    A bitsandbytes base (4- or 8-bit) is first prepared for k-bit training (peft): every base weight frozen,
    half-precision non-quantized weights (norms, embeddings) cast to fp32. Gradient checkpointing stays off:
    HF checkpoints a layer only in train mode, and the trainer keeps the policy in eval mode for every
    log-prob pass (dropout-free), so turning it on would cost the input-grad hook and save nothing.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


def _load_error(path: str, err: Exception) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    if not Path(path).exists():
        return (
            f"cannot load model {path!r}: not a local directory and the hub did not serve it ({first}); "
            "offline? pass a local checkpoint directory or name_or_path=tiny"
        )
    return f"cannot load model from {path}: {first}"


def build_policy(name_or_path: str, tiny, corpus: list[str] | None, *, dtype: str, load_in_4bit: bool, lora,
                 frozen_reference: bool, load_in_8bit: bool = False):  # fmt: skip
    """(tokenizer, policy, reference) for training.

    ``name_or_path == "tiny"`` builds the tiny model from ``tiny`` (:class:`rlvr.settings.TinyModelSettings`)
    with a tokenizer trained on ``corpus``. With ``lora.r > 0`` the policy carries adapters and the reference
    is the base with adapters disabled (``None`` here); otherwise, when ``frozen_reference``, the reference is a
    frozen eval-mode copy of the starting weights. A quantized base (``load_in_4bit``: QLoRA, or
    ``load_in_8bit``) needs LoRA: its integer weights cannot take gradient steps.
    """
    bnb_config(load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit)  # both set: fail before any work
    if (load_in_4bit or load_in_8bit) and lora.r == 0:
        bits = 4 if load_in_4bit else 8
        raise ValueError(f"load_in_{bits}bit needs LoRA: set lora.r > 0 (the quantized base stays frozen)")
    path = name_or_path
    if path == TINY:
        settings = {k: v for k, v in dataclasses.asdict(tiny).items() if k != "corpus_size"}
        path = str(build_tiny(corpus or [], **settings))
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, dtype=dtype, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit)
    reference = None
    if lora.r > 0:
        model = add_lora(
            model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules
        )
    elif frozen_reference:
        reference = load_causal_lm(path, dtype=dtype).eval().requires_grad_(False)
    return tokenizer, model, reference


def adamw_with_warmup(model: torch.nn.Module, lr: float, weight_decay: float, warmup_steps: int,
                      decay_steps: int = 0, floor: float = 1.0, after: float | None = None,
                      after_warmup: int = 0):  # fmt: skip
    """AdamW over the trainable parameters; the learning rate warms up linearly over ``warmup_steps`` steps
    and, with ``decay_steps``, falls along a cosine to ``floor`` times itself by step ``decay_steps``; from
    there on the factor is ``after`` (default ``floor``: the stage that follows may set its own lr), reached
    linearly over ``after_warmup`` steps (a second warm-up, for a stage that starts with fresh moments)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm, after = max(1, warmup_steps), floor if after is None else after

    def factor(step: int) -> float:
        if decay_steps <= 0:
            return min(1.0, (step + 1) / warm)
        if step >= decay_steps:
            return after * min(1.0, (step - decay_steps + 1) / max(1, after_warmup))
        cosine = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * step / decay_steps))
        return min(1.0, (step + 1) / warm) * cosine

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
