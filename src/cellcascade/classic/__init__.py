"""The classic (non-learned) baseline simulator: perturbed ellipses, smoothed-noise texture, fitted imaging."""

from cellcascade.classic.generator import ClassicGenerator, perturbed_ellipse

__all__ = ["ClassicGenerator", "perturbed_ellipse"]
