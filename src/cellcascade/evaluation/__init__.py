"""Evaluation: segmentation metrics (SEG, AP), realism (KID/FID), shape statistics, reports, the benchmark."""

from cellcascade.evaluation.realism import (
    InceptionFeatures,
    RealismScores,
    frechet_distance,
    inception_features,
    normalize_intensities,
    realism_scores,
    scores_from_features,
    volume_slices,
)
from cellcascade.evaluation.report import evaluate_folders, markdown_report
from cellcascade.evaluation.segmentation_metrics import (
    Overlaps,
    average_precision,
    detection_scores,
    label_overlaps,
    seg_per_object,
    seg_score,
)
from cellcascade.evaluation.shape_stats import SHAPE_STATISTICS, shape_distance, shape_statistics, summarize

__all__ = [
    "InceptionFeatures",
    "Overlaps",
    "RealismScores",
    "SHAPE_STATISTICS",
    "average_precision",
    "detection_scores",
    "evaluate_folders",
    "frechet_distance",
    "inception_features",
    "label_overlaps",
    "markdown_report",
    "normalize_intensities",
    "realism_scores",
    "scores_from_features",
    "seg_per_object",
    "seg_score",
    "shape_distance",
    "shape_statistics",
    "summarize",
    "volume_slices",
]
