"""Atomic writes: a write that dies half-way leaves the previous file intact and no temp files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from robablate.io import atomic_write_json, replace_dir
from robablate.results import write_results


def test_failed_write_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "results.json"
    write_results(path, {"status": "complete", "value": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(path, {"status": "complete", "value": Boom()})  # serialisation fails mid-way
    assert json.loads(path.read_text()) == {"schema_version": 1, "status": "complete", "value": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_killed_writer_never_leaves_a_partial_file(tmp_path) -> None:
    """SIGKILL a process in the middle of writing a large results.json: the file is absent or whole."""
    path = tmp_path / "results.json"
    script = textwrap.dedent(f"""
        import os, signal, robablate.io as io
        real = os.replace
        def slow_replace(a, b):  # die after the temp file is written, before the rename
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = slow_replace
        io.atomic_write_json({str(path)!r}, {{"big": list(range(200000))}})
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert p.returncode == -signal.SIGKILL
    assert not path.exists()  # the reader sees no results.json at all, never a truncated one
    write_results(path, {"status": "complete"})
    assert json.loads(path.read_text())["status"] == "complete"


def test_replace_dir_swaps_whole_folders_and_a_failed_build_keeps_the_old_one(tmp_path) -> None:
    out = tmp_path / "hf"
    replace_dir(out, lambda tmp: (tmp / "a.txt").write_text("1"))
    replace_dir(out, lambda tmp: (tmp / "b.txt").write_text("2"))  # the old folder is replaced, not merged
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]

    def broken(tmp):
        (tmp / "c.txt").write_text("half")
        raise RuntimeError("killed mid-export")

    with pytest.raises(RuntimeError):
        replace_dir(out, broken)
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temp or old folders left
