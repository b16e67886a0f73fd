"""Population synthesis: place single-cell shapes into a canvas, scattered or in colonies, as instance labels.

Placement after Svoboda & Ulman 2013 (as in the paper's code): for each new cell the free positions are all found
at once by FFT cross-correlation of the occupancy map with the cell's footprint (`Occupancy`); with probability
``clustering`` (a Bernoulli draw per cell) the cell goes to a free position next to an existing cell, otherwise to a
free position anywhere, uniformly.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from cellcascade.errors import CellcascadeError
from cellcascade.population.occupancy import Occupancy
from cellcascade.population.transform import transform_shape

MAX_LABEL = np.iinfo(np.uint16).max


@dataclass
class Population:
    """Placed cells.

    Attributes
    ----------
    labels : ndarray uint16, shape (Y, X) (or (Z, Y, X) from `place_cells_3d`)
        Instance labels: 0 = background, cells 1..n (unique, consecutive, in placement order).
    cells : list of dict
        One per placed cell, in id order: ``id`` (int), ``centroid`` ((y, x) floats, of its pixels in `labels`),
        ``source`` (index into the input shapes), ``rotation`` (degrees, counter-clockwise as displayed),
        ``flipped`` (mirrored left-right before rotating), ``scale`` (float), ``clustered`` (placed next to an
        existing cell by the clustering rule). ``transform_shape(shapes[source], rotation, flipped, scale)`` gives
        the cell's full footprint (in 3D see `place_cells_3d`).
    requested : int
        Number of cells asked for; ``requested - len(cells)`` cells found no free position and were skipped.
    """

    labels: np.ndarray
    cells: list[dict] = field(default_factory=list)
    requested: int = 0


def place_cells(
    shapes,
    canvas_shape,
    *,
    n_cells=(40, 49),
    density=None,
    clustering=0.0,
    scale_range=(1.0, 1.0),
    rotate=True,
    flip=True,
    overlap_tolerance=0.0,
    cluster_gap=2,
    rng=None,
    max_attempts=3,
) -> Population:
    """Place randomly posed copies of single-cell shapes into an empty 2D canvas.

    Per cell: a Bernoulli(`clustering`) draw, a shape drawn uniformly from `shapes`, a rotation uniform in
    [0, 360) degrees, a left-right mirror with probability 1/2, and a scale uniform in `scale_range`. The posed
    footprint (`transform_shape`) then goes to a position drawn uniformly among the free ones: the positions where
    it lies wholly inside the canvas and overlaps existing cells by at most ``overlap_tolerance`` of its pixels.
    If the clustering draw succeeds (and a cell exists), only free positions next to an existing cell are used
    (a colony grows): those from which a shift of at most `cluster_gap` pixels along each axis would make the
    cell touch another; if there is none, any free position is used. All free positions are
    found at once by FFT cross-correlation, so the cost per cell is a few FFTs of the canvas.

    A cell that fits nowhere is redrawn (new shape and pose) up to `max_attempts` times, then skipped: a full
    canvas yields fewer cells than asked (see ``Population.requested``); the call never loops forever.

    Parameters
    ----------
    shapes : sequence of ndarray bool, each shape (h, w)
        Single connected cells, at the canvas pixel scale, any sizes.
    canvas_shape : tuple of int
        (Y, X), both > 0.
    n_cells : int or (int, int)
        Number of cells, or an inclusive (min, max) range drawn uniformly.
    density : float, optional
        Cells per 10^4 canvas pixels (e.g. 1.5 on 512x512 asks for round(39.3) = 39 cells); replaces `n_cells`.
    clustering : float in [0, 1]
        Probability that a cell is placed next to existing cells: 0 scatters the cells, 1 grows colonies.
    scale_range : (float, float)
        Linear size factor range, both > 0, min <= max.
    rotate : bool
        Random rotation (any angle); False keeps the shapes' orientation.
    flip : bool
        Random left-right mirror.
    overlap_tolerance : float in [0, 1)
        Fraction of a new cell's pixels that may lie on existing cells. Existing cells are never overwritten: the
        new cell keeps the rest (which must stay connected), so every cell keeps at least
        ``1 - overlap_tolerance`` of its footprint.
    cluster_gap : int
        Largest gap, in pixels along each axis, between a clustered cell and its neighbour (>= 1; 1 = touching,
        for positions drawn among free ones).
    rng : numpy.random.Generator or int, optional
        Randomness; the same generator state (or seed) gives the same population.
    max_attempts : int
        Draws of shape and pose per cell before it is skipped (>= 1).

    Returns
    -------
    Population
        ``labels`` uint16 (Y, X) and the cell table.

    Raises
    ------
    CellcascadeError
        On bad input, with a one-line message.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:21, :31]
    >>> ellipse = ((yy - 10) / 10) ** 2 + ((xx - 15) / 15) ** 2 <= 1
    >>> population = place_cells([ellipse], (256, 256), n_cells=20, clustering=0.5, rng=0)
    >>> population.labels.shape, population.labels.dtype, len(population.cells)
    ((256, 256), dtype('uint16'), 20)
    """
    canvas_shape = _check_canvas(canvas_shape)
    shapes = _check_shapes(shapes, len(canvas_shape))
    clustering = _check_fraction(clustering, "clustering", upper_open=False)
    overlap_tolerance = _check_fraction(overlap_tolerance, "overlap_tolerance", upper_open=True)
    low_scale, high_scale = _check_scale_range(scale_range)
    cluster_gap = _check_positive_int(cluster_gap, "cluster_gap")
    max_attempts = _check_positive_int(max_attempts, "max_attempts")
    rng = _as_generator(rng)
    requested = _draw_count(n_cells, density, canvas_shape, rng)

    occupancy = Occupancy(canvas_shape)
    labels = np.zeros(canvas_shape, dtype=np.uint16)
    cells = []
    for _ in range(requested):
        wants_cluster = bool(rng.random() < clustering)
        for _attempt in range(max_attempts):
            source = int(rng.integers(len(shapes)))
            rotation = float(rng.uniform(0.0, 360.0)) if rotate else 0.0
            flipped = bool(rng.random() < 0.5) if flip else False
            scale = float(rng.uniform(low_scale, high_scale))
            footprint = transform_shape(shapes[source], rotation, flipped, scale)
            gap = cluster_gap if wants_cluster and occupancy.count > 0 else None
            spectrum = occupancy.spectrum(footprint)
            choice = _choose_offset(occupancy, footprint, spectrum, overlap_tolerance, gap, rng)
            if choice is None:
                continue
            offset, kept, clustered = choice  # kept: the footprint's free pixels (existing cells are never overwritten)
            cell_id = len(cells) + 1
            labels[_box(offset, footprint.shape)][kept] = cell_id
            occupancy.add(kept, offset, spectrum if kept.sum() == footprint.sum() else None)
            centroid = tuple(float(o + c.mean()) for o, c in zip(offset, np.nonzero(kept)))
            cells.append(
                {
                    "id": cell_id,
                    "centroid": centroid,
                    "source": source,
                    "rotation": rotation,
                    "flipped": flipped,
                    "scale": scale,
                    "clustered": clustered,
                }
            )
            break
    return Population(labels=labels, cells=cells, requested=requested)


def _choose_offset(occupancy, footprint, spectrum, tolerance: float, gap: int | tuple[int, ...] | None, rng):
    """A random free offset for `footprint`, or None if there is none.

    Free: the footprint lies inside the canvas and covers at most ``floor(tolerance * area)`` occupied pixels.
    With `gap`, only free offsets next to a cell are used if there are any: those from which a shift of at most
    `gap` pixels along each axis (keeping the footprint inside the canvas) makes it touch a cell; `gap` is one int
    or one per axis.

    Returns ``(offset, kept, clustered)``: `kept` (bool, footprint's shape) the footprint's free pixels there
    (face-connected), `clustered` whether the offset came from the next-to-a-cell set.
    """
    positions = tuple(c - f + 1 for c, f in zip(occupancy.mask.shape, footprint.shape))
    if min(positions) <= 0:
        return None  # larger than the canvas
    allowed = int(np.floor(tolerance * footprint.sum()))
    covered = occupancy.overlap(spectrum, positions)
    free = covered < allowed + 0.5
    clustered = False
    if gap is not None:
        near = free & _grow_box(covered > 0.5, gap)
        if near.any():
            free, clustered = near, True
    candidates = np.flatnonzero(free)
    while candidates.size:
        k = int(rng.integers(candidates.size))
        offset = tuple(int(o) for o in np.unravel_index(candidates[k], positions))
        # Exact check of the FFT answer (float32 rounding), cheap: one box. Where cells may overlap, the new cell
        # keeps only its free pixels; they must stay one connected piece.
        kept = footprint & ~occupancy.mask[_box(offset, footprint.shape)]
        lost = footprint.sum() - kept.sum()
        if lost <= allowed and (lost == 0 or ndi.label(kept)[1] == 1):
            return offset, kept, clustered
        candidates = np.delete(candidates, k)
    return None


def _grow_box(mask: np.ndarray, radius) -> np.ndarray:
    """Binary dilation of `mask` (bool, any ndim) by a (2 radius + 1)-wide box, one axis at a time by shifted ORs.

    `radius` is an int, or one int per axis (anisotropic voxels).
    """
    radii = (radius,) * mask.ndim if isinstance(radius, numbers.Integral) else tuple(radius)
    grown = mask.copy()
    for axis in range(mask.ndim):
        source = grown.copy()
        for d in range(1, radii[axis] + 1):
            lower = [slice(None)] * mask.ndim
            upper = [slice(None)] * mask.ndim
            lower[axis], upper[axis] = slice(None, -d), slice(d, None)
            grown[tuple(upper)] |= source[tuple(lower)]
            grown[tuple(lower)] |= source[tuple(upper)]
    return grown


def _box(offset: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Slices of the box of `shape` whose first pixel is at `offset`."""
    return tuple(slice(o, o + n) for o, n in zip(offset, shape))


def _as_generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and rng >= 0):
        return np.random.default_rng(rng)
    raise CellcascadeError(f"rng must be a numpy Generator, a non-negative int seed or None, got {rng!r}")


def _check_canvas(canvas_shape) -> tuple[int, ...]:
    try:
        dims = tuple(canvas_shape)
    except TypeError:
        raise CellcascadeError(f"canvas_shape must be a (Y, X) tuple of sizes, got {canvas_shape!r}") from None
    if len(dims) != 2:
        raise CellcascadeError(
            f"canvas_shape must be 2D (Y, X), got {canvas_shape!r}; use place_cells_3d for (Z, Y, X)"
        )
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in dims):
        raise CellcascadeError(f"canvas_shape sizes must be positive integers, got {canvas_shape!r}")
    return tuple(int(n) for n in dims)


def _check_shapes(shapes, ndim: int) -> list[np.ndarray]:
    try:
        shapes = list(shapes)
    except TypeError:
        raise CellcascadeError("shapes must be a sequence of bool arrays") from None
    if not shapes:
        raise CellcascadeError("shapes is empty: give at least one single-cell mask")
    for i, shape in enumerate(shapes):
        if not isinstance(shape, np.ndarray) or shape.dtype != bool:
            kind = getattr(shape, "dtype", type(shape).__name__)
            raise CellcascadeError(f"shape {i} must be a bool array, got {kind}")
        if shape.ndim != ndim:
            raise CellcascadeError(f"shape {i} must be {ndim}D like the canvas, got shape {shape.shape}")
        if not shape.any():
            raise CellcascadeError(f"shape {i} is empty (no True pixel)")
    return shapes


def _check_fraction(value, name: str, upper_open: bool) -> float:
    bound = "[0, 1)" if upper_open else "[0, 1]"
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise CellcascadeError(f"{name} must be a number in {bound}, got {value!r}")
    value = float(value)
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise CellcascadeError(f"{name} must be in {bound}, got {value}")
    return value


def _check_scale_range(scale_range) -> tuple[float, float]:
    try:
        low, high = (float(s) for s in scale_range)
    except (TypeError, ValueError):
        raise CellcascadeError(f"scale_range must be a (min, max) pair of numbers, got {scale_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and 0 < low <= high):
        raise CellcascadeError(f"scale_range must satisfy 0 < min <= max, got {scale_range!r}")
    return low, high


def _check_positive_int(value, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise CellcascadeError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _draw_count(n_cells, density, canvas_shape: tuple[int, ...], rng: np.random.Generator) -> int:
    """Number of cells to place: from `density` (cells per 10^4 pixels) if given, else from `n_cells`."""
    if density is not None:
        is_number = isinstance(density, numbers.Real) and not isinstance(density, bool)
        if not is_number or not np.isfinite(density) or density < 0:
            raise CellcascadeError(f"density (cells per 10^4 pixels) must be a number >= 0, got {density!r}")
        count = int(round(float(density) * float(np.prod(canvas_shape)) / 1e4))
    elif isinstance(n_cells, numbers.Integral) and not isinstance(n_cells, bool):
        if n_cells < 0:
            raise CellcascadeError(f"n_cells must be >= 0, got {n_cells}")
        count = int(n_cells)
    else:
        try:
            low, high = n_cells
        except (TypeError, ValueError):
            raise CellcascadeError(f"n_cells must be an int or a (min, max) pair, got {n_cells!r}") from None
        if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in (low, high)):
            raise CellcascadeError(f"n_cells range must hold integers, got {n_cells!r}")
        if low < 0 or low > high:
            raise CellcascadeError(f"n_cells range must satisfy 0 <= min <= max, got {n_cells!r}")
        count = int(rng.integers(low, high + 1))
    if count > MAX_LABEL:
        raise CellcascadeError(f"at most {MAX_LABEL} cells fit in uint16 labels, asked for {count}")
    return count
