"""Speed benchmarks: training throughput and MFU, inference latency with and without the soft prompt."""

from spul.bench.runner import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
