"""The method seam: the registry (``available_methods``, ``register_method``), a method added in one file, and
``prepare`` running once per explainer (one probe of a stage model, not two).

Models are tiny random-weight checkpoints of :mod:`hf_iia.testing`, saved with ``save_pretrained`` and loaded
through the public API.
"""

from __future__ import annotations

import pickle
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_iia import IIAExplainer, MethodError
from hf_iia.adapters import adapter_for
from hf_iia.methods import METHODS, Method, available_methods, methods_for, register_method, unregister_method
from hf_iia.testing import build_tiny, save_tiny

EXAMPLE = Path(__file__).parent / "examples" / "add_a_method.py"
"""The README's "Add a method" example, run as it is."""

ORDER = (
    "iia",
    "ig",
    "gradcam",
    "gradcam++",
    "layercam",
    "scorecam",
    "attention_rollout",
    "gradient_rollout",
    "gae",
    "attnlrp",
    "legrad",
)


def _image(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_available_methods_are_the_registry_in_order():
    assert available_methods() == ORDER == tuple(METHODS)
    assert all(isinstance(method, Method) for method in METHODS.values())


def test_a_method_added_in_one_file_runs_through_the_explainer(tmp_path):
    """The README example registers gradient x input with the public decorator; the explainer runs it like any
    method, and its map is x * dy/dx summed over channels (checked against autograd); unregistering restores the
    registry."""
    folder = save_tiny("resnet", tmp_path / "resnet")
    before = available_methods()
    runpy.run_path(str(EXAMPLE))
    try:
        assert available_methods() == (*before, "gradient_x_input")
        explainer = IIAExplainer(folder, method="gradient_x_input", device="cpu", progress=False)
        assert "gradient_x_input" in methods_for(explainer.adapter)
        explanation = explainer(_image())
        with pytest.raises(MethodError, match="does not use steps="):
            IIAExplainer(folder, method="gradient_x_input", steps=3, device="cpu", progress=False)
    finally:
        unregister_method("gradient_x_input")
    assert available_methods() == before
    with pytest.raises(MethodError, match="unknown method 'gradient_x_input'"):
        IIAExplainer(folder, method="gradient_x_input", device="cpu", progress=False)

    pixel_values = explanation.pixel_values[None].clone().requires_grad_(True)
    logits = explainer.model(pixel_values).logits
    (gradient,) = torch.autograd.grad(logits[0, explanation.target], pixel_values)
    raw = (pixel_values * gradient).sum(dim=1)[0].detach().double()
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    assert explanation.zero_level is not None  # signed: the raw zero is kept
    np.testing.assert_allclose(explanation.heatmap, expected.numpy(), atol=1e-4)  # maps span [0, 1]


def test_a_name_is_registered_once():
    with pytest.raises(MethodError, match="registered already"):
        register_method("iia")(type(METHODS["iia"]))
    assert available_methods() == ORDER
    with pytest.raises(MethodError, match="unknown method"):
        unregister_method("no_such_method")


def _forwards(model: torch.nn.Module, make) -> tuple[int, object]:
    """How many forward passes of ``model`` building ``make()`` runs, and what it built."""
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        built = make()
    finally:
        handle.remove()
    return len(calls), built


def test_the_default_level_is_resolved_with_one_probe_per_purpose():
    """A stage model (RegNet) is probed once to find its stages and once for the shapes at the processor's size,
    which move IIA's default level to a finer stage; the adapter at that level reuses the first probe (main probed
    the stages again: 3 forwards). iia3's two levels need no shape probe, and one stage probe (main: 2)."""
    model, processor = build_tiny("regnet")
    default = adapter_for(model).levels
    count, explainer = _forwards(model, lambda: IIAExplainer(model, processor, steps=2, progress=False))
    assert explainer.adapter.levels != default  # the grid rule moved the level: the case that probed twice
    assert count == 2
    assert explainer.adapter.levels == IIAExplainer(model, processor, layer=explainer.adapter.levels[0]).adapter.levels
    count, iia3 = _forwards(model, lambda: IIAExplainer(model, processor, preset="iia3", progress=False))
    assert count == 1 and len(iia3.adapter.levels) == 2
    again = pickle.loads(pickle.dumps(explainer))  # rebuilt from the resolved options: the same level, no warning
    assert again.adapter.levels == explainer.adapter.levels


def test_layers_and_the_default_level_read_the_same_probe():
    """explainer.layers() and IIA's default level both come from methods.probe.layer_shapes."""
    from hf_iia.methods.iia import finest_default

    model, processor = build_tiny("regnet")
    explainer = IIAExplainer(model, processor, steps=2, progress=False)
    grid_factor = explainer.family.preset(None).grid_factor
    assert finest_default(explainer.layers(), adapter_for(model).levels[0], grid_factor) == explainer.adapter.levels[0]
