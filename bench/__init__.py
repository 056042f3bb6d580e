"""Benchmark suites and the benchmark report (not installed with the package)."""
