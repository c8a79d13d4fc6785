"""The loop the user runs: `python run.py` pretraining vs plain transformers loops, real tokens/s, and
how close the real loop gets to the matmul ceiling of this machine.

A (robablate): `run.py stage=pretrain` at its defaults (OpenMP policy from robablate/threads.py,
train.pack, fused AdamW, clipping 1.0), FULL-SENTENCES without NSP, BERT-Mini (conf/model/mini.yaml:
H 256, L 4, A 4, FFN 1024), WordPiece 8192, seq_len 128, batch.size 32, a subprocess; per-step times
and real tokens come from its metrics.csv (`train/loop_s`: the whole loop between two micro-batches,
data loading included; `train/batch_tokens`).
B (transformers), two baselines, each a subprocess with the caller's environment (OpenMP defaults
unless the caller set them), `BertForMaskedLM` (sdpa) of the same shape, `torch.optim.AdamW` (lr 1e-3,
weight decay 0.01), linear warm-up/decay, `clip_grad_norm_(1.0)`, `DataCollatorForLanguageModeling`
(15%, 80/10/10), 32 examples per step, timed per step with the collator:
- dense (the headline baseline): what `run_mlm.py` does by default (`group_texts`): the training
  tokens of the same corpus and tokenizer (robablate's FULL-SENTENCES instances without their special
  tokens) concatenated and cut into 126-token chunks + [CLS]/[SEP]: no padding at all;
- padded: robablate's FULL-SENTENCES instances in a shuffled order, padded to the longest of each batch.

Both: real (non-padding) tokens per second over the last 3/4 of the steps (the first quarter is warm-up).
Runs alternate A, B dense, B padded, ceiling, A, ... (`--rounds`), so load from other processes hits all;
the median over rounds is reported with each round's number, the load average and the other runnable
tasks (robablate/threads.py's measure) at the start of each run.

The ceiling, in this process each round: fp32 matmuls at the model's own GEMM shapes (every Linear of
the encoder and MLM head, forward and both backward products, at the benchmark's real tokens per step
and MLM-selected rows) and a large square one (2048^3), best of 3 each: achievable FLOP/s. The real
loop's fraction of it = model FLOPs per real token that training needs (models/bert.flops_per_token:
the encoder, attention at the token-weighted instance length, the MLM head at the selected positions
only) x its real tokens/s / achievable FLOP/s.

Data: WikiText-2 from ../shared/data/corpus/wikitext-2 when present, else the synthetic corpus. The
last line is `speedup_real_loop_vs_transformers_dense: X.XX` (robablate real tokens/s / dense
transformers real tokens/s); `speedup_real_loop_vs_transformers_padded` precedes it.

    python experiments/bench_loop.py [--steps 60] [--rounds 2] [--variant NAME:KEY=VAL[,KEY=VAL]]
    # --variant nopack:train.pack=false  --variant passive:OMP_WAIT_POLICY=PASSIVE  (UPPERCASE = env var)
    # --variant hf-passive:OMP_WAIT_POLICY=PASSIVE,layout=padded  (a name starting with hf: another
    #   transformers run; layout=dense (default) or padded; precision=bf16 runs it under CPU bf16 autocast,
    #   the like-for-like baseline of a bf16 robablate arm: --variant hf-bf16:precision=bf16)
    # --baselines dense  (skip the padded baseline)   --no-ceiling  (skip the matmul probe)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
WIKITEXT = Path(os.environ.get("ROBABLATE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "corpus" / "wikitext-2"

LR, WEIGHT_DECAY, CLIP, WARMUP = 1e-3, 0.01, 1.0, 0.1  # conf/batch/default.yaml, conf/optimizer/bert.yaml


def overrides(steps: int, corpus: str, cache_dir: str) -> list[str]:
    return [f"corpus={corpus}", "model=mini", "nsp=false", "format=full_sentences", "tokenizer.vocab_size=8192",
            "seq_len=128", "batch.size=32", f"train.max_steps={steps}", f"train.val_every_steps={steps}",
            "train.val_instances=64", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
            "logger=csv", f"cache_dir={cache_dir}"]


def tail_rate(tokens: list[float], seconds: list[float]) -> float:
    """Real tokens/s over the last 3/4 of the steps."""
    k = len(tokens) // 4
    return sum(tokens[k:]) / sum(seconds[k:])


def busy() -> str:
    from robablate.threads import other_runnable

    return f"load {os.getloadavg()[0]:.2f}, {other_runnable():.1f} other runnable"


# -- A: run.py ------------------------------------------------------------------------------------
def run_robablate(args, extra: list[str], env_extra: dict[str, str], workdir: Path) -> dict:
    run_dir = Path(tempfile.mkdtemp(dir=workdir, prefix="robablate_"))
    cmd = [sys.executable, str(ROOT / "run.py"), "stage=pretrain", "glue=none", f"run_dir={run_dir}",
           *overrides(args.steps, args.corpus, args.cache_dir), *extra]
    env = {**os.environ, **env_extra}
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"run.py failed ({p.returncode}):\n{p.stderr[-4000:]}")
    policy = re.search(r"OMP_WAIT_POLICY=(\w+) \(([^;]*)", p.stderr)
    rows = []
    for path in sorted(run_dir.rglob("metrics.csv")):
        with open(path) as f:
            rows += [r for r in csv.DictReader(f) if r.get("train/loop_s")]
    tokens = [float(r["train/batch_tokens"]) for r in rows]
    secs = [float(r["train/loop_s"]) for r in rows]
    if len(rows) < args.steps - 2:
        raise SystemExit(f"expected ~{args.steps} per-step rows in {run_dir}/**/metrics.csv, got {len(rows)}")
    results = json.loads((run_dir / "results.json").read_text())
    return {"tokens_per_s": tail_rate(tokens, secs), "steps": len(rows), "wall_s": wall,
            "tokens_per_step": statistics.mean(tokens),
            "policy": (f"{policy.group(1)} ({policy.group(2)})" if policy else
                       f"OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY', 'unset')} (from the environment)"),
            "val_mlm_loss": results.get("pretrain", {}).get("val_mlm_loss"),
            "precision": results.get("plan", {}).get("precision")}


# -- B: plain transformers loop (child process) -----------------------------------------------------
def transformers_child(args) -> None:
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from transformers import (BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling,
                              get_linear_schedule_with_warmup)

    from robablate.config import normalize_overrides, validate
    from robablate.datamodule import prepare

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=normalize_overrides(overrides(args.steps, args.corpus,
                                                                                      args.cache_dir)))
    data = prepare(validate(cfg))
    inst, tok = data.phases[0], data.tokenizer
    examples = dense_examples(inst, data.ids) if args.layout == "dense" else padded_examples(inst)
    m = cfg.model
    hf_cfg = BertConfig(vocab_size=data.ids.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
                        num_attention_heads=m.num_heads, intermediate_size=m.intermediate_size,
                        max_position_embeddings=m.max_position_embeddings, pad_token_id=data.ids.pad)
    torch.manual_seed(0)
    model = BertForMaskedLM._from_config(hf_cfg, attn_implementation="sdpa").train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = get_linear_schedule_with_warmup(opt, int(WARMUP * args.steps), args.steps)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    order = np.random.default_rng(0).permutation(len(examples))
    if len(order) < 32 * args.steps:
        raise SystemExit(f"{len(order)} {args.layout} examples, {32 * args.steps} needed for {args.steps} steps")
    tokens, secs, padded = [], [], 0
    for step in range(args.steps):
        t = time.perf_counter()
        idx = order[step * 32:(step + 1) * 32]
        batch = collator([{"input_ids": examples[i].tolist()} for i in idx])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):  # Trainer's --bf16 on CPU
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        float(loss)
        secs.append(time.perf_counter() - t)
        tokens.append(float(batch["attention_mask"].sum()))
        padded += batch["attention_mask"].numel()
    pad = 1 - sum(tokens) / padded
    print(json.dumps({"tokens_per_s": tail_rate(tokens, secs), "steps": args.steps,
                      "tokens_per_step": statistics.mean(tokens), "padding_fraction": pad,
                      "loss": float(loss)}))


def padded_examples(inst) -> list:
    """robablate's FULL-SENTENCES instances, each as its real tokens ([CLS] ... [SEP])."""
    return [inst.input_ids[i, :inst.lengths[i]] for i in range(len(inst.lengths))]


def dense_examples(inst, ids, block: int = 128) -> list:
    """run_mlm.py's group_texts: every training token concatenated and cut into block - 2 token chunks,
    each + [CLS]/[SEP] (the instances' own [CLS]/[SEP]/padding dropped; [UNK] is a token)."""
    import numpy as np

    real = np.concatenate([row[:n] for row, n in zip(inst.input_ids, inst.lengths)])
    real = real[~np.isin(real, [ids.pad, ids.cls, ids.sep, ids.mask])]
    n = len(real) // (block - 2)
    body = real[:n * (block - 2)].reshape(n, block - 2)
    return list(np.concatenate([np.full((n, 1), ids.cls, body.dtype), body, np.full((n, 1), ids.sep, body.dtype)], 1))


def run_transformers(args, env_extra: dict[str, str], layout: str, precision: str = "fp32") -> dict:
    cmd = [sys.executable, __file__, "--_transformers-child", "--steps", str(args.steps), "--corpus", args.corpus,
           "--cache-dir", args.cache_dir, "--layout", layout, "--precision", precision]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env_extra})
    if p.returncode:
        raise SystemExit(f"transformers loop failed ({p.returncode}):\n{p.stderr[-4000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t
    return out


def data_stats(args) -> dict:
    """robablate's training batches (first --steps): padding padded vs packed, MLM-selected fraction,
    token-weighted instance length (what attention needs), and the model config for FLOPs."""
    import numpy as np
    from hydra import compose, initialize_config_dir

    from robablate.config import normalize_overrides, validate
    from robablate.data.packing import pack_batch
    from robablate.datamodule import PretrainDataModule, prepare

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=normalize_overrides(overrides(args.steps, args.corpus,
                                                                                      args.cache_dir)))
    plan = validate(cfg)
    data = prepare(plan)
    dm = PretrainDataModule(data, plan, cfg.masking, int(cfg.seed), 0, pack=False)
    real = padded = slots = selected = sq = 0
    n_inst = []
    for batch in dm.train_dataloader():  # the first train.max_steps (= --steps) batches
        packed = pack_batch(batch)
        lengths = batch["attention_mask"].sum(1).double()
        real += int(lengths.sum())
        sq += float((lengths ** 2).sum())
        padded += batch["attention_mask"].numel()
        slots += packed["attention_mask"].numel()
        selected += int((batch["mlm_labels"] != -100).sum())
        n_inst.append(len(batch["nsp_labels"]))
    steps = len(n_inst)
    text = (f"robablate batches (first {steps}, format {plan.format}): {np.mean(n_inst):.1f} instances, "
            f"{real / steps:.0f} real tokens per step; padding in the dense layers {1 - real / padded:.1%} padded -> "
            f"0% packed; empty attention slots {1 - real / slots:.1%} packed (rows of the longest instance)")
    return {"text": text, "tokens_per_step": real / steps, "selected_fraction": selected / real,
            "attn_len": sq / real, "model": plan.specs.model.config(data.ids.vocab_size, data.ids.pad)}


# -- the ceiling: matmul FLOP/s at the model's own shapes and a large square one --------------------
def gemm_shapes(model, tokens: int, selected: int) -> list[tuple[int, int, int]]:
    """(M, K, N) of every Linear's forward product x[M, K] @ W[K, N] in one training step, and of its
    two backward products (grad input [M, N] @ [N, K], grad weight [K, M] @ [M, N])."""
    H, I, V = model.hidden_size, model.intermediate_size, model.vocab_size
    forward = [(tokens, H, 3 * H), (tokens, H, H), (tokens, H, I), (tokens, I, H)] * model.num_layers
    forward += [(selected, H, H), (selected, H, V)]  # MLM head at the selected positions
    return [shape for m, k, n in forward for shape in ((m, k, n), (m, n, k), (k, m, n))]


def best_seconds(m: int, k: int, n: int, repeats: int = 3, dtype: str = "float32") -> float:
    import torch

    a, b = torch.randn(m, k).to(getattr(torch, dtype)), torch.randn(k, n).to(getattr(torch, dtype))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return best


def ceiling(stats: dict) -> dict[str, float]:
    """Achievable FLOP/s on this process's threads: the model's GEMMs (sum of FLOPs / sum of best
    times) and a 2048^3 matmul, in fp32 and in bf16 (the ceiling of a loop under bf16 autocast, the
    default on CPUs with AVX512-BF16 / AMX: they run it 2-6x faster, others may run it slower)."""
    shapes = gemm_shapes(stats["model"], round(stats["tokens_per_step"]),
                         round(stats["tokens_per_step"] * stats["selected_fraction"]))
    flops = sum(2.0 * m * k * n for m, k, n in shapes)
    model_shapes = flops / sum(best_seconds(*shape) for shape in shapes)
    model_shapes_bf16 = flops / sum(best_seconds(*shape, dtype="bfloat16") for shape in shapes)
    square = 2.0 * 2048**3
    return {"model_shapes": model_shapes, "square_2048": square / best_seconds(2048, 2048, 2048),
            "model_shapes_bf16": model_shapes_bf16,
            "square_2048_bf16": square / best_seconds(2048, 2048, 2048, dtype="bfloat16")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per run (timed: the last 3/4)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--corpus", default=None, help="wikitext2 | synthetic (default: wikitext2 when present)")
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    p.add_argument("--variant", action="append", default=[],
                   help="NAME:KEY=VAL[,KEY=VAL]: another run.py arm per round (UPPERCASE keys are env vars)")
    p.add_argument("--baselines", default="dense,padded", help="transformers baselines: dense,padded | dense | padded")
    p.add_argument("--no-ceiling", action="store_true", help="skip the matmul ceiling probe")
    p.add_argument("--_transformers-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--layout", default="dense", choices=["dense", "padded"], help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.corpus is None:
        args.corpus = "wikitext2" if (WIKITEXT / "train.txt").is_file() else "synthetic"
    if args._transformers_child:
        transformers_child(args)
        return
    baselines = [b for b in args.baselines.split(",") if b]
    if "dense" not in baselines or not set(baselines) <= {"dense", "padded"}:
        raise SystemExit(f"--baselines {args.baselines!r}: a comma list of dense (required) and padded")

    # name -> (transformers layout or None, run.py overrides, environment, transformers precision); the
    # baselines run with the caller's environment, run.py's defaults and fp32.
    variants: dict[str, tuple[str | None, list[str], dict[str, str], str]] = {"robablate": (None, [], {}, "")}
    for spec in args.variant:
        name, _, kvs = spec.partition(":")
        pairs = dict(kv.split("=", 1) for kv in kvs.split(",") if kv)
        hf = name.startswith("hf")
        layout = pairs.pop("layout", "dense") if hf else None
        prec = pairs.pop("precision", "fp32") if hf else ""
        if hf and prec not in ("fp32", "bf16"):
            raise SystemExit(f"--variant {spec!r}: precision must be fp32 or bf16")
        variants[f"{'transformers' if hf else 'robablate'} {name}"] = (
            layout, [f"{k}={v}" for k, v in pairs.items() if not k.isupper()],
            {k: v for k, v in pairs.items() if k.isupper()}, prec)
    for b in baselines:
        variants[f"transformers {b}"] = (b, [], {}, "fp32")
    print(f"corpus {args.corpus}, BERT-Mini, seq 128, batch 32, {args.steps} steps x {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY in the caller: {os.environ.get('OMP_WAIT_POLICY', 'unset')}",
          flush=True)
    stats = data_stats(args)
    print(stats["text"], flush=True)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    precisions: dict[str, str] = {}  # robablate variant -> the precision its run resolved to
    ceilings: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, (layout, extra, env_extra, prec) in variants.items():
                before = busy()
                if layout:
                    res = run_transformers(args, env_extra, layout, prec)
                    detail = (f"padding {res['padding_fraction']:.1%}, {prec}, OMP_WAIT_POLICY="
                              f"{env_extra.get('OMP_WAIT_POLICY', os.environ.get('OMP_WAIT_POLICY', 'unset'))}, "
                              f"loss {res['loss']:.3f}")
                else:
                    res = run_robablate(args, extra, env_extra, Path(tmp))
                    detail = f"{res['precision']}, {res['policy']}, val MLM {res['val_mlm_loss']:.3f}"
                    precisions[name] = res["precision"]
                rates[name].append(res["tokens_per_s"])
                print(f"round {r} {name:24s} {res['tokens_per_s']:8,.0f} real tokens/s  ({res['tokens_per_step']:.0f} "
                      f"tokens/step, {res['wall_s']:.0f} s wall, {detail}; at start: {before})", flush=True)
            if not args.no_ceiling:
                before = busy()
                ceilings.append(ceiling(stats))
                print(f"round {r} matmul ceiling: model shapes {ceilings[-1]['model_shapes'] / 1e9:,.1f} GFLOP/s, "
                      f"2048^3 {ceilings[-1]['square_2048'] / 1e9:,.1f} GFLOP/s (fp32, {torch_threads()} threads; "
                      f"bf16 2048^3 {ceilings[-1]['square_2048_bf16'] / 1e9:,.1f} GFLOP/s; "
                      f"at start: {before})", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print_summary(rates, stats, ceilings, precisions)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def print_summary(rates: dict[str, list[float]], stats: dict, ceilings: list[dict[str, float]],
                  precisions: dict[str, str]) -> None:
    from robablate.models.bert import flops_per_token

    med = {name: statistics.median(v) for name, v in rates.items()}
    dense = med["transformers dense"]
    print("| loop | real tokens/s (median; per round) | vs transformers dense |\n|---|---:|---:|")
    for name, v in rates.items():
        print(f"| {name} | {med[name]:,.0f} ({', '.join(f'{x:,.0f}' for x in v)}) | {med[name] / dense:.2f} |")
    if ceilings:
        need = flops_per_token(stats["model"], round(stats["attn_len"]), stats["selected_fraction"])
        print(f"model FLOPs per real token that training needs: {need / 1e6:.1f} M (attention at the token-weighted "
              f"instance length {stats['attn_len']:.0f}, MLM head at {stats['selected_fraction']:.1%} of tokens)")
        # Each robablate loop against the ceiling of the dtype its matmuls ran in; the default loop's lines
        # (no prefix) come last.
        for name in sorted(precisions, key=lambda n: n == "robablate"):
            bf16 = precisions[name].startswith("bf16")
            suffix = "_bf16" if bf16 else ""
            shapes = statistics.median(c["model_shapes" + suffix] for c in ceilings)
            square = statistics.median(c["square_2048" + suffix] for c in ceilings)
            achieved = need * med[name]
            tag = "" if name == "robablate" else f"[{name.removeprefix('robablate ')}] "
            print(f"{tag}real loop {achieved / 1e9:,.1f} GFLOP/s ({precisions[name]}; against the "
                  f"{'bf16' if bf16 else 'fp32'} matmul ceiling)")
            print(f"{tag}fraction_of_matmul_peak_model_shapes: {achieved / shapes:.2f}  ({shapes / 1e9:,.1f} GFLOP/s median)")
            print(f"{tag}fraction_of_matmul_peak_square_2048: {achieved / square:.2f}  ({square / 1e9:,.1f} GFLOP/s median)")
        fp32 = statistics.median(c["square_2048"] for c in ceilings)
        bf16 = statistics.median(c["square_2048_bf16"] for c in ceilings)
        print(f"bf16 matmul 2048^3: {bf16 / 1e9:,.1f} GFLOP/s median ({bf16 / fp32:.1f}x fp32)")
    if "transformers padded" in med:
        print(f"speedup_real_loop_vs_transformers_padded: {med['robablate'] / med['transformers padded']:.2f}")
    for name in rates:  # like for like: the default loop against a transformers loop in its precision
        if name.startswith("transformers hf") and "robablate" in med:
            print(f"speedup_real_loop_vs_{name.replace(' ', '_')}: {med['robablate'] / med[name]:.2f}")
    print(f"speedup_real_loop_vs_transformers_dense: {med['robablate'] / dense:.2f}  (the default loop, "
          f"{precisions.get('robablate', '?')}, against run_mlm.py's default loop, fp32)")


if __name__ == "__main__":
    main()
