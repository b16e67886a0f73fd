"""Implicit-surface reconstruction: views and silhouettes, sampler, renderer, fields, fitting and voxelising."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellcascade.errors import CellcascadeError
from cellcascade.reconstruction import (
    GridSDF,
    MLPSDF,
    Views,
    default_config,
    fit_sdf,
    mask_frame,
    reconstruct,
    render_silhouettes,
    ring_views,
    visual_hull,
    voxelize,
)
from cellcascade.reconstruction.hull import grid_points, signed_distance
from cellcascade.reconstruction.renderer import neus_alpha, render_opacity, render_weights
from cellcascade.reconstruction.sampler import cube_intersection, importance_samples, pixel_rays

torch.set_num_threads(1)


def ellipsoid(shape, semi_axes, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """bool (Z, Y, X): an ellipsoid with physical semi-axes (z, y, x), centred in the array."""
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g / a) ** 2 for g, a in zip(grids, semi_axes)) <= 1


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def fast_config(**changes):
    from dataclasses import replace

    settings = dict(resolution=32, steps=20, rays_per_step=1024, samples_per_ray=48)
    return replace(default_config("fast"), **{**settings, **changes})


# --- views and silhouettes -------------------------------------------------------------------------------------


def test_ring_views_put_the_top_view_first_and_span_half_a_turn():
    views = ring_views(4)
    assert len(views) == 5
    assert views.elevation == (90.0, 0.0, 0.0, 0.0, 0.0)
    assert views.azimuth == (0.0, 0.0, 45.0, 90.0, 135.0)
    right, down, d = views.basis()
    np.testing.assert_allclose(d[0], [1, 0, 0], atol=1e-12)  # top view looks along z
    for a, b in [(right, down), (right, d), (down, d)]:
        np.testing.assert_allclose((a * b).sum(axis=1), 0, atol=1e-12)
    assert Views(**views.config) == views


def test_top_view_is_the_z_projection_and_side_view_has_z_up():
    # an L-shaped, off-centre blob makes any flip or transpose visible; one pixel = one voxel
    mask = np.zeros((16, 16, 16), bool)
    mask[3:9, 2:12, 4:7] = True
    mask[3:5, 9:12, 7:13] = True
    centre = (7.5, 7.5, 7.5)
    sil = render_silhouettes(mask, ring_views(2), size=16, half_width=8.0, centre=centre)
    assert sil.shape == (3, 16, 16) and sil.dtype == np.float32
    np.testing.assert_array_equal(sil[0], mask.any(axis=0))  # rows = y, columns = x
    np.testing.assert_array_equal(sil[1], mask.any(axis=2)[::-1])  # azimuth 0 looks along x: rows = -z, cols = y


def test_silhouettes_are_physical_under_anisotropy():
    spacing = (2.0, 1.0, 1.0)
    fine = ellipsoid((40, 40, 40), (8, 12, 6))
    coarse = ellipsoid((20, 40, 40), (8, 12, 6), spacing)
    views = ring_views(4)
    a = render_silhouettes(fine, views, size=48, half_width=16.0)
    b = render_silhouettes(coarse, views, spacing, size=48, half_width=16.0)
    for view in range(len(views)):
        assert iou(a[view] > 0, b[view] > 0) > 0.9


def test_render_is_batched_in_one_common_frame():
    masks = np.stack([ellipsoid((24, 24, 24), (6, 9, 9)), ellipsoid((24, 24, 24), (9, 6, 6))])
    views = ring_views(3)
    batch = render_silhouettes(masks, views, size=32)
    hw = max(mask_frame(m)[1] for m in masks)
    for mask, sil in zip(masks, batch):
        np.testing.assert_array_equal(sil, render_silhouettes(mask, views, size=32, half_width=hw))


def test_mask_frame_holds_the_cell():
    mask = ellipsoid((20, 30, 30), (8, 12, 6), (2.0, 1.0, 1.0))
    centre, half_width = mask_frame(mask, (2.0, 1.0, 1.0), margin=1.0)
    np.testing.assert_allclose(centre, [9.5, 14.5, 14.5])
    assert 12 < half_width < 14.5  # the longest semi-axis is 12, plus half a voxel diagonal


# --- sampler and renderer ----------------------------------------------------------------------------------------


def test_cube_intersection_known_rays():
    origins = torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.0, 0.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    near, far = cube_intersection(origins, directions)
    np.testing.assert_allclose(near.numpy(), [-1.0, 0.0, -1.25], atol=1e-6)
    np.testing.assert_allclose(far.numpy(), [1.0, 0.0, 1.25], atol=1e-6)


def test_pixel_rays_cover_every_pixel_through_the_cube():
    rays = pixel_rays(ring_views(2), 8)
    assert len(rays) == 3 * 64
    assert torch.all(rays.far > rays.near)
    np.testing.assert_allclose(rays.directions.norm(dim=-1).numpy(), 1, atol=1e-6)


def test_importance_samples_follow_the_weights():
    t = torch.linspace(0, 1, 11).expand(2, 11)
    weights = torch.zeros(2, 10)
    weights[:, 3] = 1.0  # all weight in [0.3, 0.4]
    new = importance_samples(t, weights, 16, torch.Generator().manual_seed(0))
    assert new.shape == (2, 16)
    assert torch.all((new >= 0.3 - 1e-6) & (new <= 0.4 + 1e-6))


def test_neus_opacity_known_answers():
    t = torch.linspace(-1, 1, 65)
    crossing = t.abs() - 0.5  # enters at -0.5, leaves at 0.5
    outside = 0.2 + t.abs()
    assert float(render_opacity(crossing, 200.0)) > 0.99
    assert float(render_opacity(outside, 200.0)) < 0.01
    alpha = neus_alpha(torch.stack([crossing, outside]), 200.0)
    assert alpha.shape == (2, 64) and torch.all((alpha >= 0) & (alpha <= 1))
    # the weights peak where the ray enters the surface, and sum to the opacity
    weights = render_weights(alpha)
    assert abs(float(t[int(weights[0].argmax())]) + 0.5) < 0.05
    np.testing.assert_allclose(weights.sum(-1).numpy(), render_opacity(torch.stack([crossing, outside]), 200.0),
                               atol=1e-5)


# --- fields ------------------------------------------------------------------------------------------------------


def test_grid_field_interpolates_and_eikonal_is_zero_for_a_true_distance():
    nodes = grid_points(33)
    field = GridSDF((nodes.norm(dim=-1) - 0.5)[None], levels=2)
    values = field(torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.9]]]))
    np.testing.assert_allclose(values.detach().numpy(), [[-0.5, 0.0, 0.4]], atol=0.02)
    assert float(field.eikonal_loss().detach()) < 0.01
    assert float(GridSDF(2 * (nodes.norm(dim=-1) - 0.5)[None]).eikonal_loss().detach()) > 0.9  # |grad| = 2


def test_mlp_field_starts_as_a_sphere():
    field = MLPSDF(2, hidden=32, layers=3, radius=0.5, generator=torch.Generator().manual_seed(0))
    directions = torch.randn(200, 3, generator=torch.Generator().manual_seed(1))
    directions /= directions.norm(dim=1, keepdim=True)
    with torch.no_grad():
        mean = [field((r * directions).expand(2, -1, -1)).mean(dim=1) for r in (0.0, 0.25, 0.5, 0.9)]
    assert torch.all((mean[0] > -0.5) & (mean[0] < -0.25))  # inside at the centre
    assert torch.all((mean[1] < mean[2]) & (mean[2] < mean[3]) & (mean[3] > 0))  # growing outwards, outside at 0.9
    assert field.eikonal_loss(directions.expand(2, -1, -1)).shape == (2,)


def test_visual_hull_contains_the_shape_and_its_distance_is_signed():
    mask = ellipsoid((32, 32, 32), (8, 12, 6))
    views = ring_views(6)
    sil = render_silhouettes(mask, views, size=32, half_width=16.0, centre=(15.5, 15.5, 15.5))
    inside = visual_hull(sil[None], views, resolution=33)
    truth = ellipsoid((33, 33, 33), (7 / 16, 11 / 16, 5 / 16), (2 / 32,) * 3)  # one voxel less on each axis
    assert inside.shape == (1, 33, 33, 33)
    assert not (truth & ~inside[0]).any()  # the hull holds the shape
    assert inside.sum() < 1.3 * ellipsoid((33, 33, 33), (8 / 16, 12 / 16, 6 / 16), (2 / 32,) * 3).sum()
    sdf = signed_distance(inside)
    assert np.all(sdf[inside] < 0) and np.all(sdf[~inside] > 0)


# --- fitting and voxelising --------------------------------------------------------------------------------------


def test_fast_mode_reconstructs_a_sphere():
    sphere = ellipsoid((24, 24, 24), (8, 8, 8))
    views = ring_views(6)
    sil = render_silhouettes(sphere, views, size=32, half_width=10.0)
    fit = fit_sdf(sil, views, half_width=10.0, config=fast_config(), generator=torch.Generator().manual_seed(0))
    assert fit.losses.shape == (20,) and np.all(np.isfinite(fit.losses))
    assert iou(voxelize(fit.field, sphere.shape), sphere) > 0.9


def test_fast_mode_reconstructs_an_anisotropic_ellipsoid_batched():
    spacing = (2.0, 1.0, 1.0)
    cells = np.stack([ellipsoid((16, 40, 40), (7, 14, 9), spacing), ellipsoid((16, 40, 40), (12, 8, 10), spacing)])
    views = ring_views(6)
    half_width = max(mask_frame(m, spacing)[1] for m in cells)
    sil = render_silhouettes(cells, views, spacing, size=32, half_width=half_width)
    fit = fit_sdf(sil, views, half_width=half_width, config=fast_config())
    volumes = voxelize(fit.field, cells.shape[1:], spacing)
    assert volumes.shape == cells.shape and volumes.dtype == bool
    for volume, cell in zip(volumes, cells):
        assert iou(volume, cell) > 0.9


def test_batch_with_one_frame_per_cell():
    spacing = (2.0, 1.0, 1.0)
    cells = [ellipsoid((16, 40, 40), (6, 8, 7), spacing), np.roll(ellipsoid((16, 40, 40), (12, 16, 10), spacing), 3, 2)]
    views = ring_views(6)
    frames = [mask_frame(cell, spacing) for cell in cells]
    sil = np.stack([render_silhouettes(cell, views, spacing, size=32, half_width=hw, centre=c)
                    for cell, (c, hw) in zip(cells, frames)])
    fit = fit_sdf(sil, views, half_width=tuple(hw for _, hw in frames), config=fast_config())
    volumes = voxelize(fit.field, (16, 40, 40), spacing, centre=np.stack([c for c, _ in frames]))
    for volume, cell in zip(volumes, cells):
        assert iou(volume, cell) > 0.9
    with pytest.raises(CellcascadeError, match="half_width"):
        fit_sdf(sil, views, half_width=(1.0, 2.0, 3.0))


def test_neus_mode_reconstructs_a_sphere_tiny():
    from dataclasses import replace

    sphere = ellipsoid((20, 20, 20), (7, 7, 7))
    views = ring_views(4)
    sil = render_silhouettes(sphere, views, size=24, half_width=9.0)
    config = replace(default_config("neus"), steps=150, rays_per_step=128, samples_per_ray=16, importance_samples=16,
                     hidden=32, layers=2, n_frequencies=4)
    fit = fit_sdf(sil, views, mode="neus", half_width=9.0, config=config, generator=torch.Generator().manual_seed(0))
    assert isinstance(fit.field, MLPSDF)
    assert iou(voxelize(fit.field, sphere.shape), sphere) > 0.9


def test_reconstruct_is_fit_then_voxelize():
    sphere = ellipsoid((20, 20, 20), (7, 6, 5))
    views = ring_views(4)
    sil = render_silhouettes(sphere, views, size=24, half_width=9.0)
    config = fast_config(steps=3)
    one = reconstruct(sil, views, sphere.shape, half_width=9.0, config=config)
    fit = fit_sdf(sil, views, half_width=9.0, config=config)
    np.testing.assert_array_equal(one, voxelize(fit.field, sphere.shape))
    batch = reconstruct(sil[None], views, sphere.shape, half_width=9.0, config=config)
    assert batch.shape == (1, *sphere.shape)
    np.testing.assert_array_equal(batch[0], one)


def test_anisotropy_round_trip_keeps_the_physical_shape():
    spacing = (2.0, 1.0, 1.0)
    cell = ellipsoid((17, 33, 33), (10, 12, 8), spacing)
    views = ring_views(6)
    sil = render_silhouettes(cell, views, spacing, size=32, half_width=16.0)
    fit = fit_sdf(sil, views, half_width=16.0, config=fast_config())
    iso = voxelize(fit.field, (33, 33, 33), (1.0, 1.0, 1.0))
    aniso = voxelize(fit.field, (17, 33, 33), spacing)
    assert aniso.shape[0] == 17 and iso.shape[0] == 33  # half the z slices (2m + 1 -> m + 1)
    np.testing.assert_array_equal(aniso, iso[::2])  # the same physical points
    assert abs(2.0 * aniso.sum() / iso.sum() - 1) < 0.05  # same physical volume
    assert iou(aniso, cell) > 0.9


def test_same_seed_same_field():
    from dataclasses import replace

    sphere = ellipsoid((20, 20, 20), (7, 6, 5))
    views = ring_views(4)
    sil = render_silhouettes(sphere, views, size=24, half_width=9.0)
    config = fast_config(steps=5)
    grids = [fit_sdf(sil, views, config=config, generator=torch.Generator().manual_seed(seed)).field.dense()
             for seed in (1, 1, 2)]
    assert torch.equal(grids[0], grids[1])
    assert not torch.equal(grids[0], grids[2])
    neus = replace(default_config("neus"), steps=3, rays_per_step=32, samples_per_ray=8, importance_samples=8,
                   hidden=16, layers=2)
    fields = [fit_sdf(sil, views, mode="neus", config=neus, generator=torch.Generator().manual_seed(seed)).field
              for seed in (4, 4)]
    for a, b in zip(fields[0].parameters(), fields[1].parameters()):
        assert torch.equal(a, b)


def test_bad_input_is_a_clear_error():
    sphere = ellipsoid((20, 20, 20), (7, 7, 7))
    views = ring_views(4)
    sil = render_silhouettes(sphere, views, size=16)
    with pytest.raises(CellcascadeError, match="5 silhouettes per cell but 4 views"):
        fit_sdf(sil, ring_views(3))
    empty = sil.copy()
    empty[2] = 0
    with pytest.raises(CellcascadeError, match="silhouette 2 of cell 0 is empty"):
        fit_sdf(empty, views)
    with pytest.raises(CellcascadeError, match="unknown reconstruction mode"):
        fit_sdf(sil, views, mode="nerf")
    with pytest.raises(CellcascadeError, match="square images"):
        fit_sdf(sil[:, :, :8], views)
    with pytest.raises(CellcascadeError, match="empty"):
        render_silhouettes(np.zeros((8, 8, 8), bool), views)
    with pytest.raises(CellcascadeError, match="spacing"):
        render_silhouettes(sphere, views, spacing=(0, 1, 1))
    with pytest.raises(CellcascadeError, match="as many elevations as azimuths"):
        Views((90.0, 0.0), (0.0,))
    disagree = sil.copy()
    disagree[0] = 0
    disagree[0, :2, :2] = 1  # the top view shows a speck in a corner that no side view sees
    with pytest.raises(CellcascadeError, match="visual hull is empty"):
        fit_sdf(disagree, views)


def test_render_silhouettes_accepts_rotated_and_flipped_views():
    """np.rot90 / flipped views (negative strides) render like their contiguous copies."""
    from cellcascade.reconstruction.cameras import render_silhouettes, ring_views

    zz, yy, xx = np.mgrid[:12, :16, :20]
    box = (np.abs(zz - 5.5) < 3) & (np.abs(yy - 7.5) < 5) & (np.abs(xx - 9.5) < 7)
    view = np.rot90(box, axes=(1, 2))[:, ::-1]
    np.testing.assert_array_equal(render_silhouettes(view, ring_views(2), size=16),
                                  render_silhouettes(view.copy(), ring_views(2), size=16))
