"""robablate/peak.py: the peak FLOP/s behind results.json's `mfu` (measured once on CPU and cached,
overridable by ROBABLATE_PEAK_FLOPS, a bad value a clear error before compute)."""

from __future__ import annotations

import json

import pytest
import torch

from robablate import peak
from robablate.errors import ConfigError


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(peak.ENV, raising=False)


def test_cpu_peak_is_measured_once_and_cached(tmp_path, monkeypatch) -> None:
    first = peak.peak_flops("cpu", torch.float32, tmp_path)
    assert first > 1e8  # any CPU of this century does > 0.1 GFLOP/s on a 1024^3 fp32 matmul
    stored = json.loads((tmp_path / peak.CACHE_FILE).read_text())
    assert stored == {peak.cpu_key(torch.float32): first}
    # The second call reads the file: measuring again would fail here.
    monkeypatch.setattr(peak, "measure_matmul_flops", lambda **_: pytest.fail("measured again"))
    assert peak.peak_flops("cpu", torch.float32, tmp_path) == first


def test_measuring_leaves_the_global_rng_alone(tmp_path) -> None:
    # A run's dropout masks must not depend on whether the peak was cached or measured (pretrain()
    # asks after seeding).
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    peak.peak_flops("cpu", torch.float32, tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_cache_is_keyed_by_threads_and_dtype(tmp_path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(peak, "measure_matmul_flops", lambda dtype, **_: calls.append(dtype) or 1e9 * (len(calls)))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = peak.peak_flops("cpu", torch.float32, tmp_path)
        bf16 = peak.peak_flops("cpu", torch.bfloat16, tmp_path)
        torch.set_num_threads(2)
        two = peak.peak_flops("cpu", torch.float32, tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert calls == [torch.float32, torch.bfloat16, torch.float32] and len({one, bf16, two}) == 3
    assert len(json.loads((tmp_path / peak.CACHE_FILE).read_text())) == 3


def test_a_broken_cache_file_is_measured_again(tmp_path) -> None:
    (tmp_path / peak.CACHE_FILE).write_text("{not json")
    assert peak.peak_flops("cpu", torch.float32, tmp_path) > 0
    assert peak.cpu_key(torch.float32) in json.loads((tmp_path / peak.CACHE_FILE).read_text())


def test_environment_overrides_cpu_and_gpu(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(peak.ENV, "2.5e11")
    assert peak.peak_flops("cpu", torch.float32, tmp_path) == 2.5e11
    assert peak.peak_flops("cuda", torch.bfloat16, tmp_path) == 2.5e11  # no GPU needed: the env wins
    assert not (tmp_path / peak.CACHE_FILE).exists()  # nothing measured


@pytest.mark.parametrize("value", ["fast", "0", "-1e9", "nan", "inf"])
def test_invalid_environment_value_is_a_clear_error(tmp_path, monkeypatch, value) -> None:
    monkeypatch.setenv(peak.ENV, value)
    with pytest.raises(ConfigError, match=rf"{peak.ENV}=.*{value}.*positive number"):
        peak.peak_flops("cpu", torch.float32, tmp_path)


def test_invalid_environment_value_stops_validate(monkeypatch) -> None:
    from robablate.config import validate
    from conftest import compose_cfg

    monkeypatch.setenv(peak.ENV, "fast")
    with pytest.raises(ConfigError, match=peak.ENV):
        validate(compose_cfg(["experiment=smoke"]))


def test_compute_dtype_and_gpu_table() -> None:
    assert peak.compute_dtype("32-true") is torch.float32
    assert peak.compute_dtype("bf16-mixed") is torch.bfloat16
    assert peak.compute_dtype("16-mixed") is torch.float16
    assert peak.gpu_peak(torch.device("cuda"), torch.float32) is None  # fp32 on GPU: no tensor-core peak


def test_measured_probe_counts_flops() -> None:
    # 2 n^3 FLOPs over a positive time: a finite, positive rate, higher for a larger matrix on the
    # same threads is not guaranteed under load, so only the sanity of the number is checked.
    rate = peak.measure_matmul_flops(n=64, repeats=2)
    assert 0 < rate < 1e15
