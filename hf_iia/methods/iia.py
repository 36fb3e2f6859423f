"""IIA (Barkan et al., ICCV 2023): everything IIA-specific that is not the engine, an integrand or a fusion.

IIA's whole definition is in four files: :mod:`hf_iia.engine` (the nested integral over the image path and the
interpolated levels, its quadrature rules and starts), :mod:`hf_iia.integrands` (what is integrated at each
point: ``relu_grad_act`` and the others of :data:`~hf_iia.integrands.INTEGRANDS`), :mod:`hf_iia.fusions` (how the
integrals become one map: the rollouts of attention models, :data:`~hf_iia.fusions.LEVEL_FUSIONS` of feature-map
models) and this module, which chooses, from the family's :class:`~hf_iia.presets.Preset` and the options:

* the adapter: at ``layer=``; without it at the preset's number of levels (``iia3``: the last two taps), and for a
  feature-map family with a ``grid_factor`` at the finest semantic level (:func:`finest_default`, read from one
  shape probe at the processor's input size, :func:`~hf_iia.methods.probe.layer_shapes`);
* the spec: the preset's nested integral over the adapter's levels, observed where the map is formed;
* the fusion: the rollout chosen by ``fusion=`` or the preset (attention), the level fusion chosen by
  ``combine=`` (feature maps).

The presets' values and the per-path resolvers live in :mod:`hf_iia.presets`; each family's presets beside its
adapter (``Family.presets``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from ..adapters import Adapter, AttentionAdapter, FeatureMapAdapter, adapter_for
from ..engine import IntegralSpec, Start, make_spec
from ..errors import MethodError
from ..fusions import LEVEL_FUSIONS, ROLLOUTS, LevelFusion
from ..presets import Preset, resolve_baselines, resolve_integrand, resolve_rule, resolve_steps
from .base import Fusion, Method, MethodOptions, input_size, register_method
from .probe import Preprocess, Shapes, can_probe, layer_shapes


def finest_default(shapes: Shapes, default: str, grid_factor: float) -> str:
    """The deepest tap in the second half of the taps up to ``default`` whose feature map ``[1, K, h, w]`` has at
    least ``grid_factor`` times the rows and columns of ``default``'s; ``default`` when none has (or the factor is
    0).

    ``shapes``: ``(tap, shape)`` in forward order, channels first. The second half keeps the map on semantic
    features: a shallow model's first stage has a fine grid but sees edges, not objects.
    """
    shape_of = dict(shapes)
    if grid_factor <= 0 or len(shape_of.get(default, ())) != 4:
        return default
    names = list(shape_of)
    upto = names[: names.index(default) + 1]
    need = [grid_factor * side for side in shape_of[default][2:]]
    candidates = [
        name
        for name in upto[len(upto) // 2 :]
        if len(shape_of[name]) == 4 and all(side >= least for side, least in zip(shape_of[name][2:], need, strict=True))
    ]
    return candidates[-1] if candidates else default


def _default_level(adapter: Adapter, preset: Preset, preprocess: Preprocess | None) -> str | None:
    """The preset's ``grid_factor`` rule (:func:`finest_default`) applied to a one-level feature-map adapter: one
    probe forward at the processor's input size (without a processor: the config's ``image_size``) finds the
    deepest feature map with a fine enough grid. Without a processor or a usable ``image_size`` the input size is
    unknown, so the probe is skipped and the family's default level stays, with a warning naming ``processor=`` and
    ``layer=``. ``None``: the rule does not apply (no ``grid_factor``, not one feature-map level)."""
    if not preset.grid_factor or not isinstance(adapter, FeatureMapAdapter) or len(adapter.levels) != 1:
        return None
    (level,) = adapter.levels
    if not can_probe(adapter, preprocess):
        warnings.warn(
            f"{type(adapter.model).__name__} has no image processor and its config gives no image_size, so the "
            f"default level cannot be fitted to the input size; using {level!r}. Pass "
            "processor= (the default level then follows its input size) or layer= to choose it",
            UserWarning,
            stacklevel=5,  # past IIA.resolve, prepare and IIAExplainer.__init__: the user's line
        )
        return level
    return finest_default(layer_shapes(adapter, preprocess), level, preset.grid_factor)


def _level_fusion(options: MethodOptions) -> LevelFusion:
    """The :class:`~hf_iia.fusions.LevelFusion` called ``combine=`` (``None``: ``"deepest"``)."""
    name = options.combine or "deepest"
    if name not in LEVEL_FUSIONS:
        raise MethodError(f"unknown combine {name!r}; choose one of {list(LEVEL_FUSIONS)}")
    return LEVEL_FUSIONS[name]


@register_method("iia")
class IIA(Method):
    """Iterated Integrated Attributions: the preset's iterated integral on every family; the adapter's map."""

    options = frozenset({"layer", "preset", "steps", "integrand", "baselines", "rule", "fusion", "combine", "start"})

    def resolve(
        self, model: nn.Module, options: MethodOptions, preprocess: Preprocess | None
    ) -> tuple[Adapter, MethodOptions]:
        """The adapter at ``layer=``; without it, at the preset's number of levels (the family's default tap and the
        taps before it; ``preset="iia3"``: the last two stages or blocks) or, for one level, at the preset's finest
        default (:func:`_default_level`), returned as ``layer=`` in the options. The family's adapter is built once
        and moved to the chosen levels (:meth:`~hf_iia.adapters.Adapter.at_levels`), so a model that the adapter
        probes is probed once. The preset's image-path start (``Preset.start``) is returned as ``start=`` when
        neither ``start=`` nor ``baselines=`` is given and the model takes images (not NaFlex patches)."""
        adapter, options = self._at_levels(model, options, preprocess)
        preset = adapter.family.preset(options.preset)
        if preset.start is not None and options.start is None and options.baselines is None and not adapter.input_names:
            # filled in, as layer= is, so that what the explainer reports and rebuilds from is what ran
            options = replace(options, start=preset.start)
        return adapter, options

    def _at_levels(
        self, model: nn.Module, options: MethodOptions, preprocess: Preprocess | None
    ) -> tuple[Adapter, MethodOptions]:
        """:meth:`resolve`'s adapter and options before the preset's start is filled in."""
        adapter = adapter_for(model, options.layer)
        preset = adapter.family.preset(options.preset)
        if options.layer is not None:
            return adapter, options
        if preset.levels > 1:
            taps = adapter.taps[: adapter.taps.index(adapter.levels[-1]) + 1]
            if len(taps) < preset.levels:
                raise MethodError(
                    f"preset {options.preset!r} interpolates {preset.levels} layers, but {type(model).__name__} has "
                    f"{len(taps)} ({list(taps)}); pass layer= or another preset"
                )
            return adapter.at_levels(taps[-preset.levels :]), options
        level = _default_level(adapter, preset, preprocess)
        if level is None:
            return adapter, options
        # layer= filled in, so that a rebuild from the options (unpickling) neither probes nor warns again.
        return (adapter if level == adapter.levels[0] else adapter.at_levels([level])), replace(options, layer=level)

    def spec(self, adapter: Adapter, options: MethodOptions, start: Start | None) -> IntegralSpec:
        """The preset's nested integral over the adapter's levels, observed where the map is formed."""
        preset = adapter.family.preset(options.preset)
        levels: Sequence[str] = adapter.levels if preset.interpolate_levels else ()
        observe = adapter.observed(adapter.levels)
        if isinstance(adapter, FeatureMapAdapter):
            observe = adapter.levels[_level_fusion(options).observe]
        return make_spec(
            levels,
            observe,
            resolve_steps(options.steps, preset, len(levels)),
            resolve_integrand(options.integrand, preset),
            baselines=resolve_baselines(options.baselines, len(levels)),
            rules=[resolve_rule(options.rule, preset)] * (len(levels) + 1),
            detach_levels=preset.detach_levels,
            start=start,
        )

    def fusion(self, adapter: Adapter, options: MethodOptions, spec: IntegralSpec) -> Fusion:
        """The rollout chosen by ``fusion=`` or the preset for attention, the level fusion chosen by ``combine=`` for
        feature maps."""
        if isinstance(adapter, FeatureMapAdapter):
            if options.fusion is not None:
                raise MethodError(
                    f"fusion={options.fusion!r} applies to attention models; {adapter.family.name} maps are channel "
                    f"sums, formed where combine= says ({', '.join(LEVEL_FUSIONS)})"
                )
            level_fusion = _level_fusion(options)

            def fuse_levels(
                adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor
            ) -> torch.Tensor:
                assert isinstance(adapter, FeatureMapAdapter)
                return adapter.level_map(integrals, input_size(pixel_values), level_fusion)

            return fuse_levels
        if options.combine is not None:
            raise MethodError(
                f"combine={options.combine!r} applies to feature-map models; a {adapter.family.name} map is fused "
                f"over its blocks by a rollout, chosen with fusion= ({', '.join(ROLLOUTS)})"
            )
        name = options.fusion or adapter.family.preset(options.preset).fusion
        if name is None:
            return self.fuse
        if not isinstance(adapter, AttentionAdapter):
            raise MethodError(
                f"fusion={name!r} applies to attention models; {adapter.family.name} maps are channel sums"
            )
        if name not in ROLLOUTS:
            raise MethodError(f"unknown fusion {name!r}; choose one of {sorted(ROLLOUTS)}")
        rollout = ROLLOUTS[name]

        def fuse(adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
            assert isinstance(adapter, AttentionAdapter)
            return adapter.rollout_map(integrals, input_size(pixel_values), rollout)

        return fuse
