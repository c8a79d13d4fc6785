"""What a finished run says about itself: a short block at the end of every run (one line per job in a
`-m` sweep), read from the results dict that results.json holds, so it can never disagree with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robablate.registry import READOUTS, zero_shot
from robablate.sections import chance_level  # noqa: F401 - the summary's public helper (tests, notebooks)

# Timings keys that are not stages of their own.
_NOT_STAGES = ("total_s",)
_STAGE_NAMES = {"corpus_s": "corpus", "tokenizer_s": "tokenizer", "token_cache_s": "token cache",
                "instances_s": "instances", "pretrain_s": "pretraining", "finetune_s": "fine-tuning",
                "tune_s": "LR tuning", **{r.timing: r.label for r in zero_shot() if r.timing}}


def _axes(results: dict[str, Any]) -> str:
    axes = results.get("axes") or {}
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in axes.items())


def format_summary(results: dict[str, Any]) -> str:
    """The end-of-run block: validation MLM loss and perplexity, each read-out (GLUE medians with the
    metric names, the GLUE score and its convention, BLiMP when measured), tokens seen, wall time per
    stage and where the files are."""
    run_dir = Path(results.get("run_dir", "."))
    lines = [f"[robablate] {results.get('status', '?')}: {results.get('experiment')} · {_axes(results)} "
             f"· seed {results.get('seed')}"]
    for readout in READOUTS.values():  # validation MLM, each zero-shot read-out, GLUE (robablate/registry.py)
        lines += readout.lines(results)
    timings = results.get("timings") or {}
    stages = [f"{_STAGE_NAMES.get(k, k.removesuffix('_s'))} {v:.1f} s" for k, v in timings.items()
              if k.endswith("_s") and k not in _NOT_STAGES and isinstance(v, (int, float))]
    if stages:
        total = f" (total {timings['total_s']:.1f} s)" if "total_s" in timings else ""
        lines.append(f"  wall time     {' · '.join(stages)}{total}")
    files = [f"{run_dir / 'results.json'}"]
    for rel in ("pretrain/metrics.csv", "pretrain/hf", "glue"):
        if (run_dir / rel).exists():
            files.append(rel)
    lines.append(f"  files         {files[0]}" + "".join(f"\n                {run_dir / f}" for f in files[1:]))
    return "\n".join(lines)


def summary_line(results: dict[str, Any]) -> str:
    """One line per finished job of a sweep: the arm, its validation MLM loss, its read-outs, where."""
    parts = [part for readout in READOUTS.values() for part in readout.part(results)]
    total = (results.get("timings") or {}).get("total_s")
    if total is not None:
        parts.append(f"{total:.0f} s")
    return (f"[robablate] done {_axes(results)} seed={results.get('seed')}: {' · '.join(parts)} · "
            f"{Path(results.get('run_dir', '.')) / 'results.json'}")
