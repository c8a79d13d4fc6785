"""Benchmark: BLiMP pseudo-log-likelihood scoring, fast scorer vs. a straightforward transformers loop.

    nice -n 10 .venv/bin/python experiments/bench_pll.py --hf RUN/pretrain/hf [--model tiny|mini]

`--hf` is an exported robablate run (its tokenizer, and its weights unless `--model` asks for a fresh
random-init model of that architecture with the same tokenizer: speed does not depend on the weights).
Both scorers score the same model:
- naive: transformers BertForMaskedLM loaded from the exported folder; per sentence, its masked copies
  in one batch, full [copies, L, vocab] logits and log_softmax, the masked entries picked out (the
  headline `speedup_vs_naive_pll`); also one forward pass per masked copy (`speedup_vs_one_copy_per_pass`);
- fast: robablate.minimal_pairs.blimp.pll on the native model (same-length sentences' copies batched
  together, MLM head only at the masked positions, inference mode).
The ratio is measured interleaved on a subset of pairs (naive is slow), then the fast scorer is timed
on the whole folder (the 6,700-pair shared subset). Prints `speedup_vs_naive_pll:` and the PLL
agreement of the two (max |difference|, nats).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from robablate import threads

_choice = threads.configure()  # before torch loads OpenMP: PASSIVE when other processes want the cores

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def naive_pll(hf_model, tokenizer, sentences: list[str], one_copy: bool = False) -> np.ndarray:
    """Per sentence: its masked copies in one batch (one_copy: one forward pass per copy), full
    [copies, L, vocab] logits and log_softmax, the masked entries picked out."""
    out = np.zeros(len(sentences))
    special = set(tokenizer.all_special_ids)
    with torch.no_grad():
        for k, s in enumerate(sentences):
            ids = torch.tensor(tokenizer(s)["input_ids"])
            pos = [i for i, t in enumerate(ids.tolist()) if t not in special]
            x = ids.repeat(len(pos), 1)
            x[torch.arange(len(pos)), pos] = tokenizer.mask_token_id
            chunks = [x[i:i + 1] for i in range(len(pos))] if one_copy else [x]
            logp = torch.cat([torch.log_softmax(hf_model(input_ids=c).logits, dim=-1) for c in chunks])
            out[k] = float(logp[torch.arange(len(pos)), pos, ids[pos]].sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", required=True, help="exported robablate run folder (RUN/pretrain/hf)")
    ap.add_argument("--model", choices=["micro", "tiny", "mini", "small", "base"], default=None,
                    help="score a random-init model of this architecture (conf/model/<name>.yaml) instead")
    ap.add_argument("--data", default=os.environ.get("ROBABLATE_SHARED_DATA", str(ROOT.parent / "shared" / "data")) + "/blimp")
    ap.add_argument("--ratio-pairs", type=int, default=2, help="pairs per paradigm for the interleaved ratio")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved naive/fast rounds")
    ap.add_argument("--max-pairs", type=int, default=None, help="pairs per paradigm for the full timing")
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--skip-full", action="store_true")
    args = ap.parse_args()

    from omegaconf import OmegaConf
    from transformers import AutoTokenizer, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    from robablate.minimal_pairs.blimp_reader import read_blimp
    from robablate.models.bert import BertConfig, BertForPretraining
    from robablate.models.hf_export import load_native_from_hf, save_hf
    from robablate.minimal_pairs.blimp import pll, score_pairs

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(args.hf)
    if args.model:
        torch.manual_seed(0)
        cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{args.model}.yaml")
        native = BertForPretraining(BertConfig.from_cfg(cfg, vocab_size=len(tok), pad_token_id=tok.pad_token_id), nsp=False)
        hf_dir = save_hf(native, Path(tempfile.mkdtemp(prefix="bench_pll-")) / "hf", tokenizer=tok)
    else:
        native, hf_dir = load_native_from_hf(args.hf), Path(args.hf)
    native.eval()
    hf = BertForMaskedLM.from_pretrained(hf_dir).eval()
    c = native.config
    print(f"model: L={c.num_layers} H={c.hidden_size} vocab={c.vocab_size} ({args.model or args.hf}); "
          f"threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; load average {os.getloadavg()[0]:.1f}")

    sub = read_blimp(args.data, args.ratio_pairs)
    sents = [p.good for p in sub] + [p.bad for p in sub]
    t_naive, t_copy, t_fast, diffs = [], [], [], []
    for r in range(args.rounds):  # interleaved, so load changes hit all three
        t = time.perf_counter()
        a = naive_pll(hf, tok, sents)
        t_naive.append(time.perf_counter() - t)
        t = time.perf_counter()
        c = naive_pll(hf, tok, sents, one_copy=True)
        t_copy.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = pll(native, tok, sents, args.batch_tokens)
        t_fast.append(time.perf_counter() - t)
        diffs.append(float(max(np.abs(a - b).max(), np.abs(c - b).max())))
        print(f"round {r}: naive (a sentence's copies per batch) {t_naive[-1]:.2f} s, naive (one copy per "
              f"pass) {t_copy[-1]:.2f} s, fast {t_fast[-1]:.2f} s ({len(sub)} pairs)", flush=True)
    print(f"pll_max_abs_diff_nats: {max(diffs):.2e}")
    # The stronger baseline (a sentence's copies batched) is the headline ratio.
    print(f"speedup_vs_naive_pll: {sum(t_naive) / sum(t_fast):.2f}")
    print(f"speedup_vs_one_copy_per_pass: {sum(t_copy) / sum(t_fast):.2f}")
    if not args.skip_full:
        pairs = read_blimp(args.data, args.max_pairs)
        t, cpu = time.perf_counter(), time.process_time()
        correct = score_pairs(native, tok, pairs, args.batch_tokens)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        # CPU seconds of this process: on a shared machine the wall time includes waiting for cores;
        # cpu / threads is what the wall time would be with the cores to ourselves (perfect scaling).
        print(f"fast_full_s: {wall:.1f} ({len(pairs)} pairs, {len(pairs) / wall:.0f} pairs/s, "
              f"accuracy {correct.mean():.3f}; load average {os.getloadavg()[0]:.1f})")
        print(f"fast_full_cpu_s: {cpu:.1f} (/ {torch.get_num_threads()} threads = {cpu / torch.get_num_threads():.1f} s)")


if __name__ == "__main__":
    main()
