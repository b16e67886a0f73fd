"""Pool the seeds of several segmentation benchmark runs that differ only in their seeds.

A 2-core machine runs one long benchmark per core; splitting the seeds of one configuration over two runs
(``--seeds 0 1 2`` and ``--seeds 3 4``) and pooling them here gives the same table as one run with every seed.
Refuses runs whose configuration (data, budget, steps, segmenter, synthetic sources ...) differs in anything but
the seeds, or that share a seed.

Usage::

    python benchmarks/pool_segmentation_runs.py benchmarks/results/segmentation_A.json \\
        benchmarks/results/segmentation_B.json --tag A_pooled

Writes ``benchmarks/results/segmentation_<tag>.md``: per arm SEG and AP@0.5, mean ± std over all seeds (ddof = 1),
and each seed's score.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.benchmark import _fmt, _summarize

RESULTS = Path(__file__).resolve().parent / "results"
# configuration keys that may differ between pooled runs
_PER_RUN = {"seeds", "command", "versions", "threads"}


def pool(results: list[dict]) -> dict:
    """Arm name -> the per-seed runs (as in the benchmark JSON) of every result, in the order given."""
    configs = [{k: v for k, v in r["config"].items() if k not in _PER_RUN} for r in results]
    for config in configs[1:]:
        if config != configs[0]:
            differing = sorted(k for k in set(config) | set(configs[0]) if config.get(k) != configs[0].get(k))
            raise CellcascadeError(f"the runs differ in more than their seeds: {', '.join(differing)}")
    seeds = [s for r in results for s in r["config"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise CellcascadeError(f"the runs share seeds: {seeds}")
    if any(set(r["arms"]) != set(results[0]["arms"]) for r in results):
        raise CellcascadeError("the runs have different arms")
    return {arm: [run for r in results for run in r["arms"][arm]["runs"]] for arm in results[0]["arms"]}


def report(pooled: dict, paths: list[Path], command: str) -> str:
    summary = {arm: _summarize(runs) for arm, runs in pooled.items()}  # the benchmark's own mean ± std (ddof = 1)
    reference = summary.get("real")
    lines = ["# Segmentation benchmark, seeds pooled over runs", "", f"Command: `{command}`", "",
             "Runs: " + ", ".join(f"[{p.stem}]({p.stem}.md)" for p in paths) + " (identical configuration but the seeds).",
             "", "| arm | seeds | chosen steps | SEG (mean ± std) | SEG per seed | AP@0.5 (mean ± std) | SEG vs real |",
             "|---|---|---|---|---|---|---|"]
    for arm, s in summary.items():
        gain = "" if reference is None or arm == "real" else f"{s['seg_mean'] / reference['seg_mean'] - 1:+.1%}"
        per_seed = ", ".join(f"{run['test_seg']:.3f}" for run in pooled[arm])
        lines.append(f"| {arm} | {', '.join(map(str, s['seeds']))} | {', '.join(map(str, s['chosen_steps']))} | "
                     f"{_fmt(s['seg_mean'], s['seg_std'])} | {per_seed} | {_fmt(s['ap50_mean'], s['ap50_std'])} | {gain} |")
    return "\n".join(lines + ["", "Std over seeds, ddof = 1. \"SEG vs real\": relative difference of the means.", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="benchmark JSON files (segmentation_<tag>.json)")
    parser.add_argument("--tag", required=True, help="writes results/segmentation_<tag>.md")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the report (default benchmarks/results)")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give at least two runs to pool")
    missing = [str(p) for p in args.runs if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    try:
        pooled = pool([json.loads(p.read_text()) for p in args.runs])
    except CellcascadeError as exc:
        parser.exit(2, f"error: {exc}\n")
    command = "python benchmarks/pool_segmentation_runs.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = report(pooled, args.runs, command)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"segmentation_{args.tag}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
