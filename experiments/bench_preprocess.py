"""Preprocessing cost on WikiText-2: tokenizer training + token cache build, then cache reuse.

Each measurement runs `robablate.datamodule.prepare` (what `python run.py` does before
training: tokenizer, token caches for train and validation, instances) in a fresh Python process:
  build 1x   fresh cache dir, WikiText-2 train.txt (corpus=text, document_boundary=heading)
  reuse 1x   the same cache dir again (tokenizer and token caches are loaded, instances rebuilt)
  build 4x   fresh cache dir, a temp folder holding 4 copies of train.txt (4x the documents)
  reuse 4x
Reported per run: seconds in prepare() with its stages, the process's peak RSS (ru_maxrss of the
child, read by the child itself at exit) and its RSS before prepare() (imports only), so the growth
due to preprocessing is peak - baseline. Streaming encode + memmapped caches should keep that growth
flat as the corpus grows.

    python experiments/bench_preprocess.py [--data /work/shared/data/corpus/wikitext-2] [--copies 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("ROBABLATE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "corpus" / "wikitext-2"

CHILD = r"""
import json, resource, sys, time
def rss_mb():  # current RSS from /proc (Linux), MiB
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
t_start = time.perf_counter()
from hydra import compose, initialize_config_dir
from robablate.config import validate
from robablate.datamodule import prepare
conf, corpus, glob, cache = sys.argv[1:5]
with initialize_config_dir(config_dir=conf, version_base="1.3"):
    cfg = compose(config_name="config", overrides=[
        "corpus=text", f"corpus.path={corpus}", f"corpus.train_glob={glob}", "corpus.document_boundary=heading",
        f"cache_dir={cache}", "run_dir=" + cache + "/run", "glue=none"])
plan = validate(cfg)
import_s = time.perf_counter() - t_start
import robablate.datamodule as pd
peak_mb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
before_instances = []
build_instances = pd.build_instances
def spy(*a, **k):  # the peak of tokenizer training + token caches, read before instances are cut
    if not before_instances:
        before_instances.append(peak_mb())
    return build_instances(*a, **k)
pd.build_instances = spy
base = rss_mb()
t = time.perf_counter()
data = prepare(plan)
prepare_s = time.perf_counter() - t
print("RESULT " + json.dumps({"import_s": import_s, "prepare_s": prepare_s, "timings": data.timings,
                              "baseline_rss_mb": base, "peak_rss_mb": peak_mb(), "stats": data.stats,
                              "peak_before_instances_mb": before_instances[0]}))
"""


def run_child(corpus: Path, glob: str, cache: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "conf"), str(corpus), glob, str(cache)],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-4000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding WikiText-2's train.txt")
    p.add_argument("--copies", type=int, default=4)
    args = p.parse_args()
    train = args.data / "train.txt"
    if not train.exists():
        raise SystemExit(f"{train} not found (set --data or ROBABLATE_SHARED_DATA)")

    tmp = Path(tempfile.mkdtemp(prefix="robablate-bench-pre-"))
    try:
        big = tmp / f"corpus{args.copies}x"
        big.mkdir()
        for i in range(args.copies):
            shutil.copyfile(train, big / f"train{i}.txt")
        cases = [("1x", args.data, "train.txt"), (f"{args.copies}x", big, "train*.txt")]
        rows = []
        for name, folder, glob in cases:
            cache = tmp / f"cache{name}"
            for phase in ("build", "reuse"):
                r = run_child(folder, glob, cache)
                rows.append((f"{phase} {name}", r))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"corpus: {train} ({train.stat().st_size / 2**20:.1f} MiB) and {args.copies} copies of it; "
          f"tokenizer=wordpiece (8192), seq_len=128, format=auto (segment_pair)")
    print("seconds inside prepare() (imports excluded); RSS in MiB: base = after imports, 'tok+cache' = peak "
          "growth over base before instances are cut, 'all' = peak growth over base at the end")
    print(f"{'run':10s} {'prepare s':>9s} {'tokenizer':>9s} {'tok.cache':>9s} {'instances':>9s} "
          f"{'imports s':>9s} {'base':>6s} {'peak':>6s} {'tok+cache':>9s} {'all':>6s} {'train tokens':>13s}")
    growth = {}
    for name, r in rows:
        t, base = r["timings"], r["baseline_rss_mb"]
        growth[name] = (r["peak_before_instances_mb"] - base, r["peak_rss_mb"] - base)
        print(f"{name:10s} {r['prepare_s']:9.2f} {t.get('tokenizer_s', 0):9.2f} {t.get('token_cache_s', 0):9.2f} "
              f"{t.get('instances_s', 0):9.2f} {r['import_s']:9.2f} {base:6.0f} {r['peak_rss_mb']:6.0f} "
              f"{growth[name][0]:9.0f} {growth[name][1]:6.0f} {r['stats']['train_tokens']:13,d}")
    res = dict(rows)
    n = f"{args.copies}x"
    print(f"build 1x: {res['build 1x']['prepare_s']:.1f} s (target <= 30 s); reuse 1x: "
          f"{res['reuse 1x']['prepare_s']:.2f} s (target <= 1 s)")
    print(f"RSS growth {n} / 1x: tokenizer + token cache build {growth['build ' + n][0] / max(growth['build 1x'][0], 1):.2f}, "
          f"whole prepare() {growth['build ' + n][1] / max(growth['build 1x'][1], 1):.2f}")


if __name__ == "__main__":
    main()
