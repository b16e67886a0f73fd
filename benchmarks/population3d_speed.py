"""Time the 3D shape prior and 3D placement: about 40 cells in a 32×256×256 volume, anisotropic voxels.

Shapes: the embedded sample's annotated nuclei (2D masks) lifted by ``cellcascade.shapes3d.sample_shapes``
(axial ratio 0.8–1.2, default deformation); then ``place_cells_3d`` for several clustering probabilities, counts
and z spacings. Run from the repository root, single thread:

    OMP_NUM_THREADS=1 python benchmarks/population3d_speed.py

Writes benchmarks/results/population3d_speed.md, .json and .png (orthogonal views of one volume).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from cellcascade.data import load_sample
from cellcascade.io.preview import save_volume_preview
from cellcascade.population import place_cells_3d
from cellcascade.shapes3d import axial_ratio, sample_shapes

COMMAND = "OMP_NUM_THREADS=1 python benchmarks/population3d_speed.py"
RESULTS = Path(__file__).parent / "results" / "population3d_speed"
VOLUME = (32, 256, 256)
N_SHAPES = 64
AXIAL_RATIO = (0.8, 1.2)
REPEATS = 5
# (dz in xy pixels, cells, clustering p, overlap tolerance)
CASES = [(2.0, 40, 0.0, 0.0), (2.0, 40, 0.5, 0.0), (2.0, 40, 1.0, 0.0), (2.0, 40, 0.5, 0.1), (4.0, 40, 0.0, 0.0),
         (4.0, 40, 1.0, 0.0), (2.0, 80, 0.5, 0.0)]


def sample_masks(n: int) -> list[np.ndarray]:
    """The first `n` annotated nuclei of the embedded sample with at least 50 pixels, as bool (h, w) crops."""
    labels = load_sample()[0].labels
    masks = []
    for index, box in enumerate(ndi.find_objects(labels)):
        if box is not None and np.count_nonzero(labels[box] == index + 1) >= 50:
            masks.append(labels[box] == index + 1)
    return masks[:n]


def nearest_neighbour(cells: list[dict], spacing) -> float:
    centroids = np.array([c["centroid"] for c in cells]) * np.array(spacing)
    return float(cKDTree(centroids).query(centroids, k=2)[0][:, 1].mean())


def main() -> None:
    load_before = os.getloadavg()[0]
    masks = sample_masks(N_SHAPES)
    shapes, shape_rows = {}, []
    for dz in sorted({case[0] for case in CASES}):
        spacing = (dz, 1.0, 1.0)
        start = time.perf_counter()
        shapes[dz] = sample_shapes(masks, AXIAL_RATIO, spacing, rng=0)
        seconds = time.perf_counter() - start
        ratios = [axial_ratio(s, spacing) for s in shapes[dz]]
        sizes = np.median([s.shape for s in shapes[dz]], axis=0).tolist()
        shape_rows.append({"dz": dz, "shapes": len(masks), "seconds": seconds,
                           "ms_per_shape": 1e3 * seconds / len(masks), "median_box": sizes,
                           "axial_ratio_mean": float(np.mean(ratios)),
                           "axial_ratio_std": float(np.std(ratios))})
        print(shape_rows[-1], flush=True)
    rows = []
    preview = None
    for dz, count, p, tolerance in CASES:
        spacing = (dz, 1.0, 1.0)
        times, peaks, nn = [], [], []
        for seed in range(REPEATS):
            start = time.perf_counter()
            population = place_cells_3d(shapes[dz], VOLUME, spacing=spacing, n_cells=count, clustering=p,
                                        overlap_tolerance=tolerance, rng=seed)
            times.append(time.perf_counter() - start)
            nn.append(nearest_neighbour(population.cells, spacing))
            if preview is None and p == 0.5:
                preview = (population.labels, spacing)
        tracemalloc.start()  # a separate run: tracing slows the calls down
        place_cells_3d(shapes[dz], VOLUME, spacing=spacing, n_cells=count, clustering=p,
                       overlap_tolerance=tolerance, rng=0)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
        rows.append({"dz": dz, "cells_asked": count, "clustering": p, "overlap_tolerance": tolerance,
                     "cells_placed": len(population.cells), "fraction_filled": float(np.mean(population.labels > 0)),
                     "best_s": min(times), "mean_s": float(np.mean(times)), "ms_per_cell": 1e3 * min(times) / count,
                     "peak_mib": max(peaks), "nn_distance": float(np.mean(nn))})
        print(rows[-1], flush=True)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    save_volume_preview(RESULTS.with_suffix(".png"), preview[0], spacing=preview[1],
                        title=f"place_cells_3d {VOLUME}, dz 2, p 0.5, seed 0")
    machine = (f"{platform.machine()}, {platform.processor() or 'cpu'}; Python {sys.version.split()[0]}; numpy "
               f"{np.__version__}; {os.cpu_count()} cores, 1-min load average {load_before:.1f} before and "
               f"{os.getloadavg()[0]:.1f} after (other jobs share the machine); single thread")
    RESULTS.with_suffix(".json").write_text(json.dumps(
        {"command": COMMAND, "machine": machine, "volume": VOLUME, "shapes": shape_rows, "placement": rows,
         "max_rss_mib": maxrss}, indent=1))
    lines = [
        "# 3D population speed",
        "",
        f"Command: `{COMMAND}`",
        "",
        f"Machine: {machine}. Process peak RSS {maxrss:.0f} MiB (Python, numpy, scipy, the sample and all runs).",
        "",
        f"Shapes: the first {len(masks)} annotated nuclei (≥ 50 px) of the embedded sample, lifted to 3D by "
        f"`sample_shapes(masks, axial_ratio={AXIAL_RATIO}, spacing=(dz, 1, 1), rng=0)` (default deformation 0.1, "
        "degrees 2–4; xy pixel = 1 unit).",
        "",
        "| dz (xy px) | shapes | time (s) | ms per shape | median box (z, y, x) | measured axial ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in shape_rows:
        box = " × ".join(f"{v:g}" for v in r["median_box"])
        lines.append(f"| {r['dz']:g} | {r['shapes']} | {r['seconds']:.2f} | {r['ms_per_shape']:.0f} | {box} | "
                     f"{r['axial_ratio_mean']:.2f} ± {r['axial_ratio_std']:.2f} |")
    lines += [
        "",
        f"Placement: `place_cells_3d(shapes, {VOLUME}, spacing=(dz, 1, 1), n_cells=N, clustering=p, "
        f"overlap_tolerance=t, rng=seed)`, rotation about z, random mirror; best and mean of {REPEATS} seeds "
        f"(0..{REPEATS - 1}). Peak: tracemalloc peak of one more call (seed 0, numpy allocations), traced apart "
        "from the timed runs. NN: mean physical distance from a cell's centroid to its nearest neighbour, mean over "
        "the seeds (smaller = more clustered).",
        "",
        "| dz | cells asked | p | tolerance | cells placed (last seed) | volume filled (last seed) | best (s) "
        "| mean (s) | ms per cell | peak (MiB) | NN distance |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['dz']:g} | {r['cells_asked']} | {r['clustering']:g} | {r['overlap_tolerance']:g} | "
                     f"{r['cells_placed']} | {r['fraction_filled']:.3f} | {r['best_s']:.2f} | {r['mean_s']:.2f} | "
                     f"{r['ms_per_cell']:.0f} | {r['peak_mib']:.0f} | {r['nn_distance']:.1f} |")
    lines += ["", f"Orthogonal views of one p = 0.5 volume: `{RESULTS.with_suffix('.png').name}`."]
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS.with_suffix('.md')}")


if __name__ == "__main__":
    main()
