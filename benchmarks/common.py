"""Shared bits of the benchmark scripts: machine description and a matmul FLOP/s ceiling."""

from __future__ import annotations

import platform
import time

import torch


def machine() -> str:
    """CPU model, threads and torch version, for the record in docs/benchmarks.md."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}{gpu}"


def matmul_ceiling(n: int = 2048, seconds: float = 3.0, device: str = "cpu", dtype: torch.dtype = torch.float32
                   ) -> float:
    """FLOP/s of a large square matmul (fp32 by default): the practical ceiling a training step is compared
    against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)
