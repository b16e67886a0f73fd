"""Pool several segmentation benchmark runs of one configuration that differ only in their seeds or arms.

A 2-core machine runs one long benchmark per core; splitting one comparison over runs, by seed (``--seeds 0 1 2``
and ``--seeds 3 4``) or by kind of arm (``--arms real`` and ``--arms mixed --synthetic DIR``), and pooling them
here gives the same table as one run with every seed and arm, "SEG vs real" included. Refuses runs whose
configuration (data, budget, steps, segmenter ...) differs in anything but the seeds and arms, an arm that two
runs trained from different synthetic sources, and an arm that two runs trained with the same seed.

Usage::

    python benchmarks/pool_segmentation_runs.py benchmarks/results/segmentation_A.json \\
        benchmarks/results/segmentation_B.json --tag A_pooled

Writes ``benchmarks/results/segmentation_<tag>.md``: per arm SEG and AP@0.5, mean ± std over all seeds (ddof = 1),
and each seed's score. Runs with ``--ensemble K`` also get, per arm, the row "(1 or K checkpoints, chosen on
validation)": seed by seed the single checkpoint or the ensemble, whichever scored higher on validation.
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
_PER_RUN = {"seeds", "command", "versions", "threads", "arms"}
# keys that only the arms trained on synthetic data depend on: they must agree between the runs giving such an arm
_SOURCE_KEYS = {"synthetic", "n_synthetic", "classic", "real_fraction", "real_finetune_steps"}
# settings added after runs were recorded, with the value every earlier run trained with
_SEGMENTER_DEFAULTS = {"decay_steps": 0}
_CONFIG_DEFAULTS = {"real_finetune_steps": 0, "ensemble": 1, "border_paddings": None}


# the suffix of the row that, seed by seed, takes an arm's single-checkpoint or ensemble run, whichever scored
# higher on validation (the test image plays no part in the choice)
_CHOSEN = " (1 or {k} checkpoints, chosen on validation)"
_CHOSEN_MARK = " (1 or "
_ENSEMBLE_MARK = " (ensemble of "  # the benchmark's "<arm> (ensemble of K)" rows


def _reference(arm: str, arms) -> str | None:
    """The row an arm's "SEG vs real" compares with: "real (ensemble of K)" for "<arm> (ensemble of K)", "real (1 or
    K checkpoints, chosen on validation)" for such a row, else "real"; None for the reference itself and when the
    runs do not hold it.

    >>> _reference("real + a (ensemble of 3)", ["real", "real (ensemble of 3)"])
    'real (ensemble of 3)'
    >>> _reference("real + a (1 or 3 checkpoints, chosen on validation)", ["real (1 or 3 checkpoints, chosen on validation)"])
    'real (1 or 3 checkpoints, chosen on validation)'
    >>> [_reference(arm, ["real"]) for arm in ("real (4× steps)", "real (ensemble of 3)", "real")]
    ['real', None, None]
    """
    start = max(arm.rfind(_ENSEMBLE_MARK), arm.rfind(_CHOSEN_MARK))
    reference = "real" + (arm[start:] if start >= 0 else "")
    return reference if reference != arm and reference in arms else None


def _chosen_on_validation(single: list[dict], ensemble: list[dict]) -> list[dict] | None:
    """Seed by seed, the single-checkpoint run or the ensemble run, whichever has the higher validation score (the
    single run on a tie); None when a run lacks the validation scores (runs recorded without them).

    Each run is a benchmark JSON run: the single one with its "learning_curve" (per checkpoint the validation
    "score"), the ensemble one with its "ensemble_validation_score". The chosen run gets "chosen_row": "single" or
    "ensemble".
    """
    by_seed = {run["seed"]: run for run in ensemble}
    if sorted(by_seed) != sorted(run["seed"] for run in single):
        return None
    chosen = []
    for run in single:
        other = by_seed[run["seed"]]
        if not run.get("learning_curve") or "ensemble_validation_score" not in other:
            return None
        single_score = max(point["score"] for point in run["learning_curve"])
        if other["ensemble_validation_score"] > single_score:
            chosen.append({**other, "chosen_row": "ensemble"})
        else:
            chosen.append({**run, "chosen_row": "single"})
    return chosen


def add_chosen_rows(pooled: dict) -> dict:
    """`pooled` with, after each arm that has an "(ensemble of K)" row, the row "<arm> (1 or K checkpoints, chosen
    on validation)" (see `_chosen_on_validation`); unchanged where the runs lack validation scores."""
    out = {}
    for arm, runs in pooled.items():
        out[arm] = runs
        single, mark, size = arm.rpartition(_ENSEMBLE_MARK)
        if not mark or single not in pooled:
            continue
        chosen = _chosen_on_validation(pooled[single], runs)
        if chosen is not None:
            out[single + _CHOSEN.format(k=size.rstrip(")"))] = chosen
    return out


def _uses_synthetic(arm: str) -> bool:
    """False for the budget-only arms ("real" and its long row "real (4× steps)")."""
    return not (arm == "real" or arm.startswith("real ("))


def pool(results: list[dict]) -> dict:
    """Arm name -> the per-seed runs (as in the benchmark JSON) of every result that has it, in the order given."""
    configs = [{**_CONFIG_DEFAULTS, **{k: v for k, v in r["config"].items() if k not in _PER_RUN}} for r in results]
    for config in configs:
        if isinstance(config.get("segmenter"), dict):
            config["segmenter"] = {**_SEGMENTER_DEFAULTS, **config["segmenter"]}
    shared = [{k: v for k, v in c.items() if k not in _SOURCE_KEYS} for c in configs]
    for config in shared[1:]:
        if config != shared[0]:
            differing = sorted(k for k in set(config) | set(shared[0]) if config.get(k) != shared[0].get(k))
            raise CellcascadeError(f"the runs differ in more than their seeds and arms: {', '.join(differing)}")
    pooled: dict[str, list[dict]] = {}
    for arm in dict.fromkeys(name for r in results for name in r["arms"]):
        giving = [i for i, r in enumerate(results) if arm in r["arms"]]
        if _uses_synthetic(arm):
            sources = [{k: configs[i].get(k) for k in _SOURCE_KEYS} for i in giving]
            differing = sorted(k for k in _SOURCE_KEYS if any(s[k] != sources[0][k] for s in sources))
            if differing:
                raise CellcascadeError(f"arm {arm!r} comes from runs with different {', '.join(differing)}")
        runs = [run for i in giving for run in results[i]["arms"][arm]["runs"]]
        seeds = [run["seed"] for run in runs]
        if len(set(seeds)) != len(seeds):
            raise CellcascadeError(f"the runs share seeds for arm {arm!r}: {seeds}")
        pooled[arm] = runs
    return pooled


def report(pooled: dict, paths: list[Path], command: str) -> str:
    summary = {arm: _summarize(runs) for arm, runs in pooled.items()}  # the benchmark's own mean ± std (ddof = 1)
    lines = ["# Segmentation benchmark, seeds pooled over runs", "", f"Command: `{command}`", "",
             "Runs: " + ", ".join(f"[{p.stem}]({p.stem}.md)" for p in paths) + " (identical configuration but the seeds and arms).",
             "", "| arm | seeds | chosen steps | SEG (mean ± std) | SEG per seed | AP@0.5 (mean ± std) | SEG vs real |",
             "|---|---|---|---|---|---|---|"]
    for arm, s in summary.items():
        reference = summary.get(_reference(arm, summary))
        if reference is None:
            gain = ""
        elif reference["seg_mean"] > 0:
            gain = f"{s['seg_mean'] / reference['seg_mean'] - 1:+.1%}"
        else:
            gain = "n/a (real SEG 0)"  # e.g. a few-step smoke run
        per_seed = ", ".join(f"{run['test_seg']:.3f}" + (" (ens)" if run.get("chosen_row") == "ensemble" else "")
                             for run in pooled[arm])
        lines.append(f"| {arm} | {', '.join(map(str, s['seeds']))} | {', '.join(map(str, s['chosen_steps']))} | "
                     f"{_fmt(s, 'seg')} | {per_seed} | {_fmt(s, 'ap50')} | {gain} |")
    notes = ["", "Std over seeds, ddof = 1. \"SEG vs real\": relative difference of the means (an ensemble row: "
             "against real only's ensemble row)."]
    if any(_CHOSEN_MARK in arm for arm in summary):
        notes.append("\"1 or K checkpoints, chosen on validation\": per seed, the single-checkpoint run or the "
                     "ensemble run, whichever scored higher on the validation cells (\"(ens)\": the ensemble); the "
                     "test image plays no part in the choice.")
    for arm, stats in summary.items():
        name = _reference(arm, summary)
        if name is not None and sorted(stats["seeds"]) != sorted(summary[name]["seeds"]):
            # a gain over real's mean on other seeds mixes seed noise into it: say so under the table
            notes.append(f"Seeds differ from {name}'s ({', '.join(map(str, summary[name]['seeds']))}) for "
                         f"{arm}: its \"SEG vs real\" compares means over different seeds.")
    return "\n".join(lines + notes + [""])


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
        pooled = add_chosen_rows(pool([json.loads(p.read_text()) for p in args.runs]))
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
