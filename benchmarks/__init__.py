"""Benchmarks: our server side by side with the original design and the framework's ceilings."""
