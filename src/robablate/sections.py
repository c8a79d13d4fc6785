"""How each read-out's results.json section reads back: end-of-run summary lines, the one-line sweep
summary, the W&B summary and the report's tidy rows. Pure functions of the results dict (no torch),
named by the entries of robablate/registry.py; the summary, loggers and report only iterate those."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from robablate.glue.tasks import TASKS

Results = Mapping[str, Any]
# A tidy row: (task, fine-tuning seed or None, metric, value, (group rank, group name)).
Row = tuple[str, "int | None", str, float, tuple[int, str]]

PRETRAIN_TASK = "pretrain"
PRETRAIN_METRICS = ("val_mlm_loss", "val_mlm_ppl", "val_mlm_acc", "val_nsp_acc", "tokens_per_s")
OVERALL = (0, "overall")


def format_tokens(n: float) -> str:
    """1234 -> "1.2k", 2_000_000 -> "2.0M" (a progress line, not a table)."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{int(n)}"


def num(x: Any, fmt: str = ".4f") -> str:
    return "n/a" if x is None else format(float(x), fmt)


def value(v: Any) -> float | None:
    """A tidy value: a finite-or-inf float, None for missing, NaN and booleans."""
    if v is None or isinstance(v, bool):
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _rows(items: Iterable[tuple[str, Any, str, Any, tuple[int, str]]]) -> list[Row]:
    return [(t, s, m, v, g) for t, s, m, raw, g in items if (v := value(raw)) is not None]


# --------------------------------------------------------------------------- validation MLM (pretraining)

def mlm_lines(results: Results) -> list[str]:
    p = results.get("pretrain") or {}
    if not p:
        return []
    nsp = f", NSP acc {num(p['val_nsp_acc'])}" if p.get("val_nsp_acc") is not None else ""
    lines = [f"  validation    MLM loss {num(p.get('val_mlm_loss'))} (perplexity "
             f"{num(p.get('val_mlm_ppl'), '.2f')}), MLM acc {num(p.get('val_mlm_acc'))}{nsp}"]
    if results.get("init") == "random":  # the control arm: nothing was trained
        return lines + ["  pretraining   none: random-initialisation control (model.init=random)"]
    lines.append(f"  pretraining   {p.get('steps')}/{p.get('planned_steps')} steps, "
                 f"{format_tokens(p.get('tokens_seen') or 0)} tokens seen, train loss {num(p.get('train_loss'))}")
    c = p.get("collapse") or {}
    if c.get("unigram_loss") is not None:
        lines.append(f"  baselines     unigram MLM loss {num(c['unigram_loss'])}, one-token MLM acc "
                     f"{num(c.get('unigram_acc'))}: " + (f"COLLAPSED ({c['why']}): this run has not "
                     "tested its arm" if c.get("collapsed") else f"OVERFIT ({c['overfit']})" if c.get("overfit")
                     else "beaten"))
    return lines


def mlm_part(results: Results) -> list[str]:
    return [f"MLM loss {num((results.get('pretrain') or {}).get('val_mlm_loss'))}"]


def mlm_wandb(results: Results) -> dict[str, Any]:
    return {f"pretrain/{k}": v for k, v in (results.get("pretrain") or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def mlm_rows(results: Results) -> list[Row]:
    pre = results.get("pretrain") or {}
    return _rows((PRETRAIN_TASK, None, m, pre.get(m), OVERALL) for m in PRETRAIN_METRICS)


# --------------------------------------------------------------------------- zero-shot minimal pairs

def pairs_lines(results: Results, name: str, label: str, what: str) -> list[str]:
    s = results.get(name) or {}
    if s.get("overall") is None:
        return []
    return [f"  {label:<13} {num(s['overall'])} ({what}; {s.get('n_pairs')} pairs)"]


def pairs_part(results: Results, name: str, label: str) -> list[str]:
    s = results.get(name) or {}
    return [] if s.get("overall") is None else [f"{label} {num(s['overall'])}"]


def pairs_wandb(results: Results, name: str, groups: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Overall and each of `groups` (BLiMP logs its 12 phenomena, the linguistics terms)."""
    s = results.get(name) or {}
    out = {f"{name}/overall": s["overall"]} if s.get("overall") is not None else {}
    for key, label in groups:
        out.update({f"{name}/{label}/{g}": acc for g, acc in (s.get(key) or {}).items()})
    return out


def pairs_rows(results: Results, name: str, label: str, metric: str, groups: tuple[tuple[str, str], ...]) -> list[Row]:
    """Overall, then one row per member of each group (`<label> <group>: <member>`)."""
    s = results.get(name) or {}
    rows = [(label, None, metric, s.get("overall"), OVERALL)]
    for i, (key, group) in enumerate(groups, start=1):
        rows += [(f"{label} {group}: {g}", None, metric, acc, (i, group)) for g, acc in sorted((s.get(key) or {}).items())]
    return _rows(rows)


# --------------------------------------------------------------------------- GLUE fine-tuning

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


def glue_task_name(convention: str, tasks: Iterable[str]) -> str:
    """Pseudo-task name of a GLUE score; it names the convention and the tasks so that scores over
    different task sets never land in one row (GLUE §4 vs BERT Table 1: say which GLUE score it is; docs/facts.md §3)."""
    return f"GLUE ({convention} convention, tasks: {', '.join(tasks)})"


def glue_lines(results: Results) -> list[str]:
    glue = results.get("glue") or {}
    tasks = glue.get("tasks") or {}
    if not tasks:
        return []
    lines = [f"  fine-tuning   median over {glue.get('seeds')} seed(s) per task (dev sets):"]
    for name, t in tasks.items():
        med = t.get("median_metrics") or {}
        metrics = " / ".join(f"{m} {num(v)}" for m, v in med.items())
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
        lines.append(f"  {label:<13} {num(block['value'])} ({convention}{part})")
    syn = score.get("synthetic") or {}
    if syn.get("value") is not None:
        lines.append(f"  synthetic     {num(syn['value'])} (mean of the synthetic tasks' scores; not a GLUE score)")
    return lines


def glue_part(results: Results) -> list[str]:
    score = (results.get("glue") or {}).get("score") or {}
    return [f"{label} {num(score[key]['value'])}" for key, label in (("glue", "GLUE"), ("synthetic", "synthetic"))
            if (score.get(key) or {}).get("value") is not None]


def glue_wandb(results: Results) -> dict[str, Any]:
    glue = results.get("glue") or {}
    out = {f"glue/{task}": med for task, t in (glue.get("tasks") or {}).items()
           if (med := (t.get("summary") or {}).get("median")) is not None}
    return {**out, **{f"glue/score_{conv}": sc["value"] for conv, sc in (glue.get("score") or {}).items()
                      if isinstance(sc, dict) and sc.get("value") is not None}}


def glue_rows(results: Results) -> list[Row]:
    """Every metric and the task score per fine-tuning seed (group `task`), then the run's own GLUE
    score per convention (group = the convention: one value per run, so its unit of replication is
    the pretraining seed)."""
    glue = results.get("glue") or {}  # null/absent: glue=none (pretraining-only run)
    rows: list = []
    for task, t in (glue.get("tasks") or {}).items():
        for s in t.get("seeds") or []:
            ft = int(s["seed"])
            rows += [(task, ft, m, v, (0, "task")) for m, v in (s.get("metrics") or {}).items() if m != "score"]
            rows.append((task, ft, "score", s.get("score"), (0, "task")))
    for conv, sc in (glue.get("score") or {}).items():
        if isinstance(sc, dict) and sc.get("value") is not None:
            rows.append((glue_task_name(conv, sc.get("tasks") or sc.get("entries") or []), None, "score", sc["value"],
                         (1, conv)))  # the group names the convention (glue, bert, synthetic)
    return _rows(rows)
