"""`taseg bench`: model latency/throughput, overhead over plain SAM, time shares, FLOP/s
efficiency, peak memory and node-over-DDS throughput, all measured in one process.

    from taseg_ros.bench import BenchOptions, run_benchmark, format_report
    result = run_benchmark(BenchOptions(config="vit_b", quick=True))
    print(format_report(result))
"""
from taseg_ros.bench.report import format_report
from taseg_ros.bench.run import BenchOptions, run_benchmark

__all__ = ["BenchOptions", "format_report", "run_benchmark"]
