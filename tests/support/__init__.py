"""Helpers shared by the tests, the benchmarks and scripts/ (run from the repository root)."""
