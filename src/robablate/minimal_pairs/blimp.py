"""BLiMP zero-shot: minimal pairs scored by pseudo-log-likelihood (PLL).

PLL (Salazar et al., "Masked Language Model Scoring", ACL 2020, §2): mask each token of a sentence in
turn (never the special tokens [CLS]/[SEP]) and sum log p(original token | the rest). A pair is
correct when PLL(good) > PLL(bad); an exact tie counts as wrong, so a model that gives every sentence
the same score gets 0, not 100% (BabyLM 2025 found a pipeline where ties counted as right).
Accuracies: per paradigm (UID), then the mean over paradigms (overall, as the BLiMP paper reports),
per linguistics_term (the paper's 12 phenomena) and per field, each the mean of its paradigms.

Speed: one forward pass per masked copy is unavoidable, so the work is in not wasting any.
Sentences are grouped by token length and the masked copies of many sentences of one length are run
together (no padding, so no attention mask, SDPA's fast kernel), in inference mode, and the MLM head
(the [N, vocab] matmul, the largest of a small BERT) runs only on the masked position of each copy.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from robablate.minimal_pairs.blimp_reader import MinimalPair, read_blimp
from robablate.errors import ConfigError, int_at_least

CONFIG_KEYS = {"data_dir": "a folder of <paradigm>.jsonl files",
               "max_pairs": "null or a positive integer (pairs read per paradigm)",
               "batch_tokens": "a positive integer (tokens per forward pass)"}

# (hidden states of [B, L] ids -> [B, L, H], MLM head on [N, H] -> [N, V]); `None` head = the
# function already returns [B, L, V] logits (a masked LM we cannot split).
Encoder = Callable[[torch.Tensor], torch.Tensor]


def _split_model(model: Any) -> tuple[Encoder, Callable[[torch.Tensor], torch.Tensor] | None]:
    """The model's encoder and MLM head as two functions, so the head runs on masked positions only."""
    if hasattr(model, "encoder") and hasattr(model, "mlm_head"):  # robablate BertForPretraining
        return (lambda ids: model.encoder(ids, None, None)[0]), model.mlm_head
    bert, cls = getattr(model, "bert", None), getattr(model, "cls", None)
    if bert is not None and cls is not None:  # transformers BertForMaskedLM / BertForPreTraining
        head = getattr(cls, "predictions", cls)
        return (lambda ids: bert(input_ids=ids).last_hidden_state), head
    return (lambda ids: model(input_ids=ids).logits), None  # any other masked LM: full logits


def encode(tokenizer: Any, sentences: Sequence[str]) -> list[list[int]]:
    """Token ids with the tokenizer's special tokens ([CLS] ... [SEP])."""
    return tokenizer(list(sentences), add_special_tokens=True)["input_ids"]


def _maskable(ids: list[int], special: set[int]) -> list[int]:
    return [i for i, t in enumerate(ids) if t not in special]


@torch.inference_mode()
def pll(model: Any, tokenizer: Any, sentences: Sequence[str], batch_tokens: int = 8192) -> np.ndarray:
    """Pseudo-log-likelihood of each sentence (float64, natural log), in input order.

    `model`: robablate's BertForPretraining or a transformers masked LM; put in eval mode for the call.
    A sentence with no maskable token scores 0. Repeated sentences are scored once.
    """
    uniq = list(dict.fromkeys(sentences))
    if len(uniq) < len(sentences):
        where = {t: k for k, t in enumerate(uniq)}
        return pll(model, tokenizer, uniq, batch_tokens)[[where[t] for t in sentences]]
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ConfigError("blimp: the tokenizer has no mask token; PLL scoring needs a masked LM tokenizer")
    special = set(tokenizer.all_special_ids)
    ids = encode(tokenizer, sentences)
    param = next(model.parameters())
    device = param.device
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    hidden_fn, head = _split_model(model)
    was_training = model.training
    model.eval()
    scores = np.zeros(len(ids), dtype=np.float64)
    by_len: dict[int, list[int]] = defaultdict(list)
    for s, seq in enumerate(ids):
        by_len[len(seq)].append(s)
    try:
        for L in sorted(by_len):
            if max_pos is not None and L > max_pos:
                raise ConfigError(f"blimp: a sentence has {L} tokens, more than the model's "
                                  f"max_position_embeddings ({max_pos})")
            # One row per (sentence, maskable position), for every sentence of this length.
            rows_sent, rows_pos = [], []
            for s in by_len[L]:
                pos = _maskable(ids[s], special)
                rows_sent += [s] * len(pos)
                rows_pos += pos
            if not rows_sent:
                continue
            group = torch.tensor([ids[s] for s in by_len[L]], dtype=torch.long)
            local = {s: k for k, s in enumerate(by_len[L])}
            sent = torch.tensor(rows_sent, dtype=torch.long)
            row_src = torch.tensor([local[s] for s in rows_sent], dtype=torch.long)
            pos = torch.tensor(rows_pos, dtype=torch.long)
            per_batch = max(1, batch_tokens // L)
            for a in range(0, len(rows_sent), per_batch):
                b = min(a + per_batch, len(rows_sent))
                x = group[row_src[a:b]].clone()
                r = torch.arange(b - a)
                target = x[r, pos[a:b]].clone()
                x[r, pos[a:b]] = mask_id
                x = x.to(device)
                h = hidden_fn(x)
                if head is not None:
                    logits = head(h[r.to(device), pos[a:b].to(device)])  # [N, V]: masked positions only
                else:
                    logits = h[r.to(device), pos[a:b].to(device)]
                logp = torch.log_softmax(logits.float(), dim=-1).gather(1, target.to(device)[:, None])[:, 0]
                np.add.at(scores, sent[a:b].numpy(), logp.double().cpu().numpy())
    finally:
        model.train(was_training)
    return scores


def pair_correct(good: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Correct iff PLL(good) > PLL(bad), strictly: a tie is wrong."""
    return np.asarray(good) > np.asarray(bad)


def accuracies(pairs: Sequence[MinimalPair], correct: Sequence[bool]) -> dict[str, Any]:
    """Per paradigm, then overall / per term / per field as means over paradigms (BLiMP paper §4)."""
    hits: dict[str, list[bool]] = defaultdict(list)
    meta: dict[str, MinimalPair] = {}
    for p, c in zip(pairs, correct):
        hits[p.uid].append(bool(c))
        meta.setdefault(p.uid, p)
    by_paradigm = {uid: float(np.mean(h)) for uid, h in sorted(hits.items())}

    def group(key: Callable[[MinimalPair], str]) -> dict[str, float]:
        g: dict[str, list[float]] = defaultdict(list)
        for uid, acc in by_paradigm.items():
            g[key(meta[uid])].append(acc)
        return {k: float(np.mean(v)) for k, v in sorted(g.items())}

    return {"overall": float(np.mean(list(by_paradigm.values()))) if by_paradigm else float("nan"),
            "by_term": group(lambda p: p.term), "by_field": group(lambda p: p.field),
            "by_paradigm": by_paradigm}


def score_pairs(model: Any, tokenizer: Any, pairs: Sequence[MinimalPair], batch_tokens: int = 8192) -> np.ndarray:
    """Boolean array: pair i correct. Good and bad sentences are scored in one pass (shared batches)."""
    s = pll(model, tokenizer, [p.good for p in pairs] + [p.bad for p in pairs], batch_tokens)
    return pair_correct(s[: len(pairs)], s[len(pairs):])


def check_config(section: Mapping[str, Any], key: str = "eval.blimp") -> None:
    """Validate a minimal-pairs section (`eval.blimp`, `eval.zorro`: the same keys) before anything runs."""
    s = dict(section or {})
    unknown = sorted(set(s) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"Invalid config `{key}.{unknown[0]}`: unknown key; expected "
                          + ", ".join(f"{k} ({v})" for k, v in CONFIG_KEYS.items()) + ".")
    if not isinstance(s.get("data_dir"), str) or not s["data_dir"]:
        raise ConfigError(f"Invalid config `{key}.data_dir`: expected {CONFIG_KEYS['data_dir']}, "
                          f"got {s.get('data_dir')!r}.")
    int_at_least(s.get("max_pairs"), f"{key}.max_pairs", null=True, why="pairs read per paradigm")
    int_at_least(s.get("batch_tokens", 8192), f"{key}.batch_tokens", why="tokens per forward pass")


def check(section: Mapping[str, Any], stage: str = "all") -> list[MinimalPair] | None:
    """Validate `eval.blimp` and read every file now (before pretraining); returns the pairs (None
    with stage=finetune, which runs no zero-shot read-out)."""
    check_config(section)
    return None if stage == "finetune" else read_blimp(section["data_dir"], section.get("max_pairs"))


def run(context: Any) -> dict[str, Any]:
    """The registry's entry point: results["blimp"] for the run's model (robablate/registry.py)."""
    return evaluate(context.model, context.tokenizer, context.section, context.prepared)


def evaluate(model: Any, tokenizer: Any, section: Mapping[str, Any],
             pairs: Sequence[MinimalPair] | None = None) -> dict[str, Any]:
    """results["blimp"]: overall, by_term, by_field, by_paradigm, n_pairs, max_pairs, method, wall_s."""
    s = dict(section or {})
    if pairs is None:
        pairs = check(s)
    t = time.perf_counter()
    correct = score_pairs(model, tokenizer, pairs, int(s.get("batch_tokens", 8192)))
    out = accuracies(pairs, correct)
    return {**out, "n_pairs": len(pairs), "max_pairs": s.get("max_pairs"), "method": "pll",
            "wall_s": time.perf_counter() - t}
