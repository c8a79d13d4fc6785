"""The committed WikiText-2 study v2 (experiments/wikitext2_cpu_v2, issue 14): every table's report,
headline and verdicts reproduce byte for byte from the committed results.json files, the pilot's
numbers and seed decision reproduce from the committed pilot runs, the arms are token-matched within
1% (Table 3's 8K arm 1.5%), each table holds the seeds the pilot chose plus its random-init control, Table 3's learning rates
were tuned per arm, and the README quotes the generated tables verbatim."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import ROOT, assert_report_reproduces, load_script


STUDY = ROOT / "experiments" / "wikitext2_cpu_v2"
TABLES = {  # table -> (axis, arms), as conf/experiment/wikitext2_cpu_table*.yaml sweep them
    "table1": ("masking", {"static", "dynamic"}),
    "table2": ("format", {"segment_pair", "sentence_pair", "full_sentences", "doc_sentences"}),
    "table3": ("batch", {"bs256", "2k", "8k"}),
}
COMPARED = ("report.md", "summary.csv", "paired.csv", "variance.csv", "tidy.csv", "tables.tex", "compute.csv",
            "gain.csv")


def _runs(folder):
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.rglob("results.json"))]


@pytest.mark.parametrize("table", sorted(TABLES))
def test_committed_results_reproduce_the_committed_report(table, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert_report_reproduces(STUDY, table, *TABLES[table], COMPARED, tmp_path)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_each_table_has_the_pilots_seeds_and_its_control(table):
    pilot = load_script(STUDY / "pilot.py")
    _, seeds = pilot.report(STUDY / "results" / "pilot")
    axis, arms = TABLES[table]
    runs = _runs(STUDY / "results" / table)
    assert all(r["status"] == "complete" and r["pretrain"]["history"] for r in runs)
    trained = [r for r in runs if r["init"] == "pretrained"]
    control = [r for r in runs if r["init"] == "random"]
    for arm in arms:
        got = sorted(r["seed"] for r in trained if str(r["axes"][axis]) == arm)
        assert got == list(range(seeds[table])), (table, arm, got)
    assert sorted(r["seed"] for r in control) == [0, 1, 2]
    assert all(r["blimp"]["n_pairs"] == 6700 for r in runs)  # every BLiMP pair, no max_pairs cap


# Tokens seen per arm vs the baseline arm. Table 3's 8K arm steps in 32K-token units: 2M tokens is 61.04
# steps, rounded up to 62 (+1.5%); the README states it (and that the extra tokens favour the arm that lost).
TOKEN_TOLERANCE = {"table1": 0.01, "table2": 0.01, "table3": 0.016}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_arms_are_token_matched(table):
    c = pd.read_csv(STUDY / "report" / table / "compute.csv")
    c = c[c["axis"] == TABLES[table][0]]
    base = c.loc[c["baseline"], "tokens_mean"].item()
    tol = TOKEN_TOLERANCE[table]
    assert ((c["tokens_min"] / base - 1).abs() <= tol).all() and ((c["tokens_max"] / base - 1).abs() <= tol).all()


def test_table3_learning_rates_tuned_per_arm():
    for r in _runs(STUDY / "results" / "table3"):
        if r["init"] == "pretrained":
            tune = r["tune"]
            assert r["plan"]["lr"] == tune["chosen_lr"] and len(tune["lr_grid"]) >= 3
            assert tune["chosen_lr"] not in (min(tune["lr_grid"]), max(tune["lr_grid"])), "choice at a grid edge"
    paired = pd.read_csv(STUDY / "report" / "table3" / "paired.csv")
    assert not paired["flags"].fillna("").str.contains("not tuned").any()


def test_pilot_and_verdicts_reproduce(tmp_path):
    pilot = load_script(STUDY / "pilot.py")
    text, _ = pilot.report(STUDY / "results" / "pilot")
    assert text == (STUDY / "results" / "pilot.md").read_text(encoding="utf-8")
    verdicts = load_script(STUDY / "verdicts.py")
    assert verdicts.document(STUDY / "report") == (STUDY / "report" / "verdicts.md").read_text(encoding="utf-8")


def test_readme_quotes_the_generated_tables():
    """Every table in the README is the committed file it quotes (quote.py refreshes them)."""
    quote = load_script(STUDY / "quote.py")
    readme = (STUDY / "README.md").read_text(encoding="utf-8")
    assert quote.refresh(readme) == readme, f"{STUDY / 'README.md'} is stale: run python {STUDY / 'quote.py'}"
    for retracted in ("percentile bootstrap", "learning rate"):
        assert retracted in readme


def test_restated_verdicts_collapse_confound_and_provenance():
    """Issue 19: Table 3's 2K/8K arms collapsed (no agrees/opposite on them), the NSP row is confounded by
    format and shows its blocked reading, and the README discloses the dirty tree."""
    text = (STUDY / "report" / "verdicts.md").read_text(encoding="utf-8")
    table3 = text.split("**Table 3")[1]
    rows = [line for line in table3.splitlines() if line.startswith("| batch")]
    assert len(rows) == 4 and all("collapsed arm" in r and "opposite" not in r and "agrees" not in r for r in rows)
    nsp = [line for line in text.splitlines() if line.startswith("| nsp")]
    assert nsp and all("confounded by format; blocked reading: nsp=true with format=segment_pair only" in r
                       for r in nsp)
    readme = (STUDY / "README.md").read_text(encoding="utf-8")
    assert "git_dirty: true" in readme and "collapsed" in readme
    for t in ("table1", "table2", "table3"):
        assert "**dirty tree**" in (STUDY / "report" / t / "report.md").read_text(encoding="utf-8")
