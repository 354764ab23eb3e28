"""Training images: the fixed-scale canvas and the batch augmentation."""

from __future__ import annotations

import numpy as np
import torch

from karyosearch.train.augment import augment, canvas_for
from karyosearch.train.recipe import PRESETS


def test_canvas_for_is_a_percentile_of_long_sides():
    crops = [np.zeros((h, 5), np.uint8) for h in range(1, 101)]
    assert canvas_for(crops, 0.0) == 0
    assert canvas_for(crops, 95.0) == int(np.ceil(np.percentile(np.arange(1, 101), 95)))
    assert canvas_for(crops, 100.0) == 100


def test_augment_keeps_shape_and_range_and_is_seeded():
    x = torch.rand(6, 1, 32, 32)
    recipe = PRESETS["default"]
    a = augment(x, recipe, torch.Generator().manual_seed(0))
    b = augment(x, recipe, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    paper = augment(x, PRESETS["paper"], torch.Generator().manual_seed(0))
    assert paper.shape == x.shape


def test_scan_gamma_bends_intensities_both_ways_and_keeps_the_background():
    from dataclasses import replace

    x = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8).repeat(400, 1, 1, 1)
    x[:, :, 0, 0] = 0.0  # background pixel
    bare = replace(PRESETS["default"], rotate=0.0, scale=(1.0, 1.0), translate=0.0, flips=False,
                   intensity=0.0)  # fmt: skip
    assert torch.equal(augment(x, bare, torch.Generator().manual_seed(1)), x)  # off: unchanged
    out = augment(x, replace(bare, scan_gamma=0.4), torch.Generator().manual_seed(1))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.all(out[:, :, 0, 0] == 0.0)
    mid = out[:, 0, 4, 0] - x[:, 0, 4, 0]  # a mid-grey pixel: brighter in some, darker in others
    assert (mid > 0.02).sum() > 50 and (mid < -0.02).sum() > 50
    # gammas stay within exp(+-0.4): the mid-grey value v maps between v**1.49 and v**0.67
    v = float(x[0, 0, 4, 0])
    lo = min(v ** float(np.exp(0.4)), 1 - (1 - v) ** float(np.exp(-0.4)))
    hi = max(v ** float(np.exp(-0.4)), 1 - (1 - v) ** float(np.exp(0.4)))
    assert float(out[:, 0, 4, 0].min()) >= lo - 1e-6 and float(out[:, 0, 4, 0].max()) <= hi + 1e-6


def test_resample_softens_half_the_images_and_only_when_asked():
    from dataclasses import replace

    from karyosearch.train.augment import resample

    stripes = torch.zeros(200, 1, 32, 32)
    stripes[:, :, :, ::2] = 1.0  # the finest detail a 32 px image holds
    out = resample(stripes, 0.5, torch.Generator().manual_seed(0))
    assert out.shape == stripes.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    contrast = (out[:, 0, :, 1:] - out[:, 0, :, :-1]).abs().mean(dim=(1, 2))
    softened = contrast < 0.5  # untouched images keep a contrast of 1 between neighbours
    assert 60 < int(softened.sum()) < 140 and torch.equal(out[~softened], stripes[~softened])
    bare = replace(PRESETS["default"], rotate=0.0, scale=(1.0, 1.0), translate=0.0, flips=False,
                   intensity=0.0)  # fmt: skip
    assert torch.equal(augment(stripes, bare, torch.Generator().manual_seed(0)), stripes)
    on = augment(stripes, replace(bare, resample=0.5), torch.Generator().manual_seed(0))
    assert not torch.equal(on, stripes)
