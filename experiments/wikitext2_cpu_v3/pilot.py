"""The pilot of the WikiText-2 study v3 (README.md here): how many optimizer steps the largest batch of
the batch comparison needs to leave the unigram solution, the rule that turns it into the batch rungs,
and each read-out's spread over pretraining seeds.

Reads the pilot sweep (conf/experiment/wikitext2_cpu_v3_pilot.yaml: 32 sequences = 4096 tokens per step,
its tuned LR, 1M tokens, a validation every 8 steps, 3 seeds). A run has left the unigram solution at
the first validation point whose MLM accuracy exceeds the one-token predictor's by robablate.collapse's
ACC_MARGIN and whose loss is below the unigram predictor's (the collapse rule, applied to the history;
the baselines are the run's pretrain.collapse record). Rule: a rung of the batch comparison is valid
when the largest batch gets at least RULE_FACTOR x the slowest seed's steps (twice: a margin for seeds
and rungs the pilot did not see, and so that most of the run is spent past the plateau).

    python experiments/wikitext2_cpu_v3/pilot.py outputs/wikitext2_cpu_v3/pilot            # the report
    python experiments/wikitext2_cpu_v3/pilot.py outputs/wikitext2_cpu_v3/pilot --check 2000000 4000000
        # exit 1 unless every given budget (tokens) gives the largest batch enough steps
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from robablate.collapse import ACC_MARGIN
from robablate.report.stats import mde_paired

RULE_FACTOR = 2
READOUTS = (("val MLM loss", ("pretrain", "val_mlm_loss")), ("BLiMP overall", ("blimp", "overall")))


def load(folder: Path) -> list[dict]:
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("**/results.json"))]
    return [r for r in runs if r.get("status") == "complete" and r.get("init", "pretrained") != "random"]


def left_at(run: dict) -> int | None:
    """The optimizer step of the first validation point past the unigram solution; None if none is."""
    pre = run["pretrain"]
    base = pre.get("collapse") or {}
    acc0, loss0 = base.get("unigram_acc"), base.get("unigram_loss")
    if acc0 is None or loss0 is None:
        raise SystemExit(f"{run.get('run_dir')}: no pretrain.collapse baselines (run with a newer robablate)")
    for h in pre.get("history") or []:
        if h.get("val_mlm_acc", 0.0) > acc0 + ACC_MARGIN and h.get("val_mlm_loss", math.inf) < loss0:
            return int(h["step"])
    return None


def needed_steps(runs: list[dict]) -> tuple[int | None, dict[int, int | None]]:
    """(RULE_FACTOR x the slowest seed's steps, or None when a seed never left; steps per seed)."""
    per_seed = {int(r["seed"]): left_at(r) for r in runs}
    if not per_seed or any(v is None for v in per_seed.values()):
        return None, per_seed
    return RULE_FACTOR * max(per_seed.values()), per_seed


def tokens_per_step(runs: list[dict]) -> float:
    """The largest batch's nominal tokens per step (sequences x length): steps = ceil(budget / this)."""
    plan = runs[0]["plan"]
    return float(plan["global_batch"] * plan["phases"][0]["max_len"])


def report(pilot: Path) -> str:
    runs = load(pilot)
    if len(runs) < 2:
        raise SystemExit(f"{pilot}: need >= 2 complete pilot runs, found {len(runs)}")
    need, per_seed = needed_steps(runs)
    tps = tokens_per_step(runs)
    lines = [f"Pilot: {len(runs)} runs of the largest batch ({tps:.0f} tokens per step, LR "
             f"{runs[0]['plan']['lr']:g}), {runs[0]['pretrain']['steps']} steps each.", "",
             "| seed | step past the unigram solution |", "|---|---:|"]
    lines += [f"| {s} | {v if v is not None else 'never'} |" for s, v in sorted(per_seed.items())]
    if need is None:
        lines += ["", "A seed never left the unigram solution: lengthen the pilot before choosing batch rungs."]
    else:
        lines += ["", f"Rule: the largest batch needs >= {RULE_FACTOR} x {need // RULE_FACTOR} = **{need} optimizer "
                      f"steps**, i.e. >= {need * tps / 1e6:.3g}M tokens at {tps:.0f} tokens per step."]
    lines += ["", "| read-out | mean ± SD over seeds | MDE, paired, 3 seeds | MDE, 5 seeds |", "|---|---:|---:|---:|"]
    for label, (a, b) in READOUTS:
        v = np.array([float(r[a][b]) for r in runs])
        sd_diff = float(v.std(ddof=1)) * math.sqrt(2)  # paired difference of two such runs, uncorrelated
        lines.append(f"| {label} | {v.mean():.4f} ± {v.std(ddof=1):.4f} | {mde_paired(sd_diff, 3):.4f} | "
                     f"{mde_paired(sd_diff, 5):.4f} |")
    return "\n".join(lines) + "\n"


def check(pilot: Path, budgets: list[float]) -> list[str]:
    """Problems with the batch rungs `budgets` under the rule (empty list: every rung is valid)."""
    runs = load(pilot)
    need, _ = needed_steps(runs)
    if need is None:
        return ["a pilot seed never left the unigram solution: no rung can be validated"]
    tps = tokens_per_step(runs)
    return [f"{b:.0f} tokens give the largest batch {math.ceil(b / tps)} steps < {need}" for b in budgets
            if math.ceil(b / tps) < need]


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) == 1:
        print(report(Path(args[0])), end="")
    elif len(args) >= 3 and args[1] == "--check":
        problems = check(Path(args[0]), [float(a) for a in args[2:]])
        for p in problems:
            print(f"pilot rule: {p}", file=sys.stderr)
        sys.exit(1 if problems else 0)
    else:
        sys.exit(__doc__)
