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


STRATEGIES = {"ddp": "DDPStrategy", "fsdp": "FSDPStrategy", "deepspeed": "DeepSpeedStrategy"}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_config_instantiates(name):
    # parsed against Trainer's own signature (a key it does not take fails), then the strategy object is built;
    # FSDP and DeepSpeed are GPU-only in a Trainer, so the object is built without one
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies import Strategy

    cfg = yaml.safe_load((CONFIGS / "strategy" / f"{name}.yaml").read_text())
    trainer_args = ArgumentParser(exit_on_error=False)
    trainer_args.add_class_arguments(Trainer, "trainer", fail_untyped=False)
    trainer_args.parse_object(cfg)
    strategy_args = ArgumentParser(exit_on_error=False)
    strategy_args.add_subclass_arguments(Strategy, "strategy")
    ns = strategy_args.parse_object({"strategy": cfg["trainer"]["strategy"]})
    strategy = strategy_args.instantiate(ns).strategy
    assert type(strategy).__name__ == STRATEGIES[name]
    if name == "fsdp":
        from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

        assert Qwen2DecoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes
        assert strategy.kwargs[
            "use_orig_params"
        ]  # Lightning's default: LoRA mixes frozen and trained weights
    if name == "deepspeed":
        assert strategy.config["zero_optimization"]["stage"] == 2
    if name != "ddp":
        assert cfg["trainer"]["precision"] == "bf16-mixed"


def test_ddp_strategy_config_builds_a_trainer(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    cli = instantiate(CONFIGS / "base.yaml", CONFIGS / "task/math.yaml", CONFIGS / "strategy/ddp.yaml",
                      extra=("--trainer.accelerator=cpu",))  # fmt: skip
    assert type(cli.trainer.strategy).__name__ == "DDPStrategy"
    assert cli.trainer.strategy._ddp_kwargs["broadcast_buffers"] is False
