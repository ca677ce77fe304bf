"""The built-in domains by name, and tasks named in YAML (``class_path`` / ``init_args``) for ``rlvr score``.

A new domain is one folder under ``domains/`` (``task.py``, ``generator.py``, ``verify.py``) plus one line in
:data:`DOMAINS`. Training never needs this table: YAML names a task class by ``class_path``; the scorer and
the generated reward table use it to find a domain's default task from the ``task`` field of a line.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlvr.domains.base import DataError, check_task, max_reward

#: where the modules of rlvr 0.1's flat layout went
_MOVED = {"rlvr.tasks.": "rlvr.domains.<domain> (e.g. rlvr.domains.math.MathTask)",
          "rlvr.verifiers.": "rlvr.domains.<domain>.verify and rlvr.sandbox", "rlvr.losses": "rlvr.algo.losses"}  # fmt: skip
#: domain name -> "module:Class" of its task (imported on first use: math does not pay for the sandbox)
DOMAINS: dict[str, str] = {
    "math": "rlvr.domains.math.task:MathTask",
    "sql": "rlvr.domains.sql.task:SqlTask",
    "code": "rlvr.domains.code.task:CodeTask",
}


def import_object(spec: str) -> Any:
    """``"pkg.module:Name"`` or ``"pkg.module.Name"`` -> the object; one-line error when it is not there."""
    module, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as e:  # ImportError, AttributeError, and whatever a plugin module raises on import
        moved = next((new for old, new in _MOVED.items() if spec.startswith(old)), None)
        if moved:
            raise DataError(
                f"cannot import {spec!r}: that module moved to {moved} (see README, Layout)"
            ) from None
        raise DataError(
            f"cannot import {spec!r} ({e}); check the class_path and that its package is installed"
        ) from None


@functools.cache
def default_task(name: str) -> Any:
    """The built-in task ``name`` with default settings (cheap: nothing is loaded until ``examples``)."""
    if name not in DOMAINS:
        raise DataError(f"unknown task {name!r}: built-in tasks are {sorted(DOMAINS)}")
    return import_object(DOMAINS[name])()


def build_task(entry: Mapping[str, Any]) -> Any:
    """A task from ``{"class_path": ..., "init_args": {...}}`` (the YAML form of ``data.tasks``), checked."""
    if not isinstance(entry, Mapping) or "class_path" not in entry:
        raise DataError(f"a task entry needs 'class_path' (and optional 'init_args'), got {entry!r}")
    cls = import_object(str(entry["class_path"]))
    try:
        task = cls(**dict(entry.get("init_args") or {}))
    except Exception as e:  # a bad init_arg or whatever the task's constructor raises: one line, named
        raise DataError(
            f"{entry['class_path']}({dict(entry.get('init_args') or {})}) failed: {type(e).__name__}: {e}"
        ) from None
    check_task(task)
    return task


def load_tasks_file(path: str | Path) -> dict[str, Any]:
    """Tasks from a YAML file: a training config with ``data.tasks`` or ``data.init_args.tasks`` (like
    ``configs/task/*.yaml``), or a bare list of ``{class_path, init_args}``."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DataError(f"tasks file not found: {p}")
    try:
        doc = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    entries = doc
    if isinstance(doc, dict):
        data = doc.get("data") or {}
        entries = data.get("tasks", (data.get("init_args") or {}).get("tasks"))
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{p}: expected a list of tasks under data.tasks (or a bare YAML list)")
    tasks = [build_task(e) for e in entries]
    return {t.name: t for t in tasks}


def reward_table(tasks: Mapping[str, Any] | None = None) -> str:
    """A markdown table of every task's reward components and weights (the built-in ones by default)."""
    tasks = tasks if tasks is not None else {n: default_task(n) for n in DOMAINS}
    lines = ["| task | component | weight |", "|---|---|---|"]
    for name in sorted(tasks):
        t = tasks[name]
        for c in t.components:
            mark = " (accuracy)" if c == t.accuracy_component else ""
            lines.append(f"| {name} | `{c}`{mark} | {float(t.weights.get(c, 0.0)):g} |")
        lines.append(f"| {name} | **max total** | {max_reward(t.weights):g} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m rlvr.domains.registry: the README's reward table
    print(reward_table())
