"""Relaunching a run or a sweep finishes what is missing and destroys nothing (issue 26): a done run is
skipped with its results.json untouched, a partial run resumes exactly, another config's folder is
refused before any compute with the differing keys, overwrite=true sets the old contents aside."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import CONF, ROOT, run_arm
from robablate import relaunch
from robablate.errors import ConfigError
from robablate.relaunch import Folder, config_diff, decide, inspect, set_aside
from robablate.schema import NOT_ARM_KEYS

CODE = {"git_commit": "a" * 40, "git_dirty": False}
CFG = {"seed": 0, "masking": {"strategy": "static", "dupe_factor": 10}, "run_dir": "/x", "cache_dir": ".c",
       "logger": {"name": "csv"}, "trainer": {"devices": 1, "deterministic": True}, "train": {"tokens": 10}}


def other(**changes) -> dict:
    cfg = json.loads(json.dumps(CFG))
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value
    return cfg


# --- the rule, without a trainer ------------------------------------------------------------------

def test_config_diff_names_every_differing_key_and_ignores_run_only_keys() -> None:
    assert config_diff(CFG, other(run_dir="/y", cache_dir="/z", logger={"name": "wandb"},
                                  trainer__devices=4, resume=True, overwrite=True)) == []
    diff = config_diff(CFG, other(seed=1, masking__strategy="dynamic", trainer__deterministic=False))
    assert diff == ["masking.strategy: 'static' -> 'dynamic'", "seed: 0 -> 1",
                    "trainer.deterministic: True -> False"]
    assert config_diff(CFG, {**CFG, "nsp": False}) == ["nsp: '<absent>' -> False"]


def test_run_only_keys_are_one_list() -> None:
    """tune.py's arm key and the Hydra folder names extend the same list (a key that changes nothing
    must not move a relaunched arm to another folder)."""
    assert set(relaunch.RUN_ONLY_KEYS) <= set(NOT_ARM_KEYS)
    exclude = yaml.safe_load((CONF / "hydra" / "default.yaml").read_text())["job"]["config"]["override_dirname"]
    assert set(relaunch.RUN_ONLY_KEYS) - {"hydra"} <= set(exclude["exclude_keys"])
    assert "overwrite" in yaml.safe_load((CONF / "config.yaml").read_text())


@pytest.mark.parametrize("folder, kw, action", [
    (Folder("new", None, None), {}, "run"),
    (Folder("done", {"config": CFG, "environment": CODE}, {}), {}, "skip"),
    (Folder("partial", {"config": CFG, "environment": CODE}, None), {}, "resume"),
    (Folder("failed", {"config": CFG, "environment": CODE}, None), {}, "run"),  # failed = not done
    (Folder("started", {"config": CFG, "environment": CODE}, None), {}, "run"),
    (Folder("unrecorded", None, None), {}, "refuse"),
    (Folder("unrecorded", None, None), {"resume": True}, "resume"),
    (Folder("done", {"config": other(seed=3), "environment": CODE}, {}), {}, "refuse"),
    (Folder("done", {"config": other(seed=3), "environment": CODE}, {}), {"overwrite": True}, "run"),
    (Folder("partial", {"config": other(seed=3), "environment": CODE}, None), {"resume": True}, "refuse"),
    (Folder("done", {"config": CFG, "environment": {"git_commit": "b" * 40}}, {}), {}, "refuse"),
    (Folder("done", {"config": CFG, "environment": {"git_commit": None, "packages": {"robablate": "1"}}}, {}),
     {}, "refuse"),  # recorded outside git: robablate 1 is not commit aaa...
])
def test_decide(folder, kw, action) -> None:
    assert decide(folder, CFG, CODE, **kw).action == action


def test_refusal_names_the_keys_and_what_overwrite_would_move() -> None:
    d = decide(Folder("done", {"config": other(seed=3), "environment": {"git_commit": "b" * 40}}, {}), CFG, CODE,
               where="RUN")
    assert d.action == "refuse"
    assert "seed: 3 -> 0" in d.reason and "code: git bbbbbbbbbbbb -> aaaaaaaaaaaa" in d.reason
    assert "RUN" in d.reason and "overwrite=true" in d.reason and "complete results.json" in d.reason


def auto(precision: str | None, train_precision: str = "auto") -> dict:
    """A record whose run said train.precision=<train_precision> and resolved it to <precision>."""
    return {"config": other(train__precision=train_precision), "environment": CODE, "precision": precision}


@pytest.mark.parametrize("state, record, here, kw, action", [
    # a checkpoint trained in bf16 (auto on a bf16 machine), relaunched where auto resolves to 32-true
    ("partial", auto("bf16-mixed"), ("auto", "32-true"), {}, "refuse"),
    ("partial", auto("bf16-mixed"), ("auto", "32-true"), {"resume": True}, "refuse"),
    ("partial", auto("bf16-mixed"), ("auto", "bf16-mixed"), {}, "resume"),
    ("partial", auto("bf16-mixed"), ("bf16-mixed", "bf16-mixed"), {}, "resume"),  # named as it resolved
    ("partial", auto("32-true", "32-true"), ("auto", "32-true"), {}, "resume"),
    ("partial", auto(None), ("auto", "32-true"), {}, "resume"),  # a record from before precision was kept
    ("done", auto("bf16-mixed"), ("auto", "32-true"), {}, "skip"),  # final numbers: skipped on any machine
    ("failed", auto("bf16-mixed"), ("auto", "32-true"), {}, "run"),  # no checkpoint: starts over
])
def test_a_partial_run_continues_only_in_the_precision_it_trained_in(state, record, here, kw, action) -> None:
    train_precision, resolved = here
    d = decide(Folder(state, record, {} if state == "done" else None), other(train__precision=train_precision),
               CODE, precision=resolved, where="RUN", **kw)
    assert d.action == action, d.reason
    if action == "refuse":
        assert "train.precision: 'bf16-mixed' -> '32-true'" in d.reason, d.reason
        assert "train.precision=bf16-mixed continues the checkpoint" in d.reason, d.reason


def test_inspect_reads_the_folder_states(tmp_path) -> None:
    assert inspect(tmp_path / "absent").state == "new"
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed", "config": CFG}))
    assert inspect(tmp_path).state == "failed"
    ckpt = tmp_path / relaunch.CHECKPOINT
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    assert inspect(tmp_path).state == "partial"  # the failed run's config is its record
    (tmp_path / "results.json").write_text(json.dumps({"status": "complete", "config": CFG}))
    assert inspect(tmp_path).state == "done"
    (tmp_path / "results.json").unlink()
    assert inspect(tmp_path).state == "unrecorded"


def test_set_aside_keeps_hydra_and_hides_old_results_from_reports(tmp_path) -> None:
    for name in (".hydra/config.yaml", "results.json", "pretrain/checkpoints/last.ckpt", "started.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    dest = set_aside(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "replaced"]
    assert (dest / "results.replaced.json").read_text() == "results.json"
    assert (dest / "pretrain/checkpoints/last.ckpt").is_file()
    assert not list(tmp_path.rglob("results.json"))  # the report finds runs by this name
    assert set_aside(tmp_path / "empty") is None


# --- one run through pipeline.run ----------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_run_relaunch_skips_refuses_and_overwrites(tmp_path, cache_dir, capsys) -> None:
    _, first = run_arm(tmp_path, cache_dir, "seed=5")
    folder = tmp_path / "run"
    before = snapshot(folder)
    capsys.readouterr()

    _, again = run_arm(tmp_path, cache_dir, "seed=5", "train.num_workers=0", "trainer.devices=1")  # run-only keys
    assert again["skipped"] and snapshot(folder) == before  # same bytes, same mtimes, nothing added
    assert "[robablate] done already: masking=" in capsys.readouterr().out

    with pytest.raises(ConfigError, match=r"seed: 5 -> 6") as e:
        run_arm(tmp_path, cache_dir, "seed=6")
    assert "overwrite=true" in str(e.value)
    assert snapshot(folder) == before

    _, redone = run_arm(tmp_path, cache_dir, "seed=6", "overwrite=true")
    assert redone["seed"] == 6 and not redone.get("skipped")
    (old,) = (folder / "replaced").iterdir()
    assert json.loads((old / "results.replaced.json").read_text()) == json.loads(before["results.json"][0])
    assert json.loads((folder / "results.json").read_text())["seed"] == 6


@pytest.mark.slow
def test_partial_run_resumes_without_being_told(tmp_path, cache_dir) -> None:
    common = ["seed=2", "train.max_steps=12", "train.val_every_steps=4", "masking=dynamic"]
    _, full = run_arm(tmp_path, cache_dir, *common, name="full")
    _, part = run_arm(tmp_path, cache_dir, *common, "train.stop_at_step=9", name="part")
    assert part["status"] == "interrupted" and inspect(tmp_path / "part").state == "partial"
    _, resumed = run_arm(tmp_path, cache_dir, *common, name="part")  # no resume=true
    assert resumed["pretrain"]["history"] == full["pretrain"]["history"]
    assert resumed["pretrain"]["val_mlm_loss"] == full["pretrain"]["val_mlm_loss"]
    started = json.loads((tmp_path / "part" / relaunch.STARTED).read_text())
    assert started["precision"] == resumed["plan"]["precision"] and started["config"]["train"]["precision"] == "auto"
    run_arm(tmp_path, cache_dir, *common, "train.stop_at_step=4", name="p2")
    before = snapshot(tmp_path / "p2")
    with pytest.raises(ConfigError, match=r"masking.name: 'dynamic' -> 'static'.*checkpoints \(a partial run\)"):
        run_arm(tmp_path, cache_dir, *common[:-1], "masking=static", name="p2")
    assert snapshot(tmp_path / "p2") == before
    # The same partial run as if a machine where `auto` resolves otherwise had started it (a mixed cluster):
    # resuming here would switch precision mid-run, so it is refused before any compute.
    here = resumed["plan"]["precision"]
    elsewhere = {"bf16-mixed": "32-true", "32-true": "bf16-mixed"}[here]
    record = json.loads((tmp_path / "p2" / relaunch.STARTED).read_text())
    (tmp_path / "p2" / relaunch.STARTED).write_text(json.dumps({**record, "precision": elsewhere}))
    before = snapshot(tmp_path / "p2")
    with pytest.raises(ConfigError, match=rf"train.precision: '{elsewhere}' -> '{here}'"):
        run_arm(tmp_path, cache_dir, *common, name="p2")
    assert snapshot(tmp_path / "p2") == before


# --- sweeps: `python run.py -m`, sequential and joblib (hydra/launcher=local) -----------------------

SWEEP = ["experiment=smoke", "glue=none", "masking=static,dynamic", "train.tokens=60000", "train.val_instances=32",
         "trainer.enable_progress_bar=false", "logger=none"]


def sweep_cmd(folder: Path, *extra: str) -> list[str]:
    return [sys.executable, "run.py", "-m", *SWEEP, *extra, f"hydra.sweep.dir={folder}"]


def sweep_env(cache_dir: Path) -> dict[str, str]:
    return {**os.environ, "ROBABLATE_CACHE": str(cache_dir), "HYDRA_FULL_ERROR": "1"}


def run_sweep(folder: Path, cache_dir: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    t = time.perf_counter()
    proc = subprocess.run(sweep_cmd(folder, *extra), cwd=ROOT, env=sweep_env(cache_dir), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, time.perf_counter() - t


def arms(folder: Path) -> dict[str, Path]:
    return {p.parent.parent.name: p for p in sorted(folder.glob("*/seed=0/results.json"))}


def numbers(path: Path) -> dict:
    r = json.loads(path.read_text())
    p = r["pretrain"]
    return {"axes": r["axes"], "history": p["history"], "steps": p["steps"], "tokens_seen": p["tokens_seen"],
            "train_loss": p["train_loss"]}


def report(folder: Path, out: Path) -> dict[str, str]:
    proc = subprocess.run([sys.executable, "-m", "robablate.report", str(folder), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    timing = lambda key: key == "run_dir" or "per_s" in key or key.endswith("_s") or "mfu" in key  # noqa: E731
    return {p.name: [{k: v for k, v in row.items() if not timing(k)} for row in csv.DictReader(p.open())
                     if not timing(row.get("metric", ""))]  # throughput is a timing, not a result
            for p in sorted(out.glob("*.csv"))}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("relaunch") / "sweep"
    proc, seconds = run_sweep(folder, cache_dir)
    return folder, proc, seconds


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=local"]], ids=["sequential", "joblib"])
def test_finished_sweep_relaunch_trains_nothing(finished_sweep, cache_dir, launcher) -> None:
    folder, first, seconds = finished_sweep
    assert len(arms(folder)) == 2 and "0 done, 0 partial (resumed), 2 new" in first.stdout
    before = {arm: snapshot(p.parent) for arm, p in arms(folder).items()}
    proc, again = run_sweep(folder, cache_dir, *launcher)
    assert "sweep of 2 arm(s): 2 done, 0 partial (resumed), 0 new" in proc.stdout
    assert proc.stdout.count("[robablate] done already: ") == 2
    assert "[robablate] done masking" not in proc.stdout  # nothing trained
    after = {arm: snapshot(p.parent) for arm, p in arms(folder).items()}
    for arm in before:  # results.json, checkpoints, logs: same bytes, same mtimes (Hydra rewrites .hydra/)
        keep = lambda snap: {k: v for k, v in snap.items() if not k.startswith(".hydra")}  # noqa: E731
        assert keep(after[arm]) == keep(before[arm]), arm
    print(f"relaunch timing ({'+'.join(launcher) or 'sequential'}): original {seconds:.1f} s, "
          f"relaunch {again:.1f} s")


@pytest.mark.slow
def test_killed_sweep_relaunch_skips_resumes_and_reports_the_same(finished_sweep, cache_dir, tmp_path) -> None:
    done_folder = finished_sweep[0]
    folder = tmp_path / "killed"
    proc = subprocess.Popen(sweep_cmd(folder), cwd=ROOT, env=sweep_env(cache_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    second = None
    try:  # kill -9 once the second arm has a checkpoint (the sweep runs static, then dynamic)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            second = next(iter(folder.glob("*masking=dynamic*/seed=0/pretrain/checkpoints/last.ckpt")), None)
            if second is not None:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert second is not None, "the sweep ended before its second arm saved a checkpoint"
    arm2 = second.parents[2]
    assert not (arm2 / "results.json").exists(), "the second arm finished before the kill: nothing to resume"
    (first_results,) = [p for p in folder.glob("*/seed=0/results.json")]
    first_before = snapshot(first_results.parent)

    relaunched, _ = run_sweep(folder, cache_dir)  # joblib workers run other thread counts: other floats
    assert "sweep of 2 arm(s): 1 done, 1 partial (resumed), 0 new" in relaunched.stdout
    assert relaunched.stdout.count("[robablate] done already: ") == 1
    assert {k: v for k, v in snapshot(first_results.parent).items() if not k.startswith(".hydra")} == \
        {k: v for k, v in first_before.items() if not k.startswith(".hydra")}
    assert {a: numbers(p) for a, p in arms(folder).items()} == {a: numbers(p) for a, p in arms(done_folder).items()}
    assert report(folder, tmp_path / "r1") == report(done_folder, tmp_path / "r2")


@pytest.mark.slow
def test_sweep_over_another_configs_folder_is_refused_before_any_job(finished_sweep, cache_dir) -> None:
    """`stage` stays out of folder names but changes the run: the same folders, another config."""
    folder = finished_sweep[0]
    before = snapshot(folder)
    proc = subprocess.run(sweep_cmd(folder, "stage=pretrain"), cwd=ROOT, env=sweep_env(cache_dir),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.count("stage: 'all' -> 'pretrain'") == 2 and "overwrite=true" in proc.stderr
    assert snapshot(folder) == before  # not even Hydra's .hydra/ or multirun.yaml changed
