"""Benchmarks of the sync at region scale (`make bench`): run with `python -m bench.run`."""
