"""Karyotype parameters: everything the decision depends on, saved as <model>.karyotype.json
beside the encoder they were fitted for (`karyosearch karyotype fit`).

A file records the fingerprint of that encoder (`fitted["model_fingerprint"]`); reading it for
another encoder is refused (`resolve_params`), so a stale file beside a retrained model is
never applied silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..cytogenetics import PENALIZED_KINDS
from ..errors import UserError
from ..util.atomic import write_json

PARAMS_FORMAT = "karyosearch-karyotype-params/1"


def _default_penalties() -> dict[str, float]:
    return {"trisomy": 4.0, "sex_gain": 4.0, "monosomy_x": 1.5}


@dataclass
class KaryotypeParams:
    """Everything the karyotype decision depends on (saved as <model>.karyotype.json)."""

    temperature: float | None = None  # T of log_softmax(scores / T); None: the encoder's own
    penalties: dict[str, float] = field(
        default_factory=_default_penalties
    )  # cost per abnormal kind
    missing_cost: float = 3.0  # cost of one empty slot (a chromosome not cut out), ~ -log P
    max_missing: int = 2  # at most this many more slots than crops
    extra_cost: float = 6.0  # cost of one crop left over as debris
    max_extra: int = 1  # at most this many crops left over
    review_margin: float = 0.4  # review a crop whose top-2 probability margin is below this
    review_size_z: float = 3.0  # review a crop this many sd off its class's relative size
    include_xxyy: bool = True  # consider 48,XXYY
    homologue_weight: float = 0.0  # weight of the homologue likeness term (0: off)
    homologue_threshold: float = 0.5  # embedding cosine of a same-class pair that is neutral
    size_weight: float = 0.0  # weight of log p(relative size | class) (0: size not used)
    size_mean: list[float] | None = None  # per class mean relative log size (fit_size_model)
    size_sd: list[float] | None = None  # per class standard deviation of it
    fitted: dict[str, Any] = field(default_factory=dict)  # how the values were fitted, and on what

    def __post_init__(self) -> None:
        unknown = set(self.penalties) - set(PENALIZED_KINDS)
        if unknown:
            raise ValueError(
                f"unknown penalty kind(s) {sorted(unknown)}; use {list(PENALIZED_KINDS)}"
            )
        self.penalties = {
            **_default_penalties(),
            **{k: float(v) for k, v in self.penalties.items()},
        }
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.max_missing < 0 or self.max_extra < 0:
            raise ValueError("max_missing and max_extra must be >= 0")

    def penalty(self, kind: str) -> float:
        return 0.0 if kind == "normal" else self.penalties[kind]

    def with_temperature(self, temperature: float) -> KaryotypeParams:
        """These params with T filled in where it is still None."""
        return (
            self if self.temperature is not None else replace(self, temperature=float(temperature))
        )

    def to_json(self) -> dict[str, Any]:
        return {"format": PARAMS_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KaryotypeParams:
        raw = {k: v for k, v in raw.items() if k != "format"}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


def params_path(model_path: str | os.PathLike) -> Path:
    """Where the karyotype parameters of a checkpoint live: m.pt -> m.karyotype.json."""
    return Path(model_path).with_suffix(".karyotype.json")


def save_params(params: KaryotypeParams, path: str | os.PathLike) -> Path:
    """Write params as JSON atomically (temporary file, then rename)."""
    return write_json(path, params.to_json())


def load_params(path: str | os.PathLike) -> KaryotypeParams:
    """Read params written by `save_params`, or raise UserError saying why not."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("format") != PARAMS_FORMAT:
            raise ValueError(f"not {PARAMS_FORMAT}")
        return KaryotypeParams.from_json(raw)
    except FileNotFoundError:
        raise UserError(f"{path}: no such karyotype parameter file") from None
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"{path}: not a karyotype parameter file ({err})") from None


def resolve_params(
    model_path: str | os.PathLike | None,
    params_file: str | os.PathLike | None = None,
    fingerprint: str | None = None,
) -> KaryotypeParams:
    """`params_file` if given, else the file beside the model if present, else defaults.

    With `fingerprint` (the encoder's), a file fitted for another encoder is refused with one
    line naming the command that refits it (`check_fingerprint`).
    """
    path = params_file_for(model_path, params_file)
    if path is None:
        return KaryotypeParams()
    params = load_params(path)
    if fingerprint is not None:
        check_fingerprint(params, fingerprint, path, model_path)
    return params


def params_file_for(
    model_path: str | os.PathLike | None, params_file: str | os.PathLike | None = None
) -> Path | None:
    """The parameter file that applies: `params_file` if given, else the one beside the model
    if present, else None (the defaults)."""
    if params_file is not None:
        return Path(params_file)
    if model_path is not None and params_path(model_path).is_file():
        return params_path(model_path)
    return None


def check_fingerprint(
    params: KaryotypeParams,
    fingerprint: str,
    path: str | os.PathLike,
    model_path: str | os.PathLike | None = None,
) -> None:
    """Refuse (UserError) params fitted for another encoder than the one with `fingerprint`;
    params that record no encoder (written by hand) are accepted."""
    fitted_for = params.fitted.get("model_fingerprint")
    if fitted_for and fitted_for != fingerprint:
        model = model_path if model_path is not None else "CKPT"
        raise UserError(
            f"{path}: karyotype parameters fitted for encoder {fitted_for}, not this one "
            f"({fingerprint}); refit them: karyosearch karyotype fit --data DATA --model {model}"
        )
