"""Verdicts that cannot mislead (issue 19): collapsed arms get none, the Holm family is fixed by the
design, every off-axis difference is flagged (inside the compared group too, through another axis with
its blocked reading), provenance and identical trainings are shown."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT
from test_report import write_run

from robablate import collapse
from robablate.errors import ConfigError
from robablate.report import load_report, render

STUDY = ROOT / "experiments" / "wikitext2_cpu_v2" / "results"


def _primary(rep, **eq):
    p = rep.paired
    for k, v in eq.items():
        p = p[p[k] == v]
    return p


# ------------------------------------------------------------------------------------------ collapse


def test_judge_rule_marks_one_token_models_and_not_learning_ones():
    base = collapse.unigram_baseline(np.array([50, 30, 20]), np.array([0, 0, 1, 2, -100]))
    assert base["unigram_acc"] == pytest.approx(0.5)
    p = np.array([51, 31, 21]) / 103
    assert base["unigram_loss"] == pytest.approx(-np.log(p[[0, 0, 1, 2]]).mean())
    stuck = collapse.judge(val_mlm_loss=6.42, val_mlm_acc=0.0527, unigram_loss=6.40, unigram_acc=0.0527,
                           distinct_argmax=1)
    assert stuck["collapsed"] and "distinct" in stuck["why"] and stuck["rule"] == collapse.RULE
    learning = collapse.judge(val_mlm_loss=5.97, val_mlm_acc=0.13, unigram_loss=6.40, unigram_acc=0.0527,
                              distinct_argmax=900)
    assert not learning["collapsed"] and learning["why"] == ""
    # the loss criterion alone: accuracy above one-token but loss no better than unigram
    assert collapse.judge(6.41, 0.08, 6.40, 0.0527)["collapsed"]
    # measured: 800K tokens on the synthetic corpus (acc 0.1246, one-token 0.1013, loss 5.542 vs unigram
    # 5.572) learned; 100K tokens (25 steps: acc = one-token 0.1013, loss 7.14) did not
    assert not collapse.judge(5.5423, 0.1246, 5.5717, 0.1013)["collapsed"]
    assert collapse.judge(7.1391, 0.1013, 5.5717, 0.1013)["collapsed"]


def _history(losses, accs):
    return [{"step": 100 * (i + 1), "val_mlm_loss": l, "val_mlm_acc": a} for i, (l, a) in enumerate(zip(losses, accs))]


def test_a_run_that_learned_then_overfit_is_not_collapsed():
    # study v3, masking static at 4M tokens, seed 0 (the numbers its results.json records): it left the
    # unigram solution by step 291 (6.480 < 6.519, acc 0.069), then its val loss rose to 6.671 while its
    # accuracy kept rising: overfitting its 16 articles' static copies, not a model that learned nothing
    hist = _history([6.544, 6.519, 6.480, 6.490, 6.516, 6.547, 6.586, 6.631, 6.657, 6.671],
                    [0.044, 0.054, 0.069, 0.082, 0.093, 0.098, 0.100, 0.101, 0.103, 0.1025])
    j = collapse.judge(6.6707, 0.1025, 6.5188, 0.0439, history=hist)
    assert not j["collapsed"] and j["why"] == ""
    assert j["overfit"].startswith("overfit: val MLM loss 6.4800 at step 300") and "rose to 6.6707" in j["overfit"]
    # without the history (a run recorded before it was passed) the loss criterion alone decides
    assert collapse.judge(6.6707, 0.1025, 6.5188, 0.0439)["collapsed"]
    # noise around the unigram loss is not overfit: study v3's masking dynamic at 1M, seed 2, dipped
    # 0.004 below it at one point (less than OVERFIT_MARGIN) and ended 0.001 above it
    noisy = _history([6.537, 6.525, 6.540, 6.530, 6.524, 6.529], [0.058, 0.059, 0.055, 0.058, 0.055, 0.057])
    j = collapse.judge(6.5289, 0.0567, 6.5276, 0.0439, history=noisy)
    assert j["collapsed"] and not j["overfit"]
    # a run whose accuracy fell back to the one-token predictor's is collapsed whatever it did before
    assert collapse.judge(6.60, 0.050, 6.5188, 0.0439, history=hist)["collapsed"]
    # the same dip with a best point 0.019 below the unigram loss (inside OVERFIT_MARGIN) is not enough
    assert collapse.judge(6.53, 0.07, 6.5188, 0.0439, history=_history([6.4998, 6.53], [0.07, 0.07]))["collapsed"]
    assert not collapse.judge(6.53, 0.07, 6.5188, 0.0439, history=_history([6.4980, 6.53], [0.07, 0.07]))["collapsed"]


def test_overfit_arm_keeps_its_verdict_and_is_named(tmp_path):
    hist = _history([6.50, 6.45, 6.55, 6.65], [0.06, 0.08, 0.09, 0.10])
    for s in range(3):
        old = collapse.judge(6.65 + 0.01 * s, 0.10, 6.52, 0.044)  # recorded without history: "collapsed"
        assert old["collapsed"]
        write_run(tmp_path, f"s{s}", seed=s, axes={"masking": "static"},
                  pretrain={"collapse": old, "history": hist, "val_mlm_loss": 6.65 + 0.01 * s})
        write_run(tmp_path, f"d{s}", seed=s, axes={"masking": "dynamic"},
                  pretrain={"collapse": collapse.judge(6.40 - 0.01 * s, 0.10, 6.52, 0.044),
                            "val_mlm_loss": 6.40 - 0.01 * s})
    rep = load_report([tmp_path])  # the report re-judges the recorded numbers with the current rule
    assert rep.collapsed == {} and sorted(rep.overfit) == [str(tmp_path / f"s{s}") for s in range(3)]
    row = rep.paired[rep.paired["metric"] == "val_mlm_loss"].iloc[0]
    assert row["verdict"].startswith("CI excludes 0") and "static: 3 of 3 runs overfit" in row["verdict"]
    md = render.markdown(rep, {})
    assert "## Overfit runs" in md and "## Collapsed runs" not in md


def test_recorded_rule_needs_equal_accuracy_across_seeds_and_a_stuck_end():
    stuck = [0.03, 0.0527, 0.0527, 0.0527]
    runs = [("a", 0, stuck), ("b", 1, stuck), ("c", 2, [0.05, 0.1, 0.12, 0.13])]
    assert set(collapse.identical_acc(runs)) == {"a", "b"}
    # equal final accuracy by chance, still moving (two Table 2 runs share 0.114243): not collapsed
    assert collapse.identical_acc([("a", 0, [0.10, 0.11, 0.1142]), ("b", 1, [0.1, 0.113, 0.1142])]) == {}
    # the same seed twice (a rerun) is not evidence
    assert collapse.identical_acc([("a", 0, stuck), ("b", 0, stuck)]) == {}


def test_committed_table3_marks_2k_and_8k_collapsed_and_draws_no_verdict(monkeypatch):
    monkeypatch.chdir(ROOT)
    rep = load_report(STUDY.relative_to(ROOT) / "table3")
    arms = {rep.design.set_index("run_dir").at[d, "batch"] for d in rep.collapsed}
    assert arms == {"2k", "8k"} and len(rep.collapsed) == 6
    p = rep.paired
    assert p["verdict"].str.startswith("collapsed arm").all()  # every row compares with 2k or 8k
    s = rep.summary[(rep.summary["metric"] == "val_mlm_loss")].set_index("arm")
    assert s.at["bs256", "collapsed_runs"] == 0 and s.at["2k", "collapsed_runs"] == 3
    md = render.markdown(rep, {})
    assert "## Collapsed runs" in md and "one token predicted everywhere" in md


@pytest.mark.parametrize("table", ["table1", "table2"])
def test_committed_learning_runs_are_not_marked(table, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert load_report(STUDY.relative_to(ROOT) / table).collapsed == {}


def test_recorded_collapse_section_is_read(tmp_path):
    for s in (0, 1, 2):
        write_run(tmp_path, f"s{s}", seed=s, axes={"masking": "static"}, pretrain={"val_mlm_loss": 5.0 - 0.01 * s})
        coll = collapse.judge(6.4, 0.05, 6.4, 0.05, 1) if s < 2 else collapse.judge(5, 0.2, 6.4, 0.05, 500)
        write_run(tmp_path, f"d{s}", seed=s, axes={"masking": "dynamic"},
                  pretrain={"collapse": coll, "val_mlm_loss": 4.8 - 0.02 * s})
    rep = load_report([tmp_path])
    assert sorted(rep.collapsed) == [str(tmp_path / "d0"), str(tmp_path / "d1")]
    assert (rep.paired["verdict"] == "collapsed arm (dynamic: 2 of 3 runs collapsed): no verdict").all()


# ------------------------------------------------------------------------------------ the Holm family


def test_holm_of_a_row_does_not_depend_on_the_printed_metrics(monkeypatch):
    monkeypatch.chdir(ROOT)
    folder = STUDY.relative_to(ROOT) / "table1"
    key = dict(task="pretrain", metric="val_mlm_loss")
    ps = [_primary(load_report(folder, metrics=m), **key)["p_holm"].item()
          for m in (None, ["val_mlm_loss"], ["val_mlm_loss", "val_mlm_ppl", "tokens_per_s"])]
    assert ps[0] == ps[1] == ps[2]
    rep = load_report(folder)
    assert _primary(rep, **key)["family"].item() == "primary"
    explo = rep.paired[rep.paired["metric"].isin(["val_mlm_ppl", "tokens_per_s"])]
    assert (explo["family"] == "exploratory").all() and explo["p_holm"].isna().all()
    # Holm over the family of 2 (loss, BLiMP overall) x 1 comparison
    p = rep.paired[rep.paired["family"] == "primary"]
    assert len(p) == 2 and p["p_holm"].max() == pytest.approx(min(1, max(p["p_value"].max(),
                                                                         2 * p["p_value"].min())))


def test_report_primary_comes_from_the_design(tmp_path):
    for s in range(3):
        for m, d in (("static", 0.0), ("dynamic", -0.1)):
            write_run(tmp_path, f"{m}{s}", seed=s, axes={"masking": m}, config={"report": {"primary": ["SYN-A"]}},
                      pretrain={"val_mlm_loss": 5 + d + 0.01 * s * (m == "dynamic")})
    rep = load_report([tmp_path])
    assert rep.primary == ("SYN-A",)
    assert set(rep.paired.loc[rep.paired["family"] == "primary", "task"]) == {"SYN-A"}
    with pytest.raises(ConfigError, match="blimp_acc is not a read-out"):
        load_report([tmp_path], primary=["blimp_acc"])
    write_run(tmp_path, "other", seed=9, axes={"masking": "dynamic"}, config={"report": {"primary": ["blimp"]}})
    with pytest.raises(ConfigError, match="report.primary"):
        load_report([tmp_path])


# ------------------------------------------------------------------------------------------- confounds


def _masking_sweep(root, prob_runs: set[str]):
    for s in range(3):
        for m in ("static", "dynamic"):
            name = f"{m}{s}"
            prob = 0.4 if name in prob_runs else 0.15
            write_run(root, name, seed=s, axes={"masking": m},
                      config={"masking": {"mask_prob": prob, "dupe_factor": 10 if m == "static" else None}},
                      pretrain={"val_mlm_loss": 5 - 0.1 * (m == "dynamic") + 0.01 * s},
                      extra={"overrides": [f"masking={m}"] + (["masking.mask_prob=0.4"] if prob == 0.4 else [])})


def test_precision_that_auto_resolved_to_is_compared(tmp_path):
    # Both arms' configs say train.precision=auto; dynamic's runs resolved it to bf16-mixed (a CPU with
    # bf16 hardware, or a GPU), static's to 32-true: the table names it. An explicit 32-true and an auto
    # that resolved to 32-true are the same training: no flag.
    for resolved, flagged in (("bf16-mixed", True), ("32-true", False)):
        root = tmp_path / resolved
        for s in range(3):
            for m in ("static", "dynamic"):
                prec = "auto" if m == "dynamic" or resolved == "bf16-mixed" else "32-true"
                write_run(root, f"{m}{s}", seed=s, axes={"masking": m}, config={"train": {"precision": prec}},
                          pretrain={"val_mlm_loss": 5 - 0.1 * (m == "dynamic") + 0.01 * s},
                          extra={"plan": {"precision": resolved if m == "dynamic" else "32-true"}})
        flags = set(load_report([root]).paired["flags"])
        if flagged:
            assert len(flags) == 1 and "config differs: train.precision 32-true -> bf16-mixed" in flags.pop()
        else:
            assert flags == {""}


@pytest.mark.parametrize("which", [{"dynamic0", "dynamic1", "dynamic2"}, {"dynamic1"}])
def test_a_key_inside_the_compared_group_set_on_the_command_line_is_flagged(tmp_path, which):
    _masking_sweep(tmp_path, which)
    rep = load_report([tmp_path])
    flags = set(rep.paired["flags"])
    assert len(flags) == 1 and "config differs: masking.mask_prob" in flags.pop()
    # the preset's own keys (dupe_factor: static 10, dynamic none) are the axis, not a confound
    assert "dupe_factor" not in rep.paired["flags"].iloc[0]


def test_preset_keys_of_the_group_are_not_flagged(tmp_path):
    _masking_sweep(tmp_path, set())
    rep = load_report([tmp_path])
    assert (rep.paired["flags"] == "").all() and "masking.dupe_factor" in rep.determined["masking"]


def test_nsp_row_is_confounded_by_format_with_the_blocked_reading(monkeypatch):
    monkeypatch.chdir(ROOT)
    rep = load_report(STUDY.relative_to(ROOT) / "table2")
    row = _primary(rep, axis="nsp", task="pretrain", metric="val_mlm_loss").iloc[0]
    assert row["confounded_by"] == "format" and "confounded by format" in row["verdict"]
    b = rep.blocked[(rep.blocked["task"] == "pretrain")]
    assert len(b) == 2 and (b["n_pairs"] == 5).all()
    seg = b[b["reading"].str.contains("format=segment_pair only")].iloc[0]
    assert seg["diff_ci_low"] < 0 < seg["diff_ci_high"]  # no-NSP vs SEGMENT-PAIR alone: CI holds 0
    assert "Confounded comparisons, read within the other axis" in render.markdown(rep, {})
    # format rows pair across nsp (format determines it): not confounded
    assert (rep.paired.loc[rep.paired["axis"] == "format", "confounded_by"] == "").all()


# ---------------------------------------------------------------------------- provenance, fingerprints


def test_dirty_tree_and_different_commits_are_shown(tmp_path):
    for s in range(2):
        write_run(tmp_path, f"a{s}", seed=s, axes={"masking": "static"},
                  extra={"environment": {"git_commit": "aaaaaaa1", "git_dirty": True}})
        write_run(tmp_path, f"b{s}", seed=s, axes={"masking": "dynamic"},
                  extra={"environment": {"git_commit": "bbbbbbb2", "git_dirty": False}})
    rep = load_report([tmp_path])
    assert rep.paired["flags"].str.contains("code differs: git commit aaaaaaa -> bbbbbbb").all()
    md = render.markdown(rep, {})
    assert "**dirty tree**: 2 of 4 runs" in md and "**different commits**" in md


def test_equal_fingerprints_are_identical_training_and_get_no_verdict(tmp_path):
    for s in range(3):
        for m, d in (("static", 0.0), ("dynamic", -0.1)):
            write_run(tmp_path, f"{m}{s}", seed=s, axes={"masking": m},
                      pretrain={"fingerprint": {"digest": f"fp{s}"}, "val_mlm_loss": 5 + d + 0.01 * s})
    rep = load_report([tmp_path])
    assert rep.paired["verdict"].str.startswith("identical training").all()
    # different digests, or results without one: compared as usual
    write_run(tmp_path, "dynamic0", seed=0, axes={"masking": "dynamic"},
              pretrain={"fingerprint": {"digest": "other"}, "val_mlm_loss": 4.9})
    rep = load_report([tmp_path])
    assert not rep.paired["verdict"].str.startswith("identical training").any()


def test_end_of_run_summary_names_collapse_and_chance_levels():
    from robablate.summary import chance_level, format_summary

    assert chance_level("RTE", "acc") == 0.5 and chance_level("CoLA", "mcc") == 0.0
    assert chance_level("MRPC", "f1") is None
    res = {"status": "complete", "run_dir": "/x", "axes": {}, "seed": 0, "init": "pretrained",
           "pretrain": {"val_mlm_loss": 6.4, "val_mlm_ppl": 600, "val_mlm_acc": 0.05, "steps": 62,
                        "planned_steps": 62, "tokens_seen": 2e6, "train_loss": 6.8,
                        "collapse": collapse.judge(6.4, 0.05, 6.41, 0.05)},
           "glue": {"seeds": 1, "tasks": {"RTE": {"median_metrics": {"acc": 0.52}}}}}
    text = format_summary(res)
    assert "COLLAPSED" in text and "RTE        acc 0.5200  (chance: acc 0.500)" in text
    res["pretrain"]["collapse"] = collapse.judge(6.6, 0.10, 6.52, 0.044,
                                                 history=_history([6.45, 6.6], [0.08, 0.10]))
    text = format_summary(res)
    assert "COLLAPSED" not in text and "OVERFIT (overfit: val MLM loss 6.4500 at step 100" in text


def test_study_script_refuses_a_dirty_tree_unless_told(tmp_path):
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    (repo / "experiments" / "wikitext2_cpu_v2").mkdir(parents=True)
    script = repo / "experiments" / "wikitext2_cpu_v2" / "run_all.sh"
    shutil.copy(ROOT / "experiments" / "wikitext2_cpu_v2" / "run_all.sh", script)
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=repo,
                                    check=True, capture_output=True)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "x")
    script.write_text(script.read_text() + "\n# edited\n")
    env = {"PATH": "/usr/bin:/bin"}
    r = subprocess.run(["bash", str(script), str(tmp_path / "out")], cwd=repo, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "uncommitted changes" in r.stderr and not (tmp_path / "out").exists()
    # told: it passes the check (and then stops at the first sweep: no run.py here)
    r = subprocess.run(["bash", str(script), str(tmp_path / "out")], cwd=repo, capture_output=True, text=True,
                       env={**env, "ALLOW_DIRTY": "1"})
    assert "uncommitted changes" not in r.stderr and (tmp_path / "out").exists()
