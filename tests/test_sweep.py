"""Sweeps (issue 4): the multirun folder layout, the report over a sweep, the launchers and the
paper-table presets. The expensive part, one real 2 arms x 2 seeds multirun, is the session fixture
`smoke_sweep` (conftest.py), shared with test_notebook.py and test_wandb.py."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.utils import get_class

from conftest import CONF, ROOT, compose_cfg, sweep_ok
from robablate.config import normalize_overrides, validate

PRESETS = ("roberta_table1", "roberta_table2", "roberta_table3", "sweep_scheduler", "sweep_seq_len")


def compose_hydra(overrides: list[str]):
    """The config with its `hydra:` section (launcher, sweeper, output folders)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=normalize_overrides(overrides), return_hydra_config=True)


def sweep_jobs(cli: list[str]) -> list[list[str]]:
    """The jobs `python run.py -m <cli>` launches: the preset's hydra.sweeper.params, then the command
    line (which wins on a shared key), expanded as Hydra's BasicSweeper does."""
    cli = normalize_overrides(cli)
    plain = [a for a in cli if "," not in a.split("=", 1)[1]]
    params = compose_hydra(plain).hydra.sweeper.params or {}
    args = [f"{k}={v}" for k, v in params.items()] + cli
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)[0]


# --- the real sweep ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_sweep_writes_one_folder_per_arm_and_seed(smoke_sweep) -> None:
    sweep = sweep_ok(smoke_sweep)
    assert (sweep / "multirun.yaml").is_file()
    results = sorted(sweep.glob("*/seed=*/results.json"))
    assert len(results) == 4, [str(p.relative_to(sweep)) for p in results]
    seen = set()
    for path in results:
        arm, seed_dir = path.parent.parent.name, path.parent.name
        data = json.loads(path.read_text())
        assert data["status"] == "complete"
        # Folder named by the overrides that change the numbers; seed one level down; no
        # experiment/logger/progress-bar keys (hydra.job.config.override_dirname.exclude_keys).
        assert f"masking={data['axes']['masking']}" in arm.split(",")
        assert seed_dir == f"seed={data['seed']}"
        assert "train.tokens=8000" in arm.split(",")
        assert not re.search(r"(^|,)(seed|experiment|logger|trainer\.enable_progress_bar)=", arm), arm
        assert Path(data["run_dir"]) == path.parent.resolve()
        seen.add((data["axes"]["masking"], data["seed"]))
    assert seen == {("static", 0), ("static", 1), ("dynamic", 0), ("dynamic", 1)}


@pytest.mark.slow
def test_report_cli_over_sweep_shows_both_arms(smoke_sweep, tmp_path) -> None:
    """Issue 4's Done-when: `python -m robablate.report <sweep folder>` prints a table with both arms
    and writes the Markdown/LaTeX/CSV tables and the PNG plots."""
    sweep = sweep_ok(smoke_sweep)
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "robablate.report", str(sweep), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = proc.stdout.splitlines()
    assert any(r.startswith("static (base)") for r in rows), proc.stdout[-3000:]
    assert any(r.startswith("dynamic ") for r in rows), proc.stdout[-3000:]
    assert any(r.startswith("dynamic - static") for r in rows), proc.stdout[-3000:]
    for name in ("report.md", "tables.tex", "summary.csv", "paired.csv", "variance.csv", "tidy.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs), pngs
    with open(out / "summary.csv", newline="") as f:
        summary = [r for r in csv.DictReader(f) if r["axis"] == "masking" and r["metric"] == "score"]
    assert {r["arm"] for r in summary} == {"static", "dynamic"}
    assert all(int(r["n_runs"]) == 2 for r in summary)  # both pretraining seeds of each arm
    md = (out / "report.md").read_text()
    assert "static" in md and "dynamic" in md and ".png" in md


# --- folders and launchers (composition only) --------------------------------------------------------

def test_default_sweep_folder_is_named_by_experiment() -> None:
    cfg = compose_hydra(["experiment=smoke"])
    assert re.fullmatch(r"outputs/smoke/multirun/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", cfg.hydra.sweep.dir)
    assert re.fullmatch(r"outputs/smoke/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", cfg.hydra.run.dir)
    assert not cfg.hydra.job.chdir  # code finds its folder through HydraConfig / run_dir


@pytest.mark.parametrize("launcher, target", [
    ("basic", "hydra._internal.core_plugins.basic_launcher.BasicLauncher"),
    ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("local", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ("slurm", "hydra_plugins.robablate_slurm.slurm_launcher.SlurmLauncher"),  # upstream's, naming each failed job (src/hydra_plugins/robablate_slurm)
])
def test_launchers_compose_with_presets(launcher: str, target: str) -> None:
    extra = ["hydra.launcher.tasks_per_node=4", "hydra.launcher.gpus_per_node=4"] if "slurm" in launcher else []
    cfg = compose_hydra(["experiment=roberta_table1", f"hydra/launcher={launcher}", "trainer=ddp_spawn", *extra])
    lc = cfg.hydra.launcher
    assert lc._target_ == target
    get_class(lc._target_)  # the plugin is installed and importable
    if launcher == "local":
        assert lc.n_jobs == 2
    if "slurm" in launcher:
        assert lc.tasks_per_node == 4 and lc.gpus_per_node == 4
        assert lc.submitit_folder.startswith(cfg.hydra.sweep.dir)
    assert cfg.trainer.strategy == "ddp_spawn"  # the multirun-safe DDP (docs/facts.md §6)
    assert cfg.hydra.sweeper.params.masking == "static,dynamic"


# --- the paper presets: every job of every preset composes and validates -----------------------------

@functools.cache
def plans(cli: tuple[str, ...]) -> list[tuple[dict, object, object]]:
    """(job overrides as a dict, composed cfg, Plan) for the seed-0 jobs of `python run.py -m <cli>`:
    one per arm (the seed changes no composition, and composing is the slow part)."""
    out = []
    for job in sweep_jobs(list(cli)):
        overrides = dict(o.split("=", 1) for o in job)
        if overrides.get("seed", "0") == "0":
            cfg = compose_cfg(job)
            out.append((overrides, cfg, validate(cfg)))
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_jobs_compose_and_validate(preset: str) -> None:
    jobs = sweep_jobs([f"experiment={preset}"])
    arms = plans((f"experiment={preset}",))
    assert len(arms) >= 2 and len(jobs) == 3 * len(arms)  # three pretraining seeds per arm
    assert {o.split("=")[1] for job in jobs for o in job if o.startswith("seed=")} == {"0", "1", "2"}
    for _, cfg, plan in arms:
        assert cfg.experiment_name == preset and plan.total_steps >= 1


def test_table1_static_vs_dynamic_with_nsp() -> None:
    jobs = plans(("experiment=roberta_table1",))
    assert {cfg.masking.name for _, cfg, _ in jobs} == {"static", "dynamic"}
    assert all(plan.nsp and plan.format == "segment_pair" for _, _, plan in jobs)


@pytest.mark.slow
def test_table1_arms_diverge_within_the_budget(cache_dir) -> None:
    """Static masking equals dynamic until epoch dupe_factor (data/masking.py mask_epoch): the preset's
    budget must make more passes than that, with each static copy seen ~4 times as in RoBERTa §4.1
    (10 copies over 40 epochs)."""
    from robablate.datamodule import prepare

    cfg = compose_cfg(["experiment=roberta_table1", "masking=static", f"cache_dir={cache_dir}"])
    plan = validate(cfg)
    instances = prepare(plan).stats["instances"][0]
    epochs = plan.total_steps * plan.global_batch / instances
    dupe = cfg.masking.dupe_factor
    assert epochs >= dupe + 2, f"{epochs:.1f} epochs: static and dynamic masking would (almost) never differ"
    assert 2.5 <= epochs / dupe <= 6, f"each static copy seen {epochs / dupe:.1f} times (paper: 4)"


def test_table2_nsp_follows_the_format() -> None:
    jobs = plans(("experiment=roberta_table2",))
    got = {(plan.format, plan.nsp) for _, _, plan in jobs}
    assert got == {("segment_pair", True), ("sentence_pair", True), ("full_sentences", False),
                   ("doc_sentences", False)}
    assert all(cfg.masking.name == "dynamic" for _, cfg, _ in jobs)


def test_table3_equal_tokens_and_derived_lr() -> None:
    jobs = plans(("experiment=roberta_table3",))
    by_batch = {cfg.batch.name: (cfg, plan) for _, cfg, plan in jobs}
    assert set(by_batch) == {"bs256", "2k", "8k"}
    sizes = {k: plan.global_batch for k, (_, plan) in by_batch.items()}
    assert sizes["2k"] == 8 * sizes["bs256"] and sizes["8k"] == 32 * sizes["bs256"]  # paper ratios kept
    assert {k: plan.lr for k, (_, plan) in by_batch.items()} == {"bs256": 1e-4, "2k": 7e-4, "8k": 1e-3}
    for cfg, plan in by_batch.values():
        nominal = plan.global_batch * plan.phases[0].max_len
        # Equal budget: steps derive from train.tokens, rounded up to a whole step, and each step is
        # trimmed so the run plans train.tokens exactly (config.exact_step_tokens).
        assert plan.total_steps == math.ceil(cfg.train.tokens / nominal)
        assert abs(plan.total_steps * plan.phases[0].tokens_per_step - cfg.train.tokens) <= plan.total_steps / 2
        assert not plan.nsp and plan.format == "full_sentences"


def test_scheduler_and_seq_len_presets_keep_the_budget() -> None:
    sched = plans(("experiment=sweep_scheduler",))
    assert {cfg.scheduler.name for _, cfg, _ in sched} == {"linear", "cosine", "constant", "polynomial",
                                                             "inverse_sqrt"}
    assert len({plan.total_steps for _, _, plan in sched}) == 1  # equal steps
    seq = plans(("experiment=sweep_seq_len",))
    assert {cfg.seq_len.name for _, cfg, _ in seq} == {"128", "two_phase", "512"}
    for _, cfg, plan in seq:
        tokens = sum(ph.steps * ph.max_len for ph in plan.phases) * plan.global_batch
        assert math.isclose(tokens, cfg.train.tokens, rel_tol=0.05), (cfg.seq_len.name, tokens)


def test_presets_accept_model_seeds_and_budget_from_the_command_line() -> None:
    cli = ("experiment=roberta_table1", "model=mini", "seed=0,1,2,3,4", "train.tokens=1000000")
    jobs = sweep_jobs(list(cli))
    assert len(jobs) == 2 * 5
    assert {o for job in jobs for o in job if o.startswith("seed=")} == {f"seed={i}" for i in range(5)}
    arms = plans(cli)
    assert len(arms) == 2
    assert all(cfg.model.name == "mini" and cfg.train.tokens == 1_000_000 for _, cfg, _ in arms)
    # A single arm of a preset: the command line's value replaces the preset's list.
    one = sweep_jobs(["experiment=roberta_table2", "format=full_sentences", "seed=0"])
    assert one == [["format=full_sentences", "seed=0", "experiment=roberta_table2"]]
    # Numeric option names on the command line (seq_len=128,512) are quoted for Hydra.
    assert len(sweep_jobs(["experiment=sweep_seq_len", "seq_len=128,512", "seed=0"])) == 2


def test_combinations_match_hydra_product() -> None:
    """sweep_jobs is Hydra's own expansion: the cartesian product, command-line order last."""
    jobs = sweep_jobs(["experiment=roberta_table1", "seed=0,1"])
    expected = [[f"masking={m}", f"seed={s}", "experiment=roberta_table1"]
                for m, s in itertools.product(["static", "dynamic"], ["0", "1"])]
    assert jobs == expected


@pytest.mark.parametrize("override_dirname, expected", [("", "default/seed=3"),
                                                        ("masking=static", "masking=static/seed=3")])
def test_sweep_subdir_is_relative_even_without_arm_overrides(override_dirname, expected) -> None:
    """`python run.py -m experiment=X seed=0,1,2` has no overrides left in override_dirname: the job
    folder must still sit under hydra.sweep.dir (the plain `${...}/seed=N` was /seed=N, the root)."""
    from omegaconf import OmegaConf

    subdir = OmegaConf.to_container(OmegaConf.load(CONF / "hydra" / "default.yaml"))["sweep"]["subdir"]
    cfg = OmegaConf.create({"hydra": {"job": {"override_dirname": override_dirname}}, "seed": 3, "subdir": subdir})
    assert cfg.subdir == expected and not Path(cfg.subdir).is_absolute()
