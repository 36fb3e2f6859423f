"""Stage outputs of any Hugging Face vision backbone, found from evidence and read in their own layout.

Covers convolutional nets (bit, efficientnet, mobilenet, regnet, ...) and hierarchical
token / windowed-attention models (swin, hiera, segformer, mobilevit, ...): IIA integrates
their stage outputs as activations, with the CNN family's integrand and presets.

How the stages are found (no per-type module names): one probe forward of the base model
with ``output_hidden_states=True`` on a small non-square input, with a hook on every
module. A module whose output (or one element of its output tuple) *is* one of the
returned ``hidden_states`` / ``last_hidden_state`` tensors is a stage; the outermost such
module is kept. The default level is the module producing ``last_hidden_state`` (what the
head pools), else the last stage.

How the layout is known (never guessed): on the non-square probe input ``H != W``, a
stage tensor is ``[B, C, h, w]`` if its last two sizes are ``H / s, W / s`` for one stride
``s``, ``[B, h, w, C]`` if sizes 1 and 2 are, and tokens ``[B, h * w, C]`` if its
length is ``(H / s) * (W / s)``. A tensor that fits none or several readings is not
offered as a stage; naming it with ``layer=`` is refused with that reason. Where the model
also returns ``reshaped_hidden_states`` (its own spatial reading of each token stage), the
token order is read from them: the permutation that makes the stage's tokens *equal* the
reshaped grid (Hiera keeps its tokens in an unrolled mask-unit order); a token stage that
matches under no permutation is refused. At run time
the adapter hands the engine every stage in ``[B, C, h, w]`` and puts the substituted
tensor back in the model's own layout, so integrands, Grad-CAM and the channel-sum map
never see another layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from ..errors import LayerNotFoundError, UnsupportedModelError
from .base import LayerSpec, TapRun, evaluation_mode, extract_logits, resolve_layer
from .cnn import CNNAdapter, TapPoint
from .guard import Installation, remove_on_undo
from .registry import register_adapter

LAYOUTS = ("NCHW", "NHWC", "tokens")
PROBE_SIDE = 64  # the probe input is PROBE_SIDE x (PROBE_SIDE * 5 / 4): non-square, so h and w tell the layout apart
MAX_STRIDE = 128


def _reduced(side: int, stride: int) -> set[int]:
    """The sizes a ``side``-pixel axis can have after a total stride ``stride`` (floor or ceil)."""
    return {side // stride, -(-side // stride)}


def _strides() -> list[int]:
    return [2**k for k in range(int(math.log2(MAX_STRIDE)) + 1)]


def grid_of(shape: Sequence[int], layout: str, input_size: tuple[int, int]) -> tuple[int, int] | None:
    """The ``(h, w)`` grid of a tensor of ``shape`` read in ``layout`` for an ``input_size = (H, W)`` input, or
    ``None`` when the shape does not fit that reading for any stride."""
    height, width = input_size
    for stride in _strides():
        hs, ws = _reduced(height, stride), _reduced(width, stride)
        if layout == "NCHW" and len(shape) == 4 and shape[2] in hs and shape[3] in ws:
            return shape[2], shape[3]
        if layout == "NHWC" and len(shape) == 4 and shape[1] in hs and shape[2] in ws:
            return shape[1], shape[2]
        if layout == "tokens" and len(shape) == 3:
            for h in hs:
                for w in ws:
                    if h * w == shape[1]:
                        return h, w
    return None


def infer_layout(shape: Sequence[int], input_size: tuple[int, int]) -> str:
    """The one layout that ``shape`` fits on a non-square ``input_size``; raises ``LayerNotFoundError`` otherwise."""
    fits = [layout for layout in LAYOUTS if grid_of(shape, layout, input_size) is not None]
    if len(fits) != 1:
        why = "fits no" if not fits else f"fits several ({', '.join(fits)}) of the"
        raise LayerNotFoundError(
            f"a tensor of shape {list(shape)} (input {input_size[0]}x{input_size[1]}) {why} spatial layouts "
            "[B, C, h, w], [B, h, w, C], [B, h*w, C]; its layout cannot be established, so it is not explained. "
            "Pass layer= a module whose output is a spatial feature map"
        )
    return fits[0]


def to_channels_first(
    tensor: torch.Tensor, layout: str, grid: tuple[int, int], order: Sequence[int] | None = None
) -> torch.Tensor:
    """``tensor`` in ``layout`` -> ``[B, C, h, w]``; ``order`` (tokens only): token ``order[j]`` is raster position ``j``."""
    if layout == "NHWC":
        return tensor.permute(0, 3, 1, 2)
    if layout == "tokens":
        if order is not None:
            tensor = tensor[:, list(order)]
        return tensor.transpose(1, 2).reshape(tensor.shape[0], tensor.shape[2], *grid)
    return tensor


def from_channels_first(tensor: torch.Tensor, layout: str, order: Sequence[int] | None = None) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``layout`` (the inverse of :func:`to_channels_first`)."""
    if layout == "NHWC":
        return tensor.permute(0, 2, 3, 1)
    if layout == "tokens":
        tokens = tensor.flatten(2).transpose(1, 2)
        if order is not None:
            tokens = tokens[:, torch.argsort(torch.tensor(order, device=tokens.device))]
        return tokens
    return tensor


def token_order(tokens: torch.Tensor, reshaped: torch.Tensor, input_size: tuple[int, int]) -> tuple[int, ...] | None:
    """The order that reads ``tokens`` ``[B, T, C]`` as the model's own grid ``reshaped`` (a
    ``reshaped_hidden_states`` entry, in a layout established from its shape): ``order[j]`` is the token at
    raster position ``j``, verified by exact equality. ``()`` for raster order; ``None`` when no permutation
    makes the two equal (or ``reshaped``'s layout is not established)."""
    try:
        layout = infer_layout(reshaped.shape, input_size)
    except LayerNotFoundError:
        return None
    grid = grid_of(reshaped.shape, layout, input_size)
    raster = to_channels_first(reshaped, layout, grid).flatten(2).transpose(1, 2)  # type: ignore[arg-type]
    if raster.shape != tokens.shape:
        return None
    # Sort both by a random projection of their feature vectors to pair them; the equality check below
    # establishes the pairing, whatever the projection.
    projection = torch.randn(tokens.shape[2], 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    keys = [x[0].detach().double().cpu() @ projection for x in (tokens, raster)]
    order = torch.empty(tokens.shape[1], dtype=torch.long)
    order[keys[1].squeeze(1).argsort()] = keys[0].squeeze(1).argsort()
    if not torch.equal(tokens[:, order.to(tokens.device)], raster):
        return None
    return () if torch.equal(order, torch.arange(len(order))) else tuple(order.tolist())


@dataclass(frozen=True)
class StagePoint(TapPoint):
    """A stage: the module, which element of its output tuple (``None``: the output itself), its layout and (tokens
    kept out of raster order) the token at each raster position."""

    index: int | None = None
    layout: str = "NCHW"
    order: tuple[int, ...] | None = None


class StageAdapter(CNNAdapter):
    """Stage outputs in any layout, handed to the engine channels-first (see the module docstring)."""

    def __init__(self, model: nn.Module, points: Mapping[str, TapPoint], levels: Sequence[str]) -> None:
        super().__init__(model, points, levels)
        self._input_size: tuple[int, int] = (0, 0)

    def at_levels(self, levels: Sequence[str]) -> StageAdapter:
        """The same probed stages interpolated at ``levels`` (no second probe)."""
        return StageAdapter(self.model, self._points, levels)

    @property
    def layouts(self) -> dict[str, str]:
        """Each tap's layout in the model (``"NCHW"``, ``"NHWC"`` or ``"tokens"``); the engine sees ``[B, C, h, w]``."""
        return {tap: point.layout if isinstance(point, StagePoint) else "NCHW" for tap, point in self._points.items()}

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self._input_size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))  # the hooks read the grid from it
        return super().logits(pixel_values)

    def _register(self, run: TapRun, tap: str, point: TapPoint) -> torch.utils.hooks.RemovableHandle:
        if not isinstance(point, StagePoint):
            point = StagePoint(point.module)
        hook = self._stage_hook(run, tap, point)
        if point.side == "input":
            return point.module.register_forward_pre_hook(lambda module, args: hook(module, (), args))
        return point.module.register_forward_hook(hook)

    def _stage_hook(self, run: TapRun, tap: str, point: StagePoint):
        """A forward hook substituting the stage tensor (for an input-side point: called with the args as output)."""

        def hook(module: nn.Module, args: tuple, output: object) -> object:
            tupled = point.index is not None or point.side == "input"
            items: list[Any] = list(cast(tuple, output)) if tupled else [output]
            position = point.index or 0
            tensor = items[position]
            if not isinstance(tensor, torch.Tensor):
                raise LayerNotFoundError(f"layer {tap!r} produces a {type(tensor).__name__}, not a tensor")
            grid = grid_of(tensor.shape, point.layout, self._input_size)
            if grid is None:
                raise LayerNotFoundError(
                    f"layer {tap!r} output {list(tensor.shape)} does not form a {point.layout} grid for a "
                    f"{self._input_size[0]}x{self._input_size[1]} input; pass layer= another stage"
                )
            rows = tensor.shape[0]
            batched = [
                i
                for i, item in enumerate(items)
                if isinstance(item, torch.Tensor) and item.dim() and item.shape[0] == rows
            ]
            expanded = run.expand(tap, *(items[i] for i in batched))
            for i, item in zip(batched, expanded, strict=True):
                items[i] = item
            if point.order is not None and tensor.shape[1] != len(point.order):
                raise LayerNotFoundError(
                    f"layer {tap!r} has {tensor.shape[1]} tokens, but their order was established for "
                    f"{len(point.order)}; pass inputs of the size the model was built for"
                )
            rep = run.represent(tap, to_channels_first(items[position], point.layout, grid, point.order))
            items[position] = from_channels_first(rep, point.layout, point.order)
            return tuple(items) if tupled else items[0]

        return hook


RASTER_TOKEN_MODULES: dict[str, str] = {
    "transformers.models.levit.modeling_levit.LevitSubsample": "transformers' LeViT subsamples its tokens as view(B, r, r, C)[:, ::s, ::s]: raster order",
    "timm.models.levit.Downsample": "timm's LeViT downsamples its tokens as view(B, h, w, C)[:, ::s, ::s]: raster order",
}
"""Module classes (qualified names) whose own code reads a token sequence ``[B, h*w, C]`` as a raster grid: their
presence in a model that returns no ``reshaped_hidden_states`` is the evidence that its token stages are raster."""


def raster_token_evidence(model: nn.Module) -> str | None:
    """Why ``model``'s token stages are in raster order (a module of :data:`RASTER_TOKEN_MODULES`), or ``None``."""
    for module in model.modules():
        qualified = f"{type(module).__module__}.{type(module).__qualname__}"
        if qualified in RASTER_TOKEN_MODULES:
            return RASTER_TOKEN_MODULES[qualified]
    return None


def _probe_sizes(model: nn.Module) -> list[tuple[int, int]]:
    """Probe inputs to try in turn: non-square (the layouts differ), then square for models that need it."""
    size = getattr(getattr(model, "config", None), "image_size", None)
    side = size if isinstance(size, int) else (size[0] if isinstance(size, (list, tuple)) and size else PROBE_SIDE)
    side = max(32, min(int(side), 224)) // 32 * 32
    return [(side, side * 3 // 2), (side, side)]


@dataclass
class _Probe:
    """What one probe forward saw: every module's tensor outputs in hook order, call counts, the base model's
    output (``hidden_states``, ``last_hidden_state``; the classifier's own output when it has no base module)
    and the logits."""

    seen: list[tuple[str, int | None, torch.Tensor]]
    calls: dict[str, int]
    base_output: object
    logits: torch.Tensor
    norm_inputs: dict[str, torch.Tensor]  # the input of every LayerNorm module (token-wise: it keeps the order)


def _probe(model: nn.Module, base: nn.Module, size: tuple[int, int]) -> _Probe:
    """One forward of the classifier on a seeded random input of ``size``, with gradients (see :func:`find_stages`)."""
    channels = int(getattr(getattr(model, "config", None), "num_channels", 3) or 3)
    parameter = next(model.parameters())
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, channels, *size, generator=generator).to(parameter.device, parameter.dtype)
    names = {module: name for name, module in model.named_modules() if name}
    seen: list[tuple[str, int | None, torch.Tensor]] = []
    calls: dict[str, int] = {}
    outputs: list[object] = []
    norm_inputs: dict[str, torch.Tensor] = {}

    def record(module: nn.Module, args: tuple, output: object) -> None:
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(module, nn.LayerNorm) and args and isinstance(args[0], torch.Tensor):
            norm_inputs[name] = args[0]
        if module is base:
            outputs.append(output)
        if isinstance(output, torch.Tensor):
            seen.append((name, None, output))
        elif isinstance(output, tuple) and not hasattr(output, "keys"):
            seen.extend((name, i, item) for i, item in enumerate(output) if isinstance(item, torch.Tensor))

    def setup(installation: Installation) -> None:
        for module in names:
            remove_on_undo(installation, module.register_forward_hook(record))

    with Installation(setup), torch.enable_grad():
        result = model(probe, output_hidden_states=True)
    # With no base module (HGNetV2, PPLCNet keep their stages on the classifier itself) the classifier's own
    # output carries the hidden_states.
    return _Probe(seen, calls, outputs[-1] if outputs else result, extract_logits(result), norm_inputs)


def find_stages(model: nn.Module) -> tuple[dict[str, StagePoint], str | None, dict[str, str]]:
    """Probe ``model`` once: its stages in forward order, the default stage, and why other outputs were refused.

    The probe runs the classifier on a small seeded random input (non-square, else square) with
    ``output_hidden_states=True`` and a hook on every module. A stage is the last module (the outermost of
    nested ones) that returns one of the ``hidden_states`` or the ``last_hidden_state`` tensors and runs once;
    its layout is established from the shape (module docstring); a stage the logits do not depend on (zero
    gradient: e.g. patch tokens after a class token has been read) is refused, since its map would be empty.

    Returns ``(stages {dotted name: point}, default name or None, refused {dotted name: reason})``.
    """
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if not isinstance(base, nn.Module):
        base = (
            model  # the classifier's own output has the hidden_states (its last_hidden_state, if any, is not a stage)
        )
    failure: Exception | None = None
    with evaluation_mode(model):
        for size in _probe_sizes(model):
            try:
                probe = _probe(model, base, size)
                break
            except Exception as error:  # any failure of a probe: try the next size, else give up
                failure = error
        else:
            raise UnsupportedModelError(
                f"probing {type(model).__name__} for its stages failed ({type(failure).__name__}: {failure}); "
                "pass layer="
            ) from failure
    output = probe.base_output
    hidden = [*(getattr(output, "hidden_states", None) or ())]
    reshaped = [*(getattr(output, "reshaped_hidden_states", None) or ())]
    last = getattr(output, "last_hidden_state", None)
    found: dict[str, tuple[StagePoint, torch.Tensor]] = {}
    refused: dict[str, str] = {}
    default = None
    for tensor in [*hidden, *([last] if last is not None else [])]:
        # The last module to return the tensor is the outermost of nested producers (its first tuple slot that
        # holds it); a module that runs more than once per forward cannot be substituted, so it is passed over.
        producers = [(name, index) for name, index, item in probe.seen if item is tensor and probe.calls[name] == 1]
        if not producers:
            continue
        name = producers[-1][0]
        index = min(i or 0 for n, i in producers if n == name) if producers[-1][1] is not None else None
        try:
            layout = infer_layout(tensor.shape, size)
        except LayerNotFoundError as error:
            refused[name] = str(error)
            continue
        raster: tuple[int, ...] | None = ()  # the token at each raster position; () = raster order
        position = next((k for k, item in enumerate(hidden) if item is tensor), len(reshaped))
        if layout == "tokens" and position < len(reshaped):
            raster = token_order(tensor, reshaped[position], size)
            if raster is None:
                refused[name] = (
                    f"the tokens of {name!r} equal the model's reshaped_hidden_states[{position}] under no "
                    "reordering, so their grid is not established"
                )
                continue
        elif layout == "tokens":
            # No reshaped_hidden_states entry: a LayerNorm keeps the order of a stage whose order is established;
            # otherwise a module of a known raster-reading type in the model is the evidence; else refused.
            source = probe.norm_inputs.get(name)
            inherited = next((point for point, item in found.values() if item is source), None)
            if inherited is not None:
                raster = inherited.order or ()
            elif raster_token_evidence(model) is None:
                refused[name] = (
                    f"{name!r} outputs tokens [B, h*w, C] whose order (raster or not) no evidence establishes: the "
                    "model returns no reshaped_hidden_states and has no module known to read its tokens in raster order"
                )
                continue
        point = StagePoint(model.get_submodule(name), index=index, layout=layout, order=raster or None)
        found[name] = (point, tensor)
        if tensor is last:
            default = name
    tensors = [tensor for _, tensor in found.values()]
    grads = torch.autograd.grad(probe.logits.sum(), tensors, allow_unused=True) if tensors else ()
    for name, grad in zip(list(found), grads, strict=True):
        if grad is None or not grad.abs().sum() > 0:
            refused[name] = f"the logits do not depend on the output of {name!r} (zero gradient), so its map is empty"
            del found[name]
    order = {name: position for position, (name, _, _) in enumerate(probe.seen)}
    stages = {name: point for name, (point, _) in sorted(found.items(), key=lambda item: order[item[0]])}
    if default not in stages:
        default = list(stages)[-1] if stages else None
    return stages, default, refused


def stage_adapter(model: nn.Module, layer: LayerSpec) -> StageAdapter:
    """The adapter over the probed stages of ``model``; ``layer=`` picks among them (index, name or module)."""
    return select_stages(model, layer, *find_stages(model))


def select_stages(
    model: nn.Module, layer: LayerSpec, stages: dict[str, StagePoint], default: str | None, refused: dict[str, str]
) -> StageAdapter:
    """A :class:`StageAdapter` over ``stages`` at ``layer`` (``None``: ``default``), refusing what has no layout."""
    if not stages or default is None:
        raise UnsupportedModelError(
            f"no stage of {type(model).__name__} has an established spatial layout ({'; '.join(refused.values())}); "
            "pass layer= a module whose output is a feature map"
        )
    if layer is None:
        return StageAdapter(model, stages, [default])
    modules = {name: point.module for name, point in stages.items()}
    what = "stages with an established layout"
    return StageAdapter(model, stages, resolve_layer(model, layer, modules, what=what, refused=refused))


STAGE_MODEL_TYPES = (
    "bit",
    "cvt",
    "donut-swin",
    "efficientnet",
    "focalnet",
    "hgnet_v2",
    "hiera",
    "levit",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilevit",
    "mobilevitv2",
    "poolformer",
    "pp_lcnet",
    "regnet",
    "segformer",
    "swiftformer",
    "swin",
    "swinv2",
    "textnet",
)
register_adapter(*STAGE_MODEL_TYPES)(stage_adapter)

__all__ = [
    "STAGE_MODEL_TYPES",
    "StageAdapter",
    "StagePoint",
    "find_stages",
    "infer_layout",
    "select_stages",
    "stage_adapter",
    "token_order",
]
