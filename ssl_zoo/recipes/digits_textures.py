"""The embedded CPU benchmark (issue 14, item 8): each method's digits recipe at 64 px on ``digits_textures``.

Same backbone (timm resnet18), batch 64, optimiser and method arguments as the ``*_r18_digits`` recipes
(ours, docs/training.md), at 64 px and for 40 epochs: about 760 optimiser steps, ~7 CPU minutes for MoCo v2
on 2 cores. The dataset is frozen (ssl_zoo/data/digits_textures.py) and was defined before any method
was run on it.
"""
import dataclasses

from ..recipe import get_recipe, register_recipe

BENCHMARK_EPOCHS = 40

for base in ("moco_v2_r18_digits", "simsiam_r18_digits", "leoclr_r18_digits", "moco_v2_synth_r18_digits"):
    recipe = get_recipe(base)
    register_recipe(dataclasses.replace(
        recipe, name=base.replace("_digits", "_digits_textures"), dataset="digits_textures",
        augment=dataclasses.replace(recipe.augment, image_size=64),
        train=dataclasses.replace(recipe.train, epochs=BENCHMARK_EPOCHS),
        description=f"{recipe.description.split(' on the embedded')[0]} on the embedded digits_textures benchmark "
                    f"(64 px, {BENCHMARK_EPOCHS} epochs, CPU-friendly).",
    ))
