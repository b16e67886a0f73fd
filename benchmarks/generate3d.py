"""End to end in 3D: time and peak memory of `cellcascade generate --dim 3`, texture continuity and KID XZ vs XY.

Runs the README's 3D command (shipped default cascade, 32×256×256 voxels, z step 2 pixels, about 40 cells) in a
child process, timing it and reading its peak resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss``: the whole
process, Python and PyTorch included). On the volumes it wrote, it then measures

* texture continuity along z inside cells (:func:`cellcascade.evaluation.continuity.continuity_scores`), to be
  compared with the real BBBC050 figures recorded in ``benchmarks/results/texture3d_continuity.json``;
* KID (and FID) of XZ slices vs XY slices, on 48-px tiles, XZ slices resampled to isotropic voxels first (linear
  along z), and as references the same on the real BBBC050 volume (isotropic as published) and XY vs XY of the
  synthetic volume (odd vs even slices: the score of two sets with no real difference).

Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/generate3d.py [--n 1] [--out runs/generate3d] [--axial-psf R --tag NAME]

Writes benchmarks/results/generate3d.{md,json} (or NAME.{md,json}). BBBC050 needs ../shared/data (left out, with a note, when absent).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

from cellcascade.evaluation.continuity import continuity_scores
from cellcascade.evaluation.realism import realism_scores

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BBBC050 = ROOT.parent / "shared" / "data" / "BBBC050-mouse-embryo-3D"
TILE = 48
Z_STEP = 2.0


def command(n: int, out: Path, threads: int, axial_psf: float | None) -> list[str]:
    extra = [] if axial_psf is None else ["--axial-psf", str(axial_psf)]
    return ["cellcascade", "generate", "default", "--dim", "3", "--n", str(n), "--size", "32", "256", "256",
            "--z-step", str(Z_STEP), "--cells", "38-42", "--sampler", "dpm", "--texture-steps", "10",
            "--seed", "0", "--threads", str(threads), *extra, "--out", str(out), "--overwrite"]


def tiles(images: list[np.ndarray], size: int = TILE) -> list[np.ndarray]:
    """Non-overlapping size×size tiles of 2D images (the remainder at the far edges is left out)."""
    out = []
    for image in images:
        for r in range(0, image.shape[0] - size + 1, size):
            for c in range(0, image.shape[1] - size + 1, size):
                out.append(image[r : r + size, c : c + size])
    return out


def xy_and_xz_tiles(volume: np.ndarray, z_step: float, xz_every: int) -> tuple[list, list, list]:
    """XY tiles of even slices, of odd slices, and XZ tiles (every `xz_every`-th y), XZ resampled to isotropic."""
    volume = volume.astype(np.float32)
    even, odd = tiles(list(volume[0::2])), tiles(list(volume[1::2]))
    iso = ndi.zoom(volume, (z_step, 1, 1), order=1) if z_step != 1 else volume
    xz = tiles([iso[:, y, :] for y in range(0, iso.shape[1], xz_every)])
    return even, odd, xz


def kid(a: list, b: list) -> dict:
    scores = realism_scores(a, b, subset_size=min(50, len(a), len(b)))
    return {"kid": scores.kid_mean, "kid_std": scores.kid_std, "fid": scores.fid, "n_a": len(a), "n_b": len(b)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1, help="volumes to generate (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "generate3d", help="where the volumes go")
    parser.add_argument("--threads", type=int, default=2, help="--threads of the generate command (default 2)")
    parser.add_argument("--axial-psf", type=float, default=None, help="pass --axial-psf R to generate")
    parser.add_argument("--tag", default="generate3d", help="results/TAG.{md,json} (default generate3d)")
    args = parser.parse_args(argv)
    cmd = command(args.n, args.out, args.threads, args.axial_psf)
    print(" ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
    manifest = json.loads((args.out / "manifest.json").read_text())
    report = {"command": " ".join(["OMP_NUM_THREADS=1 python benchmarks/generate3d.py"] + sys.argv[1:]),
              "generate_command": " ".join(cmd), "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {args.threads} thread(s) for generate",
              "seconds_total": seconds, "seconds_per_volume": seconds / args.n, "peak_rss_mib": peak_mib,
              "volumes": []}
    xy_even, xy_odd, xz = [], [], []
    for sample in manifest["samples"]:
        image = tifffile.imread(args.out / sample["image"])
        labels = tifffile.imread(args.out / sample["labels"])
        shapes = [c["shape"] for c in sample["cells"]]
        report["volumes"].append({"shape": list(image.shape), "cells": int(labels.max()),
                                  "multiview_cells": shapes.count("multiview"), "fallback_cells": shapes.count("ellipsoid"),
                                  "continuity": continuity_scores(image, labels, (Z_STEP, 1.0, 1.0))})
        a, b, c = xy_and_xz_tiles(image, Z_STEP, xz_every=8)
        xy_even += a
        xy_odd += b
        xz += c
    print(json.dumps(report["volumes"], indent=1), flush=True)
    report["synthetic_kid_xz_vs_xy"] = kid(xy_even + xy_odd, xz)
    report["synthetic_kid_xy_odd_vs_even"] = kid(xy_even, xy_odd)
    continuity_file = ROOT / "benchmarks" / "results" / "texture3d_continuity.json"
    if continuity_file.exists():
        recorded = json.loads(continuity_file.read_text())
        report["real_continuity_recorded"] = recorded["real"]
    raw = BBBC050 / "01" / "t000.tif"
    if raw.exists():
        real = tifffile.imread(raw)
        a, b, c = xy_and_xz_tiles(real, 1.0, xz_every=2)
        report["real_bbbc050_kid_xz_vs_xy"] = kid(a + b, c)
        report["real_bbbc050_kid_xy_odd_vs_even"] = kid(a, b)
    else:
        print(f"note: {raw} not found: the real reference is left out", file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{args.tag}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    lines = ["# 3D generation end to end", "", f"Command: `{report['command']}`  ",
             f"Runs: `{report['generate_command']}`  ", f"Date: {report['date']}, {report['machine']}", "",
             f"Wall time {report['seconds_total']:.0f} s for {len(report['volumes'])} volume(s) "
             f"({report['seconds_per_volume']:.0f} s per volume, model loading included); peak resident memory "
             f"{report['peak_rss_mib']:.0f} MiB.", "",
             "| volume | shape | cells | lifted by multiview | ellipsoid fallback | adjacent-slice corr. | "
             "within-cell corr. | stripe score |", "|---|---|---|---|---|---|---|---|"]
    for i, v in enumerate(report["volumes"]):
        c = v["continuity"]
        lines.append(f"| {i} | {'×'.join(map(str, v['shape']))} | {v['cells']} | {v['multiview_cells']} | "
                     f"{v['fallback_cells']} | {c['adjacent_corr']:.3f} | {c['adjacent_corr_within_cell']:.3f} | "
                     f"{c['stripe']:.2f} |")
    lines += ["", "KID (mean ± std over subsets of 50) / FID on 48-px tiles:", "",
              "| sets | KID | FID | tiles |", "|---|---|---|---|"]
    for key, name in (("synthetic_kid_xz_vs_xy", "synthetic XZ vs XY"),
                      ("synthetic_kid_xy_odd_vs_even", "synthetic XY odd vs even slices (no-difference reference)"),
                      ("real_bbbc050_kid_xz_vs_xy", "real BBBC050 XZ vs XY"),
                      ("real_bbbc050_kid_xy_odd_vs_even", "real BBBC050 XY odd vs even")):
        if key in report:
            k = report[key]
            lines.append(f"| {name} | {k['kid']:.4f} ± {k['kid_std']:.4f} | {k['fid']:.1f} | {k['n_a']} / {k['n_b']} |")
    if "real_continuity_recorded" in report:
        lines += ["", "Real volumes (recorded in texture3d_continuity.md): adjacent-slice correlation inside cells "
                  "(10th-90th percentile over slice pairs), within-cell correlation, stripe score:", ""]
        for name, c in report["real_continuity_recorded"].items():
            lines.append(f"- {name}: {c['adjacent_corr']:.3f} ({c['pair_corr_p10']:.3f}-{c['pair_corr_p90']:.3f}), "
                         f"{c['adjacent_corr_within_cell']:.3f}, {c['stripe']:.2f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
