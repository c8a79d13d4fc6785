"""A real one-node SLURM cluster (tests/slurm/cluster.py): sweeps through `hydra/launcher=slurm`
(submitit), DDP as SLURM tasks, time limit -> requeue -> resume.

Marked `slurm`: `make test` runs them after the main suite (`make test-slurm` alone), once
tests/slurm/install.sh has installed Debian's packages where it can (root + apt-get). Skipped with the
reason when SLURM cannot start here; on CI (CI=true) a missing SLURM fails instead. Each pipeline is a few optimizer steps of the smoke arm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


def test_ddp_as_two_slurm_tasks(cluster, tmp_path, cache_dir) -> None:
    """One arm as 2 SLURM tasks (srun starts both; Lightning's SLURMEnvironment joins them, launching
    nothing) follows the 1-process curve of the same global batch (tests/test_ddp.py for why, TOL)."""
    from test_ddp import ARGS, TOL, finish_arm, start_arm

    t0 = time.monotonic()
    one_dir, out = tmp_path / "one", tmp_path / "sweep"
    one = start_arm(one_dir, cache_dir, "trainer.accelerator=cpu", "trainer.devices=1", "glue=none")
    r = sweep(cluster, *LOCAL, "hydra.launcher.tasks_per_node=2", *ARGS, "glue=none", "trainer.accelerator=cpu",
              "trainer.devices=2", "trainer.strategy=ddp", f"cache_dir={cache_dir}", f"hydra.sweep.dir={out}")
    assert r.returncode == 0, r.stderr[-4000:]
    p1 = finish_arm(one_dir, *one)["pretrain"]
    runs = results_of(out)
    assert len(runs) == 1, runs.keys()  # one job folder, one results.json (rank 0)
    two = next(iter(runs.values()))
    p2 = two["pretrain"]
    assert p2["world_size"] == 2 and p2["global_rank"] == 0 and p2["steps"] == p1["steps"] == 4
    assert two["plan"]["global_batch"] == 32 and two["plan"]["micro_batch"] == 16
    assert p2["tokens_seen"] == p1["tokens_seen"]
    # SLURM started both ranks: two task logs in one job, and Lightning launched no process of its own.
    logs = sorted((out / ".submitit").glob("*/*_log.out"))
    assert [p.name.split("_")[-2] for p in logs] == ["0", "1"], logs
    h1, h2 = p1["history"], p2["history"]
    assert [h["step"] for h in h2] == [h["step"] for h in h1]
    for a, b in zip(h1, h2):
        assert abs(a["val_mlm_loss"] - b["val_mlm_loss"]) <= TOL, (h1, h2)
    print(f"\n[slurm] DDP over two SLURM tasks: {time.monotonic() - t0:.0f} s "
          f"(max |diff| {max(abs(a['val_mlm_loss'] - b['val_mlm_loss']) for a, b in zip(h1, h2)):.2g})")


# A 1-minute time limit (SLURM's smallest) and the signal 20 s before it: SLURM checks time limits
# every 30 s, so the first signal comes 10-40 s into the job. The run must still be training then: 200
# fp32 steps take ~70 s uninterrupted on 2 Zen 4 cores, start-up included (precision pinned: `auto` picks
# bf16 on CPUs with bf16 hardware, and 120 bf16 steps once finished before the first signal). Once SLURM
# has requeued the job, the test lifts its time limit (scontrol), so the resumed run finishes in one go:
# one requeue, not one per 30-s window (left at 1 minute, a resumed job spends half of each window
# starting up, and the test took 3-6 minutes). The job keeps what its last checkpoint holds (every 5
# steps here, between validations too: the resume is exact there as well).
REQUEUE = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=20", "hydra.launcher.max_num_timeout=3"]
LONG = ["seed=1", "masking=dynamic", "train.precision=32-true", "train.max_steps=200", "train.val_every_steps=10",
        "train.checkpoint_every_steps=5", "trainer.log_every_n_steps=10"]


def submitit_log(sweep_dir: Path) -> str:
    return "".join(p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.err"))


def test_time_limit_requeue_resume(cluster, tmp_path, cache_dir) -> None:
    """The real path: SLURM's time limit -> SIGUSR2 signal_delay_s before it -> submitit requeues the job
    with the same overrides -> `resume=true` continues from the newest checkpoint. Ends where an
    uninterrupted run ends, and metrics.csv keeps the rows logged before the requeue."""
    from test_pipeline import csv_rows, pretrain_metrics

    t0 = time.monotonic()
    full_dir, out = tmp_path / "full", tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    full = subprocess.Popen([sys.executable, "run.py", *TINY, *LONG, "logger=csv", f"cache_dir={cache_dir}",
                             f"run_dir={full_dir}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    with ThreadPoolExecutor(1) as pool:
        swept = pool.submit(sweep, cluster, *LOCAL, *REQUEUE, *TINY, *LONG, "logger=csv", "resume=true",
                            f"cache_dir={cache_dir}", f"hydra.sweep.dir={out}", timeout=600)
        lifted = None
        while not swept.done() and lifted is None:  # the first signal -> lift the limit of the requeued job
            time.sleep(0.5)
            if "Caught signal SIGUSR2" in submitit_log(out):
                (lifted,) = [p.name for p in (out / ".submitit").iterdir() if p.is_dir()]
                cluster.run("scontrol", "update", f"JobId={lifted}", "TimeLimit=10")
        r = swept.result()
    assert r.returncode == 0, r.stderr[-4000:]
    _, ferr = full.communicate(timeout=600)
    assert full.returncode == 0, ferr[-3000:]

    log = submitit_log(out)
    assert lifted and "this job is timed-out" in log, (
        "the job finished before SLURM's time limit signalled it, so nothing was requeued: this machine trains "
        f"LONG faster than the test assumes (make the run longer)\n{log[-3000:]}")
    # Started from scratch once; the requeued job resumed from a checkpoint.
    assert log.count("last.ckpt does not exist; starting from scratch") == 1, log[-3000:]
    assert "Requeued job" in log or "requeue" in log.lower(), log[-3000:]
    (job,) = [p.parent for p in out.rglob("results.json")]
    resumed = json.loads((job / "results.json").read_text())
    ref = json.loads((full_dir / "results.json").read_text())
    assert resumed["status"] == ref["status"] == "complete"
    assert pretrain_metrics(resumed) == pretrain_metrics(ref)
    assert resumed["pretrain"]["history"] == ref["pretrain"]["history"]
    keep = ("step", "train/loss", "train/lr", "val/mlm_loss")  # tokens_per_s is a timing
    rows = lambda d: [{k: r.get(k, "") for k in keep} for r in csv_rows(d / "pretrain" / "metrics.csv")]  # noqa: E731
    assert rows(job) == rows(full_dir)
    print(f"\n[slurm] time limit -> requeue -> resume: {time.monotonic() - t0:.0f} s")
