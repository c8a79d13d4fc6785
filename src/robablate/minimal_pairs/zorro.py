"""Zorro zero-shot (Huebner et al., CoNLL 2021): 23 paradigms of minimal pairs in a child-directed
vocabulary, built for small masked LMs such as BabyBERTa. Scored exactly as BLiMP (minimal_pairs/blimp.py):
pseudo-log-likelihood (Salazar et al., ACL 2020), a pair correct when the grammatical sentence scores
strictly higher (a tie is wrong); overall = mean over paradigms, per phenomenon = mean of its
paradigms. Huebner et al. score with a holistic (unmasked) cross-entropy as well; PLL keeps the two
minimal-pair read-outs of a run comparable.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from robablate.minimal_pairs.blimp_reader import MinimalPair
from robablate.minimal_pairs.zorro_reader import read_zorro
from robablate.minimal_pairs import blimp

KEY = "eval.zorro"


def check_config(section: Mapping[str, Any]) -> None:
    """`eval.zorro` has BLiMP's keys (data_dir, max_pairs, batch_tokens) and rules."""
    blimp.check_config(section, KEY)


def check(section: Mapping[str, Any], stage: str = "all") -> list[MinimalPair] | None:
    """Validate `eval.zorro` and read every paradigm file now, before pretraining."""
    check_config(section)
    return None if stage == "finetune" else read_zorro(section["data_dir"], section.get("max_pairs"))


def evaluate(model: Any, tokenizer: Any, section: Mapping[str, Any],
             pairs: Sequence[MinimalPair] | None = None) -> dict[str, Any]:
    """results["zorro"]: overall, by_phenomenon, by_paradigm, n_pairs, max_pairs, method, wall_s."""
    s = dict(section or {})
    pairs = check(s) if pairs is None else pairs
    t = time.perf_counter()
    acc = blimp.accuracies(pairs, blimp.score_pairs(model, tokenizer, pairs, int(s.get("batch_tokens", 8192))))
    return {"overall": acc["overall"], "by_phenomenon": acc["by_term"], "by_paradigm": acc["by_paradigm"],
            "n_pairs": len(pairs), "max_pairs": s.get("max_pairs"), "method": "pll",
            "wall_s": time.perf_counter() - t}


def run(context: Any) -> dict[str, Any]:
    """The registry's entry point (robablate/registry.py)."""
    return evaluate(context.model, context.tokenizer, context.section, context.prepared)
