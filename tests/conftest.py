"""Shared test helpers: compose configs with Hydra's compose API, find ../shared/data, share caches."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see run.py
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: each worker (and the runs it starts) gets one
    # thread, so two workers do not fight over two cores. The suite's tiny models gain little from a
    # second thread anyway (see `one_thread` below); measured on 2 cores: 706 s serial, 399 s with -n 2.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from robablate.config import normalize_overrides

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_DATA = Path(os.environ.get("ROBABLATE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def compose_cfg(overrides: list[str] | None = None):
    """The config `python run.py <overrides>` would see (without Hydra's runtime section)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=normalize_overrides(list(overrides or [])))


# A few-second smoke arm (tests/test_pipeline.py, tests/test_newcomer.py): 8 steps, no GLUE.
FAST_ARM = ["experiment=smoke", "train.max_steps=8", "train.val_every_steps=4", "train.val_instances=64",
            "glue=none", "trainer.enable_progress_bar=false"]


def arm_cfg(tmp_path: Path, cache_dir: Path, *overrides: str, name: str = "run", logger: str = "none"):
    """The config of a FAST_ARM arm writing to tmp_path/<name>."""
    return compose_cfg([*FAST_ARM, f"logger={logger}", f"cache_dir={cache_dir}", f"run_dir={tmp_path / name}",
                        *overrides])


def run_arm(tmp_path: Path, cache_dir: Path, *overrides: str, name: str = "run", logger: str = "none"):
    """(config, results) of that arm run through pipeline.run."""
    from robablate.pipeline import run

    cfg = arm_cfg(tmp_path, cache_dir, *overrides, name=name, logger=logger)
    return cfg, run(cfg)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the whole session, so tokenizers and token caches are built once."""
    return tmp_path_factory.mktemp("robablate-cache")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (opt in: `pytestmark = pytest.mark.usefixtures("one_thread")`).
    A tiny model's ops are too small to split across cores: on the shared 2-core box a second thread
    only adds contention (measured, OMP_WAIT_POLICY=PASSIVE: a 26-step fine-tuning run 1.3 s with one
    thread, 1.9 s with two; tiny-matrix model tests up to 7x slower). Restored after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared/data is absent; set ROBABLATE_SHARED_DATA)")
    return path


# --- one small sweep shared by test_sweep.py, test_notebook.py and test_wandb.py ----------------------
# The Done-when command of issue 4 (`python run.py -m experiment=smoke masking=static,dynamic seed=0,1`),
# shrunk to a few seconds per arm, run once per session through the real CLI (Hydra's basic launcher)
# with W&B offline, so the W&B tests read the files of a real multirun.
SMOKE_SWEEP_OVERRIDES = [
    "experiment=smoke", "masking=static,dynamic", "seed=0,1", "glue.seeds=1", "glue.epochs=1",
    "glue.max_train_examples=64", "glue.max_eval_examples=64", "train.tokens=8000", "train.val_instances=32",
    "trainer.enable_progress_bar=false", "logger=wandb",
]


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory, cache_dir):
    """Run the shared sweep once; returns (sweep folder, CompletedProcess). Tests assert on the rc."""
    import subprocess
    import sys

    sweep = tmp_path_factory.mktemp("sweep") / "smoke"
    env = {**os.environ, "ROBABLATE_CACHE": str(cache_dir), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "HYDRA_FULL_ERROR": "1"}
    env.pop("WANDB_DIR", None)  # W&B files go inside each arm's folder
    proc = subprocess.run([sys.executable, "run.py", "-m", *SMOKE_SWEEP_OVERRIDES, f"hydra.sweep.dir={sweep}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return sweep, proc


def sweep_ok(smoke_sweep) -> Path:
    """The sweep folder, or fail with the tail of the sweep's stderr."""
    sweep, proc = smoke_sweep
    assert proc.returncode == 0, f"sweep failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return sweep


# --- committed studies (experiments/wikitext2_cpu*, tests/test_wikitext2_study*.py) -----------------

def load_script(path: Path):
    """A script under experiments/ imported as a module (they are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_report_reproduces(study: Path, table: str, axis: str, arms: set[str], compared: tuple[str, ...],
                             out: Path):
    """Re-run the report and the headline over study/results/<table> into `out` and require every file in
    `compared` (and headline.md) to equal the committed study/report/<table>/ byte for byte. Run from
    ROOT: the committed tables name runs by their path from the repository root. Returns the Report."""
    from robablate.report import load_report, write_report
    from robablate.report.tables import CONTROL_ARM

    rep = load_report((study / "results" / table).relative_to(ROOT))
    assert rep.problems == [] and axis in rep.axes
    assert set(rep.summary.loc[rep.summary["axis"] == axis, "arm"]) - {CONTROL_ARM} == arms
    write_report(rep, out)
    headline = load_script(ROOT / "experiments" / "wikitext2_cpu" / "headline.py")
    (out / "headline.md").write_text(headline.headline(out), encoding="utf-8")
    for name in (*compared, "headline.md"):
        committed = study / "report" / table / name
        assert (out / name).read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), \
            f"{committed} differs from the report over its results: re-run the report (see {study / 'README.md'})"
    return rep
