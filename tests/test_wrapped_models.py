"""Compiled and wrapped models, models that share modules, and checkpoints that hide pickle shards."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from hf_iia import IIAExplainer, TargetError, UnsafeCheckpointError, UnsupportedModelError
from hf_iia.testing import build_tiny


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_compiled_and_data_parallel_models_give_the_eager_map(kind, worst_case):
    model, processor = build_tiny(kind)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    eager = IIAExplainer(model, processor, steps=2, progress=False).attribute(x, target=0)
    for wrapped in (torch.compile(model), nn.DataParallel(model)):
        maps = IIAExplainer(wrapped, processor, steps=2, progress=False).attribute(x, target=0)
        assert worst_case("torch.compile / DataParallel vs eager", kind, (maps - eager).abs().max()) <= 1e-5


def test_a_compiled_submodule_is_refused():
    model, processor = build_tiny("vit")
    model.vit.layernorm = torch.compile(model.vit.layernorm)
    with pytest.raises(UnsupportedModelError, match="uncompiled"):
        IIAExplainer(model, processor, progress=False)


def test_two_classifiers_sharing_a_backbone_in_two_threads():
    """Hooks live on the shared modules: the lock must cover them, not only each top-level model."""
    first, processor = build_tiny("resnet")
    second, _ = build_tiny("resnet", seed=1)
    second.resnet = first.resnet  # one backbone, two heads
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    explainers = [IIAExplainer(model, processor, steps=2, progress=False) for model in (first, second)]
    expected = [explainer.attribute(x, target=1) for explainer in explainers]
    errors, results = [], {}

    def work(index: int) -> None:
        try:
            results[index] = [explainers[index].attribute(x, target=1) for _ in range(6)]
        except Exception as error:  # noqa: BLE001 - any error is the failure this test looks for
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index in (0, 1):
        assert all(torch.equal(maps, expected[index]) for maps in results[index])


def test_an_index_pointing_at_pickle_shards_is_refused(tmp_path):
    model, _ = build_tiny("resnet")
    model.save_pretrained(tmp_path)
    weights = model.state_dict()
    torch.save(weights, tmp_path / "pytorch_model-00001-of-00001.bin")
    save_file({"decoy": torch.zeros(1)}, tmp_path / "decoy.safetensors")
    (tmp_path / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {name: "pytorch_model-00001-of-00001.bin" for name in weights}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UnsafeCheckpointError, match="pickle shards"):
        IIAExplainer(tmp_path, progress=False)


def test_a_huge_integer_target_is_a_target_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    explainer = IIAExplainer(model, layer="0", steps=1, progress=False)
    with pytest.raises(TargetError):
        explainer.attribute(torch.randn(1, 3, 16, 16), target=2**70)


def test_a_grayscale_model_with_its_own_processor_is_explained(tmp_path):
    """A 1-channel checkpoint whose processor takes one channel: images reach it as luminance."""
    from PIL import Image
    from transformers import ViTImageProcessor

    model, _ = build_tiny("resnet", num_channels=1)
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5], image_std=[0.5])
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    explainer = IIAExplainer(tmp_path, steps=2, progress=False)
    explanation = explainer(Image.new("RGB", (40, 30), (200, 30, 30)))
    assert explanation.pixel_values.shape == (1, 32, 32)
    assert explanation.heatmap.shape == (32, 32) and explanation.overlay().mode == "RGB"


def test_mixed_sizes_with_a_processor_that_does_not_resize_is_an_image_input_error():
    from PIL import Image
    from transformers import ViTImageProcessor

    from hf_iia import ImageInputError

    model, _ = build_tiny("resnet")
    processor = ViTImageProcessor(do_resize=False, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    explainer = IIAExplainer(model, processor, steps=1, progress=False)
    with pytest.raises(ImageInputError, match="one size"):
        explainer([Image.new("RGB", (32, 32)), Image.new("RGB", (40, 32))])


def test_vit_layer_names_resolve_exactly_or_are_refused():
    """A block is named by index, by the adapter's name, by the model's own dotted name or by the module object;
    anything else (e.g. a name that only ends like a block) is refused, never read as some block."""
    from hf_iia import LayerNotFoundError

    model, processor = build_tiny("vit")
    for spec in (1, -1, "layers.1", "vit.layers.1", model.vit.layers[1]):
        assert IIAExplainer(model, processor, layer=spec, progress=False).adapter.levels == ("layers.1",), spec
    for spec in ("bogus.1", "vit.layers.7", "layers.1.attention", nn.Linear(2, 2)):
        with pytest.raises(LayerNotFoundError):
            IIAExplainer(model, processor, layer=spec, progress=False)


def test_a_half_precision_failure_names_the_fix():
    """In float16 a non-finite result names rule='riemann_right' (no a = 0 points) and float32."""
    from hf_iia import NumericalError
    from hf_iia.testing import NaNLogits

    explainer = IIAExplainer(NaNLogits().half(), layer="features.0", progress=False)
    with pytest.raises(NumericalError, match="riemann_right"):
        explainer.attribute(torch.randn(1, 3, 32, 32).half(), 0)
