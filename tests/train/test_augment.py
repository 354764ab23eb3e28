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
