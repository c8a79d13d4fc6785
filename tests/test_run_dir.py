"""An unwritable run_dir is refused before any compute, naming the path (issue 19)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from robablate.errors import ConfigError
from robablate.pipeline import writable_dir


def test_unwritable_run_dir_is_a_config_error_naming_it(tmp_path):
    assert writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b" and not any((tmp_path / "a" / "b").iterdir())
    with pytest.raises(ConfigError, match=r"run_dir.*/proc/x"):
        writable_dir(__import__("pathlib").Path("/proc/x"))
    if os.geteuid() != 0:  # root writes anywhere outside /proc
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ConfigError, match=str(ro / "run")):
            writable_dir(ro / "run")


def test_cli_exits_2_with_the_path_and_no_traceback():
    r = subprocess.run([sys.executable, "run.py", "run_dir=/proc/x"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "/proc/x" in r.stderr and "Traceback" not in r.stderr
