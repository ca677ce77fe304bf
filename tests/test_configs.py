"""Every YAML in configs/ parses and instantiates through the CLI (litgpt's config-hub test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningCLI

from data_modules.mixture import MixtureDataModule
from rlvr.cli import build_cli, main
from rlvr.module import RLVRModule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TASKS = sorted((CONFIGS / "task").glob("*.yaml"))
OVERLAYS = sorted(p for d in ("model", "experiment") for p in (CONFIGS / d).glob("*.yaml"))


def instantiate(*configs: Path, extra: tuple[str, ...] = ()) -> LightningCLI:
    args = [a for c in configs for a in ("--config", str(c))] + list(extra)
    return build_cli(args, run=False)


@pytest.mark.parametrize("task", TASKS, ids=lambda p: p.stem)
def test_task_config_instantiates(task, tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    cli = instantiate(CONFIGS / "base.yaml", task)
    assert isinstance(cli.model, RLVRModule) and isinstance(cli.datamodule, MixtureDataModule)
    assert set(cli.datamodule.tasks) == ({"math", "sql", "code"} if task.stem == "multi" else {task.stem})
    assert cli.trainer.max_steps > 0


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_overlay_config_instantiates(overlay, tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    cli = instantiate(CONFIGS / "base.yaml", CONFIGS / "task" / "math.yaml", overlay)
    assert isinstance(cli.model, RLVRModule)


def test_overrides_reach_the_module(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    cli = instantiate(
        CONFIGS / "base.yaml", CONFIGS / "task" / "math.yaml",
        extra=("--model.completions_per_prompt=4", "--model.loss.beta=0.1", "--data.prompts_per_step=3"),
    )  # fmt: skip
    assert cli.model.G == 4 and cli.model.loss_cfg.beta == 0.1 and cli.datamodule.prompts_per_step == 3


def test_print_config_lists_every_option(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "base.yaml"), "--config", str(CONFIGS / "task" / "math.yaml"),
              "--print_config"])  # fmt: skip
    assert done.value.code in (0, None)
    out = capsys.readouterr().out
    for option in ("completions_per_prompt", "max_new_tokens", "loss_type", "epsilon_high", "scale_rewards",
                   "prompts_per_step", "schedule", "lora", "difficulty", "max_steps"):  # fmt: skip
        assert f"{option}:" in out, option


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model.completions_per_prompt=many"], "completions_per_prompt"),
        (["--model.scale_rewards=sometimes"], "scale_rewards"),
        (["--data.tasks=[{class_path: rlvr.domains.nope.Nope}]"], "nope"),
        (["--model.lrr=1"], "did you mean --model.lr?"),
        (["--data.prompts_per_stepp=1"], "did you mean --data.prompts_per_step?"),
    ],
)
def test_bad_options_exit_nonzero_naming_the_option(args, needle, capsys):
    argv = [
        "fit",
        "--config",
        str(CONFIGS / "base.yaml"),
        "--config",
        str(CONFIGS / "task" / "math.yaml"),
        *args,
    ]
    with pytest.raises(SystemExit) as done:
        code = main(argv)
        raise SystemExit(code)
    assert done.value.code not in (0, None)
    err = capsys.readouterr().err
    assert needle in err.lower() and len(err.strip().splitlines()) == 1, err
