"""Training recipes: the paper's (`--preset paper`) and a fast from-scratch CPU recipe
(`default`), each a `Recipe`; `TrainOptions` says what one run trains on and where it writes.

A user's `--set KEY=VALUE` changes one recipe field, checked against the field's type.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import UserError
from ..model.config import uses_proxies
from ..model.encoder import STEMS


@dataclass(frozen=True)
class Recipe:
    """How to train: optimiser, schedule, batches and augmentation (one per preset)."""

    image_size: int  # network input side S (px)
    stem: str  # "standard" or "small" (see EncoderConfig)
    epochs: int  # maximum epochs
    optimizer: str  # "adamw" or "sgd"
    lr: float  # peak learning rate
    weight_decay: float  # decoupled (AdamW) or L2 (SGD) weight decay
    schedule: str  # "onecycle" (warm-up then cosine) or "plateau" (ReduceLROnPlateau on val loss)
    m_per_class: int = 4  # images per class in a batch
    classes_per_batch: int = 16  # classes per batch (batch = m * classes)
    proxy_lr_mult: float = 1.0  # proxies learn this much faster than the network
    label_smoothing: float = 0.0  # on the normalized softmax / cross-entropy targets
    # additive cosine margin on the true class in the normalized softmax loss (proxy networks
    # only; train.losses): training goes on pulling each crop toward its own proxy after it is
    # already nearest to it; 0: off, the paper's loss
    margin: float = 0.0
    rotate: float = 0.0  # max rotation (degrees) of the batch augmentation
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range (<1 shrinks the chromosome)
    translate: float = 0.0  # max shift as a fraction of the image side
    flips: bool = True  # random left-right flips (a mirrored chromosome is still itself)
    vertical_flips: bool = True  # random top-bottom flips (swaps the p and q arms)
    pad_crop: int = 0  # paper: pad by this many px each side, random crop back to S
    intensity: float = 0.0  # max relative gamma / gain jitter
    # max |log gamma| of a scanner's gamma, applied in either polarity (x ** g, or
    # 1 - (1 - x) ** g: as the gamma of a bright-on-dark scan looks once the pipeline has
    # brought it to one polarity); 0: off (benchmarks/bench_robustness.py measures the need)
    scan_gamma: float = 0.0
    # smallest factor of a random down-and-up resampling (antialiased bilinear) applied to
    # half the images of a batch: another lab's lower scan resolution or softer focus, which
    # the network otherwise never sees (at 128 px, scale 0.5 cost 3.47 points on validation);
    # 0: off
    resample: float = 0.0
    # The same two in the source's own pixels (a crop's input px per source px is S over its
    # long side; BioImLab's crops are ~41 px long, so at 128 px a source pixel is ~3 input
    # px and `resample` 0.5 never reaches a half-resolution scan): `lowres`, the smallest
    # factor of the source resolution half the images are brought down to (as
    # `bench_robustness`'s "scaled by 0.5" does before the pipeline); `blur`, the largest
    # sigma (source px) of a Gaussian blur on half the images (its "blur sigma 1"). 0: off
    lowres: float = 0.0
    blur: float = 0.0
    # the lowest quality of a JPEG round trip in the source's pixels on half the images
    # (quality uniform in [jpeg, 95]; `bench_robustness`'s "jpeg 50"); 0: off
    jpeg: int = 0
    # joint training (`train --also`): the probability (< 1) that an image slot of a batch
    # is filled from the second dataset's training part; an epoch then lasts 1 / (1 - share)
    # times longer, so that it still shows about every image of the first dataset once
    also_share: float = 0.5
    ema: float = 0.0  # weight EMA decay per step (0 = off); evaluation uses the EMA weights
    canvas_percentile: float = 0.0  # >0: add a fixed-scale view (image.prepare_input) on a
    # canvas this percentile of the training crops' long sides, so length is seen; 0: none
    patience: int = 0  # early stopping after this many epochs without improvement (0 = off)
    plateau_patience: int = 10  # ReduceLROnPlateau patience (paper)


PRESETS: dict[str, Recipe] = {
    # The MIDL 2020 paper: SGD 1e-3, momentum 0.9, wd 1e-4, ReduceLROnPlateau(0.1, 10) on
    # validation loss, pad to 256 / random crop 224 / random flips (at S=224 the padding is
    # 16 px a side).
    "paper": Recipe(
        image_size=224,
        stem="standard",
        epochs=100,
        optimizer="sgd",
        lr=1e-3,
        weight_decay=1e-4,
        schedule="plateau",
        pad_crop=16,
        flips=True,
        patience=20,
    ),
    # Fast from scratch on a 2-core CPU: 64 px, AdamW with one-cycle, light augmentation (a
    # small rotation, zoom and shift, left-right flips, mild intensity jitter), no label
    # smoothing, and a weight EMA. Measured on BioImLab validation (paper split, seed 0, 14
    # epochs, 30 min on an AVX2 CPU): heavy augmentation (rotation up to 180 degrees,
    # top-bottom flips, label smoothing 0.1) reached 76.3%, this light recipe 90.7% (README,
    # "Training"). 30 epochs fill about 30 minutes on a 2-core CPU with native bf16
    # (AVX-512 BF16, ~85 img/s with augmentation); an AVX2-only CPU takes about twice that.
    "default": Recipe(
        image_size=64,
        stem="standard",
        epochs=30,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.05,
        schedule="onecycle",
        proxy_lr_mult=10.0,
        rotate=15.0,
        scale=(0.9, 1.1),
        translate=0.05,
        flips=True,
        vertical_flips=False,
        intensity=0.1,
        ema=0.995,
        patience=0,
    ),
}


@dataclass
class TrainOptions:
    """One training run: what to train on, which network, where to write it."""

    data: str  # dataset folder or manifest
    out: str  # best checkpoint path
    arch: str = "proxy-resnext-cbam"  # one of model.ARCHS
    split: str = "paper"  # "paper", "cell" or "karyo" (data.splits)
    seed: int = 0  # seeds the split, the initialisation, batches and augmentation
    preset: str = "default"  # key of PRESETS
    epochs: int | None = None  # overrides the preset
    image_size: int | None = None  # overrides the preset
    device: str = "auto"  # "auto", "cpu" or "cuda"
    layout: str = "auto"  # dataset layout (see datasets.read_dataset)
    resume: bool = False  # continue from `out`.last if it exists
    max_minutes: float | None = None  # stop after this wall time (keeps the best so far)
    limit: int | None = None  # use only the first N training images (smoke tests)
    init: str | None = None  # start from this checkpoint's weights instead of at random
    # joint training: a second labelled dataset (another stain) whose training part under
    # `also_split` / `also_seed` (default: `split` / `seed`) joins the batches; validation
    # and checkpoint choice stay on `data`
    also: str | None = None
    also_split: str | None = None
    also_seed: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # Recipe fields to change


def resolve_recipe(opts: TrainOptions) -> Recipe:
    if opts.preset not in PRESETS:
        raise UserError(f"unknown preset {opts.preset!r}: choose {', '.join(PRESETS)}")
    recipe = PRESETS[opts.preset]
    changes: dict[str, Any] = {
        k: _checked_override(recipe, k, v) for k, v in opts.overrides.items()
    }
    if opts.epochs is not None:
        changes["epochs"] = opts.epochs
    if opts.image_size is not None:
        changes["image_size"] = opts.image_size
    try:
        recipe = replace(recipe, **changes)
    except TypeError as err:
        raise UserError(f"bad training override: {err}") from None
    if recipe.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if not 0.0 <= recipe.also_share < 1.0:
        raise UserError(
            f"recipe field also_share takes a number in [0, 1), not {recipe.also_share}"
        )
    if recipe.jpeg and not 1 <= recipe.jpeg <= 95:
        raise UserError(f"recipe field jpeg takes a quality in [1, 95] (0: off), not {recipe.jpeg}")
    if not 0.0 <= recipe.margin < 1.0:
        raise UserError(f"recipe field margin takes a cosine in [0, 1), not {recipe.margin}")
    if recipe.margin and not uses_proxies(opts.arch):
        raise UserError(f"--set margin applies to the proxy networks only, not {opts.arch}")
    return recipe


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['rotate=30.0', 'scale=(0.8,1.2)'] -> {'rotate': 30.0, 'scale': (0.8, 1.2)}.

    Values are Python literals; their types are checked against the recipe in
    `resolve_recipe`."""
    import ast

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise UserError(
                f"--set {item!r}: expected KEY=VALUE with a Python literal value"
            ) from None
    return out


def _checked_override(recipe: Recipe, key: str, value: Any) -> Any:
    """A recipe override with the field's type (a user's `--set` is checked, not trusted)."""
    if key not in Recipe.__dataclass_fields__:
        raise UserError(f"unknown recipe field {key!r}: see karyosearch.train.recipe.Recipe")
    current = getattr(recipe, key)
    if isinstance(current, tuple):
        if not (
            isinstance(value, (tuple, list))
            and len(value) == len(current)
            and all(isinstance(v, (int, float)) for v in value)
        ):
            raise UserError(f"recipe field {key} takes {len(current)} numbers, not {value!r}")
        return tuple(float(v) for v in value)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise UserError(f"recipe field {key} takes True or False, not {value!r}")
        return value
    if isinstance(current, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"recipe field {key} takes a number, not {value!r}")
        if isinstance(current, int) and not float(value).is_integer():
            raise UserError(f"recipe field {key} takes a whole number, not {value!r}")
        return type(current)(value)
    if value not in _CHOICES.get(key, ()):
        raise UserError(f"recipe field {key} takes one of {', '.join(_CHOICES[key])}")
    return value


_CHOICES = {
    "stem": STEMS,
    "optimizer": ("adamw", "sgd"),
    "schedule": ("onecycle", "plateau"),
}
