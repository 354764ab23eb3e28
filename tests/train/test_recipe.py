"""Recipes: presets and checked --set overrides."""

from __future__ import annotations

from karyosearch.train.recipe import PRESETS, TrainOptions


def test_recipe_overrides_take_the_field_type():
    from karyosearch.train.recipe import resolve_recipe

    opts = TrainOptions(data="d", out="o", overrides={"rotate": 30, "scale": [0.8, 1.2]})
    recipe = resolve_recipe(opts)
    assert recipe.rotate == 30.0 and isinstance(recipe.rotate, float)
    assert recipe.scale == (0.8, 1.2) and recipe.epochs == PRESETS["default"].epochs


def test_margin_is_a_cosine_in_zero_to_one_for_proxy_networks_only():
    import pytest

    from karyosearch.errors import UserError
    from karyosearch.train.recipe import resolve_recipe

    assert resolve_recipe(TrainOptions(data="d", out="o", overrides={"margin": 0.2})).margin == 0.2
    for bad in (-0.1, 1.0):
        with pytest.raises(UserError, match="margin"):
            resolve_recipe(TrainOptions(data="d", out="o", overrides={"margin": bad}))
    # refused before any image is read: the recipe is resolved first
    logits = TrainOptions(data="d", out="o", arch="resnext", overrides={"margin": 0.2})
    with pytest.raises(UserError, match="margin applies to the proxy networks only, not resnext"):
        resolve_recipe(logits)
