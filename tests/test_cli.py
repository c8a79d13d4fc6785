"""The command line as a user meets it: bad configs are refused in seconds, before any compute."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("args,words", [
    (["nsp=true", "format=full_sentences"], ["nsp", "format", "segment_pair"]),
    (["masking=sometimes"], ["masking", "dynamic", "static"]),
    (["glue.tasks=[SQuAD]"], ["SQuAD", "glue.tasks", "RTE"]),
    (["seq_len=1024"], ["seq_len", "128", "two_phase"]),
    (["model=base", "seq_len=512", "model.max_position_embeddings=256"], ["seq_len", "max_position_embeddings"]),
    (["train.precision=bf17"], ["train.precision", "bf17", "32-true", "bf16-mixed"]),
])
def test_bad_config_is_refused_fast(tmp_path, args, words) -> None:
    cache = tmp_path / "cache"
    p = run_cli(*args, f"run_dir={tmp_path}", f"cache_dir={cache}")
    assert p.returncode != 0
    for w in words:
        assert w in p.stderr, p.stderr
    assert "Traceback" not in p.stderr  # one paragraph, not a stack trace
    assert not (tmp_path / "pretrain").exists()  # nothing was trained
    # Before any compute, not after it (typically 3-5 s; no wall-clock bound, which a loaded box breaks):
    # no corpus, tokenizer, token cache or peak measurement was built.
    assert not cache.exists() or not any(cache.iterdir()), sorted(p.name for p in cache.iterdir())


def test_cfg_job_prints_the_resolved_config() -> None:
    p = run_cli("--cfg", "job", "masking=dynamic", "nsp=false", "seq_len=512")
    assert p.returncode == 0, p.stderr
    assert "name: dynamic" in p.stdout and "nsp: false" in p.stdout and "max_len: 512" in p.stdout
