"""Weights shipped with cellcascade (safetensors + JSON), trained on the embedded sample; see README.md here."""

from __future__ import annotations

from pathlib import Path

WEIGHTS = Path(__file__).parent


def default_mask_model() -> Path:
    """Folder of the shipped mask model (the mask stage of the shipped cascade)."""
    return default_cascade() / "masks"


def default_cascade() -> Path:
    """Folder of the shipped 2D cascade (mask, texture and imaging models trained on the embedded sample)."""
    return WEIGHTS / "sample-cascade"
