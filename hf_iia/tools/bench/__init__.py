"""Benchmarks with known ground truth: synthetic data and the scripts' shared pieces."""
