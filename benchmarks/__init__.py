"""Benchmarks of the UMS controller, run with ``make bench`` (see benchmarks/README.md)."""
