"""Karyotype parameters: JSON round trip, defaults, and the encoder they were fitted for."""

from __future__ import annotations

from pathlib import Path

import pytest

from karyosearch.errors import UserError
from karyosearch.karyotype.params import (
    KaryotypeParams,
    load_params,
    params_path,
    resolve_params,
    save_params,
)


def test_params_round_trip_and_defaults(tmp_path: Path) -> None:
    params = KaryotypeParams(temperature=0.07, penalties={"trisomy": 2.5}, missing_cost=2.0)
    assert params.penalties["sex_gain"] == KaryotypeParams().penalties["sex_gain"]
    model = tmp_path / "m.pt"
    assert params_path(model) == tmp_path / "m.karyotype.json"
    save_params(params, params_path(model))
    assert resolve_params(model) == params
    assert load_params(params_path(model)).penalties["trisomy"] == 2.5
    assert resolve_params(tmp_path / "other.pt") == KaryotypeParams()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError):
        load_params(tmp_path / "bad.json")
    with pytest.raises(ValueError):
        KaryotypeParams(penalties={"nonsense": 1.0})


def test_params_fitted_for_another_encoder_are_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    save_params(KaryotypeParams(fitted={"model_fingerprint": "aaaa"}), params_path(model))
    assert resolve_params(model, fingerprint="aaaa").fitted["model_fingerprint"] == "aaaa"
    assert resolve_params(model).fitted["model_fingerprint"] == "aaaa"  # nothing to check
    with pytest.raises(UserError) as err:
        resolve_params(model, fingerprint="bbbb")
    line = str(err.value)
    assert "\n" not in line and "aaaa" in line and "bbbb" in line
    assert f"karyosearch karyotype fit --data DATA --model {model}" in line
    # a file that records no encoder (written by hand) is taken as it is
    save_params(KaryotypeParams(temperature=0.1), params_path(model))
    assert resolve_params(model, fingerprint="bbbb").temperature == 0.1
