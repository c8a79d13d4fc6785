"""Zorro (Huebner et al., CoNLL 2021) as a second zero-shot read-out: its reader, its scorer (BLiMP's
PLL, ties wrong), its results.json section, and its report rows with CIs beside BLiMP's, reached only
through the read-out registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import compose_cfg
from robablate.minimal_pairs.zorro_reader import PHENOMENA, phenomenon, read_paradigm, read_zorro
from robablate.errors import ConfigError, DataError
from robablate.minimal_pairs import zorro

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny ops, one thread

FIXTURE = Path(__file__).parent / "fixtures" / "zorro"  # three paradigms of the release, first 4 pairs each
SHARED = Path(os.environ.get("ROBABLATE_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")) / "zorro"


def test_reader_pairs_odd_ungrammatical_with_even_grammatical():
    pairs = read_paradigm(FIXTURE / "irregular-verb.txt")
    assert len(pairs) == 4
    assert pairs[0].bad == "Michael chosen the good one some time ago ."
    assert pairs[0].good == "Michael chose the good one some time ago ."
    assert (pairs[0].uid, pairs[0].term, pairs[3].pair_id) == ("irregular-verb", "irregular", "3")
    assert len(read_zorro(FIXTURE, max_pairs=2)) == 6  # LICENSE is not a paradigm


def test_phenomenon_keeps_hyphenated_names():
    assert phenomenon("island-effects-adjunct_island") == "island-effects"
    assert phenomenon("filler-gap-wh_question_object") == "filler-gap"
    assert phenomenon("agreement_subject_verb-across_relative_clause") == "agreement_subject_verb"
    assert phenomenon("new_thing-some_paradigm") == "new_thing"


@pytest.mark.parametrize("text, match", [
    ("bad one .\ngood one .\nbad two .\n", r"x.txt:3: odd number of lines"),
    ("bad one .\n\nbad two .\ngood two .\n", r"x.txt:2: empty line"),
    ("", r"x.txt: no Zorro pairs"),
])
def test_malformed_file_names_file_and_line(tmp_path, text, match):
    (tmp_path / "x.txt").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=match):
        read_zorro(tmp_path)


def test_missing_folder_and_bad_keys_fail_before_compute(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_zorro(tmp_path / "nope")
    with pytest.raises(ConfigError, match="`eval.zorro.max_pair`"):
        zorro.check_config({"data_dir": str(FIXTURE), "max_pair": 3})
    with pytest.raises(ConfigError, match="`eval.zorro.batch_tokens`"):
        zorro.check_config({"data_dir": str(FIXTURE), "batch_tokens": 0})


def test_readouts_list_composes_blimp_and_zorro():
    cfg = compose_cfg(["readouts=[blimp,zorro]", "glue=none"])
    assert cfg.eval.zorro.data_dir.endswith("zorro") and cfg.eval.blimp.data_dir.endswith("blimp")
    assert compose_cfg([]).eval.get("zorro") is None


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the Zorro release is not at {SHARED} (set ROBABLATE_SHARED_DATA)")
def test_reads_the_complete_release():
    pairs = read_zorro(SHARED)
    assert len(pairs) == 23 * 2000 and len({p.uid for p in pairs}) == 23
    assert {p.term for p in pairs} == set(PHENOMENA)
    assert all(p.good != p.bad for p in pairs)


def test_ties_are_wrong_and_results_have_the_section_schema():
    import torch

    from robablate.models.bert import BertConfig, BertForPretraining
    from tokenizers import pre_tokenizers

    from test_blimp import word_tokenizer

    pairs = read_zorro(FIXTURE)
    fast = word_tokenizer({w for p in pairs for s in (p.good, p.bad) for w in s.split()}, pre_tokenizers.WhitespaceSplit())
    torch.manual_seed(0)
    model = BertForPretraining(BertConfig(vocab_size=len(fast), hidden_size=32, num_layers=1, num_heads=2,
                                          intermediate_size=64, max_position_embeddings=32), nsp=False)
    with torch.no_grad():  # every weight 0: every position predicts the uniform distribution, so every pair ties
        for p in model.parameters():
            p.zero_()
    out = zorro.evaluate(model, fast, {"data_dir": str(FIXTURE), "batch_tokens": 256}, pairs)
    assert set(out) == {"overall", "by_phenomenon", "by_paradigm", "n_pairs", "max_pairs", "method", "wall_s"}
    # Pairs whose sentences have the same length tie (equal PLL): wrong. The longer sentence of an
    # unequal pair has one more uniform term, so it scores lower.
    assert out["n_pairs"] == 12 and set(out["by_phenomenon"]) == {"agreement_subject_verb", "irregular", "island-effects"}
    assert out["by_paradigm"]["agreement_subject_verb-across_relative_clause"] == 0.0  # equal lengths: ties
    assert 0.0 <= out["overall"] <= 1.0


def _results(run_dir: str, seed: int, zorro_acc: float, init: str = "pretrained") -> dict:
    return {"schema_version": 1, "status": "complete", "run_dir": run_dir, "seed": seed, "init": init,
            "axes": {"masking": "static"}, "config": {}, "overrides": [],
            "pretrain": {"val_mlm_loss": 5.0 + seed / 10},
            "blimp": {"overall": 0.55, "by_field": {}, "by_term": {}},
            "zorro": {"overall": zorro_acc, "by_phenomenon": {"binding": zorro_acc}, "by_paradigm": {"binding-principle_a": zorro_acc}},
            "glue": {}}


def test_report_shows_zorro_with_cis_and_the_control(tmp_path):
    """The report reads results["zorro"] through the registry: overall, phenomena and paradigms, with
    a CI per arm and the random-init control's row, after BLiMP."""
    from robablate.io import atomic_write_json
    from robablate.report import load_report

    for seed, acc in enumerate((0.60, 0.62, 0.58)):
        atomic_write_json(tmp_path / f"arm{seed}" / "results.json", _results(str(tmp_path / f"arm{seed}"), seed, acc))
        atomic_write_json(tmp_path / f"ctl{seed}" / "results.json",
                          _results(str(tmp_path / f"ctl{seed}"), seed, 0.5, init="random"))
    rep = load_report([tmp_path])
    s = rep.summary
    row = s[(s["task"] == "Zorro") & (s["metric"] == "zorro_acc") & (s["arm"] != "random init (control)")].iloc[0]
    assert row["n_runs"] == 3 and row["mean"] == pytest.approx(0.60) and row["ci_low"] < 0.60 < row["ci_high"]
    ctl = s[(s["task"] == "Zorro") & (s["arm"] == "random init (control)")]
    assert len(ctl) == 1 and ctl.iloc[0]["mean"] == pytest.approx(0.5)
    tasks = list(dict.fromkeys(s["task"]))
    assert tasks.index("BLiMP") < tasks.index("Zorro") < tasks.index("Zorro phenomenon: binding") \
        < tasks.index("Zorro paradigm: binding-principle_a")
    gain = rep.gain[(rep.gain["task"] == "Zorro")]
    assert not gain.empty and gain.iloc[0]["diff_mean"] == pytest.approx(0.10)


def test_one_run_scores_blimp_and_zorro_and_summarises_both(tmp_path, cache_dir):
    """readouts=[blimp,zorro]: both zero-shot read-outs in one run, each its own results.json section,
    timing and summary line; a bad Zorro file stops the run before pretraining."""
    import json

    from conftest import run_arm
    from robablate.summary import format_summary

    blimp_dir = tmp_path / "blimp"
    blimp_dir.mkdir()
    line = {"sentence_good": "the cat sees the dog", "sentence_bad": "the cat see the dog", "field": "morphology",
            "linguistics_term": "agreement", "UID": "p1", "pairID": 0}
    (blimp_dir / "p1.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
    _, res = run_arm(tmp_path, cache_dir, "readouts=[blimp,zorro]", f"eval.blimp.data_dir={blimp_dir}",
                     f"eval.zorro.data_dir={FIXTURE}", "eval.zorro.max_pairs=2")
    assert res["blimp"]["n_pairs"] == 1 and res["zorro"]["n_pairs"] == 6
    assert {"blimp_s", "zorro_s"} <= set(res["timings"])
    text = format_summary(res)
    assert "BLiMP " in text and "Zorro " in text and "(accuracy, mean over paradigms; 6 pairs)" in text
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.txt").write_text("one .\n", encoding="utf-8")
    with pytest.raises(DataError, match="x.txt:1: odd number"):
        run_arm(tmp_path, cache_dir, "readouts=[zorro]", f"eval.zorro.data_dir={bad}", name="badrun")
    assert not (tmp_path / "badrun" / "pretrain").exists()
