"""The headline comparison in one command: real only against real + cellcascade on the embedded sample.

Runs what ``results/segmentation_summary.md`` ran by hand over several sessions, so that a machine with more
cores or a GPU can repeat (or vary) it in one go:

1. **Synthetic data**: ``cellcascade generate benchmarks/cascades/sample-budget`` (the cascade fitted on the
   annotation budget only) ``--folders`` times, ``--images-per-folder`` images each, seeds 1, 2, …, with the
   recorded options (``--size 192 192 --density 5.9 --min-solidity 0.879 --overlap 0.1 --clustering 0.1``); the
   image/mask pairs copied into one folder ``WORK/synthetic-ovl-N`` with an ``sS_`` prefix (the summary's
   ``runs/synthetic-ovl-256``).
2. **Segmentation benchmark**, one run per arm (real only; real + cellcascade) and seed, ``--jobs`` at a time, with
   the best recorded recipe (1200 steps, 20 checkpoints, weight average 0.98, cells at 24 px, 96-px tiles, mask
   thresholds, shrink and a mirror margin of 0 or 32 px chosen on validation).
3. **Pooling** the runs with ``pool_segmentation_runs.py`` into ``segmentation_<tag>.md``.

Every step is skipped when its output is already there, made with the same options, so a stopped run goes on
where it stopped (a benchmark run that was stopped trains again). Each job writes its log to ``WORK/logs``. Extra
benchmark options (e.g. ``--ensemble 3``) go after ``--``.

Usage::

    python benchmarks/headline_gain.py --work runs/headline --jobs 2   # the recorded recipe, on 2 CPU cores
    python benchmarks/headline_gain.py --work runs/headline-gpu --jobs 4 --device cuda -- --ensemble 3

On the shared 2-core CPU a 1200-step run trained in 19–24.5 min beside one other (``--jobs 2``) and validated and
tested in 6–9 min; generating 32 images took 325–389 s (``segmentation_summary.md``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from cellcascade.devices import DEVICES

BENCHMARKS = Path(__file__).resolve().parent
CASCADE = BENCHMARKS / "cascades" / "sample-budget"
GENERATE_OPTIONS = ["--density", "5.9", "--min-solidity", "0.879", "--overlap", "0.1", "--clustering", "0.1"]
# recipe C of segmentation_summary.md at 1200 steps, with the mirror margin
RECIPE = ["--data", "sample", "--long-factor", "1", "--ema", "0.98", "--diam-mean", "24", "--tile", "96",
          "--tune-masks", "--cellprob-thresholds", "-1.5", "-1", "-0.5", "0", "0.5", "1", "1.5", "2",
          "--flow-thresholds", "0.4", "0.8", "--shrink-fractions", "0", "0.04", "0.08", "0.12",
          "--border-paddings", "0", "32", "--no-classic"]


def generate_commands(args: argparse.Namespace) -> list[tuple[str, list[str], Path]]:
    """(name, command, output folder) of every generate job whose folder is not complete yet."""
    jobs = []
    for seed in range(1, args.folders + 1):
        out = args.work / "generated" / f"gen{seed}"
        if _generated_as_asked(out, args, seed):
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "cellcascade", "generate", str(args.cascade),
                   "--n", str(args.images_per_folder), "--size", *map(str, args.size), *GENERATE_OPTIONS,
                   "--seed", str(seed), "--threads", "1", "--device", args.device, "--quiet", "--overwrite",
                   "--out", str(out)]
        jobs.append((f"generate seed {seed}", command, out))
    return jobs


def _generated_as_asked(folder: Path, args: argparse.Namespace, seed: int) -> bool:
    """Whether `folder` holds a finished generate run with this cascade, seed, image count and size."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    config = json.loads(manifest.read_text())["config"]
    return (config["seed"] == seed and config["n"] == args.images_per_folder and config["size"] == args.size
            and Path(config["model"]).resolve() == args.cascade.resolve())


def merge_generated(args: argparse.Namespace) -> Path:
    """Copy the generated pairs into one folder, sS_ prefixed; returns it (kept while its inputs are the same)."""
    merged = args.work / f"synthetic-ovl-{args.folders * args.images_per_folder}"
    stamp = json.dumps({"cascade": str(args.cascade.resolve()), "folders": args.folders,
                        "images_per_folder": args.images_per_folder, "size": args.size})
    if (merged / ".complete").is_file() and (merged / ".complete").read_text() == stamp:
        return merged
    shutil.rmtree(merged, ignore_errors=True)
    merged.mkdir(parents=True)
    for seed in range(1, args.folders + 1):
        for path in sorted((args.work / "generated" / f"gen{seed}").glob("*.tif")):
            shutil.copyfile(path, merged / f"s{seed}_{path.name}")
    (merged / ".complete").write_text(stamp)
    return merged


def result_path(args: argparse.Namespace, arm: str, seed: int) -> Path:
    """The benchmark JSON of one arm ("real" or "mixed") and seed: WORK/results/segmentation_<tag>_<arm>_seed<S>.json."""
    return args.work / "results" / f"segmentation_{args.tag}_{arm}_seed{seed}.json"


def benchmark_commands(args: argparse.Namespace, synthetic: Path) -> list[tuple[str, list[str], Path]]:
    """(name, command, result JSON) of every benchmark run; those already recorded are left out."""
    jobs = []
    n_synthetic = args.folders * args.images_per_folder
    for seed in args.seeds:
        for arm in ("real", "mixed"):
            result = result_path(args, arm, seed)
            options = [*RECIPE, "--steps", str(args.steps), "--checkpoints", str(args.checkpoints),
                       "--seeds", str(seed), "--arms", arm, "--n-synthetic", str(n_synthetic), "--device", args.device,
                       "--checkpoint-dir", str(args.work / "checkpoints"), "--out", str(args.work / "results"),
                       "--tag", result.stem.removeprefix("segmentation_"), *args.benchmark_options]
            if arm == "mixed":
                options += ["--synthetic", str(synthetic)]
            if not _recorded_with(result, options):
                jobs.append((f"{arm} seed {seed}", [sys.executable, str(BENCHMARKS / "segmentation_benchmark.py"),
                                                    *options], result))
    return jobs


def _recorded_with(result: Path, options: list[str]) -> bool:
    """Whether the benchmark JSON `result` exists and was made with exactly these options."""
    if not result.is_file():
        return False
    recorded = json.loads(result.read_text())["config"]["command"]
    return recorded == "python benchmarks/segmentation_benchmark.py " + shlex.join(options)


def run_jobs(jobs: list[tuple[str, list[str], Path]], n_parallel: int, logs: Path, what: str) -> None:
    """Run the commands, `n_parallel` at a time, each logging to logs/<name>.log; exit on the first failure."""
    if not jobs:
        return
    logs.mkdir(parents=True, exist_ok=True)

    def run(job):
        name, command, _ = job
        log = logs / (name.replace(" ", "_") + ".log")
        start = time.time()
        with open(log, "w") as stream:
            stream.write(shlex.join(command) + "\n")
            stream.flush()
            code = subprocess.call(command, stdout=stream, stderr=subprocess.STDOUT)
        return name, code, log, time.time() - start

    with ThreadPoolExecutor(max_workers=n_parallel) as pool, tqdm(total=len(jobs), desc=what, unit="job") as bar:
        for future in as_completed([pool.submit(run, job) for job in jobs]):
            name, code, log, seconds = future.result()
            if code != 0:
                tail = log.read_text().strip().splitlines()[-1:] or [""]
                sys.exit(f"error: {name} failed (exit {code}): {tail[0]} (log: {log})")
            bar.write(f"{name}: done in {seconds / 60:.1f} min")
            bar.update()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     usage="%(prog)s [options] [-- extra segmentation_benchmark.py options]")
    parser.add_argument("--work", type=Path, default=Path("runs/headline"),
                        help="folder for the synthetic data, checkpoints, logs and per-run results (default "
                             "runs/headline; reused to resume)")
    parser.add_argument("--tag", default="sample_headline",
                        help="names the runs (segmentation_<tag>_<arm>_seed<S>) and the pooled report "
                             "(segmentation_<tag>.md) (default sample_headline)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the pooled report (default WORK/results, beside the runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="training seeds (default 0 1 2 3 4)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at a time: one per CPU core, or more on a GPU "
                        "(default 2)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where generation and Cellpose run (default auto: a CUDA GPU if there is one)")
    parser.add_argument("--steps", type=int, default=1200, help="optimizer steps of every arm (default 1200)")
    parser.add_argument("--checkpoints", type=int, default=20, help="checkpoints per run (default 20)")
    parser.add_argument("--folders", type=int, default=8, help="generate runs of synthetic images (default 8)")
    parser.add_argument("--images-per-folder", type=int, default=32, help="images per generate run (default 32)")
    parser.add_argument("--size", type=int, nargs=2, default=[192, 192], metavar=("H", "W"),
                        help="synthetic image size (default 192 192)")
    parser.add_argument("--cascade", type=Path, default=CASCADE,
                        help="cascade folder to generate with (default benchmarks/cascades/sample-budget, fitted on "
                             "the annotation budget only)")
    args = parser.parse_args(argv)
    args.benchmark_options = extra
    for name in ("jobs", "steps", "checkpoints", "folders", "images_per_folder"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.size) < 32:
        parser.error("--size must be at least 32 32")
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        parser.error("--seeds must be distinct and >= 0")
    if not (args.cascade / "cascade.json").is_file():
        parser.error(f"--cascade {args.cascade}: not a cascade folder (no cascade.json)")
    if args.work.exists() and not args.work.is_dir():
        parser.error(f"--work {args.work}: exists and is not a folder")

    logs = args.work / "logs"
    run_jobs(generate_commands(args), args.jobs, logs, "generate")
    synthetic = merge_generated(args)
    run_jobs(benchmark_commands(args, synthetic), args.jobs, logs, "benchmark")
    results = [result_path(args, arm, seed) for arm in ("real", "mixed") for seed in args.seeds]
    out = args.out or args.work / "results"
    return subprocess.call([sys.executable, str(BENCHMARKS / "pool_segmentation_runs.py"), *map(str, results),
                            "--tag", args.tag, "--out", str(out)])


if __name__ == "__main__":
    sys.exit(main())
