"""``rlvr`` / ``python -m rlvr``: LightningCLI for fit / validate, plus the offline tools.

    rlvr --help                                            every command
    rlvr fit --config configs/base.yaml --config configs/task/math.yaml --model.lr=1e-5
    rlvr fit ... --print_config                            every option with its value
    rlvr score --input preds.jsonl --output scored.jsonl

A misspelled option or a bad value is one line on stderr (with a did-you-mean), exit code 2.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from rlvr.checkpointing import NAME as LAST_CKPT
from rlvr.checkpointing import LastCheckpoint
from rlvr.domains.base import DataError
from rlvr.hardware import cpu_precision
from rlvr.models import ModelLoadError
from rlvr.resume import changed_settings

#: LightningCLI's subcommands that rlvr documents, with what they do
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train a policy (SFT, GRPO or hybrid) from YAML configs and --key=value overrides",
    "validate": "run validation only (greedy accuracy per task) for a config / checkpoint",
}
#: other subcommands: name -> (module, function ``main(argv) -> int``, what it does); imported lazily
EXTRA_COMMANDS: dict[str, tuple[str, str, str]] = {
    "score": ("rlvr.score", "main", "score any system's completions (JSONL) with the trainer's verifiers"),
    "evaluate": ("rlvr.eval.cli", "evaluate_main", "evaluate a model or predictions on the benchmarks"),
    "compare": ("rlvr.eval.cli", "compare_main", "compare evaluation runs: deltas and flipped examples"),
    "report": ("rlvr.eval.cli", "report_main", "markdown + PNG report of evaluation runs"),
    "merge": ("rlvr.merge", "main", "merge LoRA adapters (linear, cat, svd, ties, dare, magnitude prune)"),
    "experiment": ("rlvr.experiments.cli", "main", "train + evaluate + report every run of an experiment"),
}


def usage() -> str:
    lines = ["usage: rlvr <command> [options]    (rlvr <command> --help for its options)", "", "commands:"]
    entries = {**LIGHTNING_COMMANDS, **{k: v[2] for k, v in EXTRA_COMMANDS.items()}}
    width = max(map(len, entries))
    lines += [f"  {name:<{width}}  {what}" for name, what in entries.items()]
    return "\n".join(lines) + "\n"


class CliError(Exception):
    """A configuration error already reduced to one line."""


def _known_options(parser) -> set[str]:
    """Every ``--option`` of ``parser`` and its subcommands, plus ``--data.<arg>`` of the datamodule classes
    imported so far (the one the config named), with ``.init_args.`` dropped."""
    import lightning as L

    parsers, known = [parser], {"--config", "--print_config", "--help"}
    while parsers:
        p = parsers.pop()
        known |= {s for s in getattr(p, "_option_string_actions", {}) if s.startswith("--")}
        sub = getattr(p, "_subcommands_action", None)
        parsers += list(getattr(sub, "_name_parser_map", {}).values()) if sub is not None else []
    stack, seen = list(L.LightningDataModule.__subclasses__()), set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack += cls.__subclasses__()
        code = getattr(cls.__init__, "__code__", None)
        if code is not None:
            known |= {f"--data.{n}" for n in code.co_varnames[1 : code.co_argcount + code.co_kwonlyargcount]}
    return {k.replace(".init_args.", ".") for k in known}


def one_line_parse_error(message: str, parser) -> str:
    """The first informative line of a jsonargparse error, with a did-you-mean for an unknown option."""
    for line in message.splitlines():  # an error of a nested parser, already made one line
        if line.strip().startswith("- unknown option"):
            return line.strip()[2:]
    nested = re.search(r"Option '(\w+)' is not accepted", message)
    if "unrecognized arguments:" in message or nested:
        known = _known_options(parser)
        if nested:  # raised by the datamodule class's own parser: its options carry no "data." prefix
            known |= {f"--data.{k[2:]}" for k in known if k.count(".") == 0}
        given = re.findall(r"(--[\w.]+)", message.split("unrecognized arguments:", 1)[-1])
        data_known = any(k.startswith("--data.") and k != "--data.help" for k in known)
        unknown = [f"--data.{nested.group(1)}"] if nested else [
            g for g in given
            if g.replace(".init_args.", ".") not in known and (data_known or not g.startswith("--data."))
        ]  # fmt: skip
        if unknown:
            option = unknown[0].replace(".init_args.", ".")
            close = difflib.get_close_matches(option, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            return f"unknown option {option}{hint} (rlvr fit --help lists them; --print_config shows values)"
    return condense(message)


def condense(message: str) -> str:
    """One line of a (jsonargparse) error: for a union that matched no type, the first inner error."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if lines and lines[0].startswith(("Does not validate against any", "Parser key")):
        items = [
            i
            for i, ln in enumerate(lines)
            if ln.startswith("- ") and "Expected a <class 'NoneType'>" not in ln
        ]
        if items:
            i = items[0]
            inner = lines[i][2:]
            while inner.endswith(":") and i + 1 < len(lines):  # "Problem with given class_path ...:" + reason
                i += 1
                inner += " " + lines[i].removeprefix("- ")
            return (lines[0].rstrip(":") + ": " + inner if lines[0].startswith("Parser key") else inner)[:400]
    return " ".join(ln for ln in lines[:3] if not ln.startswith("- "))[:400]


class RlvrCLI(LightningCLI):
    """LightningCLI whose parse errors are one line (with a did-you-mean), not a usage wall; ``fit`` checks
    ``max_steps``, resumes ``--ckpt_path last`` (or a checkpoint file) in the run folder it came from, and
    removes the run folder of a run that failed before its first step."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LastCheckpoint, "checkpoint")  # --checkpoint.every_n_steps=10

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        # bf16 on a CPU without native bf16 is emulated ~50x slower than fp32 (rlvr.hardware): train in fp32
        trainer = (self.config[self.subcommand] if self.subcommand else self.config).get("trainer")
        if trainer is not None:
            trainer.precision, self.precision_note = cpu_precision(trainer.get("precision"), trainer.get("accelerator"))  # fmt: skip

    def _run_subcommand(self, subcommand: str) -> None:
        # said once, by rank 0, when the run starts (so a bad config stays a single error line)
        if getattr(self, "precision_note", None) and os.environ.get("RANK", "0") == "0":
            print(f"rlvr: {self.precision_note}", file=sys.stderr)
        if subcommand != "fit":
            return super()._run_subcommand(subcommand)
        self._prepare_fit()
        run_dir = Path(self.trainer.log_dir) if self.trainer.logger is not None else None
        # the folders this run creates: runs/<name>/version_N and, when new, runs/<name> and runs
        created = (
            [d for d in (run_dir, *run_dir.parents[:2]) if not d.exists()] if run_dir is not None else []
        )
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            if (
                created
                and created[0] == run_dir
                and self.trainer.global_step == 0
                and self.trainer.is_global_zero
            ):
                remove_run_dir(created)  # config.yaml and an empty event file are not a run
            raise

    def _prepare_fit(self) -> None:
        max_steps = self.trainer.max_steps
        if max_steps is None or max_steps <= 0:
            raise CliError(f"--trainer.max_steps={max_steps}: the training stream is endless, so give a number of "
                           "optimizer steps > 0")  # fmt: skip
        cfg = self.config_init[self.subcommand]
        cfg["ckpt_path"] = resume_in_place(self.trainer.logger, cfg.get("ckpt_path"))
        if cfg["ckpt_path"] is not None:
            import torch

            saved = torch.load(cfg["ckpt_path"], map_location="cpu", weights_only=True, mmap=True)
            _warn_changed(
                changed_settings(saved.get("hyper_parameters", {}), dict(self.model.hparams)),
                f"--ckpt_path {cfg['ckpt_path']}: the resumed run uses model settings that differ from the "
                "checkpoint's, so it will not repeat the interrupted run",
            )

    def _parse_ckpt_path(self) -> None:
        # Lightning replaces the model settings with a checkpoint file's ('last' is resolved later, in
        # _prepare_fit, and keeps the command line's): name what that drops instead of dropping it silently
        sub = self.config.get("subcommand")
        given = self.config[sub].get("model") if sub else None
        given = given.as_dict() if given is not None else None
        super()._parse_ckpt_path()
        if given is not None:
            _warn_changed(
                changed_settings(self.config[sub]["model"].as_dict(), given),
                f"--ckpt_path {self.config[sub].get('ckpt_path')}: the checkpoint's model settings replace "
                "the ones given (checkpoint -> given)",
            )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured):
                super().parse_arguments(parser, args)
        except SystemExit as e:
            if e.code in (0, None):  # --help, --print_config
                sys.stderr.write(captured.getvalue())
                raise
            text = captured.getvalue()
            message = text.split("error: ", 1)[1] if "error: " in text else text
            raise CliError(one_line_parse_error(message.strip(), parser)) from None
        sys.stderr.write(captured.getvalue())


def _warn_changed(changes: list[str], what: str) -> None:
    if changes:
        from lightning.pytorch.utilities import rank_zero_warn

        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        rank_zero_warn(f"{what}: {shown}")


def remove_run_dir(created: list[Path]) -> None:
    """Remove the run folder ``created[0]`` (unless it holds a checkpoint) and the parents this run created,
    where nothing else has appeared in them since."""
    run_dir = created[0]
    if run_dir.exists() and not (run_dir / "checkpoints" / LAST_CKPT).exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in created[1:]:
            with contextlib.suppress(OSError):
                parent.rmdir()  # only when empty


def resume_in_place(logger, ckpt_path: str | None) -> str | None:
    """The checkpoint file to resume from, with ``logger`` pointed at the run folder it belongs to, so the
    resumed run writes to the same ``runs/<name>/version_N`` and TensorBoard run (events after the
    checkpoint's step are purged: the curves continue from it). ``last`` is the newest version's
    ``checkpoints/last.ckpt``; none yet starts a new run, with a warning."""
    if ckpt_path is None:
        return None
    root = Path(logger.root_dir) if logger is not None and hasattr(logger, "root_dir") else None
    if ckpt_path == "last":
        found = sorted(root.glob(f"version_*/checkpoints/{LAST_CKPT}"), key=_version_number) if root else []
        if not found:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"--ckpt_path last: no {LAST_CKPT} under {root}/version_*/checkpoints; starting a new run"
            )
            return None
        path = found[-1]
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            raise CliError(
                f"--ckpt_path {ckpt_path}: no such checkpoint file (use 'last' for the newest run's)"
            )
    version = path.parent.parent
    if root is not None and path.parent.name == "checkpoints" and version.parent.resolve() == root.resolve():
        import torch

        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0)
        logger._version = _version_number(path) if version.name.startswith("version_") else version.name
        if hasattr(logger, "_kwargs"):
            logger._kwargs["purge_step"] = step  # TensorBoard drops the killed run's events from this step on
    return str(path)


def _version_number(path: Path) -> int:
    name = path.parent.parent.name.removeprefix("version_")
    return int(name) if name.isdigit() else -1


def build_cli(args: Sequence[str] | None, run: bool = True) -> LightningCLI:
    """The LightningCLI of rlvr: ``RLVRModule`` + any LightningDataModule named by ``data.class_path``
    (``configs/base.yaml`` names ``data_modules.MixtureDataModule``; the package itself never imports it)."""
    import lightning as L

    from rlvr.module import RLVRModule

    return RlvrCLI(
        RLVRModule,
        L.LightningDataModule,
        subclass_mode_data=True,
        args=None if args is None else list(args),
        run=run,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
    )


def main(argv: Sequence[str] | None = None) -> int:
    explicit = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0
    command = argv[0]
    if command not in LIGHTNING_COMMANDS and command not in EXTRA_COMMANDS:
        close = difflib.get_close_matches(command, [*LIGHTNING_COMMANDS, *EXTRA_COMMANDS], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"rlvr: error: unknown command {command!r}{hint} (rlvr --help lists them)", file=sys.stderr)
        return 2
    from rlvr.console import quiet

    quiet()
    try:
        if command in EXTRA_COMMANDS:
            module_name, fn_name, _ = EXTRA_COMMANDS[command]
            fn: Callable[[list[str]], int] = getattr(__import__(module_name, fromlist=[fn_name]), fn_name)
            return fn(argv[1:])
        build_cli(argv if explicit else None)
        return 0
    except (CliError, DataError, ModelLoadError, ValueError, FileNotFoundError) as e:
        # configuration and data problems: one line, no traceback (RLVR_DEBUG=1 shows it)
        if os.environ.get("RLVR_DEBUG"):
            raise
        print(f"rlvr {command}: error: {_one_line(e)}  (RLVR_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    return condense(str(e)) or type(e).__name__


if __name__ == "__main__":
    raise SystemExit(main())
