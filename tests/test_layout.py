"""The architecture's rules, checked: verifiers import no model code, rlvr imports neither callbacks nor
data_modules, algo/ imports nothing else of rlvr, files stay small, and the reward table in the README is the
one the registry generates."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.domains.registry import DOMAINS, reward_table

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "rlvr"
#: files allowed past 400 lines, and why (never past 600)
LONG_FILES = {
    "domains/math/verify.py": "extraction, risk screens and the math-verify deadline belong together",
    "module.py": "the LightningModule's typed constructor is its documented config (LightningCLI reads it)",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_verifiers_import_no_torch_or_transformers(domain):
    code = (
        f"import sys, rlvr.domains.{domain}.verify, rlvr.domains.{domain}.task, rlvr.score\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'lightning', 'peft') if m in sys.modules)\n"
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_rlvr_never_imports_callbacks_or_data_modules():
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if any(n.split(".")[0] in ("callbacks", "data_modules") for n in _imports(p))
    ]
    assert offenders == []


def test_algo_imports_nothing_else_of_rlvr():
    offenders = {
        str(p.relative_to(SRC)): sorted(
            n for n in _imports(p) if n.startswith("rlvr.") and not n.startswith("rlvr.algo")
        )
        for p in (SRC / "algo").glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_files_stay_small():
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    too_long = {f: n for f, n in sizes.items() if n > (600 if f in LONG_FILES else 400)}
    assert too_long == {}


def test_readme_reward_table_is_the_generated_one():
    assert reward_table() in (REPO / "README.md").read_text(), "regenerate: python -m rlvr.domains.registry"
