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


def test_lowres_works_in_the_source_pixels():
    from dataclasses import replace

    from karyosearch.train.augment import source_scale

    bare = replace(PRESETS["default"], rotate=0.0, scale=(1.0, 1.0), translate=0.0, flips=False,
                   intensity=0.0)  # fmt: skip
    # crops 40 px long (input px per source px 3.2 at 128) and 128 px long (1.0)
    scale = torch.from_numpy(source_scale([np.ones((40, 20)), np.ones((10, 128))] * 100, 128))
    assert torch.allclose(scale[:2], torch.tensor([3.2, 1.0]))
    stripes = torch.zeros(200, 1, 128, 128)
    stripes[:, :, :, ::2] = 1.0
    out = augment(stripes, replace(bare, lowres=0.9), torch.Generator().manual_seed(0), scale)
    contrast = (out[:, 0, :, 1:] - out[:, 0, :, :-1]).abs().mean(dim=(1, 2))
    touched = contrast < 0.999
    # a 40 px source brought to >= 36 px cannot hold 128 px stripes; a 128 px one at >= 115 px
    # keeps some of them: the factor applies to the source's side, not the input's
    small, large = touched[0::2], touched[1::2]
    assert 25 < int(small.sum()) < 75 and 25 < int(large.sum()) < 75
    assert float(contrast[0::2][small].max()) < float(contrast[1::2][large].min())
    assert torch.equal(out[~touched], stripes[~touched])


def test_blur_softens_half_the_images_in_source_pixels_and_keeps_the_contrast():
    from dataclasses import replace

    bare = replace(PRESETS["default"], rotate=0.0, scale=(1.0, 1.0), translate=0.0, flips=False,
                   intensity=0.0)  # fmt: skip
    x = torch.zeros(300, 1, 64, 64)
    x[:, :, 16:48, 28:36] = 0.5  # a band on background
    x[:, :, 30:34, 28:36] = 1.0
    assert torch.equal(augment(x, bare, torch.Generator().manual_seed(0)), x)  # off
    recipe = replace(bare, blur=1.0)
    scale = torch.tensor([4.0, 0.5]).repeat(150)  # sigma up to 4 input px, or up to 0.5
    out = augment(x, recipe, torch.Generator().manual_seed(0), scale)
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert 100 < int(changed.sum()) < 200
    assert torch.all(out[:, :, :4, :] == 0)  # far background stays background
    spread = (out[:, 0, :, 20:28] > 0.01).float().sum(dim=(1, 2))  # light left of the band
    assert float(spread[0::2].max()) > float(spread[1::2].max())  # wider blur on small sources
    # the chromosome's bright pixels are brought back near 1, as `prepare` normalises
    top = out[changed].flatten(1).amax(1)
    assert float(top.min()) > 0.9


def test_jpeg_round_trips_half_the_images_in_the_source_pixels():
    from dataclasses import replace

    import pytest

    from karyosearch.errors import UserError
    from karyosearch.train.recipe import TrainOptions, resolve_recipe

    bare = replace(PRESETS["default"], rotate=0.0, scale=(1.0, 1.0), translate=0.0, flips=False,
                   intensity=0.0)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 64, 64, generator=gen).repeat(200, 1, 1, 1)  # noise: JPEG's worst case
    assert torch.equal(augment(x, bare, torch.Generator().manual_seed(0)), x)  # off
    scale = torch.tensor([1.0, 4.0]).repeat(100)  # a 64 px source, or a 16 px one
    out = augment(x, replace(bare, jpeg=20), torch.Generator().manual_seed(0), scale)
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    err = (out - x).abs().mean(dim=(1, 2, 3))
    changed = err > 1e-6
    assert 60 < int(changed.sum()) < 140 and torch.equal(out[~changed], x[~changed])
    # the round trip at the source's side: a 16 px source keeps far less of 64 px noise
    full, small = err[0::2][changed[0::2]], err[1::2][changed[1::2]]
    assert float(small.min()) > float(full.max())
    with pytest.raises(UserError, match="jpeg"):
        resolve_recipe(TrainOptions(data="d", out="o", overrides={"jpeg": 99}))
