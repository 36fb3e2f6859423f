"""The real ImageNet EfficientNet-Lite0 (TimmWrapper checkpoint built offline) on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from hf_iia import IIAExplainer
from hf_iia.tools.demo import sample_images


@pytest.fixture(scope="module")
def photos() -> dict:
    return dict(sample_images())


@pytest.mark.parametrize("preset", ["default", "reference"])
def test_cat_photo_map_is_on_the_cat(lite0_folder, photos, preset):
    explainer = IIAExplainer(lite0_folder, preset=preset, progress=False)
    explanation = explainer(photos["chelsea"])
    assert "tabby" in explanation.label
    heat = explanation.heatmap_on_image()  # [300, 451], NaN outside the centre crop
    cat = np.zeros(heat.shape, dtype=bool)
    cat[30:300, 140:400] = True  # a crude box around the cat's head
    visible = ~np.isnan(heat)
    peak = np.unravel_index(np.nanargmax(heat), heat.shape)
    assert cat[peak]  # the default's 14 x 14 map peaks on an eye; the reference's 7 x 7 map covers the face
    assert np.nanmean(heat[cat]) > 1.5 * np.nanmean(heat[~cat & visible])
    assert np.nansum(heat[cat]) / np.nansum(heat) > cat[visible].mean()  # more mass than the box's area share


def test_explain_by_label_name_on_real_model(lite0_folder, photos):
    explainer = IIAExplainer(lite0_folder, steps=3, progress=False)
    espresso = explainer(photos["coffee"], target="espresso")
    assert espresso.label == "espresso" and espresso.score > 0.5
    cup = explainer(photos["coffee"], target="cup")
    assert cup.label == "cup" and np.abs(cup.heatmap - espresso.heatmap).max() > 0.05
