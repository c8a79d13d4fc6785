"""The read-out registry (robablate/registry.py): the configured list, the `readouts=[...]` spelling next
to `eval=blimp`, and the report rows it hands out with the read-out's kind as data."""

from __future__ import annotations

import importlib

import pytest
from omegaconf import OmegaConf

from conftest import compose_cfg
from robablate.registry import READOUTS, configured, tidy_rows
from robablate.summary import format_summary, summary_line


def names(overrides: list[str]) -> list[str]:
    return [r.name for r in configured(OmegaConf.to_container(compose_cfg(overrides), resolve=True))]


def test_old_and_new_spellings_configure_the_same_readouts():
    assert names([]) == ["mlm", "glue"]  # the default: validation MLM and fine-tuning
    assert names(["eval=blimp"]) == names(["readouts=[blimp]"]) == ["mlm", "blimp", "glue"]
    new = compose_cfg(["readouts=[blimp]", "glue=none"])
    old = compose_cfg(["eval=blimp", "glue=none"])
    assert OmegaConf.to_container(new.eval.blimp) == OmegaConf.to_container(old.eval.blimp)
    assert OmegaConf.to_container(compose_cfg([])) == OmegaConf.to_container(compose_cfg(["readouts=[]"]))


def test_every_entry_names_code_with_the_protocol():
    for r in READOUTS.values():
        assert r.kind in ("pretraining", "zero_shot", "finetune")
        if r.impl is not None:
            mod = importlib.import_module(r.impl)
            assert all(callable(getattr(mod, f, None)) for f in ("check_config", "check", "run")), r.impl


RESULTS = {
    "status": "complete", "seed": 0, "axes": {"masking": "static"}, "run_dir": "/x",
    "pretrain": {"val_mlm_loss": 5.0, "val_mlm_acc": 0.2, "val_mlm_ppl": 148.0, "steps": 3, "planned_steps": 3},
    "blimp": {"overall": 0.6, "n_pairs": 10, "by_field": {"syntax": 0.6}, "by_term": {"island_effects": 0.5}},
    "glue": {"tasks": {"RTE": {"seeds": [{"seed": 0, "metrics": {"acc": 0.5}, "score": 0.5}]}},
             "score": {"glue": {"value": 0.5, "tasks": ["RTE"]}}},
}


def test_tidy_rows_carry_readout_kind_group_and_rank():
    rows = tidy_rows(RESULTS)
    by_task = {(r["task"], r["metric"]): r for r in rows}
    head = by_task[("BLiMP", "blimp_acc")]
    assert (head["readout"], head["kind"], head["group"], head["value"]) == ("blimp", "zero_shot", "overall", 0.6)
    assert by_task[("BLiMP term: island_effects", "blimp_acc")]["group"] == "term"
    assert by_task[("RTE", "score")]["kind"] == "finetune" and by_task[("RTE", "score")]["ft_seed"] == 0
    glue = by_task[("GLUE (glue convention, tasks: RTE)", "score")]
    assert glue["group"] == "glue" and glue["readout"] == "glue"  # the group names the convention
    order = [r["task"] for r in sorted(rows, key=lambda r: (r["rank"], r["task"]))]
    assert order.index("pretrain") < order.index("BLiMP") < order.index("BLiMP field: syntax") \
        < order.index("BLiMP term: island_effects") < order.index("RTE") < order.index(glue["task"])


def test_summaries_come_from_the_registry():
    text = format_summary(RESULTS)
    assert "BLiMP         0.6000 (accuracy, mean over paradigms; 10 pairs)" in text
    assert "MLM loss 5.0000" in text
    line = summary_line(RESULTS)
    assert "MLM loss 5.0000" in line and "BLiMP 0.6000" in line and "GLUE 0.5000" in line


@pytest.mark.parametrize("key", ["eval.blimp.max_pair"])
def test_a_bad_section_fails_before_the_run_folder(tmp_path, key):
    from robablate.errors import ConfigError
    from robablate.pipeline import run

    cfg = compose_cfg(["readouts=[blimp]", "glue=none", f"+{key}=3", f"run_dir={tmp_path / 'arm'}"])
    with pytest.raises(ConfigError, match=f"`{key}`"):
        run(cfg)
    assert not (tmp_path / "arm").exists()
