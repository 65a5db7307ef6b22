"""Per-cell cost measurements: wall time and peak memory (CUDA allocator peak, or sampled CPU RSS)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class Cost:
    seconds: float = 0.0
    peak_memory_mb: float = 0.0
    # "cuda_allocated": torch.cuda.max_memory_allocated; "cpu_rss": the process's peak resident set while
    # the block ran (sampled every 20 ms), which includes memory held from earlier work in the same process
    memory_kind: str = "cpu_rss"


class measure:
    """``with measure() as cost: ...`` fills ``cost`` on exit.

    ``resource.getrusage`` only gives the peak over the process's lifetime, useless for the second cell of a
    run; a sampling thread gives the peak within the block on every platform psutil supports.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.cost = Cost()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0

    def __enter__(self) -> Cost:
        import torch

        self._cuda = torch.cuda.is_available()
        self._start = time.perf_counter()
        if self._cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.cost.memory_kind = "cuda_allocated"
        else:
            import psutil

            proc = psutil.Process()
            self._peak = proc.memory_info().rss

            def sample() -> None:
                while not self._stop.wait(self.interval):
                    self._peak = max(self._peak, proc.memory_info().rss)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self.cost

    def __exit__(self, *exc) -> None:
        import torch

        if self._cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            import psutil

            self._stop.set()
            self._thread.join()
            peak = max(self._peak, psutil.Process().memory_info().rss)
        self.cost.seconds = time.perf_counter() - self._start
        self.cost.peak_memory_mb = round(peak / 2**20, 1)
