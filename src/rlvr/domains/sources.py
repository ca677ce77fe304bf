"""Reading records from local files or the Hugging Face hub, with one-line errors.

A *source* string is either a local path (a ``.jsonl``, ``.jsonl.gz``, ``.json`` or ``.json.gz`` file, or a
directory holding ``<split>.jsonl[.gz]``) or a hub dataset id (``owner/name``) read through ``datasets``.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rlvr.domains.base import DataError

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


def cache_root() -> Path:
    """Where rlvr keeps what it builds (generated databases, the tiny model): ``$RLVR_CACHE``, else
    ``$XDG_CACHE_HOME/rlvr``, else ``~/.cache/rlvr``. ``make clean-cache`` removes it."""
    if os.environ.get("RLVR_CACHE"):
        return Path(os.environ["RLVR_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rlvr"


HUB_PROBE_S = 2.0


@functools.cache
def hub_reachable() -> bool:
    """Whether the hub's host answers a TCP connect within :data:`HUB_PROBE_S` (probed once per process;
    name resolution is bounded too, by running the probe in a thread)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    if any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
    ):
        return True  # behind a proxy a direct connect says nothing: let the HF libraries try (and time out)
    try:
        from huggingface_hub import constants

        endpoint = urlparse(constants.ENDPOINT)
    except ImportError:  # pragma: no cover - transformers and datasets bring huggingface_hub
        return False
    host, port = endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=HUB_PROBE_S).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(HUB_PROBE_S + 0.5)
    return bool(ok)


def go_offline_if_unreachable() -> bool:
    """Before a hub id is used: with no network, switch the HF libraries to offline mode so the load fails at
    once (one line) instead of after minutes of retries. Returns whether the hub is reachable."""
    if hub_reachable():
        return True
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:  # the libraries read these at import; set the live constants too where they are already imported
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
        datasets.config.HF_DATASETS_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass
    return False


def load_hub_records(dataset_id: str, split: str, config: str | None = None) -> list[dict[str, Any]]:
    """Records of a hub dataset split; offline or unknown ids fail with one line."""
    go_offline_if_unreachable()
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
