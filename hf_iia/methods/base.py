"""The method seam: the :class:`Method` base, its options, the registry and :func:`prepare`.

A method is one small subclass of :class:`Method` registered with :func:`register_method` (as an adapter factory
registers with :func:`~hf_iia.adapters.register_adapter`): it names the adapter capability it needs and the options
it reads, and overrides what differs from the defaults (the spec always; the adapter, the fusion and the integration
when they differ). :func:`prepare` makes a registered method concrete for one model, once per explainer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import ClassVar, NamedTuple, TypeVar

import torch
from torch import nn

from ..adapters import Adapter, adapter_for
from ..adapters.base import LayerSpec
from ..engine import (
    Contrast,
    EngineTargets,
    IntegralSpec,
    IntegrationResult,
    Start,
    check_contrast,
    integrate,
    make_spec,
)
from ..errors import MethodError
from ..integrands import Integrand
from ..presets import resolve_start
from .probe import Preprocess

Fusion = Callable[[Adapter, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
"""``(adapter, integrals {tap: [B, ...]}, pixel_values [B, C, H, W]) -> raw maps [B, h, w]``."""

Integrator = Callable[..., IntegrationResult]
"""How a method computes its integrals: :func:`~hf_iia.engine.integrate`'s signature
``(adapter, pixel_values, targets, spec, *, internal_batch_size, progress) -> IntegrationResult``."""


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


def input_size(pixel_values: torch.Tensor) -> tuple[int, int]:
    """``(H, W)`` of ``pixel_values`` ``[B, C, H, W]`` (its last two axes: NaFlex patches ``[B, P, D]``, whose images
    each have their own size, are fused by an adapter that reads the sizes from the processor's spatial shapes)."""
    return int(pixel_values.shape[-2]), int(pixel_values.shape[-1])


def at_input(adapter: Adapter, integrand: Integrand) -> IntegralSpec:
    """``integrand`` at the single point ``a = 1`` (the unmodified input) at the adapter's observed taps."""
    if len(adapter.levels) > 1:
        raise MethodError(f"this method explains one layer, got {list(adapter.levels)}; pass a single layer=")
    return make_spec((), adapter.observed(adapter.levels), (0,), integrand)


class Method:
    """One attribution method: a subclass sets the class attributes and overrides :meth:`spec`, and whichever of
    :meth:`adapter`, :meth:`fuse`, :meth:`fusion` and :meth:`run` differ from the defaults.

    Attributes:
        requires: the adapter capability it needs (an :class:`~hf_iia.adapters.Adapter` subclass, possibly
            abstract, such as :class:`~hf_iia.adapters.FeatureMapAdapter`); never a family.
        options: names of the :class:`MethodOptions` it reads; giving any other is a :class:`MethodError`.
        signed: whether the raw map's sign means something (evidence for and against the target, as IG's and
            AttnLRP's), so a drawing must keep the raw zero apart from the minimum (see
            :attr:`~hf_iia.explainer.Explanation.zero_level`); the unsigned maps are drawn min-max normalised.
    """

    requires: ClassVar[type] = Adapter
    options: ClassVar[frozenset[str]] = frozenset()
    signed: ClassVar[bool] = False

    def applies_to(self, adapter: Adapter) -> bool:
        """Whether the method explains the model behind ``adapter``."""
        return isinstance(adapter, self.requires)

    def adapter(self, model: nn.Module, options: MethodOptions) -> Adapter:
        """The adapter for ``model``: by default the family's, at ``layer=`` (its default level when not given)."""
        return adapter_for(model, options.layer)

    def resolve(
        self, model: nn.Module, options: MethodOptions, preprocess: Preprocess | None
    ) -> tuple[Adapter, MethodOptions]:
        """The adapter and the options it stands for. A method that fills in a default (IIA's level) returns it in
        the options, so that rebuilding from them (unpickling) gives the same adapter without a probe;
        ``preprocess`` feeds the shape probe (:func:`~hf_iia.methods.probe.layer_shapes`)."""
        return self.adapter(model, options), options

    def spec(self, adapter: Adapter, options: MethodOptions, start: Start | None) -> IntegralSpec:
        """The integral for ``adapter`` from the options and the resolved ``start=``
        (:func:`~hf_iia.presets.resolve_start`; ``None``: the constant baseline)."""
        raise NotImplementedError(f"{type(self).__name__} defines no spec")

    def fuse(self, adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
        """Raw maps ``[B, h, w]`` from the integrals ``{tap: [B, ...]}`` of ``pixel_values`` ``[B, C, H, W]``: by
        default the adapter's own fusion (channel sum for feature maps, the family's rollout for attention)."""
        return adapter.to_map(integrals, input_size(pixel_values))

    def fusion(self, adapter: Adapter, options: MethodOptions, spec: IntegralSpec) -> Fusion:
        """The :data:`Fusion` for this adapter, options and integral (default :meth:`fuse`); a method whose fusion
        depends on them (IIA's rollout or level fusion, IG's start) overrides it."""
        return self.fuse

    def run(
        self,
        adapter: Adapter,
        pixel_values: torch.Tensor,
        targets: EngineTargets,
        spec: IntegralSpec,
        *,
        internal_batch_size: int = 64,
        progress: bool = True,
    ) -> IntegrationResult:
        """The integrals (see :data:`Integrator`): the engine's under :meth:`installed`, unless a method wraps it
        (Score-CAM's channel scores)."""
        with self.installed(adapter):
            return integrate(
                adapter, pixel_values, targets, spec, internal_batch_size=internal_batch_size, progress=progress
            )

    def installed(self, adapter: Adapter) -> contextlib.AbstractContextManager[object]:
        """What the method installs on the model around the engine's integral (default: nothing); AttnLRP's rules
        and LeGrad's block predictions change the gradients the engine reads."""
        return contextlib.nullcontext()


METHODS: dict[str, Method] = {}
"""Method name (what ``method=`` takes) -> the registered method, in registration order (``iia`` first)."""

M = TypeVar("M", bound=type[Method])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`Method` subclass as ``method=name``.

    Raises:
        MethodError: ``name`` is registered already (unregister it first: :func:`unregister_method`).
    """

    def decorate(cls: M) -> M:
        if name in METHODS:
            raise MethodError(f"method {name!r} is registered already ({type(METHODS[name]).__name__})")
        METHODS[name] = cls()
        return cls

    return decorate


def unregister_method(name: str) -> None:
    """Remove method ``name`` from the registry (a method registered for a test or a session)."""
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    del METHODS[name]


def available_methods() -> tuple[str, ...]:
    """The registered method names (what ``method=`` takes), ``iia`` first."""
    return tuple(METHODS)


def methods_for(adapter: Adapter) -> list[str]:
    """The names of the methods that explain the model behind ``adapter`` (``iia`` first)."""
    return [name for name, method in METHODS.items() if method.applies_to(adapter)]


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'AEIOU' else 'a'} {word}"


class Prepared(NamedTuple):
    """A method made concrete for one model (:func:`prepare`)."""

    adapter: Adapter
    spec: IntegralSpec
    fuse: Fusion
    run: Integrator
    options: MethodOptions  # the options with any default the method resolved (IIA's level) filled in


def prepare(
    name: str,
    model: nn.Module,
    options: MethodOptions,
    processor: object | None = None,
    preprocess: Preprocess | None = None,
    contrast: Contrast = None,
) -> Prepared:
    """Make method ``name`` concrete for ``model``: its adapter, its integral, its fusion and how it integrates.

    ``processor`` is the image processor, read by ``start="black"`` (its mean and std); ``preprocess`` turns one
    image into the model input through it, for a method's shape probe (``None``: no processor). ``contrast`` is the
    scalar every method differentiates (:data:`~hf_iia.engine.Contrast`), set on the spec whatever the method.

    Raises:
        MethodError: unknown method, an option the method does not read, or a model
            family the method does not apply to.
        TargetError: an unknown ``contrast``.
    """
    check_contrast(contrast)
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
    adapter, resolved = method.resolve(model, options, preprocess)
    if not method.applies_to(adapter):
        raise MethodError(
            f"method {name!r} needs a model explained through {_article(method.requires.__name__)}, but "
            f"{type(model).__name__} is a {adapter.family.name} model; for it choose one of {methods_for(adapter)}"
        )
    if adapter.input_names and resolved.start not in (None, "mean"):
        raise MethodError(
            f"start={resolved.start!r} is formed from images [B, C, H, W], but {type(model).__name__} takes NaFlex "
            "patch sequences with their own masks and grids; use the default start (0 in normalised space) or "
            "baselines="
        )
    spec = replace(method.spec(adapter, resolved, resolve_start(resolved.start, processor)), contrast=contrast)
    return Prepared(adapter, spec, method.fusion(adapter, resolved, spec), method.run, resolved)
