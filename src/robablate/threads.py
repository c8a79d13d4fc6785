"""The OpenMP wait policy of a training process, chosen before torch loads its OpenMP runtime.

torch's CPU kernels run on OpenMP threads that meet at a barrier after every parallel region. With
OMP_WAIT_POLICY=ACTIVE they spin there, so the next op starts at once: the fastest setting when the
run has the cores to itself (benchmarks.md, "OpenMP wait policy": ~20-30% faster than PASSIVE on an
idle 2-core machine). When other processes want the same cores, a spinning thread burns the time
slice the thread it waits for needs, and steps get 2-5x slower; PASSIVE (threads sleep at once)
is then the right choice. So: PASSIVE when the node is shared (several jobs through a launcher: SLURM
with several tasks per node, torchrun / Lightning DDP with several local ranks, a Hydra joblib sweep)
or when other processes already keep the cores busy at start-up; ACTIVE otherwise. A value the user set
(OMP_WAIT_POLICY in the environment) is never touched.

Busy is measured as the number of runnable tasks other than this one (/proc/stat `procs_running`,
sampled for ~0.1 s), not the 1-minute load average: the load average still counts the previous job of
a sweep for a minute after it ended, and would make every job after the first passive.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

# Passive when the other runnable tasks leave fewer free cores than this run's threads, with half a
# core of slack for the short-lived tasks (shells, editors, monitoring) every machine has.
SLACK = 0.5
SAMPLES, SAMPLE_GAP_S = 6, 0.02


@dataclass(frozen=True)
class Choice:
    policy: str | None  # "ACTIVE" / "PASSIVE", or None: leave the environment as it is
    reason: str


def shared_node(env: Mapping[str, str], argv: Sequence[str] = ()) -> str | None:
    """Why several processes of one job (or several jobs) share this node, or None."""
    for key in ("SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "LOCAL_WORLD_SIZE"):
        m = re.match(r"\d+", env.get(key, ""))  # SLURM_TASKS_PER_NODE looks like "4(x2)"
        if m and int(m.group()) > 1:
            return f"{key}={env[key]}"
    multirun = any(a in ("-m", "--multirun") for a in argv)
    launcher = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra/launcher=")), None)
    n_jobs = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.launcher.n_jobs=")), None)
    if multirun and launcher in ("local", "joblib") and n_jobs not in ("1",):
        return f"hydra/launcher={launcher} runs several jobs at once"
    return None


def choose(env: Mapping[str, str], other_runnable: float, cpus: int, argv: Sequence[str] = ()) -> Choice:
    """The wait policy for a run that will use OMP_NUM_THREADS (or `cpus`) threads (pure function)."""
    if env.get("OMP_WAIT_POLICY"):
        return Choice(None, f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']} set by the user")
    shared = shared_node(env, argv)
    if shared:
        return Choice("PASSIVE", f"shared node ({shared})")
    try:
        threads = max(1, int(env.get("OMP_NUM_THREADS", "") or cpus))
    except ValueError:
        threads = cpus
    free = cpus - other_runnable
    if threads > free + SLACK:
        return Choice("PASSIVE", f"{other_runnable:.1f} other runnable tasks on {cpus} CPUs, {threads} threads")
    return Choice("ACTIVE", f"{other_runnable:.1f} other runnable tasks on {cpus} CPUs, {threads} threads")


def other_runnable(samples: int = SAMPLES, gap_s: float = SAMPLE_GAP_S) -> float:
    """Mean number of runnable tasks besides this process (Linux /proc/stat); load average elsewhere."""
    counts = []
    try:
        for i in range(samples):
            if i:
                time.sleep(gap_s)
            with open("/proc/stat") as f:
                m = re.search(r"^procs_running (\d+)", f.read(), re.M)
            if m is None:
                raise OSError("no procs_running in /proc/stat")
            counts.append(int(m.group(1)) - 1)  # this process was running while it read the file
    except OSError:
        return max(0.0, os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    return max(0.0, sum(counts) / len(counts))


def usable_cpus() -> int:
    """CPUs this process may run on (affinity / cgroup cpuset), as torch's default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def configure(env: os._Environ | dict | None = None, argv: Sequence[str] = ()) -> Choice:
    """Set OMP_WAIT_POLICY in `env` (default os.environ) unless the user set it; returns the choice.

    Must run before `import torch` (the OpenMP runtime reads the variable when it loads)."""
    env = os.environ if env is None else env
    if env.get("OMP_WAIT_POLICY"):
        return choose(env, 0.0, 1, argv)
    choice = choose(env, other_runnable(), usable_cpus(), argv)
    if choice.policy:
        env["OMP_WAIT_POLICY"] = choice.policy
    return choice
