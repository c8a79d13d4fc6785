"""Copy a study's results.json files (only those: no checkpoints, no encoders) from the sweep folders
into the committed results/ tree, keeping the <table>/<arm>/seed=<n>/ layout the report reads.

    python experiments/wikitext2_cpu/collect.py outputs/wikitext2_cpu experiments/wikitext2_cpu/results
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from robablate.io import atomic_write_text


def collect(src: Path, dst: Path) -> list[Path]:
    copied = []
    for f in sorted(src.glob("*/**/results.json")):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, f.read_text(encoding="utf-8"))
        copied.append(out)
    wall = src / "wall_times.txt"
    if wall.is_file():
        shutil.copyfile(wall, dst / "wall_times.txt")
    return copied


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    files = collect(Path(sys.argv[1]), Path(sys.argv[2]))
    if not files:
        sys.exit(f"no results.json under {sys.argv[1]}/*/")
    print(f"{len(files)} results.json -> {sys.argv[2]}")
