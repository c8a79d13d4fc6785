"""What a finished run says about itself: a short block at the end of every run (one line per job in a
`-m` sweep), read from the results dict that results.json holds, so it can never disagree with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robablate.data.glue import TASKS
from robablate.progress import format_tokens

# Timings keys that are not stages of their own.
_NOT_STAGES = ("total_s",)
_STAGE_NAMES = {"corpus_s": "corpus", "tokenizer_s": "tokenizer", "token_cache_s": "token cache",
                "instances_s": "instances", "pretrain_s": "pretraining", "finetune_s": "fine-tuning",
                "tune_s": "LR tuning", "blimp_s": "BLiMP"}


def _num(x: Any, fmt: str = ".4f") -> str:
    return "n/a" if x is None else format(float(x), fmt)


def _axes(results: dict[str, Any]) -> str:
    axes = results.get("axes") or {}
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in axes.items())


# What a model that learned nothing scores, per metric: a uniform guess over k classes for accuracy,
# 0 for correlations (Matthews, Pearson, Spearman); F1 depends on the class balance (none given).
_CHANCE_ZERO = {"mcc", "matthews", "pearson", "spearman"}


def chance_level(task: str, metric: str) -> float | None:
    spec = TASKS.get(task)
    if metric in _CHANCE_ZERO:
        return 0.0
    if metric.startswith("acc") and spec is not None and spec.labels:
        return 1.0 / len(spec.labels)
    return None


def _chance(task: str, metrics) -> str:
    levels = [(m, c) for m in metrics if (c := chance_level(task, m)) is not None]
    return f"  (chance: {', '.join(f'{m} {c:.3f}' for m, c in levels)})" if levels else ""


def _glue_lines(glue: dict[str, Any]) -> list[str]:
    tasks = glue.get("tasks") or {}
    if not tasks:
        return []
    lines = [f"  fine-tuning   median over {glue.get('seeds')} seed(s) per task (dev sets):"]
    for name, t in tasks.items():
        med = t.get("median_metrics") or {}
        metrics = " / ".join(f"{m} {_num(v)}" for m, v in med.items())
        lines.append(f"    {name:<10} {metrics}{_chance(name, med)}")
    score = glue.get("score") or {}
    # (results key, label, convention, the list of what it averages, how many a complete score has)
    conventions = (("glue", "GLUE score", "GLUE benchmark convention: macro-average of task scores", "tasks", 9),
                   ("bert", "BERT-table", "BERT paper convention: mean of one metric per task, no WNLI",
                    "entries", 8))
    for key, label, convention, parts, total in conventions:
        block = score.get(key) or {}
        if block.get("value") is None:
            continue
        have = block.get(parts) or []
        part = "" if block.get("complete") else f", {len(have)} of {total} {parts}"
        part += f": {', '.join(have)}" if part and key == "glue" else ""
        lines.append(f"  {label:<13} {_num(block['value'])} ({convention}{part})")
    syn = score.get("synthetic") or {}
    if syn.get("value") is not None:
        lines.append(f"  synthetic     {_num(syn['value'])} (mean of the synthetic tasks' scores; not a GLUE score)")
    return lines


def format_summary(results: dict[str, Any]) -> str:
    """The end-of-run block: validation MLM loss and perplexity, each read-out (GLUE medians with the
    metric names, the GLUE score and its convention, BLiMP when measured), tokens seen, wall time per
    stage and where the files are."""
    run_dir = Path(results.get("run_dir", "."))
    p = results.get("pretrain") or {}
    lines = [f"[robablate] {results.get('status', '?')}: {results.get('experiment')} · {_axes(results)} "
             f"· seed {results.get('seed')}"]
    if p:
        nsp = f", NSP acc {_num(p['val_nsp_acc'])}" if p.get("val_nsp_acc") is not None else ""
        lines.append(f"  validation    MLM loss {_num(p.get('val_mlm_loss'))} (perplexity "
                     f"{_num(p.get('val_mlm_ppl'), '.2f')}), MLM acc {_num(p.get('val_mlm_acc'))}{nsp}")
        if results.get("init") == "random":  # the control arm: nothing was trained
            lines.append("  pretraining   none: random-initialisation control (model.init=random)")
        else:
            lines.append(f"  pretraining   {p.get('steps')}/{p.get('planned_steps')} steps, "
                         f"{format_tokens(p.get('tokens_seen') or 0)} tokens seen, train loss {_num(p.get('train_loss'))}")
            c = p.get("collapse") or {}
            if c.get("unigram_loss") is not None:
                lines.append(f"  baselines     unigram MLM loss {_num(c['unigram_loss'])}, one-token MLM acc "
                             f"{_num(c.get('unigram_acc'))}: " + (f"COLLAPSED ({c['why']}): this run has not "
                             "tested its arm" if c.get("collapsed") else "beaten"))
    lines += _glue_lines(results.get("glue") or {})
    blimp = results.get("blimp") or {}
    if blimp.get("overall") is not None:
        lines.append(f"  BLiMP         {_num(blimp['overall'])} (accuracy, mean over paradigms; "
                     f"{blimp.get('n_pairs')} pairs)")
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
    p = results.get("pretrain") or {}
    parts = [f"MLM loss {_num(p.get('val_mlm_loss'))}"]
    score = (results.get("glue") or {}).get("score") or {}
    for key, label in (("glue", "GLUE"), ("synthetic", "synthetic")):
        if (score.get(key) or {}).get("value") is not None:
            parts.append(f"{label} {_num(score[key]['value'])}")
    if (results.get("blimp") or {}).get("overall") is not None:
        parts.append(f"BLiMP {_num(results['blimp']['overall'])}")
    total = (results.get("timings") or {}).get("total_s")
    if total is not None:
        parts.append(f"{total:.0f} s")
    return (f"[robablate] done {_axes(results)} seed={results.get('seed')}: {' · '.join(parts)} · "
            f"{Path(results.get('run_dir', '.')) / 'results.json'}")
