"""Throughput of robablate's mask_tokens vs Hugging Face's DataCollatorForLanguageModeling.

Same batch for both: [32, 128] random non-special ids from an 8192-token vocab ([PAD] [UNK] [CLS]
[SEP] [MASK] first), mlm_probability 0.15. HF's collator gets the batch as a list of 1-D tensors (its
usual input; its masking step alone, torch_mask_tokens, is timed too) and its BertTokenizerFast is built from a vocab file written to a temp dir. Timings are
interleaved (A, B, A, B, ...) so machine noise hits both alike; medians are reported. The last line
is `speedup_vs_hf_collator: X.XX`.

    python experiments/bench_masking.py [--rounds 300] [--batch 32] [--length 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from transformers import BertTokenizerFast, DataCollatorForLanguageModeling

from robablate.data.masking import mask_tokens
from robablate.data.tokenizer import SPECIAL_TOKENS, SpecialIds

VOCAB = 8192


def hf_collator(folder: str) -> DataCollatorForLanguageModeling:
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w") as f:
        f.write("\n".join(list(SPECIAL_TOKENS) + [f"tok{i}" for i in range(VOCAB - len(SPECIAL_TOKENS))]) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    assert len(tokenizer) == VOCAB and tokenizer.mask_token_id == 4, "vocab file not read as expected"
    return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)  # both sides single-threaded, as in a DataLoader worker

    ids = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4, vocab_size=VOCAB)
    batch = np.random.default_rng(0).integers(len(SPECIAL_TOKENS), VOCAB, size=(args.batch, args.length))
    rows = np.arange(args.batch, dtype=np.int64)
    stacked = torch.from_numpy(batch)
    examples = list(stacked)
    n_tokens = batch.size

    with tempfile.TemporaryDirectory() as folder:
        collator = hf_collator(folder)

        def ours(step: int) -> None:
            mask_tokens(batch, rows, step, 0, mask_prob=0.15, ids=ids)

        def hf(step: int) -> None:
            collator(examples)

        def hf_mask_only(step: int) -> None:  # its masking step alone, on the stacked tensor
            collator.torch_mask_tokens(stacked.clone())

        contenders = {
            "robablate.mask_tokens": ours,
            "hf DataCollatorForLanguageModeling": hf,
            "hf .torch_mask_tokens only": hf_mask_only,
        }
        for step in range(20):  # warm-up (caches, lazy imports)
            for fn in contenders.values():
                fn(step)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for step in range(args.rounds):
            for name, fn in contenders.items():
                start = time.perf_counter()
                fn(step)
                times[name].append(time.perf_counter() - start)
        # For context only: back to back, with numpy's code paths warm in the CPU caches (interleaved
        # with HF's ~1 ms of Python they are evicted each round, which costs a small call the most).
        alone = []
        for step in range(args.rounds):
            start = time.perf_counter()
            ours(step)
            alone.append(time.perf_counter() - start)

    print(f"batch [{args.batch}, {args.length}] = {n_tokens} tokens, vocab {VOCAB}, {args.rounds} interleaved rounds")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:36s} {median * 1e3:8.3f} ms/batch  {n_tokens / median:14,.0f} tokens/s")
    print(f"(mask_tokens back to back, not interleaved: {statistics.median(alone) * 1e3:.3f} ms/batch)")
    print(f"speedup vs torch_mask_tokens only: {medians['hf .torch_mask_tokens only'] / medians['robablate.mask_tokens']:.2f}")
    speedup = medians["hf DataCollatorForLanguageModeling"] / medians["robablate.mask_tokens"]
    print(f"speedup_vs_hf_collator: {speedup:.2f}")


if __name__ == "__main__":
    main()
