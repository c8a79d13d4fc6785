"""Time from `python run.py experiment=smoke glue=none` to its first training step, broken down.

Each run is a fresh `python run.py ...` (through a small wrapper that runs run.py with runpy and
stamps the time at a few points, patching functions as their modules are imported, so robablate
itself is unchanged); the wrapper exits at the first training_step. Segments:
  python + run.py imports   process start -> the @hydra.main function is called (python, hydra)
  hydra compose             -> robablate.pipeline.run entered (parse overrides, compose, run dir)
  imports in run()          -> prepare() entered (validate(cfg), torch, lightning, transformers)
  data preparation          prepare(): corpus, tokenizer, token caches, instances (until pretrain())
  module + Trainer          pretrain() entered -> Trainer.fit called (model init, Trainer setup)
  fit -> first step         Lightning's fit setup, dataloaders, first batch -> training_step
Runs: one with a fresh cache dir (tokenizer trained, caches built), then --repeats with that cache
warm (the usual case: every arm after the first); medians are reported. Optionally
(--importtime) the slowest top-level imports from `python -X importtime`.

    python experiments/bench_startup.py [--repeats 3] [--importtime]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["experiment=smoke", "glue=none", "trainer.enable_progress_bar=false"]

WRAPPER = r"""
import time
T = {"python_up": time.time()}
import importlib.abc, importlib.machinery, json, os, runpy, sys

def mark(name):
    T.setdefault(name, time.time())

def wrap(obj, attr, before):
    orig = getattr(obj, attr)
    def wrapper(*a, **k):
        before()
        return orig(*a, **k)
    setattr(obj, attr, wrapper)

def first_step():
    mark("first_step")
    print("STARTUP " + json.dumps(T), flush=True)
    os._exit(0)

def patch_pretrain(m):
    import lightning.pytorch as pl
    wrap(m, "pretrain", lambda: mark("pretrain"))
    wrap(pl.Trainer, "fit", lambda: mark("fit"))
    wrap(m.PretrainModule, "training_step", first_step)

PATCHES = {
    "robablate.pipeline": lambda m: wrap(m, "run", lambda: mark("pipeline_run")),
    "robablate.datamodule": lambda m: wrap(m, "prepare", lambda: mark("prepare")),
    "robablate.pretrain": patch_pretrain,
}

class PostImport(importlib.abc.MetaPathFinder):
    # Patch a module right after it is executed, without importing it earlier than run.py would.
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        exec_module = spec.loader.exec_module
        def patched(module):
            exec_module(module)
            PATCHES[name](module)
        spec.loader.exec_module = patched
        return spec

sys.meta_path.insert(0, PostImport())

import hydra  # run.py's first import; its @hydra.main function is wrapped to stamp its call
hydra_main = hydra.main
def main(*a, **k):
    decorate = hydra_main(*a, **k)
    def deco(fn):
        def task(cfg):
            mark("hydra_task")
            return fn(cfg)
        task.__name__, task.__module__ = fn.__name__, fn.__module__
        decorated = decorate(task)
        def call(*aa, **kk):
            mark("hydra_main")
            return decorated(*aa, **kk)
        return call
    return deco
hydra.main = main
sys.argv = ["run.py"] + sys.argv[1:]
runpy.run_path("run.py", run_name="__main__")
print("STARTUP-NO-STEP " + json.dumps(T), flush=True)
"""

SEGMENTS = [  # (label, from stamp, to stamp)
    ("python + run.py imports", "spawn", "hydra_main"),
    ("hydra compose", "hydra_main", "pipeline_run"),
    ("imports in run()", "pipeline_run", "prepare"),
    ("data preparation", "prepare", "pretrain"),
    ("module + Trainer", "pretrain", "fit"),
    ("fit -> first step", "fit", "first_step"),
]


def one_run(run_dir: Path, cache: Path) -> dict[str, float]:
    cmd = [sys.executable, "-c", WRAPPER, *ARGS, f"run_dir={run_dir}", f"cache_dir={cache}"]
    spawn = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("STARTUP ")), None)
    if line is None:
        raise SystemExit(f"no training step reached (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    stamps = {"spawn": spawn, **json.loads(line[len("STARTUP "):])}
    out = {label: stamps[b] - stamps[a] for label, a, b in SEGMENTS}
    out["total"] = stamps["first_step"] - spawn
    return out


# Packages worth naming in the import breakdown (each is reported at its first import, cumulative,
# so a nested one is also counted in its parent: torchmetrics inside lightning, for instance).
KEY_IMPORTS = ("hydra", "omegaconf", "numpy", "torch", "torch._dynamo", "lightning", "torchmetrics", "transformers",
               "tokenizers", "scipy", "sympy", "matplotlib", "robablate.datamodule", "robablate.pretrain")


def import_times() -> list[tuple[float, str, int]]:
    """(cumulative s, package, nesting depth) at the first import of each KEY_IMPORTS package."""
    code = "import hydra, omegaconf, robablate.config, robablate.pipeline, robablate.datamodule, robablate.pretrain"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        if name.strip() in KEY_IMPORTS:
            rows.append((int(parts[1]) / 1e6, name.strip(), (len(name) - len(name.lstrip())) // 2))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="warm-cache runs (median reported)")
    p.add_argument("--importtime", action="store_true", help="also list the slowest imports (-X importtime)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="robablate-bench-startup-"))
    try:
        cold = one_run(tmp / "run-cold", tmp / "cache")
        warm = [one_run(tmp / f"run-warm{i}", tmp / "cache") for i in range(args.repeats)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"`python run.py {' '.join(ARGS)}` to its first training step; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; warm = median of {args.repeats} runs with built caches")
    print(f"{'segment':26s} {'cold cache s':>12s} {'warm cache s':>12s}")
    for label in [s[0] for s in SEGMENTS] + ["total"]:
        print(f"{label:26s} {cold[label]:12.2f} {statistics.median(w[label] for w in warm):12.2f}")
    if args.importtime:
        print("imports (python -X importtime; cumulative s at first import, indented by nesting):")
        for secs, name, depth in import_times():
            print(f"  {secs:6.2f}  {'  ' * min(depth, 8)}{name}")
    total = statistics.median(w["total"] for w in warm)
    print(f"startup_to_first_step_s: {total:.2f} (target <= 10 s, warm cache)")


if __name__ == "__main__":
    main()
