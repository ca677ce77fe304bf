"""GRPO through ``rlvr fit`` climbs the reward it is given: the end-to-end sign check of the whole step.

The loss functions match TRL term by term (tests/test_trl_parity.py), but a sign flipped anywhere between the
reward matrix and the optimizer (advantages, masks, the log-prob pass, the Lightning step) would still pass
those. Here a fresh tiny model samples from near-uniform logits and a task written outside the package rewards
the share of digit characters in each completion: 20 pure-GRPO steps must raise that share well above where it
started, and the same run with the learning rate at zero must not.
"""

from __future__ import annotations

import os
import subprocess

from run_cli import fit_command
from test_plugin import _scalars

TASK = '''
from rlvr import Example


class DigitsTask:
    """Rewards the share of digit characters in a completion; any completion is a valid answer."""

    name = "digits"
    components = ("digits",)
    accuracy_component = "digits"

    def __init__(self, num_train: int = 64, num_val: int = 4):
        self.num = {"train": num_train, "val": num_val}
        self.weights = {"digits": 1.0}

    def examples(self, split):
        return [Example(task=self.name, uid=f"{split}/{i}", reference={},
                        messages=[{"role": "user", "content": f"Write something, please ({split} {i})."}])
                for i in range(self.num[split])]

    def score(self, completion, reference):
        text = completion.replace(" ", "")
        return {"digits": sum(c.isdigit() for c in text) / max(1, len(text))}
'''

CONFIG = """
data:
  tasks:
    - class_path: digits_task.DigitsTask
"""


def _digit_share(tmp_path, name: str, lr: float) -> list[float]:
    """``reward/digits/digits`` per step of a 20-step pure-GRPO run at ``lr``."""
    (tmp_path / "digits_task.py").write_text(TASK)
    (tmp_path / "digits.yaml").write_text(CONFIG)
    runs = tmp_path / "runs"
    cmd = fit_command(tmp_path / "digits.yaml", extra=(
        "--trainer.max_steps=20", "--trainer.val_check_interval=20", f"--trainer.logger.init_args.save_dir={runs}",
        f"--trainer.logger.init_args.name={name}", "--model.hybrid.start=0.0", "--model.hybrid.end=0.0",
        f"--model.lr={lr}", "--model.loss.beta=0.0", "--model.completions_per_prompt=8", "--model.max_new_tokens=8",
        "--data.prompts_per_step=8", "--data.val_prompts_per_task=4", "--model.tiny.corpus_size=200",
    ))  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(tmp_path), RLVR_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (runs / name).iterdir()
    return [v for _, v in sorted(_scalars(run_dir)["reward/digits/digits"])]


def test_grpo_raises_the_reward_it_is_given_and_a_zero_lr_does_not(tmp_path):
    # measured: 0.04 -> 1.00 by step 13 at 3e-3 (0.04 -> 0.92 in 20 steps at 1e-3); 0.03-0.06 throughout at 0
    trained = _digit_share(tmp_path, "trained", 3e-3)
    frozen = _digit_share(tmp_path, "frozen", 0.0)
    assert len(trained) == len(frozen) == 20

    def first(xs):
        return sum(xs[:5]) / 5

    def last(xs):
        return sum(xs[-5:]) / 5

    assert last(trained) > first(trained) + 0.5, trained
    assert abs(last(frozen) - first(frozen)) < 0.05, frozen
