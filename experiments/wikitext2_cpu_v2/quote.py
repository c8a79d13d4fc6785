"""Refresh the generated blocks of README.md here from the committed results and reports, so the prose
around them is written by hand but every number in a table comes from the files:

    <!-- BEGIN name -->...<!-- END name -->

with name one of: verdicts (report/verdicts.md), pilot (results/pilot.md), table1..3
(report/<table>/headline.md), cpu (results/cpu_times.txt as a table).

    python experiments/wikitext2_cpu_v2/quote.py          # rewrites README.md in place
    python experiments/wikitext2_cpu_v2/quote.py --check  # exit 1 if README.md is not up to date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SWEEPS = {  # cpu_times.txt label -> what it ran
    "pilot": "pilot: reference arm, 3 seeds", "pilot_control": "pilot: random-init control, seeds 0-2",
    "pilot_control_more": "pilot: random-init control, seeds 3-9",
    "table1": "Table 1: 2 arms x 3 seeds", "table1_control": "Table 1: control, 3 seeds",
    "table2": "Table 2: 4 arms x 5 seeds", "table2_control": "Table 2: control, 3 seeds",
    "table3": "Table 3: 3 arms x 3 seeds + 15 LR pilots", "table3_control": "Table 3: control, 3 seeds",
}


def cpu_table(path: Path) -> str:
    """results/cpu_times.txt (`<label> cpu_s <user>+<system> wall_s <wall>` per sweep, bash's `time`)."""
    lines = ["| sweep | runs | CPU time (user + system) | wall time |", "|---|---|---:|---:|"]
    total_cpu = total_wall = 0.0
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"(\S+) cpu_s ([\d.]+)\+([\d.]+) wall_s ([\d.]+)", line.strip())
        if not m:
            continue
        cpu, wall = float(m[2]) + float(m[3]), float(m[4])
        total_cpu, total_wall = total_cpu + cpu, total_wall + wall
        lines.append(f"| {m[1]} | {SWEEPS.get(m[1], '')} | {cpu / 60:.1f} min | {wall / 60:.1f} min |")
    lines.append(f"| **total** | | **{total_cpu / 3600:.2f} h** | **{total_wall / 3600:.2f} h** |")
    return "\n".join(lines) + "\n"


def blocks() -> dict[str, str]:
    out = {"verdicts": (HERE / "report" / "verdicts.md").read_text(encoding="utf-8"),
           "pilot": (HERE / "results" / "pilot.md").read_text(encoding="utf-8"),
           "cpu": cpu_table(HERE / "results" / "cpu_times.txt")}
    for t in ("table1", "table2", "table3"):
        out[t] = (HERE / "report" / t / "headline.md").read_text(encoding="utf-8")
    return out


def refresh(text: str) -> str:
    for name, body in blocks().items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md: no <!-- BEGIN {name} --> ... <!-- END {name} --> block")
        text = pattern.sub(lambda m: m[1] + "\n" + body.strip("\n") + "\n\n" + m[2], text)
    return text


if __name__ == "__main__":
    readme = HERE / "README.md"
    old = readme.read_text(encoding="utf-8")
    new = refresh(old)
    if "--check" in sys.argv[1:]:
        sys.exit(0 if new == old else f"{readme} is not up to date: run python {Path(__file__).relative_to(Path.cwd())}")
    readme.write_text(new, encoding="utf-8")
