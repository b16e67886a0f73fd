"""Weights shipped with cellcascade (safetensors + JSON), trained on the embedded sample; see README.md here."""

from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).parent


def default_mask_model() -> Path:
    """Folder of the shipped mask model (trained on the embedded stardist nuclei image)."""
    return WEIGHTS / "sample-masks"
