"""The loop the user runs: `python run.py` pretraining vs a plain transformers loop, real tokens/s.

A (robablate): `run.py stage=pretrain` at its defaults (OpenMP policy from robablate/threads.py,
train.pack, fused AdamW, clipping 1.0), FULL-SENTENCES without NSP, BERT-Mini (conf/model/mini.yaml:
H 256, L 4, A 4, FFN 1024), WordPiece 8192, seq_len 128, batch.size 32, a subprocess; per-step times
and real tokens come from its metrics.csv (`train/loop_s`: the whole loop between two micro-batches,
data loading included; `train/batch_tokens`).
B (transformers): the same instances (robablate's FULL-SENTENCES cut of the same corpus and tokenizer),
32 per step in a shuffled order, padded to the longest and masked by `DataCollatorForLanguageModeling`
(15%, 80/10/10), `BertForMaskedLM` (sdpa) of the same shape, `torch.optim.AdamW` (lr 1e-3, weight decay
0.01), linear warm-up/decay, `clip_grad_norm_(1.0)`: the loop a transformers user writes. A subprocess
with the caller's environment (OpenMP defaults unless the caller set them). Timed per step, the
collator included.

Both: real (non-padding) tokens per second over the last 3/4 of the steps (the first quarter is warm-up).
Runs alternate A, B, A, B, ... (`--rounds`), so load from other processes hits both; the median over
rounds is reported with each round's number, the load average and the other runnable tasks
(robablate/threads.py's measure) at the start of each run. Data: WikiText-2 from
../shared/data/corpus/wikitext-2 when present, else the synthetic corpus. The last line is
`speedup_real_loop_vs_transformers: X.XX` (robablate real tokens/s / transformers real tokens/s).

    python experiments/bench_loop.py [--steps 60] [--rounds 2] [--variant NAME:KEY=VAL[,KEY=VAL]]
    # --variant nopack:train.pack=false  --variant passive:OMP_WAIT_POLICY=PASSIVE  (UPPERCASE = env var)
    # --variant hf-passive:OMP_WAIT_POLICY=PASSIVE  (a name starting with hf: another transformers run)
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
            "val_mlm_loss": results.get("pretrain", {}).get("val_mlm_loss")}


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
    m = cfg.model
    hf_cfg = BertConfig(vocab_size=data.ids.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
                        num_attention_heads=m.num_heads, intermediate_size=m.intermediate_size,
                        max_position_embeddings=m.max_position_embeddings, pad_token_id=data.ids.pad)
    torch.manual_seed(0)
    model = BertForMaskedLM._from_config(hf_cfg, attn_implementation="sdpa").train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = get_linear_schedule_with_warmup(opt, int(WARMUP * args.steps), args.steps)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    order = np.random.default_rng(0).permutation(len(inst.lengths))
    tokens, secs = [], []
    for step in range(args.steps):
        t = time.perf_counter()
        idx = order[step * 32:(step + 1) * 32]
        batch = collator([{"input_ids": inst.input_ids[i, :inst.lengths[i]].tolist()} for i in idx])
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        float(loss)
        secs.append(time.perf_counter() - t)
        tokens.append(float(batch["attention_mask"].sum()))
    padded = sum(32 * int(inst.lengths[order[s * 32:(s + 1) * 32]].max()) for s in range(args.steps))
    pad = 1 - sum(tokens) / padded
    print(json.dumps({"tokens_per_s": tail_rate(tokens, secs), "steps": args.steps,
                      "tokens_per_step": statistics.mean(tokens), "padding_fraction": pad,
                      "loss": float(loss)}))


def run_transformers(args, env_extra: dict[str, str]) -> dict:
    cmd = [sys.executable, __file__, "--_transformers-child", "--steps", str(args.steps), "--corpus", args.corpus,
           "--cache-dir", args.cache_dir]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env_extra})
    if p.returncode:
        raise SystemExit(f"transformers loop failed ({p.returncode}):\n{p.stderr[-4000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t
    return out


def padding_report(args) -> str:
    """Padding share of robablate's training batches, padded vs packed (what the encoder computes on)."""
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
    real = padded = slots = 0
    n_inst = []
    for batch in dm.train_dataloader():  # the first train.max_steps (= --steps) batches
        packed = pack_batch(batch)
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
        slots += packed["attention_mask"].numel()
        n_inst.append(len(batch["nsp_labels"]))
    return (f"robablate batches (first {len(n_inst)}, format {plan.format}): {np.mean(n_inst):.1f} instances, "
            f"{real / len(n_inst):.0f} real tokens per step; padding in the dense layers {1 - real / padded:.1%} padded -> "
            f"0% packed; empty attention slots {1 - real / slots:.1%} packed (rows of the longest instance)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per run (timed: the last 3/4)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--corpus", default=None, help="wikitext2 | synthetic (default: wikitext2 when present)")
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    p.add_argument("--variant", action="append", default=[],
                   help="NAME:KEY=VAL[,KEY=VAL]: another run.py arm per round (UPPERCASE keys are env vars)")
    p.add_argument("--_transformers-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.corpus is None:
        args.corpus = "wikitext2" if (WIKITEXT / "train.txt").is_file() else "synthetic"
    if args._transformers_child:
        transformers_child(args)
        return

    # name -> (transformers?, run.py overrides, environment); the baselines "robablate" and "transformers"
    # run with the caller's environment and run.py's defaults.
    variants = {"robablate": (False, [], {})}
    for spec in args.variant:
        name, _, kvs = spec.partition(":")
        pairs = [kv.split("=", 1) for kv in kvs.split(",") if kv]
        hf = name.startswith("hf")
        variants[f"{'transformers' if hf else 'robablate'} {name}"] = (
            hf, [f"{k}={v}" for k, v in pairs if not k.isupper()], {k: v for k, v in pairs if k.isupper()})
    variants["transformers"] = (True, [], {})
    print(f"corpus {args.corpus}, BERT-Mini, seq 128, batch 32, {args.steps} steps x {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY in the caller: {os.environ.get('OMP_WAIT_POLICY', 'unset')}",
          flush=True)
    print(padding_report(args), flush=True)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, (hf, extra, env_extra) in variants.items():
                before = busy()
                if hf:
                    res = run_transformers(args, env_extra)
                    detail = (f"padding {res['padding_fraction']:.1%}, OMP_WAIT_POLICY="
                              f"{env_extra.get('OMP_WAIT_POLICY', os.environ.get('OMP_WAIT_POLICY', 'unset'))}, "
                              f"loss {res['loss']:.3f}")
                else:
                    res = run_robablate(args, extra, env_extra, Path(tmp))
                    detail = f"{res['policy']}, val MLM {res['val_mlm_loss']:.3f}"
                rates[name].append(res["tokens_per_s"])
                print(f"round {r} {name:24s} {res['tokens_per_s']:8,.0f} real tokens/s  ({res['tokens_per_step']:.0f} "
                      f"tokens/step, {res['wall_s']:.0f} s wall, {detail}; at start: {before})", flush=True)
    base = statistics.median(rates["transformers"])
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print("| loop | real tokens/s (median; per round) | vs transformers |\n|---|---:|---:|")
    for name, v in rates.items():
        print(f"| {name} | {statistics.median(v):,.0f} ({', '.join(f'{x:,.0f}' for x in v)}) | "
              f"{statistics.median(v) / base:.2f} |")
    print(f"speedup_real_loop_vs_transformers: {statistics.median(rates['robablate']) / base:.2f}")


if __name__ == "__main__":
    main()
