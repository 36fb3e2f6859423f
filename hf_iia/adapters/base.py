"""The Adapter protocol: the seam between the engine and model families.

An adapter knows, for one family of models, where the representations of the iterated
integral live in the forward pass (its *taps*, in forward order), how to hand each of
them to the engine while the model runs, and how to fuse the integrated quantities into
one 2-D map. The engine (:mod:`hf_iia.engine`) knows nothing else about the model.

While a model runs under :meth:`Adapter.installed`, the adapter calls two methods of
the engine's :class:`TapRun` at each active tap:

- ``expand(tap, *tensors)`` on the tensors that flow *into* the part of the network
  that follows the tap (e.g. a block's input hidden states); the engine repeats
  batch rows so that every later integration point gets its own row.
- ``represent(tap, rep)`` on the representation itself; the engine returns the
  tensor to substitute (interpolated towards the baseline, and recorded for the
  integrand when it is observed).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, cast

import torch
from torch import nn

from ..errors import IIAError, ImageInputError, LayerNotFoundError, UnsupportedModelError
from ..family import Family
from ..fusions import LevelFusion, Rollout
from .guard import Installation

LayerSpec = str | int | nn.Module | Sequence[str | int | nn.Module] | None


class TapRun(Protocol):
    """What an adapter may call while the model runs (implemented by the engine)."""

    def expand(self, tap: str, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Repeat batch rows of ``tensors`` (all ``[N, ...]``) as the integration grid needs at ``tap``."""

    def represent(self, tap: str, rep: torch.Tensor) -> torch.Tensor:
        """Return the representation to substitute at ``tap`` (``[N, ...]``, same shape)."""

    def row_images(self) -> torch.Tensor:
        """``[N]`` int64: the image (index into the explained batch) of each row the model is given."""


class Adapter(ABC):
    """Reach and substitute the representations of one family of models.

    Attributes:
        family: what the adapter's family declares (presets, default comparison method).
        upsample_mode: ``F.interpolate`` mode used to bring the map to the input size.
    """

    family: ClassVar[Family]
    upsample_mode: ClassVar[str]
    rows_from_input: ClassVar[bool] = False
    """Whether every integration point runs the whole model from the input as its own batch row (no rows repeated
    mid-network): for models that read per-image inputs after a tap, whose rows must then match the input's."""
    input_names: ClassVar[tuple[str, ...]] = ()
    """Processor outputs besides ``pixel_values`` the model reads (bound with :meth:`with_inputs`)."""
    default_internal_batch_size: int = 64
    """Most integration points per forward/backward pass when the explainer is not given ``internal_batch_size=``:
    the saved activations of one chunk bound the peak memory."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @property
    @abstractmethod
    def taps(self) -> tuple[str, ...]:
        """Names of every representation this adapter can reach, in forward order."""

    @property
    @abstractmethod
    def levels(self) -> tuple[str, ...]:
        """The taps whose representations are interpolated (the internal paths), in forward order."""

    @abstractmethod
    def observed(self, levels: Sequence[str]) -> tuple[str, ...]:
        """The taps whose (representation, gradient) pairs the integrand reads."""

    @abstractmethod
    def installed(self, run: TapRun, active: Sequence[str]) -> contextlib.AbstractContextManager[object]:
        """Context manager: route the ``active`` taps of every forward pass to ``run``.

        Everything installed on the model must be removed on every exit path, also when a signal's handler raises
        at any moment: install through :class:`~hf_iia.adapters.guard.Installation`.
        """

    @abstractmethod
    def to_map(self, integrals: dict[str, torch.Tensor], input_size: tuple[int, int]) -> torch.Tensor:
        """Fuse integrated quantities (``{tap: [B, ...]}``) into maps ``[B, h, w]``."""

    rebuild: Callable[[list[str]], Adapter] | None = None
    """Set by :func:`~hf_iia.adapters.adapter_for`: the factory that built this adapter, bound to its model (the
    registry is not imported here: it imports this module)."""

    def at_levels(self, levels: Sequence[str]) -> Adapter:
        """This model's adapter interpolating ``levels`` (taps of :attr:`taps`, in forward order): built anew by the
        factory that built this one; a family whose adapter probes the model overrides it to reuse what the probe
        established."""
        if self.rebuild is None:
            raise IIAError(
                f"this {type(self).__name__} was not built by hf_iia.adapters.adapter_for, so its factory is unknown; "
                f"build the adapter for levels {list(levels)} directly"
            )
        return self.rebuild(list(levels))

    def check_input(self, pixel_values: torch.Tensor) -> None:
        """Raise :class:`ImageInputError` when the model cannot take ``pixel_values`` ``[B, C, H, W]``."""
        channels = getattr(getattr(self.model, "config", None), "num_channels", None)
        if isinstance(channels, int) and pixel_values.shape[1] != channels:
            raise ImageInputError(
                f"pixel_values has {pixel_values.shape[1]} channel(s) but {type(self.model).__name__} takes {channels} "
                "(config.num_channels); preprocess images with the model's image processor"
            )

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Run the model on ``pixel_values`` ``[N, C, H, W]`` and return logits ``[N, num_classes]``."""
        return extract_logits(self.model(pixel_values))

    def with_inputs(self, inputs: Mapping[str, torch.Tensor]) -> contextlib.AbstractContextManager[object]:
        """Context manager: the processor's outputs :attr:`input_names` (each ``[B, ...]``) for the batch explained
        inside it; nothing for a family that reads ``pixel_values`` only."""
        return contextlib.nullcontext()

    def image_sizes(self) -> list[tuple[int, int]] | None:
        """Each image's own ``(H, W)`` model-input size where the images of a batch differ (NaFlex), for the bound
        batch (:meth:`with_inputs`); ``None`` when every map is at the size of ``pixel_values``."""
        return None

    def model_input_image(self, pixel_values: torch.Tensor, index: int) -> torch.Tensor:
        """Image ``index``'s model input as an image ``[C, H, W]`` (what its map lies on), from the batch's
        ``pixel_values`` (bound inputs as in :meth:`with_inputs`)."""
        return pixel_values[index]

    def not_reached(self, taps: Sequence[str]) -> IIAError:
        """The error to raise when ``taps`` were never reached during a forward pass."""
        return LayerNotFoundError(
            f"layer(s) {list(taps)} were not reached (or not reached in forward order) during the forward pass "
            "of the model; pass layer= a module that the forward pass runs exactly once, listing several in "
            "the order the model runs them"
        )


class FeatureMapAdapter(Adapter):
    """An adapter whose explained representation is a feature map ``[B, K, h, w]`` (channels first, after any
    layout change the family makes); its map is the channel sum. Grad-CAM-style methods apply to it."""

    @abstractmethod
    def level_map(
        self, integrals: dict[str, torch.Tensor], input_size: tuple[int, int], fusion: LevelFusion
    ) -> torch.Tensor:
        """Channel-sum each level's integral ``{tap: [B, K, h_l, w_l]}`` and fuse them, in forward order, with
        ``fusion`` into maps ``[B, h, w]``."""


class AttentionAdapter(Adapter):
    """An adapter that observes the attention probabilities ``[B, heads, T, T]`` of every block and fuses
    them with a rollout over the tokens the classifier reads. Rollout-style methods apply to it."""

    # Every block is observed, so the backward runs through all of them and a chunk keeps every block's activations
    # (ViT-B/16: about 150 MB per point). 8 points: peak 1.0 GB instead of 3.8 GB at 64, and no slower on the CPU
    # (docs/BENCHMARKS.md, scripts/bench_speed.py --internal-batch-size).
    default_internal_batch_size = 8

    @abstractmethod
    def rollout_map(
        self, integrals: dict[str, torch.Tensor], input_size: tuple[int, int], rollout: Rollout
    ) -> torch.Tensor:
        """Fuse per-block integrals ``{tap: [B, heads, T, T]}`` with ``rollout`` into patch-grid maps ``[B, h, w]``."""

    @property
    @abstractmethod
    def block_taps(self) -> tuple[str, ...]:
        """The taps of the blocks' self-attention probabilities ``[N, heads, T, T]``, in forward order (without any
        other attention the family observes, such as a pooling head's)."""

    @abstractmethod
    def block_predictions(self) -> contextlib.AbstractContextManager[object]:
        """Context manager: every forward pass in the block also applies the model's own head (its final norm,
        token readout and classifier) to each block's output, the block's intermediate prediction ``s_l``
        ``[N, classes]``, and :meth:`logits` returns the model's logits (unchanged values) whose gradient is that of
        ``sum_l s_l``. No gradient flows from a block's output into the next block, so the gradient at block ``l``'s
        attention is that of ``s_l`` alone (LeGrad's per-block sensitivity, in one backward pass). Values are
        unchanged; everything installed is removed on every exit path (an
        :class:`~hf_iia.adapters.guard.Installation`)."""

    def token_grid(self) -> FeatureMapAdapter | None:
        """The patch tokens entering the block at :attr:`levels` as a feature map ``[N, D, h, w]``, for
        the CAM methods on attention models (Grad-CAM on the token grid); ``None`` where the tokens of a batch form no
        one grid established from evidence."""
        return None


class RelevanceAdapter(Adapter):
    """An adapter that can make its model's backward pass propagate relevance: LRP rules written as modified
    gradients (:mod:`hf_iia.adapters.lrp`), so that ``input * gradient`` is the input's relevance. AttnLRP
    applies to it."""

    @abstractmethod
    def relevance_rules(self) -> contextlib.AbstractContextManager[object]:
        """Context manager: every forward pass in the block runs under the rules, which change gradients only;
        everything installed on the model is removed on every exit path (an
        :class:`~hf_iia.adapters.guard.Installation`)."""


def extract_logits(output: object) -> torch.Tensor:
    """Return the ``[N, num_classes]`` logits of a model output (a tensor or an object with ``.logits``)."""
    logits = getattr(output, "logits", output)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        logits = output[0]
    elif logits is output and not isinstance(output, torch.Tensor) and hasattr(output, "keys"):
        # A ModelOutput without .logits whose only tensor is [N, classes] (PPLCNet returns its logits as
        # last_hidden_state): that tensor is the logits.
        tensors = [value for value in cast(Mapping[str, object], output).values() if isinstance(value, torch.Tensor)]
        if len(tensors) == 1:
            logits = tensors[0]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise UnsupportedModelError(
            f"the model returned {type(output).__name__}, not logits: a classifier must return a "
            "[batch, num_classes] tensor or an output with a .logits attribute; wrap the model in a module "
            "whose forward returns the logits"
        )
    return logits


def config_of(model: nn.Module) -> Any:
    """``model.config``, read duck-typed: a transformers config's fields differ per model type, and torch types
    every attribute of a module (``nn.Module.__getattr__``) as ``Tensor | Module``."""
    return cast(Any, model).config


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)`` with an error that lists close candidates."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        hint = [n for n in names if n.endswith(name.split(".")[-1])][:8] or names[-8:]
        raise LayerNotFoundError(
            f"layer {name!r} not found in {type(model).__name__}; module names look like {hint}. "
            "Pass layer= one of the model's dotted module names (see model.named_modules())"
        ) from None


def resolve_layer(
    model: nn.Module,
    layer: LayerSpec,
    taps: Mapping[str, nn.Module],
    *,
    what: str,
    aliases: Mapping[str, str] | None = None,
    refused: Mapping[str, str] | None = None,
    any_module: bool = False,
) -> list[str]:
    """The tap names ``layer=`` picks, in the order given (repeats dropped): the one parser of every adapter.

    Args:
        model: the classifier whose modules the names are dotted paths of.
        layer: a tap index (``-1``: the last), a tap name, a module, or a list of them (not ``None``).
        taps: the adapter's taps in forward order, each with the module it reads.
        what: what the taps are, for the error (``"blocks"``, ``"stages"``).
        aliases: other names of taps (a block's dotted module name -> its tap name).
        refused: names that are no tap, with the reason (given as the error when named).
        any_module: a module of the model that is no tap (or its dotted name) is taken as its own tap (feature-map
            adapters explain any layer's activations); otherwise it is refused.

    Raises:
        LayerNotFoundError: naming the choices (a name that is no module of the model: the names it has).
    """
    specs = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if not specs:
        raise LayerNotFoundError("layer= is an empty list; give at least one layer")
    aliases, refused = aliases or {}, refused or {}
    names = {id(module): name for name, module in model.named_modules()}
    tap_of = {id(module): tap for tap, module in taps.items()}
    order = list(taps)

    def not_a_tap(spec: object) -> LayerNotFoundError:
        shown = repr(spec) if isinstance(spec, (int, str)) else f"{type(spec).__name__} {names.get(id(spec), '')!r}"
        options = [f"an index 0..{len(order) - 1}", f"a name in {order}", "the module itself"] if order else []
        if aliases:
            options.append(f"a module name such as {list(aliases)[-1]!r}")
        if any_module or not options:
            options.append("any module of the model, by its dotted name or as the module")
        choose = ", ".join(options[:-1]) + (" or " if len(options) > 1 else "") + options[-1]
        return LayerNotFoundError(
            f"layer {shown} is not one of the {len(order)} {what} of {type(model).__name__}; choose {choose}"
        )

    def one(spec: object) -> str:
        if isinstance(spec, bool) or not isinstance(spec, (int, str, nn.Module)):
            raise LayerNotFoundError(
                f"layer= must be a module, a dotted name or an index (or a list of them), got {type(spec).__name__}"
            )
        if isinstance(spec, int):
            if not -len(order) <= spec < len(order):
                raise not_a_tap(spec)
            return order[spec]
        if isinstance(spec, nn.Module):
            name = names.get(id(spec))
            if name is None:
                raise LayerNotFoundError(f"the module given as layer= ({type(spec).__name__}) is not part of the model")
            if name in taps:
                return name
            if id(spec) in tap_of:
                return tap_of[id(spec)]
            if any_module:
                return name
            raise not_a_tap(spec)
        if spec in taps:
            return spec
        if spec in aliases:
            return aliases[spec]
        if spec in refused:
            raise LayerNotFoundError(f"layer {spec!r}: {refused[spec]}")
        resolve_module(model, spec)  # a name the model does not have gets the listing error
        if any_module:
            return spec
        raise not_a_tap(spec)

    return list(dict.fromkeys(one(spec) for spec in specs))


def on_model(model: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on ``model``'s device and in its dtype (as it is for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return tensor if parameter is None else tensor.to(parameter.device, parameter.dtype)


def evaluation_mode(model: nn.Module) -> Installation:
    """Run ``model`` in eval mode; restore every submodule's own train/eval flag on exit (uninterruptibly)."""

    def setup(installation: Installation) -> None:
        modes = [(module, module.training) for module in model.modules()]
        installation.undo(lambda: _set_modes(modes))
        model.eval()

    return Installation(setup)


def _set_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training
