"""rlvr.eval: pass@k, multiple-choice scoring, `rlvr evaluate` on a tiny model, compare/report, the callback."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks.periodic_eval import PeriodicEval
from rlvr.cli import main as rlvr_main
from rlvr.eval.benchmarks import BENCHMARKS, parse_names
from rlvr.eval.choice_data import (
    arc_question,
    hellaswag_preprocess,
    hellaswag_question,
    load_arc,
    load_hellaswag,
)
from rlvr.eval.multiple_choice import (
    ChoiceQuestion,
    choice_metrics,
    continuation_logliks,
    encode_pair,
    predictions,
)
from rlvr.eval.passk import ks_for, mean_pass_at_k, pass_at_k
from rlvr.models import build_tiny, load_causal_lm, load_tokenizer

# ------------------------------------------------------------------------------------------------ pass@k


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (5, 2, 1, 2 / 5),  # pass@1 = c / n
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 3, 5, 1 - 21 / 252),  # C(7,5) = 21, C(10,5) = 252
        (4, 0, 2, 0.0),
        (4, 3, 2, 1.0),  # n - c < k: every pair holds a correct sample
        (200, 1, 100, 0.5),  # C(199,100)/C(200,100) = 100/200
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_where_binomials_overflow():
    got = pass_at_k(2000, 7, 1000)
    assert 0.99 < got <= 1.0 and math.isfinite(got)
    assert pass_at_k(2000, 0, 1000) == 0.0


def test_pass_at_k_rejects_bad_arguments_and_averages():
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    assert mean_pass_at_k([(2, 1), (2, 2), (1, 1)], 2) == pytest.approx((1.0 + 1.0) / 2)  # n=1 item skipped
    assert ks_for(1) == [1] and ks_for(10) == [1, 5, 10] and ks_for(3) == [1, 3]


# ------------------------------------------------------------------------------------ multiple choice (pure)


def test_acc_and_acc_norm_differ_on_a_hand_built_example():
    q = ChoiceQuestion("q", "ctx", ("short", "a much longer option"), gold=1, labels=("A", "B"))
    # summed log-lik favours the short option; per character (-10/5 = -2 vs -12/20 = -0.6) the long one
    assert predictions([-10.0, -12.0], q.choices) == (0, 1)
    assert choice_metrics([-10.0, -12.0], q) == {"acc": 0.0, "acc_norm": 1.0}
    assert choice_metrics([-13.0, -12.0], q) == {"acc": 1.0, "acc_norm": 1.0}
    assert predictions([-1.0, -1.0], ("a", "b")) == (0, 0)  # ties go to the first option


class CharTokenizer:
    """One token per character (id = code point % 64); enough of the HF tokenizer API for scoring."""

    bos_token_id = None
    eos_token_id = 0
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(ch) % 64 for ch in text]}


class BigramLM(torch.nn.Module):
    """logits(next | prev) = table[prev]: a causal LM whose log-likelihoods can be worked out by hand."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table)
        self.config = type("Config", (), {"max_position_embeddings": 512})()

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        logits = self.table[input_ids]  # [B, L, V]
        return type("Out", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits})()


def test_uniform_model_acc_prefers_short_options_acc_norm_long_ones():
    model, tok = BigramLM(torch.zeros(64, 64)), CharTokenizer()
    q = ChoiceQuestion(
        "q", "Question: which?\nAnswer:", ("ab", "abcdef", "abcd"), gold=1, labels=("A", "B", "C")
    )
    lls = continuation_logliks(model, tok, q.requests(), batch_size=2)
    # every token costs log 64; " ab" is 3 tokens, " abcdef" 7, " abcd" 5
    assert lls == pytest.approx([-3 * math.log(64), -7 * math.log(64), -5 * math.log(64)], rel=1e-5)
    # per character: -(n+1)/n log 64 rises with n, so the longest option wins acc_norm
    assert predictions(lls, q.choices) == (0, 1)


def test_peaked_model_picks_the_option_it_predicts_in_batched_padded_forwards():
    table = torch.zeros(64, 64)
    table[:, ord("x") % 64] = 8.0  # after any character, "x" is very likely
    model, tok = BigramLM(table), CharTokenizer()
    questions = [
        ChoiceQuestion("1", "Pick:", ("yy", "xx", "zz"), gold=1, labels=("A", "B", "C")),
        ChoiceQuestion(
            "2", "A much longer context to pad against:", ("xxxx", "qqqq"), gold=0, labels=("A", "B")
        ),
    ]
    reqs = [r for q in questions for r in q.requests()]
    for batch_size in (1, 2, 5):
        lls = continuation_logliks(model, tok, reqs, batch_size=batch_size)
        assert choice_metrics(lls[:3], questions[0]) == {"acc": 1.0, "acc_norm": 1.0}
        assert choice_metrics(lls[3:], questions[1]) == {"acc": 1.0, "acc_norm": 1.0}


def test_encode_pair_moves_trailing_space_to_the_continuation():
    tok = CharTokenizer()
    ctx, cont = encode_pair(tok, "Answer: ", "yes")
    assert ctx == tok("Answer:")["input_ids"] and cont == tok(" yes")["input_ids"]
    assert encode_pair(tok, "", "hi")[0] == [tok.eos_token_id]  # empty context: the EOS stands in for BOS


def test_arc_and_hellaswag_prompts_follow_lm_eval():
    hub = {
        "id": "x1",
        "question": "Why?",
        "choices": {"text": ["a", "b c"], "label": ["1", "2"]},
        "answerKey": "2",
    }
    q = arc_question(hub)
    assert q.context == "Question: Why?\nAnswer:" and q.requests()[1] == ("Question: Why?\nAnswer:", " b c")
    assert q.gold == 1 and q.labels == ("1", "2")
    raw = {"activity_label": "Roof", "ctx_a": "A man is on a roof.", "ctx_b": "he", "label": "3",
           "endings": ["a [title] b", "c", "d", "e  f"]}  # fmt: skip
    h = hellaswag_question(raw, 7)
    assert h.context == "Roof: A man is on a roof. He" and h.gold == 3 and h.uid == "7"
    assert h.choices[0] == "a. b" and h.choices[3] == "e f"
    pre = {
        "activity_label": "Roof",
        "ctx": "A man is on a roof. he",
        "label": 3,
        "endings": ["a", "b", "c", "d"],
    }
    assert hellaswag_question(pre, 7).context == h.context  # the preprocessed copy gives the same text
    assert hellaswag_preprocess("How to x [title] Do y [step] now") == "How to x. Do y now"


# --------------------------------------------------------------------------------------- the tiny model


@pytest.fixture(scope="session")
def tiny_model_dir(shared_data, tmp_path_factory) -> Path:
    """A tiny Qwen2 checkpoint whose tokenizer is trained on text from every benchmark (~5 s)."""
    corpus = [q.context + " " + " ".join(q.choices) for q in load_arc(shared_data)[:150]]
    corpus += [q.context + " " + " ".join(q.choices) for q in load_hellaswag(shared_data)[:150]]
    corpus += [(shared_data / "spider" / "dev_gold.sql").read_text()[:20000]]
    corpus += [
        "def add(a, b):\n    return a + b\n",
        "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>",
    ]
    return build_tiny(corpus, vocab_size=768, hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=2,
                      intermediate_size=128, cache_dir=tmp_path_factory.mktemp("tiny"))  # fmt: skip


def test_batched_logliks_equal_one_sequence_at_a_time(tiny_model_dir, shared_data):
    tok, model = load_tokenizer(str(tiny_model_dir)), load_causal_lm(str(tiny_model_dir)).eval()
    qs = load_arc(shared_data)[:3] + load_hellaswag(shared_data)[:3]
    reqs = [r for q in qs for r in q.requests()]
    batched = continuation_logliks(model, tok, reqs, batch_size=8)
    with torch.no_grad():
        for (c, x), got in zip(reqs, batched):
            ctx, cont = encode_pair(tok, c, x)
            ids = torch.tensor([ctx + cont])
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
            want = logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]][-len(cont) :].sum().item()
            assert got == pytest.approx(want, abs=1e-3)


# ------------------------------------------------------------------------------------- CLI: bad input


def _offline(monkeypatch):
    """Hub lookups fail at once instead of retrying for a minute (as under HF_HUB_OFFLINE=1)."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    if hasattr(datasets.config, "HF_HUB_OFFLINE"):
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def _one_line_error(capsys, argv) -> str:
    assert rlvr_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rlvr {argv[0]}: error: "), err
    return err[0]


def test_unknown_benchmark_is_one_line(capsys, tmp_path):
    assert "unknown benchmark(s) 'gsm9k'" in _one_line_error(
        capsys, ["evaluate", "--model", "x", "--benchmarks", "gsm8k,gsm9k", "--out", str(tmp_path)]
    )
    with pytest.raises(ValueError):
        parse_names("arc, nope")
    assert parse_names("") == list(BENCHMARKS) and parse_names("mbpp, mbpp ,spider") == ["mbpp", "spider"]


@pytest.mark.parametrize("bench,missing", [("arc_challenge", "ARC-Challenge-Test"), ("spider", "spider"),
                                           ("mbpp", "mbpp"), ("hellaswag", "hellaswag_val")])  # fmt: skip
def test_missing_data_root_files_are_one_line(bench, missing, capsys, tmp_path):
    line = _one_line_error(capsys, ["evaluate", "--model", "x", "--benchmarks", bench, "--data-root", str(tmp_path),
                                    "--out", str(tmp_path / "o")])  # fmt: skip
    assert missing in line


def test_offline_hub_model_and_dataset_are_one_line(capsys, shared_data, tmp_path, monkeypatch):
    _offline(monkeypatch)
    line = _one_line_error(capsys, ["evaluate", "--model", "no-such-org/no-such-model", "--benchmarks", "arc_challenge",
                                    "--data-root", str(shared_data), "--out", str(tmp_path)])  # fmt: skip
    assert "cannot load model" in line
    line = _one_line_error(
        capsys, ["evaluate", "--model", "x", "--benchmarks", "hellaswag", "--out", str(tmp_path)]
    )
    assert "hub dataset" in line
    assert "spider needs --data-root" in _one_line_error(
        capsys, ["evaluate", "--model", "x", "--benchmarks", "spider", "--out", str(tmp_path)]
    )


# ------------------------------------------------------------------------------------ compare and report


def _predictions_run(path: Path, data: Path, out: Path, rows) -> Path:
    with open(path, "w") as f:
        for bench, uid, completion in rows:
            f.write(json.dumps({"benchmark": bench, "id": uid, "completion": completion}) + "\n")
    assert (
        rlvr_main(["evaluate", "--predictions", str(path), "--data-root", str(data), "--out", str(out)]) == 0
    )
    return out


def test_compare_and_report_write_deltas_flips_and_charts(shared_data, tmp_path, capsys):
    gold = [r["answerKey"] for r in load_arc_records(shared_data)[:6]]
    ids = [r["id"] for r in load_arc_records(shared_data)[:6]]
    other = {"A": "B", "B": "C", "C": "D", "D": "A", "1": "2", "2": "3", "3": "4", "4": "1"}
    # before: items 0-3 right, 4-5 wrong; after: 0-1 right, 2-3 wrong (broken), 4-5 right (fixed)
    before_rows = [("arc_challenge", i, g if k < 4 else other[g]) for k, (i, g) in enumerate(zip(ids, gold))]
    after_rows = [
        ("arc_challenge", i, other[g] if k in (2, 3) else g) for k, (i, g) in enumerate(zip(ids, gold))
    ]
    before = _predictions_run(tmp_path / "b.jsonl", shared_data, tmp_path / "before", before_rows)
    after = _predictions_run(tmp_path / "a.jsonl", shared_data, tmp_path / "after", after_rows)
    capsys.readouterr()
    assert rlvr_main(["compare", str(before), str(after), "--out", str(tmp_path / "cmp")]) == 0
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert result["n_fixed"] == 2 and result["n_broken"] == 2
    assert {f["id"] for f in result["fixed"]} == set(ids[4:])
    assert {b["id"] for b in result["broken"]} == set(ids[2:4])
    acc = next(d for d in result["deltas"] if d["metric"] == "acc")
    assert acc["before"] == pytest.approx(4 / 6) and acc["delta"] == pytest.approx(0.0)
    assert "fixed (wrong → right): 2" in (tmp_path / "cmp" / "compare.md").read_text()

    assert rlvr_main(["report", str(before), str(after), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "| arc_challenge | acc | 0.667 | 0.667 |" in report and "wrong_answer" in report
    for png in ("metrics.png", "errors_0.png", "errors_1.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"


def load_arc_records(data: Path) -> list[dict]:
    from rlvr.domains.sources import read_json_records

    return read_json_records(data / "arc_challenge" / "ARC-Challenge-Test.jsonl.gz")


def test_compare_of_a_non_result_directory_is_one_line(capsys, tmp_path):
    assert "no metrics.json" in _one_line_error(capsys, ["compare", str(tmp_path), str(tmp_path)])


# ------------------------------------------------------------------------- evaluate on the tiny model


def test_evaluate_every_benchmark_offline_writes_metrics(tiny_model_dir, shared_data, tmp_path):
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(tiny_model_dir), "--data-root", str(shared_data), "--limit", "3",
            "--max-new-tokens", "8", "--out", str(out)]  # fmt: skip
    assert rlvr_main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    primary = {"gsm8k": "accuracy", "math500": "accuracy", "humaneval": "pass@1", "mbpp": "pass@1",
               "spider": "execution_accuracy", "arc_challenge": "acc_norm", "hellaswag": "acc_norm",
               "gen_math": "accuracy", "gen_sql": "accuracy", "gen_code": "accuracy"}  # fmt: skip
    assert set(metrics) == set(BENCHMARKS)
    for bench, metric in primary.items():
        m = metrics[bench]
        assert 0.0 <= m[metric] <= 1.0 and m["n"] == 3 and m["examples_per_s"] > 0, (bench, m)
    assert metrics["gsm8k"].keys() >= {
        "format_rate",
        "fallback_accuracy",
        "strict_accuracy",
        "truncated_rate",
    }
    assert metrics["arc_challenge"].keys() >= {"acc", "acc_norm"} and metrics["spider"]["missing_db"] == 62
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(BENCHMARKS) * 3
    errors = json.loads((out / "errors.json").read_text())
    assert set(errors) == set(BENCHMARKS)
    assert all(sum(c["count"] for c in cats.values()) == 3 for cats in errors.values())
    assert "## Error analysis" in (out / "report.md").read_text()


def test_adapter_and_pass_at_k_sampling(tiny_model_dir, shared_data, tmp_path):
    from rlvr.models import add_lora

    adapter = tmp_path / "adapter"
    add_lora(load_causal_lm(str(tiny_model_dir)), r=4, alpha=8, dropout=0.0).save_pretrained(adapter)
    common = ["--model", str(tiny_model_dir), "--data-root", str(shared_data), "--limit", "2"]
    common += ["--max-new-tokens", "4"]
    base, lora = tmp_path / "base", tmp_path / "lora"
    assert rlvr_main(["evaluate", *common, "--benchmarks", "arc_challenge", "--out", str(base)]) == 0
    argv = ["evaluate", *common, "--benchmarks", "arc_challenge,mbpp", "--adapter", str(adapter)]
    argv += ["--n-samples", "3"]
    assert rlvr_main([*argv, "--out", str(lora)]) == 0
    # LoRA's B starts at zero, so the adapted model scores every option exactly as the base does
    lls = [[json.loads(x)["detail"]["logliks"] for x in (d / "samples.jsonl").read_text().splitlines()
            if '"arc_challenge"' in x] for d in (base, lora)]  # fmt: skip
    assert lls[0] == lls[1]
    mbpp = json.loads((lora / "metrics.json").read_text())["mbpp"]
    assert mbpp.keys() >= {"pass@1", "pass@3"} and mbpp["samples"] == 6
    assert json.loads((lora / "run.json").read_text())["adapter"] == str(adapter)


# ------------------------------------------------------------------------------------ PeriodicEval


class PolicyModule(L.LightningModule):
    """Holds a policy and tokenizer like RLVRModule; its 'training' only moves a dummy scalar."""

    def __init__(self, path: str):
        super().__init__()
        self.policy, self.tokenizer = load_causal_lm(path), load_tokenizer(path)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return ((self.w - 1) ** 2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=0.1)


def test_periodic_eval_logs_eval_metrics_every_n_steps(tiny_model_dir, shared_data, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    cb = PeriodicEval(["arc_challenge", "gsm8k"], every_n_steps=2, limit=2, data_root=str(shared_data),
                      max_new_tokens=4, out_dir=str(tmp_path / "evals"))  # fmt: skip
    module = PolicyModule(str(tiny_model_dir))
    trainer = L.Trainer(max_steps=5, accelerator="cpu", logger=CSVLogger(tmp_path), callbacks=[cb],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(torch.zeros(8, 1), batch_size=1))
    assert [step for step, _ in cb.history] == [2, 4, 5]  # every 2 steps, and once at the end
    first = set(cb.history[0][1])
    assert {"eval/arc_challenge/acc", "eval/arc_challenge/acc_norm", "eval/gsm8k/accuracy"} <= first
    logged = (Path(trainer.logger.log_dir) / "metrics.csv").read_text()
    assert "eval/arc_challenge/acc_norm" in logged and "eval/gsm8k/format_rate" in logged
    assert "eval/gsm8k/accuracy" in trainer.callback_metrics
    assert (tmp_path / "evals" / "step_4" / "metrics.json").is_file()
    module.policy.train()
    state = torch.get_rng_state()
    cb.evaluate(trainer, module)
    assert torch.equal(state, torch.get_rng_state())  # seeded sampling ran on a private RNG stream
    assert module.policy.training  # and the policy is back in train mode


def test_generate_benchmarks_report_strict_and_lenient_accuracy():
    """lenient counts a right answer wherever the verifier finds it; strict also wants the required format."""
    from rlvr.eval.benchmarks import get_benchmark
    from rlvr.eval.runner import summarize
    from rlvr.eval.spec import Loaded
    from rlvr.eval.store import SampleResult

    formatted = "<reasoning>\nr\n</reasoning>\n<answer>\nx\n</answer>"
    rows = [(formatted, 1.0), ("x", 1.0), (formatted, 0.0), ("x", 0.0)]

    def samples(bench, **detail):
        return [SampleResult(bench, str(i), 0, text, ok, "correct" if ok else "wrong",
                             {"strict_format": float(text == formatted), **detail})
                for i, (text, ok) in enumerate(rows)]  # fmt: skip

    m = summarize(get_benchmark("spider"), samples("spider"), Loaded(items=[]), 4, 1.0)
    assert (m["lenient_accuracy"], m["strict_accuracy"]) == (0.5, 0.25)
    # GSM8K keeps its own strict reading (an <answer> block or \boxed{}), not the generic one
    m = summarize(get_benchmark("gsm8k"), samples("gsm8k", formatted=True), Loaded(items=[]), 4, 1.0)
    assert (m["lenient_accuracy"], m["strict_accuracy"]) == (0.5, 0.5)
    assert "lenient_accuracy" not in summarize(get_benchmark("arc_challenge"), [], Loaded(items=[]), 0, 1.0)


@pytest.mark.parametrize("name", ["gen_math", "gen_sql", "gen_code"])
def test_generated_task_benchmarks_judge_gold_right_and_a_wrong_answer_wrong(name):
    from rlvr.eval import store
    from rlvr.eval.benchmarks import get_benchmark

    spec = get_benchmark(name)
    items = spec.load(None).items
    assert len(items) == 200 and len({it.uid for it in items}) == 200
    pool, items = items[:20], items[:3]
    gold = spec.judge([it.example.solution for it in items], items)
    assert [v.correct for v in gold] == [1.0, 1.0, 1.0]
    # another problem's gold solution, one whose answer differs (small math problems share answers)
    answer = lambda it: it.example.reference.get("answer", it.example.uid)  # noqa: E731
    wrong = [next(o.example.solution for o in pool if answer(o) != answer(it)) for it in items]
    judged = spec.judge(wrong, items)
    assert [v.correct for v in judged] == [0.0, 0.0, 0.0]
    # the error analysis counts them under the cross-benchmark categories, not the verifier's own words
    # (gen_sql's "wrong_result" once fell out of every errors_shift table)
    # (another problem's query or function mostly fails on this one's schema or tests: sql_error, runtime_error)
    assert {v.category for v in gold} == {"correct"} and "correct" not in {v.category for v in judged}
    assert {v.category for v in judged} <= set(store.CATEGORIES)
    assert all(v.detail["verdict"] for v in judged)


def test_a_verdict_outside_the_categories_is_refused():
    from rlvr.eval.spec import Verdict

    with pytest.raises(ValueError, match="wrong_result.*category_of"):
        Verdict(0.0, "wrong_result")
