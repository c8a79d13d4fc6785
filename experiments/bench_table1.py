"""Study v2's Table 1 sweep before and after a change: wall time and whether the results are identical.

The sweep is what experiments/wikitext2_cpu_v2/run_all.sh runs for Table 1: `experiment=wikitext2_cpu_table1`
(static vs dynamic masking x seeds 0,1,2: 6 runs, BERT-Tiny, 2M tokens, BLiMP) and its random-init
control (`model.init=random masking=dynamic seed=0,1,2`). Each side runs from a detached git worktree of
its revision (`git worktree add --detach`, removed afterwards), with PYTHONPATH at that worktree's src/, the
same Python and the same cache folder (warmed by a short run of each side first, so neither pays for
building tokenizers or token caches). The sides are interleaved seed by seed (before, after; after,
before; ...), so a slow stretch of a shared machine falls on both:

    make bench-table1 BEFORE=<rev> AFTER=<rev> [AFTER_ARGS='hydra/launcher=local'] [BEFORE_ARGS=...]
    python experiments/bench_table1.py --before <rev> --after <rev> [--after-args '...'] [--seeds 0,1,2]

`*_ARGS` are extra `run.py -m` arguments for that side (a launcher, `train.compile=true`, ...). Printed:
each side's wall seconds for the sweep, the control and both, the speedup, and whether every number of
the results (bench_sweep.compare: plan, data, pretrain with its curve, BLiMP; timings excepted) is
identical between the sides, else the largest difference. About 30 min per side on 2 quiet cores
(study v2: 1,636 s + 145 s). Run it on a quiet machine; each side's results stay in --out, which must
not hold results already (a finished run there would be reused by the relaunch rule, not timed). A
launcher's parallelism acts within one block: the two masking arms of a seed, or one control run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from bench_sweep import compare, sweep_results  # noqa: E402

SWEEPS = {"table1": ["experiment=wikitext2_cpu_table1"],
          "control": ["experiment=wikitext2_cpu_table1", "model.init=random", "masking=dynamic"]}


def checkout(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(where), rev], check=True,
                   capture_output=True)
    return where


def timed(cmd: list[str], cwd: Path) -> float:
    # The worktrees live elsewhere: ../shared/data (corpus, BLiMP) must be named from this checkout.
    shared = os.environ.get("ROBABLATE_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "ROBABLATE_SHARED_DATA": shared}
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} in {cwd} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return time.perf_counter() - t


def warm_up(name: str, tree: Path, common: list[str], out: Path) -> None:
    warm = [sys.executable, "run.py", "experiment=wikitext2_cpu_table1", "train.tokens=20000", "seed=0",
            f"run_dir={out / name / 'warmup'}", *[a for a in common if "launcher" not in a]]
    timed(warm, tree)


def run_block(name: str, tree: Path, common: list[str], sweep: str, seed: str, out: Path) -> float:
    """One seed of one sweep on one side. The seeds of a side share its sweep folder: Hydra names each
    job's folder by its overrides, so the layout equals one `seed=0,1,2` sweep's."""
    cmd = [sys.executable, "run.py", "-m", *SWEEPS[sweep], f"seed={seed}", f"hydra.sweep.dir={out / name / sweep}",
           *common]
    return timed(cmd, tree)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="git revision before the change")
    p.add_argument("--after", required=True, help="git revision after the change (may equal --before)")
    p.add_argument("--before-args", default="", help="extra run.py -m arguments for the before side")
    p.add_argument("--after-args", default="", help="extra run.py -m arguments for the after side")
    p.add_argument("--seeds", default="0,1,2", help="study v2's Table 1 seeds")
    p.add_argument("--out", default=str(ROOT / "outputs" / "bench_table1"))
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    args = p.parse_args()
    out = Path(args.out).resolve()
    if any(out.glob("*/*/**/results.json")):
        raise SystemExit(f"{out} holds results of an earlier benchmark: run.py would reuse them instead of running "
                         f"(robablate/relaunch.py). Remove it or pass --out <empty folder>.")
    trees = out / "trees"
    walls: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    results = {}
    try:
        trees_of, common = {}, {}
        for name in ("before", "after"):
            trees_of[name] = checkout(getattr(args, name), trees / name)
            common[name] = [f"cache_dir={args.cache_dir}", "trainer.enable_progress_bar=false",
                            *shlex.split(getattr(args, f"{name}_args"))]
            warm_up(name, trees_of[name], common[name], out)
        # Interleaved on a shared machine: seed by seed, the sides alternate (before, after, then after,
        # before, ...), so a slow stretch of the machine falls on both sides rather than on one.
        for sweep in SWEEPS:
            for i, seed in enumerate(args.seeds.split(",")):
                for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
                    wall = run_block(name, trees_of[name], common[name], sweep, seed, out)
                    walls[name][sweep] = walls[name].get(sweep, 0.0) + wall
                    print(f"{name} ({getattr(args, name)}): {sweep} seed {seed} {wall:,.0f} s "
                          f"(load {os.getloadavg()[0]:.2f})", flush=True)
        for name in ("before", "after"):
            results[name] = {f"{s}/{k}": v for s in SWEEPS for k, v in sweep_results(out / name / s).items()}
    finally:
        for name in ("before", "after"):
            if (trees / name).exists():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees / name)],
                               capture_output=True)
    same, account = compare(results["before"], results["after"])
    b, a = sum(walls["before"].values()), sum(walls["after"].values())
    print("| side | revision | table1 s | control s | total s |\n|---|---|---:|---:|---:|")
    for name, total in (("before", b), ("after", a)):
        extra = getattr(args, f"{name}_args")
        print(f"| {name} | {getattr(args, name)}{' ' + extra if extra else ''} | {walls[name]['table1']:,.0f} | "
              f"{walls[name]['control']:,.0f} | {total:,.0f} |")
    print(f"results before vs after: {account}")
    print(f"results_identical: {same}")
    print(f"speedup_table1_after_vs_before: {b / a:.2f}")


if __name__ == "__main__":
    main()
