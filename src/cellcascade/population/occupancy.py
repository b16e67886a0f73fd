"""Occupied pixels of a canvas and, by FFT cross-correlation, the overlap of a footprint at every offset at once.

After Svoboda & Ulman 2013: the number of occupied pixels under a footprint placed at every offset of the canvas is
one cross-correlation of the occupancy map with the footprint. The occupancy's spectrum is kept up to date by adding
the spectrum of each placed cell, shifted to its position (an FFT is linear), so one query costs the footprint's FFT
and one inverse FFT of the canvas, and placing the cell costs no further FFT. Works in any number of dimensions
((Y, X) or (Z, Y, X)).
"""

from __future__ import annotations

import numpy as np
from scipy import fft


class Occupancy:
    """Which canvas pixels hold a cell, and how many of them a footprint would cover at every offset.

    Parameters
    ----------
    shape : tuple of int
        Canvas shape, e.g. (Y, X) or (Z, Y, X).

    Attributes
    ----------
    mask : ndarray bool, shape `shape`
        True where a cell was added.
    count : int
        Number of cells added.

    Notes
    -----
    Correlations use float32 FFTs on a grid at least as large as the canvas (the next fast FFT length). Only
    offsets where the footprint lies wholly inside the canvas are returned, so nothing wraps around. The spectrum
    is a running sum of per-cell spectra; its float32 rounding error (about 4e-4 after 300 cells on 1024x1024)
    stays far below the 0.5 used to read whole-number counts, and `place_cells` re-checks its chosen position
    exactly.

    Examples
    --------
    >>> import numpy as np
    >>> occupancy = Occupancy((8, 8))
    >>> occupancy.add(np.ones((2, 2), bool), (3, 3))
    >>> footprint = np.ones((3, 3), bool)
    >>> counts = occupancy.overlap(occupancy.spectrum(footprint), (6, 6))
    >>> int(round(counts[2, 2])), int(round(counts[0, 0]))
    (4, 0)
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.mask = np.zeros(shape, dtype=bool)
        self.count = 0
        last = len(shape) - 1
        self._grid = tuple(fft.next_fast_len(n, real=axis == last) for axis, n in enumerate(shape))
        self._spectrum = np.zeros(self._grid[:-1] + (self._grid[-1] // 2 + 1,), dtype=np.complex64)

    def spectrum(self, footprint: np.ndarray) -> np.ndarray:
        """Real FFT (complex64) of a zero canvas-sized grid holding `footprint` at the origin.

        Same as ``rfftn(footprint, s=grid)``, one axis at a time so that the first pass only transforms the
        footprint's own rows (about twice as fast for a small footprint).
        """
        data = fft.rfft(footprint.astype(np.float32), n=self._grid[-1], axis=-1)
        for axis in range(footprint.ndim - 1):
            data = fft.fft(data, n=self._grid[axis], axis=axis)
        return data

    def overlap(self, footprint_spectrum: np.ndarray, positions: tuple[int, ...]) -> np.ndarray:
        """Occupied pixels under the footprint at every offset where it lies inside the canvas.

        Parameters
        ----------
        footprint_spectrum : ndarray complex64
            ``self.spectrum(footprint)``.
        positions : tuple of int
            ``canvas - footprint + 1`` per axis.

        Returns
        -------
        ndarray float32, shape `positions`
            ``out[s] = sum_n mask[s + n] * footprint[n]``; whole numbers up to rounding.
        """
        # Correlation theorem: corr(mask, f) = ifft(F(mask) * conj(F(f))).
        correlation = fft.irfftn(self._spectrum * np.conj(footprint_spectrum), s=self._grid)
        return correlation[tuple(slice(0, n) for n in positions)]

    def add(self, footprint: np.ndarray, offset: tuple[int, ...], spectrum: np.ndarray | None = None) -> None:
        """Mark the free pixels `footprint` (bool) occupied, its first pixel at `offset` (inside the canvas).

        Parameters
        ----------
        footprint : ndarray bool
            Must fit in the canvas at `offset` and cover no occupied pixel (the spectrum is a sum: a pixel added
            twice would count twice).
        offset : tuple of int
            Position of ``footprint[0, ..., 0]``.
        spectrum : ndarray complex64, optional
            ``self.spectrum(footprint)`` if already computed (saves one FFT).
        """
        box = tuple(slice(o, o + n) for o, n in zip(offset, footprint.shape))
        self.mask[box] |= footprint
        if spectrum is None:
            spectrum = self.spectrum(footprint)
        # Shift theorem: moving by `offset` multiplies the spectrum by exp(-2 pi i k offset / n) along each axis.
        shifted = spectrum
        for axis, (o, n) in enumerate(zip(offset, self._grid)):
            k = np.arange(spectrum.shape[axis])
            ramp = np.exp(-2j * np.pi * k * (o / n)).astype(np.complex64)
            shifted = shifted * ramp.reshape([-1 if a == axis else 1 for a in range(spectrum.ndim)])
        self._spectrum += shifted
        self.count += 1
