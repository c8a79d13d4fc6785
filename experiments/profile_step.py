"""Where a training step of the real loop goes, and interleaved A/B tests of what might make it cheaper.

The step is the one `run.py` trains with at bench_loop.py's shape (BERT-Mini, FULL-SENTENCES, WikiText-2
when present, WordPiece 8192, seq 128, 4,096 real tokens per step, packed batches from robablate's own
DataLoader, fused AdamW, clipping 1.0, the linear schedule), written as a plain loop without Lightning
(bench_loop.py measures the Lightning loop; the profile needs the step alone):

    python experiments/profile_step.py [--steps 3]          # torch.profiler, grouped (below)
    python experiments/profile_step.py --ab bf16 [--steps 12]  # A: fp32, B: bf16 autocast (bf16-mixed)
    python experiments/profile_step.py --ab compile          # B: torch.compile(encoder) (train.compile)
    python experiments/profile_step.py --ab foreach          # A: fused AdamW, B: foreach AdamW
    python experiments/profile_step.py --ab dropout          # A: robablate's dropout, B: F.dropout

Profile groups (self CPU time of every op, by the step part it ran in and its name): data (next batch:
sampling, masking, packing), matmul (Linear: mm/addmm), attention (bmm, softmax, mask), norm/act/
dropout/elementwise (LayerNorm, GELU, dropout masks, adds, muls, copies), gather (packing's
index_select, embeddings), loss, optimizer (clipping, AdamW, schedule, zero_grad), other.

A/B: two copies of the same initial model and optimizer, fed the same batches, A and B steps
alternating, the same RNG seed before each pair (same dropout masks where both draw them alike); the
median step time of each after --warmup steps, B/A and A/B, the largest |loss A - loss B| over the
steps and the last one. `--no-dropout` sets dropout to 0 so the losses compare the arithmetic alone.
compile: B's warm-up steps include compilation (and recompiles for packed batches' varying shapes): the
script prints their cost and the steps needed to earn it back.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "experiments"))

from robablate import threads  # noqa: E402

# As run.py: OMP_WAIT_POLICY chosen before torch loads OpenMP (unless set), so the step is the one a run takes.
_choice = threads.configure()

AB = ("bf16", "compile", "foreach", "dropout")
GROUPS = ("data", "matmul", "attention", "norm/act/dropout/elementwise", "gather", "loss", "optimizer", "other")
MATMUL = {"aten::mm", "aten::addmm", "aten::linear", "aten::matmul"}
ATTENTION = ("bmm", "softmax", "masked_fill", "scaled_dot_product", "baddbmm")
ELEMENTWISE = ("layer_norm", "gelu", "mul", "add", "sub", "div", "random_", "ge", "where", "copy_", "to",
               "_to_copy", "sum", "tanh", "fill_", "zero_", "clone", "empty", "bernoulli", "dropout", "expand",
               "view", "reshape", "permute", "transpose", "t", "contiguous", "_unsafe_view", "as_strided")
GATHER = ("index", "embedding", "gather", "scatter", "nonzero", "masked_select")
LOSS = ("cross_entropy", "log_softmax", "nll_loss", "argmax", "eq")


def setup(args):
    """(plan, data, DataModule) at bench_loop.py's shape."""
    from bench_loop import overrides
    from hydra import compose, initialize_config_dir

    from robablate.config import normalize_overrides, validate
    from robablate.datamodule import PretrainDataModule, prepare

    steps = args.warmup + args.steps + 1
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=normalize_overrides(overrides(steps, args.corpus, args.cache_dir)))
    plan = validate(cfg)
    data = prepare(plan)
    dm = PretrainDataModule(data, plan, cfg.masking, int(cfg.seed), 0, pack=True)
    return plan, data, dm


def make_model(plan, data, dropout: bool):
    from robablate.models.bert import BertForPretraining

    config = plan.specs.model.config(data.ids.vocab_size, data.ids.pad)
    if not dropout:
        from dataclasses import replace

        config = replace(config, dropout=0.0, attention_dropout=0.0)
    model = BertForPretraining(config, nsp=plan.nsp).train()
    model.encoder.pooler.requires_grad_(False)  # as PretrainModule without NSP
    return model


def make_optimizer(model, plan, kind: str = "fused"):
    import torch

    from robablate.optim import build_optimizer, build_scheduler, param_groups

    spec = plan.specs.optimizer
    if kind == "foreach":
        opt = torch.optim.AdamW(param_groups(model, spec.weight_decay), lr=plan.lr, betas=spec.betas, eps=spec.eps,
                                weight_decay=spec.weight_decay, foreach=True)
    else:
        opt = build_optimizer(model, spec, plan.lr, fused=True)
    return opt, build_scheduler(opt, plan.specs.schedule, plan.total_steps)


def train_step(model, opt, sched, batch, clip: float, autocast=None) -> float:
    import torch
    from torch.profiler import record_function

    with record_function("forward"), torch.autocast("cpu", dtype=autocast or torch.bfloat16,
                                                    enabled=autocast is not None):
        loss = model(**batch, with_accuracy=False)["loss"]  # as PretrainModule.training_step
    with record_function("backward"):
        loss.backward()
    with record_function("optimizer"):
        if clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def group_of(name: str, scope: str | None) -> str:
    if scope in ("data", "optimizer"):
        return scope
    op = name.removeprefix("aten::")
    if name in MATMUL:
        return "matmul"
    if any(k in op for k in LOSS):
        return "loss"
    if any(k in op for k in ATTENTION):
        return "attention"
    if any(k in op for k in GATHER) or "Regather" in name:
        return "gather"
    if op in ELEMENTWISE or any(k in op for k in ("layer_norm", "gelu", "random", "dropout")):
        return "norm/act/dropout/elementwise"
    return "other"


def scope_of(event) -> str | None:
    while event is not None:
        if event.name in ("data", "forward", "backward", "optimizer"):
            return event.name
        event = event.cpu_parent
    return None


def profile(args) -> None:
    import torch
    from torch.profiler import ProfilerActivity, record_function

    plan, data, dm = setup(args)
    model = make_model(plan, data, not args.no_dropout)
    opt, sched = make_optimizer(model, plan)
    clip = plan.specs.optimizer.grad_clip
    it = iter(dm.train_dataloader())
    for _ in range(args.warmup):
        train_step(model, opt, sched, next(it), clip)
    with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            with record_function("data"):
                batch = next(it)
            train_step(model, opt, sched, batch, clip)
    self_us: dict[str, float] = defaultdict(float)
    ops: dict[tuple[str, str], float] = defaultdict(float)
    for ev in prof.events():
        if ev.name in ("data", "forward", "backward", "optimizer"):
            continue
        g = group_of(ev.name, scope_of(ev))
        self_us[g] += ev.self_cpu_time_total
        ops[(g, ev.name)] += ev.self_cpu_time_total
    total = sum(self_us.values())
    print(f"profile: {args.steps} steps after {args.warmup} warm-up, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load {os.getloadavg()[0]:.2f}; "
          f"{total / 1e3 / args.steps:,.0f} ms of op self time per step")
    print("| group | ms/step | share | top ops |\n|---|---:|---:|---|")
    for g in GROUPS:
        top = sorted(((t, n) for (gg, n), t in ops.items() if gg == g), reverse=True)[:4]
        names = ", ".join(f"{n.removeprefix('aten::')} {t / total:.1%}" for t, n in top)
        print(f"| {g} | {self_us[g] / 1e3 / args.steps:,.1f} | {self_us[g] / total:.1%} | {names} |")


def ab(args) -> None:
    import torch

    import robablate.models.bert as bert

    plan, data, dm = setup(args)
    torch.manual_seed(0)
    model_a = make_model(plan, data, not args.no_dropout)
    model_b = copy.deepcopy(model_a)
    opt_a, sched_a = make_optimizer(model_a, plan)
    opt_b, sched_b = make_optimizer(model_b, plan, "foreach" if args.ab == "foreach" else "fused")
    if args.ab == "compile":
        model_b.encoder = torch.compile(model_b.encoder)
    autocast_b = torch.bfloat16 if args.ab == "bf16" else None
    own_dropout = bert.dropout
    native = lambda x, p, training: torch.nn.functional.dropout(x, p, training)  # noqa: E731
    clip = plan.specs.optimizer.grad_clip
    times: dict[str, list[float]] = {"A": [], "B": []}
    losses: dict[str, list[float]] = {"A": [], "B": []}
    it = iter(dm.train_dataloader())
    for step in range(args.warmup + args.steps):
        batch = next(it)
        for arm, model, opt, sched, autocast in (("A", model_a, opt_a, sched_a, None),
                                                 ("B", model_b, opt_b, sched_b, autocast_b)):
            bert.dropout = native if (args.ab == "dropout" and arm == "B") else own_dropout
            torch.manual_seed(1000 + step)
            t = time.perf_counter()
            losses[arm].append(train_step(model, opt, sched, batch, clip, autocast))
            times[arm].append(time.perf_counter() - t)
        bert.dropout = own_dropout
    w = args.warmup
    a, b = statistics.median(times["A"][w:]), statistics.median(times["B"][w:])
    diffs = [abs(x - y) for x, y in zip(losses["A"], losses["B"])]
    names = {"bf16": ("fp32", "bf16 autocast"), "compile": ("eager", "torch.compile(encoder)"),
             "foreach": ("fused AdamW", "foreach AdamW"), "dropout": ("robablate dropout", "F.dropout")}[args.ab]
    print(f"A/B {args.ab}: {args.steps} timed steps after {w} warm-up each, interleaved, {torch.get_num_threads()} "
          f"threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, dropout "
          f"{'off' if args.no_dropout else 'on'}, load {os.getloadavg()[0]:.2f}")
    print(f"A {names[0]}: {a * 1e3:,.0f} ms/step median (range {min(times['A'][w:]) * 1e3:,.0f}-"
          f"{max(times['A'][w:]) * 1e3:,.0f}); B {names[1]}: {b * 1e3:,.0f} ms/step (range "
          f"{min(times['B'][w:]) * 1e3:,.0f}-{max(times['B'][w:]) * 1e3:,.0f})")
    print(f"losses A: {' '.join(f'{x:.5f}' for x in losses['A'])}\nlosses B: {' '.join(f'{x:.5f}' for x in losses['B'])}")
    print(f"max |loss A - loss B| {max(diffs):.2e}, last {diffs[-1]:.2e}")
    if args.ab == "compile":
        extra = sum(times["B"][:w]) - sum(times["A"][:w])
        saving = a - b
        print(f"compile: B's {w} warm-up steps took {extra:,.1f} s more than A's; saving {saving * 1e3:,.0f} ms/step "
              + (f"-> earned back after {extra / saving:,.0f} steps" if saving > 0 else "-> never earned back"))
    print(f"ab_{args.ab}_speedup_B_over_A: {a / b:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ab", choices=AB, default=None, help="interleaved A/B instead of the profile")
    p.add_argument("--steps", type=int, default=None, help="profiled / timed steps (default 3 / 12)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; compile: 4)")
    p.add_argument("--no-dropout", action="store_true", help="dropout 0 (losses compare the arithmetic only)")
    p.add_argument("--corpus", default=None, help="wikitext2 | synthetic (default: wikitext2 when present)")
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    args = p.parse_args()
    from bench_loop import WIKITEXT

    if args.corpus is None:
        args.corpus = "wikitext2" if (WIKITEXT / "train.txt").is_file() else "synthetic"
    args.steps = args.steps or (12 if args.ab else 3)
    args.warmup = args.warmup if args.warmup is not None else (4 if args.ab == "compile" else 2)
    profile(args) if args.ab is None else ab(args)


if __name__ == "__main__":
    main()
