"""Effects across budgets (robablate.report.budget): a sweep over train.tokens is read rung by rung,
each comparison's primary read-outs get a table and a trend, collapsed rungs are shown but not used,
and the report leads with the section when there is more than one rung."""

from __future__ import annotations

import numpy as np
import pytest
from test_report import write_run

from robablate import collapse
from robablate.report import budget
from robablate.report.__main__ import main as report_main
from robablate.trend import slope_log2

RUNGS = (500_000, 2_000_000, 8_000_000)
SEEDS = 3


def ladder(root, effect, noise=0.01, collapsed_at=None, tokens=RUNGS, model="tiny", overfit_at=None):
    """masking static vs dynamic at each rung, paired by seed; dynamic - static val_mlm_loss = effect(tokens)
    plus per-seed noise; steps = tokens / 4096. `collapsed_at`: the rung whose dynamic arm predicts one token."""
    rng = np.random.default_rng(0)
    for tok in tokens:
        for s in range(SEEDS):
            base = 6.0 - 0.3 * np.log2(tok / tokens[0]) + 0.05 * s
            for m, loss in (("static", base), ("dynamic", base + effect(tok) + rng.normal(0, noise))):
                coll, hist = {"collapsed": collapsed_at == tok and m == "dynamic", "why": "predicts one token"}, []
                if overfit_at == tok and m == "static":  # learned (6.45 < unigram 6.52), then rose to 6.60
                    hist = [{"step": 1, "val_mlm_loss": 6.45, "val_mlm_acc": 0.08}]
                    coll = collapse.judge(6.60, 0.10, 6.52, 0.044, history=hist)
                write_run(root, f"tokens={tok}/{model}/masking={m}/seed={s}", seed=s, axes={"masking": m, "model": model},
                          config={"train": {"tokens": tok}},
                          pretrain={"val_mlm_loss": float(loss), "tokens_seen": tok, "steps": tok // 4096,
                                    "history": hist, "collapse": coll},
                          extra={"overrides": [f"masking={m}", f"train.tokens={tok}"]})


def test_rungs_tables_and_trend_match_the_per_rung_reports(tmp_path):
    ladder(tmp_path, lambda tok: -0.05 * np.log2(tok / 5e5))   # dynamic helps more as the budget grows
    br = budget.load_budget_report(tmp_path, primary=["val_mlm_loss"])
    assert br.multi_rung and [r.tokens for r in br.rungs] == list(RUNGS)
    t = br.table
    assert list(t["tokens"]) == list(RUNGS) and set(t["axis"]) == {"masking"} and set(t["metric"]) == {"val_mlm_loss"}
    assert list(t["steps_arm"]) == [tok // 4096 for tok in RUNGS] and all(t["n_pairs"] == SEEDS)
    # Each rung's row is that rung's own report, built alone.
    from robablate.report import load_report
    alone = load_report(tmp_path / "tokens=2000000", primary=["val_mlm_loss"]).paired.iloc[0]
    row = t[t["tokens"] == 2_000_000].iloc[0]
    assert row["diff_mean"] == pytest.approx(alone["diff_mean"]) and row["verdict"] == alone["verdict"]
    # The trend is robablate.trend's slope over the rungs' effects and standard errors.
    tr = br.trends.iloc[0]
    want = slope_log2(t["tokens"], t["diff_mean"], t["se"], t["df"])
    assert tr["slope"] == pytest.approx(want.slope) and tr["slope_high"] == pytest.approx(want.high)
    assert tr["slope_low"] < -0.05 < tr["slope_high"] < 0 and tr["reading"] == "grows"


def test_a_collapsed_rung_is_shown_hollow_and_left_out_of_the_trend(tmp_path):
    ladder(tmp_path, lambda tok: -0.1, collapsed_at=2_000_000)
    br = budget.load_budget_report(tmp_path, primary=["val_mlm_loss"])
    row = br.table[br.table["tokens"] == 2_000_000].iloc[0]
    assert row["collapsed"] and not row["in_trend"]
    tr = br.trends.iloc[0]
    assert tr["rungs_used"] == 2 and "2M (collapsed arm" in tr["left_out"]
    md = budget.markdown(br)
    assert "| 2 | 2M | 488 / 488 |" in md and "Left out of the trend: 2M" in md


def test_an_overfit_arm_keeps_its_rung_in_the_trend_and_is_a_square(tmp_path):
    from robablate.report.budget_plots import plot_budget

    ladder(tmp_path, lambda tok: -0.1, overfit_at=8_000_000)
    br = budget.load_budget_report(tmp_path, primary=["val_mlm_loss"])
    row = br.table[br.table["tokens"] == 8_000_000].iloc[0]
    assert not row["collapsed"] and row["in_trend"] and "static: 3 of 3 runs overfit" in row["verdict"]
    assert br.trends.iloc[0]["rungs_used"] == 3
    ax = plot_budget(br, "masking", "dynamic", "static").axes[0]
    squares = [ln for ln in ax.get_lines() if ln.get_marker() == "s" and len(ln.get_xdata())]
    assert len(squares) == 1 and list(squares[0].get_xdata()) == [8_000_000]


def test_no_trend_reading_with_one_usable_rung(tmp_path):
    ladder(tmp_path, lambda tok: -0.1, tokens=(500_000, 2_000_000), collapsed_at=500_000)
    tr = budget.load_budget_report(tmp_path, primary=["val_mlm_loss"]).trends.iloc[0]
    assert np.isnan(tr["slope"]) and tr["reading"].startswith("no trend: 1 rung(s)")


def test_model_size_rungs_get_one_trend_per_model(tmp_path):
    ladder(tmp_path / "a", lambda tok: -0.1, model="tiny")
    ladder(tmp_path / "b", lambda tok: -0.1 + 0.02 * np.log2(tok / 5e5), model="mini")
    br = budget.load_budget_report(tmp_path, primary=["val_mlm_loss"])
    assert len(br.rungs) == 6 and sorted(br.trends["model"]) == ["mini", "tiny"]
    assert br.trends.set_index("model").loc["tiny", "reading"].startswith("no trend detectable")


def test_the_report_leads_with_the_budget_section(tmp_path, capsys):
    ladder(tmp_path / "runs", lambda tok: -0.05 * np.log2(tok / 5e5))
    out = tmp_path / "rep"
    assert report_main([str(tmp_path / "runs"), "--out", str(out), "--primary", "val_mlm_loss"]) == 0
    md = (out / "report.md").read_text()
    assert md.startswith("## Effects across budgets") and "![masking dynamic - static across budgets]" in md
    assert (out / "budget_masking_dynamic_vs_static.png").stat().st_size > 0
    assert (out / "budget.csv").exists() and (out / "budget_trends.csv").exists()


def test_one_rung_sweep_has_no_budget_section(tmp_path):
    ladder(tmp_path / "runs", lambda tok: -0.1, tokens=(2_000_000,))
    out = tmp_path / "rep"
    assert report_main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert "Effects across budgets" not in (out / "report.md").read_text() and not (out / "budget.csv").exists()


def test_notebook_leads_with_the_budget_plots_on_a_ladder(tmp_path, monkeypatch):
    """notebooks/ablation_report.ipynb, run top to bottom on a synthetic 3-rung ladder, shows the
    effect-vs-budget plot and the trend right after loading the runs."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from conftest import ROOT

    ladder(tmp_path / "runs", lambda tok: -0.05 * np.log2(tok / 5e5))
    monkeypatch.setenv("ROBABLATE_SWEEP", str(tmp_path / "runs"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    path = ROOT / "notebooks" / "ablation_report.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    i = next(k for k, c in enumerate(code) if "load_budget_report" in c.source)
    assert i == 2  # right after the setup and load cells
    outs = code[i].outputs
    assert any("image/png" in o.get("data", {}) for o in outs)
    assert "Trend per doubling of tokens" in "".join(o.get("data", {}).get("text/markdown", "") for o in outs)


def test_unpaired_rungs_count_in_the_trend_with_their_welch_interval(tmp_path):
    """Arms with different seeds do not pair: each rung's Welch interval still gives the trend a point."""
    ladder(tmp_path, lambda tok: -0.05 * np.log2(tok / 5e5))
    for f in tmp_path.rglob("masking=dynamic/seed=*/results.json"):  # dynamic runs get seeds 10..12
        import json

        d = json.loads(f.read_text())
        d["seed"] = d["config"]["seed"] = d["seed"] + 10
        f.write_text(json.dumps(d))
    br = budget.load_budget_report(tmp_path, primary=["val_mlm_loss"])
    assert (br.table["n_pairs"] == 0).all() and br.table["in_trend"].all()
    assert br.trends.iloc[0]["rungs_used"] == 3
