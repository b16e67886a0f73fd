"""Checks on a model folder before loading it: only JSON and safetensors, every listed part present."""

from __future__ import annotations

import json
from pathlib import Path

from cellcascade.errors import CellcascadeError

# Files that can execute code when loaded (pickles): never accepted in a model folder.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".npy", ".npz"}


def check_pipeline_folder(path: str | Path, class_name: str) -> Path:
    """Validate a diffusers-style pipeline folder written by cellcascade; return it as a Path.

    Raises CellcascadeError (one line) if the folder is missing, holds a pickle or a file of unknown kind, was
    written for another class, or lacks a listed component or its safetensors weights.
    """
    path = Path(path)
    if not path.is_dir():
        raise CellcascadeError(f"{path}: model folder not found")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise CellcascadeError(f"{path}: not a cellcascade model folder (model_index.json missing)")
    for file in path.rglob("*"):
        if file.is_file() and (file.suffix.lower() in PICKLE_SUFFIXES or file.suffix.lower() not in {".json", ".safetensors", ".md", ".txt", ".png"}):
            raise CellcascadeError(f"{file}: unexpected file in a model folder (only JSON and safetensors are loaded; pickles never)")
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as exc:
        raise CellcascadeError(f"{index_file}: invalid JSON ({exc})") from None
    if index.get("_class_name") != class_name:
        raise CellcascadeError(f"{path}: holds a {index.get('_class_name')!r}, not a {class_name!r}")
    for name, spec in index.items():
        if isinstance(spec, list) and len(spec) == 2:
            part = path / name
            if not (part / "config.json").is_file() and not (part / "scheduler_config.json").is_file():
                raise CellcascadeError(f"{part}: missing (listed in model_index.json)")
            if (part / "config.json").is_file() and not list(part.glob("*.safetensors")):
                raise CellcascadeError(f"{part}: weights missing (expected a .safetensors file)")
    return path
