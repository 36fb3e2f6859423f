"""IIAExplainer on every tiny architecture, loaded with from_pretrained from a saved folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hf_iia import (
    AttentionNotReachableError,
    Explanation,
    IIAExplainer,
    ImageInputError,
    LayerNotFoundError,
    TargetError,
    UnsupportedModelError,
)
from hf_iia.testing import build_tiny


@pytest.fixture(scope="module")
def explainers(tiny_folder):
    cache = {}

    def get(kind: str, **options) -> IIAExplainer:
        key = (kind, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = IIAExplainer(tiny_folder(kind), progress=False, **options)
        return cache[key]

    return get


KINDS = ["vit", "deit", "resnet", "convnext", "timm"]


@pytest.mark.parametrize("kind", KINDS)
def test_maps_are_valid_and_deterministic(explainers, kind, pixel_values):
    explainer = explainers(kind)
    maps = explainer.attribute(pixel_values)
    assert maps.shape == (2, 32, 32) and maps.dtype == torch.float32 and maps.device.type == "cpu"
    assert torch.isfinite(maps).all() and maps.min() == 0 and maps.max() == 1
    assert maps.flatten(1).std(dim=1).min() > 0.05  # not constant
    torch.testing.assert_close(explainer.attribute(pixel_values), maps, rtol=0, atol=0)  # same call, same map


@pytest.mark.parametrize("kind", KINDS)
def test_batch_equals_per_image(explainers, kind, pixel_values):
    explainer = explainers(kind)
    batch = explainer.attribute(pixel_values, target=[1, 4])
    single = torch.cat([explainer.attribute(pixel_values[i : i + 1], target=t) for i, t in enumerate([1, 4])])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_different_targets_give_different_maps(explainers, kind, pixel_values):
    explainer = explainers(kind)
    first, second = explainer.attribute(pixel_values[:1], target=0), explainer.attribute(pixel_values[:1], target=2)
    assert (first - second).abs().max() > 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_reference_preset_runs_on_every_architecture(explainers, kind, pixel_values):
    maps = explainers(kind, preset="reference").attribute(pixel_values)
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_logits_match_the_model_in_eval_mode_and_restore_training(tiny_folder, kind, pixel_values):
    explainer = IIAExplainer(tiny_folder(kind), device="cpu", progress=False)
    model = explainer.model.eval()
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits
    model.train()
    model.get_submodule(next(name for name, _ in model.named_modules() if name)).eval()  # a mixed state to restore
    modes = [module.training for module in model.modules()]
    logits = explainer.logits(pixel_values.double())  # cast to the model's dtype
    assert logits.shape == (2, model.config.num_labels) and logits.dtype == torch.float32
    assert not logits.requires_grad
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert [module.training for module in model.modules()] == modes
    with pytest.raises(ImageInputError):
        explainer.logits(pixel_values.long())


def test_explanation_fields_and_overlay_undo_the_processor(explainers):
    explainer = explainers("timm")  # timm processor: resize shortest edge, then centre crop
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    explanation = explainer(image)
    assert isinstance(explanation, Explanation)
    assert explanation.heatmap.shape == (32, 32) and explanation.heatmap.dtype == np.float32
    logits = explainer.model(explainer.preprocess(image)[0]).logits.detach()
    assert explanation.target == int(logits.argmax())
    assert explanation.score == pytest.approx(float(logits.softmax(-1).max()), rel=1e-5)
    assert explanation.label == explainer.id2label[explanation.target]
    on_image = explanation.heatmap_on_image()
    assert on_image.shape == (60, 90)
    visible = ~np.isnan(on_image)
    # the processor keeps a centred 60x60 square of the 90-wide image: the sides are not seen
    assert visible[:, 20:70].all() and not visible[:, :10].any() and not visible[:, 80:].any()
    assert explanation.overlay().size == image.size


def test_inputs_paths_arrays_and_lists(explainers, tmp_path):
    explainer = explainers("resnet")
    rgb = np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(rgb).save(path)
    from_path, from_array, from_pil = explainer([str(path), rgb, Image.fromarray(rgb)])
    np.testing.assert_allclose(from_path.heatmap, from_array.heatmap)
    np.testing.assert_allclose(from_pil.heatmap, from_array.heatmap)
    gray = explainer(rgb[:, :, 0])
    rgba = explainer(Image.fromarray(rgb).convert("RGBA"))
    assert gray.heatmap.shape == rgba.heatmap.shape == (32, 32)
    assert explainer([]) == []


def test_targets_by_label_name(explainers, pixel_values):
    explainer = explainers("vit")
    by_index = explainer.attribute(pixel_values, target=3)
    for name in ["tabby, tabby cat", "TABBY, Tabby Cat", "tabby cat"]:
        torch.testing.assert_close(explainer.attribute(pixel_values, target=name), by_index)
    assert explainer.resolve_targets(["cat", 2], 2).tolist() == [0, 2]


@pytest.mark.parametrize(
    "images, error",
    [
        (object(), ImageInputError),
        (np.zeros((4, 4, 2), dtype=np.uint8), ImageInputError),
        (np.zeros((3, 8, 8, 3), dtype=np.uint8), ImageInputError),
        (np.full((8, 8, 3), np.nan, dtype=np.float32), ImageInputError),
        ("/no/such/image.png", ImageInputError),
    ],
)
def test_bad_images_raise_clear_errors(explainers, images, error):
    with pytest.raises(error):
        explainers("resnet")(images)


def test_bad_pixel_values_raise(explainers):
    explainer = explainers("resnet")
    with pytest.raises(ImageInputError, match="shape"):
        explainer.attribute(torch.zeros(2, 32, 32, 3, 1))
    with pytest.raises(ImageInputError, match="NaN"):
        explainer.attribute(torch.full((1, 3, 32, 32), float("nan")))


@pytest.mark.parametrize(
    "target, message",
    [
        ("zebra", "unknown label"),
        (5, "out of range"),
        (-2, "out of range"),
        ([1], "targets for 2 images"),
        (1.5, "must be"),
    ],
)
def test_bad_targets_raise(explainers, pixel_values, target, message):
    with pytest.raises(TargetError, match=message):
        explainers("resnet").attribute(pixel_values, target=target)


def test_model_without_logits(tiny_folder):
    class Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)  # a feature map, not logits

    with pytest.raises(UnsupportedModelError, match="logits"):
        IIAExplainer(Features(), layer="conv", progress=False).attribute(torch.randn(1, 3, 8, 8))


def test_unsupported_architecture_names_the_escape_hatch():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 5)).eval()  # no config: no family knows it
    with pytest.raises(UnsupportedModelError, match="layer="):
        IIAExplainer(model, progress=False)
    explainer = IIAExplainer(model, layer="1", progress=False)
    with pytest.raises(UnsupportedModelError, match="feature map"):
        explainer.attribute(torch.randn(1, 3, 32, 32))  # the chosen layer outputs logits [B, 5], not a feature map


def test_layer_not_found(tiny_folder):
    with pytest.raises(LayerNotFoundError, match="not found"):
        IIAExplainer(tiny_folder("resnet"), layer="resnet.encoder.stage9", progress=False)
    with pytest.raises(LayerNotFoundError, match="block"):
        IIAExplainer(tiny_folder("vit"), layer=17, progress=False)
    unused = IIAExplainer(tiny_folder("resnet"), layer="resnet.pooler", progress=False)
    unused.model.resnet.pooler = nn.AdaptiveAvgPool2d(1)  # the hooked module is no longer in the forward pass
    with pytest.raises(LayerNotFoundError, match="not reached"):
        unused.attribute(torch.randn(1, 3, 32, 32))


class OwnAttention(nn.Module):
    """A self-attention that computes its probabilities itself, bypassing AttentionInterface."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden, 2, batch_first=True)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        return self.attention(hidden_states, hidden_states, hidden_states)[0], None


def test_attention_not_reachable(tmp_path):
    model, _ = build_tiny("vit")  # 2 blocks of width 16 on a 4 x 4 patch grid
    for layer in model.vit.layers:
        layer.attention = OwnAttention(16)
    with pytest.raises(AttentionNotReachableError, match="AttentionInterface"):
        IIAExplainer(model, progress=False).attribute(torch.randn(1, 3, 32, 32))


def test_moved_names_stay_importable_from_the_explainer():
    """Explanation, the model lock, unwrap and the map post-processing have their own modules; the explainer
    module re-exports the very same objects."""
    from hf_iia import explainer, explanation, loading, locks, maps

    assert explainer.Explanation is explanation.Explanation
    assert explainer.model_lock is locks.model_lock and explainer.unwrap is loading.unwrap
    assert (explainer.normalise, explainer.upsample, explainer.zero_levels) == (
        maps.normalise,
        maps.upsample,
        maps.zero_levels,
    )


@pytest.mark.parametrize("model_type", ["resnet", "vit", "swin"])
def test_layer_specs_are_parsed_alike_by_every_family(model_type):
    """One parser (adapters.base.resolve_layer) for every family: a bool is no index (it read as stage 1 of a
    CNN), an empty list is refused (a ViT explained no level), a repeated layer is one level (a stage model
    interpolated it twice), and a wrong index names the choices."""
    model, processor = build_tiny(model_type)
    for spec in (True, [], [0, True]):
        with pytest.raises(LayerNotFoundError):
            IIAExplainer(model, processor, layer=spec, progress=False)
    explainer = IIAExplainer(model, processor, layer=[0, 0, -1, 0], progress=False)
    assert explainer.adapter.levels == tuple(dict.fromkeys(explainer.adapter.taps[i] for i in (0, -1)))
    with pytest.raises(LayerNotFoundError, match=r"choose an index 0\.\.\d+, a name in \["):
        IIAExplainer(model, processor, layer=99, progress=False)
