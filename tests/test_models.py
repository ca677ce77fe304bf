"""The tiny model is a real checkpoint: AutoTokenizer/AutoModel load it and token ids round-trip."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.models import ModelLoadError, build_tiny, load_causal_lm, load_tokenizer

CORPUS = [
    f"Sam has {i} pens. She gets {i + 4} more. <reasoning>\n{i} + {i + 4} = {2 * i + 4}\n</reasoning>"
    for i in range(300)
] + ["SELECT name FROM employees WHERE salary > 10;", "def add(x):\n    return x + 1\n"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny(CORPUS, vocab_size=512, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=2,
                      intermediate_size=128, cache_dir=tmp_path_factory.mktemp("tiny"))  # fmt: skip


TEXTS = [
    "Sam has 17 pens. She gets 21 more.",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "Unicode: café, naïve, 数学, emoji 🙂, combining e\u0301",
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n",
    "SELECT COUNT(*) FROM t WHERE x >= 3 ORDER BY y DESC;",
]


@pytest.mark.parametrize("text", TEXTS)
def test_token_ids_round_trip_through_autotokenizer(tiny_dir, text):
    raw = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(tiny_dir)
    assert type(auto).__name__ == "Qwen2Tokenizer"  # what transformers builds for model_type qwen2
    ids = auto(text, add_special_tokens=False)["input_ids"]
    assert ids == raw.encode(text, add_special_tokens=False).ids
    assert auto.decode(ids) == raw.decode(ids, skip_special_tokens=False)


def test_special_tokens_and_chat_template(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id == im_end
    assert tok("<|im_end|>", add_special_tokens=False)["input_ids"] == [im_end]  # one token, not split
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_model_loads_and_has_head_dim_for_vllm(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.config.model_type == "qwen2"
    assert model.config.head_dim >= 32
    assert model.config.vocab_size == len(load_tokenizer(str(tiny_dir)))


def test_build_is_cached_by_settings_and_corpus(tiny_dir, tmp_path):
    again = build_tiny(CORPUS, vocab_size=512, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=2,
                       intermediate_size=128, cache_dir=tiny_dir.parent)  # fmt: skip
    assert again == tiny_dir
    other = build_tiny(CORPUS[:50], vocab_size=512, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=2,
                       intermediate_size=128, cache_dir=tiny_dir.parent)  # fmt: skip
    assert other != tiny_dir
    assert not [p for p in tiny_dir.parent.iterdir() if p.name.startswith(".tmp-")]  # nothing half-written


def test_building_leaves_the_global_generator_as_loading_does(tmp_path):
    """The trainer seeds torch's generator before the model is set up and samples from it in RL: building the tiny
    model (first run, empty cache) and loading it (every later run) must leave it in the same state."""
    kw = dict(vocab_size=512, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=2, intermediate_size=128,
              seed=7, cache_dir=tmp_path)  # fmt: skip
    draws = []
    for _ in ("build", "load"):
        torch.manual_seed(0)
        build_tiny(CORPUS[:40], **kw)
        draws.append(torch.rand(4))
    assert torch.equal(*draws), draws


def test_small_head_dim_is_refused(tmp_path):
    with pytest.raises(ValueError, match="head_dim"):
        build_tiny(CORPUS, hidden_size=64, num_heads=4, cache_dir=tmp_path)


def test_hub_id_offline_fails_with_one_line(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(ModelLoadError) as err:
        load_causal_lm("no-such-owner/no-such-model-xyz")
    msg = str(err.value)
    assert "\n" not in msg and "no-such-owner/no-such-model-xyz" in msg and "offline" in msg


def test_file_instead_of_directory_is_refused(tmp_path):
    f = tmp_path / "model.bin"
    f.write_text("x")
    with pytest.raises(ModelLoadError, match="directory"):
        load_tokenizer(str(f))
