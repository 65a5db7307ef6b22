"""What the device can do: a table of known accelerator peaks, a measured matmul peak, peak memory."""

from __future__ import annotations

import resource
import time

import torch

# Dense (no sparsity) tensor-core peaks in TFLOP/s for bf16/fp16, from the vendors' data sheets.
# Matched by substring of ``torch.cuda.get_device_name()``; the first match wins, so specific names go first.
GPU_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("V100", 125.0),
]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def table_peak_tflops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The data-sheet peak for a known GPU in bf16/fp16, else None (then measure it)."""
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in GPU_PEAK_TFLOPS:
        if key in name:
            return tflops
    return None


def clock(cpu_time: bool):
    """The timer: wall time, or this process's CPU time (robust on a shared machine; use with one thread)."""
    return time.process_time if cpu_time else time.perf_counter


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None, reps: int = 5,
                           cpu_time: bool = False) -> float:
    """Best observed square-matmul rate: the practical peak where no data-sheet number applies (CPUs)."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 1):
        sync(device)
        now = clock(cpu_time)
        start = now()
        a @ b
        sync(device)
        best = min(best, now() - start)
    return 2 * n**3 / best / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """GPU: peak allocated since the last reset. CPU: the process's peak resident set (whole run, not per phase)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
