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
``preset``, ``integrand``, ``baselines`` and ``rule`` are IIA's; ``steps`` sets IIA's steps or IG's step count.
Giving a method an option it does not read raises :class:`~hf_iia.errors.MethodError`.
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
from .engine import INPUT_TAP, IntegralSpec, IntegrationResult, integrate, make_spec
from .errors import MethodError
from .fusions import ROLLOUTS, channel_sum, gae_rollout, integrated_gradients
from .integrands import Integrand, attention, grad_act, gradcam, gradcam_plus_plus, gradient, layercam, relu_grad_act
from .presets import resolve_baselines, resolve_integrand, resolve_rule, resolve_steps

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


@dataclass(frozen=True)
class Method:
    """One attribution method.

    Attributes:
        requires: the adapter capability it needs (an :class:`~hf_iia.adapters.Adapter` subclass).
        options: names of the :class:`MethodOptions` it reads; giving any other is an error.
        spec: builds the integral for an adapter from the options.
        fuse: turns the integrals into raw maps (see :data:`Fusion`).
        adapter: picks the adapter for ``(model, layer)``.
        run: computes the integrals (see :data:`Integrator`): the engine's integral, or a method's wrapper
            around it (Score-CAM's channel scores, AttnLRP's rules).
    """

    requires: type  # an Adapter subclass, possibly abstract: a capability such as FeatureMapAdapter
    options: frozenset[str]
    spec: Callable[[Adapter, MethodOptions], IntegralSpec]
    fuse: Fusion
    adapter: Callable[[nn.Module, LayerSpec], Adapter] = adapter_for
    run: Integrator = integrate

    def applies_to(self, adapter: Adapter) -> bool:
        """Whether the method explains the model behind ``adapter``."""
        return isinstance(adapter, self.requires)


# ----------------------------------------------------------------------------- specs
def _iia_spec(adapter: Adapter, options: MethodOptions) -> IntegralSpec:
    """The preset's nested integral over the adapter's levels."""
    preset = adapter.family.preset(options.preset)
    levels = adapter.levels if preset.interpolate_levels else ()
    return make_spec(
        levels,
        adapter.observed(adapter.levels),
        resolve_steps(options.steps, preset, len(levels)),
        resolve_integrand(options.integrand, preset),
        baselines=resolve_baselines(options.baselines, len(levels)),
        rules=[resolve_rule(options.rule, preset)] * (len(levels) + 1),
        detach_levels=preset.detach_levels,
    )


def _ig_spec(adapter: Adapter, options: MethodOptions) -> IntegralSpec:
    """The gradient with respect to the input on the image path, right Riemann sum (as Captum's ``riemann_right``)."""
    steps = IG_STEPS if options.steps is None else options.steps
    if not isinstance(steps, int):
        if len(steps) != 1:
            raise MethodError(f"ig integrates one path (the image), so steps= takes one int, got {list(steps)}")
        (steps,) = steps
    return make_spec((), (INPUT_TAP,), (int(steps),), gradient, baselines=(IG_BASELINE,), rules=("riemann_right",))


def _input_relevance_spec(adapter: Adapter, options: MethodOptions) -> IntegralSpec:
    """``x * dy/dx`` at the input itself (under the gradients that :func:`_attnlrp` modifies)."""
    return make_spec((), (INPUT_TAP,), (0,), grad_act)


def _at_input(integrand: Integrand) -> Callable[[Adapter, MethodOptions], IntegralSpec]:
    """Spec builder: ``integrand`` at the single point ``a = 1`` (the unmodified input) at the observed taps."""

    def spec(adapter: Adapter, options: MethodOptions) -> IntegralSpec:
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
        low = masks.amin(dim=(-2, -1), keepdim=True)
        span = masks.amax(dim=(-2, -1), keepdim=True) - low
        masks = torch.where(span > 0, (masks - low) / span.clamp_min(torch.finfo(masks.dtype).tiny), 0.0)
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


def _gae_map(adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
    """Chefer et al.'s relevance propagation over the per-block terms, on the ViT adapter's token layout."""
    assert isinstance(adapter, AttentionAdapter)  # prepare() admits only attention adapters
    return adapter.rollout_map(integrals, input_size(pixel_values), gae_rollout)


_IIA_OPTIONS = frozenset({"layer", "preset", "steps", "integrand", "baselines", "rule", "fusion"})

METHODS: dict[str, Method] = {
    "iia": Method(Adapter, _IIA_OPTIONS, _iia_spec, _adapter_map),
    "ig": Method(Adapter, frozenset({"steps"}), _ig_spec, _ig_map, adapter=lambda model, layer: PlainAdapter(model)),
    "gradcam": Method(FeatureMapAdapter, frozenset({"layer"}), _at_input(gradcam), _relu_map),
    "gradcam++": Method(FeatureMapAdapter, frozenset({"layer"}), _at_input(gradcam_plus_plus), _relu_map),
    "layercam": Method(FeatureMapAdapter, frozenset({"layer"}), _at_input(layercam), _relu_map),
    "scorecam": Method(FeatureMapAdapter, frozenset({"layer"}), _at_input(attention), _relu_map, run=_score_cam),
    "attention_rollout": Method(AttentionAdapter, frozenset(), _at_input(attention), _adapter_map),
    "gradient_rollout": Method(AttentionAdapter, frozenset(), _at_input(relu_grad_act), _adapter_map),
    "gae": Method(AttentionAdapter, frozenset(), _at_input(relu_grad_act), _gae_map),
    "attnlrp": Method(RelevanceAdapter, frozenset(), _input_relevance_spec, _relevance_map, run=_attnlrp),
}


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'AEIOU' else 'a'} {word}"


def methods_for(adapter: Adapter) -> list[str]:
    """The names of the methods that explain the model behind ``adapter`` (``iia`` first)."""
    return [name for name, method in METHODS.items() if method.applies_to(adapter)]


def prepare(name: str, model: nn.Module, options: MethodOptions) -> tuple[Adapter, IntegralSpec, Fusion, Integrator]:
    """Make method ``name`` concrete for ``model``: its adapter, its integral, its fusion and how it integrates.

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
        raise MethodError(
            f"method {name!r} does not use {', '.join(f'{option}=' for option in unused)}; leave it out "
            f"(of layer=, preset=, steps=, integrand=, baselines=, rule=, fusion= it reads {reads})"
        )
    adapter = method.adapter(model, options.layer)
    if not method.applies_to(adapter):
        raise MethodError(
            f"method {name!r} needs a model explained through {_article(method.requires.__name__)}, but "
            f"{type(model).__name__} is a {adapter.family.name} model; for it choose one of {methods_for(adapter)}"
        )
    fuse = _iia_fusion(adapter, options) if name == "iia" else method.fuse
    return adapter, method.spec(adapter, options), fuse, method.run


def _iia_fusion(adapter: Adapter, options: MethodOptions) -> Fusion:
    """IIA's fusion: the adapter's own map, with the rollout chosen by ``fusion=`` or the preset for attention."""
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
