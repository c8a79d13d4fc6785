"""logger=wandb (issue 4): each multirun job logs its own finished W&B runs (pretrain + finetune) in
the sweep's group, tagged with the axis values and holding the resolved config; WANDB_MODE=offline
writes them inside the arm folder; any W&B failure is a warning and the run still completes.

wandb 0.2x/0.3x writes an offline run as one binary `run-<id>.wandb` record log (files/config.yaml and
wandb-summary.json only appear after a sync), so `read_wandb_run` decodes it: a LevelDB-style log of
protobuf `Record`s, the file `wandb sync` uploads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from conftest import compose_cfg, sweep_ok
from robablate import loggers as run_loggers
from robablate.config import validate
from robablate.pipeline import run

wandb = pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def _teardown_wandb():
    """No W&B run or service process leaks from one test into the next (wandb #6449)."""
    yield
    if wandb.run is not None:
        wandb.finish()
    wandb.teardown()


def logger_spec(overrides: list[str]) -> run_loggers.LoggerSpec:
    """What the loggers are given: the `logger` settings checked with the rest of the config."""
    return validate(compose_cfg(overrides)).specs.logger


# --- reading offline runs -----------------------------------------------------------------------------

def wandb_records(path: Path):
    """Protobuf Records of a .wandb file: 7-byte header (':W&B', magic, version), then 32 KiB blocks of
    chunks (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B record log"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too small for a chunk header: zero padding
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (2, 3):
            buf = chunk if kind == 2 else buf + chunk
            continue
        if kind not in (1, 4):
            continue
        record = pb.Record()
        record.ParseFromString(chunk if kind == 1 else buf + chunk)
        yield record


def read_wandb_run(path: Path) -> dict:
    """id, group, job_type, tags, name, project, config, summary, history keys and exit code of one run."""
    def items(updates) -> dict:
        return {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in updates}

    out: dict = {"config": {}, "summary": {}, "history_keys": set(), "exit_code": None}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(id=r.run.run_id, group=r.run.run_group, job_type=r.run.job_type, tags=list(r.run.tags),
                       name=r.run.display_name, project=r.run.project)
            out["config"].update(items(r.run.config.update))
        elif kind == "config":
            out["config"].update(items(r.config.update))
        elif kind == "summary":
            out["summary"].update(items(r.summary.update))
        elif kind == "history":
            out["history_keys"] |= set(items(r.history.item))
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


# --- a real multirun with logger=wandb, WANDB_MODE=offline (the shared sweep) ---------------------------

@pytest.mark.slow
def test_each_multirun_job_finishes_its_own_runs(smoke_sweep) -> None:
    sweep = sweep_ok(smoke_sweep)
    arms = sorted(p.parent for p in sweep.glob("*/seed=*/results.json"))
    assert len(arms) == 4
    ids = set()
    for arm in arms:
        results = json.loads((arm / "results.json").read_text())
        files = sorted(arm.glob("wandb/offline-run-*/run-*.wandb"))
        runs = {r["job_type"]: r for r in map(read_wandb_run, files)}
        # One run per stage and job: a missing finish() would put later jobs into the first job's run.
        assert len(files) == 2 and set(runs) == {"pretrain", "finetune"}, files
        for job_type, r in runs.items():
            ids.add(r["id"])
            assert r["exit_code"] == 0, f"{arm}: {job_type} run not finished"
            assert r["project"] == "robablate"
            assert r["group"] == f"smoke/{sweep.name}"  # one group per sweep
            assert r["name"] == f"{arm.parent.name}/{arm.name} {job_type}"
            assert f"masking={results['axes']['masking']}" in r["tags"] and "model=tiny" in r["tags"]
            cfg = r["config"]
            assert cfg["experiment_name"] == "smoke" and cfg["seed"] == results["seed"]
            assert cfg["masking"]["name"] == results["axes"]["masking"] and cfg["train"]["tokens"] == 8000
            assert "${" not in json.dumps(cfg), "unresolved interpolation reached W&B"
        assert {"val/mlm_loss", "val/mlm_acc"} <= runs["pretrain"]["history_keys"]
        assert any(k.endswith("/dev/score") and k.startswith("SYN-TOPIC/seed=0") for k in runs["finetune"]["history_keys"])
        # results.json's numbers are in the finetune run's summary (what a dashboard compares arms by).
        s = runs["finetune"]["summary"]
        assert s["status"] == "complete"
        assert s["pretrain/val_mlm_loss"] == pytest.approx(results["pretrain"]["val_mlm_loss"])
        assert s["glue/score_synthetic"] == pytest.approx(results["glue"]["score"]["synthetic"]["value"])
    assert len(ids) == 8  # 4 jobs x 2 stages, all distinct


# --- failures only warn ---------------------------------------------------------------------------------

TINY = ["experiment=smoke", "train.max_steps=2", "train.val_instances=16", "glue=none", "logger=wandb",
        "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_wandb_init_failure_warns_and_the_run_completes(tmp_path, cache_dir, monkeypatch) -> None:
    def broken_init(*args, **kwargs):
        raise RuntimeError("W&B is down")

    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = compose_cfg([*TINY, f"cache_dir={cache_dir}", f"run_dir={tmp_path / 'run'}"])
    with pytest.warns(UserWarning, match=r"W&B: logger disabled \(RuntimeError: W&B is down\)"):
        res = run(cfg)
    assert res["status"] == "complete"
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "complete"
    assert (tmp_path / "run" / "pretrain" / "metrics.csv").is_file()  # the CSV logs do not depend on W&B


def test_logger_none_builds_no_logger_and_writes_no_log(tmp_path) -> None:
    spec = logger_spec(["logger=none", f"run_dir={tmp_path}"])
    assert run_loggers.build_loggers(spec, tmp_path, "pretrain") == []
    assert [type(lg).__name__ for lg in run_loggers.build_loggers(logger_spec(["logger=csv"]), tmp_path,
                                                                  "pretrain")] == ["CSVLogger"]


def test_invalid_wandb_mode_warns_and_keeps_the_csv_logger(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "invalid")
    spec = logger_spec(["logger=wandb", f"run_dir={tmp_path}"])
    with pytest.warns(UserWarning, match="W&B: logger disabled"):
        loggers = run_loggers.build_loggers(spec, tmp_path, "pretrain")
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger"]
    assert wandb.run is None


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """logger=wandb in offline mode, W&B files inside tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    return logger_spec(["logger=wandb", f"run_dir={tmp_path}"])


def test_logging_errors_mid_run_warn_once(tmp_path, monkeypatch, offline_wandb) -> None:
    spec = offline_wandb
    loggers = run_loggers.build_loggers(spec, tmp_path, "pretrain")
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger", "SafeWandbLogger"]
    lg = loggers[1]
    lg.log_metrics({"train/loss": 1.0}, step=1)  # works

    def broken_log(*args, **kwargs):
        raise ConnectionError("connection reset")

    monkeypatch.setattr(lg.experiment, "log", broken_log)
    with pytest.warns(UserWarning, match="logging failed") as caught:
        lg.log_metrics({"train/loss": 2.0}, step=2)
        lg.log_metrics({"train/loss": 3.0}, step=3)  # quiet after the first failure
    assert len([w for w in caught if "logging failed" in str(w.message)]) == 1
    run_loggers.finish_wandb()
    assert wandb.run is None
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))  # files inside the run folder


def test_failed_run_is_marked_crashed_with_its_status(tmp_path, offline_wandb) -> None:
    spec = offline_wandb
    assert [type(lg).__name__ for lg in run_loggers.build_loggers(spec, tmp_path, "pretrain")][-1] == "SafeWandbLogger"
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed", "error": "DataError: x"}))
    run_loggers.finish_wandb()
    wandb.teardown()  # stop the service process: the record log is complete on disk once it has exited
    (path,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    r = read_wandb_run(path)
    assert r["exit_code"] == 1 and r["summary"]["status"] == "failed"


def test_ddp_ranks_above_zero_start_no_wandb_run(tmp_path, monkeypatch) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    calls = []
    monkeypatch.setattr(wandb, "init", lambda *a, **kw: calls.append(kw))
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    spec = logger_spec(["logger=wandb", f"run_dir={tmp_path}"])
    assert [type(lg).__name__ for lg in run_loggers.build_loggers(spec, tmp_path, "pretrain")] == ["CSVLogger"]
    assert calls == []


# --- naming -----------------------------------------------------------------------------------------------

def test_group_name_and_tags_follow_the_sweep_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_DIR", raising=False)
    arm = tmp_path / "outputs" / "roberta_table2" / "multirun" / "2026-01-02_03-04-05" / "format=doc_sentences" / "seed=2"
    spec = logger_spec(["experiment=roberta_table2", "format=doc_sentences", "seed=2", "logger=wandb",
                        f"run_dir='{arm}'"])
    kw = run_loggers.wandb_settings(spec, arm / "glue" / "SYN-NEXT" / "seed=0", "finetune")
    assert kw["group"] == "roberta_table2/2026-01-02_03-04-05"
    assert kw["name"] == "format=doc_sentences/seed=2 finetune" and kw["job_type"] == "finetune"
    assert {"format=doc_sentences", "nsp=False", "masking=dynamic"} <= set(kw["tags"])
    assert kw["dir"] == str(arm)  # W&B files inside the arm folder...
    assert kw["config"]["nsp"] is False and "${" not in json.dumps(kw["config"])
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    assert run_loggers.wandb_settings(spec, arm, "pretrain")["dir"] is None  # ...unless WANDB_DIR says otherwise
    single = logger_spec(["experiment=smoke", "logger=wandb", f"run_dir={tmp_path / 'one'}"])
    assert run_loggers.wandb_settings(single, tmp_path / "one", "pretrain")["group"] == "smoke"
    # The resolved format (auto -> segment_pair with NSP) is what the tags say.
    assert "format=segment_pair" in run_loggers.wandb_settings(single, tmp_path / "one", "pretrain")["tags"]
