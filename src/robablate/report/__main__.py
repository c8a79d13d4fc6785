"""python -m robablate.report DIR... [--out OUT] [--baseline key=value] [--metric M ...] [--wandb]

Exit codes: 0 report written; 2 nothing to report (no results.json, or none complete) or a bad
--baseline (the message lists the available keys/values).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from robablate.errors import ConfigError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m robablate.report",
                                description="Comparison tables (95% t CIs, paired tests, power, compute and "
                                            "confound flags), variance components and plots from finished "
                                            "robablate runs.")
    p.add_argument("dirs", nargs="+", help="run or sweep folders (searched recursively for results.json)")
    p.add_argument("--out", help="output folder (default: <first DIR>/report)")
    p.add_argument("--baseline", action="append", metavar="KEY=VALUE",
                   help="baseline arm of an axis, e.g. masking=static (repeatable; default: the BERT-side value)")
    p.add_argument("--metric", action="extend", nargs="+", metavar="NAME",
                   help="metrics to summarise (default: score and the pretraining metrics)")
    p.add_argument("--primary", action="extend", nargs="+", metavar="NAME",
                   help="the Holm family's read-outs (default: the runs' config report.primary, else "
                        "val_mlm_loss blimp); set it before seeing results: other rows are exploratory")
    p.add_argument("--wandb", action="store_true", help="also log tables and plots to one W&B run")
    p.add_argument("--wandb-project", default="robablate")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Import after argparse so `--help` is instant; tables and plots need no display.
    import matplotlib

    matplotlib.use("Agg")
    from robablate.report import load_report, render, write_report
    from robablate.report.budget import budget_terminal, lead_report
    from robablate.report.design import parse_baselines

    try:
        report = load_report(args.dirs, parse_baselines(args.baseline), args.metric, primary=args.primary)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if report.tidy.empty:
        listed = "".join(f"\n  {p['kind']}: {p['path']}: {p['message']}" for p in report.problems)
        print(f"error: no complete results.json under {', '.join(args.dirs)}; nothing to report."
              + (f" Found:{listed}" if listed else " (No results.json files at all: did the runs finish?)"),
              file=sys.stderr)
        return 2
    for p in report.problems:
        if p["kind"] in ("corrupt", "foreign", "malformed", "missing"):
            print(f"warning: skipped {p['path']}: {p['kind']}: {p['message']}", file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.dirs[0]) / "report"
    written = write_report(report, out)
    budget = lead_report(args.dirs, out, parse_baselines(args.baseline), args.primary)  # >1 rung: leads report.md
    print(render.terminal(report))
    if budget is not None:
        print(budget_terminal(budget))
    print(f"report written to {out} ({len(written)} files: report.md, tables.tex, CSVs, plots)")
    if args.wandb:
        from robablate.report.wandb_log import log_report

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            log_report(report, out, project=args.wandb_project,
                       group=Path(args.dirs[0]).resolve().name, images=[p for p in written if p.suffix == ".png"])
        for w in caught:
            if str(w.message).startswith("--wandb"):
                print(f"warning: {w.message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
