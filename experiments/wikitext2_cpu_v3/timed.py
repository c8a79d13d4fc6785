"""Run a command and append `<label> cpu_s <user>+<system> wall_s <wall>` (its children's CPU seconds, from
getrusage, and wall seconds) to a file: the per-rung CPU time of run_all.sh (quote.py reads it).

    python experiments/wikitext2_cpu_v3/timed.py OUT/cpu_times.txt <label> <command...>
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, label, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
    start = time.monotonic()
    rc = subprocess.call(cmd)
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{label} cpu_s {use.ru_utime:.3f}+{use.ru_stime:.3f} wall_s {time.monotonic() - start:.3f}\n")
    sys.exit(rc)
