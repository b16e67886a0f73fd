"""manifest.json: what was generated, by which version, configuration and seeds, with the per-cell tables."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np


def package_version() -> str:
    try:
        return version("cellcascade")
    except PackageNotFoundError:
        return "unknown"


def _plain(value):
    """JSON-friendly copies of numpy scalars, arrays, tuples and Paths."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_manifest(path: str | Path, *, command: str, config: dict, samples: list[dict]) -> None:
    """Write manifest.json: {version, command, config, samples: [{file, seed, cells: [...]}, ...]}."""
    data = {"cellcascade_version": package_version(), "command": command, "config": config, "samples": samples}
    Path(path).write_text(json.dumps(_plain(data), indent=1))
