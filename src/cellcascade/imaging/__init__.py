"""Imaging (stage 6): background, Gaussian PSF blur and Poisson-Gaussian noise fitted to real data."""

from cellcascade.imaging.background import background_field, background_mask, foreground_mask, foreground_threshold
from cellcascade.imaging.model import ImagingModel
from cellcascade.imaging.noise import add_noise, fit_noise
from cellcascade.imaging.psf import fit_psf_sigma

__all__ = [
    "ImagingModel",
    "add_noise",
    "background_field",
    "background_mask",
    "fit_noise",
    "fit_psf_sigma",
    "foreground_mask",
    "foreground_threshold",
]
