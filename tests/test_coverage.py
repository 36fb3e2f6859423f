"""Every image-classification type of transformers (and the zoo's timm models): explained, or refused with a reason.

For each explained type a tiny random model of the zoo is saved with ``save_pretrained`` (plus its image
processor) and loaded back through ``IIAExplainer(folder)``; the map must be valid (float32, finite, in
``[0, 1]``, not constant), depend on the target, be the same in a batch as alone, and the model must be left
as found. Each layout the package converts is checked against a Grad-CAM computed here by hand.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from hf_iia import AttentionNotReachableError, IIAExplainer, UnsupportedModelError
from hf_iia import testing as zoo
from hf_iia.adapters.registry import REFUSED, supported_model_types
from hf_iia.adapters.stages import StageAdapter
from hf_iia.adapters.vit import HookedViTAdapter

TYPES = [t for t in zoo.IMAGE_CLASSIFICATION_TYPES if t not in zoo.SKIP_REASONS]
# NaFlex types take their masks and grids from the processor with the images, never from pixel_values alone (which
# _check_explainer attributes): tests/test_naflex.py checks them through images.
NAFLEX = {"siglip2"}
EXPLAINED = [t for t in TYPES if t not in REFUSED and t not in NAFLEX]
TIMM = list(zoo.TIMM_MODELS)


def _images() -> list[Image.Image]:
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 256, (45, 38 + 7 * i, 3), dtype=np.uint8)) for i in range(2)]


def _state(model: torch.nn.Module) -> tuple:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    training = tuple(m.training for m in model.modules())
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return hooks, training, weights, attention


def _same_state(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and a[1] == b[1] and a[3] == b[3] and all(torch.equal(a[2][k], b[2][k]) for k in a[2])


def _check_explainer(explainer: IIAExplainer) -> None:
    images = _images()
    before = _state(explainer.model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a constant map warns: fail on it
        pixel_values, _ = explainer.preprocess(images)
        maps = explainer.attribute(pixel_values, target=[0, 0])
        other = explainer.attribute(pixel_values, target=[1, 1])
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 and (maps.flatten(1).std(dim=1) > 1e-3).all()
    assert (maps - other).abs().max() > 1e-3, "the map does not depend on the target"
    alone = torch.cat([explainer.attribute(pixel_values[i : i + 1], target=0) for i in range(2)])
    assert (maps - alone).abs().max() <= 1e-5, "batch and per-image maps differ"
    assert _same_state(before, _state(explainer.model)), "the model was not left as found"


@pytest.mark.parametrize("model_type", EXPLAINED)
def test_every_explained_type_gives_valid_maps(model_type, tmp_path):
    folder = zoo.save_tiny(model_type, tmp_path / model_type)
    _check_explainer(IIAExplainer(folder, device="cpu", steps=2, progress=False))


@pytest.mark.parametrize("name", TIMM)
def test_every_timm_model_gives_valid_maps(name, tmp_path):
    folder = zoo.save_tiny_timm(name, tmp_path / name)
    _check_explainer(IIAExplainer(folder, device="cpu", steps=2, progress=False))


@pytest.mark.parametrize("model_type", sorted(set(REFUSED) & set(TYPES)))
def test_refused_types_say_why_and_name_layer(model_type):
    model, _ = zoo.build_tiny(model_type)
    with pytest.raises(UnsupportedModelError, match=r"not explained by default: .+layer="):
        IIAExplainer(model, progress=False)


def test_every_type_is_explained_or_refused_with_a_reason():
    unaccounted = set(zoo.IMAGE_CLASSIFICATION_TYPES) - set(supported_model_types()) - set(REFUSED)
    assert not unaccounted
    assert not set(supported_model_types()) & set(REFUSED)


def _hand_gradcam(
    model: torch.nn.Module, module: torch.nn.Module, side: str, pixel_values: torch.Tensor, target: int, to_nchw
) -> torch.Tensor:
    """Grad-CAM written here: capture the module's output (or input), convert the layout by hand, weight, sum."""
    captured = {}

    def keep(tensor: torch.Tensor) -> None:
        tensor.retain_grad()
        captured["a"] = tensor

    if side == "input":
        handle = module.register_forward_pre_hook(lambda _m, args: keep(args[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _a, out: keep(out[0] if isinstance(out, tuple) else out))
    try:
        output = model(pixel_values)
    finally:
        handle.remove()
    logits = getattr(output, "logits", output)
    logits[:, target].sum().backward()
    activation, gradient = to_nchw(captured["a"].detach()), to_nchw(captured["a"].grad)
    cam = (gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1).clamp_min(0)
    return _upsampled(cam, pixel_values.shape[2:])


def _upsampled(cam: torch.Tensor, size) -> torch.Tensor:
    """A ``[B, h, w]`` Grad-CAM brought to the input ``size`` and min-max normalised, as the package does."""
    cam = torch.nn.functional.interpolate(cam.unsqueeze(1), size=size, mode="bicubic", align_corners=False).squeeze(1)
    flat = cam.flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
    return (cam - low) / (high - low)


@pytest.mark.parametrize(
    "kind, name",
    [
        ("hf", "swin"),
        ("hf", "swinv2"),
        ("hf", "donut-swin"),
        ("hf", "focalnet"),
        ("hf", "segformer"),
        ("hf", "hgnet_v2"),
        ("timm", "swin_tiny_patch4_window7_224"),
    ],  # hgnet_v2: stages read off the classifier's own output
)
def test_layouts_match_a_hand_written_gradcam(kind, name):
    model, processor = zoo.build_tiny(name) if kind == "hf" else zoo.build_tiny_timm(name)
    explainer = IIAExplainer(model, processor, method="gradcam", progress=False)
    adapter = explainer.adapter
    assert isinstance(adapter, StageAdapter)
    (tap,) = adapter.levels
    point = adapter._points[tap]
    pixel_values, _ = explainer.preprocess(_images()[:1])
    pixel_values = pixel_values.float()
    ours = explainer.attribute(pixel_values, target=0)
    side = pixel_values.shape[2:]

    def to_nchw(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() == 4 and point.layout == "NHWC":
            return tensor.permute(0, 3, 1, 2)
        if tensor.dim() == 3:  # [B, h*w, C] on a square grid
            h = int(round(tensor.shape[1] ** 0.5))
            assert h * h == tensor.shape[1] and side[0] == side[1]
            return tensor.transpose(1, 2).reshape(tensor.shape[0], -1, h, h)
        return tensor

    expected = _hand_gradcam(model, point.module, point.side, pixel_values, 0, to_nchw)
    correlation = torch.corrcoef(torch.stack([ours.flatten(), expected.flatten()]))[0, 1]
    assert correlation >= 0.99, f"{name}: Pearson {correlation:.3f} against the hand-written Grad-CAM"


class _Recorder:
    """A TapRun that substitutes nothing and records what reaches each tap."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def expand(self, tap, *tensors):
        return tensors

    def represent(self, tap, rep):
        self.seen.append(rep.detach())
        return rep


def test_hooked_attention_sees_probabilities_and_refuses_other_tensors():
    model, processor = zoo.build_tiny(
        "data2vec-vision"
    )  # loads with SDPA attention, which never forms the probabilities
    attention_class = type(model.data2vec_vision.encoder.layer[0].attention.attention)
    adapter = IIAExplainer(model, processor, progress=False).adapter
    assert isinstance(adapter, HookedViTAdapter)
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(pixel_values).logits
        recorder = _Recorder()
        with adapter.installed(recorder, adapter.taps):
            hooked = model(pixel_values).logits
    assert [p.shape for p in recorder.seen] == [(2, 2, 17, 17)] * len(adapter.taps)  # [N, heads, 1 + 4x4, 1 + 4x4]
    assert all(torch.allclose(p.sum(-1), torch.ones(())) for p in recorder.seen)
    assert torch.allclose(hooked, plain, atol=1e-5), "the eager attention does not compute what SDPA computes"
    assert type(model.data2vec_vision.encoder.layer[0].attention.attention) is attention_class
    adapter.dropouts = [block.attention.output.dropout for block in adapter.blocks]  # hidden states, not probabilities
    with (
        pytest.raises(AttentionNotReachableError, match="rows summing to 1"),
        torch.no_grad(),
        adapter.installed(_Recorder(), adapter.taps),
    ):
        model(pixel_values)


def test_unrolled_tokens_match_a_gradcam_rerolled_by_the_model():
    """Hiera's first stage keeps its tokens in unrolled mask-unit order: the package's Grad-CAM there equals one
    computed on the raw tokens and put on the grid by the model's own ``reroll``."""
    model, processor = zoo.build_tiny("hiera")
    layer = "hiera.encoder.stages.0"
    explainer = IIAExplainer(model, processor, method="gradcam", layer=layer, progress=False)
    assert explainer.adapter._points[layer].order, "the first stage's tokens should be out of raster order"
    pixel_values = explainer.preprocess(_images()[:1])[0].float()
    ours = explainer.attribute(pixel_values, target=0)
    captured = {}

    def keep(_module, _args, output):
        output[0].retain_grad()
        captured["a"] = output[0]

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        model(pixel_values).logits[:, 0].sum().backward()
    finally:
        handle.remove()
    activation, gradient = captured["a"].detach(), captured["a"].grad  # [B, T, C], unrolled order
    cam = (gradient.mean(dim=1, keepdim=True) * activation).sum(-1).clamp_min(0)  # [B, T]
    with torch.no_grad():
        cam = model.hiera.encoder.reroll(cam.unsqueeze(-1), stage_idx=0).squeeze(-1)  # [B, h, w], the model's grid
    expected = _upsampled(cam, pixel_values.shape[2:])
    correlation = torch.corrcoef(torch.stack([ours.flatten(), expected.flatten()]))[0, 1]
    assert correlation >= 0.99, f"Pearson {correlation:.3f} against the Grad-CAM rerolled by Hiera"


def test_a_token_stage_whose_order_nothing_establishes_is_refused(monkeypatch):
    """LeViT returns no reshaped_hidden_states; its raster order is established only by its own subsampling module
    (RASTER_TOKEN_MODULES). Without that evidence every token stage is refused, never read as a guessed grid."""
    from hf_iia.adapters import stages

    model, processor = zoo.build_tiny("levit")
    assert IIAExplainer(model, processor, progress=False).adapter.levels  # explained with the evidence
    monkeypatch.setattr(stages, "RASTER_TOKEN_MODULES", {})
    with pytest.raises(UnsupportedModelError, match="no evidence establishes"):
        IIAExplainer(model, processor, progress=False)
