"""benchmarks/bench_karyotype.py's false-positive rate and its interval."""

from __future__ import annotations

import sys

import pytest

from .conftest import load_benchmark


def test_the_false_positive_rate_carries_its_exact_interval() -> None:
    bench = load_benchmark("bench_karyotype")
    try:
        none = bench.rate_with_interval(0, 90)
        # 0 of n: the exact upper bound solves (1 - p)^n = 0.025
        assert none["rate"] == 0 and none["ci95"][0] == 0
        assert none["ci95"][1] == pytest.approx(1 - 0.025 ** (1 / 90), rel=1e-6)
        four = bench.rate_with_interval(4, 100)
        assert four["rate"] == 0.04 and four["ci95"][0] < 0.04 < four["ci95"][1]
        # n of n mirrors 0 of n
        assert bench.rate_with_interval(90, 90)["ci95"][0] == pytest.approx(
            0.025 ** (1 / 90), rel=1e-6
        )
        assert bench.rate_with_interval(0, 0)["ci95"] is None
    finally:
        del sys.modules["bench_karyotype"]
