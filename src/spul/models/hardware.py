"""What this machine computes natively: bf16 on the CPU (AVX512-BF16 / AMX / Arm BF16) and on CUDA devices.

``dtype: auto`` chooses from these answers, never from the machine the defaults were tuned on. The CPU flags
come from ``/proc/cpuinfo`` (``cpu_flags``); tests replace that function to fake another CPU.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time

log = logging.getLogger(__name__)

# /proc/cpuinfo flags that mean bf16 matmuls run in hardware: x86 AVX512-BF16 and AMX, Arm's BF16 extension
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@functools.lru_cache(maxsize=1)
def _proc_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags (``flags`` on x86, ``Features`` on Arm); empty where /proc/cpuinfo is absent."""
    for line in _proc_cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model() -> str:
    for line in _proc_cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("model name", "cpu model", "hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_bf16_native() -> bool:
    """Whether the CPU has bf16 matmul instructions. Without /proc/cpuinfo (macOS, Windows) torch's detected
    vector ISA decides: only its AVX512 builds with BF16 or an Arm build report a bf16-capable level."""
    flags = cpu_flags()
    if flags:
        return any(f in flags for f in CPU_BF16_FLAGS)
    try:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:  # noqa: BLE001 - no torch or an old one: assume the slow path
        return False
    return "BF16" in capability or "AMX" in capability or (platform.machine() == "arm64" and platform.system() == "Darwin")


def cpu_bf16_summary() -> str:
    """One phrase for logs and ``spul env``: which bf16 flags the CPU has."""
    have = [f for f in CPU_BF16_FLAGS if f in cpu_flags()]
    return ("native bf16: " + ", ".join(have)) if have else "no native bf16 (no AVX512-BF16/AMX/BF16 flag)"


@functools.lru_cache(maxsize=1)
def measured_bf16_slowdown(m: int = 128, k: int = 256, n: int = 256, reps: int = 3) -> tuple[float, float]:
    """Best-of-``reps`` CPU matmul time (ms) in bf16 and in fp32, measured once per process."""
    import torch

    def best(dtype) -> float:
        a = torch.randn(m, k, dtype=dtype)
        b = torch.randn(k, n, dtype=dtype)
        a @ b  # warm-up
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times) * 1000

    return best(torch.bfloat16), best(torch.float32)


_warned: set[str] = set()


def warn_slow_cpu_bf16(what: str) -> None:
    """Warn once per process that bf16 was asked for on a CPU that emulates it, with the measured cost."""
    if what in _warned or cpu_bf16_native():
        return
    _warned.add(what)
    bf16_ms, fp32_ms = measured_bf16_slowdown()
    log.warning(
        "%s asks for bfloat16 on a CPU without native bf16 (%s; %s): a bf16 matmul took %.2f ms vs %.2f ms in "
        "float32 here (%.0fx slower) — use %s=auto or float32 unless you need bf16 numerics",
        what, cpu_model(), cpu_bf16_summary(), bf16_ms, fp32_ms, bf16_ms / max(fp32_ms, 1e-6), what,
    )


def cuda_summary() -> str:
    import torch

    if not torch.cuda.is_available():
        return f"CUDA: not available (torch built with CUDA {torch.version.cuda or 'none'})"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"CUDA {torch.version.cuda}: {', '.join(names)}; bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}"


def hardware_report() -> dict[str, str]:
    """What a bug report needs about this machine (``spul env``)."""
    import torch

    return {
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "cpu isa (torch)": str(torch.backends.cpu.get_cpu_capability()),
        "cpu bf16": cpu_bf16_summary(),
        "dtype auto on cpu": "bfloat16" if cpu_bf16_native() else "float32",
        "cuda": cuda_summary(),
        "mps": "available" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "not available",
    }
