"""WikiText-2 study v3, effects across budgets (experiments/wikitext2_cpu_v3, issue "Effects across
budgets"). Now: the presets sweep what the README's design says (rungs, seeds, BLiMP on every run, the
control once), the batch rungs give the largest batch the pilot rule's steps, run_all.sh runs every
preset's rungs, refuses a dirty tree and its dry run stays within 6 CPU-hours. Once results are
committed: every report's budget tables, the pilot and the README blocks reproduce byte for byte from
the committed results.json files, every run feeds its budget within 0.1%, and no verdict comes from a
collapsed arm. Those tests skip, saying so, until the study's results are committed."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import ROOT, load_script
from test_presets import composed

STUDY = ROOT / "experiments" / "wikitext2_cpu_v3"
RESULTS, REPORT = STUDY / "results", STUDY / "report"
PARTS = {  # part -> (preset, rungs in tokens, {axis: arms})
    "masking": ("wikitext2_cpu_v3_masking", [500_000, 1_000_000, 2_000_000, 3_000_000, 4_000_000],
                {"masking": "static,dynamic"}),
    "nsp": ("wikitext2_cpu_v3_nsp", [1_000_000, 2_000_000, 4_000_000],
            {"format": "segment_pair,full_sentences,doc_sentences"}),
    "batch": ("wikitext2_cpu_v3_batch", [2_000_000, 4_000_000], {"batch": "bs256,2k"}),
}
REPORTS = {  # report folder -> (results part, --baseline)
    "masking": ("masking", None), "nsp_full_vs_segment_pair": ("nsp", {"format": "segment_pair"}),
    "nsp_doc_vs_full": ("nsp", {"format": "full_sentences"}), "batch": ("batch", None),
}


def _tokens(params: dict) -> list[int]:
    return [int(t) for t in str(params["train.tokens"]).split(",")]


def _committed(part: str):
    if not (RESULTS / part).is_dir() or not list((RESULTS / part).rglob("results.json")):
        pytest.skip(f"study v3 has no committed results under {RESULTS / part} yet (run_all.sh commits each rung)")


def _rungs(part: str) -> int:
    """Committed rungs of a part (results/<part>/tokens-<budget>/): the budget tables need two."""
    return len([d for d in (RESULTS / part).glob("tokens-*") if list(d.rglob("results.json"))])


def _budget_tables(part: str) -> None:
    _committed(part)
    if _rungs(part) < 2:
        pytest.skip(f"study v3 has {_rungs(part)} committed rung of {part}: its budget tables need two (the study is "
                    "run in sittings, rung by rung)")


@pytest.mark.parametrize("part", sorted(PARTS))
def test_presets_sweep_the_design(part):
    preset, rungs, axes = PARTS[part]
    cfg, params = composed(preset)
    assert _tokens(params) == rungs and params["seed"] == "0,1,2"
    assert all(params[a] == arms for a, arms in axes.items())
    assert cfg["corpus"]["name"] == "wikitext2" and cfg["model"]["name"] == "tiny"
    assert cfg["eval"]["name"] == "blimp" and cfg["glue"]["name"] == "none"  # BLiMP on every run
    assert cfg["batch"]["unit"] == "tokens"                                   # exact budgets
    if part == "masking":  # fixed copies: each static copy repeats more as the budget grows
        assert cfg["masking"]["dupe_factor"] == 10 and cfg["corpus"]["max_docs"] == 16 and cfg["nsp"] is True
    if part == "batch":
        assert cfg["batch"]["scale"] == 1 / 64 and cfg["tune"]["lr"]  # 4 vs 32 sequences, LR tuned per arm


def test_ladder_presets_are_the_tables_over_rungs():
    for name, table in (("ladder_masking", "roberta_table1"), ("ladder_nsp", "roberta_table2"),
                        ("ladder_batch", "roberta_table3")):
        cfg, params = composed(name)
        _, table_params = composed(table)
        assert len(_tokens(params)) >= 2 and params["seed"] == table_params["seed"]
        assert set(params) - {"train.tokens"} == set(table_params)


def test_control_once_and_pilot_at_the_largest_batch():
    control, cparams = composed("wikitext2_cpu_v3_control")
    assert control["model"]["init"] == "random" and "train.tokens" not in cparams
    pilot, pparams = composed("wikitext2_cpu_v3_pilot")
    assert pparams["batch"] == "2k" and _tokens(pparams) == [2_000_000]
    assert pilot["eval"]["name"] == "blimp" and pilot["train"]["val_every_steps"] == 16


def test_batch_rungs_give_the_largest_batch_the_steps_the_readme_states():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from robablate.config import validate

    steps = []
    for tokens in PARTS["batch"][1]:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=["experiment=wikitext2_cpu_v3_batch", "batch=2k",
                                                           f"train.tokens={tokens}", "tune.lr=null"])
        steps.append(validate(cfg).total_steps)
    assert steps == [489, 977]
    assert "489 and 977 steps" in (STUDY / "README.md").read_text(encoding="utf-8")


def test_run_all_runs_every_rung_of_every_preset():
    script = (STUDY / "run_all.sh").read_text(encoding="utf-8")
    for part, (preset, rungs, _) in PARTS.items():
        assert f"[{part}]={preset}" in script
        assert re.search(rf'\[{part}\]="{" ".join(map(str, rungs))}"', script), part
    assert "[control]=wikitext2_cpu_v3_control" in script and "[pilot]=wikitext2_cpu_v3_pilot" in script
    assert "pilot.py \"$OUT/pilot\" --check ${RUNGS[batch]}" in script


def test_dry_run_of_the_study_stays_within_6_cpu_hours(tmp_path):
    r = subprocess.run(["bash", str(STUDY / "run_all.sh"), str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                       text=True, env={**__import__("os").environ, "DRY_RUN": "1",
                                       "PYTHON": __import__("sys").executable}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    totals = [line.split() for line in r.stdout.splitlines() if line.split()[:1] == ["total"]]
    pilot = bool(list((RESULTS / "pilot").rglob("results.json")))  # a committed pilot is reused, not re-run
    assert ("reusing the committed pilot" in r.stderr) == pilot
    assert len(totals) == 11 + (not pilot)  # (pilot), 5 + 3 + 2 rungs, control
    runs, hours = sum(int(t[1]) for t in totals), sum(float(t[-1]) for t in totals)
    assert runs == 72 + 3 * (not pilot) and hours + 0.3 * pilot <= 6.0, (runs, hours)
    out = tmp_path / "out"  # nothing ran: no run started, the only results.json are the committed pilot's copies
    assert not list(out.rglob("started.json"))
    assert len(list(out.rglob("results.json"))) == len(list((RESULTS / "pilot").rglob("results.json")))


def test_study_script_refuses_a_dirty_tree_unless_told(tmp_path):
    import shutil

    repo = tmp_path / "repo"
    (repo / "experiments" / "wikitext2_cpu_v3").mkdir(parents=True)
    script = repo / "experiments" / "wikitext2_cpu_v3" / "run_all.sh"
    shutil.copy(STUDY / "run_all.sh", script)
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=repo,  # noqa: E731
                                    check=True, capture_output=True)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "x")
    script.write_text(script.read_text() + "\n# edited\n")
    r = subprocess.run(["bash", str(script), str(tmp_path / "out")], cwd=repo, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "uncommitted changes" in r.stderr and not (tmp_path / "out").exists()
    # a later sitting of a pinned study (OUT/commit exists) runs in the clean pinned worktree: this
    # checkout may change (run_all.sh rewrites its reports after every rung) without stopping it
    (tmp_path / "pinned").mkdir()
    (tmp_path / "pinned" / "commit").write_text(subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, text=True,
                                                               capture_output=True).stdout)
    r = subprocess.run(["bash", str(script), str(tmp_path / "pinned"), "control"], cwd=repo, capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin"})
    assert "uncommitted changes" not in r.stderr and (tmp_path / "pinned" / "src").is_dir(), r.stderr[-2000:]


def test_readme_blocks_are_generated():
    """Every block of the README is what quote.py makes from the committed files ("(not run yet)" before)."""
    quote = load_script(STUDY / "quote.py")
    readme = (STUDY / "README.md").read_text(encoding="utf-8")
    assert quote.refresh(readme) == readme, f"{STUDY / 'README.md'} is stale: run python {STUDY / 'quote.py'}"


# --- once the study's results are committed ----------------------------------------------------------

@pytest.mark.parametrize("folder", sorted(REPORTS))
def test_committed_results_reproduce_the_budget_tables(folder, tmp_path, monkeypatch):
    from robablate.report.budget import load_budget_report, write_budget

    part, baseline = REPORTS[folder]
    _budget_tables(part)
    monkeypatch.chdir(ROOT)  # the tables name runs by their path from the repository root
    paths = [RESULTS.relative_to(ROOT) / part] + ([RESULTS.relative_to(ROOT) / "control"]
                                                   if part != "masking" and (RESULTS / "control").is_dir() else [])
    write_budget(load_budget_report(paths, baseline), tmp_path)
    for name in ("budget.md", "budget.csv", "budget_trends.csv"):
        assert (tmp_path / name).read_bytes() == (REPORT / folder / name).read_bytes(), name


@pytest.mark.parametrize("part", sorted(PARTS))
def test_every_run_feeds_its_budget_and_no_verdict_from_a_collapsed_arm(part):
    _committed(part)
    for f in (RESULTS / part).rglob("results.json"):
        d = json.loads(f.read_text(encoding="utf-8"))
        budget = d["config"]["train"]["tokens"]
        assert abs(d["pretrain"]["tokens_seen"] / budget - 1) <= 0.001, f
        assert d["environment"]["git_dirty"] is False, f
    for folder, (p, _) in REPORTS.items():
        if p == part and _rungs(part) >= 2:
            import pandas as pd

            t = pd.read_csv(REPORT / folder / "budget.csv", keep_default_na=False)
            coll = t[t["collapsed"] != ""]
            assert coll["verdict"].str.startswith("collapsed arm").all() and not coll["in_trend"].any()


def test_pilot_reproduces():
    _committed("pilot")
    pilot = load_script(STUDY / "pilot.py")
    assert pilot.report(RESULTS / "pilot") == (RESULTS / "pilot.md").read_text(encoding="utf-8")
    assert pilot.check(RESULTS / "pilot", PARTS["batch"][1]) == []
