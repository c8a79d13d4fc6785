"""Training-step throughput: robablate's BertForPretraining vs transformers' BertForMaskedLM (sdpa).

One training step = forward + backward + AdamW step, at the same shape, the same batches and the same
masks for both (robablate's mask_tokens, 15%, 80/10/10), both in train mode with dropout 0.1. Both
models get the same optimizer (robablate.optim.build_optimizer: AdamW, BERT's no-decay groups), so
the comparison is about the model. NSP is off (BertForMaskedLM has no NSP head).

Timings are interleaved: each round runs one step of each model and one large fp32 matmul, so load
from other processes hits all three alike; medians are reported. The matmul gives the machine's
measured peak FLOP/s, against which MFU is computed (FLOPs the model executes per token x tokens/s:
the transformers model runs its vocabulary projection at every position, robablate's only at the
selected ones). Also prints the share of a training step that masking takes at this shape. The last
line is `speedup_vs_transformers: X.XX` (transformers step time / robablate step time).

On a GPU (--device cuda; experiments/gpu_check.sh) --precision bf16 runs both under bf16 autocast
(as train.precision=bf16-mixed), the matmul probe is a bf16 matmul and MFU is also given against
the datasheet peak (robablate.peak.PEAK_FLOPS_16BIT).

    python experiments/bench_pretrain.py [--rounds 12] [--vocab 8192 --hidden 256 --layers 4 --heads 4
        --ffn 1024 --seq 128 --batch 32] [--threads N] [--compile] [--profile] [--device cuda --precision bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Callable

import numpy as np
import torch

from robablate.data.masking import mask_tokens
from robablate.data.tokenizer import SpecialIds
from robablate.models.bert import BertConfig, BertForPretraining, flops_per_token
from robablate.optim import build_optimizer

OPTIMIZER = {"betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01}  # conf/optimizer/bert.yaml
LR = 1e-4
MASK_PROB = 0.15


def make_batches(n: int, batch: int, seq: int, ids: SpecialIds, seed: int = 0,
                 device: str = "cpu") -> list[dict[str, torch.Tensor]]:
    """n full-length batches (no padding, as FULL-SENTENCES) masked by robablate's mask_tokens."""
    rng = np.random.default_rng(seed)
    out = []
    for epoch in range(n):
        rows = rng.integers(5, ids.vocab_size, size=(batch, seq)).astype(np.int64)
        rows[:, 0], rows[:, -1] = ids.cls, ids.sep
        masked, labels = mask_tokens(rows, np.arange(batch, dtype=np.int64), epoch, seed, mask_prob=MASK_PROB,
                                     mask_token_frac=0.8, random_token_frac=0.1, ids=ids)
        b = {"input_ids": torch.from_numpy(masked), "token_type_ids": torch.zeros(batch, seq, dtype=torch.long),
             "attention_mask": torch.ones(batch, seq, dtype=torch.long), "labels": torch.from_numpy(labels)}
        out.append({k: v.to(device) for k, v in b.items()})
    return out


def autocast(device: str, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model: torch.nn.Module, loss_of: Callable, device: str, precision: str,
               fused: bool) -> Callable[[dict[str, torch.Tensor]], float]:
    """One optimizer step on a batch: the same AdamW (as PretrainModule.configure_optimizers) and
    precision for every implementation compared."""
    opt = build_optimizer(model, OPTIMIZER, LR, fused=fused)

    def step(b: dict[str, torch.Tensor]) -> float:
        with autocast(device, precision):
            loss = loss_of(b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())
    return step


def robablate_step(cfg: BertConfig, compile: bool, device: str = "cpu", precision: str = "fp32",
                   fused: bool = True) -> tuple[Callable, torch.nn.Module]:
    model = BertForPretraining(cfg, nsp=False).to(device).train()
    model.encoder.pooler.requires_grad_(False)  # as PretrainModule without NSP
    if compile:
        model.encoder = torch.compile(model.encoder)  # as train.compile=true does

    def loss_of(b: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(b["input_ids"], b["token_type_ids"], b["attention_mask"], mlm_labels=b["labels"])["loss"]
    return train_step(model, loss_of, device, precision, fused), model


def transformers_step(cfg: BertConfig, compile: bool, device: str = "cpu", precision: str = "fp32",
                      fused: bool = True) -> tuple[Callable, torch.nn.Module]:
    from transformers import BertConfig as HFConfig
    from transformers import BertForMaskedLM

    hf_cfg = HFConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                      num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                      max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
                      hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.attention_dropout,
                      layer_norm_eps=cfg.layer_norm_eps, pad_token_id=cfg.pad_token_id, hidden_act="gelu")
    model = BertForMaskedLM._from_config(hf_cfg, attn_implementation="sdpa").to(device).train()
    if compile:
        model.bert = torch.compile(model.bert)

    def loss_of(b: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"],
                     attention_mask=b["attention_mask"], labels=b["labels"]).loss
    return train_step(model, loss_of, device, precision, fused), model


def matmul_probe(n: int, device: str, dtype: torch.dtype) -> Callable[[], float]:
    """Seconds for one n x n matmul; 2 n^3 / t is the machine's attainable peak FLOP/s."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)

    def run() -> float:
        sync(device)
        t = time.perf_counter()
        for _ in range(REPS[device]):
            torch.mm(a, b, out=c)
        sync(device)
        return (time.perf_counter() - t) / REPS[device]
    return run


REPS = {"cpu": 1, "cuda": 20}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def profile(steps: dict[str, Callable], batches: list, n: int = 3, rows: int = 15) -> None:
    from torch.profiler import ProfilerActivity, profile as tprofile

    for name, step in steps.items():
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(n):
                step(batches[i % len(batches)])
        print(f"\n== torch.profiler: {name}, {n} steps, by self CPU time ==")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=1024)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="torch.compile both encoders")
    p.add_argument("--profile", action="store_true", help="print torch.profiler tables for both models")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast (bf16-mixed)")
    p.add_argument("--no-fused", action="store_true", help="for-loop AdamW for both (the pre-issue-5 optimizer)")
    args = p.parse_args()
    dev = args.device
    if args.precision == "bf16" and dev != "cuda":
        p.error("--precision bf16 is for --device cuda (CPUs here have no bf16 matmul units)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ids = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4, vocab_size=args.vocab)
    cfg = BertConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                     intermediate_size=args.ffn)
    batches = make_batches(4, args.batch, args.seq, ids, device=dev)
    tokens = args.batch * args.seq
    mlm_fraction = float(np.mean([(b["labels"] != -100).float().mean().item() for b in batches]))
    ours, ours_model = robablate_step(cfg, args.compile, dev, args.precision, fused=not args.no_fused)
    hf, hf_model = transformers_step(cfg, args.compile, dev, args.precision, fused=not args.no_fused)
    mm_n = 2048 if dev == "cpu" else 8192
    mm = matmul_probe(mm_n, dev, torch.bfloat16 if args.precision == "bf16" else torch.float32)
    rows = batches[0]["input_ids"].cpu().numpy()

    def masking() -> None:
        mask_tokens(rows, np.arange(args.batch, dtype=np.int64), 1, 0, mask_prob=MASK_PROB, mask_token_frac=0.8,
                    random_token_frac=0.1, ids=ids)

    steps = {"robablate": ours, "transformers": hf}
    for i in range(args.warmup):
        for step in steps.values():
            step(batches[i % len(batches)])
        mm()
    if args.profile:
        profile(steps, batches)

    times: dict[str, list[float]] = {"robablate": [], "transformers": [], "matmul": [], "masking": []}
    for r in range(args.rounds):
        b = batches[r % len(batches)]
        order = list(steps.items()) if r % 2 == 0 else list(steps.items())[::-1]  # A B, B A, ...
        for name, step in order:
            sync(dev)
            t = time.perf_counter()
            step(b)  # returns the loss as a float: a host sync on a GPU
            sync(dev)
            times[name].append(time.perf_counter() - t)
        times["matmul"].append(mm())
        t = time.perf_counter()
        masking()
        times["masking"].append(time.perf_counter() - t)

    med = {k: statistics.median(v) for k, v in times.items()}
    peak = 2 * mm_n**3 / med["matmul"]
    sheet = None
    if dev == "cuda" and args.precision == "bf16":
        from robablate.peak import gpu_peak
        sheet = gpu_peak(torch.device("cuda"), torch.bfloat16)
    flops = {"robablate": flops_per_token(cfg, args.seq, mlm_fraction),
             "transformers": flops_per_token(cfg, args.seq, 1.0)}  # its head runs at every position
    print(f"shape: vocab {args.vocab}, hidden {args.hidden}, {args.layers} layers, {args.heads} heads, FFN {args.ffn}, "
          f"seq {args.seq}, batch {args.batch} ({tokens} tokens/step, {mlm_fraction:.3f} selected), "
          f"{torch.get_num_threads()} torch threads, compile={args.compile}, {args.rounds} interleaved rounds, "
          f"device {dev}{' (' + torch.cuda.get_device_name() + ')' if dev == 'cuda' else ''}, {args.precision}, "
          f"{'for-loop' if args.no_fused else 'fused'} AdamW")
    print(f"matmul peak ({mm_n}^3 {args.precision}, measured): {peak / 1e9:,.1f} GFLOP/s"
          + (f"; datasheet {sheet / 1e12:.0f} TFLOP/s" if sheet else ""))
    for name in steps:
        tps = tokens / med[name]
        spread = f"{min(times[name]) * 1e3:.0f}-{max(times[name]) * 1e3:.0f}"
        print(f"{name:13s} {med[name] * 1e3:8.1f} ms/step (range {spread})  {tps:9,.0f} tokens/s  "
              f"{flops[name] / 1e6:6.1f} MFLOP/token  MFU {flops[name] * tps / peak:6.1%}"
              + (f" (datasheet {flops[name] * tps / sheet:6.1%})" if sheet else ""))
    share = med["masking"] / med["robablate"]
    print(f"masking (mask_tokens, [{args.batch}, {args.seq}]): {med['masking'] * 1e3:.2f} ms = {share:.2%} of a "
          f"robablate training step ({'under' if share < 0.02 else 'NOT under'} 2%)")
    print(f"speedup_vs_transformers: {med['transformers'] / med['robablate']:.2f}")


if __name__ == "__main__":
    main()
