"""KID separates real from real less than real from the classic simulator (issue: evaluation toolkit)."""

import numpy as np
import pytest

from cellcascade.classic import ClassicGenerator
from cellcascade.data import AnnotatedImage, load_sample
from cellcascade.evaluation.realism import inception_features, normalize_intensities, scores_from_features


def tiles(image: np.ndarray, size: int = 96, step: int = 48) -> list[np.ndarray]:
    """Overlapping size×size float32 windows of a 2D image, row-major."""
    image = image.astype(np.float32)
    return [image[r : r + size, c : c + size] for r in range(0, image.shape[0] - size + 1, step)
            for c in range(0, image.shape[1] - size + 1, step)]


@pytest.mark.slow  # ~100 Inception passes on the CPU (about 20-40 s)
def test_kid_real_halves_clearly_below_real_vs_noise_and_classic():
    (item,) = load_sample()
    real_a, real_b = tiles(item.image[:, :256]), tiles(item.image[:, 256:])
    # The simulator learns only from the left half, as a user's generator would learn only from training data.
    generator = ClassicGenerator.fit([AnnotatedImage(item.image[:, :256], item.labels[:, :256], "left", dense=True)])
    classic = [t for seed in (0, 1) for t in tiles(generator.generate((256, 256), rng=seed)[0])]
    noise = list(np.random.default_rng(0).uniform(0, 1, (len(real_b), 96, 96)).astype(np.float32))
    features = {name: inception_features(normalize_intensities(images), batch_size=8)
                for name, images in {"a": real_a, "b": real_b, "classic": classic, "noise": noise}.items()}

    def kid(other: str):
        return scores_from_features(features["a"], features[other], subset_size=16)

    same, versus_classic, versus_noise = kid("b"), kid("classic"), kid("noise")
    assert same.kid_mean + 2 * same.kid_std < versus_classic.kid_mean
    assert versus_classic.kid_mean < versus_noise.kid_mean
    assert same.fid < versus_classic.fid < versus_noise.fid
