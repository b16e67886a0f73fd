"""Which torch device a run uses: the one ``--device`` argument of every command."""

from __future__ import annotations

from cellcascade.errors import CellcascadeError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """The torch device name for `device`: "auto" takes a CUDA GPU if there is one, else the CPU.

    >>> resolve_device("cpu")
    'cpu'

    Raises CellcascadeError for an unknown name, or for "cuda" on a machine without a CUDA GPU.
    """
    import torch

    if device not in DEVICES:
        raise CellcascadeError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise CellcascadeError("device 'cuda' was asked for but no CUDA GPU is available")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
