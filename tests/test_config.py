"""Every option of every config group composes and validates; every bad config is refused by name."""

from __future__ import annotations

import pytest

from conftest import CONF, compose_cfg
from robablate.config import normalize_overrides, validate
from robablate.errors import ConfigError

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra",))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compatible(group: str, option: str) -> list[str]:
    """Extra overrides an option needs to form a valid arm (non-NSP formats need nsp=false, ...)."""
    extra = []
    if group == "format" and option in ("full_sentences", "doc_sentences"):
        extra.append("nsp=false")
    if group == "corpus" and option == "text":
        extra.append("corpus.path=/nonexistent")  # composing and validating reads no file
    if group == "tokenizer" and option == "pretrained":
        extra.append("tokenizer.path=/nonexistent")
    if group == "seq_len" and option in ("512", "two_phase"):
        extra.append("train.tokens=10_000_000")
    return extra


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    cfg = compose_cfg([f"{group}={option}", *_compatible(group, option)])
    if group == "experiment":
        assert cfg.experiment_name  # presets set their name (output folder)
    plan = validate(cfg)
    assert plan.total_steps >= 1 and plan.lr > 0


def test_axes_defaults_are_bert() -> None:
    cfg = compose_cfg()
    plan = validate(cfg)
    assert (cfg.masking.name, cfg.nsp, plan.format) == ("static", True, "segment_pair")


def test_auto_format_follows_nsp() -> None:
    assert validate(compose_cfg(["nsp=false"])).format == "full_sentences"
    assert validate(compose_cfg(["nsp=true"])).format == "segment_pair"


def test_numeric_group_options_are_quoted() -> None:
    assert normalize_overrides(["seq_len=128", "batch=2k", "seq_len=128,512", "x=1"]) == [
        "seq_len='128'", "batch=2k", "seq_len='128','512'", "x=1"]
    assert compose_cfg(["seq_len=512"]).seq_len.phases[0].max_len == 512


def test_budget_gives_equal_tokens_across_batch_presets() -> None:
    plans = [validate(compose_cfg([f"batch={b}", "batch.scale=0.125", "train.tokens=50_000_000"]))
             for b in ("bs256", "2k", "8k")]
    tokens = [p.total_steps * p.phases[0].tokens_per_step for p in plans]
    assert all(abs(t / 50_000_000 - 1) < 1e-3 for t in tokens), tokens  # same compute: the budget exactly
    assert [p.lr for p in plans] == [1e-4, 7e-4, 1e-3]  # RoBERTa Table 3
    assert plans[0].total_steps > plans[1].total_steps > plans[2].total_steps


def test_two_phase_splits_steps_90_10() -> None:
    plan = validate(compose_cfg(["seq_len=two_phase", "train.max_steps=100"]))
    assert [(p.max_len, p.steps) for p in plan.phases] == [(128, 90), (512, 10)]


def test_accumulation_realises_the_global_batch() -> None:
    plan = validate(compose_cfg(["batch.size=64", "batch.micro_batch_size=8", "trainer.accelerator=cpu",
                                 "trainer.devices=2"]))
    assert (plan.micro_batch, plan.accumulate, plan.world_size) == (8, 4, 2)


BAD = [
    (["nsp=true", "format=full_sentences"], ["nsp", "format"]),
    (["nsp=true", "format=doc_sentences"], ["nsp", "format"]),
    (["nsp=false", "format=segment_pair"], ["nsp", "format"]),
    (["nsp=maybe"], ["nsp"]),
    (["model.max_position_embeddings=128", "seq_len=512"], ["seq_len", "model.max_position_embeddings"]),
    (["batch.size=30", "batch.micro_batch_size=4"], ["batch.micro_batch_size"]),
    (["batch.size=33", "trainer.accelerator=cpu", "trainer.devices=2"], ["batch.size", "trainer.devices"]),
    (["masking.mask_prob=0"], ["masking.mask_prob"]),
    (["masking.mask_prob=1.5"], ["masking.mask_prob"]),
    (["optimizer.lr=0"], ["optimizer.lr"]),
    (["optimizer.lr=-1e-4"], ["optimizer.lr"]),
    (["batch=2k", "batch.lr=0"], ["batch.lr"]),
    (["train.max_steps=0"], ["train.max_steps"]),
    (["train.tokens=-5"], ["train.tokens"]),
    (["tokenizer.vocab_size=8"], ["tokenizer.vocab_size"]),
    (["model.num_heads=3"], ["model.num_heads"]),
    (["masking=static", "masking.dupe_factor=0"], ["masking.dupe_factor"]),
    # Rules owned by other modules, still raised by validate (before any compute):
    (["train.max_steps=10", "scheduler.warmup_steps=10"], ["scheduler.warmup_steps"]),  # optim.warmup_steps
    (["masking.random_token_frac=0.5"], ["masking.mask_token_frac"]),                   # data/masking.py
    (["tokenizer=bpe", "tokenizer.vocab_size=100"], ["tokenizer.vocab_size"]),           # data/tokenizer.py
]


@pytest.mark.parametrize("overrides,keys", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_config_is_refused_naming_the_key(overrides: list[str], keys: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(overrides))
    for key in keys:
        assert key in str(err.value)
