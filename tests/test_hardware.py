"""A bf16 config on a CPU without native bf16 trains in fp32 (emulated bf16 is ~50x slower), and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlvr.cli import build_cli
from rlvr.hardware import cpu_has_native_bf16, cpu_precision

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n"
NEOVERSE = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
# AVX-512 without bf16 instructions
SKYLAKE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512vl\n"


@pytest.mark.parametrize(("cpuinfo", "native"), [(ZEN3, False), (SAPPHIRE, True), (NEOVERSE, True),
                                                 (SKYLAKE, False), ("", False)])  # fmt: skip
def test_native_bf16_is_read_off_the_cpu_flags(cpuinfo, native):
    assert cpu_has_native_bf16(cpuinfo) is native


def test_bf16_falls_back_to_fp32_on_cpus_without_it_and_only_there(monkeypatch):
    monkeypatch.delenv("RLVR_CPU_BF16", raising=False)
    precision, note = cpu_precision("bf16-mixed", "cpu", ZEN3)
    assert precision == "32-true" and "bf16-mixed -> 32-true" in note and "RLVR_CPU_BF16=1" in note
    assert cpu_precision("bf16", "cpu", ZEN3)[0] == "32-true"  # Lightning's alias of bf16-mixed
    assert cpu_precision("bf16-true", "cpu", ZEN3) == ("bf16-true", None)  # bf16 weights: a deliberate choice
    assert cpu_precision("bf16-mixed", "cpu", SAPPHIRE) == ("bf16-mixed", None)
    # a GPU run is not the CPU's business
    assert cpu_precision("bf16-mixed", "gpu", ZEN3) == ("bf16-mixed", None)
    assert cpu_precision("16-mixed", "cpu", ZEN3) == ("16-mixed", None)
    assert cpu_precision("32-true", "cpu", ZEN3) == ("32-true", None)
    monkeypatch.setenv("RLVR_CPU_BF16", "1")
    assert cpu_precision("bf16-mixed", "cpu", ZEN3) == ("bf16-mixed", None)


@pytest.mark.parametrize("native", [False, True])
def test_the_cli_trains_a_bf16_config_in_fp32_where_the_cpu_lacks_bf16(native, tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path))
    monkeypatch.delenv("RLVR_CPU_BF16", raising=False)
    monkeypatch.setattr("rlvr.hardware.cpu_flags", lambda cpuinfo=None: {"avx2", *(["avx512_bf16"] * native)})
    args = ["--config", str(CONFIGS / "base.yaml"), "--config", str(CONFIGS / "task" / "math.yaml"),
            "--trainer.accelerator=cpu", f"--trainer.logger.init_args.save_dir={tmp_path}"]  # fmt: skip
    cli = build_cli(args, run=False)
    wanted = "bf16-mixed" if native else "32-true"
    assert cli.trainer.precision == wanted and cli.config["trainer"]["precision"] == wanted
    assert ("-> 32-true" in (cli.precision_note or "")) is not native  # printed when the run starts


@pytest.mark.parametrize("cuda", [False, True])
def test_auto_resolves_like_lightning(cuda, monkeypatch):
    monkeypatch.delenv("RLVR_CPU_BF16", raising=False)
    monkeypatch.setattr(
        "lightning.fabric.accelerators.cuda.CUDAAccelerator.is_available", staticmethod(lambda: cuda)
    )
    for accelerator in ("auto", None):
        assert cpu_precision("bf16-mixed", accelerator, ZEN3)[0] == ("bf16-mixed" if cuda else "32-true")
    cpu = {"class_path": "lightning.pytorch.accelerators.CPUAccelerator"}  # the CLI's form of an instance
    assert cpu_precision("bf16-mixed", cpu, ZEN3)[0] == "32-true"
