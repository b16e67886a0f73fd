"""3D shape prior (deformed ellipsoids following 2D masks), the two lifting baselines, and 3D measurements."""

import math

import numpy as np
import pytest

from cellcascade.errors import CellcascadeError
from cellcascade.shapes3d import (
    axial_ratio,
    draw_shape,
    ellipsoid_of_revolution,
    equator_from_mask,
    extrude,
    fit_ellipse,
    median_height,
    sample_shapes,
    volume,
    xy_diameter,
    z_extent,
)
from cellcascade.shapes3d.prior import real_spherical_harmonics


def ellipse_mask(a: float, b: float, degrees: float = 0.0, size: int = 61) -> np.ndarray:
    """Bool (size, size) ellipse, semi-axes a along `degrees` (from +x towards +y) and b across, in pixels."""
    yy, xx = np.mgrid[:size, :size] - size // 2
    t = np.deg2rad(degrees)
    along, across = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    return (along / a) ** 2 + (across / b) ** 2 <= 1


def blob(seed: int) -> np.ndarray:
    """An irregular, star-shaped 2D cell (Y, X) bool."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:51, :51] - 25
    angle = np.arctan2(yy, xx)
    radius = 12 + 2 * np.sin(2 * angle + rng.uniform(0, 6)) + 1.5 * np.cos(3 * angle + rng.uniform(0, 6))
    return np.hypot(yy, xx) <= radius * rng.uniform(0.8, 1.1)


MASKS = [ellipse_mask(14, 8, 30), ellipse_mask(10, 10), blob(0), blob(1)]
SPACING = (1.0, 0.5, 0.5)  # µm; the 2D masks have the output's xy pixel size


# ---------------------------------------------------------------- prior


def test_real_spherical_harmonics_are_orthonormal():
    theta = (np.arange(200) + 0.5) * np.pi / 200
    phi = np.arange(400) * 2 * np.pi / 400
    t, p = np.meshgrid(theta, phi, indexing="ij")
    basis = real_spherical_harmonics(4, t, p)
    assert basis.shape == (21, 200, 400)  # degrees 2..4: 5 + 7 + 9
    weights = np.sin(t) * (np.pi / 200) * (2 * np.pi / 400)
    gram = np.einsum("kij,lij,ij->kl", basis, basis, weights)
    np.testing.assert_allclose(gram, np.eye(21), atol=2e-3)


def test_equator_of_a_disc_is_its_radius():
    disc = ellipse_mask(10, 10)
    for profile in ("mask", "ellipse"):
        radius = equator_from_mask(disc, (0.5, 0.5), profile)
        assert radius.shape == (180,)
        np.testing.assert_allclose(radius, 5.0, atol=0.3)  # 10 px of 0.5 µm


def test_same_seed_same_shapes_and_different_seed_differs():
    a = sample_shapes(MASKS, (0.6, 1.2), SPACING, rng=3)
    b = sample_shapes(MASKS, (0.6, 1.2), SPACING, rng=np.random.default_rng(3))
    c = sample_shapes(MASKS, (0.6, 1.2), SPACING, rng=4)
    assert len(a) == len(MASKS)
    for x, y in zip(a, b):
        assert x.dtype == bool and x.ndim == 3
        assert np.array_equal(x, y)
    assert any(x.shape != z.shape or not np.array_equal(x, z) for x, z in zip(a, c))


@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.0])
def test_axial_ratio_is_respected_without_deformation(ratio):
    for mask in MASKS:
        [cell] = sample_shapes([mask], ratio, SPACING, rng=0, deformation=0.0)
        target = ratio * xy_diameter(cell, SPACING)
        assert abs(z_extent(cell, SPACING) - target) <= SPACING[0] + 0.03 * target  # one slice of voxelisation


def test_axial_ratio_is_respected_on_average_with_deformation():
    cells = sample_shapes(MASKS * 4, 0.7, SPACING, rng=1, deformation=0.1)
    ratios = [axial_ratio(cell, SPACING) for cell in cells]
    assert abs(np.mean(ratios) / 0.7 - 1) < 0.1
    assert np.std(ratios) > 0.01  # the deformation changes shapes
    ranged = [draw_shape(MASKS[0], (0.5, 0.9), rng=s).half_height for s in range(20)]
    equivalent_radius = math.sqrt(MASKS[0].sum() / math.pi)
    assert 0.5 <= min(ranged) / equivalent_radius and max(ranged) / equivalent_radius <= 0.9


def test_xy_statistics_follow_the_mask():
    for profile in ("mask", "ellipse"):
        for mask in MASKS:
            [cell] = sample_shapes([mask], 1.0, SPACING, rng=0, deformation=0.0, profile=profile)
            projection = cell.any(axis=0)
            middle = cell[cell.shape[0] // 2]
            area = mask.sum()
            assert abs(projection.sum() / area - 1) < 0.05 and abs(middle.sum() / area - 1) < 0.05
            wanted, got = fit_ellipse(mask), fit_ellipse(projection)
            assert got.semi_major == pytest.approx(wanted.semi_major, rel=0.05)
            assert got.semi_minor == pytest.approx(wanted.semi_minor, rel=0.05)
            if wanted.semi_major > 1.2 * wanted.semi_minor:  # orientation is defined
                assert abs(np.angle(np.exp(2j * (got.angle - wanted.angle)))) / 2 < np.deg2rad(3)
    # With deformation, areas match on average.
    cells = sample_shapes(MASKS * 3, 1.0, SPACING, rng=2)
    ratios = [cell.any(axis=0).sum() / mask.sum() for cell, mask in zip(cells, MASKS * 3)]
    assert abs(np.mean(ratios) - 1) < 0.12


def test_physical_shape_is_kept_across_spacings():
    shape = draw_shape(MASKS[2], 0.8, rng=5, pixel_size=(0.5, 0.5))
    fine, coarse = shape.voxelize((0.5, 0.5, 0.5)), shape.voxelize((2.0, 0.5, 0.5))
    assert coarse.shape[0] < fine.shape[0] / 3
    assert volume(coarse, (2.0, 0.5, 0.5)) == pytest.approx(volume(fine, (0.5, 0.5, 0.5)), rel=0.05)
    # 2D masks at another pixel size: twice the pixel size, twice the physical size.
    [small] = sample_shapes([MASKS[1]], 1.0, SPACING, rng=0, deformation=0.0)
    [large] = sample_shapes([MASKS[1]], 1.0, SPACING, rng=0, deformation=0.0, pixel_size=(1.0, 1.0))
    assert volume(large, SPACING) == pytest.approx(8 * volume(small, SPACING), rel=0.08)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sample_shapes(MASKS, 0.0, SPACING), "axial_ratio"),
        (lambda: sample_shapes(MASKS, (1.0, 0.5), SPACING), "axial_ratio"),
        (lambda: sample_shapes(MASKS, "flat", SPACING), "axial_ratio"),
        (lambda: sample_shapes(MASKS, 1.0, (1.0, 0.5)), "spacing"),
        (lambda: sample_shapes(MASKS, 1.0, (1.0, -0.5, 0.5)), "spacing"),
        (lambda: sample_shapes([np.zeros((5, 5), bool)], 1.0, SPACING), "empty"),
        (lambda: sample_shapes([np.ones((3, 5, 5), bool)], 1.0, SPACING), "2D"),
        (lambda: sample_shapes([np.ones((5, 5), np.uint8)], 1.0, SPACING), "bool"),
        (lambda: sample_shapes(MASKS[0], 1.0, SPACING), "sequence"),
        (lambda: sample_shapes(MASKS, 1.0, SPACING, profile="circle"), "profile"),
        (lambda: sample_shapes(MASKS, 1.0, SPACING, deformation=-0.1), "deformation"),
        (lambda: sample_shapes(MASKS, 1.0, SPACING, max_degree=1), "max_degree"),
        (lambda: sample_shapes(MASKS, 1.0, SPACING, rng="seed"), "rng"),
    ],
)
def test_prior_bad_input_raises_one_line_error(call, match):
    with pytest.raises(CellcascadeError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- baselines


def test_extrusion_has_the_height_and_volume_asked_for():
    mask = MASKS[2]
    for height, spacing, slices in [(7.0, (2.0, 0.5, 0.5), 4), (6.0, (1.0, 0.5, 0.5), 6), (0.2, (1.0, 1.0, 1.0), 1)]:
        lifted = extrude(mask, height, spacing)
        assert lifted.shape == (slices,) + mask.shape and lifted.dtype == bool
        assert all(np.array_equal(plane, mask) for plane in lifted)
        assert volume(lifted, spacing) == pytest.approx(mask.sum() * spacing[1] * spacing[2] * slices * spacing[0])
    assert median_height([extrude(mask, h, SPACING) for h in (3.0, 5.0, 9.0)], SPACING) == 5.0


@pytest.mark.parametrize("spacing", [(0.5, 0.5, 0.5), (1.5, 0.5, 0.5)])
def test_ellipsoid_of_revolution_volume_matches_the_formula(spacing):
    mask = ellipse_mask(24, 14, degrees=60, size=71)
    fit = fit_ellipse(mask, spacing[1:])
    a, b = fit.semi_major, fit.semi_minor
    assert (a, b) == pytest.approx((12.0, 7.0), rel=0.02)  # 24 and 14 px of 0.5 µm
    body = ellipsoid_of_revolution(mask, spacing)
    assert volume(body, spacing) == pytest.approx(4 / 3 * math.pi * a * b * b, rel=0.03)
    assert z_extent(body, spacing) == pytest.approx(2 * b, abs=spacing[0] + 1e-9)
    assert abs(np.angle(np.exp(2j * (fit_ellipse(body.any(axis=0)).angle - np.deg2rad(60))))) / 2 < np.deg2rad(2)
    flat = ellipsoid_of_revolution(mask, spacing, z_semi_axis=5.0)
    assert volume(flat, spacing) == pytest.approx(4 / 3 * math.pi * a * b * 5.0, rel=0.03)
    assert z_extent(flat, spacing) == pytest.approx(10.0, abs=spacing[0] + 1e-9)


def test_baselines_bad_input_raise_one_line_errors():
    for call, match in [
        (lambda: extrude(MASKS[0], 0.0, SPACING), "height"),
        (lambda: extrude(MASKS[0], 2.0, (1.0, 1.0)), "spacing"),
        (lambda: ellipsoid_of_revolution(MASKS[0], SPACING, z_semi_axis=-1.0), "z_semi_axis"),
        (lambda: ellipsoid_of_revolution(np.zeros((4, 4), bool), SPACING), "empty"),
        (lambda: median_height([], SPACING), "at least one"),
    ]:
        with pytest.raises(CellcascadeError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_centred_iou_ignores_position_and_scores_shape():
    from cellcascade.shapes3d import centred_iou

    cube = np.ones((2, 3, 4), bool)
    assert centred_iou(cube, np.pad(cube, ((5, 0), (1, 7), (0, 2)))) == 1.0  # same shape elsewhere
    assert centred_iou(cube, np.ones((2, 3, 8), bool)) == pytest.approx(0.5)  # half of it, centred
    zz, yy, xx = np.mgrid[-8:9, -8:9, -8:9]
    small, large = zz**2 + yy**2 + xx**2 <= 25, zz**2 + yy**2 + xx**2 <= 64
    assert centred_iou(small, np.pad(large, ((3, 0), (0, 0), (0, 2)))) == pytest.approx(small.sum() / large.sum())
    with pytest.raises(CellcascadeError, match="empty"):
        centred_iou(cube, np.zeros((2, 2, 2), bool))
