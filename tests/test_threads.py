"""OpenMP wait policy (robablate/threads.py): ACTIVE on a machine the run owns, PASSIVE when shared,
never over a value the user set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from robablate.threads import choose, configure, other_runnable, shared_node

ROOT = Path(__file__).resolve().parents[1]


def test_idle_machine_is_active():
    assert choose({}, other_runnable=0.0, cpus=2).policy == "ACTIVE"
    assert choose({}, other_runnable=0.3, cpus=2).policy == "ACTIVE"  # a shell or monitor is not a job
    assert choose({"OMP_NUM_THREADS": "4"}, other_runnable=3.0, cpus=8).policy == "ACTIVE"  # 5 free cores


def test_busy_machine_is_passive():
    assert choose({}, other_runnable=1.0, cpus=2).policy == "PASSIVE"
    assert choose({}, other_runnable=6.0, cpus=2).policy == "PASSIVE"
    assert choose({}, other_runnable=3.0, cpus=8).policy == "PASSIVE"  # 8 threads, 5 free cores
    assert choose({"OMP_NUM_THREADS": "1"}, other_runnable=1.0, cpus=2).policy == "ACTIVE"  # one free core


def test_user_setting_wins():
    c = choose({"OMP_WAIT_POLICY": "PASSIVE"}, other_runnable=0.0, cpus=2)
    assert c.policy is None and "user" in c.reason
    env = {"OMP_WAIT_POLICY": "active"}
    assert configure(env).policy is None and env["OMP_WAIT_POLICY"] == "active"


def test_shared_node_through_launchers():
    assert shared_node({"SLURM_NTASKS_PER_NODE": "4"}) is not None
    assert shared_node({"SLURM_TASKS_PER_NODE": "2(x3)"}) is not None
    assert shared_node({"SLURM_TASKS_PER_NODE": "1(x8)"}) is None
    assert shared_node({"LOCAL_WORLD_SIZE": "2"}) is not None
    assert shared_node({}, ["-m", "hydra/launcher=local", "seed=0,1"]) is not None
    assert shared_node({}, ["-m", "hydra/launcher=local", "hydra.launcher.n_jobs=1"]) is None
    assert shared_node({}, ["hydra/launcher=local"]) is None  # not a sweep: one job
    assert choose({"SLURM_NTASKS_PER_NODE": "4"}, other_runnable=0.0, cpus=64).policy == "PASSIVE"


def test_other_runnable_is_a_count():
    assert 0.0 <= other_runnable(samples=2, gap_s=0.0) < 10_000


def test_run_py_sets_the_policy_before_torch_loads():
    """run.py chooses before `import torch` (OpenMP reads the variable when it loads) and says so."""
    code = ("import runpy, sys; sys.argv = ['run.py', '--help']\n"
            "try:\n    runpy.run_path('run.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "import os; print('POLICY', os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "POLICY ACTIVE" in p.stdout or "POLICY PASSIVE" in p.stdout
    assert "robablate: OMP_WAIT_POLICY=" in p.stderr
    src = (ROOT / "run.py").read_text()
    assert src.index("threads.configure") < src.index("import hydra")
