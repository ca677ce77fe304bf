"""``rlvr merge`` on two tiny adapters: the merge is the arithmetic it names, loads with peft, and evaluates."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel

from rlvr.cli import main
from rlvr.models import add_lora, build_tiny, load_causal_lm, load_tokenizer

CORPUS = [f"Ann has {i} cats and {i + 2} dogs. How many pets? {2 * i + 2}" for i in range(200)]
SHAPE = {"vocab_size": 400, "hidden_size": 64, "num_heads": 2, "num_kv_heads": 1, "num_layers": 2, "intermediate_size": 128}  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    base = build_tiny(CORPUS, cache_dir=root / "tiny", **SHAPE)
    adapters = []
    for k in range(2):  # two adapters as training leaves them: distinct, non-zero B matrices
        model = add_lora(load_causal_lm(str(base)), r=4, alpha=8, dropout=0.0, target_modules="all-linear")
        g = torch.Generator().manual_seed(k)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        out = root / f"adapter{k}"
        model.save_pretrained(str(out))
        load_tokenizer(str(base)).save_pretrained(str(out))
        adapters.append(out)
    return base, adapters, root


def delta(base, adapter) -> dict[str, torch.Tensor]:
    """The merged-in weight change ΔW of every adapted module."""
    ref = dict(load_causal_lm(str(base)).named_parameters())
    merged = PeftModel.from_pretrained(load_causal_lm(str(base)), str(adapter)).merge_and_unload()
    return {k: (v - ref[k]).detach() for k, v in merged.named_parameters() if not torch.equal(v, ref[k])}


def test_cat_merge_is_the_weighted_sum_of_the_updates(setup):
    base, (a, b), root = setup
    out = root / "cat"
    assert main(["merge", "--base", str(base), "--adapters", str(a), str(b), "--method", "cat",
                 "--weights", "0.7", "0.3", "--out", str(out)]) == 0  # fmt: skip
    da, db, dm = delta(base, a), delta(base, b), delta(base, out)
    assert dm.keys() == da.keys() == db.keys() and dm
    for k in dm:
        torch.testing.assert_close(dm[k], 0.7 * da[k] + 0.3 * db[k], rtol=1e-4, atol=1e-6)
    assert json.loads((out / "merge.json").read_text())["weights"] == [0.7, 0.3]
    assert (out / "tokenizer.json").is_file()


@pytest.mark.parametrize("method", ["linear", "ties", "dare_linear", "magnitude_prune", "svd"])
def test_every_method_writes_an_adapter_peft_loads(setup, method):
    base, (a, b), root = setup
    out = root / method
    extra = ["--density", "0.5"] if method not in ("linear", "svd") else []
    assert main(["merge", "--base", str(base), "--adapters", str(a), str(b), "--method", method, "--out", str(out), *extra]) == 0  # fmt: skip
    model = PeftModel.from_pretrained(load_causal_lm(str(base)), str(out))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        merged = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    assert torch.isfinite(merged).all() and not torch.allclose(merged, plain)  # the merge changes the model


def test_the_merge_evaluates(setup, shared_data):
    base, (a, b), root = setup
    out = root / "eval-me"
    assert main(["merge", "--base", str(base), "--adapters", str(a), str(b), "--out", str(out)]) == 0
    res = root / "eval"
    assert main(["evaluate", "--model", str(base), "--adapter", str(out), "--benchmarks", "gsm8k", "--limit", "3",
                 "--max-new-tokens", "8", "--data-root", str(shared_data), "--out", str(res)]) == 0  # fmt: skip
    metrics = json.loads((res / "metrics.json").read_text())
    assert "gsm8k" in json.dumps(metrics)


@pytest.mark.parametrize(
    "args, needle",
    [(["--weights", "1.0"], "--weights: 1 given for 2 adapters"),
     (["--method", "ties"], "give --density"),
     (["--density", "1.5", "--method", "ties"], "--density 1.5"),
     ([], "exists: pass --overwrite")],
    ids=["weights", "density_missing", "density_range", "exists"],
)  # fmt: skip
def test_bad_merges_are_one_line_and_write_nothing(setup, args, needle, capsys, tmp_path):
    base, (a, b), _ = setup
    out = tmp_path / "out"
    if needle.startswith("exists"):
        out.mkdir()
    assert main(["merge", "--base", str(base), "--adapters", str(a), str(b), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if needle.startswith("exists") else [])
