"""Attribution methods behind one call: IIA and the methods it is compared with.

A method is two things: how to build the :class:`~hf_iia.engine.IntegralSpec` for an
adapter (which taps, which points, which integrand) and a *fusion* that turns the
integrals into raw maps. :class:`~hf_iia.explainer.IIAExplainer` runs every method
through the same code path (device, batching, targets, engine, upsampling with the
adapter's mode, min-max normalisation); only the spec, the fusion and, for Score-CAM and AttnLRP,
what runs around the engine's integral (:attr:`Method.run`) differ.

========================  ===============  ================================================
name                      adapters         what it integrates, and how it is fused
========================  ===============  ================================================
``iia``                   every family     the preset's iterated integral; the adapter's map
``ig``                    any model        ``dy/dx`` on the image path (right Riemann sum,
                                           zero baseline); ``(x - x') *`` it, channel sum
``gradcam``               feature maps     :func:`~hf_iia.integrands.gradcam` at ``a = 1``;
                                           channel sum, ReLU
``gradcam++``             feature maps     :func:`~hf_iia.integrands.gradcam_plus_plus` at
                                           ``a = 1``; channel sum, ReLU
``layercam``              feature maps     :func:`~hf_iia.integrands.layercam` at ``a = 1``;
                                           channel sum, ReLU (Jiang et al. 2021)
``scorecam``              feature maps     the feature map at ``a = 1``, each channel weighed
                                           by the target logit of the input masked by it
                                           (softmax over channels); channel sum, ReLU
                                           (Wang et al. 2020)
``attention_rollout``     attention        every block's attention at ``a = 1``; rollout of
                                           ``(A + I) / 2`` (Abnar & Zuidema 2020)
``gradient_rollout``      attention        IIA's ViT integrand at ``a = 1`` only; the same
                                           rollout
``gae``                   attention        IIA's ViT integrand at ``a = 1``;
                                           :func:`~hf_iia.fusions.gae_rollout` (Chefer 2021)
``attnlrp``               relevance        ``x * dy/dx`` at ``a = 1`` under the adapter's LRP
                                           rules; channel sum, signed (Achtibat et al. 2024)
========================  ===============  ================================================

"feature maps", "attention" and "relevance" are the capabilities :class:`~hf_iia.adapters.FeatureMapAdapter`,
:class:`~hf_iia.adapters.AttentionAdapter` and :class:`~hf_iia.adapters.RelevanceAdapter`; a method names the capability it needs, never a
family, so a new family gets every method its representation supports.

Attention Rollout reads no gradient: the engine's one backward pass at ``a = 1`` is computed
and left unused (cheap next to the forward pass, and it keeps one code path).

Two methods need more than the integral, so their :attr:`Method.run` wraps the engine's: Score-CAM runs ``K``
forward passes of masked images per image after it (``K`` channels; :func:`_score_cam`), AttnLRP runs it with the
adapter's LRP rules installed (:func:`_attnlrp`). The explainer still does device, batching, targets, upsampling
and normalisation as for every method.

Options: ``layer`` picks the explained layer of ``iia`` and the feature-map methods;
``preset``, ``integrand``, ``baselines``, ``rule``, ``fusion`` and ``combine`` are IIA's; ``steps`` sets IIA's steps
or IG's step count; ``start`` names the image path's start of ``iia`` and ``ig``
(:data:`~hf_iia.presets.STARTS`). Giving a method an option it does not read raises
:class:`~hf_iia.errors.MethodError`.

IIA's map on a feature-map model is formed where ``combine=`` says (:data:`~hf_iia.fusions.LEVEL_FUSIONS`):
``"deepest"`` (the default) channel-sums the integral at the deepest interpolated level; ``"earliest"`` reads the
integrand at the earliest level instead (a finer grid); ``"product"`` and ``"sum"`` read every level and multiply or
average their normalised channel sums on the finest grid. An attention model's map is its rollout (``fusion=``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from .adapters import Adapter, AttentionAdapter, FeatureMapAdapter, RelevanceAdapter, adapter_for
from .adapters.base import LayerSpec
from .adapters.plain import PlainAdapter
from .engine import INPUT_TAP, IntegralSpec, IntegrationResult, Start, integrate, make_spec
from .errors import MethodError
from .fusions import LEVEL_FUSIONS, ROLLOUTS, LevelFusion, channel_sum, gae_rollout, integrated_gradients, min_max
from .integrands import Integrand, attention, grad_act, gradcam, gradcam_plus_plus, gradient, layercam, relu_grad_act
from .presets import resolve_baselines, resolve_integrand, resolve_rule, resolve_start, resolve_steps

Fusion = Callable[[Adapter, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
"""``(adapter, integrals {tap: [B, ...]}, pixel_values [B, C, H, W]) -> raw maps [B, h, w]``."""

Integrator = Callable[..., IntegrationResult]
"""How a method computes its integrals: :func:`~hf_iia.engine.integrate`'s signature
``(adapter, pixel_values, targets, spec, *, internal_batch_size, progress) -> IntegrationResult``."""

IG_STEPS = 50  # Captum's default n_steps
IG_BASELINE = 0.0  # the all-zero input in normalised pixel space, as IIA's image path


@dataclass(frozen=True)
class MethodOptions:
    """The explainer's method options as the user gave them (``None``: not given)."""

    layer: LayerSpec = None
    preset: str | None = None
    steps: int | Sequence[int] | None = None
    integrand: str | None = None
    baselines: float | Sequence[float] | None = None
    rule: str | None = None
    fusion: str | None = None
    combine: str | None = None
    start: str | None = None


def _layer_adapter(model: nn.Module, options: MethodOptions) -> Adapter:
    """The model's adapter at ``layer=`` (its family's default level when not given)."""
    return adapter_for(model, options.layer)


@dataclass(frozen=True)
class Method:
    """One attribution method.

    Attributes:
        requires: the adapter capability it needs (an :class:`~hf_iia.adapters.Adapter` subclass).
        options: names of the :class:`MethodOptions` it reads; giving any other is an error.
        spec: builds the integral for an adapter from the options and the resolved ``start=``
            (:func:`~hf_iia.presets.resolve_start`; ``None``: the constant baseline).
        fuse: turns the integrals into raw maps (see :data:`Fusion`) when ``fusion_for`` is not given.
        adapter: picks the adapter for the model from the options.
        fusion_for: builds the fusion from the adapter, the options and the integral, for a method whose fusion
            depends on them (IIA's rollout or level fusion, IG's start).
        run: computes the integrals (see :data:`Integrator`): the engine's integral, or a method's wrapper
            around it (Score-CAM's channel scores, AttnLRP's rules).
        signed: whether the raw map's sign means something (evidence for and against the target, as IG's and
            AttnLRP's), so a drawing must keep the raw zero apart from the minimum (see
            :attr:`~hf_iia.explainer.Explanation.zero_level`); the unsigned maps are drawn min-max normalised.
    """

    requires: type  # an Adapter subclass, possibly abstract: a capability such as FeatureMapAdapter
    options: frozenset[str]
    spec: Callable[[Adapter, MethodOptions, Start | None], IntegralSpec]
    fuse: Fusion
    adapter: Callable[[nn.Module, MethodOptions], Adapter] = _layer_adapter
    fusion_for: Callable[[Adapter, MethodOptions, IntegralSpec], Fusion] | None = None
    run: Integrator = integrate
    signed: bool = False

    def applies_to(self, adapter: Adapter) -> bool:
        """Whether the method explains the model behind ``adapter``."""
        return isinstance(adapter, self.requires)


# ----------------------------------------------------------------------------- specs
def _iia_adapter(model: nn.Module, options: MethodOptions) -> Adapter:
    """The adapter at ``layer=``; without it, at the preset's number of levels: the family's default tap and the
    taps before it (``preset="iia3"``: the last two stages or blocks)."""
    adapter = adapter_for(model, options.layer)
    count = adapter.family.preset(options.preset).levels
    if options.layer is not None or count == 1:
        return adapter
    taps = adapter.taps[: adapter.taps.index(adapter.levels[-1]) + 1]
    if len(taps) < count:
        raise MethodError(
            f"preset {options.preset!r} interpolates {count} layers, but {type(model).__name__} has {len(taps)} "
            f"({list(taps)}); pass layer= or another preset"
        )
    return adapter_for(model, list(taps[-count:]))


def _iia_spec(adapter: Adapter, options: MethodOptions, start: Start | None) -> IntegralSpec:
    """The preset's nested integral over the adapter's levels, observed where the map is formed."""
    preset = adapter.family.preset(options.preset)
    levels = adapter.levels if preset.interpolate_levels else ()
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


def _ig_spec(adapter: Adapter, options: MethodOptions, start: Start | None) -> IntegralSpec:
    """The gradient with respect to the input on the image path, right Riemann sum (as Captum's ``riemann_right``)."""
    steps = IG_STEPS if options.steps is None else options.steps
    if not isinstance(steps, int):
        if len(steps) != 1:
            raise MethodError(f"ig integrates one path (the image), so steps= takes one int, got {list(steps)}")
        (steps,) = steps
    return make_spec(
        (), (INPUT_TAP,), (int(steps),), gradient, baselines=(IG_BASELINE,), rules=("riemann_right",), start=start
    )


def _input_relevance_spec(adapter: Adapter, options: MethodOptions, start: Start | None) -> IntegralSpec:
    """``x * dy/dx`` at the input itself (under the gradients that :func:`_attnlrp` modifies)."""
    return make_spec((), (INPUT_TAP,), (0,), grad_act)


def _at_input(integrand: Integrand) -> Callable[[Adapter, MethodOptions, Start | None], IntegralSpec]:
    """Spec builder: ``integrand`` at the single point ``a = 1`` (the unmodified input) at the observed taps."""

    def spec(adapter: Adapter, options: MethodOptions, start: Start | None) -> IntegralSpec:
        if len(adapter.levels) > 1:
            raise MethodError(f"this method explains one layer, got {list(adapter.levels)}; pass a single layer=")
        return make_spec((), adapter.observed(adapter.levels), (0,), integrand)

    return spec


# ------------------------------------------------------------------------- integrators
@torch.no_grad()
def _score_cam(
    adapter: Adapter,
    pixel_values: torch.Tensor,
    targets: torch.Tensor,
    spec: IntegralSpec,
    *,
    internal_batch_size: int = 64,
    progress: bool = True,
) -> IntegrationResult:
    """Score-CAM (Wang et al. 2020, Algorithm 1): the feature map ``A`` ``[B, K, h, w]`` (the engine's integral of
    :func:`~hf_iia.integrands.attention` at ``a = 1``, which also resolves the targets) becomes ``w_k * A_k``.

    Each channel ``A_k``, upsampled to the input (bilinear, corners aligned, as pytorch-grad-cam) and min-max
    normalised to ``[0, 1]`` (a constant channel: all zero), masks the image; the target logits of the ``K``
    masked images, softmaxed over the channels, are the weights ``w_k``. The ``B * K`` masked images run through
    ``adapter.logits`` in chunks of ``internal_batch_size``. (The authors' released code instead weighs by each
    masked image's softmax probability of the target, with no softmax over channels; Algorithm 1 of the paper and
    pytorch-grad-cam, followed here, take logits. The baseline score ``f(x_b)`` of the paper's definition cancels
    in the softmax over channels.)
    """
    result = integrate(adapter, pixel_values, targets, spec, internal_batch_size=internal_batch_size, progress=progress)
    (tap,) = result.integrals
    activations = result.integrals[tap]  # [B, K, h, w] float32
    batch, channels = activations.shape[:2]
    rows = activations.flatten(0, 1).unsqueeze(1)  # [B * K, 1, h, w]: one mask per (image, channel)
    row_targets = result.targets.to(pixel_values.device).repeat_interleave(channels)
    scores = torch.empty(batch * channels, device=activations.device)
    starts = range(0, batch * channels, max(1, internal_batch_size))
    for start in tqdm(starts, desc="Score-CAM", unit="chunk", delay=1.0, disable=not progress or len(starts) < 2):
        chunk = slice(start, start + max(1, internal_batch_size))
        masks = nn.functional.interpolate(
            rows[chunk], size=input_size(pixel_values), mode="bilinear", align_corners=True
        )
        masks = min_max(masks)
        images = pixel_values[torch.arange(start, start + masks.shape[0]) // channels] * masks.to(pixel_values.dtype)
        logits = adapter.logits(images).float()
        scores[chunk] = logits.gather(1, row_targets[chunk].unsqueeze(1)).squeeze(1)
    weights = scores.view(batch, channels).softmax(dim=1)
    return replace(result, integrals={tap: weights[:, :, None, None] * activations})


def _attnlrp(
    adapter: Adapter,
    pixel_values: torch.Tensor,
    targets: torch.Tensor,
    spec: IntegralSpec,
    *,
    internal_batch_size: int = 64,
    progress: bool = True,
) -> IntegrationResult:
    """The engine's integral with the adapter's LRP rules installed (AttnLRP, Achtibat et al. 2024): the gradient
    at the input becomes relevance per unit of input."""
    assert isinstance(adapter, RelevanceAdapter)  # prepare() admits only relevance adapters
    with adapter.relevance_rules():
        return integrate(
            adapter, pixel_values, targets, spec, internal_batch_size=internal_batch_size, progress=progress
        )


# ---------------------------------------------------------------------------- fusions
def input_size(pixel_values: torch.Tensor) -> tuple[int, int]:
    """``(H, W)`` of ``pixel_values`` ``[B, C, H, W]``."""
    return int(pixel_values.shape[2]), int(pixel_values.shape[3])


def _adapter_map(adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
    """The adapter's own fusion (channel sum for CNNs, gradient rollout for ViTs)."""
    return adapter.to_map(integrals, input_size(pixel_values))


def _relu_map(adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
    """The adapter's fusion followed by a ReLU (Grad-CAM's positive evidence)."""
    return _adapter_map(adapter, integrals, pixel_values).clamp_min(0)


def _ig_map(adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
    """Integrated Gradients summed over channels, signed (so the map sums to about ``f(x) - f(x')``)."""
    attributions = integrated_gradients(integrals[INPUT_TAP], pixel_values, IG_BASELINE)
    return adapter.to_map({INPUT_TAP: attributions}, input_size(pixel_values))


def _relevance_map(adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
    """The input relevance summed over channels, signed (lxt's heatmap); already at the input's size."""
    return channel_sum(integrals[INPUT_TAP])


def _ig_fusion(adapter: Adapter, options: MethodOptions, spec: IntegralSpec) -> Fusion:
    """IG's map from the path's own start: ``(x - x')`` with ``x'`` the spec's start of each image."""
    if spec.start is None:
        return _ig_map

    def fuse(adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
        baseline = spec.image_baseline(pixel_values)
        attributions = integrated_gradients(integrals[INPUT_TAP], pixel_values, baseline)
        return adapter.to_map({INPUT_TAP: attributions}, input_size(pixel_values))

    return fuse


def _gae_map(adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
    """Chefer et al.'s relevance propagation over the per-block terms, on the ViT adapter's token layout."""
    assert isinstance(adapter, AttentionAdapter)  # prepare() admits only attention adapters
    return adapter.rollout_map(integrals, input_size(pixel_values), gae_rollout)


_IIA_OPTIONS = frozenset({"layer", "preset", "steps", "integrand", "baselines", "rule", "fusion", "combine", "start"})


def _iia_fusion(adapter: Adapter, options: MethodOptions, spec: IntegralSpec) -> Fusion:
    """IIA's fusion: the rollout chosen by ``fusion=`` or the preset for attention, the level fusion chosen by
    ``combine=`` for feature maps."""
    if isinstance(adapter, FeatureMapAdapter):
        if options.fusion is not None:
            raise MethodError(
                f"fusion={options.fusion!r} applies to attention models; {adapter.family.name} maps are channel sums, "
                f"formed where combine= says ({', '.join(LEVEL_FUSIONS)})"
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
            f"combine={options.combine!r} applies to feature-map models; a {adapter.family.name} map is fused over "
            f"its blocks by a rollout, chosen with fusion= ({', '.join(ROLLOUTS)})"
        )
    name = options.fusion or adapter.family.preset(options.preset).fusion
    if name is None:
        return _adapter_map
    if not isinstance(adapter, AttentionAdapter):
        raise MethodError(f"fusion={name!r} applies to attention models; {adapter.family.name} maps are channel sums")
    if name not in ROLLOUTS:
        raise MethodError(f"unknown fusion {name!r}; choose one of {sorted(ROLLOUTS)}")
    rollout = ROLLOUTS[name]

    def fuse(adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
        assert isinstance(adapter, AttentionAdapter)
        return adapter.rollout_map(integrals, input_size(pixel_values), rollout)

    return fuse


def _level_fusion(options: MethodOptions) -> LevelFusion:
    """The :class:`~hf_iia.fusions.LevelFusion` called ``combine=`` (``None``: ``"deepest"``)."""
    name = options.combine or "deepest"
    if name not in LEVEL_FUSIONS:
        raise MethodError(f"unknown combine {name!r}; choose one of {list(LEVEL_FUSIONS)}")
    return LEVEL_FUSIONS[name]


METHODS: dict[str, Method] = {
    "iia": Method(Adapter, _IIA_OPTIONS, _iia_spec, _adapter_map, adapter=_iia_adapter, fusion_for=_iia_fusion),
    "ig": Method(
        Adapter,
        frozenset({"steps", "start"}),
        _ig_spec,
        _ig_map,
        adapter=lambda model, options: PlainAdapter(model),
        fusion_for=_ig_fusion,
        signed=True,
    ),
    "gradcam": Method(FeatureMapAdapter, frozenset({"layer"}), _at_input(gradcam), _relu_map),
    "gradcam++": Method(FeatureMapAdapter, frozenset({"layer"}), _at_input(gradcam_plus_plus), _relu_map),
    "layercam": Method(FeatureMapAdapter, frozenset({"layer"}), _at_input(layercam), _relu_map),
    "scorecam": Method(FeatureMapAdapter, frozenset({"layer"}), _at_input(attention), _relu_map, run=_score_cam),
    "attention_rollout": Method(AttentionAdapter, frozenset(), _at_input(attention), _adapter_map),
    "gradient_rollout": Method(AttentionAdapter, frozenset(), _at_input(relu_grad_act), _adapter_map),
    "gae": Method(AttentionAdapter, frozenset(), _at_input(relu_grad_act), _gae_map),
    "attnlrp": Method(RelevanceAdapter, frozenset(), _input_relevance_spec, _relevance_map, run=_attnlrp, signed=True),
}


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'AEIOU' else 'a'} {word}"


def methods_for(adapter: Adapter) -> list[str]:
    """The names of the methods that explain the model behind ``adapter`` (``iia`` first)."""
    return [name for name, method in METHODS.items() if method.applies_to(adapter)]


def prepare(
    name: str, model: nn.Module, options: MethodOptions, processor: object | None = None
) -> tuple[Adapter, IntegralSpec, Fusion, Integrator]:
    """Make method ``name`` concrete for ``model``: its adapter, its integral, its fusion and how it integrates.

    ``processor`` is the image processor, read by ``start="black"`` (its mean and std).

    Raises:
        MethodError: unknown method, an option the method does not read, or a model
            family the method does not apply to.
    """
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    method = METHODS[name]
    unused = [
        field.name
        for field in fields(options)
        if getattr(options, field.name) is not None and field.name not in method.options
    ]
    if unused:
        reads = ", ".join(f"{option}=" for option in sorted(method.options)) or "none of them"
        given = ", ".join(f"{field.name}=" for field in fields(options))
        raise MethodError(
            f"method {name!r} does not use {', '.join(f'{option}=' for option in unused)}; leave it out "
            f"(of {given} it reads {reads})"
        )
    if options.start is not None and options.baselines is not None:
        raise MethodError(
            "start= names the image path's start and baselines= sets every path's constant start; give one of them"
        )
    adapter = method.adapter(model, options)
    if not method.applies_to(adapter):
        raise MethodError(
            f"method {name!r} needs a model explained through {_article(method.requires.__name__)}, but "
            f"{type(model).__name__} is a {adapter.family.name} model; for it choose one of {methods_for(adapter)}"
        )
    spec = method.spec(adapter, options, resolve_start(options.start, processor))
    fuse = method.fuse if method.fusion_for is None else method.fusion_for(adapter, options, spec)
    return adapter, spec, fuse, method.run


__all__ = [
    "IG_BASELINE",
    "IG_STEPS",
    "METHODS",
    "Fusion",
    "Integrator",
    "Method",
    "MethodOptions",
    "methods_for",
    "prepare",
]
