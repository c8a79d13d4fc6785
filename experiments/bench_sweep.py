"""Filling the cores across a sweep: 1 job x all threads (sequential) vs 2 jobs x 1 thread (joblib).

A 4-run BERT-Tiny sweep (study v2's Table 1 arm: `experiment=wikitext2_cpu_table1 masking=dynamic
seed=0,1,2,3`: WikiText-2's first 16 articles, SEGMENT-PAIR+NSP, BLiMP on every run) started two ways:

- sequential: `python run.py -m ...` with the basic launcher, each job on all cores (torch's default);
- parallel:   `python run.py -m hydra/launcher=local ...` (joblib, 2 jobs; loky gives each worker
  OMP_NUM_THREADS = cores / n_jobs = 1 on 2 cores).

Measured: wall time from the start of `run.py -m` to its exit (the last result written), per mode,
modes alternating over --rounds (order flipped each round); and whether the two modes' results are
identical: every number of results.json's plan, data, pretrain (validation curve included), blimp and
glue sections, timings and throughput excepted, compared run by run (the largest difference is printed).
The caches are built once beforehand by a short warm-up run, so neither mode pays for them.

    python experiments/bench_sweep.py [--tokens 2000000] [--rounds 1] [--seeds 0,1,2,3] [--jobs 2]
    python experiments/bench_sweep.py --tokens 100000   # a short check (minutes)

Why results can differ: MKL splits a matmul's reduction differently with 1 and 2 threads, so float32
sums round differently; on a long run the differences grow through training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("plan", "data", "pretrain", "blimp", "glue")


def is_timing(key: str) -> bool:
    """Throughput, wall times, MFU and paths: measurements of the machine, not results."""
    return (key.endswith("_s") or "per_s" in key or "mfu" in key or key in ("peak_flops", "hf_dir", "run_dir")
            or key == "wall_s")


def flatten(obj, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for k, v in obj.items():
            if not is_timing(str(k)):
                out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): obj}


def results_numbers(path: Path) -> dict[str, object]:
    r = json.loads(path.read_text())
    return flatten({k: r.get(k) for k in SECTIONS})


def compare(a: dict[str, Path], b: dict[str, Path]) -> tuple[bool, str]:
    """(identical?, a one-line account) over runs present in both, keyed by their sweep sub-path.

    Keys that only one side has (a results.json field added between revisions) are counted apart from
    values that differ, so a new field does not hide the largest numeric difference."""
    if set(a) != set(b):
        return False, f"different runs: {sorted(set(a) ^ set(b))}"
    worst, where, numeric, other, first_other, one_side = 0.0, "", 0, 0, "", set()
    for run in sorted(a):
        x, y = results_numbers(a[run]), results_numbers(b[run])
        one_side |= set(x) ^ set(y)
        for key in sorted(set(x) & set(y)):
            u, v = x[key], y[key]
            if u == v or (isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v)):
                continue  # NaN == NaN here: e.g. the random-init control's train_loss (it trains nothing)
            if isinstance(u, (int, float)) and isinstance(v, (int, float)):
                numeric += 1
                rel = abs(u - v) / max(abs(u), abs(v), 1e-300)
                if math.isnan(rel) or rel > worst or not where:
                    worst, where = rel, f"{run}: {key} {u!r} vs {v!r}"
            else:
                other += 1
                first_other = first_other or f"{run}: {key} {u!r} vs {v!r}"
    if not (numeric or other or one_side):
        return True, f"identical: every number of {len(a)} runs ({', '.join(SECTIONS)})"
    parts = []
    if numeric:
        parts.append(f"{numeric} numbers differ, largest relative difference {worst:.2e} ({where})")
    if other:
        parts.append(f"{other} other values differ (first: {first_other})")
    if one_side:
        parts.append(f"{len(one_side)} fields on one side only ({', '.join(sorted(one_side)[:3])}"
                     f"{', ...' if len(one_side) > 3 else ''})")
    return False, "; ".join(parts)


def sweep_results(folder: Path) -> dict[str, Path]:
    return {str(p.parent.relative_to(folder)): p for p in sorted(folder.rglob("results.json"))}


def run_sweep(args, folder: Path, parallel: bool) -> float:
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *(["hydra/launcher=local", f"hydra.launcher.n_jobs={args.jobs}"]
                                                         if parallel else []),
           *args.overrides, f"seed={args.seeds}", f"hydra.sweep.dir={folder}"]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return wall


def sweep_overrides(args, tokens: int) -> list[str]:
    return ["experiment=wikitext2_cpu_table1", "masking=dynamic", f"train.tokens={tokens}", f"cache_dir={args.cache_dir}",
            "trainer.enable_progress_bar=false", "logger=none", *args.extra]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=2_000_000, help="train.tokens per run (the study's 2M by default)")
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--jobs", type=int, default=2, help="joblib jobs in the parallel mode")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    p.add_argument("--keep", default=None, help="keep the sweeps in this folder (default: a temporary one)")
    p.add_argument("extra", nargs="*", help="more run.py overrides")
    args = p.parse_args()
    args.overrides = sweep_overrides(args, args.tokens)
    n = len(args.seeds.split(","))
    print(f"{n}-run sweep: {' '.join(args.overrides)} seed={args.seeds}; {os.cpu_count()} CPUs; sequential (basic "
          f"launcher, torch's default threads) vs hydra/launcher=local n_jobs={args.jobs}; {args.rounds} round(s); "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep or tmp)
        warm = [sys.executable, str(ROOT / "run.py"), *sweep_overrides(args, 20_000), "seed=0",
                f"run_dir={base / 'warmup'}"]
        subprocess.run(warm, cwd=ROOT, check=True, capture_output=True)  # tokenizer, token caches, BLiMP data
        walls: dict[str, list[float]] = {"sequential": [], "parallel": []}
        folders: dict[str, Path] = {}
        for r in range(args.rounds):
            order = ["sequential", "parallel"] if r % 2 == 0 else ["parallel", "sequential"]
            for mode in order:
                folder = base / f"round{r}" / mode
                walls[mode].append(run_sweep(args, folder, mode == "parallel"))
                folders.setdefault(mode, folder)
                print(f"round {r} {mode:10s} {walls[mode][-1]:8.1f} s wall to the last result "
                      f"(load {os.getloadavg()[0]:.2f} after)", flush=True)
        same, account = compare(sweep_results(folders["sequential"]), sweep_results(folders["parallel"]))
    seq, par = (sorted(walls[m])[len(walls[m]) // 2] for m in ("sequential", "parallel"))
    print(f"results sequential vs parallel: {account}")
    print(f"sequential {seq:.1f} s, parallel {par:.1f} s (medians)")
    print(f"results_identical: {same}")
    print(f"speedup_parallel_vs_sequential: {seq / par:.2f}")


if __name__ == "__main__":
    main()
