"""The peak FLOP/s a training run's MFU divides by (results.json `peak_flops`, `mfu`; `train/mfu`).

- `ROBABLATE_PEAK_FLOPS` in the environment (FLOP/s per device, e.g. `2.0e11`) wins everywhere: a
  stated peak, e.g. a datasheet's or one measured on a quiet machine.
- CUDA: the vendor's dense 16-bit tensor-core peak for known GPUs under 16-bit precision, else None.
- CPU: measured, not assumed: the best of a few square matmuls of the run's compute dtype on the
  run's threads, once per (CPU model, torch version, threads, dtype), cached in
  <cache_dir>/peak_flops.json. A measurement taken on a busy machine is low (MFU then reads high):
  delete the file, or set the variable, to measure again.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from robablate.errors import ConfigError
from robablate.io import atomic_write_json

ENV = "ROBABLATE_PEAK_FLOPS"
CACHE_FILE = "peak_flops.json"

# Dense (no sparsity) bf16/fp16 tensor-core peak FLOP/s per GPU, from the vendors' datasheets.
# Matched in order against torch.cuda.get_device_name(); unknown GPUs log no MFU.
PEAK_FLOPS_16BIT = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))

# The CPU probe: n x n x n matmuls (2 n^3 FLOPs each), best of REPEATS after a warm-up; ~0.1-0.5 s.
PROBE_N, REPEATS = 1024, 8


def cpu_bf16_native() -> bool:
    """True when this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles), where oneDNN runs bf16
    matmuls at ~2x (AVX512-BF16, AMD Zen 4) to ~6x (AMX, Intel Sapphire Rapids) the fp32 rate
    (benchmarks.md). Elsewhere bf16 is emulated or converted and not worth its rounding."""
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: assume no bf16 hardware
        return False


def compute_dtype(precision: str) -> torch.dtype:
    """The matmul dtype of a Lightning precision setting ("32-true", "bf16-mixed", "16-mixed", ...)."""
    p = str(precision)
    if p.startswith("bf16"):
        return torch.bfloat16
    if p.startswith("16"):
        return torch.float16
    return torch.float32


def env_peak() -> float | None:
    """ROBABLATE_PEAK_FLOPS as a positive finite float, None when unset or empty."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"environment variable {ENV}={raw!r} must be a positive number of FLOP/s per device "
                          f"(e.g. 2.0e11), or unset to use the measured / known peak")
    return value


def measure_matmul_flops(n: int = PROBE_N, dtype: torch.dtype = torch.float32, repeats: int = REPEATS) -> float:
    """Best FLOP/s of an n x n x n matmul on the CPU with torch's current threads. Its own generator:
    the global RNG (dropout masks of the run that asks) must not depend on whether the cache existed."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    torch.mm(a, b)  # warm-up: thread pool, packing buffers
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def cpu_key(dtype: torch.dtype) -> str:
    """What a CPU peak depends on: the processor, torch (its BLAS), the threads and the dtype."""
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {dtype}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_peak(cache_dir: Path, dtype: torch.dtype) -> float:
    """The measured CPU matmul peak, from <cache_dir>/peak_flops.json or measured now and added to it.
    Under a file lock: parallel jobs of a sweep measure once, not at the same time (they would slow
    each other's probe down)."""
    from filelock import FileLock

    path = Path(cache_dir) / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        return _cached_or_measured(path, cpu_key(dtype), dtype)


def _cached_or_measured(path: Path, key: str, dtype: torch.dtype) -> float:
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict):
        cached = {}
    value = cached.get(key)
    if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
        return float(value)
    cached[key] = measure_matmul_flops(dtype=dtype)
    atomic_write_json(path, cached)
    return cached[key]


def gpu_peak(device: torch.device, dtype: torch.dtype) -> float | None:
    if dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS_16BIT if key in name), None)


def peak_flops(device: torch.device | str, dtype: torch.dtype, cache_dir: str | Path) -> float | None:
    """Peak FLOP/s per device for MFU: the environment's, a known GPU's, or the CPU's measured one."""
    stated = env_peak()
    if stated is not None:
        return stated
    device = torch.device(device)
    if device.type == "cuda":
        return gpu_peak(device, dtype)
    if device.type == "cpu":
        return cpu_peak(Path(cache_dir), dtype)
    return None
