"""Tests of robablate.report on results.json files written here with known numbers.

Randomness in the fixtures comes from numpy generators with the seed stated at each use; the report
itself is deterministic (Student-t intervals, no resampling). The coverage of its intervals under a
simulated null is tested in test_stats_calibration.py.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from robablate.errors import ConfigError
from robablate.report import collect, load_report, plot_tasks, write_report
from robablate.report import render, stats
from robablate.report.__main__ import main as report_main
from robablate.report.tables import CONTROL_ARM

REPO = Path(__file__).resolve().parents[1]

BASE_AXES = {"masking": "static", "nsp": True, "format": "segment_pair", "batch": "default",
             "seq_len": "128", "scheduler": "linear", "model": "tiny", "corpus": "synthetic"}
BASE_CONFIG = {
    "nsp": True, "seed": 0, "run_dir": None, "cache_dir": ".cache", "experiment_name": "test",
    "masking": {"name": "static", "dupe_factor": 10, "mask_prob": 0.15},
    "format": {"name": "segment_pair"}, "batch": {"name": "default", "size": 32, "scale": 1.0},
    "seq_len": {"name": "128"}, "scheduler": {"name": "linear"}, "model": {"name": "tiny", "hidden": 64},
    "optimizer": {"lr": 1e-4, "betas": [0.9, 0.999]}, "corpus": {"name": "synthetic"},
    "glue": {"tasks": ["SYN-A", "SYN-B"], "seeds": 5}, "logger": {"name": "csv"},
}


def _deep_update(d: dict, u: dict) -> dict:
    for k, v in u.items():
        d[k] = _deep_update(d.get(k, {}), v) if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return d


def write_run(root: Path, name: str, *, axes: dict | None = None, seed: int = 0,
              tasks: dict[str, list[float]] | None = None, pretrain: dict | None = None,
              config: dict | None = None, status: str = "complete", history: list | None = None,
              extra: dict | None = None) -> Path:
    """Write <root>/<name>/results.json (schema_version 1, design.md) with the given numbers.

    tasks: task -> per-fine-tuning-seed scores (ft seeds 0..n-1; metric acc = score); extra: more
    top-level keys (plan, tune, init, blimp: the schema additions of issue 10)."""
    run_dir = root / name
    run_dir.mkdir(parents=True, exist_ok=True)
    ax = {**BASE_AXES, **(axes or {})}
    cfg = _deep_update(copy.deepcopy(BASE_CONFIG), {
        "seed": seed, "run_dir": str(run_dir), "nsp": ax["nsp"],
        **{a: {"name": ax[a]} for a in ("masking", "format", "seq_len", "scheduler", "model", "corpus")}})
    cfg = _deep_update(cfg, config or {})
    tasks = {"SYN-A": [0.7] * 3} if tasks is None else tasks
    glue_tasks = {t: {"metrics": ["acc"], "main": "acc",
                      "seeds": [{"seed": i, "metrics": {"acc": v}, "score": v} for i, v in enumerate(vals)],
                      "summary": {"median": float(np.median(vals)), "n": len(vals)}}
                  for t, vals in tasks.items()}
    value = float(np.mean([np.median(v) for v in tasks.values()])) if tasks else None
    pre = {"val_mlm_loss": 5.0, "val_mlm_ppl": math.exp(5.0), "val_mlm_acc": 0.2,
           "val_nsp_acc": 0.6 if ax["nsp"] else None, "train_loss": 5.2, "steps": 100,
           "tokens_seen": 100_000, "tokens_per_s": 4000.0, "wall_s": 25.0,
           "history": history if history is not None else
           [{"step": s, "tokens": s * 1000, "val_mlm_loss": 7 - s / 50, "val_mlm_ppl": math.exp(7 - s / 50)}
            for s in (25, 50, 75, 100)]}
    pre.update(pretrain or {})
    data = {
        "schema_version": 1, "status": status, "run_dir": str(run_dir), "experiment": "test", "overrides": [],
        "axes": ax, "seed": seed, "config": cfg, "pretrain": pre,
        "glue": {"tasks": glue_tasks,
                 "score": {"glue": {"value": value, "tasks": list(tasks), "convention": "macro-average"},
                           "bert": {"value": value, "entries": list(tasks), "convention": "BERT paper"}}},
        "environment": {"git_commit": "abc", "git_dirty": False}, "timings": {"total_s": 30.0},
        **(extra or {}),
    }
    (run_dir / "results.json").write_text(json.dumps(data))
    return run_dir


def two_arm_sweep(root: Path, base: np.ndarray, delta: np.ndarray, n_ft: int = 3,
                  ft_sd: float = 0.0, rng_seed: int = 0) -> None:
    """masking=static (scores base[i]) vs dynamic (base[i] + delta[i]) over pretraining seeds i."""
    rng = np.random.default_rng(rng_seed)
    for i, (b, d) in enumerate(zip(base, delta)):
        for arm, v in (("static", b), ("dynamic", b + d)):
            ft = (v + rng.normal(0, ft_sd, n_ft)).tolist()
            write_run(root, f"masking={arm}/seed={i}", axes={"masking": arm}, seed=i,
                      tasks={"SYN-A": ft}, pretrain={"val_mlm_loss": 5.0 - (0.5 if arm == "dynamic" else 0) + 0.01 * i})


def _row(df: pd.DataFrame, **eq) -> pd.Series:
    sel = df
    for k, v in eq.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"expected one row for {eq}, got {len(sel)}"
    return sel.iloc[0]


# ---------------------------------------------------------------------------------------------- collect


def test_collect_tidy_rows_and_columns(tmp_path):
    write_run(tmp_path, "a", tasks={"SYN-A": [0.5, 0.6], "SYN-B": [0.9, 0.8]})
    tidy, problems = collect([tmp_path])
    assert problems == []
    assert list(tidy.columns[:2]) == ["run_dir", "masking"] and "ft_seed" in tidy and "value" in tidy
    a = tidy[(tidy["task"] == "SYN-A") & (tidy["metric"] == "score")]
    assert a["ft_seed"].tolist() == [0, 1] and a["value"].tolist() == [0.5, 0.6]
    assert set(tidy.loc[tidy["task"] == "pretrain", "metric"]) == {
        "val_mlm_loss", "val_mlm_ppl", "val_mlm_acc", "val_nsp_acc", "tokens_per_s"}
    glue = tidy[tidy["task"].str.startswith("GLUE")]
    # the pseudo-task names its convention and its tasks; value = mean of the per-task medians
    assert set(glue["task"]) == {"GLUE (glue convention, tasks: SYN-A, SYN-B)",
                                 "GLUE (bert convention, tasks: SYN-A, SYN-B)"}
    assert glue["value"].iloc[0] == pytest.approx((0.55 + 0.85) / 2)
    assert tidy.loc[tidy["metric"] == "val_nsp_acc", "value"].item() == 0.6


# ----------------------------------------------------------------------------------------------- stats


def test_summary_exact_means_medians(tmp_path):
    vals = {("static", 0): [0.1, 0.2, 0.6], ("static", 1): [0.3, 0.3, 0.9],
            ("dynamic", 0): [0.5, 0.5, 0.5], ("dynamic", 1): [0.4, 0.8, 0.6]}
    for (arm, s), v in vals.items():
        write_run(tmp_path, f"{arm}/{s}", axes={"masking": arm}, seed=s, tasks={"SYN-A": v},
                  pretrain={"val_mlm_loss": 4.0 + s + (arm == "dynamic")})
    rep = load_report([tmp_path])
    assert rep.axes == ["masking"] and rep.baselines == {"masking": "static"}
    for arm in ("static", "dynamic"):
        pooled = vals[(arm, 0)] + vals[(arm, 1)]
        r = _row(rep.summary, arm=arm, task="SYN-A", metric="score")
        assert (r["n_runs"], r["n_values"]) == (2, 6)
        assert r["mean"] == pytest.approx(np.mean(pooled), abs=1e-12)
        assert r["median"] == pytest.approx(np.median(pooled), abs=1e-12)
        assert r["std"] == pytest.approx(np.std(pooled, ddof=1), abs=1e-12)
        assert r["run_median_mean"] == pytest.approx(np.mean([np.median(vals[(arm, s)]) for s in (0, 1)]))
        pre = _row(rep.summary, arm=arm, task="pretrain", metric="val_mlm_loss")
        assert pre["mean"] == pytest.approx(4.5 + (arm == "dynamic"))
    # baseline first, flagged
    assert rep.summary.iloc[0]["arm"] == "static" and rep.summary.iloc[0]["baseline"]


def test_t_ci_contains_mean_and_has_the_t_width():
    rng = np.random.default_rng(7)
    noisy, quiet = rng.normal(0.7, 0.10, 20), rng.normal(0.7, 0.01, 20)
    lo_n, hi_n = stats.t_ci(noisy)
    lo_q, hi_q = stats.t_ci(quiet)
    assert lo_n < noisy.mean() < hi_n and lo_q < quiet.mean() < hi_q
    assert (hi_n - lo_n) > 5 * (hi_q - lo_q)
    assert (hi_n - lo_n) == pytest.approx(2 * 2.0930 * noisy.std(ddof=1) / np.sqrt(20), rel=1e-4)  # t_.975,19


def test_cluster_ci_in_summary_narrows_with_less_noise(tmp_path):
    rng = np.random.default_rng(3)
    for sd, folder in ((0.05, "noisy"), (0.005, "quiet")):
        two_arm_sweep(tmp_path / folder, 0.7 + rng.normal(0, sd, 6), np.zeros(6), ft_sd=sd, rng_seed=4)
    width = {}
    for folder in ("noisy", "quiet"):
        r = _row(load_report([tmp_path / folder]).summary, arm="static", task="SYN-A", metric="score")
        assert r["ci_low"] < r["mean"] < r["ci_high"] and r["ci_method"] == "t over 6 run means"
        width[folder] = r["ci_high"] - r["ci_low"]
    assert width["noisy"] > 4 * width["quiet"]


def test_paired_test_finds_constructed_difference(tmp_path):
    # 5 pretraining seeds; seeds differ a lot (sd 0.05) but dynamic = static + 0.02 + N(0, 0.002):
    # only a paired test sees the +2 points through the seed spread. rng seed 11.
    rng = np.random.default_rng(11)
    base = 0.7 + rng.normal(0, 0.05, 5)
    two_arm_sweep(tmp_path, base, 0.02 + rng.normal(0, 0.002, 5), ft_sd=0.001, rng_seed=12)
    p = _row(load_report([tmp_path]).paired, arm="dynamic", task="SYN-A", metric="score")
    assert p["n_pairs"] == 5 and p["method"] == "paired t" and p["pairing"] == "paired by seed (5 pairs)"
    assert p["p_value"] < 0.05 and p["verdict"] == "CI excludes 0"
    assert p["diff_mean"] == pytest.approx(0.02, abs=0.005)
    assert p["diff_ci_low"] < 0.02 < p["diff_ci_high"] and p["diff_ci_low"] > 0


def test_paired_t_matches_scipy_and_reports_power(tmp_path):
    # 8 pairs (rng seeds 21, 22): CI, p, MDE and runs-to-detect agree with scipy / stats directly.
    rng = np.random.default_rng(21)
    base, delta = 0.7 + rng.normal(0, 0.05, 8), 0.002 + rng.normal(0, 0.004, 8)
    two_arm_sweep(tmp_path, base, delta, rng_seed=22)
    p = _row(load_report([tmp_path]).paired, arm="dynamic", task="SYN-A", metric="score")
    d = (base + delta) - base
    res = sps.ttest_1samp(d, 0.0)
    ci = res.confidence_interval(0.95)
    assert p["n_pairs"] == 8 and p["method"] == "paired t" and p["df"] == 7
    assert p["p_value"] == pytest.approx(res.pvalue) and p["diff_ci_low"] == pytest.approx(ci.low)
    assert p["mde"] == pytest.approx(stats.mde_paired(d.std(ddof=1), 8))
    assert p["runs_needed"] == stats.runs_to_detect(d.mean(), d.std(ddof=1), paired=True)
    if p["diff_ci_low"] < 0 < p["diff_ci_high"]:
        assert p["verdict"] == f"not detectable below {p['mde']:.3g}" and p["runs_needed"] > 8


def test_paired_test_does_not_find_pure_noise(tmp_path):
    # Both arms draw independently from one distribution (rng seed 5): no effect to find.
    rng = np.random.default_rng(5)
    base = 0.7 + rng.normal(0, 0.02, 5)
    two_arm_sweep(tmp_path, base, rng.normal(0, 0.02, 5), ft_sd=0.01, rng_seed=6)
    p = _row(load_report([tmp_path]).paired, arm="dynamic", task="SYN-A", metric="score")
    assert p["p_value"] > 0.05
    assert p["diff_ci_low"] < 0 < p["diff_ci_high"]


def test_paired_test_false_positive_rate_is_nominal():
    # 400 null experiments (rng seed 99) at 5 and at 8 pairs: rejection rate at 0.05 must be ~5%
    # (binomial sd ~1.1%; accept 1.5%..9%). Guards against pooling fine-tuning seeds as samples.
    rng = np.random.default_rng(99)
    for n in (5, 8):
        rate = np.mean([stats.t_test_p(rng.normal(0, 1, n)) < 0.05 for _ in range(400)])
        assert 0.015 <= rate <= 0.09, (n, rate)


def test_unpaired_falls_back_to_welch_and_says_so(tmp_path):
    # seeds 0,1,2 for static and 3,4,5 for dynamic: nothing pairs
    for i in range(3):
        write_run(tmp_path, f"s{i}", axes={"masking": "static"}, seed=i, tasks={"SYN-A": [0.6 + 0.01 * i] * 2})
        write_run(tmp_path, f"d{i}", axes={"masking": "dynamic"}, seed=3 + i, tasks={"SYN-A": [0.8 + 0.01 * i] * 2})
    p = _row(load_report([tmp_path]).paired, arm="dynamic", task="SYN-A", metric="score")
    assert p["n_pairs"] == 0 and p["method"] == "Welch t" and p["pairing"] == "unpaired: no shared seeds"
    assert p["diff_mean"] == pytest.approx(0.2) and p["p_value"] < 0.01


def test_holm_adjustment():
    adj = stats.holm([0.01, 0.04, np.nan, 0.03])
    assert adj[0] == pytest.approx(0.03) and adj[3] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06)
    assert np.isnan(adj[2])


def test_every_arm_in_every_table(tmp_path):
    for m in ("static", "dynamic"):
        for nsp in (True, False):
            for s in (0, 1):
                write_run(tmp_path, f"{m}-{nsp}-{s}", axes={"masking": m, "nsp": nsp,
                          "format": "segment_pair" if nsp else "full_sentences"}, seed=s,
                          tasks={"SYN-A": [0.6, 0.7, 0.65], "SYN-B": [0.5, 0.55, 0.52]})
    rep = load_report([tmp_path])
    assert rep.axes == ["masking", "nsp", "format"]
    assert rep.baselines == {"masking": "static", "nsp": "true", "format": "segment_pair"}
    for axis, arms in (("masking", {"static", "dynamic"}), ("nsp", {"true", "false"}),
                       ("format", {"segment_pair", "full_sentences"})):
        s = rep.summary[rep.summary["axis"] == axis]
        for (_, metric), g in s.groupby(["task", "metric"]):
            # val_nsp_acc: an arm without NSP cannot have it, so it gets no row (issue 19)
            want = {a for a in arms if a not in ("false", "full_sentences")} if metric == "val_nsp_acc" else arms
            assert set(g["arm"]) == want
        p = rep.paired[rep.paired["axis"] == axis]
        assert set(p["arm"]) == arms - {rep.baselines[axis]} and set(p["task"]) == set(s["task"])
        if axis != "masking":
            assert "val_nsp_acc" not in set(p["metric"])
        # format moves with nsp (format=auto): runs still pair across it, 2 masking x 2 seeds
        assert (p.loc[p["metric"] == "score", "n_pairs"] == 4).all()
    assert rep.determined == {"masking": [], "nsp": ["format"], "format": ["nsp"]}
    nsp = rep.summary[(rep.summary["axis"] == "nsp") & (rep.summary["metric"] == "val_nsp_acc")]
    assert set(nsp["arm"]) == {"true"}
    cells = {f"masking={m}, nsp={n}, format={f}" for m in ("static", "dynamic")
             for n, f in (("true", "segment_pair"), ("false", "full_sentences"))}
    for task in ("SYN-A", "SYN-B"):
        assert set(rep.variance.loc[rep.variance["task"] == task, "arm"]) == cells


def test_baseline_option_and_canonical_batch_order(tmp_path):
    for b, size in (("8k", 8192), ("bs256", 256), ("2k", 2048)):
        write_run(tmp_path, b, axes={"batch": b}, config={"batch": {"name": b, "size": size}})
    assert load_report([tmp_path]).baselines == {"batch": "bs256"}
    rep = load_report([tmp_path], baseline={"batch": "8k"})
    assert rep.baselines == {"batch": "8k"} and set(rep.paired["arm"]) == {"bs256", "2k"}


def test_unknown_baseline_lists_available(tmp_path, capsys):
    two_arm_sweep(tmp_path, np.full(2, 0.7), np.zeros(2))
    with pytest.raises(ConfigError, match="available values of masking: static, dynamic"):
        load_report([tmp_path], baseline={"masking": "fancy"})
    with pytest.raises(ConfigError, match="available keys: masking"):
        load_report([tmp_path], baseline={"optimizer": "adam"})
    with pytest.raises(ConfigError, match="available metrics: .*acc.*val_mlm_loss"):
        load_report([tmp_path], metrics=["f1"])
    assert report_main([str(tmp_path), "--baseline", "masking=fancy"]) == 2
    err = capsys.readouterr().err
    assert "static, dynamic" in err and "fancy" in err
    assert not (tmp_path / "report").exists()


# ------------------------------------------------------------------------------------ variance components


def test_variance_components_exact_on_balanced_design():
    # run means m_i, fine-tuning values m_i + (-d, 0, d): within variance d^2 exactly and
    # between = var(m) - d^2/3 (the ANOVA removes the fine-tuning share of the run-mean variance)
    m, d = np.array([0.1, 0.4, 0.2, 0.9]), 0.05
    vc = stats.variance_components([mi + np.array([-d, 0, d]) for mi in m])
    assert vc["var_finetune"] == pytest.approx(d ** 2)
    assert vc["var_pretrain"] == pytest.approx(np.var(m, ddof=1) - d ** 2 / 3)
    assert vc["frac_pretrain"] == pytest.approx(vc["var_pretrain"] / (vc["var_pretrain"] + d ** 2))


@pytest.mark.parametrize("sd_pre,sd_ft", [(0.05, 0.005), (0.002, 0.05)])
def test_variance_decomposition_recovers_components(tmp_path, sd_pre, sd_ft):
    # 12 pretraining seeds x 5 fine-tuning seeds (rng seed 8). Tolerance: with 11 and 48 degrees of
    # freedom the estimates are within a factor ~2 of the truth with high probability.
    rng = np.random.default_rng(8)
    for i, off in enumerate(rng.normal(0, sd_pre, 12)):
        write_run(tmp_path, f"r{i}", seed=i, tasks={"SYN-A": (0.7 + off + rng.normal(0, sd_ft, 5)).tolist()})
    v = _row(load_report([tmp_path]).variance, task="SYN-A", metric="score")
    assert (v["n_runs"], v["n_values"]) == (12, 60)
    assert 0.5 * sd_ft ** 2 < v["var_finetune"] < 2 * sd_ft ** 2
    if sd_pre > sd_ft:
        assert 0.4 * sd_pre ** 2 < v["var_pretrain"] < 2.5 * sd_pre ** 2 and v["frac_pretrain"] > 0.95
    else:
        assert v["frac_pretrain"] < 0.2


# ------------------------------------------------------------------------------------- problems, flags


def test_corrupt_foreign_and_failed_are_named(tmp_path, capsys):
    two_arm_sweep(tmp_path, np.full(2, 0.7), np.full(2, 0.01))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text('{"schema_version": 1, "status": ')
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text('{"accuracy": 0.9}')
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / "results.json").write_text('{"schema_version": 99, "status": "complete"}')
    write_run(tmp_path, "crashed", axes={"masking": "dynamic"}, seed=7, status="failed")
    tidy, problems = collect([tmp_path])
    kinds = {Path(p["path"]).parent.name: p["kind"] for p in problems}
    assert kinds == {"bad": "corrupt", "other": "foreign", "future": "foreign", "crashed": "failed"}
    assert tidy["run_dir"].nunique() == 4 and not tidy["run_dir"].str.contains("crashed").any()

    out = tmp_path / "out"
    assert report_main([str(tmp_path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    for name in ("bad", "other", "future"):
        assert str(tmp_path / name / "results.json") in err
    md = (out / "report.md").read_text()
    assert "crashed" in md and "failed" in md


def test_no_results_exits_2_with_message(tmp_path):
    r = subprocess.run([sys.executable, "-m", "robablate.report", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert "no complete results.json" in r.stderr and str(tmp_path) in r.stderr


def test_off_axis_difference_is_flagged(tmp_path):
    write_run(tmp_path, "a", axes={"masking": "static"}, seed=0)
    write_run(tmp_path, "b", axes={"masking": "dynamic"}, seed=1, config={"optimizer": {"lr": 3e-4}})
    rep = load_report([tmp_path])
    assert rep.off_axis["key"].tolist() == ["optimizer.lr"]  # not seed, run_dir, nor the masking group
    row = rep.off_axis.iloc[0]
    assert "0.0001" in row["values"] and "0.0003" in row["values"] and row["confounded_with"] == "masking"
    # same config -> nothing flagged
    write_run(tmp_path, "b", axes={"masking": "dynamic"}, seed=1)
    assert load_report([tmp_path]).off_axis.empty


# ------------------------------------------------------------------------------------------- outputs


def _png_ok(path: Path) -> None:
    from matplotlib.image import imread

    assert path.stat().st_size > 1024, path
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0


def test_write_report_files(tmp_path):
    rng = np.random.default_rng(1)
    two_arm_sweep(tmp_path / "sweep", 0.7 + rng.normal(0, 0.02, 3), np.full(3, 0.02), ft_sd=0.01)
    rep = load_report([tmp_path / "sweep"])
    out = tmp_path / "out"
    write_report(rep, out)
    for kind in ("effects", "tasks", "glue", "mlm_curve", "throughput", "tokens"):
        _png_ok(out / f"{kind}_masking.png")
        assert (out / f"{kind}_masking.pdf").read_bytes()[:4] == b"%PDF"
    for name in ("tidy", "summary", "paired", "variance", "compute"):
        assert len(pd.read_csv(out / f"{name}.csv")) > 0
    md, tex = (out / "report.md").read_text(), (out / "tables.tex").read_text()
    assert "glue convention, tasks: SYN-A" in md and "bert convention" in md
    assert "static" in md and "dynamic" in md and "![tasks_masking.png]" in md
    # the report leads with the effect plot and its table, before the runs and per-arm tables
    assert md.index("## Effects") < md.index("![effects_masking.png]") < md.index("## Runs")
    assert tex.count(r"\begin{table}") == 4 and tex.count("convention") >= 3 and "SYN-A" in tex
    assert plot_tasks(rep, "masking") is not None


def test_cli_writes_default_out_and_prints_table(tmp_path, capsys):
    two_arm_sweep(tmp_path, np.array([0.7, 0.72]), np.full(2, 0.02))
    assert report_main([str(tmp_path), "--metric", "score", "val_mlm_loss"]) == 0
    out = capsys.readouterr().out
    assert "dynamic" in out and "val_mlm_loss" in out and "tokens_per_s" not in out
    assert (tmp_path / "report" / "report.md").exists()


def test_wandb_offline_logs_summary(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    two_arm_sweep(tmp_path / "sweep", np.array([0.7, 0.72]), np.full(2, 0.0123))
    try:
        assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out"),
                            "--wandb"]) == 0
    finally:
        wandb.teardown()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    texts = [f.read_text(errors="ignore") for f in runs[0].rglob("*.json") if "summary" in f.name]
    assert any("dynamic" in t and "SYN-A" in t for t in texts), [f.name for f in runs[0].rglob("*")]


def test_one_run_per_arm_and_single_arm_reports(tmp_path):
    # One pretraining run per arm: the only test left is over fine-tuning seeds, and it says so.
    write_run(tmp_path / "two", "s", axes={"masking": "static"}, tasks={"SYN-A": [0.60, 0.61, 0.62]})
    write_run(tmp_path / "two", "d", axes={"masking": "dynamic"}, tasks={"SYN-A": [0.70, 0.71, 0.72]})
    rep = load_report([tmp_path / "two"])
    p = _row(rep.paired, arm="dynamic", task="SYN-A", metric="score")
    assert "fine-tuning noise only" in p["method"] and p["diff_mean"] == pytest.approx(0.1) and p["p_value"] < 0.01
    assert _row(rep.summary, arm="static", task="SYN-A", metric="score")["ci_method"].startswith(
        "t over 3 ft seeds (1 run")
    # a single pretraining-only run (glue null): no varied axis, one pooled arm, still a report
    write_run(tmp_path / "one", "r", tasks={})
    data = json.loads((tmp_path / "one" / "r" / "results.json").read_text())
    data["glue"] = None
    (tmp_path / "one" / "r" / "results.json").write_text(json.dumps(data))
    rep = load_report([tmp_path / "one"])
    assert rep.axes == [] and set(rep.summary["task"]) == {"pretrain"} and rep.paired.empty
    written = write_report(rep, tmp_path / "one-out")
    assert (tmp_path / "one-out" / "mlm_curve_all.png") in written
    assert "no fine-tuning results" in (tmp_path / "one-out" / "report.md").read_text()


# ------------------------------------------------------------------ pairing, compute and confound flags


FORMAT_NSP = {"segment_pair": True, "sentence_pair": True, "full_sentences": False, "doc_sentences": False}


def format_sweep(root: Path, tokens: dict[str, int] | None = None, seeds=(0, 1, 2), rng_seed: int = 3) -> None:
    """RoBERTa Table 2's design: nsp is a function of format, but not one-to-one (two formats per nsp)."""
    rng = np.random.default_rng(rng_seed)
    for fmt, nsp in FORMAT_NSP.items():
        for s in seeds:
            write_run(root, f"format={fmt}/seed={s}", axes={"format": fmt, "nsp": nsp}, seed=s,
                      tasks={"SYN-A": [0.6 + 0.01 * s + rng.normal(0, 0.001)] * 2},
                      pretrain={"val_mlm_loss": 6.3 + 0.02 * s + rng.normal(0, 0.005),
                                "tokens_seen": (tokens or {}).get(fmt, 1_000_000),
                                "tokens_per_step": (tokens or {}).get(fmt, 1_000_000) / 100},
                      extra={"plan": {"lr": 1e-3, "tokens_per_step_target": 10_000}})


def test_functional_dependence_pairs_formats_by_seed(tmp_path):
    format_sweep(tmp_path)
    rep = load_report([tmp_path])
    assert rep.axes == ["nsp", "format"] and rep.determined["format"] == ["nsp"] and rep.determined["nsp"] == []
    fmt = rep.paired[rep.paired["axis"] == "format"]
    assert (fmt.loc[fmt["metric"] == "score", "n_pairs"] == 3).all() and (fmt["method"] == "paired t").any()
    assert set(fmt.loc[fmt["metric"] == "val_mlm_loss", "pairing"]) == {"paired by seed (3 pairs)"}
    assert (fmt["also_differs"].isin(["nsp: true -> false", ""])).all()
    # nsp does not determine format: nsp=false runs share no format with nsp=true ones, so nothing
    # pairs, and the table says why
    nsp = _row(rep.paired, axis="nsp", task="pretrain", metric="val_mlm_loss")
    assert nsp["n_pairs"] == 0 and nsp["method"] == "Welch t"
    assert nsp["pairing"] == "unpaired: configs differ in format (not determined by nsp)"


def test_unpaired_names_the_config_key_that_differs(tmp_path):
    # dynamic's runs used two LRs (1e-4 for seed 0, 3e-4 for seeds 1, 2): optimizer.lr is not a
    # function of masking, so only seed 0 pairs
    for s in range(3):
        write_run(tmp_path, f"s{s}", axes={"masking": "static"}, seed=s, tasks={"SYN-A": [0.6 + 0.01 * s] * 2})
        write_run(tmp_path, f"d{s}", axes={"masking": "dynamic"}, seed=s, tasks={"SYN-A": [0.62 + 0.01 * s] * 2},
                  config={"optimizer": {"lr": 1e-4 if s == 0 else 3e-4}})
    p = _row(load_report([tmp_path]).paired, arm="dynamic", task="SYN-A", metric="score")
    assert p["n_pairs"] == 1 and p["method"] == "Welch t"
    assert p["pairing"] == "unpaired: 1 pair (need 2); configs differ in optimizer.lr (not determined by masking)"
    assert "optimizer.lr" in p["also_differs"] and "config differs: optimizer.lr" in p["flags"]


def test_tokens_seen_mismatch_is_flagged_in_the_table(tmp_path):
    # the committed Table 2 runs: DOC 1.016M vs FULL 0.84M (21%); SENTENCE within 1% of SEGMENT
    format_sweep(tmp_path, tokens={"segment_pair": 1_000_000, "sentence_pair": 1_009_000,
                                   "full_sentences": 840_000, "doc_sentences": 1_016_000})
    rep = load_report([tmp_path])
    ctx = rep.paired[(rep.paired["axis"] == "format") & (rep.paired["metric"] == "val_mlm_loss")].set_index("arm")
    assert ctx.loc["sentence_pair", "flags"] == ""  # +0.9%: compute-matched
    assert "tokens seen -16.0%" in ctx.loc["full_sentences", "flags"]
    assert ctx.loc["doc_sentences", "tokens_rel"] == pytest.approx(0.016)
    assert ctx.loc["doc_sentences", "flags"] == ""  # 1.6% <= 2%
    flags = rep.token_flags[rep.token_flags["axis"] == "format"]
    row = _row(flags, arm_more="doc_sentences", arm_fewer="full_sentences")
    assert "+21.0%" in row["flag"] and not ((flags["arm_more"] == "sentence_pair") & (flags["arm_fewer"] == "segment_pair")).any()
    c = _row(rep.compute, axis="format", arm="full_sentences")
    assert c["tokens_mean"] == 840_000 and c["tokens_vs_base"] == pytest.approx(-0.16)
    assert (c["tokens_per_step"], c["tokens_per_step_target"]) == (8400, 10_000)
    assert render.compute_display(rep.compute).set_index("arm").loc["full_sentences", "tokens/step (target)"] \
        == "8400 (10000)"
    assert "not compute-matched**: doc_sentences vs full_sentences" in render.markdown(rep, {})


def _batch_sweep(root: Path, lrs: dict[str, float], tune: bool) -> None:
    for b, size in (("bs256", 8), ("2k", 64)):
        for s in range(3):
            extra = {"plan": {"lr": lrs[b]}}
            if tune:
                extra["tune"] = {"lr_grid": [1e-4, 3e-4, 1e-3], "chosen_lr": lrs[b], "rule": "lowest val loss",
                                 "val_loss_by_lr": {"0.0001": 6.6, "0.0003": 6.5, "0.001": 6.55}, "tokens": 200_000,
                                 "split": "held-out train tail"}
            write_run(root, f"batch={b}/seed={s}", axes={"batch": b}, seed=s,
                      config={"batch": {"name": b, "size": size, "lr": lrs[b]}}, extra=extra,
                      pretrain={"val_mlm_loss": 6.5 - (0.03 if b == "2k" else 0) + 0.01 * s})


def test_lr_set_by_preset_is_flagged_and_tuned_lr_is_not(tmp_path):
    _batch_sweep(tmp_path / "preset", {"bs256": 1e-4, "2k": 7e-4}, tune=False)
    rep = load_report([tmp_path / "preset"])
    p = _row(rep.paired, arm="2k", task="pretrain", metric="val_mlm_loss")
    assert p["n_pairs"] == 3  # the LR travels with the arm: it does not break pairing, it is flagged
    assert p["flags"] == "lr 0.0001 vs 0.0007 (set by preset, not tuned)" and not p["lr_tuned"]
    assert _row(rep.compute, arm="2k")["lr_source"] == "preset / config (not tuned)"
    _batch_sweep(tmp_path / "tuned", {"bs256": 3e-4, "2k": 1e-3}, tune=True)
    rep = load_report([tmp_path / "tuned"])
    p = _row(rep.paired, arm="2k", task="pretrain", metric="val_mlm_loss")
    assert p["n_pairs"] == 3 and p["flags"] == "" and p["lr_note"] == "lr tuned per arm (0.0003 vs 0.001)"
    assert _row(rep.compute, arm="2k")["lr"] == "0.001"
    assert _row(rep.compute, arm="2k")["lr_source"] == "tuned per arm: lowest val loss"


# ---------------------------------------------------------------------------- control and BLiMP


def _blimp(acc: float) -> dict:
    return {"overall": acc, "by_term": {"island_effects": acc - 0.05, "anaphor_agreement": acc + 0.05},
            "by_field": {"syntax": acc - 0.01, "semantics": acc + 0.01},
            "by_paradigm": {"adjunct_island": acc}, "n_pairs": 1000, "max_pairs": 100, "method": "pll",
            "wall_s": 3.0}


def test_random_init_control_and_blimp_readouts(tmp_path):
    # 2 arms x 3 seeds pretrained + 3 random-init control runs (seeds 0-2). BLiMP: static 0.60 +
    # 0.01 s, dynamic 0.62 + 0.01 s, control 0.50 + 0.005 s.
    for s in range(3):
        for arm, acc in (("static", 0.60), ("dynamic", 0.62)):
            write_run(tmp_path, f"{arm}/{s}", axes={"masking": arm}, seed=s, tasks={"SYN-A": [acc] * 2},
                      extra={"blimp": _blimp(acc + 0.01 * s)})
        write_run(tmp_path, f"control/{s}", seed=s, tasks={"SYN-A": [0.5] * 2},
                  extra={"init": "random", "blimp": _blimp(0.5 + 0.005 * s)})
    rep = load_report([tmp_path])
    assert rep.axes == ["masking"]  # the control is not an arm of the axis
    assert rep.tidy["run_dir"].nunique() == 6 and rep.control["run_dir"].nunique() == 3
    tasks = set(rep.summary["task"])
    assert {"BLiMP", "BLiMP field: syntax", "BLiMP term: island_effects"} <= tasks
    ctrl = _row(rep.summary, arm=CONTROL_ARM, task="BLiMP", metric="blimp_acc")
    assert ctrl["n_runs"] == 3 and ctrl["mean"] == pytest.approx(0.505)
    p = _row(rep.paired, arm="dynamic", task="BLiMP", metric="blimp_acc")
    assert p["diff_mean"] == pytest.approx(0.02) and p["n_pairs"] == 3
    g = _row(rep.gain, arm="dynamic", task="BLiMP", metric="blimp_acc")
    assert g["n_pairs"] == 3 and g["method"] == "paired t" and g["diff_mean"] == pytest.approx(0.62 + 0.01 - 0.505)
    d = np.array([0.62 + 0.01 * s - (0.5 + 0.005 * s) for s in range(3)])
    assert (g["diff_ci_low"], g["diff_ci_high"]) == pytest.approx(tuple(map(float, stats.t_ci(d))))
    assert _row(rep.gain, arm="static", task="SYN-A", metric="score")["diff_mean"] == pytest.approx(0.1)
    md = render.markdown(rep, {})  # (write_report's plots are tested above; markdown alone is fast)
    assert "Gain over the random-init control" in md and "3 random-init control runs" in md
    # without shared seeds the gain falls back to Welch and says so
    for s in range(3):
        (tmp_path / f"control/{s}").rename(tmp_path / f"ctrl{s}")
        data = json.loads((tmp_path / f"ctrl{s}" / "results.json").read_text())
        data["seed"] = 10 + s
        (tmp_path / f"ctrl{s}" / "results.json").write_text(json.dumps(data))
    g = _row(load_report([tmp_path]).gain, arm="dynamic", task="BLiMP", metric="blimp_acc")
    assert g["n_pairs"] == 0 and g["method"] == "Welch t" and g["pairing"] == "unpaired: no shared seeds"


def test_control_without_pretrain_block_loads(tmp_path):
    write_run(tmp_path, "a", seed=0)
    write_run(tmp_path, "c", seed=0, extra={"init": "random"})
    data = json.loads((tmp_path / "c" / "results.json").read_text())
    data["pretrain"] = None
    (tmp_path / "c" / "results.json").write_text(json.dumps(data))
    rep = load_report([tmp_path])
    assert rep.problems == [] and rep.control["run_dir"].nunique() == 1
