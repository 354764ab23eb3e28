"""Evaluation: metrics, provenance (leak checks), the benchmark and its figures."""
