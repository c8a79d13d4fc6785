"""AdamW parameter groups and the LR schedules of the `scheduler` axis."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from robablate.errors import ConfigError
from robablate.models.bert import BertConfig, BertForPretraining
from robablate.optim import SCHEDULERS, ScheduleSpec, build_optimizer, build_scheduler, lr_at, param_groups

CONF = Path(__file__).resolve().parents[1] / "conf"
PEAK, TOTAL, WARM = 1e-3, 1000, 100
MID = WARM + (TOTAL - WARM) // 2  # halfway through the decay


def model(nsp=True):
    torch.manual_seed(0)
    return BertForPretraining(BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                                         intermediate_size=32), nsp=nsp)


def sched(name, **kw):
    return {"name": name, "warmup_steps": WARM, "warmup_fraction": 0.0, **kw}


def test_no_decay_exactly_on_biases_and_layernorm():
    m = model()
    decay, no_decay = param_groups(m, 0.01)
    names = {id(p): n for n, p in m.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    expected = {n for n in names.values() if n.endswith(".bias") or "LayerNorm" in n}
    assert no_decay_names == expected and no_decay["weight_decay"] == 0.0
    assert decay["weight_decay"] == 0.01
    assert "encoder.embeddings.word_embeddings.weight" in {names[id(p)] for p in decay["params"]}
    assert "encoder.embeddings.LayerNorm.weight" in no_decay_names
    assert "mlm_head.decoder.bias" in no_decay_names
    # Every parameter exactly once: the tied decoder weight is not listed a second time.
    all_ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == len(list(m.parameters()))


@pytest.mark.parametrize("name,betas,eps,wd,clip", [("bert", (0.9, 0.999), 1e-6, 0.01, 1.0),
                                                    ("roberta", (0.9, 0.98), 1e-6, 0.01, 0.0)])
def test_optimizer_presets(name, betas, eps, wd, clip):
    cfg = OmegaConf.load(CONF / "optimizer" / f"{name}.yaml")
    assert cfg.name == name and cfg.grad_clip == clip
    opt = build_optimizer(model(), cfg, lr=float(cfg.lr))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == betas and opt.defaults["eps"] == eps and opt.defaults["lr"] == cfg.lr
    assert [g["weight_decay"] for g in opt.param_groups] == [wd, 0.0]
    assert not opt.defaults["fused"]  # CPU parameters


def test_weight_decay_is_applied_only_to_the_decay_group():
    m = model()
    opt = build_optimizer(m, {"weight_decay": 0.5, "betas": [0.9, 0.999], "eps": 1e-6}, lr=0.1)
    ln, w = m.encoder.layers[0].LayerNorm.weight, m.encoder.layers[0].intermediate.weight
    before_ln, before_w = ln.detach().clone(), w.detach().clone()
    for p in m.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: only decoupled weight decay can move a weight
    opt.step()
    assert torch.equal(ln, before_ln)
    assert torch.allclose(w, before_w * (1 - 0.1 * 0.5))


@pytest.mark.parametrize("lr", [0.0, -1e-4, float("nan")])
def test_non_positive_lr_is_a_config_error(lr):
    with pytest.raises(ConfigError, match="optimizer.lr"):
        build_optimizer(model(), {"weight_decay": 0.01}, lr=lr)


def test_bad_betas_named():
    with pytest.raises(ConfigError, match="optimizer.betas"):
        build_optimizer(model(), {"betas": [0.9, 1.5]}, lr=1e-4)


# --- schedules: lr at step 0, mid-warmup, end of warmup, middle of decay, end ---------------------

QUARTER = WARM + (TOTAL - WARM) // 4  # cosine is above linear in the first half of the decay
CURVES = [  # (scheduler, extra keys, {step: expected LR})
    ("linear", {}, {0: 0.0, WARM // 2: PEAK / 2, WARM: PEAK, MID: PEAK / 2, TOTAL: 0.0}),
    ("cosine", {}, {0: 0.0, WARM: PEAK, MID: PEAK / 2, QUARTER: PEAK * (1 + math.cos(math.pi / 4)) / 2,
                    TOTAL: 0.0}),
    ("constant", {}, {0: 0.0, WARM // 2: PEAK / 2, WARM: PEAK, MID: PEAK, TOTAL: PEAK}),
    ("polynomial", {"power": 1.0, "lr_end": 0.0}, {MID: PEAK / 2}),
    # lr_end is an absolute LR: (1 - progress)^2 of the way from the peak down to it
    ("polynomial", {"power": 2.0, "lr_end": 1e-5}, {0: 0.0, WARM: PEAK, MID: (PEAK - 1e-5) * 0.25 + 1e-5,
                                                    TOTAL: 1e-5}),
    # timescale = the warmup: peak x sqrt(warmup / step) after it
    ("inverse_sqrt", {}, {0: 0.0, WARM: PEAK, 4 * WARM: PEAK / 2, TOTAL: PEAK * math.sqrt(WARM / TOTAL)}),
]


@pytest.mark.parametrize("name,extra,expected", CURVES, ids=[f"{n}{e or ''}" for n, e, _ in CURVES])
def test_schedule_curves(name, extra, expected):
    c = sched(name, **extra)
    assert {step: lr_at(c, TOTAL, PEAK, step) for step in expected} == pytest.approx(expected, abs=1e-12)


def test_polynomial_end_must_be_below_the_peak():
    with pytest.raises(ConfigError, match="lr_end"):
        lr_at(sched("polynomial", lr_end=PEAK), TOTAL, PEAK, 0)


def test_warmup_fraction_used_when_steps_null():
    c = {"name": "linear", "warmup_steps": None, "warmup_fraction": 0.06}
    assert ScheduleSpec.from_config(c).warmup(TOTAL) == 60
    assert lr_at(c, TOTAL, PEAK, 30) == pytest.approx(PEAK / 2)
    assert lr_at(c, TOTAL, PEAK, 60) == pytest.approx(PEAK)
    assert ScheduleSpec.from_config(c).warmup(3) == 0  # never swallows the whole (tiny) run
    assert ScheduleSpec.from_config({**c, "warmup_fraction": 0.9}).warmup(2) == 1


def test_scheduler_drives_every_param_group():
    m = model()
    opt = build_optimizer(m, {"weight_decay": 0.01}, lr=PEAK)
    s = build_scheduler(opt, sched("linear"), TOTAL)
    for step in range(1, 151):
        opt.step()
        s.step()
        if step in (50, 100, 150):
            expected = lr_at(sched("linear"), TOTAL, PEAK, step)
            assert [g["lr"] for g in opt.param_groups] == pytest.approx([expected, expected])


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_presets_build(name):
    cfg = OmegaConf.load(CONF / "scheduler" / f"{name}.yaml")
    assert cfg.name == name and cfg.warmup_steps is None and cfg.warmup_fraction == 0.06
    assert ScheduleSpec.from_config(cfg).name == name
    opt = torch.optim.AdamW(model().parameters(), lr=PEAK)
    assert isinstance(build_scheduler(opt, cfg, 200), torch.optim.lr_scheduler.LambdaLR)
    assert lr_at(cfg, 200, PEAK, 12) == pytest.approx(PEAK)  # 6% of 200 steps of warmup


@pytest.mark.parametrize("bad,key", [({"name": "step"}, "scheduler.name"),
                                     ({"name": "linear", "warmup_fraction": 1.0}, "scheduler.warmup_fraction"),
                                     ({"name": "linear", "warmup_fraction": -0.1}, "scheduler.warmup_fraction"),
                                     ({"name": "linear", "warmup_steps": -5}, "scheduler.warmup_steps"),
                                     ({"name": "linear", "warmup_steps": 1000}, "scheduler.warmup_steps"),
                                     ({"name": "polynomial", "power": 0.0}, "scheduler.power")])
def test_bad_scheduler_config_names_the_key(bad, key):
    with pytest.raises(ConfigError, match=key):
        lr_at(bad, TOTAL, PEAK, 0)


def test_lr_end_above_the_peak_fails_in_validate_before_compute():
    """scheduler.lr_end is checked against the run's peak LR (and the smallest tune.lr) by config.validate,
    not only when the optimizer is built after data preparation."""
    from conftest import compose_cfg
    from robablate.config import peak_lr, validate

    with pytest.raises(ConfigError, match=r"lr_end=0.01 must be below the peak LR 0.001 \(optimizer.lr\)"):
        validate(compose_cfg(["scheduler=polynomial", "scheduler.lr_end=0.01", "batch.lr=null", "optimizer.lr=1e-3"]))
    with pytest.raises(ConfigError, match=r"\(tune.lr\)"):
        validate(compose_cfg(["scheduler=polynomial", "scheduler.lr_end=1e-4", "tune.lr=[1e-5,1e-3]"]))
    assert peak_lr(compose_cfg(["batch=8k"])) == (compose_cfg(["batch=8k"]).batch.lr, "batch.lr")
    assert peak_lr(compose_cfg(["batch.lr=null", "optimizer.lr=2e-3"])) == (2e-3, "optimizer.lr")
