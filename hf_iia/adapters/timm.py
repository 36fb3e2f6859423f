"""timm models in ``TimmWrapperForImageClassification``: ViT-like models by their attention, the rest by stages.

ViT-like (``VisionTransformer``, ``VisionTransformerDistilled``, ``Eva``, ... : ``blocks`` whose
``attn`` has an ``attn_drop`` module and a ``fused_attn`` switch): fused attention is turned
off for the call (and restored), and a hook on each block's ``attn_drop`` hands the attention
probabilities ``[N, heads, T, T]`` to the engine (:class:`~hf_iia.adapters.vit.HookedViTAdapter`). The rows the head reads follow timm's own
pooling: ``global_pool="token"`` reads the class token (and the distillation token of a
distilled model, whose two heads are averaged in eval), ``"avg"`` the mean of the tokens after
the ``num_prefix_tokens`` (class and register tokens). Other poolings (attention pooling
``"map"``, ``"max"``...) are refused with the ``layer=`` escape hatch.

Everything else (conv nets, Swin, LeViT, MobileViT, EfficientViT, ...): the modules of
``feature_info`` and the input of the head's global pooling (the default: the feature map
the classifier pools), each with its layout established on a probe forward as in
:mod:`hf_iia.adapters.stages`: timm Swin's ``[B, H, W, C]`` maps are read channels-last.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import AttentionNotReachableError, IIAError, LayerNotFoundError, UnsupportedModelError
from .base import LayerSpec, evaluation_mode
from .guard import Installation, remove_on_undo
from .registry import register_adapter
from .stages import StageAdapter, StagePoint, infer_layout, raster_token_evidence, select_stages
from .vit import HookedViTAdapter, Readout, ViTAdapter

PREFIX = "timm_model."


def _timm_model(model: nn.Module) -> nn.Module:
    """The timm network inside a ``TimmWrapperForImageClassification``."""
    return model.get_submodule("timm_model")


def _attention_blocks(timm_model: nn.Module) -> list[nn.Module] | None:
    """The blocks of a ViT-like timm model whose attention probabilities a hook can reach, else ``None``."""
    blocks = getattr(timm_model, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or not len(blocks):
        return None
    for block in blocks:
        attention = getattr(block, "attn", None)
        if not isinstance(getattr(attention, "attn_drop", None), nn.Module) or not hasattr(attention, "fused_attn"):
            return None
    if not hasattr(timm_model, "num_prefix_tokens") or not hasattr(timm_model, "patch_embed"):
        return None
    return list(blocks)


def _readout(timm_model: nn.Module) -> Readout:
    prefix = int(timm_model.num_prefix_tokens)  # type: ignore[arg-type]
    pool = getattr(timm_model, "global_pool", None)
    distilled = getattr(timm_model, "dist_token", None) is not None
    if pool == "token":
        return Readout(prefix=prefix, rows=(0, 1) if distilled else (0,))
    if pool == "avg" and not distilled:
        return Readout(prefix=prefix, rows=(), pooled="patches")
    raise UnsupportedModelError(
        f"timm {type(timm_model).__name__} pools its tokens with global_pool={pool!r}, which IIA does not read "
        "yet; pass layer= the dotted name of a block output to explain it as activations"
    )


class TimmViTAdapter(HookedViTAdapter):
    """A ViT-like timm model: attention probabilities reached at each block's ``attn.attn_drop``."""

    def explicit_attention(self, installation: Installation) -> None:
        """Fused attention off for the call: the unfused path computes the probabilities that attn_drop sees."""
        for block in self.blocks:
            attention: Any = block.get_submodule("attn")  # timm's Attention: its fused_attn is a plain bool
            installation.undo(functools.partial(setattr, attention, "fused_attn", attention.fused_attn))
            attention.fused_attn = False

    def not_reached(self, taps: Sequence[str]) -> IIAError:
        return AttentionNotReachableError(
            f"the attention probabilities of {list(taps)} never reached attn.attn_drop in "
            f"{type(_timm_model(self.model)).__name__}; pass layer= the dotted name of a block to explain its output"
        )


def _candidates(model: nn.Module) -> dict[str, StagePoint]:
    """``feature_info`` modules (outputs), then the input of the head's global pooling."""
    timm_model = _timm_model(model)
    points = {
        f"{PREFIX}{info['module']}": StagePoint(timm_model.get_submodule(info["module"]))
        for info in getattr(timm_model, "feature_info", [])
        if info.get("module")
    }
    for pool_name in ("global_pool", "head.global_pool"):
        with contextlib.suppress(AttributeError):
            module = timm_model.get_submodule(pool_name)
            if isinstance(module, nn.Module):
                points[f"{PREFIX}{pool_name}"] = StagePoint(module, side="input")
                break
    return points


def _probe_sizes(model: nn.Module) -> list[tuple[int, int]]:
    """The wrapper's ``pretrained_cfg`` input size (what its processor makes), non-square first, then square."""
    size = getattr(getattr(model.timm_model, "patch_embed", None), "img_size", None)
    if size is None:
        cfg = getattr(model.config, "pretrained_cfg", None) or getattr(model.timm_model, "pretrained_cfg", {})
        size = cfg.get("input_size", (3, 224, 224))[1:]
    side = max(32, min(int(size[0]), 224)) // 32 * 32
    return [(side, side * 3 // 2), (side, side)]


@torch.no_grad()
def _establish_layouts(model: nn.Module, points: dict[str, StagePoint]) -> tuple[dict[str, StagePoint], dict[str, str]]:
    """Probe forward: the layout of every candidate (non-square input first, then square), or why it has none."""
    shapes: dict[str, tuple[int, ...]] = {}
    tensors: dict[str, torch.Tensor] = {}  # the probe's (small) tensors, to find two taps on one tensor

    def recorder(name: str, side: str):
        def hook(module: nn.Module, args: tuple, output: object = None) -> None:
            tensor = args[0] if side == "input" else output
            if isinstance(tensor, torch.Tensor):
                shapes[name] = tuple(tensor.shape)
                tensors[name] = tensor

        return hook

    parameter = next(model.parameters())
    channels = int(getattr(model.config, "num_channels", 3) or 3)
    failure: Exception | None = None
    for size in _probe_sizes(model):
        shapes.clear()

        def setup(installation: Installation) -> None:
            for name, point in points.items():
                hook = recorder(name, point.side)
                register = (
                    point.module.register_forward_pre_hook
                    if point.side == "input"
                    else point.module.register_forward_hook
                )
                remove_on_undo(installation, register(hook))

        with evaluation_mode(model), Installation(setup):
            try:
                _timm_model(model)(torch.zeros(1, channels, *size, device=parameter.device, dtype=parameter.dtype))
                break
            except Exception as error:  # a model that takes only its own input size: try the square probe
                failure = error
    else:
        raise UnsupportedModelError(f"probing timm {type(model.timm_model).__name__} failed ({failure}); pass layer=")
    stages, refused = {}, {}
    names = list(points)
    for position, (name, point) in enumerate(points.items()):
        if name not in shapes:
            refused[name] = "it did not run on the probe input"
            continue
        same = [later for later in names[position + 1 :] if tensors.get(later) is tensors[name]]
        if same:
            # e.g. a ResNet's last stage output is the head pool's input: two levels on one tensor would interpolate
            # it twice (multi-layer IIA would be a_1 * a_2 * A), so the later tap stands for both.
            refused[name] = f"it is the same tensor as {same[0]!r} (nothing runs between them)"
            continue
        try:
            layout = infer_layout(shapes[name], size)
        except LayerNotFoundError as error:
            refused[name] = str(error)
            continue
        if layout == "tokens" and raster_token_evidence(model) is None:
            refused[name] = f"{name!r} outputs tokens whose order (raster or not) no evidence establishes"
            continue
        stages[name] = StagePoint(point.module, side=point.side, layout=layout)
    return stages, refused


@register_adapter("timm_wrapper")
def timm_adapter(model: nn.Module, layer: LayerSpec) -> ViTAdapter | StageAdapter:
    """timm models in ``TimmWrapperForImageClassification`` (see the module docstring)."""
    timm_model = _timm_model(model)
    blocks = _attention_blocks(timm_model)
    block_names = {f"{PREFIX}blocks.{i}" for i in range(len(blocks or ()))} | {
        f"layers.{i}" for i in range(len(blocks or ()))
    }
    if blocks is not None and (not isinstance(layer, str) or layer in block_names):
        embed: Any = timm_model.get_submodule("patch_embed")  # timm's PatchEmbed: sizes as plain tuples
        return TimmViTAdapter(
            model,
            layer,
            blocks=blocks,
            dropouts=[block.get_submodule("attn.attn_drop") for block in blocks],
            readout=_readout(timm_model),
            patch_size=embed.patch_size[0],
            image_size=tuple(embed.img_size),
        )
    candidates = _candidates(model)
    if isinstance(layer, str) and not layer.startswith(PREFIX):
        layer = f"{PREFIX}{layer}"
    if not candidates:
        raise UnsupportedModelError(
            f"timm model {type(timm_model).__name__} exposes no feature_info or global_pool; pass layer= the dotted "
            "name of a convolutional module (e.g. 'timm_model.stages.3')"
        )
    stages, refused = _establish_layouts(model, candidates)
    default = next((name for name, point in stages.items() if point.side == "input"), None) or (
        list(stages)[-1] if stages else None
    )
    return select_stages(model, layer, stages, default, refused)
