"""Annotated data: readers, the embedded sample, single-cell crops."""

from cellcascade.data.annotated import AnnotatedImage, require_ndim, validate_pair
from cellcascade.data.crops import CellCrop, auto_scale, dihedral, extract_crops
from cellcascade.data.readers import (
    load_sample,
    load_sample_3d,
    read_ctc,
    read_dataset,
    read_image_file,
    read_labels_file,
    read_pairs,
)

__all__ = [
    "AnnotatedImage",
    "CellCrop",
    "auto_scale",
    "dihedral",
    "extract_crops",
    "load_sample",
    "load_sample_3d",
    "read_ctc",
    "read_dataset",
    "read_image_file",
    "read_labels_file",
    "read_pairs",
    "require_ndim",
    "validate_pair",
]
