"""Population synthesis in 3D: the 2D placement rules in a (Z, Y, X) volume with anisotropic voxels.

The rules are those of :func:`~cellcascade.population.place_cells` (count or density, Bernoulli clustering with
probability p, overlap tolerance, all free positions found at once by FFT cross-correlation of the occupancy with
the cell's footprint); only the pose is 3D. Poses act on physical offsets (``spacing`` = (dz, dy, dx)), so a
rotation keeps a cell's physical shape in anisotropic voxels, and the clustering gap is a physical distance.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from cellcascade.data.annotated import check_spacing
from cellcascade.errors import CellcascadeError
from cellcascade.population.occupancy import Occupancy
from cellcascade.population.placement import (
    MAX_LABEL,
    Population,
    _as_generator,
    _box,
    _check_fraction,
    _check_positive_int,
    _check_scale_range,
    _check_shapes,
    _choose_offset,
    _draw_count,
)
from cellcascade.population.transform import random_rotation, rotation_about_z, transform_shape_3d

ROTATIONS = ("z", "any", "none")


def place_cells_3d(
    shapes,
    volume_shape,
    *,
    spacing=(1.0, 1.0, 1.0),
    n_cells=(40, 49),
    density=None,
    clustering=0.0,
    scale_range=(1.0, 1.0),
    rotate="z",
    flip=True,
    overlap_tolerance=0.0,
    cluster_gap=None,
    rng=None,
    max_attempts=3,
) -> Population:
    """Place randomly posed copies of 3D single-cell shapes into an empty (Z, Y, X) volume.

    Per cell, as in 2D: a Bernoulli(`clustering`) draw, then per attempt a shape drawn uniformly from `shapes`, a
    rotation (`rotate`), a mirror along x with probability 1/2, a scale uniform in `scale_range`; the posed
    footprint (`transform_shape_3d`) goes to a position drawn uniformly among the free ones (wholly inside the
    volume, overlapping existing cells by at most ``overlap_tolerance`` of its voxels), or, if the clustering draw
    succeeds, among the free ones next to an existing cell (a shift of at most `cluster_gap` along each axis makes
    it touch one). A cell that fits nowhere is redrawn up to `max_attempts` times, then skipped.

    Parameters
    ----------
    shapes : sequence of ndarray bool, each (z, y, x)
        Single connected cells in voxels of size `spacing` (e.g. from
        :func:`cellcascade.shapes3d.sample_shapes`).
    volume_shape : (int, int, int)
        (Z, Y, X), all > 0.
    spacing : (float, float, float)
        Voxel size (dz, dy, dx), physical units.
    n_cells : int or (int, int)
        Number of cells, or an inclusive (min, max) range drawn uniformly.
    density : float, optional
        Cells per 10^6 cubic units of the physical volume (µm³ when the spacing is in µm); replaces `n_cells`.
        With spacing (1, 1, 1) that is cells per 10^6 voxels.
    clustering : float in [0, 1]
        Probability that a cell is placed next to existing cells: 0 scatters the cells, 1 grows colonies.
    scale_range : (float, float)
        Linear size factor range, both > 0, min <= max.
    rotate : {"z", "any", "none"} or bool
        "z" (or True): a uniform angle about the z axis (cells keep their height, as on a coverslip); "any": a
        uniformly random 3D rotation; "none" (or False): the shapes' orientation.
    flip : bool
        Random mirror along x.
    overlap_tolerance : float in [0, 1)
        Fraction of a new cell's voxels that may lie on existing cells (which are never overwritten; the new cell
        keeps the rest, which must stay face-connected).
    cluster_gap : float, optional
        Largest physical gap between a clustered cell and its neighbour, along each axis; per axis at least one
        voxel. Default: two xy pixels, ``2 * min(dy, dx)``.
    rng : numpy.random.Generator or int, optional
        Randomness; the same generator state (or seed) gives the same population.
    max_attempts : int
        Draws of shape and pose per cell before it is skipped (>= 1).

    Returns
    -------
    Population
        ``labels`` uint16 (Z, Y, X), 0 = background, cells 1..n; ``cells``: one dict per cell with ``id``,
        ``centroid`` ((z, y, x) voxel coordinates), ``source``, ``rotation`` (3x3 nested list: the rotation of
        physical (z, y, x) offsets), ``flipped``, ``scale``, ``clustered``;
        ``transform_shape_3d(shapes[source], np.array(rotation), flipped, scale, spacing)`` gives the footprint.

    Raises
    ------
    CellcascadeError
        On bad input, with a one-line message.

    Examples
    --------
    >>> import numpy as np
    >>> zz, yy, xx = np.mgrid[-2:3, -6:7, -6:7]
    >>> nucleus = (zz / 2.2) ** 2 + (yy / 6.2) ** 2 + (xx / 6.2) ** 2 <= 1  # 12 x 12 x 12 µm at (2, 0.5, 0.5) µm
    >>> population = place_cells_3d([nucleus], (16, 64, 64), spacing=(2.0, 0.5, 0.5), n_cells=10, rng=0)
    >>> population.labels.shape, len(population.cells)
    ((16, 64, 64), 10)
    """
    volume_shape = _check_volume(volume_shape)
    spacing = check_spacing(spacing)
    shapes = _check_shapes(shapes, 3)
    clustering = _check_fraction(clustering, "clustering", upper_open=False)
    overlap_tolerance = _check_fraction(overlap_tolerance, "overlap_tolerance", upper_open=True)
    low_scale, high_scale = _check_scale_range(scale_range)
    gap = _gap_voxels(cluster_gap, spacing)
    max_attempts = _check_positive_int(max_attempts, "max_attempts")
    rotate = _check_rotate(rotate)
    rng = _as_generator(rng)
    requested = _draw_count_3d(n_cells, density, volume_shape, spacing, rng)

    occupancy = Occupancy(volume_shape)
    labels = np.zeros(volume_shape, dtype=np.uint16)
    cells = []
    for _ in range(requested):
        wants_cluster = bool(rng.random() < clustering)
        for _attempt in range(max_attempts):
            source = int(rng.integers(len(shapes)))
            if rotate == "z":
                rotation = rotation_about_z(float(rng.uniform(0.0, 360.0)))
            elif rotate == "any":
                rotation = random_rotation(rng)
            else:
                rotation = np.eye(3)
            flipped = bool(rng.random() < 0.5) if flip else False
            scale = float(rng.uniform(low_scale, high_scale))
            footprint = transform_shape_3d(shapes[source], rotation, flipped, scale, spacing)
            spectrum = occupancy.spectrum(footprint)
            near = gap if wants_cluster and occupancy.count > 0 else None
            choice = _choose_offset(occupancy, footprint, spectrum, overlap_tolerance, near, rng)
            if choice is None:
                continue
            offset, kept, clustered = choice
            cell_id = len(cells) + 1
            labels[_box(offset, footprint.shape)][kept] = cell_id
            occupancy.add(kept, offset, spectrum if kept.sum() == footprint.sum() else None)
            centroid = tuple(float(o + c.mean()) for o, c in zip(offset, np.nonzero(kept)))
            cells.append(
                {
                    "id": cell_id,
                    "centroid": centroid,
                    "source": source,
                    "rotation": rotation.tolist(),
                    "flipped": flipped,
                    "scale": scale,
                    "clustered": clustered,
                }
            )
            break
    return Population(labels=labels, cells=cells, requested=requested)


def _check_volume(volume_shape) -> tuple[int, int, int]:
    try:
        dims = tuple(volume_shape)
    except TypeError:
        raise CellcascadeError(f"volume_shape must be a (Z, Y, X) tuple of sizes, got {volume_shape!r}") from None
    if len(dims) != 3:
        raise CellcascadeError(f"volume_shape must be 3D (Z, Y, X), got {volume_shape!r}; use place_cells for 2D")
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in dims):
        raise CellcascadeError(f"volume_shape sizes must be positive integers, got {volume_shape!r}")
    return tuple(int(n) for n in dims)


def _check_rotate(rotate) -> str:
    if rotate is True:
        return "z"
    if rotate is False:
        return "none"
    if rotate not in ROTATIONS:
        raise CellcascadeError(f"rotate must be one of {', '.join(ROTATIONS)} (or a bool), got {rotate!r}")
    return rotate


def _gap_voxels(cluster_gap, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """The physical clustering gap as a number of voxels per axis, at least 1."""
    if cluster_gap is None:
        cluster_gap = 2 * min(spacing[1:])
    if not isinstance(cluster_gap, numbers.Real) or isinstance(cluster_gap, bool) or not (
        math.isfinite(cluster_gap) and cluster_gap > 0
    ):
        raise CellcascadeError(f"cluster_gap must be a positive physical distance, got {cluster_gap!r}")
    return tuple(max(1, int(round(cluster_gap / s))) for s in spacing)


def _draw_count_3d(n_cells, density, volume_shape, spacing, rng: np.random.Generator) -> int:
    """Number of cells: from `density` (cells per 10^6 physical cubic units) if given, else from `n_cells`."""
    if density is None:
        return _draw_count(n_cells, None, volume_shape, rng)
    is_number = isinstance(density, numbers.Real) and not isinstance(density, bool)
    if not is_number or not np.isfinite(density) or density < 0:
        raise CellcascadeError(f"density (cells per 10^6 cubic units) must be a number >= 0, got {density!r}")
    count = int(round(float(density) * float(np.prod(volume_shape)) * float(np.prod(spacing)) / 1e6))
    if count > MAX_LABEL:
        raise CellcascadeError(f"at most {MAX_LABEL} cells fit in uint16 labels, asked for {count}")
    return count
