"""Reading records from local files or the Hugging Face hub, with one-line errors.

A *source* string is either a local path (a ``.jsonl``, ``.jsonl.gz``, ``.json`` or ``.json.gz`` file, or a
directory holding ``<split>.jsonl[.gz]``) or a hub dataset id (``owner/name``) read through ``datasets``.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from rlvr.tasks.base import DataError

_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


def _open_text(path: Path):
    return (
        gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")
    )


def read_json_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSON-lines file or of a JSON file holding a list (either optionally gzipped)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {p} (check the path or pass a hub id)")
    with _open_text(p) as f:
        if p.name.endswith((".json", ".json.gz")):
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
            if isinstance(data, dict):  # {"data": [...]} or {id: record}
                data = data.get("data", list(data.values()))
            if not isinstance(data, list):
                raise DataError(f"{p}: expected a JSON list of records")
            return data
        records = []
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{i}: malformed JSON line ({e.msg}); fix or remove that line") from None
        return records


def looks_local(source: str) -> bool:
    """A source is local when it exists on disk or is spelled like a path rather than ``owner/name``."""
    return os.path.exists(source) or source.startswith((".", "/", "~")) or source.endswith(_SUFFIXES)


def load_records(source: str, split: str, config: str | None = None) -> list[dict[str, Any]]:
    """Records of ``split`` from a local file/directory or a hub dataset id.

    Args:
        source: local file, local directory with ``<split>.jsonl[.gz]`` / ``<split>.json[.gz]``, or hub id.
        split: split name ("train", "test", ...); ignored for a single local file.
        config: hub dataset configuration name (e.g. ``"main"`` for ``openai/gsm8k``).
    """
    if looks_local(source):
        p = Path(source).expanduser()
        if p.is_dir():
            for suffix in _SUFFIXES:
                if (p / f"{split}{suffix}").is_file():
                    return read_json_records(p / f"{split}{suffix}")
            raise DataError(f"no {split}.jsonl[.gz] or {split}.json[.gz] in {p}; point to the file itself")
        return read_json_records(p)
    return load_hub_records(source, split, config)


def load_hub_records(dataset_id: str, split: str, config: str | None = None) -> list[dict[str, Any]]:
    """Records of a hub dataset split; offline or unknown ids fail with one line."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a base dependency
        raise DataError("the `datasets` package is needed for hub ids: pip install datasets") from None
    try:
        ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"cannot load hub dataset {dataset_id!r} split {split!r} ({first[:160]}); "
            "offline? pass a local path instead"
        ) from None
    return [dict(r) for r in ds]


def require_fields(record: dict[str, Any], fields: tuple[str, ...], where: str) -> None:
    """Raise a one-line :class:`DataError` when ``record`` lacks any of ``fields``."""
    missing = [f for f in fields if f not in record]
    if missing:
        raise DataError(f"{where}: malformed record, missing field(s) {missing}; has {sorted(record)[:8]}")
