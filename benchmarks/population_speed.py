"""Time `place_cells` for 50/100/300 nucleus-like cells on 512² and 1024² canvases; write a markdown table.

Run from the repository root (single thread is enough; scipy.fft uses one worker by default):

    OMP_NUM_THREADS=1 python benchmarks/population_speed.py

Writes benchmarks/results/population_speed.md.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from cellcascade.population import place_cells

COMMAND = "OMP_NUM_THREADS=1 python benchmarks/population_speed.py"
RESULTS = Path(__file__).parent / "results" / "population_speed.md"
CANVASES = (512, 1024)
COUNTS = (50, 100, 300)
CLUSTERING = (0.0, 1.0)
REPEATS = 2


def nucleus_shapes(rng: np.random.Generator, n: int = 16) -> list[np.ndarray]:
    """Ellipses with axes drawn from 20–35 px (full lengths), as bool arrays (h, w)."""
    shapes = []
    for _ in range(n):
        a, b = rng.uniform(10, 17.5, size=2)  # semi-axes
        yy, xx = np.mgrid[-int(a) - 1 : int(a) + 2, -int(b) - 1 : int(b) + 2]
        shapes.append((yy / a) ** 2 + (xx / b) ** 2 <= 1)
    return shapes


def main() -> None:
    shapes = nucleus_shapes(np.random.default_rng(0))
    load_before = os.getloadavg()[0]
    rows = []
    for side in CANVASES:
        for count in COUNTS:
            for p in CLUSTERING:
                times = []
                for seed in range(REPEATS):
                    start = time.perf_counter()
                    population = place_cells(shapes, (side, side), n_cells=count, clustering=p, rng=seed)
                    times.append(time.perf_counter() - start)
                placed = len(population.cells)
                covered = float(np.mean(population.labels > 0))
                row = (side, count, p, placed, covered, min(times), 1e3 * min(times) / max(placed, 1))
                rows.append(row)
                print("{}² n={} p={} placed={} covered={:.2f} best={:.2f}s ({:.1f} ms/cell)".format(*row), flush=True)
    lines = [
        "# Population placement speed",
        "",
        f"Command: `{COMMAND}`",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}; Python {sys.version.split()[0]}; "
        f"numpy {np.__version__}; {os.cpu_count()} cores, 1-min load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after (other jobs share the machine). Best of {REPEATS} runs "
        f"(seeds 0..{REPEATS - 1}), single thread.",
        "Shapes: 16 ellipses, axes 20–35 px; random rotation, flip; no overlap (tolerance 0).",
        "",
        "| canvas | cells asked | clustering p | cells placed | area covered | time (s) | ms per cell |",
        "|---|---|---|---|---|---|---|",
    ]
    for side, count, p, placed, covered, best, per_cell in rows:
        lines.append(f"| {side}×{side} | {count} | {p:g} | {placed} | {covered:.2f} | {best:.2f} | {per_cell:.1f} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
