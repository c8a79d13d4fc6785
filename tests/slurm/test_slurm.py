"""A real one-node SLURM cluster (tests/slurm/cluster.py): sweeps through `hydra/launcher=slurm`
(submitit), DDP as SLURM tasks, time limit -> requeue -> resume.

Marked `slurm`: deselected by the default `make test`, run by `make test-slurm` (and on CI, where
.ci/run installs the packages first). Skipped with the reason when SLURM cannot start here; on CI
(CI=true) a missing SLURM fails instead. Each pipeline is a few optimizer steps of the smoke arm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import LocalCluster, missing

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slurm

# The node's resources for the local cluster: no GPUs, one core and a little memory per task.
LOCAL = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10"]
TINY = ["experiment=smoke", "glue=none", "logger=none", "trainer.enable_progress_bar=false",
        "train.val_instances=32"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no local SLURM cluster: {reason}")
        pytest.skip(reason)
    c = LocalCluster(tmp_path_factory.mktemp("slurm")).start()
    try:
        yield c
    finally:  # also when a test fails: stop the daemons this fixture started, by their PIDs
        c.stop()


def sweep(cluster: LocalCluster, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """`python run.py -m ...` as a user types it, against the local cluster."""
    env = {**cluster.env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "run.py", "-m", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def results_of(sweep_dir: Path) -> dict[str, dict]:
    """results.json of each job, keyed by its folder relative to the sweep (Hydra's sweep.subdir)."""
    return {str(p.parent.relative_to(sweep_dir)): json.loads(p.read_text()) for p in sweep_dir.rglob("results.json")}


def test_two_arm_sweep_and_report(cluster, tmp_path, cache_dir) -> None:
    t0 = time.monotonic()
    out = tmp_path / "sweep"
    r = sweep(cluster, *LOCAL, *TINY, "seed=0,1", "train.max_steps=4", "train.val_every_steps=2",
              f"cache_dir={cache_dir}", f"hydra.sweep.dir={out}")
    assert r.returncode == 0, r.stderr[-4000:]
    # Two SLURM jobs (an array of two), each with its submitit log.
    assert len(list((out / ".submitit").glob("*_*/*_0_log.out"))) == 2
    runs = results_of(out)
    assert sorted(k.rsplit("/", 1)[-1] for k in runs) == ["seed=0", "seed=1"]
    assert all(v["status"] == "complete" and v["pretrain"]["steps"] == 4 for v in runs.values())
    assert {v["seed"] for v in runs.values()} == {0, 1}
    # The two seeds trained different models (each job got its own overrides).
    losses = {v["pretrain"]["val_mlm_loss"] for v in runs.values()}
    assert len(losses) == 2
    rep = subprocess.run([sys.executable, "-m", "robablate.report", str(out), "--metric", "val_mlm_loss"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert (out / "report" / "summary.csv").exists()
    print(f"\n[slurm] two-arm sweep + report: {time.monotonic() - t0:.0f} s")


def test_a_failing_job_is_named_and_the_other_finishes(cluster, tmp_path, cache_dir) -> None:
    t0 = time.monotonic()
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    text = "".join(f"Document {d} sentence {s} about topic {d % 7}. More words follow here.\n"
                   + ("\n" if s == 4 else "") for d in range(60) for s in range(5))
    (good / "a.txt").write_text(text)
    (bad / "a.txt").write_bytes(text.encode()[:500] + b"\xff\xfe broken bytes\n")
    out = tmp_path / "sweep"
    r = sweep(cluster, *LOCAL, *TINY, "corpus=text", f"corpus.path={good},{bad}", "tokenizer.vocab_size=300",
              "train.max_steps=2", "train.val_every_steps=2", "seed=0", f"cache_dir={cache_dir}",
              f"hydra.sweep.dir={out}")
    assert r.returncode != 0
    # One error at the end names the failed job, its overrides and its log; the log holds the cause.
    err = r.stderr
    assert "1 of 2 jobs failed" in err, err[-4000:]
    line = next(ln for ln in err.splitlines() if "job #" in ln and "failed with" in ln)
    assert f"corpus.path={bad}" in line and f"corpus.path={good}" not in line, line
    log = Path(line.rsplit("log: ", 1)[1].strip())
    assert log.exists() and str(bad / "a.txt") in log.read_text(), log.read_text()[-2000:]
    # The other job finished.
    done = [v for v in results_of(out).values() if v["status"] == "complete"]
    assert len(done) == 1 and done[0]["config"]["corpus"]["path"] == str(good)
    print(f"\n[slurm] failing job: {time.monotonic() - t0:.0f} s")
